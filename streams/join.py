"""One join partition: predictions meet their labels, and windows fill and close.

The state here is a deterministic function of one ``join-input`` partition's log: the same
messages in the same order give the same partials, byte for byte. That is what makes a
restart from a checkpoint plus a replay of the log since then harmless, and why no Kafka or
clock appears in this module. The final partials and counters (but ``early_labels``) go
further: they depend only on each source's messages in that source's order, not on how the
sources interleave, because lateness is judged on each event's own source (see
docs/architecture.md, "Lateness by a source's own event time").

The join is keyed by ``(model_id, prediction_id)``: two models that score the same request
share its ``prediction_id``, and each has its own prediction and its own label
(``GroundTruthEvent.model_id``). Ingest still partitions by ``prediction_id`` alone, so both
models' events of one id meet in one partition anyway.
- a prediction opens an entry in the window of its *own* event time; a label that arrives
  first waits (a label horizon, at least until its own window's grace) for its prediction;
- an exact duplicate of either side (the same model and id again) is counted and ignored, so
  re-delivery is idempotent;
- a prediction whose window has passed its grace on its source when it arrives is late:
  counted, not used; a label whose prediction's window has passed its label horizon on the
  label's source is counted unmatched, not used;
- a prediction still unlabelled when its window's label horizon passes expires: counted as
  unlabelled (it already counts toward the window's prediction count, not its labelled count).

Each window slice (model, version, segment) emits a *provisional* partial when event time
passes ``end + grace`` (label-free results are complete then) and a *final* one at
``end + label_horizon``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec
import numpy as np

from driftline.detectors.aggregates import (
    FeatureColumns,
    WindowAggregate,
    fold_attributions,
    fold_label_lags,
    fold_outcomes,
    fold_predictions,
)
from driftline.detectors.categories import category_strings
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.schemas.windows import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    OVERFLOW_SEGMENT,
    Phase,
    closing_epoch,
    due_phase_at,
    early_label_expiry,
    final_at,
    provisional_at,
    segment_slices,
    window_shapes,
    window_start,
)
from driftline.streams.catalog import ModelCatalog
from driftline.streams.columns import (
    LabelBlock,
    PredictionBlock,
    groups,
    pick,
    row_offsets,
    runs,
    split_rows,
)
from driftline.streams.deltas import apply_join_delta
from driftline.streams.messages import (
    EndOfInput,
    JoinInput,
    LabelBatch,
    LabelColumns,
    Partial,
    PredictionBatch,
    PredictionColumns,
    Progress,
    Tick,
)
from driftline.streams.positions import WindowId, WindowPositions

__all__ = ["COUNTERS", "JoinPartition"]

#: joined events held back before they are folded into the aggregates (see JoinPartition.flush)
FLUSH_EVENTS = 16_384
#: ... and at least this many per open slice: a flush costs per slice it touches (a few dozen
#: numpy calls per sketch), so with a hundred models' slices on a partition 16k events gave
#: each slice ~40 rows per fold and the per-slice steps outweighed the per-row work
#: (benchmarks/RESULTS.md, "Flush size"); at most ``FLUSH_EVENTS_MAX`` held back, which bounds
#: the memory the held rows take (their feature values and ids: ~30 MB at 20 features)
FLUSH_PER_SLICE = 128
FLUSH_EVENTS_MAX = 131_072

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
    "ahead_of_stream",
)



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
        #: in-flight predictions: model -> pid -> (window id, prediction, score, stable key,
        #: time). Per model, so the id sets of one block stay plain strings for C-level set
        #: passes. Tuples of scalars, which the garbage collector stops tracking: with a day of
        #: label horizon there are millions, and lists would make every full collection walk them
        self._entries: dict[str, dict[str, _Entry]] = {}
        #: the in-flight predictions that already have their label, per model
        self._labelled: dict[str, set[str]] = {}
        #: labels that came before their prediction: model -> pid -> (label, time); under
        #: ``_ANY_MODEL``, those restored from a checkpoint that did not record their model
        self._early: dict[str, dict[str, _Early]] = {}
        #: (expiry time, model, pid) of the early labels
        self._early_expiry: list[tuple[int, str, str]] = []
        self._wkeys: dict[int, _WindowKey] = {}
        self._next_wid = 0
        self._wkey_index: dict[tuple, int] = {}
        self._slices: dict[tuple[str, str, str, int], _SliceState] = {}
        #: the open slices and window keys by when they close, so that a message touches only
        #: what it closes instead of scanning every open slice: (provisional time, slice key)
        #: until the provisional partial is sent, (final time, slice key), (final time, window id)
        self._provisional_due: list[tuple[int, _SliceKey]] = []
        self._final_due: list[tuple[int, _SliceKey]] = []
        self._wkey_due: list[tuple[int, int]] = []
        self._segment_values: dict[tuple[str, str], set[str]] = {}
        #: highest source offset applied per source: a batch the ingest stage sends again
        #: after a restart is recognised and skipped, so counters stay exact too
        self._applied: dict[str, int] = {}
        #: the next join-input offset this state has not yet applied (for checkpoints); while a
        #: message is processed it is that message's offset, and outputs carry it as ``seq``
        self.next_offset = 0
        self._shapes = window_shapes(catalog.config.model_configs())
        #: accepted or joined but not yet folded into the aggregates (see :meth:`flush`):
        #: predictions as (features, window ids, keys, predictions, scores, class scores) per block
        self._pending_predictions: list[
            tuple[FeatureColumns, np.ndarray, np.ndarray, list[object], np.ndarray,
                  list[dict[str, float] | None] | None]
        ] = []
        self._pending_outcomes: list[_OutcomeChunk] = []
        self._pending_count = 0
        #: the accepted blocks that carried ``attributions``: (window ids, columns) each
        self._pending_attributions: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        #: input offsets per open window, for retraining requests (streams/positions.py)
        self.positions = WindowPositions()
        #: what changed since the last checkpoint, for the next delta (None: not tracking;
        #: see :meth:`checkpoint`)
        self._changes: _Changes | None = None

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
        self.flush()
        return _encoder.encode(
            {
                "v": 3,
                **self._head(),
                "entries": self._entries,
                "labelled": {model: sorted(pids) for model, pids in self._labelled.items()},
                "wkeys": [_wkey_out(wid, k) for wid, k in self._wkeys.items()],
                "slices": [_slice_out(skey, st) for skey, st in self._slices.items()],
            }
        )

    def _head(self) -> dict[str, Any]:
        """The parts of a snapshot a delta carries whole: small, or (early labels) rare."""
        return {
            "next_offset": self.next_offset,
            "watermark": self.watermark,
            "final_watermark": self.final_watermark,
            "counters": self.counters,
            "source_wm": self._source_wm,
            "idle": sorted(self._idle),
            "ended": sorted(self._ended),
            "applied": self._applied,
            "early": {m: {pid: list(v) for pid, v in w.items()} for m, w in self._early.items()},
            "early_expiry": [list(x) for x in self._early_expiry],
            "next_wid": self._next_wid,
            "segment_values": [[m, d, sorted(v)] for (m, d), v in self._segment_values.items()],
            "positions": self.positions.to_wire(),
        }

    @property
    def tracking(self) -> bool:
        """Whether the changes since the last :meth:`checkpoint` (or restore) are known, so
        that the next checkpoint can be a delta."""
        return self._changes is not None

    def checkpoint(self, *, whole: bool) -> bytes:
        """The next checkpoint of a chain: the whole state (:meth:`snapshot`) when ``whole``
        or when nothing is tracked yet, else a delta of what changed since the last checkpoint
        or restore (streams/deltas.py applies it). Either way changes are tracked from here on,
        so only call this for a checkpoint that will be written (and write a whole one after
        a failed write)."""
        data = self.snapshot() if whole or self._changes is None else self._delta(self._changes)
        self._changes = _Changes({wid: len(k.pids) for wid, k in self._wkeys.items()})
        return data

    def _delta(self, changes: _Changes) -> bytes:
        """What changed since ``changes`` started: the head whole, the window keys made, grown
        or gone, the in-flight predictions' additions, labels and removals in the order they
        happened, and the slices touched or gone (each touched slice's aggregate whole)."""
        self.flush()
        seen = changes.pids
        wkeys, grown = [], []
        for wid, k in self._wkeys.items():
            had = seen.get(wid)
            if had is None:
                wkeys.append(_wkey_out(wid, k))
            elif had < len(k.pids):
                grown.append([wid, k.pids[had:]])
        gone_wkeys = [wid for wid in seen if wid not in self._wkeys]
        slices, gone_slices = [], []
        for skey in changes.slices:
            st = self._slices.get(skey)
            if st is None:
                gone_slices.append(list(skey))
            else:
                slices.append(_slice_out(skey, st))
        return _encoder.encode(
            {
                "delta": 1,
                "head": {
                    **self._head(),
                    "entry_models": list(self._entries),
                    "labelled_models": list(self._labelled),
                },
                "wkeys": wkeys,
                "grown": grown,
                "wkeys_gone": gone_wkeys,
                "entries": _entry_ops(changes.entries, self._entries),
                "slices": slices,
                "slices_gone": gone_slices,
            }
        )

    def restore(self, data: bytes, deltas: Sequence[bytes] = ()) -> None:
        """Replace this partition's state with a snapshot's, and then the ``deltas`` of its
        chain after it, in order (see :meth:`checkpoint`); changes are tracked from here on.

        Versions 1 and 2 keyed the join by ``prediction_id`` alone. Their in-flight entries
        move under the model of their window key; their early labels did not record a model,
        so they wait under ``_ANY_MODEL`` and join the first prediction of their id from any
        model, as they would have before (they are gone within one label horizon)."""
        d = _decoder.decode(data)
        if d.get("v") not in (1, 2, 3):
            raise ValueError(f"unknown join checkpoint version {d.get('v')!r}")
        if deltas and d["v"] != 3:
            raise ValueError(f"join checkpoint version {d['v']} cannot carry deltas (only version 3)")
        for delta in deltas:
            apply_join_delta(d, _decoder.decode(delta))
        self.next_offset = d["next_offset"]
        self.watermark, self.final_watermark = d["watermark"], d["final_watermark"]
        self.counters = {**dict.fromkeys(COUNTERS, 0), **d["counters"]}
        self._source_wm = dict(d["source_wm"])
        self._idle, self._ended = set(d["idle"]), set(d["ended"])
        self._applied = dict(d["applied"])
        self._next_wid = d["next_wid"]
        self._wkeys, self._wkey_index = {}, {}
        self._provisional_due, self._final_due, self._wkey_due = [], [], []
        for wid, model_id, version, slices, start, end, final_time, ident, pids in d["wkeys"]:
            key = _WindowKey(
                model_id, version, list(slices), start, end, final_time, _ident_in(ident), list(pids)
            )
            self._wkeys[wid] = key
            self._wkey_index[key.ident] = wid
            self._wkey_due.append((final_time, wid))
        if d["v"] == 3:
            self._entries = {
                m: {pid: _entry(e) for pid, e in es.items()}
                for m, es in d["entries"].items()
            }
            self._labelled = {m: set(pids) for m, pids in d["labelled"].items()}
            self._early = {m: {pid: tuple(v) for pid, v in w.items()} for m, w in d["early"].items()}
            self._early_expiry = [(x[0], x[1], x[2]) for x in d["early_expiry"]]
        else:
            if d["v"] == 1:  # entries were [wid, prediction, score, key, labelled, time]
                flat = {pid: (e[0], e[1], e[2], e[3], e[5]) for pid, e in d["entries"].items()}
                labelled = {pid for pid, e in d["entries"].items() if e[4]}
            else:
                flat = {pid: tuple(e) for pid, e in d["entries"].items()}
                labelled = set(d["labelled"])
            self._entries, self._labelled = {}, {}
            for pid, entry in flat.items():
                model = self._wkeys[entry[0]].model_id
                self._entries.setdefault(model, {})[pid] = entry
                if pid in labelled:
                    self._labelled.setdefault(model, set()).add(pid)
            early = {pid: (v[0], v[1]) for pid, v in d["early"].items()}
            self._early = {_ANY_MODEL: early} if early else {}
            self._early_expiry = [(x[0], _ANY_MODEL, x[1]) for x in d["early_expiry"]]
        heapq.heapify(self._early_expiry)
        self._slices = {}
        for skey, agg, close_at, final_time, provisional_sent in d["slices"]:
            spec = self.catalog.spec(skey[0])
            aggregate = WindowAggregate.from_dict(agg, spec)
            slice_key = (skey[0], skey[1], skey[2], skey[3])
            self._slices[slice_key] = _SliceState(aggregate, close_at, final_time, provisional_sent)
            if not provisional_sent:
                self._provisional_due.append((close_at, slice_key))
            self._final_due.append((final_time, slice_key))
        heapq.heapify(self._provisional_due)
        heapq.heapify(self._final_due)
        heapq.heapify(self._wkey_due)
        self._segment_values = {(m, dim): set(v) for m, dim, v in d["segment_values"]}
        self.positions = WindowPositions.from_wire(d.get("positions"))  # absent before positions
        self._changes = _Changes({wid: len(k.pids) for wid, k in self._wkeys.items()})

    def apply(self, message: JoinInput) -> list[Partial]:
        """One join-input message: its events (unless already applied), then the event-time
        progress it carries; returns the partials that progress released."""
        if isinstance(message, PredictionColumns | LabelColumns):
            applied = self._applied.get(message.source, -1)
            if self.accept(message.source, message.offset):
                block: PredictionBlock | LabelBlock = (
                    PredictionBlock.from_wire(message)
                    if isinstance(message, PredictionColumns)
                    else LabelBlock.from_wire(message)
                )
                offsets = row_offsets(message)
                if offsets is not None and offsets[0] <= applied:  # partly applied before a restart
                    keep = np.flatnonzero(offsets > applied)
                    block, offsets = block.take(keep), offsets[keep]
                if offsets is None:
                    offsets = np.full(len(block), message.offset, dtype=np.int64)
                if isinstance(block, PredictionBlock):
                    self._count_ahead(block, message.watermark)
                    self.add_prediction_block(block, at=(message.source, offsets))
                else:
                    self.add_label_block(block, at=(message.source, offsets))
            return self.source_progress(message.source, message.watermark)
        if isinstance(message, PredictionBatch | LabelBatch):
            if self.accept(message.source, message.offset):
                if isinstance(message, PredictionBatch):
                    self.add_predictions(message.events, at=(message.source, message.offset))
                else:
                    self.add_labels(message.events, at=(message.source, message.offset))
            return self.source_progress(message.source, message.watermark)
        if isinstance(message, Tick):
            return self.source_progress(message.source, message.watermark, idle=message.idle)
        if isinstance(message, EndOfInput):
            return self.end_source(message.source)
        raise TypeError(f"not a join-input message: {type(message).__name__}")

    def _count_ahead(self, block: PredictionBlock, watermark: int) -> None:
        """Predictions stamped far ahead of their partition's event time: processed, in their
        own windows, but counted, since they are what a wrong producer clock looks like."""
        if watermark > MIN_WATERMARK:
            jump = self.catalog.config.max_event_time_jump_ms
            self.counters["ahead_of_stream"] += int((block.times > watermark + jump).sum())

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
    def add_predictions(self, events: Sequence[PredictionEvent], at: tuple[str, int] | None = None) -> None:
        """Events as structs (tests, and join-input written by older versions), all at the
        source offset ``at`` when known."""
        if events:
            block = PredictionBlock.from_events(events, self.catalog.positive_label)
            self.add_prediction_block(block, _at_offset(at, len(block)))

    def add_prediction_block(self, block: PredictionBlock, at: _At | None = None) -> None:
        """Open entries for new predictions; their folds into the aggregates wait for
        :meth:`flush`. ``at`` is the rows' source and source offsets, when known.

        Rules, in event order: a (model, id) already in flight (or accepted earlier in this
        block) is a duplicate; a prediction whose window has passed its grace, by the event time
        of its source or of this partition, whichever is further, is late; the rest
        open an entry in their window and meet any label of their model that came first. Per
        event this costs a few C-level passes (a set test, one dict update) per model; windows,
        lateness and window keys are computed per array or per (model, version, segments)
        group."""
        n = len(block)
        if not n:
            return
        ids = block.ids
        window, grace, horizon = self._settings(block)
        start = window_start(block.times, window)
        end = start + window
        # late by the event time its own source had reached (as this partition heard it, in
        # that source's order), not by the minimum over sources: the decision is then a
        # function of the source's log, whatever the other sources' messages arrived between
        # (docs/architecture.md, "Lateness by a source's own event time")
        reached = self.watermark
        if at is not None:
            reached = max(reached, self._source_wm.get(at[0], MIN_WATERMARK))
        late = provisional_at(end, grace) <= reached
        parts = block.by_model()
        subs = split_rows(ids, parts)
        if self._all_fresh(parts, subs):
            duplicates, n_late, accepted = 0, int(late.sum()), np.flatnonzero(~late)
        else:
            duplicates, n_late, accepted = self._first_fresh(block, late)
        self.counters["duplicate_predictions"] += duplicates
        self.counters["late_predictions"] += n_late
        if accepted.size == 0:
            return
        if accepted.size < n:
            block = block.take(accepted)
            parts = block.by_model()
            subs = split_rows(block.ids, parts)
            start, end, horizon = start[accepted], end[accepted], horizon[accepted]
        wids = self._window_ids(block, start, end, final_at(end, horizon))
        if at is not None:
            offsets = at[1] if accepted.size == n else at[1][accepted]
            self.positions.add_rows("predictions", self._window_of, wids, at[0], offsets)
        if block.registry is not None and block.registries is not None:  # events' lineage
            self.positions.add_lineage(self._window_of, wids, block.times, block.registry, block.registries)
        wid_list = wids.tolist()
        ids, predictions = block.ids, block.predictions
        scores, keys, times = block.scores.tolist(), block.keys.tolist(), block.times.tolist()
        rows: Iterable[_Entry] = zip(wid_list, predictions, scores, keys, times, strict=True)
        if block.class_scores is not None:  # a multiclass score vector rides with its entry
            rows = [row if vec is None else (*row, _vector(vec))
                    for row, vec in zip(rows, block.class_scores, strict=True)]
        changes = self._changes
        if len(parts) == 1:
            self._entries.setdefault(parts[0][0], {}).update(zip(ids, rows, strict=True))
            if changes is not None:
                changes.entries.append(("+", parts[0][0], ids))
        else:
            for (model, _), sub, sub_rows in zip(parts, subs, split_rows(list(rows), parts), strict=True):
                self._entries.setdefault(model, {}).update(zip(sub, sub_rows, strict=True))
                if changes is not None:
                    changes.entries.append(("+", model, sub))
        order, distinct, bounds = runs(wids)
        by_wid = ids if order is None else pick(ids, order)
        for wid, a, b in zip(distinct, bounds[:-1], bounds[1:], strict=True):
            self._wkeys[wid].pids.extend(by_wid[a:b])
        self.counters["predictions"] += len(ids)
        self._pending_predictions.append(
            (block.features, wids, block.keys, predictions, block.scores, block.class_scores))
        self._pending_count += len(ids)
        if block.attributions is not None:
            self._pending_attributions.append((wids, block.attributions))
        if self._early:
            self._meet_early_labels(parts, subs)
        if self._pending_count >= self._flush_at():
            self.flush()

    def _all_fresh(self, parts: list[tuple[str, np.ndarray | None]], subs: list[list[str]]) -> bool:
        """Whether no (model, id) of a block is in flight or repeated within it, with a set
        pass per model (the common case: one); ``subs`` are each part's ids."""
        for (model, _), sub in zip(parts, subs, strict=True):
            entries = self._entries.get(model)
            if len(set(sub)) < len(sub) or (entries and not entries.keys().isdisjoint(sub)):
                return False
        return True

    def _meet_early_labels(self, parts: list[tuple[str, np.ndarray | None]], subs: list[list[str]]) -> None:
        """Join just-accepted predictions to the labels of their model that came first (then
        to those restored without a model, see :meth:`restore`)."""
        joined: list[_Entry] = []
        labels: list[object] = []
        label_times: list[int] = []
        for (model, _), sub in zip(parts, subs, strict=True):
            for waiting in (self._early.get(model), self._early.get(_ANY_MODEL)):
                if not waiting or waiting.keys().isdisjoint(sub):
                    continue
                entries, labelled = self._entries[model], self._labelled.setdefault(model, set())
                for pid in sub:
                    if pid in labelled:  # joined to its own model's label just before
                        continue
                    label = waiting.pop(pid, None)
                    if label is not None:
                        # it came after this window's horizon on its own source (see
                        # _without_late_labels); checkpoints before this version lack the time
                        if len(label) > 4 and self._wkeys[entries[pid][0]].final_at <= label[4]:
                            self.counters["unmatched_labels"] += 1
                            continue
                        labelled.add(pid)
                        if self._changes is not None:
                            self._changes.entries.append(("L", model, (pid,)))
                        joined.append(entries[pid])
                        labels.append(label[0])
                        label_times.append(label[1])
                        if len(label) >= 4:  # it waited with its source position
                            window = self._window_of(entries[pid][0])
                            self.positions.add("labels", window, str(label[2]), int(label[3]))
        self._pend_outcomes(joined, labels, label_times)

    def _settings(self, block: PredictionBlock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each event's (window, grace, label horizon), from its model's settings."""
        cfgs = [self.catalog.model(model_id) for model_id, _, _ in block.groups]
        table = np.array([(c.window_ms, c.grace_ms, c.label_horizon_ms) for c in cfgs], dtype=np.int64)
        per_event = table[block.group] if len(cfgs) > 1 else np.broadcast_to(table[0], (len(block), 3))
        return per_event[:, 0], per_event[:, 1], per_event[:, 2]

    def _first_fresh(self, block: PredictionBlock, late: np.ndarray) -> tuple[int, int, np.ndarray]:
        """The slow path of the duplicate rule, one event at a time: (duplicates, late, accepted)."""
        seen: set[tuple[str, str]] = set()
        accepted: list[int] = []
        duplicates = n_late = 0
        models = [block.groups[g][0] for g in block.group.tolist()]
        for i, (pid, model, is_late) in enumerate(zip(block.ids, models, late.tolist(), strict=True)):
            if pid in self._entries.get(model, _NOTHING) or (model, pid) in seen:
                duplicates += 1
            elif is_late:
                n_late += 1
            else:
                seen.add((model, pid))
                accepted.append(i)
        return duplicates, n_late, np.array(accepted, dtype=np.int64)

    def _window_ids(
        self, block: PredictionBlock, start: np.ndarray, end: np.ndarray, final_at: np.ndarray
    ) -> np.ndarray:
        """The window key id of every event, made per (group, window start), groups in the
        order their first event comes (which decides which segment values a cap admits)."""
        n = len(block)
        if len(block.groups) == 1:
            rank = np.zeros(n, dtype=np.int64)
            group = rank
        else:
            group = block.group.astype(np.int64)
            first_row = np.full(len(block.groups), n, dtype=np.int64)
            np.minimum.at(first_row, group, np.arange(n))
            by_first = np.empty(len(block.groups), dtype=np.int64)
            by_first[np.argsort(first_row, kind="stable")] = np.arange(len(block.groups))
            rank = by_first[group]
        # (group, window start) pairs, groups in first-event order and starts ascending; the
        # first row of each pair (lexsort is stable), and every row's pair
        order = np.lexsort((start, rank))
        change = np.empty(n, dtype=bool)
        change[0] = True
        change[1:] = (rank[order][1:] != rank[order][:-1]) | (start[order][1:] != start[order][:-1])
        pair = np.empty(n, dtype=np.int64)
        pair[order] = np.cumsum(change) - 1
        firsts = order[change].tolist()
        starts, ends, finals = start.tolist(), end.tolist(), final_at.tolist()
        groups_of = group.tolist()
        pair_wid = np.empty(len(firsts), dtype=np.int64)
        for p, first in enumerate(firsts):
            model_id, version, segments = block.groups[groups_of[first]]
            pair_wid[p] = self._wkey(model_id, version, segments, starts[first], ends[first], finals[first])
        wids = pair_wid[pair]
        return wids

    def _flush_at(self) -> int:
        """How many held-back events make a flush due (see ``FLUSH_PER_SLICE``)."""
        return min(FLUSH_EVENTS_MAX, max(FLUSH_EVENTS, FLUSH_PER_SLICE * len(self._slices)))

    def flush(self) -> None:
        """Fold the joined events held back so far into their windows' aggregates.

        The sketches cost mostly per *call* (a few dozen numpy operations per feature and
        slice, whatever the batch size), and one join-input message carries only its share of
        a producer batch. So the join decides matches at once, per message, but folds events
        into the aggregates in large batches: before any window closes, before a snapshot, and
        every ``FLUSH_EVENTS`` (more with many open slices: :meth:`_flush_at`). Every sketch
        merges exactly, and the concatenated feature columns are what one batch of all those
        events gives, so when the fold happens changes no result: the partials are
        byte-identical to folding per message."""
        pending, outcomes = self._pending_predictions, self._pending_outcomes
        self._pending_predictions, self._pending_outcomes, self._pending_count = [], [], 0
        if pending:
            columns = FeatureColumns.concat([p[0] for p in pending])
            wids = np.concatenate([p[1] for p in pending])
            keys = np.concatenate([p[2] for p in pending])
            predictions = [v for p in pending for v in p[3]] if len(pending) > 1 else pending[0][3]
            scores = np.concatenate([p[4] for p in pending])
            parts, regression = self._slice_rows(wids)
            preds = self._values(predictions, regression)
            class_scores: list[dict[str, float] | None] | None = None
            if any(p[5] is not None for p in pending):
                class_scores = [d for p in pending for d in (p[5] or [None] * len(p[1]))]
            fold_predictions(parts, columns, keys, preds, scores, fold_groups=wids, class_scores=class_scores)
        if outcomes:
            self._add_outcomes(outcomes)
        attributed, self._pending_attributions = self._pending_attributions, []
        if attributed:
            self._add_attributions(attributed)

    def _add_attributions(self, pending: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
        """Fold the held-back blocks' attributions into the slices their rows belong to, as
        one batch (a block without some feature reads as NaN there: no attribution sent)."""
        wids = pending[0][0] if len(pending) == 1 else np.concatenate([w for w, _ in pending])
        if len(pending) == 1:
            columns = pending[0][1]
        else:
            names = sorted(set().union(*(a for _, a in pending)))
            columns = {
                name: np.concatenate([a.get(name, np.full(w.size, np.nan)) for w, a in pending])
                for name in names
            }
        parts, _ = self._slice_rows(wids)
        fold_attributions(parts, columns)

    def _slice_rows(
        self, wids: np.ndarray
    ) -> tuple[list[tuple[WindowAggregate, np.ndarray]], np.ndarray | None]:
        """Every slice the rows of a flush fold into, with its rows: the model's slice and one
        per segment dimension value gather the rows of every window key (segment combination)
        they hold, so each slice is folded once, whatever the number of combinations. Also
        which rows belong to regression models (None when none does)."""
        rows: dict[tuple[str, str, str, int], tuple[_SliceState, list[np.ndarray]]] = {}
        regression: list[np.ndarray] = []
        for wid, idx in groups(wids):
            wkey = self._wkeys[wid]
            if self.catalog.model(wkey.model_id).task == "regression":
                regression.append(idx)
            for segment, state in zip(wkey.slices, self._slice_states(wkey), strict=True):
                skey = (wkey.model_id, wkey.model_version, segment, wkey.start)
                got = rows.get(skey)
                if got is None:
                    rows[skey] = (state, [idx])
                else:
                    got[1].append(idx)
        parts = [
            (st.aggregate, idx[0] if len(idx) == 1 else np.concatenate(idx)) for st, idx in rows.values()
        ]
        return parts, (np.concatenate(regression) if regression else None)

    @staticmethod
    def _values(values: list[object], regression: np.ndarray | None) -> np.ndarray:
        """Predictions or labels as the sketches take them: category strings, and floats for
        the rows of regression models."""
        if regression is None:
            return category_strings(values)
        out = np.empty(len(values), dtype=object)
        is_regression = np.zeros(len(values), dtype=bool)
        is_regression[regression] = True
        others = np.flatnonzero(~is_regression)
        if others.size:
            out[others] = category_strings(pick(values, others))
        out[regression] = [_as_float(v) for v in pick(values, regression)]
        return out

    def _wkey(
        self,
        model_id: str,
        version: str,
        segments: tuple[tuple[str, str], ...],
        start: int,
        end: int,
        final_at: int,
    ) -> int:
        ident = (model_id, version, segments, start)
        wid = self._wkey_index.get(ident)
        if wid is None:
            slices = segment_slices(self._capped_segments(model_id, segments))
            wid = self._next_wid
            self._next_wid += 1
            wkey = self._wkeys[wid] = _WindowKey(model_id, version, slices, start, end, final_at, ident)
            self._wkey_index[ident] = wid
            heapq.heappush(self._wkey_due, (final_at, wid))
            self._slice_states(wkey)  # now, so a window closes on time even with its events pending
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
        """The slices of a window key, made when new; each counts as changed for the next
        delta checkpoint (every fold and every new slice comes through here)."""
        states = []
        cfg = self.catalog.model(wkey.model_id)
        changed = None if self._changes is None else self._changes.slices
        for segment in wkey.slices:
            skey = (wkey.model_id, wkey.model_version, segment, wkey.start)
            if changed is not None:
                changed[skey] = None
            state = self._slices.get(skey)
            if state is None:
                state = _SliceState(
                    WindowAggregate(self.catalog.spec(wkey.model_id)),
                    close_at=provisional_at(wkey.end, cfg.grace_ms),
                    final_at=wkey.final_at,
                )
                self._slices[skey] = state
                heapq.heappush(self._provisional_due, (state.close_at, skey))
                heapq.heappush(self._final_due, (state.final_at, skey))
            states.append(state)
        return states

    # -- labels --------------------------------------------------------------------------
    def add_labels(self, events: Sequence[GroundTruthEvent], at: tuple[str, int] | None = None) -> None:
        """Events as structs (tests, and join-input written by older versions)."""
        if events:
            block = LabelBlock.from_events(events)
            self.add_label_block(block, _at_offset(at, len(block)))

    def add_label_block(self, block: LabelBlock, at: _At | None = None) -> None:
        """Join labels to the waiting predictions of their model; labels that come first wait
        for theirs. ``at`` is the rows' source and source offsets, when known.

        The common case (every label finds its prediction, none is a duplicate) is a few
        C-level passes over the block per model; anything else takes the per-label path."""
        n = len(block)
        if not n:
            return
        ids = block.ids
        self.counters["labels"] += n
        parts = block.by_model()
        if len(parts) == 1:
            found = list(map(self._entries.get(parts[0][0], _NOTHING).get, ids))
        else:  # looked up model by model, then put back in block order, all in C
            by_model: list[_Entry | None] = []
            for (model, _), sub in zip(parts, split_rows(ids, parts), strict=True):
                by_model.extend(map(self._entries.get(model, _NOTHING).get, sub))
            back = np.empty(n, dtype=np.int64)
            back[np.concatenate([idx for _, idx in parts])] = np.arange(n)
            found = pick(by_model, back)
        if at is not None and self._wkey_due:
            reached = self._source_wm.get(at[0], MIN_WATERMARK)
            if reached >= self._wkey_due[0][0]:  # some open window may be past its horizon there
                wkeys = self._wkeys
                late = [i for i, e in enumerate(found) if e is not None and wkeys[e[0]].final_at <= reached]
                if late:
                    block, found, at = self._without_late_labels(block, found, at, late)
                    ids, n = block.ids, len(block)
                    if not n:  # every label late (by_model of no rows would fail)
                        return
                    parts = block.by_model()
        subs = split_rows(ids, parts)
        if None not in found and self._all_unlabelled(parts, subs):
            for (model, _), sub in zip(parts, subs, strict=True):
                self._labelled.setdefault(model, set()).update(sub)
                if self._changes is not None:
                    self._changes.entries.append(("L", model, sub))
            self._pend_outcomes(found, block.labels, block.times)  # type: ignore[arg-type]  # None not in found
            if at is not None:
                wids = np.fromiter((e[0] for e in found), dtype=np.int64, count=n)  # type: ignore[index]
                self.positions.add_rows("labels", self._window_of, wids, at[0], at[1])
        else:
            self._pend_outcomes(*self._join_labels_slowly(block, found, at))
        if self._pending_count >= self._flush_at():
            self.flush()

    def _without_late_labels(
        self, block: LabelBlock, found: list[_Entry | None], at: _At, late: list[int]
    ) -> tuple[LabelBlock, list[_Entry | None], _At]:
        """Drop labels whose prediction's window had passed its label horizon on the label's
        own source: counted ``unmatched_labels``, as they are when another source's progress
        has finalised that window first, so the outcome does not depend on which came first
        (docs/architecture.md, "Lateness by a source's own event time")."""
        self.counters["unmatched_labels"] += len(late)
        keep = np.setdiff1d(np.arange(len(block)), np.array(late, dtype=np.int64))
        kept = keep.tolist()
        return block.take(keep), [found[i] for i in kept], (at[0], at[1][keep])

    def _all_unlabelled(self, parts: list[tuple[str, np.ndarray | None]], subs: list[list[str]]) -> bool:
        """Whether no (model, id) of a label block is labelled already or repeated within it."""
        for (model, _), sub in zip(parts, subs, strict=True):
            labelled = self._labelled.get(model)
            if len(set(sub)) < len(sub) or (labelled and not labelled.isdisjoint(sub)):
                return False
        return True

    def _pend_outcomes(
        self, joined: Sequence[_Entry], labels: Sequence[object], label_times: Sequence[int] | np.ndarray
    ) -> None:
        """Queue joined (prediction entry, label, label time) triples for :meth:`flush`, as columns."""
        if not joined:
            return
        wids, predictions, scores, keys, times = zip(*(e[:5] for e in joined), strict=True)
        vectors = [dict(e[5]) if len(e) > 5 else None for e in joined]
        self._pending_outcomes.append(
            (
                np.array(wids, dtype=np.int64),
                list(predictions),
                list(labels),
                np.array(scores, dtype=np.float64),
                np.array(keys, dtype=np.uint64),
                np.array(times, dtype=np.int64),
                vectors if any(v is not None for v in vectors) else None,
                np.asarray(label_times, dtype=np.int64),
            )
        )
        self.counters["joined"] += len(joined)
        self._pending_count += len(joined)

    def _join_labels_slowly(
        self, block: LabelBlock, found: list[_Entry | None], at: _At | None = None
    ) -> tuple[list[_Entry], list[object], list[int]]:
        """The per-label path: early labels wait (with their source position, when known),
        duplicates are counted; returns the joined prediction entries, their labels and the
        labels' times."""
        joined: list[_Entry] = []
        joined_labels: list[object] = []
        joined_times: list[int] = []
        times, models = block.times.tolist(), block.model.tolist()
        offsets = at[1].tolist() if at is not None else [None] * len(block)
        reached = MIN_WATERMARK if at is None else self._source_wm.get(at[0], MIN_WATERMARK)
        rows = zip(block.ids, found, block.labels, times, models, offsets, strict=True)
        for pid, entry, label, ts, m, offset in rows:
            model = block.models[m]
            if entry is None:
                if pid in self._early.get(model, _NOTHING):
                    self.counters["duplicate_labels"] += 1
                    continue
                cfg = self.catalog.model(model)
                expiry = early_label_expiry(ts, cfg.window_ms, cfg.grace_ms, cfg.label_horizon_ms)
                # with its source position and how far its source had got when it came
                early = (label, ts) if at is None else (label, ts, at[0], offset, reached)
                self._early.setdefault(model, {})[pid] = early
                heapq.heappush(self._early_expiry, (expiry, model, pid))
                self.counters["early_labels"] += 1
                continue
            labelled = self._labelled.setdefault(model, set())
            if pid in labelled:
                self.counters["duplicate_labels"] += 1
                continue
            labelled.add(pid)
            if self._changes is not None:
                self._changes.entries.append(("L", model, (pid,)))
            joined.append(entry)
            joined_labels.append(label)
            joined_times.append(ts)
            if at is not None:
                self.positions.add("labels", self._window_of(entry[0]), at[0], offset)
        return joined, joined_labels, joined_times

    def _add_outcomes(self, chunks: list[_OutcomeChunk]) -> None:
        if len(chunks) == 1:
            wids, predictions, labels, scores, keys, times, vectors, label_times = chunks[0]
        else:
            wids = np.concatenate([c[0] for c in chunks])
            predictions = [v for c in chunks for v in c[1]]
            labels = [v for c in chunks for v in c[2]]
            scores = np.concatenate([c[3] for c in chunks])
            keys = np.concatenate([c[4] for c in chunks])
            times = np.concatenate([c[5] for c in chunks])
            vectors = (None if all(c[6] is None for c in chunks)
                       else [v for c in chunks for v in (c[6] or [None] * len(c[1]))])
            label_times = np.concatenate([c[7] for c in chunks])
        parts, regression = self._slice_rows(wids)
        preds, labs = self._values(predictions, regression), self._values(labels, regression)
        ts = times.astype(np.float64)  # exact below 2**53 ms
        fold_outcomes(parts, preds, labs, scores, keys, ts, class_scores=vectors)
        fold_label_lags(parts, label_times - times)

    # -- closing windows -----------------------------------------------------------------
    def _advance(self) -> list[Partial]:
        pred_wm, final_wm = self._watermarks()
        if pred_wm <= self.watermark and final_wm <= self.final_watermark:
            return []
        wm = self.watermark = max(self.watermark, pred_wm)
        fwm = self.final_watermark = max(self.final_watermark, final_wm)
        due: set[_SliceKey] = set()
        while self._final_due and self._final_due[0][0] <= fwm:
            skey = heapq.heappop(self._final_due)[1]
            if skey in self._slices:
                due.add(skey)
        while self._provisional_due and self._provisional_due[0][0] <= wm:
            skey = heapq.heappop(self._provisional_due)[1]
            got = self._slices.get(skey)
            if got is not None and not got.provisional_sent:
                due.add(skey)
        if self._pending_count and due:
            self.flush()
        out: list[Partial] = []
        for skey in sorted(due, key=lambda k: (k[3], k)):
            state = self._slices[skey]
            sent = state.provisional_sent
            phase = due_phase_at(state.close_at, state.final_at, wm, fwm, provisional_done=sent)
            if phase is None:  # cannot happen: every slice in ``due`` is
                continue
            out.append(self._partial(skey, state, phase))
            if self._changes is not None:
                self._changes.slices[skey] = None
            if phase == "final":
                del self._slices[skey]
                if skey[2] == "":
                    self.positions.pop((skey[0], skey[1], skey[3]))
            else:
                state.provisional_sent = True
        while self._wkey_due and self._wkey_due[0][0] <= fwm:
            wkey = self._wkeys.pop(heapq.heappop(self._wkey_due)[1], None)
            if wkey is None:
                continue
            del self._wkey_index[wkey.ident]
            if self._changes is not None:
                self._changes.entries.append(("-", wkey.model_id, wkey.pids))
            entries = self._entries.get(wkey.model_id, {})
            labelled = self._labelled.get(wkey.model_id, set())
            # one window key, one model: bare ids, each once; set operations in C, not a
            # Python step per event (this ran for every prediction)
            live = entries.keys() & wkey.pids
            if live:
                done = labelled & live
                self.counters["expired_unlabelled"] += len(live) - len(done)
                labelled -= done
                deque(map(entries.__delitem__, live), maxlen=0)
        while self._early_expiry and self._early_expiry[0][0] <= wm:
            _, model, pid = heapq.heappop(self._early_expiry)
            if self._early.get(model, {}).pop(pid, None) is not None:
                self.counters["unmatched_labels"] += 1
        return out

    def _partial(self, skey: tuple[str, str, str, int], state: _SliceState, phase: Phase) -> Partial:
        model_id, version, segment, start = skey
        window_ms = self.catalog.model(model_id).window_ms
        return Partial(
            join_partition=self.partition,
            model_id=model_id,
            model_version=version,
            segment=segment,
            window_start=start,
            window_end=start + window_ms,
            phase=phase,
            aggregate=state.aggregate.to_dict(),
            seq=self.next_offset,
            positions=self._positions_of(model_id, version, start) if segment == "" else None,
        )

    def _window_of(self, wid: int) -> WindowId:
        key = self._wkeys[wid]
        return (key.model_id, key.model_version, key.start)

    def _positions_of(self, model_id: str, version: str, start: int) -> dict[str, Any] | None:
        held = self.positions.get((model_id, version, start))
        return None if held is None else held.to_wire()

    def progress_epoch(self) -> tuple[object, ...]:
        """What a merger can act on (see :func:`closing_epoch`), and whether this partition
        ended. The agent sends Progress only when this changes, instead of after every message
        (measured: nine Progress messages per partial, each handled by every merge partition).
        Counters ride along, and are exact at end of input."""
        return (self.ended, closing_epoch(self._shapes, self.watermark, self.final_watermark))

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
        return sum(map(len, self._entries.values())) + sum(map(len, self._early.values()))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
#: where early labels restored from a version 1 or 2 checkpoint wait: those versions did not
#: record a label's model. No model is called "" (model ids have at least one character)
_ANY_MODEL = ""
#: an empty mapping for lookups in a model that has no state yet (never written to)
_NOTHING: Mapping[str, Any] = MappingProxyType({})


def _ident_out(ident: tuple) -> list:
    model_id, version, segments, start = ident
    return [model_id, version, [list(kv) for kv in segments], start]


def _ident_in(raw: list) -> tuple:
    model_id, version, segments, start = raw
    return (model_id, version, tuple((k, v) for k, v in segments), start)


def _wkey_out(wid: int, k: _WindowKey) -> list:
    ident = _ident_out(k.ident)
    return [wid, k.model_id, k.model_version, k.slices, k.start, k.end, k.final_at, ident, k.pids]


def _slice_out(skey: tuple[str, str, str, int], st: _SliceState) -> list:
    return [list(skey), st.aggregate.to_dict(), st.close_at, st.final_at, st.provisional_sent]


@dataclass(slots=True)
class _Changes:
    """What a join partition changed since its last checkpoint (the next delta's content)."""

    #: each window key's pid count at the last checkpoint (keys not here are new)
    pids: dict[int, int]
    #: the in-flight predictions' changes in order: ("+", model, pids) opened, ("L", model,
    #: pids) labelled, ("-", model, pids) expired with their window key
    entries: list[tuple[str, str, Sequence[str]]] = field(default_factory=list)
    #: slices folded into, made, or closed (a dict for its order: first change first)
    slices: dict[tuple[str, str, str, int], None] = field(default_factory=dict)


def _entry_ops(ops: list[tuple[str, str, Sequence[str]]], entries: dict[str, dict[str, _Entry]]) -> list:
    """The entry changes as a delta writes them, runs of one kind and model merged: an opened
    prediction with its entry as it is now (None: gone again since; a later "-" says so)."""
    out: list[list[Any]] = []
    for op, model, pids in ops:
        if out and out[-1][0] == op and out[-1][1] == model:
            out[-1][2].extend(pids)
        else:
            out.append([op, model, list(pids)])
    for run in out:
        if run[0] == "+":
            held = entries.get(run[1], _NOTHING)
            run[2] = dict(zip(run[2], map(held.get, run[2]), strict=True))
    return out


#: a block's source and each row's source offset
_At = tuple[str, np.ndarray]
#: a label waiting for its prediction: (label, time), or (label, time, source, source offset,
#: its source's event time when it came; absent in checkpoints before it was recorded)
_Early = tuple[Any, ...]
#: a window slice: (model, version, segment key, window start)
_SliceKey = tuple[str, str, str, int]
#: an in-flight prediction: (window id, prediction, score, stable key, event time), and for
#: a multiclass prediction with a score vector its ((class, score), ...) pairs: realised ROC AUC
#: needs the vector when the label comes. Pairs in a tuple, not a dict, so the entry stays a
#: tuple of untracked objects the garbage collector skips
_Entry = tuple[Any, ...]
#: joined outcomes as columns: window ids, predictions, labels, scores, keys, prediction event
#: times, score vectors (None: no row has one), label event times
_OutcomeChunk = tuple[np.ndarray, list[object], list[object], np.ndarray, np.ndarray, np.ndarray,
                      list[dict[str, float] | None] | None, np.ndarray]


def _vector(scores: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple((str(k), float(v)) for k, v in scores.items())


def _entry(e: Sequence[Any]) -> _Entry:
    """An entry as a checkpoint decodes it (lists for tuples), back in memory's shape."""
    return tuple(e) if len(e) <= 5 else (*e[:5], tuple((str(c), float(v)) for c, v in e[5]))


def _at_offset(at: tuple[str, int] | None, n: int) -> _At | None:
    """Every row of a message at the message's source offset."""
    return None if at is None else (at[0], np.full(n, at[1], dtype=np.int64))


def _as_float(v: object) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return math.nan
