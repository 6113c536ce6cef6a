"""``RetrainingConsumer``: how a downstream trainer receives retraining requests safely.

Each request carries an idempotency key, exposed as ``request.id`` (the CloudEvents id, equal
to ``request.data.idempotency_key``). The monitor may publish the same request more than
once (outbox retries, replays), and Kafka delivers at least once, so the consumer:

1. decodes the message (structured or binary CloudEvents alike); an undecodable one is
   logged, counted, committed and skipped, so a single bad record can never block its
   partition forever;
2. skips (and commits) a request whose ``id`` the dedup store has already seen;
3. calls the handler, then marks the id as seen, then commits *that* message's offset
   synchronously (``enable.auto.commit=false``): an offset is only ever committed after its
   request was handled;
4. if the handler raises, nothing is committed: the consumer seeks back to the message,
   backs off exponentially (capped) and retries. After ``max_attempts`` failures it logs and
   re-raises, stopping the loop. A trainer that cannot train must not silently drop a
   request: stopping leaves the offset uncommitted, so the request is delivered again when
   the trainer (or another group member) comes back, and the operator sees the failure.

Handlers should be idempotent in ``request.id`` too: a crash between the handler returning
and the dedup mark being written runs it again. Keep the handler short (submit a training
job, do not train inline): a handler that blocks longer than ``max.poll.interval.ms``
(5 minutes by default) gets this consumer evicted from its group.

The dedup store is pluggable (:class:`DedupStore`); :class:`MemoryDedupStore` forgets on
restart, :class:`SqliteDedupStore` does not.

``acknowledge`` (e.g. :class:`StoreAcknowledger`) is told of each handled request after the
handler returned, so driftline's model version history shows that a trainer took it up
(``driftline models show``). It is an audit record: if it fails, the failure is logged and
counted and the request still counts as handled.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from confluent_kafka import KafkaException, Message, TopicPartition

from driftline.platform.kafka import KafkaSettings, record_headers, record_position
from driftline.schemas import RetrainingRequest, decode_retraining_request
from driftline.streams.group_consumer import GroupConsumer

log = logging.getLogger(__name__)

DEFAULT_TOPIC_PREFIX: Final = "driftline."
RETRAINING_TOPIC: Final = "retraining-requests"


@runtime_checkable
class DedupStore(Protocol):
    """Remembers which idempotency keys were handled."""

    def seen(self, key: str) -> bool: ...

    def mark(self, key: str) -> None: ...


class MemoryDedupStore:
    """Process-local dedup, bounded (oldest keys forgotten first) so it cannot grow forever."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._max_keys = max_keys

    def seen(self, key: str) -> bool:
        return key in self._keys

    def mark(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)


class SqliteDedupStore:
    """Dedup in a SQLite file, so a restarted trainer still recognises handled requests."""

    def __init__(self, path: str | Path) -> None:
        # check_same_thread=False + a lock: the store is often built on the main thread and
        # used by a consumer thread.
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS handled_requests (key TEXT PRIMARY KEY, handled_at REAL NOT NULL)"
            )

    def seen(self, key: str) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM handled_requests WHERE key = ?", (key,)).fetchone()
        return row is not None

    def mark(self, key: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO handled_requests (key, handled_at) VALUES (?, ?)", (key, time.time())
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class StoreAcknowledger:
    """Records in driftline's store that ``consumer`` handled a request (the version history)."""

    def __init__(self, store_url: str, consumer: str, *, clock_ms: Callable[[], int] | None = None) -> None:
        from driftline.platform.store import make_engine, session_factory

        self._engine = make_engine(store_url)
        self._sessions = session_factory(self._engine)
        self.consumer = consumer
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def __call__(self, request: RetrainingRequest) -> None:
        from driftline.platform.store import acknowledge_retraining_request

        with self._sessions.begin() as session:
            acknowledge_retraining_request(session, request.id, self.consumer, self._clock_ms())

    def close(self) -> None:
        self._engine.dispose()


@dataclass(slots=True)
class ConsumerStats:
    handled: int = 0
    duplicates: int = 0
    undecodable: int = 0
    handler_failures: int = 0
    acknowledge_failures: int = 0


class RetrainingConsumer(GroupConsumer):
    """Consume ``{topic_prefix}retraining-requests`` and call ``handler`` once per request."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        handler: Callable[[RetrainingRequest], None],
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        dedupe: bool = True,
        dedup_store: DedupStore | None = None,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        consumer_config: Mapping[str, Any] | None = None,
        acknowledge: Callable[[RetrainingRequest], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.topic = f"{topic_prefix}{RETRAINING_TOPIC}"
        self.stats = ConsumerStats()
        self._handler = handler
        self._acknowledge = acknowledge
        self._dedupe = dedupe
        self._store: DedupStore = dedup_store if dedup_store is not None else MemoryDedupStore()
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._attempts: dict[tuple[str, int, int], int] = {}
        super().__init__(settings, group_id=group_id, consumer_config=consumer_config)

    def run(self, *, stop_event: threading.Event | None = None, idle_timeout: float | None = None) -> None:
        """Consume until ``stop_event`` is set, nothing arrives for ``idle_timeout`` seconds,
        or a request fails ``max_attempts`` times (then its exception propagates)."""
        if not self._subscribed:
            self._consumer.subscribe([self.topic])
            self._subscribed = True
        last_message = time.monotonic()
        while not (stop_event is not None and stop_event.is_set()):
            if idle_timeout is not None and time.monotonic() - last_message >= idle_timeout:
                return
            message = self._consumer.poll(0.2)
            if message is None:
                continue
            last_message = time.monotonic()
            if message.error() is not None:
                log.warning("retraining consumer: %s", message.error())
                continue
            self._process(message, stop_event)

    def _process(self, message: Message, stop_event: threading.Event | None) -> None:
        try:
            # structured or binary CloudEvents alike: the headers say which
            request = decode_retraining_request(message.value() or b"", record_headers(message))
        except Exception as exc:
            self.stats.undecodable += 1
            log.error(
                "skipping undecodable retraining request at %s[%d]@%d: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc,
            )
            self._commit(message)
            return
        if self._dedupe and self._store.seen(request.id):
            self.stats.duplicates += 1
            log.info("retraining request %s already handled; skipping", request.id)
            self._commit(message)
            return
        position = record_position(message)
        try:
            self._handler(request)
        except Exception:
            attempt = self._attempts.get(position, 0) + 1
            self.stats.handler_failures += 1
            if attempt >= self._max_attempts:
                self._attempts.pop(position, None)
                log.exception(
                    "retraining request %s failed %d times; stopping without committing it",
                    request.id,
                    attempt,
                )
                raise
            self._attempts[position] = attempt
            delay = min(self._backoff_initial * 2 ** (attempt - 1), self._backoff_max)
            log.warning(
                "retraining request %s failed (attempt %d/%d); retrying in %.1f s",
                request.id,
                attempt,
                self._max_attempts,
                delay,
                exc_info=True,
            )
            self._seek_back(message)
            if stop_event is not None:
                stop_event.wait(delay)
            else:
                time.sleep(delay)
            return
        self._attempts.pop(position, None)
        self.stats.handled += 1
        if self._dedupe:
            self._store.mark(request.id)
        if self._acknowledge is not None:
            try:
                self._acknowledge(request)
            except Exception:
                self.stats.acknowledge_failures += 1
                log.warning("could not acknowledge retraining request %s", request.id, exc_info=True)
        self._commit(message)

    def _seek_back(self, message: Message) -> None:
        try:
            self._consumer.seek(TopicPartition(*record_position(message)))
        except KafkaException as exc:
            # Usually the partition was revoked meanwhile: its new owner starts from the last
            # committed offset, which is still before this message, so nothing is lost.
            log.warning("could not seek back to the failed request: %s", exc)

    def _commit(self, message: Message) -> None:
        topic, partition, position = record_position(message)
        offset = TopicPartition(topic, partition, position + 1)
        try:
            self._consumer.commit(offsets=[offset], asynchronous=False)
        except KafkaException as exc:
            # A rebalance can fail the commit; the request is redelivered and, being marked
            # in the dedup store, skipped.
            log.warning("offset commit failed for %s[%d]@%d: %s", *record_position(message), exc)

