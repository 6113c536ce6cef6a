"""Wire formats of the internal topics (msgpack): the join input and the window partials.

These are not public contracts: producers never see them. msgpack keeps the columnar batches
and the sketches compact and fast. A reader still accepts what the previous version wrote
(event-struct batches), so a worker upgraded mid-log resumes where the old one stopped.

``join-input`` carries, per join partition, an ordered mix of prediction and label batches
(as columns), watermark ticks and end-of-input markers. Because one partition's log holds both
sides of the join in one order, processing it is a deterministic function of that log.
``window-partials`` carries each join partition's partial window aggregates and its progress
(watermark and counters) to the partition that owns the model.

A *source* is one partition of an input topic, written ``topic:partition``; event-time
progress is tracked per source so that one fast partition cannot push the watermark past a
slower one (the same rule as Flink's per-split watermarks).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from driftline.schemas import GroundTruthEvent, PredictionEvent

__all__ = [
    "EndOfInput",
    "FeatureWire",
    "HealthFinding",
    "JoinInput",
    "LabelBatch",
    "LabelColumns",
    "Partial",
    "PartialsMessage",
    "PredictionBatch",
    "PredictionColumns",
    "Progress",
    "Tick",
    "decode_join_input",
    "decode_partials",
    "encode_internal",
]


class PredictionBatch(msgspec.Struct, tag="p", gc=False):
    """Valid predictions of one source message routed to one join partition.

    ``offset`` is the source message's offset (a re-send after a restart has one already
    applied); ``watermark`` is the largest prediction time the source had shown."""

    source: str
    offset: int
    watermark: int
    events: list[PredictionEvent]


class LabelBatch(msgspec.Struct, tag="l", gc=False):
    """Valid labels of one source message routed to one join partition.

    ``watermark`` is the largest label time the source had shown when this was sent."""

    source: str
    offset: int
    watermark: int
    events: list[GroundTruthEvent]


#: one feature's values in a columnar batch: numbers as float64 bytes (NaN where none), and
#: categories (None where none); either is None when the batch has no such column
FeatureWire = tuple[bytes | None, list[str | None] | None]


class PredictionColumns(msgspec.Struct, tag="P", gc=False):
    """Valid predictions of one source message routed to one join partition, as columns.

    Ingest has already decoded, validated and hashed every event; sending columns spares the
    join a second decode, an object per event and the hash, and hands the sketches arrays.
    ``groups`` are the distinct (model, version, segments) of the batch in first-seen order
    and ``group`` indexes them per event; ``keys`` are the ids' stable keys (uint64),
    ``times`` their event times (int64) and ``scores`` the positive-class probability
    (float64, NaN when absent), all little-endian bytes."""

    source: str
    offset: int
    watermark: int
    ids: list[str]
    keys: bytes
    times: bytes
    groups: list[tuple[str, str, list[tuple[str, str]]]]
    group: bytes
    predictions: list[str | int | float | bool]
    scores: bytes
    features: dict[str, FeatureWire]
    #: each row's source offset (int64) when the block joins several source messages;
    #: ``offset`` is then the largest. None: every row is at ``offset``.
    row_offsets: bytes | None = None
    #: each row's per-class probabilities (None where it sent none), for multiclass estimates;
    #: None when no row sent any (and in messages written before multiclass estimates)
    class_scores: list[dict[str, float] | None] | None = None
    #: per attributed feature, each row's attribution (float64 bytes, NaN where a row sent
    #: none); None when no row sent ``attributions`` (and in messages written before them)
    attributions: dict[str, bytes] | None = None
    #: the distinct ``registry`` values ([uri, name, alias, run_id], None for rows without
    #: one) and each row's index into them (uint32); None when no row sent one (and in
    #: messages written before event lineage)
    registries: list[list[str | None] | None] | None = None
    registry: bytes | None = None


class LabelColumns(msgspec.Struct, tag="L", gc=False):
    """Valid labels of one source message routed to one join partition, as columns;
    ``models`` are the distinct model ids and ``model`` indexes them per event (uint16)."""

    source: str
    offset: int
    watermark: int
    ids: list[str]
    times: bytes
    models: list[str]
    model: bytes
    labels: list[str | int | float | bool]
    #: as PredictionColumns.row_offsets
    row_offsets: bytes | None = None


class Tick(msgspec.Struct, tag="t"):
    """Event-time progress of a source, broadcast to the join partitions its data skipped.

    ``idle`` marks a source that has sent nothing for a while: it stops holding the watermark
    back until it sends data again (otherwise one quiet partition would stall every window)."""

    source: str
    watermark: int
    idle: bool = False


class EndOfInput(msgspec.Struct, tag="e"):
    """A source partition has ended: a bounded replay is complete there."""

    source: str


#: ``PredictionBatch`` and ``LabelBatch`` (events as structs) are what versions before the
#: columnar batches wrote; the join still reads them, so an upgrade can resume mid-log
JoinInput = PredictionColumns | LabelColumns | PredictionBatch | LabelBatch | Tick | EndOfInput


class Partial(msgspec.Struct, tag="w", gc=False):
    """One join partition's aggregate of one window slice; a later one replaces an earlier one."""

    join_partition: int
    model_id: str
    model_version: str
    segment: str
    window_start: int
    window_end: int
    phase: Literal["provisional", "final"]
    aggregate: dict[str, Any]
    #: the join-input offset that produced it: after a restore, a join partition re-emits
    #: older partials, and the merger must not let them replace newer ones
    seq: int = 0
    #: the whole-model slice's input offsets (``InputPositions.to_wire``, streams/positions.py)
    positions: dict[str, Any] | None = None


class Progress(msgspec.Struct, tag="g"):
    """A join partition's watermark and cumulative counters, broadcast to every merge partition.

    Counters are cumulative, so a replayed Progress replaces rather than adds."""

    join_partition: int
    watermark: int
    final_watermark: int
    end_of_input: bool
    counters: dict[str, int]
    #: as Partial.seq: re-emitted older progress must not replace newer counters
    seq: int = 0


class HealthFinding(msgspec.Struct, tag="h"):
    """A schema change ingest found in a model version's events, sent to the merge partition
    that owns the model: that partition's alert lifecycle (checkpointed) raises it once per
    change per model version, however many ingest partitions, workers or restarts report it.

    ``kind`` is a schema-change kind of ``HEALTH_EVENTS``; the position is the first
    offending event's (its input topic, partition and offset) in this ingest's share."""

    model_id: str
    model_version: str
    kind: str
    feature: str
    window_start: int
    topic: str
    partition: int
    offset: int
    prediction_id: str
    detail: dict[str, Any]


PartialsMessage = Partial | Progress | HealthFinding

_encoder = msgspec.msgpack.Encoder()
_join_decoder = msgspec.msgpack.Decoder(JoinInput)
_partials_decoder = msgspec.msgpack.Decoder(PartialsMessage)


def encode_internal(message: JoinInput | PartialsMessage) -> bytes:
    return _encoder.encode(message)


def decode_join_input(data: bytes) -> JoinInput:
    return _join_decoder.decode(data)


def decode_partials(data: bytes) -> PartialsMessage:
    return _partials_decoder.decode(data)
