"""Columnar blocks of events: a decoded batch as arrays, built once at ingest.

Ingest decodes and validates each input message into event structs; everything after that
works on columns. A block is what the join needs of a batch (ids, stable keys, event times,
the (model, version, segments) groups, predictions, scores, feature columns), and it travels
on ``join-input`` as the compact :class:`~driftline.streams.messages.PredictionColumns`. So the
join decodes a few lists and byte buffers instead of an object per event, the ids are hashed
once, and the sketches receive arrays without a per-event pass.

Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from driftline.detectors.aggregates import FeatureColumns, feature_columns
from driftline.detectors.buffers import from_buffer, to_buffer
from driftline.detectors.hashing import stable_keys
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.messages import LabelColumns, PredictionColumns

__all__ = [
    "Group", "LabelBlock", "PredictionBlock", "RegistryRef", "group_bounds", "groups", "pick",
    "row_offsets", "runs", "split_rows",
]

#: (model id, model version, segments as sorted (dimension, value) pairs)
Group = tuple[str, str, tuple[tuple[str, str], ...]]
#: an event's ``registry`` as (uri, name, alias, run_id), None where it gave none
RegistryRef = tuple[str | None, str | None, str | None, str | None]


def pick(values: Sequence[Any], idx: np.ndarray) -> list[Any]:
    """``[values[i] for i in idx]``, in C."""
    if idx.size == 0:
        return []
    if idx.size == 1:
        return [values[int(idx[0])]]
    return list(itemgetter(*idx.tolist())(values))


def runs(ids: np.ndarray) -> tuple[np.ndarray | None, list[int], list[int]]:
    """The distinct ids of ``ids`` in ascending order as runs of the stably sorted positions:
    ``(order, values, bounds)``, where run i is ``order[bounds[i]:bounds[i + 1]]`` and holds
    the positions of ``values[i]``; ``order`` is None when there is one id (no sort).

    Called per block for every window key and model in it, so with a hundred models a block
    has hundreds of runs: callers slice lists sorted once by ``order`` instead of converting a
    position array per run (``np.split`` and a pick per group cost a few microseconds each)."""
    n = ids.size
    if n == 0:
        return None, [], [0]
    first = ids[0]
    if n == 1 or bool((ids == first).all()):
        return None, [int(first)], [0, n]
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    cuts = (np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist()
    return order, ordered[[0, *cuts]].tolist(), [0, *cuts, n]


def groups(ids: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """The positions of each distinct id (in ascending id order, positions ascending within
    each), without a per-element loop (see :func:`runs`)."""
    order, values, bounds = runs(ids)
    if order is None:
        if values:
            yield values[0], np.arange(ids.size)
        return
    for value, a, b in zip(values, bounds[:-1], bounds[1:], strict=True):
        yield value, order[a:b]


def split_rows(values: Sequence[Any], parts: Sequence[tuple[Any, np.ndarray | None]]) -> list[list[Any]]:
    """``values`` of each part's rows (parts as ``by_model`` gives them: None is every row),
    with one pick for all parts: a block of a hundred models was two hundred picks."""
    if len(parts) == 1 and parts[0][1] is None:
        return [values if isinstance(values, list) else list(values)]
    flat = pick(values, np.concatenate([idx for _, idx in parts]))
    out, a = [], 0
    for _, idx in parts:
        b = a + idx.size  # type: ignore[union-attr]  # not None with several parts
        out.append(flat[a:b])
        a = b
    return out


def group_bounds(ids: np.ndarray, values: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """Per distinct id (ascending): the id, and the least and greatest of its ``values``, in
    three numpy passes whatever the number of ids (``groups`` then a min and a max per group
    cost a few microseconds a group)."""
    order = np.argsort(ids, kind="stable")
    ordered, v = ids[order], values[order]
    change = np.empty(ordered.size, dtype=bool)
    change[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    return (ordered[starts].tolist(), np.minimum.reduceat(v, starts).tolist(),
            np.maximum.reduceat(v, starts).tolist())


def _index(values: list[Any]) -> tuple[list[Any], np.ndarray]:
    """Dictionary-encode: the distinct values in first-seen order, and each value's position."""
    first = dict.fromkeys(values)
    if len(first) == 1:
        return list(first), np.zeros(len(values), dtype=np.uint32)
    for i, value in enumerate(first):
        first[value] = i
    return list(first), np.array(list(map(first.__getitem__, values)), dtype=np.uint32)


def _vectors(
    events: Sequence[PredictionEvent],
    dicts: list[dict[str, float] | None],
    keeps: Callable[[str], bool] | None,
) -> list[dict[str, float] | None] | None:
    """The ``scores`` vectors a block carries: all, or only those of models ``keeps`` names
    (None when that leaves none)."""
    if keeps is None:
        return dicts
    kept = {m: keeps(m) for m in {e.model_id for e in events}}
    if all(kept.values()):
        return dicts
    if not any(kept.values()):
        return None
    return [d if kept[e.model_id] else None for e, d in zip(events, dicts, strict=True)]


def _attribution_columns(events: Sequence[PredictionEvent]) -> dict[str, np.ndarray] | None:
    """Per attributed feature, each event's attribution (NaN where it sent none); None when
    no event sent ``attributions``, which is all a block without them pays."""
    dicts = [e.attributions for e in events]
    if dicts.count(None) == len(dicts):
        return None
    names = sorted(set().union(*(d for d in dicts if d)))
    return {
        name: np.array([d.get(name) if d else None for d in dicts], dtype=np.float64)  # None -> NaN
        for name in names
    }


_NO_REGISTRY: RegistryRef = (None, None, None, None)


def _registries(events: Sequence[PredictionEvent]) -> tuple[list[RegistryRef | None], np.ndarray] | None:
    """The events' ``registry`` fields dictionary-encoded (distinct values, None among them
    when some events gave none, and each event's index), or None when no event gave one: the
    common case costs one attribute read per event."""
    regs = [e.registry for e in events]
    if regs.count(None) == len(regs):
        return None
    refs = [None if r is None else (r.uri, r.name, r.alias, r.run_id) for r in regs]
    distinct, index = _index(refs)
    # an empty ``registry: {}`` says nothing: the same as none (a rare value, fixed once here)
    known: list[RegistryRef | None] = [None if v == _NO_REGISTRY else v for v in distinct]
    return (known, index) if any(v is not None for v in known) else None


def row_offsets(message: PredictionColumns | LabelColumns) -> np.ndarray | None:
    """The source offset of each row of a block, or None when all are at ``message.offset``."""
    return None if message.row_offsets is None else from_buffer(message.row_offsets, "<i8", np.int64)


@dataclass(slots=True)
class PredictionBlock:
    """Predictions of one batch (or of one join partition's share of it), as columns."""

    ids: list[str]
    keys: np.ndarray  # uint64: stable_keys(ids)
    times: np.ndarray  # int64 event time, ms
    groups: list[Group]
    group: np.ndarray  # uint32 index into groups, per event
    predictions: list[Any]
    scores: np.ndarray  # float64 positive-class probability, NaN when absent
    features: FeatureColumns
    #: each event's per-class probabilities (``PredictionEvent.scores``, None where it sent
    #: none), carried for multiclass estimates; None when no event of the block sent any
    class_scores: list[dict[str, float] | None] | None = None
    #: per attributed feature, each event's ``attributions`` entry (float64, NaN where none);
    #: None when no event of the block sent any
    attributions: dict[str, np.ndarray] | None = None
    #: the distinct ``registry`` values of the block's events (None among them for events
    #: without one) and each event's index into them (uint32); both None when no event sent one
    registries: list[RegistryRef | None] | None = None
    registry: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_events(
        cls,
        events: Sequence[PredictionEvent],
        positive_label: Callable[[str], str],
        keys: np.ndarray | None = None,
        unscored: dict[str, list[str]] | None = None,
        keeps_vectors: Callable[[str], bool] | None = None,
    ) -> PredictionBlock:
        """``positive_label(model_id)`` names the class whose entry in ``scores`` is the
        score when an event has no ``score`` of its own. ``unscored``, when given, collects
        the models whose events had ``scores`` without that class (with the classes they
        named), which ingest warns about: such events have no score. ``keeps_vectors(model_id)``,
        when given, says whose ``scores`` vectors the block carries on (multiclass models'):
        the others' would only cost bytes on join-input."""
        ids = [e.prediction_id for e in events]
        raw = [
            (e.model_id, e.model_version, tuple(e.segments.items()) if e.segments else ())
            for e in events
        ]
        distinct, index = _index(raw)
        groups: list[Group] = [(m, v, tuple(sorted(s))) for m, v, s in distinct]
        if len(set(groups)) < len(groups):  # the same segments, listed in another order
            canonical, remap = _index(groups)
            groups, index = canonical, remap[index]
        scores = np.array([e.score for e in events], dtype=np.float64)  # None -> NaN
        dicts = [e.scores for e in events]
        has_dicts = dicts.count(None) != len(dicts)
        if has_dicts:
            for i in np.flatnonzero(np.isnan(scores)).tolist():
                d = dicts[i]
                if d:
                    p = d.get(positive_label(events[i].model_id))
                    if p is not None:
                        scores[i] = p
                    elif unscored is not None:
                        unscored.setdefault(events[i].model_id, sorted(d))
        registries = _registries(events)
        return cls(
            ids=ids,
            keys=stable_keys(ids) if keys is None else keys,
            times=np.array([e.timestamp for e in events], dtype=np.int64),
            groups=groups,
            group=index,
            predictions=[e.prediction for e in events],
            scores=scores,
            features=feature_columns([e.features for e in events]),
            class_scores=_vectors(events, dicts, keeps_vectors) if has_dicts else None,
            attributions=_attribution_columns(events),
            registries=None if registries is None else registries[0],
            registry=None if registries is None else registries[1],
        )

    def by_model(self) -> list[tuple[str, np.ndarray | None]]:
        """Each model's rows (None: every row), models in the order their first group comes.

        The join is keyed by ``(model_id, prediction_id)``: two models scoring one request
        share its id. So the join runs its set and dict passes over the ids of one model at
        a time, and a block of one model (the producer helper's batches) is a single pass."""
        models, of_group = _index([model for model, _, _ in self.groups])
        if len(models) == 1:
            return [(models[0], None)]
        return [(models[m], rows) for m, rows in groups(of_group[self.group].astype(np.int64))]

    def take(self, idx: np.ndarray) -> PredictionBlock:
        return PredictionBlock(
            pick(self.ids, idx),
            self.keys[idx],
            self.times[idx],
            self.groups,
            self.group[idx],
            pick(self.predictions, idx),
            self.scores[idx],
            self.features.take(idx),
            None if self.class_scores is None else pick(self.class_scores, idx),
            None if self.attributions is None else {k: v[idx] for k, v in self.attributions.items()},
            self.registries,
            None if self.registry is None else self.registry[idx],
        )

    def to_wire(
        self, source: str, offset: int, watermark: int, row_offsets: np.ndarray | None = None
    ) -> PredictionColumns:
        return PredictionColumns(
            source=source,
            offset=offset,
            watermark=watermark,
            row_offsets=None if row_offsets is None else to_buffer(row_offsets, "<i8"),
            ids=self.ids,
            keys=to_buffer(self.keys, "<u8"),
            times=to_buffer(self.times, "<i8"),
            groups=[(m, v, list(s)) for m, v, s in self.groups],
            group=to_buffer(self.group, "<u4"),
            predictions=self.predictions,
            scores=to_buffer(self.scores, "<f8"),
            features=self.features.to_wire(),
            class_scores=self.class_scores,
            attributions=None
            if self.attributions is None
            else {k: to_buffer(v, "<f8") for k, v in self.attributions.items()},
            registries=None
            if self.registries is None
            else [None if r is None else list(r) for r in self.registries],
            registry=None if self.registry is None else to_buffer(self.registry, "<u4"),
        )

    @classmethod
    def from_wire(cls, m: PredictionColumns) -> PredictionBlock:
        n = len(m.ids)
        return cls(
            ids=m.ids,
            keys=from_buffer(m.keys, "<u8", np.uint64),
            times=from_buffer(m.times, "<i8", np.int64),
            groups=[(model, version, tuple((d, v) for d, v in segs)) for model, version, segs in m.groups],
            group=from_buffer(m.group, "<u4", np.uint32),
            predictions=m.predictions,
            scores=from_buffer(m.scores, "<f8", np.float64),
            features=FeatureColumns.from_wire(m.features, n),
            class_scores=m.class_scores,
            attributions=None
            if m.attributions is None
            else {k: from_buffer(v, "<f8", np.float64) for k, v in m.attributions.items()},
            registries=None
            if m.registries is None or m.registry is None
            else [None if r is None else (r[0], r[1], r[2], r[3]) for r in m.registries],
            registry=None if m.registry is None else from_buffer(m.registry, "<u4", np.uint32),
        )


@dataclass(slots=True)
class LabelBlock:
    """Labels of one batch (or of one join partition's share of it), as columns."""

    ids: list[str]
    times: np.ndarray  # int64, ms
    models: list[str]
    model: np.ndarray  # uint32 index into models, per event
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_events(cls, events: Sequence[GroundTruthEvent]) -> LabelBlock:
        models, index = _index([e.model_id for e in events])
        return cls(
            ids=[e.prediction_id for e in events],
            times=np.array([e.timestamp for e in events], dtype=np.int64),
            models=models,
            model=index,
            labels=[e.label for e in events],
        )

    def by_model(self) -> list[tuple[str, np.ndarray | None]]:
        """Each model's rows (None: every row), as :meth:`PredictionBlock.by_model`: a label
        joins the prediction of *its* model (``GroundTruthEvent.model_id``)."""
        if len(self.models) == 1:
            return [(self.models[0], None)]
        return [(self.models[m], rows) for m, rows in groups(self.model.astype(np.int64))]

    def take(self, idx: np.ndarray) -> LabelBlock:
        return LabelBlock(
            pick(self.ids, idx), self.times[idx], self.models, self.model[idx], pick(self.labels, idx)
        )

    def to_wire(
        self, source: str, offset: int, watermark: int, row_offsets: np.ndarray | None = None
    ) -> LabelColumns:
        return LabelColumns(
            source=source,
            offset=offset,
            watermark=watermark,
            row_offsets=None if row_offsets is None else to_buffer(row_offsets, "<i8"),
            ids=self.ids,
            times=to_buffer(self.times, "<i8"),
            models=self.models,
            model=to_buffer(self.model, "<u4"),
            labels=self.labels,
        )

    @classmethod
    def from_wire(cls, m: LabelColumns) -> LabelBlock:
        return cls(
            ids=m.ids,
            times=from_buffer(m.times, "<i8", np.int64),
            models=m.models,
            model=from_buffer(m.model, "<u4", np.uint32),
            labels=m.labels,
        )
