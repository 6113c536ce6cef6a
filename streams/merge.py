"""The owner of a model's windows: merges every join partition's partials, closes, evaluates.

Partials replace (never add to) the previous partial of the same join partition and window,
and progress counters are cumulative, so a re-delivered message changes nothing. A window is
evaluated once *every* join partition's watermark has passed it; that is what lets several
workers share one hot model and still produce one result per window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.integration import HealthEvent
from driftline.schemas import AlertEvent
from driftline.schemas.windows import MAX_WATERMARK, MIN_WATERMARK, due_phase, final_at
from driftline.streams.catalog import ModelCatalog
from driftline.streams.deltas import apply_merge_delta
from driftline.streams.evaluation import ClosedSlice, Evaluation, Evaluator
from driftline.streams.integration_health import HealthAlerts, HealthMonitor
from driftline.streams.messages import HealthFinding, Partial, PartialsMessage, Progress
from driftline.streams.positions import InputPositions

__all__ = ["MergeOutput", "WindowMerger"]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_partial_decoder = msgspec.msgpack.Decoder(Partial)


def _key(raw: list) -> tuple[str, str, str, int]:
    return (raw[0], raw[1], raw[2], raw[3])


_Key = tuple[str, str, str, int]  # model_id, model_version, segment, window_start


@dataclass(slots=True)
class MergeOutput:
    evaluations: list[Evaluation] = field(default_factory=list)
    ended: bool = False
    #: integration-health alerts (streams/integration_health.py): about windows and events,
    #: not about one evaluated slice, so not inside an evaluation
    alerts: list[AlertEvent] = field(default_factory=list)


class WindowMerger:
    """Window state of one ``window-partials`` partition (the models hashed to it)."""

    def __init__(self, catalog: ModelCatalog, evaluator: Evaluator, n_join_partitions: int) -> None:
        self.catalog = catalog
        self.evaluator = evaluator
        self.n_join_partitions = n_join_partitions
        self.watermark = MIN_WATERMARK
        self.ended = False
        self.final_watermark = MIN_WATERMARK
        self._progress: dict[int, int] = {}
        self._final_progress: dict[int, int] = {}
        self._ended: set[int] = set()
        self._counters: dict[int, dict[str, int]] = {}
        self._progress_seq: dict[int, int] = {}
        self._partials: dict[_Key, dict[int, Partial]] = defaultdict(dict)
        self._ends: dict[_Key, int] = {}
        self._provisional_done: set[_Key] = set()
        #: final window results this partition has emitted; the end-of-results marker carries
        #: it, so a reader can tell it has every result and not merely every marker
        self.finalised = 0
        #: the next window-partials offset this state has not yet applied (for checkpoints)
        self.next_offset = 0
        #: the watermark when every input ended (a bounded replay): later windows were cut short
        self.input_cut: int | None = None
        #: the windows changed since the last checkpoint, and whether the evaluator may have
        #: (None: not tracking; see :meth:`checkpoint`)
        self._changed: dict[_Key, None] | None = None
        self._evaluator_changed = False
        self._init_health()

    # -- integration health ----------------------------------------------------------------
    def _init_health(self) -> None:
        """Integration health of the models this partition owns; its alerts go through the
        evaluator's alert tracker, so they share its checkpoint (below) and dedup keys."""
        catalog = self.catalog
        self.health = HealthMonitor(
            lambda m: catalog.model(m).window_ms,
            lambda m: catalog.model(m).label_horizon_ms,
            lambda m: catalog.model(m).health,
        )
        self.health_alerts = HealthAlerts(lambda m: catalog.model(m).health, source=self.evaluator.source)

    def _health(self, evaluations: list[Evaluation], cut_after: int | None) -> list[AlertEvent]:
        verdicts = self.health.judge([e.result for e in evaluations], cut_after=cut_after)
        # windows nothing arrived in, up to where event time (or a bounded input) got
        reached = self.watermark if cut_after is None else min(self.watermark, cut_after)
        verdicts += self.health.advance(reached, lambda m: self.catalog.model(m).grace_ms)
        return self.health_alerts.alerts(self.evaluator.tracker, verdicts, self.health.window_ms)

    def _finding(self, f: HealthFinding) -> MergeOutput:
        position = {
            "topic": f.topic, "partition": f.partition, "offset": f.offset, "prediction_id": f.prediction_id
        }
        event = HealthEvent(f.kind, f.feature, f.window_start, dict(f.detail), position)
        window_ms = self.catalog.model(f.model_id).window_ms
        tracker = self.evaluator.tracker
        return MergeOutput(
            alerts=self.health_alerts.schema_change(tracker, f.model_id, f.model_version, event, window_ms)
        )

    # -- checkpoints -------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The merger's state and its evaluator's (alert lifecycle, retraining cooldowns,
        bootstrapped references), as msgpack."""
        partials = [[list(key), self._encoded(key)] for key in self._partials]
        return _encoder.encode(
            {
                "v": 1,
                **self._head(),
                "partials": partials,
                "ends": [[list(k), v] for k, v in self._ends.items()],
                "provisional_done": sorted(list(k) for k in self._provisional_done),
                "evaluator": self.evaluator.snapshot(),
            }
        )

    def _encoded(self, key: _Key) -> list[bytes]:
        return [_encoder.encode(p) for _, p in sorted(self._partials[key].items())]

    def _head(self) -> dict[str, Any]:
        """The parts of a snapshot a delta carries whole (all small)."""
        return {
            "next_offset": self.next_offset,
            "watermark": self.watermark,
            "final_watermark": self.final_watermark,
            "ended": self.ended,
            "progress": self._progress,
            "final_progress": self._final_progress,
            "ended_partitions": sorted(self._ended),
            "counters": self._counters,
            "progress_seq": self._progress_seq,
            "finalised": self.finalised,
            "health": self.health.to_dict(),
            "input_cut": self.input_cut,
        }

    @property
    def tracking(self) -> bool:
        """Whether the changes since the last :meth:`checkpoint` (or restore) are known."""
        return self._changed is not None

    def checkpoint(self, *, whole: bool) -> bytes:
        """The next checkpoint of a chain: the whole state when ``whole`` or when nothing is
        tracked yet, else a delta since the last checkpoint or restore (streams/deltas.py):
        the head, the windows whose partials changed or that closed, and the evaluator's
        state only if a window was judged or an alert raised since. Changes are tracked from
        here on, so only call this for a checkpoint that will be written."""
        changed = self._changed
        if whole or changed is None:
            data = self.snapshot()
        else:
            head = self._head()
            if self._evaluator_changed:
                head["evaluator"] = self.evaluator.snapshot()
            windows, gone = [], []
            for key in changed:
                if key in self._partials:
                    windows.append(
                        [list(key), self._encoded(key), self._ends[key], key in self._provisional_done]
                    )
                else:
                    gone.append(list(key))
            data = _encoder.encode({"delta": 1, "head": head, "windows": windows, "gone": gone})
        self._changed, self._evaluator_changed = {}, False
        return data

    def restore(self, data: bytes, deltas: Sequence[bytes] = ()) -> None:
        """Replace this merger's state with a snapshot's, then the ``deltas`` of its chain
        after it, in order (see :meth:`checkpoint`); changes are tracked from here on."""
        d = _decoder.decode(data)
        if d.get("v") != 1:
            raise ValueError(f"unknown merge checkpoint version {d.get('v')!r}")
        for delta in deltas:
            apply_merge_delta(d, _decoder.decode(delta))
        self.next_offset = d["next_offset"]
        self.watermark, self.final_watermark, self.ended = d["watermark"], d["final_watermark"], d["ended"]
        self._progress = {int(k): v for k, v in d["progress"].items()}
        self._final_progress = {int(k): v for k, v in d["final_progress"].items()}
        self._ended = set(d["ended_partitions"])
        self._counters = {int(k): dict(v) for k, v in d["counters"].items()}
        self._progress_seq = {int(k): v for k, v in d["progress_seq"].items()}
        self._partials = defaultdict(dict)
        for key, encoded in d["partials"]:
            for raw in encoded:
                partial = _partial_decoder.decode(raw)
                self._partials[_key(key)][partial.join_partition] = partial
        self._ends = {_key(k): v for k, v in d["ends"]}
        self._provisional_done = {_key(k) for k in d["provisional_done"]}
        self.finalised = d.get("finalised", 0)
        self.evaluator.restore(d["evaluator"])
        self._init_health()
        self.input_cut = d.get("input_cut")
        if d.get("health") is not None:  # absent in checkpoints from before health alerts
            self.health.restore(d["health"])
        self._changed, self._evaluator_changed = {}, False

    @property
    def counters(self) -> dict[str, int]:
        """Stream counters summed over join partitions (late, duplicate, expired, ...)."""
        total: dict[str, int] = defaultdict(int)
        for counters in self._counters.values():
            for name, value in counters.items():
                total[name] += value
        return dict(sorted(total.items()))

    def add(self, message: PartialsMessage) -> MergeOutput:
        if isinstance(message, Partial):
            key = (message.model_id, message.model_version, message.segment, message.window_start)
            if key in self._ends or not self._already_closed(key, message.window_end):
                held = self._partials[key].get(message.join_partition)
                if held is None or _rank(message) >= _rank(held):  # an older re-emission never wins
                    self._partials[key][message.join_partition] = message
                self._ends[key] = message.window_end
                if self._changed is not None:
                    self._changed[key] = None
            return MergeOutput()
        if isinstance(message, HealthFinding):
            self._evaluator_changed = True  # its alerts go through the evaluator's tracker
            return self._finding(message)
        return self._progress_to(message)

    def _already_closed(self, key: _Key, end: int) -> bool:
        """A partial of a window this merger already finalised (a re-delivery): drop it."""
        return final_at(end, self.catalog.model(key[0]).label_horizon_ms) <= self.final_watermark

    def _progress_to(self, message: Progress) -> MergeOutput:
        jp = message.join_partition
        if message.watermark > self._progress.get(jp, MIN_WATERMARK):
            self._progress[jp] = message.watermark
        if message.final_watermark > self._final_progress.get(jp, MIN_WATERMARK):
            self._final_progress[jp] = message.final_watermark
        if message.seq >= self._progress_seq.get(jp, -1):  # an older re-emission never wins
            self._progress_seq[jp] = message.seq
            self._counters[jp] = dict(message.counters)
        if message.end_of_input:
            self._ended.add(jp)
        out = MergeOutput()
        parts = range(self.n_join_partitions)
        wm = min(self._progress.get(p, MIN_WATERMARK) for p in parts)
        fwm = min(self._final_progress.get(p, MIN_WATERMARK) for p in parts)
        if wm > self.watermark or fwm > self.final_watermark:
            if wm >= MAX_WATERMARK > self.watermark:
                # windows the end of a bounded input closes early were cut short, not quiet
                self.input_cut = self.watermark
            self.watermark = max(wm, self.watermark)
            self.final_watermark = max(fwm, self.final_watermark)
            self._evaluator_changed = True
            out.evaluations = self._close(self.watermark, self.final_watermark)
            out.alerts = self._health(out.evaluations, self.input_cut)
        if len(self._ended) >= self.n_join_partitions and not self.ended:
            self.ended = True
            out.ended = True
        return out

    def _close(self, wm: int, fwm: int) -> list[Evaluation]:
        """Evaluate every slice the watermarks close, all handed over at once so that the
        evaluator batches them (Evaluator.evaluate_close: per window, every slice computed,
        then judged in the same order, so the whole-model slice's alerts can name its worst
        segments)."""
        return self.evaluator.evaluate_close(self._closed(wm, fwm))

    def _closed(self, wm: int, fwm: int) -> Iterator[ClosedSlice]:
        # window order per model, and the whole-model slice before its segments, so that
        # bootstrapped references and alert lifecycles see windows in event-time order
        for key in sorted(self._partials, key=lambda k: (k[3], k[0], k[1], k[2] != "", k[2])):
            model_id, version, segment, start = key
            cfg = self.catalog.model(model_id)
            end = self._ends[key]
            phase = due_phase(end, cfg, wm, fwm, provisional_done=key in self._provisional_done)
            if phase is None:
                continue
            aggregate = WindowAggregate(self.catalog.spec(model_id))
            for jp in sorted(self._partials[key]):
                aggregate.merge(WindowAggregate.from_dict(self._partials[key][jp].aggregate, aggregate.spec))
            positions = InputPositions.merged(
                InputPositions.from_wire(p.positions) for p in self._partials[key].values()
            )
            judge_label_free = key not in self._provisional_done
            if self._changed is not None:
                self._changed[key] = None
            if phase == "final":
                self.finalised += 1
                del self._partials[key]
                del self._ends[key]
                self._provisional_done.discard(key)
            else:
                self._provisional_done.add(key)
            yield ClosedSlice(
                model_id,
                version,
                segment,
                start,
                end,
                aggregate,
                phase,
                judge_label_free,
                positions if segment == "" else None,
            )


def _rank(partial: Partial) -> tuple[bool, int]:
    """Which of two partials of one join partition and window slice is newer: a final one,
    then the higher ``seq``. A join partition that joins input in place emits after a restore
    at join-input offsets that may be lower than before the crash (the in-place rows move
    none), so a final partial can come with a lower ``seq`` than the provisional one it
    replaces; one phase's content does not depend on when it was emitted."""
    return (partial.phase == "final", partial.seq)

