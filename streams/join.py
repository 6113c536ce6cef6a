"""One join partition: predictions meet their labels, and windows fill and close.

The state here is a deterministic function of one ``join-input`` partition's log: the same
messages in the same order give the same partials, byte for byte. That is what makes a
restart from a checkpoint plus a replay of the log since then harmless, and why no Kafka or
clock appears in this module.

The join is keyed by ``prediction_id``:
- a prediction opens an entry in the window of its *own* event time; a label that arrives
  first waits (up to the model's label horizon) for its prediction;
- an exact duplicate of either side is counted and ignored, so re-delivery is idempotent;
- a prediction whose window has passed its grace when it arrives is late: counted, not used;
- a prediction still unlabelled when its window's label horizon passes expires: counted as
  unlabelled (it already counts toward the window's prediction count, not its labelled count).

Each window slice (model, version, segment) emits a *provisional* partial when event time
passes ``end + grace`` (label-free results are complete then) and a *final* one at
``end + label_horizon``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np

from driftline.catalog import ModelCatalog
from driftline.detectors.aggregates import WindowAggregate, feature_columns
from driftline.detectors.categories import category_strings
from driftline.detectors.hashing import stable_keys
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.messages import Partial, Progress

__all__ = ["COUNTERS", "MAX_WATERMARK", "MIN_WATERMARK", "JoinPartition", "segment_slices"]

MIN_WATERMARK = -(2**62)
MAX_WATERMARK = 2**62
OVERFLOW_SEGMENT = "__other__"

#: what a join partition counts; cumulative, reported in Progress and the replay report
COUNTERS = (
    "predictions",
    "labels",
    "joined",
    "early_labels",
    "late_predictions",
    "duplicate_predictions",
    "duplicate_labels",
    "expired_unlabelled",
    "unmatched_labels",
)

# entry fields (lists, not objects: one per in-flight prediction, so keep them small)
_WKEY, _PRED, _SCORE, _KEY, _LABELLED, _TIME = range(6)


def segment_slices(segments: Mapping[str, str] | None) -> list[str]:
    """The slices an event counts in: the whole model (``""``) and one per segment dimension.

    One slice per dimension (not per combination) keeps the number of series linear in the
    number of dimensions."""
    slices = [""]
    if segments:
        slices.extend(f"{k}={v}" for k, v in sorted(segments.items()))
    return slices


@dataclass(slots=True)
class _WindowKey:
    model_id: str
    model_version: str
    slices: list[str]
    start: int
    end: int
    final_at: int
    ident: tuple
    pids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _SliceState:
    aggregate: WindowAggregate
    close_at: int
    final_at: int
    provisional_sent: bool = False


class JoinPartition:
    """The join and window state of one ``join-input`` partition."""

    def __init__(
        self,
        partition: int,
        catalog: ModelCatalog,
        *,
        prediction_sources: Iterable[str],
        label_sources: Iterable[str],
    ) -> None:
        self.partition = partition
        self.catalog = catalog
        self.prediction_sources = frozenset(prediction_sources)
        self.label_sources = frozenset(label_sources)
        self.all_sources = self.prediction_sources | self.label_sources
        #: prediction event time: closes the label-free (provisional) phase of windows
        self.watermark = MIN_WATERMARK
        #: min(prediction, label) event time: finalises windows, so a lagging label stream
        #: holds windows open instead of losing its labels
        self.final_watermark = MIN_WATERMARK
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._source_wm: dict[str, int] = {}
        self._idle: set[str] = set()
        self._ended: set[str] = set()
        self._entries: dict[str, list] = {}
        self._early: dict[str, tuple[object, int]] = {}
        self._early_expiry: list[tuple[int, str]] = []
        self._wkeys: dict[int, _WindowKey] = {}
        self._next_wid = 0
        self._wkey_index: dict[tuple, int] = {}
        self._slices: dict[tuple[str, str, str, int], _SliceState] = {}
        self._segment_values: dict[tuple[str, str], set[str]] = {}
        #: highest source offset applied per source: a batch the ingest stage sends again
        #: after a restart is recognised and skipped, so counters stay exact too
        self._applied: dict[str, int] = {}
        #: the next join-input offset this state has not yet applied (for checkpoints); while a
        #: message is processed it is that message's offset, and outputs carry it as ``seq``
        self.next_offset = 0

    def accept(self, source: str, offset: int) -> bool:
        """False for a batch of ``source`` at or below an offset already applied (a re-send)."""
        if offset <= self._applied.get(source, -1):
            return False
        self._applied[source] = offset
        return True

    # -- checkpoints -------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Everything this partition knows, as msgpack: restoring it and processing the log
        from ``next_offset`` on gives exactly what an uninterrupted run gives."""
        return _encoder.encode(
            {
                "v": 1,
                "next_offset": self.next_offset,
                "watermark": self.watermark,
                "final_watermark": self.final_watermark,
                "counters": self.counters,
                "source_wm": self._source_wm,
                "idle": sorted(self._idle),
                "ended": sorted(self._ended),
                "applied": self._applied,
                "entries": self._entries,
                "early": {pid: list(v) for pid, v in self._early.items()},
                "early_expiry": [list(x) for x in self._early_expiry],
                "next_wid": self._next_wid,
                "wkeys": [
                    [
                        wid,
                        k.model_id,
                        k.model_version,
                        k.slices,
                        k.start,
                        k.end,
                        k.final_at,
                        _ident_out(k.ident),
                        k.pids,
                    ]
                    for wid, k in self._wkeys.items()
                ],
                "slices": [
                    [list(skey), st.aggregate.to_dict(), st.close_at, st.final_at, st.provisional_sent]
                    for skey, st in self._slices.items()
                ],
                "segment_values": [[m, d, sorted(v)] for (m, d), v in self._segment_values.items()],
            }
        )

    def restore(self, data: bytes) -> None:
        """Replace this partition's state with a snapshot's."""
        d = _decoder.decode(data)
        if d.get("v") != 1:
            raise ValueError(f"unknown join checkpoint version {d.get('v')!r}")
        self.next_offset = d["next_offset"]
        self.watermark, self.final_watermark = d["watermark"], d["final_watermark"]
        self.counters = {**dict.fromkeys(COUNTERS, 0), **d["counters"]}
        self._source_wm = dict(d["source_wm"])
        self._idle, self._ended = set(d["idle"]), set(d["ended"])
        self._applied = dict(d["applied"])
        self._entries = {pid: list(e) for pid, e in d["entries"].items()}
        self._early = {pid: (v[0], v[1]) for pid, v in d["early"].items()}
        self._early_expiry = [(x[0], x[1]) for x in d["early_expiry"]]
        heapq.heapify(self._early_expiry)
        self._next_wid = d["next_wid"]
        self._wkeys, self._wkey_index = {}, {}
        for wid, model_id, version, slices, start, end, final_at, ident, pids in d["wkeys"]:
            key = _WindowKey(
                model_id, version, list(slices), start, end, final_at, _ident_in(ident), list(pids)
            )
            self._wkeys[wid] = key
            self._wkey_index[key.ident] = wid
        self._slices = {}
        for skey, agg, close_at, final_at, provisional_sent in d["slices"]:
            spec = self.catalog.spec(skey[0])
            aggregate = WindowAggregate.from_dict(agg, spec)
            self._slices[tuple(skey)] = _SliceState(aggregate, close_at, final_at, provisional_sent)  # type: ignore[index]
        self._segment_values = {(m, dim): set(v) for m, dim, v in d["segment_values"]}

    # -- event time -------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self._ended >= self.all_sources

    def source_progress(self, source: str, watermark: int, *, idle: bool = False) -> list[Partial]:
        """Record a source's event-time progress and close whatever windows that allows."""
        if watermark > self._source_wm.get(source, MIN_WATERMARK):
            self._source_wm[source] = watermark
        if idle:
            self._idle.add(source)
        else:
            self._idle.discard(source)
        return self._advance()

    def end_source(self, source: str) -> list[Partial]:
        self._ended.add(source)
        return self._advance()

    def _source_watermark(self, sources: frozenset[str]) -> int | None:
        """Min event time over live sources; None when none is live (all idle or ended)."""
        live = [s for s in sources if s not in self._ended and s not in self._idle]
        if live:
            return min(self._source_wm.get(s, MIN_WATERMARK) for s in live)
        if sources <= self._ended:
            return MAX_WATERMARK
        return None

    def _watermarks(self) -> tuple[int, int]:
        if self.ended:
            return MAX_WATERMARK, MAX_WATERMARK
        pred = self._source_watermark(self.prediction_sources)
        if pred is None:  # every prediction source idle: hold at the furthest seen
            seen = [self._source_wm.get(s, MIN_WATERMARK) for s in self.prediction_sources]
            pred = max([self.watermark, *seen])
        label = self._source_watermark(self.label_sources)
        final = pred if label is None else min(pred, label)
        return pred, final

    # -- predictions ---------------------------------------------------------------------
    def add_predictions(self, events: Sequence[PredictionEvent]) -> None:
        """Open entries for new predictions and fold them into their windows' aggregates."""
        catalog = self.catalog
        accepted: list[PredictionEvent] = []
        wkey_of: list[int] = []
        outcomes: list[tuple[int, object, object, float, int, int]] = []
        in_batch: set[str] = set()
        for ev in events:
            pid = ev.prediction_id
            if pid in self._entries or pid in in_batch:
                self.counters["duplicate_predictions"] += 1
                continue
            cfg = catalog.model(ev.model_id)
            start = ev.timestamp - ev.timestamp % cfg.window_ms
            end = start + cfg.window_ms
            if end + cfg.grace_ms <= self.watermark:
                self.counters["late_predictions"] += 1
                continue
            wid = self._wkey(ev, start, end, end + cfg.label_horizon_ms)
            in_batch.add(pid)
            accepted.append(ev)
            wkey_of.append(wid)
        if not accepted:
            return
        self.counters["predictions"] += len(accepted)
        keys = stable_keys([ev.prediction_id for ev in accepted])
        scores = np.array([self._score(ev) for ev in accepted], dtype=np.float64)
        for ev, wid, key, score in zip(accepted, wkey_of, keys.tolist(), scores.tolist(), strict=True):
            pid = ev.prediction_id
            entry = [wid, ev.prediction, score, key, False, ev.timestamp]
            self._entries[pid] = entry
            wkey = self._wkeys[wid]
            wkey.pids.append(pid)
            early = self._early.pop(pid, None)
            if early is not None:
                entry[_LABELLED] = True
                outcomes.append((wid, ev.prediction, early[0], score, key, ev.timestamp))
        columns = feature_columns([ev.features for ev in accepted])
        wkey_arr = np.array(wkey_of, dtype=np.int64)
        for wid, idx in _groups(wkey_arr):
            wkey = self._wkeys[wid]
            group_preds = [accepted[i].prediction for i in idx.tolist()]
            preds = self._prediction_array(wkey.model_id, group_preds)
            for state in self._slice_states(wkey):
                state.aggregate.add_predictions(columns, idx, keys[idx], preds, scores[idx])
        self._add_outcomes(outcomes)

    def _score(self, ev: PredictionEvent) -> float:
        if ev.score is not None:
            return float(ev.score)
        if ev.scores:
            p = ev.scores.get(self.catalog.model(ev.model_id).positive_label)
            if p is not None:
                return float(p)
        return math.nan

    def _prediction_array(self, model_id: str, values: list[object]) -> np.ndarray:
        if self.catalog.model(model_id).task == "regression":
            return np.array([_as_float(v) for v in values], dtype=np.float64)
        return category_strings(values)

    def _wkey(self, ev: PredictionEvent, start: int, end: int, final_at: int) -> int:
        segments = tuple(sorted(ev.segments.items())) if ev.segments else ()
        ident = (ev.model_id, ev.model_version, segments, start)
        wid = self._wkey_index.get(ident)
        if wid is None:
            slices = segment_slices(self._capped_segments(ev.model_id, segments))
            wid = self._next_wid
            self._next_wid += 1
            self._wkeys[wid] = _WindowKey(ev.model_id, ev.model_version, slices, start, end, final_at, ident)
            self._wkey_index[ident] = wid
        return wid

    def _capped_segments(self, model_id: str, segments: tuple[tuple[str, str], ...]) -> dict[str, str]:
        """Bound the values per segment dimension, so a bad producer cannot explode series."""
        cap = self.catalog.config.max_segment_values
        out: dict[str, str] = {}
        for dim, value in segments:
            seen = self._segment_values.setdefault((model_id, dim), set())
            if value not in seen and len(seen) >= cap:
                value = OVERFLOW_SEGMENT
            else:
                seen.add(value)
            out[dim] = value
        return out

    def _slice_states(self, wkey: _WindowKey) -> list[_SliceState]:
        states = []
        cfg = self.catalog.model(wkey.model_id)
        for segment in wkey.slices:
            skey = (wkey.model_id, wkey.model_version, segment, wkey.start)
            state = self._slices.get(skey)
            if state is None:
                state = _SliceState(
                    WindowAggregate(self.catalog.spec(wkey.model_id)),
                    close_at=wkey.end + cfg.grace_ms,
                    final_at=wkey.final_at,
                )
                self._slices[skey] = state
            states.append(state)
        return states

    # -- labels --------------------------------------------------------------------------
    def add_labels(self, events: Sequence[GroundTruthEvent]) -> None:
        """Join labels to waiting predictions; labels that come first wait for theirs."""
        outcomes: list[tuple[int, object, object, float, int, int]] = []
        for ev in events:
            pid = ev.prediction_id
            entry = self._entries.get(pid)
            if entry is None:
                if pid in self._early:
                    self.counters["duplicate_labels"] += 1
                    continue
                horizon = self.catalog.model(ev.model_id).label_horizon_ms
                self._early[pid] = (ev.label, ev.timestamp)
                heapq.heappush(self._early_expiry, (ev.timestamp + horizon, pid))
                self.counters["early_labels"] += 1
                continue
            if entry[_LABELLED]:
                self.counters["duplicate_labels"] += 1
                continue
            entry[_LABELLED] = True
            outcomes.append((entry[_WKEY], entry[_PRED], ev.label, entry[_SCORE], entry[_KEY], entry[_TIME]))
        self.counters["labels"] += len(events)
        self._add_outcomes(outcomes)

    def _add_outcomes(self, outcomes: list[tuple[int, object, object, float, int, int]]) -> None:
        if not outcomes:
            return
        self.counters["joined"] += len(outcomes)
        wids = np.array([o[0] for o in outcomes], dtype=np.int64)
        for wid, idx in _groups(wids):
            wkey = self._wkeys[wid]
            rows = [outcomes[i] for i in idx.tolist()]
            preds = self._prediction_array(wkey.model_id, [r[1] for r in rows])
            labels = self._prediction_array(wkey.model_id, [r[2] for r in rows])
            scores = np.array([r[3] for r in rows], dtype=np.float64)
            keys = np.array([r[4] for r in rows], dtype=np.uint64)
            times = np.array([r[5] for r in rows], dtype=np.float64)  # exact below 2**53 ms
            for state in self._slice_states(wkey):
                state.aggregate.add_outcomes(preds, labels, scores, keys, times)

    # -- closing windows -----------------------------------------------------------------
    def _advance(self) -> list[Partial]:
        pred_wm, final_wm = self._watermarks()
        if pred_wm <= self.watermark and final_wm <= self.final_watermark:
            return []
        wm = self.watermark = max(self.watermark, pred_wm)
        fwm = self.final_watermark = max(self.final_watermark, final_wm)
        out: list[Partial] = []
        for skey in sorted(self._slices, key=lambda k: (k[3], k)):
            state = self._slices[skey]
            if state.final_at <= fwm:
                out.append(self._partial(skey, state, "final"))
                del self._slices[skey]
            elif state.close_at <= wm and not state.provisional_sent:
                out.append(self._partial(skey, state, "provisional"))
                state.provisional_sent = True
        for wid in [w for w, wkey in self._wkeys.items() if wkey.final_at <= fwm]:
            wkey = self._wkeys.pop(wid)
            del self._wkey_index[wkey.ident]
            for pid in wkey.pids:
                entry = self._entries.pop(pid, None)
                if entry is not None and not entry[_LABELLED]:
                    self.counters["expired_unlabelled"] += 1
        while self._early_expiry and self._early_expiry[0][0] <= wm:
            _, pid = heapq.heappop(self._early_expiry)
            if self._early.pop(pid, None) is not None:
                self.counters["unmatched_labels"] += 1
        return out

    def _partial(self, skey: tuple[str, str, str, int], state: _SliceState, phase: str) -> Partial:
        model_id, version, segment, start = skey
        window_ms = self.catalog.model(model_id).window_ms
        return Partial(
            join_partition=self.partition,
            model_id=model_id,
            model_version=version,
            segment=segment,
            window_start=start,
            window_end=start + window_ms,
            phase=phase,  # type: ignore[arg-type]
            aggregate=state.aggregate.to_dict(),
            seq=self.next_offset,
        )

    def progress(self) -> Progress:
        return Progress(
            join_partition=self.partition,
            watermark=self.watermark,
            final_watermark=self.final_watermark,
            end_of_input=self.ended,
            counters=dict(sorted(self.counters.items())),
            seq=self.next_offset,
        )

    @property
    def pending(self) -> int:
        """Predictions waiting for labels plus labels waiting for predictions."""
        return len(self._entries) + len(self._early)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def _ident_out(ident: tuple) -> list:
    model_id, version, segments, start = ident
    return [model_id, version, [list(kv) for kv in segments], start]


def _ident_in(raw: list) -> tuple:
    model_id, version, segments, start = raw
    return (model_id, version, tuple((k, v) for k, v in segments), start)


def _groups(ids: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
    """Positions of each distinct id, in first-seen order, without a per-element loop."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bounds = np.flatnonzero(np.diff(sorted_ids)) + 1
    for chunk in np.split(order, bounds):
        yield int(ids[chunk[0]]), chunk


def _as_float(v: object) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return math.nan
