"""Ingest: validate input messages and repartition valid events by ``prediction_id``.

Producers may key and partition however they like (batches keyed by model, kcat with
``consistent_random``, Java clients with murmur2); the join is still correct because this
stage re-routes every event to ``join-input`` partition ``xxh64(prediction_id) % N``, as Kafka
Streams does with its repartition topics. Predictions and labels of one id always meet in one
partition, and that partition's log orders them.

Bad input never stops the stream: each rejected event (a whole message, or one member of a
batch) becomes a dead-letter record that keeps the original bytes and says why in headers.
Besides what the decoder rejects, this stage refuses what only the configuration can tell:
events too far ahead of the clock, models not admitted, and labels or predictions whose value
does not fit the model's task (:class:`TaskFit`), which would otherwise be scored as if they did.

This module is pure: it turns one input message into a list of :class:`Outgoing` records and
leaves sending them to the agent.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from driftline.detectors.hashing import partition_for, stable_keys
from driftline.detectors.integration import column_schema_changes
from driftline.platform.config import Config, ModelConfig
from driftline.platform.kafka import TopicNames
from driftline.schemas import (
    GroundTruthEvent,
    PredictionEvent,
    Rejection,
    decode_ground_truth,
    decode_predictions,
    encode,
)
from driftline.schemas.deadletter import Reason, dead_letter_headers
from driftline.schemas.windows import MIN_WATERMARK, closing_epoch, window_shapes, window_start
from driftline.streams.catalog import ModelCatalog
from driftline.streams.columns import LabelBlock, PredictionBlock, groups
from driftline.streams.messages import EndOfInput, HealthFinding, JoinInput, Tick, encode_internal

__all__ = [
    "CONTROL_HEADER",
    "END_OF_INPUT",
    "Headers",
    "InPlace",
    "Incoming",
    "Outgoing",
    "Router",
    "TaskFit",
    "source_name",
]

log = logging.getLogger(__name__)

Kind = Literal["predictions", "ground_truth"]
Headers = tuple[tuple[str, bytes], ...]

#: a header-only control message on an input topic: ``driftline-control: end-of-input`` ends
#: that partition for a bounded replay (every window then closes and becomes final)
CONTROL_HEADER = "driftline-control"
END_OF_INPUT = b"end-of-input"


#: the most events one join-input block carries (see Router.route_many)
MAX_BLOCK_EVENTS = 4096
#: one message's valid events waiting to be forwarded: (offset, events, their times)
_Chunk = tuple[int, list[Any], np.ndarray]


@dataclass(slots=True)
class _Pending:
    """A source's messages waiting to be forwarded as one block, with what route_many checks
    per message kept up to date, so a take of many messages costs linear time."""

    chunks: list[_Chunk]
    events: int
    newest: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """One input message, as the router needs it."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce: to an explicit partition when ``partition`` is set."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Headers = ()


@dataclass(slots=True)
class InPlace:
    """Where rows join where they are read (docs/architecture.md, "Joining co-partitioned
    input where it is read"): ``partitions`` maps a source to the join partition this worker
    holds together with it, and ``messages`` collects, in order, what the router sends there
    instead of through ``internal.join-input``: that source's rows for that partition, and its
    ticks and end of input, so that each (source, join partition) has exactly one path."""

    partitions: Mapping[str, int]
    messages: list[tuple[int, JoinInput]] = field(default_factory=list)

    def keeps(self, source: str, partition: int, message: JoinInput) -> bool:
        """Whether ``message`` of ``source`` for ``partition`` joins in place (it is then
        kept here, in order); otherwise the caller sends it through the join topic."""
        if self.partitions.get(source) == partition:
            self.messages.append((partition, message))
            return True
        return False


def _keeps(local: InPlace | None, source: str, partition: int, message: JoinInput) -> bool:
    return local is not None and local.keeps(source, partition, message)


def source_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class TaskFit:
    """Which label and prediction values a model's task can score.

    - regression: numbers (not booleans);
    - multiclass: strings and integers (a float with no fraction is that integer: JSON has
      one number 2, however a producer spells it);
    - binary: one of the model's two classes (:attr:`ModelConfig.classes`), by default 0 and 1
      (integers, or the strings "0" and "1"), else the two configured strings.

    Booleans are not classes, though the decoder reads them: ``true`` as a label often means
    "the prediction was right" rather than "class 1", and scoring it as class "1" (as the join
    spells it) would be a silent guess.

    One instance serves every model of the same task and classes, so a batch of several such
    models is checked at once: :meth:`fits_all` is a few C-level set passes per batch, and
    only a batch with a misfit is looked at value by value (:meth:`misfit`)."""

    __slots__ = ("_accepted", "_classes_text", "_int_classes", "task")

    def __init__(self, task: str, classes: tuple[str, str] | None) -> None:
        self.task = task
        self._accepted: frozenset[object] = frozenset()
        self._classes_text = ""
        self._int_classes = False
        if classes is not None:
            # a class spelled as an integer is that integer too (and, by equality, its float)
            ints = [int(c) for c in classes if _is_int_text(c)]
            self._accepted = frozenset([*classes, *ints])
            self._int_classes = bool(ints)
            self._classes_text = " and ".join(map(_class_text, classes))

    def fits_all(self, values: list[object]) -> bool:
        if self.task == "binary":
            # True == 1, so a boolean passes the set test where a class is an integer
            return self._accepted.issuperset(values) and not (
                self._int_classes and bool in set(map(type, values))
            )
        types = set(map(type, values))
        if self.task == "regression":
            return types <= _NUMBER
        return types <= _CLASS or (bool not in types and all(map(self._fits_class, values)))

    def misfit(self, value: object) -> str | None:
        """Why ``value`` does not fit, or None when it does."""
        if self.task == "regression":
            if type(value) in _NUMBER:
                return None
            return "it must be a number, not a boolean" if isinstance(value, bool) else "it must be a number"
        if self.task == "multiclass":
            return None if self._fits_class(value) else "a class is a string or an integer"
        if isinstance(value, bool):
            return f"a boolean is not a class; its classes are {self._classes_text}"
        return None if value in self._accepted else f"its classes are {self._classes_text}"

    @staticmethod
    def _fits_class(value: object) -> bool:
        t = type(value)
        return t is str or t is int or (t is float and value.is_integer())  # type: ignore[attr-defined]


_NUMBER = {int, float}
_CLASS = {str, int}


def _is_int_text(text: str) -> bool:
    try:
        return str(int(text)) == text
    except ValueError:
        return False


def _class_text(cls: str) -> str:
    """A class as a producer would write it in JSON: 1, "fraud"."""
    return cls if _is_int_text(cls) else orjson.dumps(cls).decode()


def _value_text(value: object, limit: int = 64) -> str:
    """A payload value in its JSON spelling, shortened: dead-letter details stay small."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Router:
    """Validates, dead-letters and repartitions input messages; tracks per-source event time."""

    def __init__(self, config: Config, catalog: ModelCatalog, join_partitions: int) -> None:
        self.config = config
        self.catalog = catalog
        self.join_partitions = join_partitions
        topics = TopicNames.from_config(config)
        self.join_topic, self.dead_letter_topic = topics.join, topics.dead_letter
        self.partials_topic = topics.partials
        #: per model, the JSON types each reference feature had (None: no reference to check)
        self._schemas: dict[str, dict[str, frozenset[str]] | None] = {}
        #: schema changes this router has reported, (model, version, kind, feature): once each
        #: (a restart or another worker reports again; the merge partition's lifecycle dedups)
        self._schema_seen: set[tuple[str, str, str, str]] = set()
        self.consumed: dict[str, int] = defaultdict(int)
        self.invalid: dict[tuple[str, str], int] = defaultdict(int)
        self._wm: dict[str, int] = {}
        #: per source, the largest event times seen (ascending), ``watermark_outliers + 1`` of them
        self._newest: dict[str, list[int]] = {}
        self._ticked: dict[str, tuple[tuple[int, int], ...]] = {}
        self._shapes = window_shapes(config.model_configs())
        self._last_seen: dict[str, float] = {}
        self._idle: set[str] = set()
        #: per model, shared by models of the same task and classes (see TaskFit)
        self._fits: dict[str, TaskFit] = {}
        self._fit_shapes: dict[tuple[str, tuple[str, str] | None], TaskFit] = {}
        #: binary models already warned about scores without their positive class
        self._warned_unscored: set[str] = set()

    # -- messages ------------------------------------------------------------------------
    def route(
        self,
        kind: Kind,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        headers: Iterable[tuple[str, bytes]] | None = None,
        *,
        now: float = 0.0,
        wall_ms: float | None = None,
    ) -> list[Outgoing]:
        """Everything one input message turns into, in the order it must be produced."""
        message = Incoming(value, topic, partition, offset, tuple(headers or ()))
        return self.route_many(kind, [message], now=now, wall_ms=wall_ms)

    def route_many(
        self,
        kind: Kind,
        messages: Sequence[Incoming],
        *,
        now: float = 0.0,
        wall_ms: float | None = None,
        local: InPlace | None = None,
    ) -> list[Outgoing]:
        """Everything these input messages turn into, in the order it must be produced.

        The valid events of consecutive messages of one source travel together, as one block
        per join partition of up to :data:`MAX_BLOCK_EVENTS` events that crosses no window
        boundary (:meth:`_crosses`). Each row keeps its message's offset, so a join partition
        that applied part of a block before a restart skips exactly that part. With
        single-event messages this turns one join-input message per event into one per batch
        of messages; Faust's cost per message is most of a worker's cost there.

        With ``local``, what a source sends to the join partition ``local`` pairs it with
        (rows, ticks, end of input) is collected there instead of returned."""
        out: list[Outgoing] = []
        pending: dict[str, _Pending] = {}
        horizon = (time.time() * 1000 if wall_ms is None else wall_ms) + self.config.max_future_skew_ms
        for m in messages:
            source = source_name(m.topic, m.partition)
            self._last_seen[source] = now
            if m.headers and any(k == CONTROL_HEADER and v == END_OF_INPUT for k, v in m.headers):
                if source in pending:
                    out.extend(self._flush(kind, source, pending.pop(source).chunks, local))
                self._idle.discard(source)
                end = EndOfInput(source)
                body = encode_internal(end)
                out.extend(
                    Outgoing(self.join_topic, body, partition=p)
                    for p in range(self.join_partitions)
                    if not _keeps(local, source, p, end)
                )
                continue
            events, times = self._validate(kind, m, horizon, out)
            if events:
                newest = int(times.max())
                block = pending.get(source)
                if block is not None and self._crosses(block.newest, newest):
                    out.extend(self._flush(kind, source, pending.pop(source).chunks, local))
                    block = None
                if block is None:
                    seen = self._wm.get(source, MIN_WATERMARK)
                    block = pending[source] = _Pending([], 0, seen)
                block.chunks.append((m.offset, events, times))
                block.events += len(events)
                block.newest = max(block.newest, newest)
                if block.events >= MAX_BLOCK_EVENTS:
                    out.extend(self._flush(kind, source, pending.pop(source).chunks, local))
            elif source in self._idle and source not in pending:  # a sign of life, no valid event
                self._idle.discard(source)
                out.extend(self._ticks(source, set(), force=True, local=local))
        for source, block in pending.items():
            out.extend(self._flush(kind, source, block.chunks, local))
        return out

    def _crosses(self, seen: int, newest: int) -> bool:
        """Whether an event at ``newest`` would take a pending block whose source had reached
        ``seen`` across a boundary where some window closes. A block stops there, so it never
        spans more event time than one message would: a backlog read in big takes opens no
        more windows at once than it does one message at a time."""
        return newest > seen and closing_epoch(self._shapes, newest, newest) != closing_epoch(
            self._shapes, seen, seen
        )

    def _validate(
        self, kind: Kind, m: Incoming, horizon: float, out: list[Outgoing]
    ) -> tuple[list[Any], np.ndarray]:
        """One message's valid events and their times; its rejections go to ``out``."""
        data = m.value or b""
        self.consumed[m.topic] += 1
        limit = self.config.max_message_bytes
        decoded = (
            decode_predictions(data, max_bytes=limit)
            if kind == "predictions"
            else decode_ground_truth(data, max_bytes=limit)
        )
        out.extend(self._dead_letter(r, m.topic, m.partition, m.offset) for r in decoded.rejected)
        events: list[Any] = decoded.events
        if not events:
            return events, np.zeros(0, dtype=np.int64)
        times = np.array([e.timestamp for e in events], dtype=np.int64)
        # admission in first-seen order, as one event at a time would (a cap fills in order)
        models = dict.fromkeys(e.model_id for e in events)
        if (
            times.max() > horizon
            or not all(map(self.catalog.admit, models))
            or not self._all_fit(kind, events, models)
        ):
            where = (m.topic, m.partition, m.offset)
            keep = self._refuse(kind, events, times, horizon, decoded.batch, data, out, *where)
            events, times = [events[i] for i in keep], times[keep]
        return events, times

    def _fit(self, model_id: str) -> TaskFit:
        fit = self._fits.get(model_id)
        if fit is None:
            cfg: ModelConfig = self.catalog.model(model_id)
            shape = (cfg.task, cfg.classes)
            fit = self._fit_shapes.get(shape)
            if fit is None:
                fit = self._fit_shapes[shape] = TaskFit(*shape)
            self._fits[model_id] = fit
        return fit

    def _all_fit(self, kind: Kind, events: list[Any], models: Iterable[str]) -> bool:
        """Whether every label (or prediction) of a message fits its model's task, in one
        check when its models share a task and classes (the common case: one model)."""
        fits = {self._fit(model_id) for model_id in models}
        if len(fits) > 1:
            return False  # decided event by event in _refuse
        values = [e.prediction for e in events] if kind == "predictions" else [e.label for e in events]
        return fits.pop().fits_all(values)

    def _flush(
        self, kind: Kind, source: str, chunks: list[_Chunk], local: InPlace | None = None
    ) -> list[Outgoing]:
        if len(chunks) == 1:
            offset, events, times = chunks[0]
            return self._forward(kind, source, offset, events, times, local=local)
        events = [e for c in chunks for e in c[1]]
        times = np.concatenate([c[2] for c in chunks])
        rows = np.repeat(np.array([c[0] for c in chunks], dtype=np.int64), [len(c[1]) for c in chunks])
        return self._forward(kind, source, chunks[-1][0], events, times, rows, local=local)

    def _refuse(
        self,
        kind: Kind,
        events: Sequence[PredictionEvent | GroundTruthEvent],
        times: np.ndarray,
        horizon: float,
        batch: bool,
        data: bytes,
        out: list[Outgoing],
        topic: str,
        partition: int,
        offset: int,
    ) -> list[int]:
        """Dead-letter events too far ahead of the clock, of models not admitted, or whose
        label (prediction) does not fit the model's task; returns the positions of the others."""
        keep: list[int] = []
        what, misfit_reason = (
            ("prediction", Reason.TASK_MISMATCH) if kind == "predictions" else ("label", Reason.INVALID_LABEL)
        )
        for index, (event, ts) in enumerate(zip(events, times.tolist(), strict=True)):
            if ts > horizon:
                reason = Reason.TOO_FAR_AHEAD
                detail = f"timestamp is more than {self.config.max_future_skew_ms} ms ahead of the clock"
            elif not self.catalog.admit(event.model_id):
                reason = Reason.UNKNOWN_MODEL
                detail = f"model {event.model_id!r} is not configured and unknown models are not admitted"
            else:
                value = event.prediction if kind == "predictions" else event.label  # type: ignore[union-attr]
                fit = self._fit(event.model_id)
                why = fit.misfit(value)
                if why is None:
                    keep.append(index)
                    continue
                reason = misfit_reason
                model = f"{fit.task} model {event.model_id!r}"
                detail = f"{what} {_value_text(value)} does not fit {model}: {why}"
            rejection = Rejection(
                reason=reason,
                detail=detail,
                index=index if batch else None,
                raw=encode(event) if batch else data,
            )
            out.append(self._dead_letter(rejection, topic, partition, offset))
        return keep

    def _dead_letter(self, rejection: Rejection, topic: str, partition: int, offset: int) -> Outgoing:
        self.invalid[(topic, rejection.reason)] += 1
        headers = dead_letter_headers(
            rejection.reason, rejection.detail, topic, partition, offset, rejection.index
        )
        return Outgoing(self.dead_letter_topic, rejection.raw, headers=headers)

    def _forward(
        self,
        kind: Kind,
        source: str,
        offset: int,
        events: Sequence[PredictionEvent] | Sequence[GroundTruthEvent],
        times: np.ndarray,
        rows: np.ndarray | None = None,
        *,
        local: InPlace | None = None,
    ) -> list[Outgoing]:
        """Send the valid events to their join partitions as columns (see streams/columns.py);
        ``rows`` are the events' source offsets when they come from several messages."""
        wm = self._advance(source, times)
        keys = stable_keys([e.prediction_id for e in events])
        targets = (keys % np.uint64(self.join_partitions)).astype(np.int64)
        # kind chose the events' decoder, so it names their type: a link the checker cannot see
        block: PredictionBlock | LabelBlock
        if kind == "predictions":
            unscored: dict[str, list[str]] = {}
            block = PredictionBlock.from_events(
                events,  # type: ignore[arg-type]  # predictions, by kind
                self.catalog.positive_label,
                keys,
                unscored,
                self._multiclass,
            )
            if unscored.keys() - self._warned_unscored:
                self._warn_unscored(unscored)
            findings = self._schema_findings(source, offset, events, block, rows)  # type: ignore[arg-type]
        else:
            findings = []
            block = LabelBlock.from_events(events)  # type: ignore[arg-type]  # labels, by kind
        out: list[Outgoing] = []
        touched: set[int] = set()
        if (targets == targets[0]).all():  # a co-partitioned batch (the producer helper's)
            parts: Iterable[tuple[int, np.ndarray | None]] = [(int(targets[0]), None)]
        else:
            parts = list(groups(targets))
        for jp, chunk in parts:
            touched.add(jp)
            share = block if chunk is None else block.take(chunk)
            share_rows = rows if chunk is None or rows is None else rows[chunk]
            wire = share.to_wire(source, offset, wm, share_rows)
            if not _keeps(local, source, jp, wire):
                out.append(Outgoing(self.join_topic, encode_internal(wire), partition=jp))
        was_idle = source in self._idle
        self._idle.discard(source)
        out.extend(self._ticks(source, touched, force=was_idle, local=local))
        return findings + out

    # -- schema changes ----------------------------------------------------------------------
    def _schema(self, model_id: str) -> dict[str, frozenset[str]] | None:
        """The reference's features and the JSON types a value of each may have: numbers for a
        numeric feature, strings and booleans for a categorical one, anything for a feature
        ``feature_types`` declares categorical (its codes may be numbers). None without a
        reference profile (a bootstrapped reference has no schema to hold events to) or with
        ``schema-change`` disabled."""
        if model_id not in self._schemas:
            cfg = self.catalog.model(model_id)
            profile = self.catalog.profile(model_id)
            schema = None
            if profile is not None and cfg.health.enabled("schema-change"):
                schema = {}
                for name, feature in profile.features.items():
                    if feature.kind == "numeric":
                        schema[name] = frozenset({"number"})
                    elif cfg.feature_types.get(name) == "categorical":
                        schema[name] = frozenset()
                    else:
                        schema[name] = frozenset({"string", "boolean"})
            self._schemas[model_id] = schema
        return self._schemas[model_id]

    def _schema_findings(
        self,
        source: str,
        offset: int,
        events: Sequence[PredictionEvent],
        block: PredictionBlock,
        rows: np.ndarray | None,
    ) -> list[Outgoing]:
        """Schema changes in a block of valid predictions, each sent once to the merge
        partition of its model with the first offending event's position. Valid events go on
        to the join whatever their schema: a new or missing feature is news, not bad input
        (a value the contract refuses was dead-lettered by the decoder already)."""
        versions = [(m, v) for m, v, _ in block.groups]
        if not any(self._schema(m) is not None for m, _ in versions):
            return []
        distinct = list(dict.fromkeys(versions))
        if len(distinct) == 1:
            parts: list[tuple[int, np.ndarray | None]] = [(0, None)]
        else:
            of_group = np.array([distinct.index(x) for x in versions], dtype=np.int64)
            parts = list(groups(of_group[block.group]))
        topic, _, partition = source.rpartition(":")
        out: list[Outgoing] = []
        for i, idx in parts:
            model_id, version = distinct[i]
            schema = self._schema(model_id)
            if schema is None:
                continue
            share = block if idx is None else block.take(idx)
            picked = list(events) if idx is None else [events[j] for j in idx.tolist()]
            cfg = self.catalog.model(model_id)
            offsets = rows if idx is None or rows is None else rows[idx]

            def position(row: int, picked: list[PredictionEvent] = picked, offsets: Any = offsets) -> Any:
                at = offset if offsets is None else int(offsets[row])
                return (at, picked[row].prediction_id)

            found = column_schema_changes(
                schema,
                share.features,
                [e.features for e in picked],
                window_start(share.times, cfg.window_ms),
                position,
            )
            for e in found:
                seen = (model_id, version, e.kind, e.key)
                if seen in self._schema_seen:
                    continue
                self._schema_seen.add(seen)
                at, prediction_id = e.position
                finding = HealthFinding(
                    model_id=model_id,
                    model_version=version,
                    kind=e.kind,
                    feature=e.key,
                    window_start=e.window_start_ms,
                    topic=topic,
                    partition=int(partition),
                    offset=at,
                    prediction_id=prediction_id,
                    detail=dict(e.detail),
                )
                target = int(partition_for([model_id], self.config.topics.partials)[0])
                body = encode_internal(finding)
                out.append(Outgoing(self.partials_topic, body, key=model_id.encode(), partition=target))
        return out

    def _advance(self, source: str, times: np.ndarray) -> int:
        """The source's event time after these events: the ``watermark_outliers + 1``-th largest
        time it has shown, not the largest. One event stamped days ahead (a serving app with a
        wrong clock, replayed history) then cannot move the stream's event time and make every
        on-time event after it late; it takes that many events at or past a time to get there.
        The outliers themselves are still processed, in their own windows, and counted by the
        join (``ahead_of_stream``)."""
        k = self.config.watermark_outliers + 1
        largest = times if times.size <= k else np.partition(times, times.size - k)[times.size - k :]
        newest = self._newest[source] = sorted([*self._newest.get(source, ()), *largest.tolist()])[-k:]
        seen = newest[0] if len(newest) == k else MIN_WATERMARK
        wm = self._wm[source] = max(self._wm.get(source, MIN_WATERMARK), seen)
        return wm

    def _multiclass(self, model_id: str) -> bool:
        """Whether a model's ``scores`` vectors go on to the join (its multiclass estimates)."""
        return self.catalog.model(model_id).task == "multiclass"

    def _warn_unscored(self, unscored: dict[str, list[str]]) -> None:
        """Once per binary model: its predictions' ``scores`` lack the positive class, so they
        have no score, and the metrics of scores quietly leave them out."""
        for model_id, named in unscored.items():
            cfg = self.catalog.model(model_id)
            if model_id in self._warned_unscored or cfg.task != "binary":
                continue
            self._warned_unscored.add(model_id)
            log.warning(
                "binary model %r: scores name [%s] but not the positive class %s (positive_label), "
                "so ROC AUC, log loss and Brier score leave such predictions out",
                model_id,
                ", ".join(orjson.dumps(c).decode() for c in named),
                _class_text(cfg.positive_label),
            )

    def _ticks(
        self,
        source: str,
        skip: set[int],
        *,
        force: bool = False,
        idle: bool = False,
        local: InPlace | None = None,
    ) -> list[Outgoing]:
        """Tell the partitions this message skipped how far the source has got: when its event
        time crosses a boundary where some window closes (:func:`closing_epoch`; nothing
        between two boundaries can change a result), or at once after the source was idle."""
        wm = self._wm.get(source, MIN_WATERMARK)
        epoch = closing_epoch(self._shapes, wm, wm)
        if not force and epoch == self._ticked.get(source):
            return []
        self._ticked[source] = epoch
        tick = Tick(source=source, watermark=wm, idle=idle)
        body = encode_internal(tick)
        return [
            Outgoing(self.join_topic, body, partition=p)
            for p in range(self.join_partitions)
            if p not in skip and not _keeps(local, source, p, tick)
        ]

    # -- idleness ------------------------------------------------------------------------
    def idle_ticks(
        self,
        assigned: Iterable[tuple[str, int]],
        now: float,
        idle_after_s: float,
        local: InPlace | None = None,
    ) -> list[Outgoing]:
        """Mark assigned sources that sent nothing for ``idle_after_s`` as idle, so one quiet
        partition does not hold every window open. Called from a wall-clock timer: this is
        the one place where wall time enters, and it only ever *releases* windows."""
        out: list[Outgoing] = []
        for topic, partition in assigned:
            source = source_name(topic, partition)
            last = self._last_seen.setdefault(source, now)
            if source in self._idle or now - last < idle_after_s:
                continue
            self._idle.add(source)
            out.extend(self._ticks(source, set(), force=True, idle=True, local=local))
        return out

    def forget(self, sources: Iterable[str]) -> None:
        """Forget how far these sources got, when this worker lost them (a rebalance): after
        it, each is read again from its committed offset (here or on another worker), and
        its event time and ticks must follow what is read, as after a restart, not run ahead
        of rows that never reached their join partition."""
        for source in sources:
            self._wm.pop(source, None)
            self._newest.pop(source, None)
            self._ticked.pop(source, None)
