"""``DriftlineProducer``: how a serving app reports predictions and labels without waiting.

Why batches: the monitor pays ~100 µs per Kafka *message* whatever its size, so events are
buffered per (kind, model) and sent as one batch envelope of up to ``batch_max_events``
events, or after ``linger_ms`` since the batch's first event, whichever comes first.
``batch_max_events=1`` sends plain single-event messages (what kcat or other-language
producers send), keyed by ``prediction_id``.

Why per partition: the monitor joins predictions and labels in partition
``xxh64(prediction_id) % N`` of its internal join topic, and its ingest stage splits every
input batch by that hash. By default (``partitioning="prediction_id"``) the producer buffers
per (kind, model, partition) with the *same* hash over the input topic's partition count and
sends each batch to its partition explicitly, so with as many input as join partitions (the
default) a batch reaches the join as one message instead of N slivers: measured, the
biggest single throughput factor of a worker. ``partitioning="model"`` keys batches by
``model_id`` instead (one model's batches in order on one partition); the join is correct
either way, since ingest repartitions whatever arrives.

Threading: ``send_*`` validates, appends under a lock and returns. A batch that fills up is
encoded and handed to librdkafka on the caller's thread (a natural back-pressure point: a
full librdkafka queue slows the caller instead of growing memory without bound); a
lingering batch is sent by a small daemon thread, which also serves delivery callbacks, so
``on_error`` runs on that thread (or inside ``flush``).

A batch that librdkafka refuses as too large is split in halves and retried, so a few
feature-heavy events never cost the whole batch; only a single event that is too large on
its own is reported as failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from driftline.detectors.hashing import partition_of
from driftline.platform.kafka import KafkaSettings, confluent_config
from driftline.schemas import GroundTruthEvent, PredictionEvent, encode, encode_batch

log = logging.getLogger(__name__)

Kind = Literal["predictions", "ground_truth"]
Event = PredictionEvent | GroundTruthEvent

DEFAULT_TOPIC_PREFIX: Final = "driftline."
_TOPIC_SUFFIX: Final[dict[Kind, str]] = {"predictions": "predictions", "ground_truth": "ground-truth"}
#: librdkafka's "no partition chosen": its partitioner picks one from the key
UNASSIGNED: Final = -1
_STRUCT: Final[dict[Kind, type[Event]]] = {"predictions": PredictionEvent, "ground_truth": GroundTruthEvent}

# A small librdkafka linger: our own batching already amortises the per-message cost, this
# only coalesces the batches of several models into one produce request.
PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    "linger.ms": 5,
    "compression.type": "lz4",
    "enable.idempotence": True,
}


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One message librdkafka could not deliver (after its own retries)."""

    topic: str
    key: bytes | None
    events: int
    error: str
    code: int | None


class DeliveryError(RuntimeError):
    """``flush`` found messages that failed, or could not deliver everything in time."""

    def __init__(self, message: str, failures: tuple[DeliveryFailure, ...]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(slots=True)
class _Buffer:
    events: list[Event]
    first_at: float


class DriftlineProducer:
    """Buffered, batching, non-blocking producer of PredictionEvents and GroundTruthEvents.

    Use as a context manager (``flush`` on exit) or call ``close()`` on shutdown.
    Structs are taken as given; mappings are validated into structs first, so a malformed
    event raises ``ValueError`` at the call site instead of reaching dead-letter later.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        batch_max_events: int = 500,
        linger_ms: float = 100,
        on_error: Callable[[DeliveryFailure], None] | None = None,
        queue_full_timeout: float = 30.0,
        producer_config: Mapping[str, Any] | None = None,
        partitioning: Literal["prediction_id", "model"] = "prediction_id",
    ) -> None:
        if batch_max_events < 1:
            raise ValueError(f"batch_max_events must be >= 1, got {batch_max_events}")
        if linger_ms < 0:
            raise ValueError(f"linger_ms must be >= 0, got {linger_ms}")
        if partitioning not in ("prediction_id", "model"):
            raise ValueError(f"partitioning must be 'prediction_id' or 'model', got {partitioning!r}")
        self._by_id = partitioning == "prediction_id"
        self._partition_counts: dict[str, int] = {}
        self.topics: dict[Kind, str] = {k: f"{topic_prefix}{s}" for k, s in _TOPIC_SUFFIX.items()}
        self._batch_max = batch_max_events
        self._linger_s = linger_ms / 1000.0
        self._on_error = on_error
        self._queue_full_timeout = queue_full_timeout
        config = confluent_config(settings, **PRODUCER_DEFAULTS)
        config.update(producer_config or {})
        self._producer = Producer(config)
        self._buffers: dict[tuple[Kind, str, int], _Buffer] = {}
        self._lock = threading.Lock()  # guards _buffers
        self._wake = threading.Condition(self._lock)
        # Held from "take a batch out of the buffer" to "handed to librdkafka", so the caller
        # thread and the linger thread cannot reorder two batches of the same model.
        self._send_lock = threading.Lock()
        self._errors: list[DeliveryFailure] = []
        self._errors_lock = threading.Lock()
        self._reported = 0
        self._closed = False
        self._thread = threading.Thread(target=self._linger_loop, name="driftline-producer", daemon=True)
        self._thread.start()

    # -- sending --------------------------------------------------------------------

    def send_prediction(self, event: PredictionEvent | Mapping[str, Any]) -> None:
        """Queue one prediction; returns at once (sends a batch inline only if this fills it)."""
        self._send("predictions", event)

    def send_ground_truth(self, event: GroundTruthEvent | Mapping[str, Any]) -> None:
        """Queue one ground-truth label; returns at once (sends a batch inline only if this fills it)."""
        self._send("ground_truth", event)

    def _send(self, kind: Kind, event: Event | Mapping[str, Any]) -> None:
        struct = _as_struct(kind, event)
        if self._closed:
            raise RuntimeError("producer is closed")
        partition = UNASSIGNED
        if self._by_id:
            count = self._partition_count(self.topics[kind])
            if count:
                partition = partition_of(struct.prediction_id, count)
        if self._batch_max == 1:
            with self._send_lock:
                self._produce(kind, encode(struct), struct.prediction_id.encode(), 1, [struct], partition)
            return
        key = (kind, struct.model_id, partition)
        self._lock.acquire()
        try:
            buffer = self._buffers.get(key)
            if buffer is None:
                self._buffers[key] = _Buffer([struct], time.monotonic())
                self._wake.notify()  # the linger thread must learn the new deadline
                return
            buffer.events.append(struct)
            if len(buffer.events) < self._batch_max:
                return
            del self._buffers[key]
            self._send_lock.acquire()
        finally:
            self._lock.release()
        try:
            self._send_batch(key, buffer.events)
        finally:
            self._send_lock.release()

    def _partition_count(self, topic: str) -> int:
        """The topic's partition count from metadata, looked up once (0: unknown, let
        librdkafka's partitioner decide)."""
        count = self._partition_counts.get(topic)
        if count is None:
            try:
                meta = self._producer.list_topics(topic, timeout=10).topics.get(topic)
                count = len(meta.partitions) if meta is not None and meta.error is None else 0
            except KafkaException:
                count = 0
            self._partition_counts[topic] = count
        return count

    def _send_batch(self, key: tuple[Kind, str, int], events: list[Event]) -> None:
        kind, model_id, partition = key
        self._produce(kind, encode_batch(events, kind), model_id.encode(), len(events), events, partition)

    def _produce(
        self, kind: Kind, value: bytes, key: bytes, count: int, events: list[Event], partition: int
    ) -> None:
        topic = self.topics[kind]
        deadline = time.monotonic() + self._queue_full_timeout
        on_delivery = self._delivery_callback(topic, key, count)
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, partition=partition, on_delivery=on_delivery
                )
                return
            except BufferError:
                # librdkafka's queue is full: serve delivery reports to drain it, then retry.
                if time.monotonic() >= deadline:
                    self._record(DeliveryFailure(topic, key, count, "local queue full", None))
                    return
                self._producer.poll(0.05)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and count > 1:
                    half = count // 2
                    batch_key = (kind, key.decode(), partition)
                    self._send_batch(batch_key, events[:half])
                    self._send_batch(batch_key, events[half:])
                    return
                self._record(DeliveryFailure(topic, key, count, error.str(), error.code()))
                return

    def _delivery_callback(self, topic: str, key: bytes, count: int) -> Callable[[Any, Message], None]:
        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._record(DeliveryFailure(topic, key, count, err.str(), err.code()))

        return report

    def _record(self, failure: DeliveryFailure) -> None:
        log.error(
            "driftline: %d event(s) to %s (key %r) not delivered: %s",
            failure.events,
            failure.topic,
            failure.key,
            failure.error,
        )
        with self._errors_lock:
            self._errors.append(failure)
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:  # a faulty callback must not kill the delivery thread
                log.exception("driftline: on_error callback raised")

    # -- lingering ------------------------------------------------------------------

    def _linger_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                due = [k for k, b in self._buffers.items() if now - b.first_at >= self._linger_s]
                if not due:
                    next_due = min(
                        (b.first_at + self._linger_s for b in self._buffers.values()), default=None
                    )
                    # Wake at least every 100 ms to serve delivery callbacks.
                    wait = 0.1 if next_due is None else min(max(next_due - now, 0.0), 0.1)
                    self._wake.wait(wait)
                    batches: list[tuple[tuple[Kind, str, int], _Buffer]] = []
                else:
                    batches = [(k, self._buffers.pop(k)) for k in due]
                    self._send_lock.acquire()
            if batches:
                try:
                    for key, buffer in batches:
                        self._send_batch(key, buffer.events)
                except Exception:
                    log.exception("driftline: sending a lingering batch failed")
                finally:
                    self._send_lock.release()
            self._producer.poll(0)

    def _drain_buffers(self) -> None:
        with self._lock:
            batches, self._buffers = self._buffers, {}
            self._send_lock.acquire()
        try:
            for key, buffer in batches.items():
                self._send_batch(key, buffer.events)
        finally:
            self._send_lock.release()

    # -- completion -----------------------------------------------------------------

    @property
    def errors(self) -> tuple[DeliveryFailure, ...]:
        """Every delivery failure recorded so far (including ones already raised by ``flush``)."""
        with self._errors_lock:
            return tuple(self._errors)

    @property
    def pending_events(self) -> int:
        """Events still in our buffers (not yet handed to librdkafka)."""
        with self._lock:
            return sum(len(b.events) for b in self._buffers.values())

    def flush(self, timeout: float = 30.0) -> None:
        """Send every buffered batch, wait for delivery, and raise ``DeliveryError`` if a
        message failed since the last ``flush`` or some are still undelivered at ``timeout``."""
        if self._closed:
            return
        self._drain_buffers()
        remaining = self._producer.flush(timeout)
        with self._errors_lock:
            new = tuple(self._errors[self._reported :])
            self._reported = len(self._errors)
        if new:
            events = sum(f.events for f in new)
            raise DeliveryError(
                f"{len(new)} message(s) ({events} event(s)) were not delivered; first: {new[0].error}", new
            )
        if remaining:
            raise DeliveryError(f"{remaining} message(s) still undelivered after {timeout:g} s", ())

    def close(self, timeout: float = 30.0) -> None:
        """Flush (raising ``DeliveryError`` on failures) and stop the linger thread."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closed = True
                self._wake.notify()
            self._thread.join(timeout=5)
            # Drop the client so librdkafka closes its connections now, not at some later GC.
            del self._producer

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Already unwinding: report delivery problems without masking the original error.
        try:
            self.close()
        except DeliveryError:
            log.exception("driftline: delivery failed while handling another error")


def _as_struct(kind: Kind, event: Event | Mapping[str, Any]) -> Event:
    cls = _STRUCT[kind]
    if isinstance(event, cls):
        return event
    if isinstance(event, Mapping):
        try:
            return msgspec.convert(event, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid {cls.__name__}: {exc}") from None
    raise TypeError(f"expected a {cls.__name__} or a mapping, got {type(event).__name__}")
