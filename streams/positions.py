"""Where a window's input sits in Kafka: per input partition, the first and last offset.

A retraining request (version 2) names the exact input its training range covers, so a
trainer can re-read it from the topics instead of guessing from event times. The join is the
one place that knows which input record went into which window: each accepted prediction
goes into the window of its event time, each joined label into the window of its
prediction. This aggregate rides beside the window aggregates, kept per (model, version,
window start) for the whole-model slice only (a segment's events are a subset of those), and
merges by min and max, so it is independent of how records were split over join partitions.

The same aggregate carries the window's **registry lineage** from the events' optional
``registry`` field (``PredictionEvent.registry``): the value of the window's latest event (by
event time) that sent one; events at that same time that disagree are ordered by (uri, name,
alias, run_id), absent before present, and the greatest is kept. Latest-then-greatest is a
max, so it merges like the offsets, whatever the partitioning and the order of arrival.

Offsets are of the *input* topics (``predictions``, ``ground-truth``), as ingest saw them
(:func:`driftline.streams.ingest.source_name` spells a source ``topic:partition``). The range
of a partition is a cover: records of neighbouring windows may lie between its first and its
last offset (producers interleave event times), so a trainer filters what it re-reads by
event time, and counts against ``prediction_count``/``labelled_count``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from driftline.streams.columns import RegistryRef, group_bounds, groups

__all__ = ["InputPositions", "WindowPositions", "registry_order", "split_source"]

Kind = Literal["predictions", "labels"]
_KINDS: tuple[Kind, ...] = ("predictions", "labels")


def split_source(source: str) -> tuple[str, int]:
    """``("topic", partition)`` of a source name ``topic:partition`` (topics may hold colons).

    >>> split_source("driftline.predictions:3")
    ('driftline.predictions', 3)
    """
    topic, _, partition = source.rpartition(":")
    return topic, int(partition)


def registry_order(ref: RegistryRef) -> tuple[tuple[bool, str], ...]:
    """The order among registry values at one event time: field by field, absent first."""
    return tuple((v is not None, v or "") for v in ref)


def _rank_key(ref: RegistryRef | None) -> tuple[bool, tuple[tuple[bool, str], ...]]:
    return (False, ()) if ref is None else (True, registry_order(ref))


class InputPositions:
    """First and last input offset per source, for predictions and for labels, and the
    registry lineage of the latest event that sent one (``(event time, value)``)."""

    __slots__ = ("lineage", "ranges")

    def __init__(self) -> None:
        self.ranges: dict[Kind, dict[str, tuple[int, int]]] = {"predictions": {}, "labels": {}}
        self.lineage: tuple[int, RegistryRef] | None = None

    def add_lineage(self, time_ms: int, ref: RegistryRef) -> None:
        held = self.lineage
        if held is None or (time_ms, registry_order(ref)) > (held[0], registry_order(held[1])):
            self.lineage = (time_ms, ref)

    def add(self, kind: Kind, source: str, first: int, last: int) -> None:
        held = self.ranges[kind].get(source)
        if held is not None:
            first, last = min(first, held[0]), max(last, held[1])
        self.ranges[kind][source] = (first, last)

    def merge(self, other: InputPositions) -> None:
        for kind in _KINDS:
            for source, (first, last) in other.ranges[kind].items():
                self.add(kind, source, first, last)
        if other.lineage is not None:
            self.add_lineage(*other.lineage)

    def __bool__(self) -> bool:
        return self.lineage is not None or any(self.ranges[k] for k in _KINDS)

    def to_wire(self) -> dict[str, Any]:
        """msgpack/JSON-safe: ``{kind: {source: [first, last]}}``, sources sorted, and
        ``"lineage": [time, [uri, name, alias, run_id]]`` when an event sent one."""
        out: dict[str, Any] = {k: {s: list(r) for s, r in sorted(self.ranges[k].items())} for k in _KINDS}
        if self.lineage is not None:
            out["lineage"] = [self.lineage[0], list(self.lineage[1])]
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any] | None) -> InputPositions:
        out = cls()
        for kind in _KINDS:
            for source, (first, last) in (data or {}).get(kind, {}).items():
                out.add(kind, str(source), int(first), int(last))
        lineage = (data or {}).get("lineage")  # absent before event lineage
        if lineage is not None:
            time_ms, (uri, name, alias, run_id) = lineage
            out.lineage = (int(time_ms), (uri, name, alias, run_id))
        return out

    @classmethod
    def merged(cls, parts: Iterable[InputPositions]) -> InputPositions:
        out = cls()
        for part in parts:
            out.merge(part)
        return out


#: (model_id, model_version, window start)
WindowId = tuple[str, str, int]


class WindowPositions:
    """A join partition's :class:`InputPositions` per open window (model, version, start)."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[WindowId, InputPositions] = {}

    def add_rows(
        self,
        kind: Kind,
        window_of: Callable[[int], WindowId],
        wids: np.ndarray,
        source: str,
        offsets: np.ndarray,
    ) -> None:
        """Rows of one source: ``window_of(wids[i])`` is row i's window, ``offsets[i]`` its
        source offset. One min and one max per window, in numpy."""
        if not len(wids):
            return
        for wid, first, last in zip(*group_bounds(wids, offsets), strict=True):
            self._at(window_of(wid)).add(kind, source, first, last)

    def add_lineage(
        self,
        window_of: Callable[[int], WindowId],
        wids: np.ndarray,
        times: np.ndarray,
        index: np.ndarray,
        values: Sequence[RegistryRef | None],
    ) -> None:
        """Rows' registry values (``values[index[i]]``, None: row i sent none): per window,
        the latest row's (see the module doc). Vectorised; only blocks with lineage get here."""
        missing = [i for i, v in enumerate(values) if v is None]
        rows = np.flatnonzero(~np.isin(index, missing)) if missing else np.arange(len(index))
        if not rows.size:
            return
        order = sorted(range(len(values)), key=lambda i: _rank_key(values[i]))
        rank = np.empty(len(values), dtype=np.int64)
        rank[order] = np.arange(len(values))
        for wid, idx in groups(wids[rows]):
            at = rows[idx]
            t = times[at]
            latest = at[t == t.max()]
            best = values[int(index[latest[np.argmax(rank[index[latest]])]])]
            assert best is not None
            self._at(window_of(wid)).add_lineage(int(t.max()), best)

    def add(self, kind: Kind, window: WindowId, source: str, offset: int) -> None:
        self._at(window).add(kind, source, offset, offset)

    def _at(self, window: WindowId) -> InputPositions:
        held = self._open.get(window)
        if held is None:
            held = self._open[window] = InputPositions()
        return held

    def get(self, window: WindowId) -> InputPositions | None:
        return self._open.get(window)

    def pop(self, window: WindowId) -> InputPositions | None:
        return self._open.pop(window, None)

    def to_wire(self) -> list[list[Any]]:
        return [[m, v, s, p.to_wire()] for (m, v, s), p in self._open.items()]

    @classmethod
    def from_wire(cls, data: Iterable[Sequence[Any]] | None) -> WindowPositions:
        out = cls()
        for m, v, s, p in data or ():
            out._open[(str(m), str(v), int(s))] = InputPositions.from_wire(p)
        return out
