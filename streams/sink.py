"""The history sink: window results, alerts and retraining requests from the output topics
into the SQL store, so ``driftline status`` and ``driftline report`` can answer after the
messages have aged out of Kafka.

Delivery is at least once: a poll batch is written in one transaction and its offsets are
committed only after that transaction commits. A crash between the two re-delivers the batch,
which the repository's upserts on natural keys absorb (same window row, same alert transition
id, same idempotency key), so the store never holds a duplicate.

A store outage does not lose or skip anything either: the batch is rolled back, the consumer
seeks back to the batch's first offsets and retries with backoff. A message that cannot be
decoded is a contract violation no retry can fix; it is logged, counted and skipped, like the
stream agents do, so one poisoned record never stops history.

The sink also owns retention, because it is the one long-running writer of window history:
at start-up and then at most once per ``prune_interval_s`` of wall time it deletes window
results that ended more than ``retention_ms`` before the newest window end in the store
(event time), capped at the wall clock. Event time keeps a replayed or backfilled history
whole (pruning it against today's date would delete all of it), and the cap stops a single
window stamped far in the future from pruning everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from driftline.platform.config import Config
from driftline.platform.kafka import (
    KafkaSettings,
    TopicNames,
    ensure_topics,
    record_headers,
    settings_for,
)
from driftline.platform.store import (
    prune_window_results,
    record_alert,
    record_retraining_request,
    record_window_result,
    set_lineage,
    touch_model,
)
from driftline.platform.store.models import WindowResultRow
from driftline.schemas import (
    AlertEvent,
    RetrainingRequest,
    WindowResult,
    decode_alert,
    decode_retraining_request,
    decode_window_result,
    rfc3339_to_ms,
)
from driftline.streams.group_consumer import GroupConsumer
from driftline.streams.ingest import CONTROL_HEADER

__all__ = [
    "DEFAULT_RETENTION_MS",
    "PRUNE_INTERVAL_S",
    "HistorySink",
    "SinkStats",
    "ingest_report",
    "retention_cutoff_ms",
    "write_batch",
]

log = logging.getLogger(__name__)

#: window results older than this (event time, before the newest window end) are deleted
DEFAULT_RETENTION_MS = 90 * 86_400_000
#: a prune is one indexed DELETE; hourly keeps the table within an hour of the retention
PRUNE_INTERVAL_S = 3600.0


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def retention_cutoff_ms(newest_end_ms: int | None, now_ms: int, retention_ms: int) -> int | None:
    """Windows ending before the returned time are past retention; ``None``: nothing to prune.

    The reference is the newest window end in the store (event time), but never later than
    the wall clock: replayed history is kept as a whole, while a window stamped in the
    future by a producer with a broken clock cannot age everything else out.

    >>> retention_cutoff_ms(1_000_000, 5_000_000, 600_000), retention_cutoff_ms(9_000_000, 5_000_000, 600_000)
    (400000, 4400000)
    """
    if newest_end_ms is None:
        return None
    return min(newest_end_ms, now_ms) - retention_ms


@dataclass(slots=True)
class SinkStats:
    """Counts since the sink started; ``new_*`` count rows the store did not have yet."""

    batches: int = 0
    windows: int = 0
    alerts: int = 0
    new_alert_transitions: int = 0
    requests: int = 0
    new_requests: int = 0
    control: int = 0
    undecodable: int = 0
    store_failures: int = 0
    prunes: int = 0
    pruned: int = 0

    def add(self, other: SinkStats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class _Batch:
    results: list[WindowResult] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    requests: list[RetrainingRequest] = field(default_factory=list)


def write_batch(
    session: Session,
    results: Sequence[WindowResult],
    alerts: Sequence[AlertEvent],
    requests: Sequence[RetrainingRequest],
) -> SinkStats:
    """Record decoded output in ``session`` (no commit: the caller owns the transaction).

    Model versions are touched once per (model, version) per batch with the batch's earliest
    window start and latest window end, rather than once per row: the audit trail needs only
    the envelope, and the upsert widens it monotonically.
    """
    stats = SinkStats(windows=len(results), alerts=len(alerts), requests=len(requests))
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    for result in results:
        record_window_result(session, result)
        key = (result.model_id, result.model_version)
        lo, hi = seen.get(key, (result.window_start_ms, result.window_end_ms))
        seen[key] = (min(lo, result.window_start_ms), max(hi, result.window_end_ms))
    for (model_id, model_version), (lo, hi) in sorted(seen.items()):
        touch_model(session, model_id, model_version, lo, None)
        touch_model(session, model_id, model_version, hi, None)
    stats.new_alert_transitions = sum(record_alert(session, event) for event in alerts)
    stats.new_requests = sum(record_retraining_request(session, request) for request in requests)
    for request in requests:  # version 2 requests name the version's registry reference
        data = request.data
        if data.lineage is not None:
            lineage = msgspec.to_builtins(data.lineage)
            set_lineage(session, data.model_id, data.model_version, lineage, rfc3339_to_ms(data.window.end))
    return stats


def ingest_report(report: Mapping[str, Any], session: Session) -> SinkStats:
    """Write a replay report's windows, alerts and retraining requests into the store.

    The report holds the same contract objects the topics carried (``docs/replay-report.md``),
    so they go through the same validation and the same upserts: ingesting a report twice, or
    a report of data the live sink already stored, adds nothing.
    """
    results = msgspec.convert(report.get("windows", []), list[WindowResult])
    alerts = msgspec.convert(report.get("alerts", []), list[AlertEvent])
    requests = msgspec.convert(report.get("retraining_requests", []), list[RetrainingRequest])
    stats = write_batch(session, results, alerts, requests)
    stats.batches = 1
    return stats


class HistorySink(GroupConsumer):
    """Consume the three output topics of one driftline deployment into the store.

    Runs as its own consumer group (``{app_id}-history``), so it neither competes with nor
    slows down the stream workers, and several sinks share the partitions.
    """

    def __init__(
        self,
        config: Config,
        sessions: sessionmaker[Session],
        *,
        settings: KafkaSettings | None = None,
        group_id: str | None = None,
        batch_size: int = 500,
        poll_timeout_s: float = 0.5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        consumer_config: Mapping[str, Any] | None = None,
        create_topics: bool = True,
        retention_ms: int | None = DEFAULT_RETENTION_MS,
        prune_interval_s: float = PRUNE_INTERVAL_S,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if retention_ms is not None and retention_ms <= 0:
            raise ValueError(f"retention_ms must be > 0 (None keeps everything), got {retention_ms}")
        self.topics = TopicNames.from_config(config)
        self.settings = settings or settings_for(config)
        self.group_id = group_id or f"{config.app_id}-history"
        self.stats = SinkStats()
        self._sessions = sessions
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._failures = 0
        self.retention_ms = retention_ms
        self._prune_interval_s = prune_interval_s
        self._wall_clock_ms = wall_clock_ms
        self._next_prune: float | None = None  # monotonic; None: not pruned yet (start-up)
        if create_topics:
            # Subscribing to a missing topic makes some brokers auto-create it with their own
            # partition count; starting the sink before the first worker must not do that.
            t = config.topics
            ensure_topics(
                self.settings,
                {
                    self.topics.results: t.results,
                    self.topics.alerts: t.alerts,
                    self.topics.retraining: t.retraining,
                },
            )
        super().__init__(
            self.settings, group_id=self.group_id, consumer_config=consumer_config, enable_partition_eof=False
        )
        self._assigned_at: float | None = None

    def run(self, stop_event: threading.Event | None = None, idle_timeout: float | None = None) -> SinkStats:
        """Consume until ``stop_event`` is set or nothing arrives for ``idle_timeout`` seconds
        after the group assigned this sink its partitions.

        Returns the cumulative stats. The stop event is checked between batches, so a batch
        that was read is always written and committed (or rolled back) before returning.
        Retention is applied before the first poll and then between batches when due.
        """
        self._maybe_prune()
        if not self._subscribed:
            self._consumer.subscribe(
                [self.topics.results, self.topics.alerts, self.topics.retraining], on_assign=self._on_assign
            )
            self._subscribed = True
        last_message = time.monotonic()
        while not (stop_event is not None and stop_event.is_set()):
            # The idle clock starts at the first assignment: a group join can take longer than
            # the idle timeout, and "nothing arrived" means nothing while we could receive.
            if (
                idle_timeout is not None
                and self._assigned_at is not None
                and time.monotonic() - max(last_message, self._assigned_at) >= idle_timeout
            ):
                break
            messages = self._consumer.consume(num_messages=self._batch_size, timeout=self._poll_timeout_s)
            good = [m for m in messages if m.error() is None]
            for m in messages:
                if m.error() is not None:
                    log.warning("history sink: %s", m.error())
            if good:
                last_message = time.monotonic()
                self._handle(good, stop_event)
            self._maybe_prune()
        return self.stats

    def _maybe_prune(self) -> None:
        """Apply retention if it is due: at start-up, then once per ``prune_interval_s``.

        Runs in its own transaction, never inside a batch's: a slow DELETE must not hold the
        batch (and its offset commit) back. A failure only logs and retries after the backoff
        ceiling; the history it would have pruned is merely kept a little longer.
        """
        if self.retention_ms is None:
            return
        now = time.monotonic()
        if self._next_prune is not None and now < self._next_prune:
            return
        try:
            self.prune()
        except Exception:
            log.exception("history sink: retention prune failed; retrying in %.0f s", self._backoff_max_s)
            self._next_prune = now + min(self._prune_interval_s, self._backoff_max_s)
            return
        self._next_prune = now + self._prune_interval_s

    def prune(self) -> int:
        """Delete the window results past retention now; returns how many rows went.

        The reference is read from the store (``max(window_end_ms)``, an indexed lookup) rather
        than tracked from consumed batches, so a fresh sink prunes correctly at start-up."""
        if self.retention_ms is None:
            return 0
        with self._sessions.begin() as session:
            newest = session.scalar(select(func.max(WindowResultRow.window_end_ms)))
            cutoff = retention_cutoff_ms(newest, self._wall_clock_ms(), self.retention_ms)
            removed = 0 if cutoff is None else prune_window_results(session, cutoff)
        self.stats.prunes += 1
        self.stats.pruned += removed
        if removed:
            log.info("history sink: pruned %d window results that ended before %s ms", removed, cutoff)
        return removed

    def _on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        if self._assigned_at is None:
            self._assigned_at = time.monotonic()

    def _handle(self, messages: list[Message], stop_event: threading.Event | None) -> None:
        batch = self._decode(messages)
        try:
            with self._sessions.begin() as session:
                stats = write_batch(session, batch.results, batch.alerts, batch.requests)
        except Exception:
            self._failures += 1
            self.stats.store_failures += 1
            delay = min(self._backoff_initial_s * 2 ** (self._failures - 1), self._backoff_max_s)
            log.exception("history sink: store write failed; retrying the batch in %.1f s", delay)
            self._rewind(messages)
            if stop_event is not None:
                stop_event.wait(delay)
            else:
                time.sleep(delay)
            return
        self._failures = 0
        stats.batches = 1
        self.stats.add(stats)
        self._commit(messages)

    def _decode(self, messages: Iterable[Message]) -> _Batch:
        batch = _Batch()
        for m in messages:
            topic, value = m.topic(), m.value()
            if topic == self.topics.results and CONTROL_HEADER in record_headers(m):
                self.stats.control += 1  # end-of-results markers: no window in them
                continue
            try:
                if value is None:
                    raise ValueError("empty record")
                if topic == self.topics.results:
                    batch.results.append(decode_window_result(value))
                elif topic == self.topics.alerts:  # either CloudEvents content mode
                    batch.alerts.append(decode_alert(value, record_headers(m)))
                else:
                    batch.requests.append(decode_retraining_request(value, record_headers(m)))
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
                self.stats.undecodable += 1
                log.error(
                    "history sink: skipping undecodable record %s[%s]@%s: %s",
                    topic,
                    m.partition(),
                    m.offset(),
                    exc,
                )
        return batch

    def _rewind(self, messages: Iterable[Message]) -> None:
        for tp in _offsets(messages, first=True):
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:
                # Usually revoked meanwhile: the new owner resumes from the last commit,
                # which is still before this batch.
                log.warning("history sink: could not seek back on %s[%d]: %s", tp.topic, tp.partition, exc)

    def _commit(self, messages: Iterable[Message]) -> None:
        try:
            self._consumer.commit(offsets=_offsets(messages, first=False), asynchronous=False)
        except KafkaException as exc:
            # A rebalance can fail the commit; the batch is re-delivered and the upserts make
            # that harmless.
            log.warning("history sink: offset commit failed: %s", exc)



def _offsets(messages: Iterable[Message], *, first: bool) -> list[TopicPartition]:
    """Per partition, the batch's first offset (to seek back to) or the next one (to commit)."""
    bounds: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic() or "", m.partition() or 0)
        offset = m.offset() or 0
        if key not in bounds:
            bounds[key] = offset if first else offset + 1
        else:
            bounds[key] = min(bounds[key], offset) if first else max(bounds[key], offset + 1)
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in sorted(bounds.items())]
