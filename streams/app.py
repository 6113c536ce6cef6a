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
import uuid
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
from driftline.schemas.windows import MIN_WATERMARK
from driftline.streams.catalog import ModelCatalog
from driftline.streams.evaluation import Evaluation, Evaluator
from driftline.streams.ingest import CONTROL_HEADER, Incoming, InPlace, Kind, Outgoing, Router, source_name
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.messages import (
    JoinInput,
    LabelColumns,
    PredictionColumns,
    Tick,
    decode_join_input,
    decode_partials,
    encode_internal,
)
from driftline.streams.transport import PRODUCER_MAX_BATCH_BYTES, set_fetch_wait

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
#: on a join-input record (a no-op tick) this worker sends to a join partition it holds with
#: that partition's inputs, before it joins them in place: once the join applied the newest of
#: them, everything the hop carried for those inputs is applied (``DriftlineApp._in_place``)
HANDOFF_HEADER = "driftline-handoff"
#: a join partition holding more rows than this for its handoff gives up joining in place
MAX_HELD_ROWS = 250_000
#: what a handoff record carries: a tick of no source, which moves nothing
_HANDOFF_BODY = encode_internal(Tick(source="", watermark=MIN_WATERMARK))


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
        #: per (agent, partition), events to ack at that partition's next checkpoint; under
        #: ("join", p) also the input events whose rows joined in place there
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
        #: the input topics whose partition p may join in place at join partition p: those with
        #: as many partitions as the join topic, which Faust's assignor gives, partition by
        #: partition, to the worker that has the join partition (docs/architecture.md)
        self._in_place_topics = frozenset(
            topic
            for topic, count in (
                (self.topics.predictions, t.predictions),
                (self.topics.ground_truth, t.ground_truth),
            )
            if config.join_in_place and count == t.join
        )
        #: one join partition's state is changed by one step at a time: its agent's message, or
        #: the rows an ingest step joins in place there, each with the outputs and checkpoint
        self._join_locks: dict[int, asyncio.Lock] = {}
        #: bumped when partitions are revoked: what was routed in place before is void
        self._generation = 0
        self._worker_id = uuid.uuid4().hex
        #: the join partitions whose handoff record was sent in this generation, those whose
        #: join applied it, what is held for each until then (in order, and the input events
        #: to ack with it), and those that gave up joining in place until the next rebalance
        self._handoff_sent: set[int] = set()
        self._handoff_seen: set[int] = set()
        self._held: dict[int, list[JoinInput]] = {}
        self._held_events: dict[int, list[Any]] = {}
        self._held_rows: dict[int, int] = {}
        self._gave_up: set[int] = set()
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
            # aiokafka keeps one produce request in flight per broker and puts at most one
            # batch per partition in it; at Faust's 16 KB batch size a 15-30 KB join block or
            # partial was a batch, so a request, a write and a round trip, alone. Batches up
            # to the request size let what arrives during a round trip leave with the next one
            # (streams/transport.py: PRODUCER_MAX_BATCH_BYTES; no linger, so no added latency)
            "producer_max_batch_size": PRODUCER_MAX_BATCH_BYTES,
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
        set_fetch_wait(self.faust, config.fetch_wait_ms)
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
        # Ingest acks itself (``noack_take``; ``take_events`` acks every event it yielded): an
        # event whose rows joined in place only at that join partition's next checkpoint
        # (checkpoint-then-ack), any other once its output is sent.
        @self.faust.agent(predictions, name="ingest-predictions")
        async def ingest_predictions(stream: Any) -> None:
            async for events in stream.noack_take(INGEST_TAKE, within=INGEST_WITHIN_S):
                await self._ingest("predictions", events)

        @self.faust.agent(ground_truth, name="ingest-ground-truth")
        async def ingest_ground_truth(stream: Any) -> None:
            async for events in stream.noack_take(INGEST_TAKE, within=INGEST_WITHIN_S):
                await self._ingest("ground_truth", events)

        @self.faust.agent(join_input, name="join")
        async def join(stream: Any) -> None:
            async for event in stream.noack().events():
                partition = event.message.partition
                async with self._join_lock(partition):
                    await self._stateful("join", self.state.joins, self._new_join, self._join_message, event)
                if event.message.headers and self._saw_handoff(partition, event.message.headers):
                    await self._release_held(partition)

        @self.faust.on_partitions_revoked.connect
        async def revoked(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            await self._revoked(args[0] if args else kwargs.get("revoked", ()))

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
            generation = self._generation
            local = await self._in_place()
            out = self.router.idle_ticks(assigned, time.monotonic(), self.idle_after_s, local=local)
            await self._send(out)
            if local is not None and local.messages:
                await self._join_in_place(local, generation, {})

        @self.faust.timer(interval=1.0)
        async def track_assignment() -> None:
            self.progress.assigned((tp.topic, tp.partition) for tp in self.faust.consumer.assignment())

    # -- agents' bodies ----------------------------------------------------------------------
    async def _ingest(self, kind: Kind, events: Sequence[Any]) -> None:
        # a take may hold events fetched before a rebalance: Faust reads their partitions again
        # from the committed offsets (here or elsewhere), so they are left to that read
        current = self.faust.consumer_generation_id
        events = [e for e in events if e.message.generation_id == current]
        generation = self._generation
        local = await self._in_place()
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
            out = self.router.route_many(kind, messages, now=now, local=local)
        except Exception:  # a bug on some message: find it, and keep its neighbours
            log.exception("routing %d message(s) failed; routing them one at a time", len(messages))
            out = []
            if local is not None:  # what the failed attempt kept is not to be joined
                local = InPlace(local.partitions)
            for event, m in zip(events, messages, strict=True):
                routed = await self._run_guarded(
                    event, self.router.route_many, kind, [m], now=now, local=local
                )
                out.extend(routed or [])
        for record in out:
            if record.topic == self.topics.dead_letter:
                headers = dict(record.headers)
                source_topic = headers.get(SOURCE_TOPIC_HEADER, b"?").decode()
                metrics.EVENTS_INVALID.labels(source_topic, reason_of(headers)).inc()
        await self._send(out)
        # an event of a source that joins in place is acked with its join partition's next
        # checkpoint (whether or not its own rows stayed here: acks of a partition are in order)
        deferred: dict[int, list[Any]] = {}
        homes = local.partitions if local is not None else {}
        for e in events:
            home = homes.get(source_name(e.message.topic, e.message.partition))
            if home is None:
                e.ack()
            else:
                deferred.setdefault(home, []).append(e)
        if local is not None:
            await self._join_in_place(local, generation, deferred)

    # -- joining where the input is read ------------------------------------------------------
    def _join_lock(self, partition: int) -> asyncio.Lock:
        lock = self._join_locks.get(partition)
        if lock is None:
            lock = self._join_locks[partition] = asyncio.Lock()
        return lock

    async def _in_place(self) -> InPlace | None:
        """Which input partitions join where they are read, from the live assignment (never
        assumed): partition p of an input topic with as many partitions as the join topic,
        when this worker also holds join partition p.

        Before the first row of such a source joins in place, whatever the hop carried for it
        to that partition (before a restart or a rebalance, or while this worker had only one
        of the two) must be applied, or it would come after newer rows and be skipped as
        re-sent: one path per (source, join partition), in order. So at the start of each
        generation (assignment) this worker sends a *handoff record* to join partition p and
        holds what it would join there in place until its join agent has applied that record
        (``_release_held``); everything the hop carried there before is then applied. A join
        partition that would hold too much meanwhile gives up joining in place until the
        next rebalance: what it held goes through the hop, after the rest."""
        if not self._in_place_topics:
            return None
        held = self.faust.consumer.assignment()
        joins = {tp.partition for tp in held if tp.topic == self.topics.join} - self._gave_up
        homes: dict[str, int] = {}
        for tp in held:
            if tp.topic in self._in_place_topics and tp.partition in joins:
                homes[source_name(tp.topic, tp.partition)] = tp.partition
        for p in sorted(set(homes.values()) - self._handoff_sent):
            self._handoff_sent.add(p)
            token = f"{self._worker_id}:{self._generation}".encode()
            headers = ((HANDOFF_HEADER, token),)
            await self._send([Outgoing(self.topics.join, _HANDOFF_BODY, partition=p, headers=headers)])
        return InPlace(homes) if homes else None

    def _saw_handoff(self, partition: int, raw: Any) -> bool:
        """Whether a join-input record the join just applied is this worker's handoff record
        of this generation for that partition: its inputs join in place from now on."""
        token = f"{self._worker_id}:{self._generation}".encode()
        for key, value in _headers(raw):
            if key == HANDOFF_HEADER and value == token and partition in self._handoff_sent:
                self._handoff_seen.add(partition)
                log.info("join/%d: co-partitioned input joins in place from now on", partition)
                return True
        return False

    async def _release_held(self, partition: int) -> None:
        """Join what was held for a partition until its handoff, once its join applied it."""
        await self._join_in_place(InPlace({}), self._generation, {partition: []})

    async def _revoked(self, revoked: Iterable[Any]) -> None:
        """Partitions revoked (a rebalance): Faust reads every partition this worker gets next
        from its committed offset again. A join state is dropped, not kept: another worker
        may advance it through in-place rows, which move no join-input offset that ``_stateful``
        could see, so it is restored from its checkpoint when needed again; the events waiting
        for its checkpoint are never acked (they are read again). The router forgets how far
        the revoked inputs got, so its ticks follow what is read again."""
        self._generation += 1
        self._handoff_sent.clear()
        self._handoff_seen.clear()
        self._held.clear()
        self._held_events.clear()
        self._held_rows.clear()
        self._gave_up.clear()
        revoked = list(revoked)
        inputs = (self.topics.predictions, self.topics.ground_truth)
        self.router.forget(source_name(tp.topic, tp.partition) for tp in revoked if tp.topic in inputs)
        for tp in revoked:
            if tp.topic != self.topics.join:
                continue
            async with self._join_lock(tp.partition):
                self.state.joins.pop(tp.partition, None)
                self._unacked.pop(("join", tp.partition), None)
                self._last_checkpoint.pop(("join", tp.partition), None)

    def _join_state(self, partition: int) -> JoinPartition:
        state = self.state.joins.get(partition)
        if state is None:
            state = self.state.joins[partition] = self._new_join(partition)
            self._restore(f"join/{partition}", state)
            self._unacked[("join", partition)] = []
        return state

    async def _join_in_place(
        self, local: InPlace, generation: int, deferred: dict[int, list[Any]]
    ) -> None:
        """Apply what an ingest step kept in place to each join partition, in order, as the join
        agent applies a message: outputs sent, then the input events wait for the partition's
        next checkpoint. Before the partition's handoff it is held instead (``_in_place``).
        If a rebalance came since the step routed them, nothing is applied or acked: those
        inputs are read again from their committed offsets."""
        kept: dict[int, list[JoinInput]] = {}
        for p, message in local.messages:
            kept.setdefault(p, []).append(message)
        for p in sorted(kept.keys() | deferred.keys()):
            async with self._join_lock(p):
                if generation != self._generation:
                    return
                messages, events = kept.get(p, []), deferred.get(p, [])
                if p in self._gave_up:  # gave up while this step was routed: the hop, after the rest
                    await self._hop(p, messages, events)
                    continue
                if p not in self._handoff_seen:
                    self._held.setdefault(p, []).extend(messages)
                    self._held_events.setdefault(p, []).extend(events)
                    rows = sum(len(getattr(m, "ids", ())) for m in messages)
                    self._held_rows[p] = self._held_rows.get(p, 0) + rows
                    if self._held_rows[p] > MAX_HELD_ROWS:
                        log.warning(
                            "join/%d: its handoff takes long (%d rows held): its co-partitioned "
                            "input goes through %s until the next rebalance",
                            p, self._held_rows[p], self.topics.join,
                        )
                        self._gave_up.add(p)
                        await self._hop(p, self._held.pop(p), self._held_events.pop(p))
                        self._held_rows.pop(p)
                    continue
                if p in self._held:  # the handoff came: what was held first
                    messages = [*self._held.pop(p), *messages]
                    events = [*self._held_events.pop(p), *events]
                    self._held_rows.pop(p, None)
                state = self._join_state(p)
                out: list[Outgoing] = []
                for message in messages:
                    try:
                        out.extend(self._join_outputs(state, message))
                    except Exception as exc:  # one message must never stop the stream
                        await self._poison_in_place(message, exc)
                    if isinstance(message, PredictionColumns | LabelColumns):
                        topic = message.source.rpartition(":")[0]
                        metrics.JOIN_ROWS_IN_PLACE.labels(topic).inc(len(message.ids))
                await self._send(out)
                self._unacked.setdefault(("join", p), []).extend(events)
                await self._checkpoint_due("join", p, state)

    async def _hop(self, partition: int, messages: list[JoinInput], events: list[Any]) -> None:
        """Send what was kept for in place through the join topic instead; its events are then
        acked as any other ingest event, once sent."""
        join = self.topics.join
        await self._send([Outgoing(join, encode_internal(m), partition=partition) for m in messages])
        for e in events:
            e.ack()

    async def _poison_in_place(self, message: JoinInput, exc: Exception) -> None:
        source = getattr(message, "source", "?:-1")
        topic, _, partition = source.rpartition(":")
        offset = getattr(message, "offset", -1)
        log.exception("rows of %s@%s joined in place failed; dead-lettered", source, offset)
        metrics.EVENTS_INVALID.labels(topic, Reason.PROCESSING_ERROR).inc()
        where = (topic, int(partition), offset, None)
        headers = dead_letter_headers(Reason.PROCESSING_ERROR, type(exc).__name__, *where)
        await self._out[self.topics.dead_letter].send(value=encode_internal(message), headers=list(headers))

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
        self._unacked.setdefault((kind, partition), []).append(event)
        await self._checkpoint_due(kind, partition, state)

    async def _checkpoint_due(self, kind: str, partition: int, state: Any) -> None:
        """Store a checkpoint of ``state`` when one is due, then ack what waited for it."""
        pending = self._unacked.setdefault((kind, partition), [])
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
        await self._send(self._join_outputs(state, decode_join_input(event.message.value)))

    def _join_outputs(self, state: JoinPartition, message: JoinInput) -> list[Outgoing]:
        """Apply one join-input message (read from the join topic, or kept in place) and return
        the partials and progress it releases."""
        before = state.progress_epoch()
        partials = state.apply(message)
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
        return out

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
