"""The Faust app: topics, and the four agents that carry events from input to alerts.

    predictions, ground-truth --ingest--> internal.join-input (by prediction_id)
        --join--> internal.window-partials (by model) --merge--> window-results, alerts,
        retraining-requests;   bad input --> dead-letter

Each agent is a short loop that hands the message to a pure object (``Router``,
``JoinPartition``, ``WindowMerger``) and produces what it returns; the logic lives there, where
tests reach it without a broker. Every agent catches what a single message can throw, dead-
letters that message with the reason, and goes on: one poisoned message never stops a stream.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from driftline.detectors.hashing import partition_for
from driftline.platform import metrics
from driftline.platform.checkpoints import CheckpointStore
from driftline.platform.config import Config
from driftline.platform.health import ProgressTracker
from driftline.platform.kafka import KafkaSettings, TopicNames, settings_for
from driftline.schemas import AlertEvent, encode, kafka_record
from driftline.schemas.deadletter import SOURCE_TOPIC_HEADER, Reason, dead_letter_headers, reason_of
from driftline.streams.catalog import ModelCatalog
from driftline.streams.evaluation import Evaluation, Evaluator
from driftline.streams.ingest import CONTROL_HEADER, Incoming, Kind, Outgoing, Router
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.messages import (
    decode_join_input,
    decode_partials,
    encode_internal,
)

__all__ = [
    "END_OF_RESULTS",
    "FINAL_WINDOWS_HEADER",
    "MERGE_PARTITION_HEADER",
    "DriftlineApp",
]

log = logging.getLogger(__name__)

#: header-only record a merge partition writes to window-results once every input has ended
END_OF_RESULTS = b"end-of-results"
#: on end-of-results markers: the merge partition that wrote them
MERGE_PARTITION_HEADER = "driftline-merge-partition"
#: on end-of-results markers: how many final window results that merge partition emitted
FINAL_WINDOWS_HEADER = "driftline-final-windows"
#: ingest routes what has arrived, up to this many input messages at once ...
INGEST_TAKE = 256
#: ... waiting at most this long for more (the latency it may add to a quiet stream)
INGEST_WITHIN_S = 0.02


def _faust_credentials(settings: KafkaSettings) -> Any:
    """Faust's form of the settings every other client gets from ``confluent_config``: SASL
    with or without TLS, or TLS alone (aiokafka picks the protocol from what it is given)."""
    tls = None
    if settings.security_protocol.endswith("SSL"):
        import ssl

        tls = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password or "",
            mechanism=settings.sasl_mechanism,
            ssl_context=tls,
        )
    if tls is not None:
        return faust.SSLCredentials(tls)
    return None


@dataclass
class _State:
    joins: dict[int, JoinPartition] = field(default_factory=dict)
    mergers: dict[int, WindowMerger] = field(default_factory=dict)


class DriftlineApp:
    """One worker's Faust app. Several workers with the same ``app_id`` share the partitions."""

    def __init__(
        self,
        config: Config,
        catalog: ModelCatalog | None = None,
        *,
        web_port: int = 6066,
        idle_after_s: float = 10.0,
        session_timeout_s: float | None = None,
        on_evaluation: Callable[[Evaluation], None] | None = None,
        checkpoints: CheckpointStore | None = None,
        checkpoint_interval_s: float | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog or ModelCatalog.load(config)
        self.topics = TopicNames.from_config(config)
        self.settings = settings_for(config)
        self.idle_after_s = idle_after_s
        self.on_evaluation = on_evaluation
        self.router = Router(config, self.catalog, config.topics.join)
        self.state = _State()
        self.checkpoints = checkpoints
        self.checkpoint_interval_s = (
            config.checkpoint_interval_ms / 1000 if checkpoint_interval_s is None else checkpoint_interval_s
        )
        self._unacked: dict[tuple[str, int], list[Any]] = {}
        self._last_checkpoint: dict[tuple[str, int], float] = {}
        self._models_of: dict[int, set[str]] = {}
        #: what each assigned partition got through, for the watchdog and ``/healthz``
        self.progress = ProgressTracker()
        #: topic name -> broker topic id, read once the topics exist (``runner.create_topics``);
        #: checkpoints record those of the consumed topics, so that a broker that lost its data
        #: (same names, new ids, offsets from 0) cannot have its new logs skipped as already seen
        self.topic_ids: dict[str, str] = {}
        metrics.configure(config, self.catalog)
        t = config.topics
        self.prediction_sources = [f"{self.topics.predictions}:{p}" for p in range(t.predictions)]
        self.label_sources = [f"{self.topics.ground_truth}:{p}" for p in range(t.ground_truth)]
        options: dict[str, Any] = {
            "broker": f"driftline://{config.bootstrap_servers}",  # aiokafka, tuned: streams/transport.py
            "broker_credentials": _faust_credentials(self.settings),
            "value_serializer": "raw",
            "key_serializer": "raw",
            "store": "memory://",
            # state lives in the SQL checkpoints; keep Faust's own data dir out of the cwd
            "datadir": str(Path(tempfile.gettempdir()) / f"driftline-faust-{config.app_id}"),
            "web_enabled": False,
            "web_host": "127.0.0.1",
            "web_bind": "127.0.0.1",
            "web_port": web_port,
            "topic_allow_declare": False,
            "topic_disable_leader": True,
            "consumer_auto_offset_reset": "earliest",
            "producer_max_request_size": 16 * 1024 * 1024,
            # fetch messages larger than the size limit, so they reach the validator and the
            # dead-letter topic instead of stalling the partition
            "consumer_max_fetch_size": max(8 * 1024 * 1024, 4 * config.max_message_bytes),
            "producer_compression_type": None,
            "stream_wait_empty": False,
        }
        if session_timeout_s:  # the embedded broker holds a group join for session_timeout/2
            options.update(
                broker_session_timeout=session_timeout_s,
                broker_heartbeat_interval=max(0.5, session_timeout_s / 6),
            )
        self.faust = faust.App(config.app_id, **options)
        self._stopping: asyncio.Event | None = None
        self._define()

    # -- wiring --------------------------------------------------------------------------
    def _topic(self, name: str, partitions: int) -> Any:
        return self.faust.topic(name, value_type=bytes, key_type=bytes, partitions=partitions)

    def _define(self) -> None:
        t, c = self.topics, self.config.topics
        predictions = self._topic(t.predictions, c.predictions)
        ground_truth = self._topic(t.ground_truth, c.ground_truth)
        join_input = self._topic(t.join, c.join)
        partials = self._topic(t.partials, c.partials)
        self._out = {name: self._topic(name, count) for name, count in t.partitions(self.config).items()}

        # Ingest takes what has arrived (up to INGEST_TAKE messages, waiting at most
        # INGEST_WITHIN_S) and routes it at once: the valid events of consecutive messages of
        # a source reach the join as one block (Router.route_many).
        @self.faust.agent(predictions, name="ingest-predictions")
        async def ingest_predictions(stream: Any) -> None:
            async for events in stream.take_events(INGEST_TAKE, within=INGEST_WITHIN_S):
                await self._ingest("predictions", events)

        @self.faust.agent(ground_truth, name="ingest-ground-truth")
        async def ingest_ground_truth(stream: Any) -> None:
            async for events in stream.take_events(INGEST_TAKE, within=INGEST_WITHIN_S):
                await self._ingest("ground_truth", events)

        @self.faust.agent(join_input, name="join")
        async def join(stream: Any) -> None:
            async for event in stream.noack().events():
                await self._stateful("join", self.state.joins, self._new_join, self._join_message, event)

        @self.faust.agent(partials, name="merge")
        async def merge(stream: Any) -> None:
            async for event in stream.noack().events():
                await self._stateful(
                    "merge", self.state.mergers, self._new_merger, self._merge_message, event
                )

        @self.faust.timer(interval=1.0)
        async def idle_sources() -> None:
            assigned = [
                (tp.topic, tp.partition)
                for tp in self.faust.consumer.assignment()
                if tp.topic in (t.predictions, t.ground_truth)
            ]
            await self._send(self.router.idle_ticks(assigned, time.monotonic(), self.idle_after_s))

        @self.faust.timer(interval=1.0)
        async def track_assignment() -> None:
            self.progress.assigned((tp.topic, tp.partition) for tp in self.faust.consumer.assignment())

    # -- agents' bodies ----------------------------------------------------------------------
    async def _ingest(self, kind: Kind, events: Sequence[Any]) -> None:
        messages = [
            Incoming(
                e.message.value, e.message.topic, e.message.partition, e.message.offset,
                tuple(_headers(e.message.headers)),
            )
            for e in events
        ]
        for m in messages:
            metrics.EVENTS_CONSUMED.labels(m.topic).inc()
            self.progress.advanced(m.topic, m.partition, m.offset + 1)
        now = time.monotonic()
        try:
            out = self.router.route_many(kind, messages, now=now)
        except Exception:  # a bug on some message: find it, and keep its neighbours
            log.exception("routing %d message(s) failed; routing them one at a time", len(messages))
            out = []
            for event, m in zip(events, messages, strict=True):
                out.extend(await self._run_guarded(event, self.router.route_many, kind, [m], now=now) or [])
        for record in out:
            if record.topic == self.topics.dead_letter:
                headers = dict(record.headers)
                source_topic = headers.get(SOURCE_TOPIC_HEADER, b"?").decode()
                metrics.EVENTS_INVALID.labels(source_topic, reason_of(headers)).inc()
        await self._send(out)

    def _new_join(self, jp: int) -> JoinPartition:
        return JoinPartition(
            jp, self.catalog, prediction_sources=self.prediction_sources, label_sources=self.label_sources
        )

    def _new_merger(self, mp: int) -> WindowMerger:
        evaluator = Evaluator(self.catalog, source=self.config.source)
        return WindowMerger(self.catalog, evaluator, self.config.topics.join)

    async def _stateful(
        self,
        kind: str,
        states: dict[int, Any],
        new_state: Callable[[int], Any],
        handle: Callable[[Any, Any], Awaitable[None]],
        event: Any,
    ) -> None:
        """One message of a checkpointed partition (join or merge). Its state is restored
        from the checkpoint when the partition is new to this worker, or when the offset shows
        that another worker had it in between; messages already in the state are skipped."""
        partition, offset = event.message.partition, event.message.offset
        self.progress.advanced(event.message.topic, partition, offset + 1)
        state = states.get(partition)
        if state is None or (offset > state.next_offset and self.checkpoints is not None):
            state = states[partition] = new_state(partition)
            self._restore(f"{kind}/{partition}", state)
            self._unacked[(kind, partition)] = []
        if offset < state.next_offset:  # already in the restored state
            event.ack()
            return
        if offset > state.next_offset and state.next_offset:
            log.warning(
                "%s/%d: offsets %d..%d were never applied", kind, partition, state.next_offset, offset - 1
            )
        state.next_offset = offset  # outputs carry it as their seq
        try:
            await handle(state, event)
        except Exception as exc:  # one message must never stop the stream
            await self._poison(event, exc)
        await self._applied(kind, partition, event, state)

    def _restore(self, name: str, state: Any) -> None:
        if self.checkpoints is None:
            return
        loaded = self.checkpoints.load(f"{self.config.app_id}/{name}")
        if loaded is None:
            return
        stale = loaded.stale_for(self.topic_ids)
        if stale:
            log.error(
                "%s: discarding its checkpoint at offset %d: it was taken from other logs of %s "
                "(topic ids %s, now %s). The broker lost its data or the topics were recreated; "
                "this partition starts from empty state, and what the lost logs held is not in it",
                name,
                loaded.next_offset,
                ", ".join(stale),
                ", ".join(loaded.topic_ids[t] for t in stale),
                ", ".join(self.topic_ids[t] for t in stale),
            )
            return
        state.restore(loaded.payload, loaded.deltas)
        log.info(
            "%s restored from its checkpoint at offset %d (%d delta(s) on its base)",
            name, state.next_offset, len(loaded.deltas),
        )

    def _checkpointed_topic_ids(self) -> dict[str, str]:
        """The ids of the topics a join or merge state is built from: its own input, and the
        topics whose offsets it keeps (the join's per-source offsets, the merge's ``seq``)."""
        t = self.topics
        consumed = (t.predictions, t.ground_truth, t.join, t.partials)
        return {name: self.topic_ids[name] for name in consumed if self.topic_ids.get(name)}

    async def _applied(self, kind: str, partition: int, event: Any, state: Any) -> None:
        """Checkpoint-then-ack: an event is acked (so Faust may commit past it) only once a
        checkpoint holding its effects is stored, and a checkpoint is written only after the
        producer delivered what those events emitted."""
        state.next_offset = event.message.offset + 1
        pending = self._unacked.setdefault((kind, partition), [])
        pending.append(event)
        if self.checkpoints is None:
            for e in pending:
                e.ack()
            pending.clear()
            return
        now = time.monotonic()
        key = (kind, partition)
        if now - self._last_checkpoint.get(key, 0.0) < self.checkpoint_interval_s:
            return
        await self.faust.producer.flush()
        # a delta of what changed since the last write when the chain allows, else the whole
        # state; written on the store's thread, and only what it covers is acked after it
        name, topic_ids = f"{self.config.app_id}/{kind}/{partition}", self._checkpointed_topic_ids()
        whole = not state.tracking or self.checkpoints.wants_base(name)
        covered, pending[:] = list(pending), []
        try:
            written = await self.checkpoints.write(
                name, state.checkpoint(whole=whole), state.next_offset, topic_ids, delta=not whole
            )
            if not written:  # another writer's chain is stored now: start a chain of our own
                await self.checkpoints.write(
                    name, state.checkpoint(whole=True), state.next_offset, topic_ids, delta=False
                )
        except BaseException:  # not stored: acked with the next checkpoint, which will be whole
            pending[:0] = covered
            raise
        self._last_checkpoint[key] = now
        for e in covered:
            e.ack()

    async def _join_message(self, state: JoinPartition, event: Any) -> None:
        before = state.progress_epoch()
        partials = state.apply(decode_join_input(event.message.value))
        n_merge = self.config.topics.partials
        out = [
            Outgoing(
                self.topics.partials,
                encode_internal(p),
                key=p.model_id.encode(),
                partition=int(partition_for([p.model_id], n_merge)[0]),
            )
            for p in partials
        ]
        if state.progress_epoch() != before:
            progress = encode_internal(state.progress())
            out.extend(Outgoing(self.topics.partials, progress, partition=p) for p in range(n_merge))
        await self._send(out)

    async def _merge_message(self, merger: WindowMerger, event: Any) -> None:
        mp = event.message.partition
        result = merger.add(decode_partials(event.message.value))
        models = self._models_of.setdefault(mp, set())
        out: list[Outgoing] = []
        for evaluation in result.evaluations:
            r = evaluation.result
            models.add(r.model_id)
            metrics.WINDOWS_EVALUATED.labels(r.phase).inc()
            metrics.observe_evaluation(evaluation)
            out.append(Outgoing(self.topics.results, encode(r), key=r.model_id.encode()))
            # CloudEvents in each topic's configured content mode; the key is the same in both
            for alert in evaluation.alerts:
                metrics.ALERTS_EMITTED.labels(alert.data.status, alert.data.severity).inc()
                value, headers = kafka_record(alert, self.config.cloudevents.alerts)
                out.append(
                    Outgoing(self.topics.alerts, value, key=alert.data.dedup_key.encode(), headers=headers)
                )
            for request in evaluation.requests:
                metrics.RETRAINING_REQUESTS.inc()
                value, headers = kafka_record(request, self.config.cloudevents.retraining_requests)
                key = request.data.model_id.encode()
                out.append(Outgoing(self.topics.retraining, value, key=key, headers=headers))
            if self.on_evaluation is not None:
                self.on_evaluation(evaluation)
        out.extend(self._health_records(result.alerts))
        metrics.observe_progress(merger.counters, merger.watermark, models)
        if result.ended:
            # on every results partition, after this partition's results there: a reader that
            # has every merge partition's marker on every results partition has read everything
            counters = encode(merger.counters)
            headers = (
                (CONTROL_HEADER, END_OF_RESULTS),
                (MERGE_PARTITION_HEADER, str(mp).encode()),
                (FINAL_WINDOWS_HEADER, str(merger.finalised).encode()),
            )
            out.extend(
                Outgoing(self.topics.results, counters, partition=p, headers=headers)
                for p in range(self.config.topics.results)
            )
        await self._send(out)

    def _health_records(self, alerts: Iterable[AlertEvent]) -> list[Outgoing]:
        """Integration-health alerts (streams/integration_health.py), as every other alert."""
        out = []
        for alert in alerts:
            metrics.ALERTS_EMITTED.labels(alert.data.status, alert.data.severity).inc()
            value, headers = kafka_record(alert, self.config.cloudevents.alerts)
            key = alert.data.dedup_key.encode()
            out.append(Outgoing(self.topics.alerts, value, key=key, headers=headers))
        return out

    # -- plumbing --------------------------------------------------------------------------
    async def _send(self, records: Iterable[Outgoing]) -> None:
        for r in records:
            await self._out[r.topic].send(
                key=r.key, value=r.value, partition=r.partition, headers=list(r.headers) or None
            )

    async def _run_guarded(self, event: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # one message must never stop the stream
            await self._poison(event, exc)
            return None

    async def _poison(self, event: Any, exc: Exception) -> None:
        message = event.message
        log.exception(
            "message %s:%s@%s failed; dead-lettered", message.topic, message.partition, message.offset
        )
        metrics.EVENTS_INVALID.labels(message.topic, Reason.PROCESSING_ERROR).inc()
        where = (message.topic, message.partition, message.offset, None)
        headers = dead_letter_headers(Reason.PROCESSING_ERROR, type(exc).__name__, *where)
        await self._out[self.topics.dead_letter].send(value=message.value, headers=list(headers))


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k.decode() if isinstance(k, bytes) else k, v) for k, v in items]
