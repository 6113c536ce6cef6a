"""Window evaluation: a merged window aggregate in, a result, alerts and retraining requests out.

This is where the pure parts meet: metrics and drift tests from ``detectors``, rules and the
alert lifecycle from ``alerting``. It keeps the only evaluation-time state (the alert
lifecycle, the retraining cooldowns and bootstrapped references), all of it keyed by event
time so that replaying the same windows gives the same output.

Label-free rules (drift, data quality, volume) are judged when a window's predictions are
complete (provisional phase); rules on labelled metrics when its label horizon has passed
(final phase), so a window is never judged on the first few labels to trickle in.

Online detectors (river) run per slice on each window's time-ordered error *sample*, fed once,
at the final phase: the per-event error stream is split over join partitions, and the bounded
bottom-k sample is the one view of it that every split of the events agrees on
(docs/detectors.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from driftline.alerting.any_segment import SegmentInput, judge_any_segment
from driftline.alerting.lifecycle import AlertTracker
from driftline.alerting.retraining import RetrainingPolicy
from driftline.alerting.rules import Rule
from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.attribution import attribution_drift
from driftline.detectors.comparison import (
    Comparison,
    Reference,
    TestPolicy,
    compare,
    compare_many,
    drift_evidence,
    finite,
    performance,
)
from driftline.detectors.estimation import realised_name
from driftline.detectors.online import DETECTORS, Detection, OnlineDetector
from driftline.detectors.sequential import DriftCusum, statistic_evidence, threshold_for
from driftline.detectors.vocabulary import SEGMENT_RANKING_METRIC, is_label_free
from driftline.platform.config import ModelConfig
from driftline.schemas import (
    AlertData,
    AlertEvent,
    RetrainingRequest,
    Window,
    alert_event,
    retraining_request,
)
from driftline.schemas.results import (
    AttributionDriftResult,
    AttributionFeature,
    MultivariateDrift,
    OnlineDetection,
    SegmentContribution,
    WindowResult,
)
from driftline.schemas.timefmt import ms_to_rfc3339
from driftline.schemas.windows import Phase, parse_segment_key, segment_key
from driftline.streams.catalog import ModelCatalog
from driftline.streams.positions import InputPositions
from driftline.streams.ranking import contributions, rank_for_rule
from driftline.streams.requests import InputHistory, version_two

__all__ = [
    "CLOSE_BATCH",
    "ClosedSlice",
    "Evaluation",
    "Evaluator",
    "Pending",
    "metric_values",
    "online_kinds",
    "online_signal",
]

#: how many ranked segments an alert's evidence names
EVIDENCE_SEGMENTS = 3
#: how many breaching segments an ``any_segment`` alert's evidence names (worst first)
ANY_SEGMENT_EVIDENCE = 10
#: how many features an attribution-drift alert's evidence names (those that moved most)
EVIDENCE_ATTRIBUTIONS = 3
#: the most window slices :meth:`Evaluator.evaluate_close` computes together: their merged
#: aggregates are held at once, so a close of a whole backlog (a replay's end) stays bounded
CLOSE_BATCH = 512


@dataclass(slots=True)
class Evaluation:
    result: WindowResult
    values: dict[str, float]
    alerts: list[AlertEvent]
    requests: list[RetrainingRequest]


@dataclass(frozen=True, slots=True)
class ClosedSlice:
    """A window slice a watermark advance closed, as the merger hands it to the evaluator:
    its merged aggregate, the phase it closed in, whether its label-free rules are still to
    judge (False for a final phase whose provisional phase judged them) and, for a whole-model
    slice, its input offsets (streams/positions.py, for retraining requests)."""

    model_id: str
    model_version: str
    segment: str
    start: int
    end: int
    agg: WindowAggregate
    phase: Phase
    judge_label_free: bool
    positions: InputPositions | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model_id, self.model_version, self.segment)


def _windows(slices: Iterable[ClosedSlice]) -> Iterator[list[ClosedSlice]]:
    """Consecutive slices of one window of one model version: what is judged together."""
    window: list[ClosedSlice] = []
    for s in slices:
        if window and (window[0].start, window[0].model_id, window[0].model_version) != (
            s.start, s.model_id, s.model_version
        ):
            yield window
            window = []
        window.append(s)
    if window:
        yield window


@dataclass(slots=True)
class Pending:
    """A window slice computed (result, values) but not yet judged: the merger computes every
    slice of a window before judging any, so the whole-model slice's alerts can name the
    segments that made it worse (:meth:`Evaluator.judge`)."""

    cfg: ModelConfig
    model_id: str
    model_version: str
    segment: str
    start: int
    end: int
    values: dict[str, float]
    agg: WindowAggregate
    ref: Reference | None
    result: WindowResult
    phase: Phase
    judge_label_free: bool
    #: the drift statistics whose CUSUM is at or over the threshold (DriftCusum.crossed)
    cusum_crossed: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _OnlineSlice:
    """A slice's online detectors, and what its newest fed window found (a re-evaluated final
    window reports the same detections instead of feeding its events twice)."""

    detectors: dict[str, OnlineDetector]
    last_start: int | None = None
    last: list[Detection] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detectors": {kind: det.to_dict() for kind, det in sorted(self.detectors.items())},
            "last_start": self.last_start,
            "last": [[d.detector, d.signal, d.time_ms, d.index] for d in self.last],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _OnlineSlice:
        return cls(
            {str(kind): OnlineDetector.from_dict(det) for kind, det in d["detectors"].items()},
            None if d["last_start"] is None else int(d["last_start"]),
            [Detection(str(k), str(s), int(t), int(i)) for k, s, t, i in d["last"]],
        )


def online_signal(cfg: ModelConfig) -> str:
    """The per-event signal the online detectors watch: 0/1 misclassification, or |y - ŷ|."""
    return "abs_error" if cfg.task == "regression" else "error"


def online_kinds(cfg: ModelConfig) -> list[str]:
    """The configured detectors that can watch the model's signal: error-rate detectors
    (DDM, EDDM, HDDM) take 0/1 values only, so a regression model skips them."""
    signal = online_signal(cfg)
    return [k for k in cfg.online_detectors if signal == "error" or not DETECTORS[k][1]]


@dataclass(slots=True)
class _Bootstrap:
    """References learnt from a model version's first windows when no profile file is given."""

    windows: list[int] = field(default_factory=list)
    samples: dict[str, list[np.ndarray]] = field(default_factory=dict)
    predictions: WindowAggregate | None = None
    outcomes: WindowAggregate | None = None
    reference: Reference | None = None


class Evaluator:
    """Evaluates windows in event-time order and decides alerts and retraining requests."""

    def __init__(self, catalog: ModelCatalog, *, source: str = "/driftline/worker") -> None:
        self.catalog = catalog
        self.source = source
        self.tracker = AlertTracker()
        self.retraining = RetrainingPolicy()
        #: the whole-model windows of each model version within the retraining lookback
        self.inputs = InputHistory(self.retraining.lookback_ms)
        self._file_refs: dict[tuple[str, str], Reference] = {}
        self._bootstrap: dict[tuple[str, str, str], _Bootstrap] = {}
        self._online: dict[tuple[str, str, str], _OnlineSlice] = {}
        #: per slice, the CUSUM of drift evidence that the default drift rule watches
        self._cusum: dict[tuple[str, str, str], DriftCusum] = {}
        #: per model version and segment, its profile from the store (source, reference)
        self._stored_refs: dict[tuple[str, str, str], Reference] = {}
        #: per slice, the source of the reference its last window was judged against
        self._judged_against: dict[tuple[str, str, str], str] = {}

    # -- references ----------------------------------------------------------------------
    def reference(self, model_id: str, model_version: str, segment: str = "") -> Reference | None:
        """The slice's reference: its profile from the reference file, else what was learnt
        from the slice's own first windows."""
        ref = self._file_refs.get((model_id, segment))
        if ref is None:
            profile = self.catalog.profile(model_id, segment)
            if profile is not None:
                ref = self._file_refs[(model_id, segment)] = Reference.from_profile(
                    profile, self.catalog.reference_source(model_id)
                )
        if ref is not None:
            return ref
        boot = self._bootstrap.get((model_id, model_version, segment))
        return None if boot is None else boot.reference

    def _stored_reference(self, model_id: str, model_version: str, segment: str) -> Reference | None:
        """The slice's profile in the version's stored baseline (None: the store has none for
        the version, or none for this segment, which then keeps the reference it would have)."""
        found = self.catalog.stored_profile(model_id, model_version)
        profile = None if found is None else found.profiles.get(segment)
        if found is None or profile is None:
            return None
        key = (model_id, model_version, segment)
        ref = self._stored_refs.get(key)
        if ref is None or ref.source != found.name:
            ref = self._stored_refs[key] = Reference.from_profile(profile, found.name)
        return ref

    def _learn(self, key: tuple[str, str, str], start: int, agg: WindowAggregate, phase: Phase) -> None:
        """Fold one of a slice's first windows into its bootstrapped reference."""
        cfg = self.catalog.model(key[0])
        boot = self._bootstrap.setdefault(key, _Bootstrap())
        if start not in boot.windows and len(boot.windows) < cfg.bootstrap_windows:
            boot.windows.append(start)
            boot.predictions = _merged(boot.predictions, agg)
            for name, sk in agg.numeric.items():
                boot.samples.setdefault(name, []).append(sk.sample_values.copy())
            if len(boot.windows) == cfg.bootstrap_windows:
                boot.reference = Reference.from_aggregate(boot.predictions, boot.samples)
        if phase == "final" and start in boot.windows:
            boot.outcomes = _merged(boot.outcomes, agg)
            if boot.reference is not None and boot.outcomes is not None:
                boot.reference.metrics = performance(boot.outcomes)

    # -- online detectors ------------------------------------------------------------------
    def _detect(
        self, key: tuple[str, str, str], start: int, agg: WindowAggregate, cfg: ModelConfig
    ) -> list[Detection]:
        """Feed a final window's error sample, in event-time order, to the slice's detectors.

        Windows reach here in event-time order (the merger closes them so); a window at or
        before the last one fed is not fed again, so a re-delivered final window reports what
        it found the first time and an out-of-order one cannot rewind the detectors."""
        kinds = online_kinds(cfg)
        if not kinds:
            return []
        state = self._online.setdefault(key, _OnlineSlice({}))
        if state.last_start is not None and start <= state.last_start:
            return list(state.last) if start == state.last_start else []
        values, times, _ = agg.error_stream()
        signal = online_signal(cfg)
        found: list[Detection] = []
        for kind in kinds:  # a kind added to the config since a restore starts fresh
            detector = state.detectors.get(kind)
            if detector is None:
                detector = state.detectors[kind] = OnlineDetector(kind, signal)
            found.extend(detector.update(values, times))
        found.sort(key=lambda d: (d.time_ms, d.index, d.detector))
        state.last_start, state.last = start, found
        return list(found)

    def online_state(self) -> dict[str, Any]:
        """JSON-safe detector states per slice, keyed ``model_id/model_version/segment``
        (ids may hold any character, so the key is for reading; the parts are stored too)."""
        return {
            f"{m}/{v}/{s}": {"model_id": m, "model_version": v, "segment": s, **state.to_dict()}
            for (m, v, s), state in sorted(self._online.items())
        }

    def restore_online(self, data: Mapping[str, Any]) -> list[str]:
        """Restore :meth:`online_state` output: detectors continue where the snapshot stopped.

        A slice whose state cannot be loaded (saved by another river version, see
        :mod:`driftline.detectors.online`) starts fresh rather than stopping the worker; the
        keys of those slices are returned so the caller can log them."""
        self._online = {}
        fresh: list[str] = []
        for name, d in data.items():
            try:
                state = _OnlineSlice.from_dict(d)
            except ValueError:
                fresh.append(name)
                continue
            self._online[(str(d["model_id"]), str(d["model_version"]), str(d["segment"]))] = state
        return fresh

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(
        self,
        model_id: str,
        model_version: str,
        segment: str,
        start: int,
        end: int,
        agg: WindowAggregate,
        phase: Phase,
        *,
        judge_label_free: bool,
        positions: InputPositions | None = None,
    ) -> Evaluation:
        """Evaluate one window slice; ``judge_label_free`` is False for a final phase whose
        provisional phase already judged the label-free rules. ``positions`` are the whole
        model slice's input offsets (streams/positions.py), for retraining requests. A
        whole-model slice evaluated so has no segments to rank; :meth:`evaluate_close` gives
        a window's slices together."""
        closed = ClosedSlice(model_id, model_version, segment, start, end, agg, phase,
                             judge_label_free, positions)
        return self.evaluate_close([closed])[0]

    def prepare(
        self,
        model_id: str,
        model_version: str,
        segment: str,
        start: int,
        end: int,
        agg: WindowAggregate,
        phase: Phase,
        *,
        judge_label_free: bool,
        positions: InputPositions | None = None,
    ) -> Pending:
        """Compute one window slice's result and values (references, drift, online detectors,
        CUSUM, the input history), without judging its rules."""
        closed = ClosedSlice(model_id, model_version, segment, start, end, agg, phase,
                             judge_label_free, positions)
        ref = self._resolve(closed)
        return self._complete(closed, ref, compare(agg, ref, _policy(self.catalog.model(model_id))))

    def evaluate_close(self, slices: Iterable[ClosedSlice]) -> list[Evaluation]:
        """Evaluate the window slices one watermark advance closed, in the merger's order
        (window start, model, version, the whole-model slice before its segments), each
        window's slices judged together so that its whole-model slice can name its worst
        segments (:meth:`judge`).

        Slices are computed in batches of whole windows (:data:`CLOSE_BATCH` slices at most,
        no slice twice): every slice's reference first, then one :func:`compare_many` for the
        batch (one vectorised call for all its KS p-values), then per window, in order, the
        stateful rest (CUSUM, online detectors, alert lifecycles). The results are those of
        evaluating the slices one at a time: a batch never holds two windows of one slice, and
        what the stateful steps read is kept per slice, so computing a later slice's reference
        before an earlier window is judged changes nothing (``tests/test_evaluation_batch.py``)."""
        out: list[Evaluation] = []
        batch: list[list[ClosedSlice]] = []
        keys: set[tuple[str, str, str]] = set()
        size = 0
        for window in _windows(slices):
            window_keys = {s.key for s in window}
            if batch and (size + len(window) > CLOSE_BATCH or not keys.isdisjoint(window_keys)):
                out += self._evaluate_batch(batch)
                batch, keys, size = [], set(), 0
            batch.append(window)
            keys |= window_keys
            size += len(window)
        if batch:
            out += self._evaluate_batch(batch)
        return out

    def _evaluate_batch(self, windows: Sequence[Sequence[ClosedSlice]]) -> list[Evaluation]:
        flat = [s for window in windows for s in window]
        refs = [self._resolve(s) for s in flat]
        founds = iter(compare_many(
            [(s.agg, ref, _policy(self.catalog.model(s.model_id))) for s, ref in zip(flat, refs, strict=True)]
        ))
        refs_it = iter(refs)
        out: list[Evaluation] = []
        for window in windows:
            group = [self._complete(s, next(refs_it), next(founds)) for s in window]
            segments = [p for p in group if p.segment]
            out += [self.judge(p, segments) for p in group]
        return out

    def _resolve(self, s: ClosedSlice) -> Reference | None:
        """The reference a window slice is judged against, learning a bootstrapped one from the
        slice's first windows (what a slice's later windows depend on, so done in order)."""
        model_id, model_version, segment = s.key
        # a version's profile in the store comes first (streams/catalog.py)
        ref = self._stored_reference(model_id, model_version, segment)
        if ref is None and self.catalog.has_reference(model_id):
            ref = self.reference(model_id, model_version, segment)
        elif ref is None:
            self._learn(s.key, s.start, s.agg, s.phase)
            boot = self._bootstrap[s.key]
            # a window the reference is learnt from is never judged against it: whether the
            # reference was complete when such a window became final depends on how partitions'
            # progress interleaved, and results must not
            ref = None if s.start in boot.windows else boot.reference
        return ref

    def _complete(self, s: ClosedSlice, ref: Reference | None, found: Comparison) -> Pending:
        """The rest of a slice's result once its comparison is in: CUSUM, online detectors,
        attribution drift, the input history (state kept per slice, fed in window order)."""
        model_id, model_version, segment = slice_key = s.key
        start, end, agg, phase = s.start, s.end, s.agg, s.phase
        cfg = self.catalog.model(model_id)
        if ref is not None and self._judged_against.setdefault(slice_key, ref.source) != ref.source:
            # rebaselined: evidence gathered against the old reference is not evidence against this one
            self._judged_against[slice_key] = ref.source
            self._cusum.pop(slice_key, None)
        crossed: list[dict[str, Any]] = []
        detections: list[Detection] = []
        if phase == "final":
            detections = self._detect(slice_key, start, agg, cfg)
        values = metric_values(found, agg, detections, online_kinds(cfg) if phase == "final" else [])
        if found.dataset_drift is not None:
            cusum = self._cusum.setdefault(slice_key, DriftCusum())
            z = statistic_evidence(found.drift)
            h = threshold_for(cfg.window_ms, len(z), self.catalog.slice_count(model_id))
            cur = cusum.observe(start, z, h)
            if cur is not None:
                values["drift_cusum"] = cur
                crossed = cusum.crossed()
        attribution = _attribution(ref, agg, cfg)
        if attribution is not None:
            values["attribution_ndcg"] = attribution.ndcg
            values["attribution_drift"] = 1.0 if attribution.drifted else 0.0
        n = agg.n_predictions
        coverage = agg.n_labelled / n if n else None
        seg = parse_segment_key(segment)
        if segment == "":
            self.inputs.record(
                model_id, model_version, start, end, s.positions or InputPositions(), n, agg.n_labelled
            )
        result = WindowResult(
            model_id=model_id,
            model_version=model_version,
            segment=seg,
            window_start=ms_to_rfc3339(start),
            window_end=ms_to_rfc3339(end),
            window_start_ms=start,
            window_end_ms=end,
            phase=phase,
            prediction_count=n,
            labelled_count=agg.n_labelled,
            label_coverage=coverage,
            metrics={k: finite(v) for k, v in sorted(found.metrics.items())},
            drift=found.drift,
            dataset_drift=found.dataset_drift,
            drift_share=found.drift_share,
            reference=ref.source if ref is not None else "none (bootstrapping)",
            data_quality=found.quality,
            online=[
                OnlineDetection(
                    detector=d.detector, signal=d.signal, time=ms_to_rfc3339(d.time_ms), time_ms=d.time_ms
                )
                for d in detections
            ],
            intervals={k: [lo, hi] for k, (lo, hi) in sorted(found.intervals.items())},
            interval_level=found.interval_level,
            multivariate=found.multivariate,
            attribution=attribution,
        )
        return Pending(
            cfg, model_id, model_version, segment, start, end, values, agg, ref, result, phase,
            s.judge_label_free, crossed,
        )

    def judge(self, p: Pending, segments: Sequence[Pending] = ()) -> Evaluation:
        """Judge a prepared slice's rules. For a final whole-model slice, ``segments`` are the
        same window's segment slices: the result carries them ranked by contribution to the
        task's headline metric, and an alert on a labelled metric names the worst first."""
        segments = [s for s in segments if s.phase == p.phase] if not p.segment else []
        if segments and p.phase == "final":
            metric, higher_is_better = SEGMENT_RANKING_METRIC[p.cfg.task]
            # the side a rule on the metric would fire on is what ranks as "worse"
            headline = Rule(
                name="segments_ranked",
                metric=metric,
                comparison="<" if higher_is_better else ">",
                threshold=0.0,
            )
            p.result.segments_ranked = _ranked(headline, p, segments)
        alerts, requests = self._judge(
            p.cfg,
            p.model_id,
            p.model_version,
            p.result.segment,
            p.start,
            p.end,
            p.values,
            p.agg,
            p.ref,
            p.result,
            phase=p.phase,
            judge_label_free=p.judge_label_free,
            segments=(p, segments),
            cusum_crossed=p.cusum_crossed,
        )
        return Evaluation(p.result, p.values, alerts, requests)

    def _judge(
        self,
        cfg: ModelConfig,
        model_id: str,
        model_version: str,
        segment: dict[str, str],
        start: int,
        end: int,
        values: Mapping[str, float],
        agg: WindowAggregate,
        ref: Reference | None,
        result: WindowResult,
        *,
        phase: Phase,
        judge_label_free: bool,
        segments: tuple[Pending, Sequence[Pending]] | None = None,
        cusum_crossed: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[list[AlertEvent], list[RetrainingRequest]]:
        alerts: list[AlertEvent] = []
        requests: list[RetrainingRequest] = []
        for rule in cfg.rules:
            label_free = is_label_free(rule.metric)
            if label_free and not judge_label_free:
                continue
            if not label_free and phase != "final":
                continue
            if not segment and rule.scope == "each_segment":
                continue
            if segment and rule.scope in ("model", "any_segment"):
                continue  # an any_segment rule is judged once, on the model's slice, from its segments
            inputs = _rule_inputs(rule, cfg, values, agg, ref)
            samples, baseline, baseline_samples = inputs.samples, inputs.baseline, inputs.baseline_samples
            evidence = _evidence(rule, result)
            if rule.metric == "drift_cusum":  # which statistics' CUSUMs crossed, largest first
                evidence["cusum_features"] = [dict(c) for c in cusum_crossed]
            if segments is not None and segments[1] and not label_free and phase == "final":
                top = _ranked(rule, *segments)[:EVIDENCE_SEGMENTS]
                if top:  # worst first
                    evidence["segments"] = [msgspec.to_builtins(c) for c in top]
            if segments is not None and segments[1] and "multivariate" in evidence:
                _multivariate_segments(evidence["multivariate"], segments[1])
            if rule.scope == "any_segment":
                fired = self._any_segment(
                    rule, cfg, model_id, model_version, start, end, evidence,
                    [] if segments is None else segments[1],
                )
            else:
                fired = self.tracker.observe(
                    rule,
                    model_id=model_id,
                    model_version=model_version,
                    segment=segment,
                    window_start_ms=start,
                    window_end_ms=end,
                    value=values.get(rule.metric),
                    samples=samples,
                    baseline=baseline,
                    evidence=evidence,
                    baseline_samples=baseline_samples,
                    # a test-based rule on every slice is a family of tests per window
                    family=1 if rule.scope == "model" else self.catalog.slice_count(model_id),
                )
            for data in fired:
                alerts.append(alert_event(data, source=self.source))
                if data.status == "firing" and rule.retrain:
                    request = self.retraining.consider(
                        data,
                        rule,
                        window_start_ms=start,
                        window_end_ms=end,
                        evidence=_request_evidence(result, label_free=label_free),
                    )
                    if request is not None:
                        request = version_two(
                            request,
                            alert=data,
                            rule=rule,
                            cfg=cfg,
                            result=result,
                            reference=ref,
                            reference_window=self._reference_window(model_id, model_version, segment, ref),
                            history=self.inputs,
                            label_free=label_free,
                            worst_segments=[] if label_free else _worst_segments(evidence, result),
                        )
                        requests.append(retraining_request(request, source=self.source))
        return alerts, requests

    def _any_segment(
        self,
        rule: Rule,
        cfg: ModelConfig,
        model_id: str,
        model_version: str,
        start: int,
        end: int,
        evidence: dict[str, Any],
        segments: Sequence[Pending],
    ) -> list[AlertData]:
        """Judge a ``scope: any_segment`` rule once for the model's window, over its segment
        slices (alerting/any_segment.py): one series, the model's, whose alert shows the worst
        segment's value and thresholds and names every breaching segment, worst first."""
        verdict = judge_any_segment(
            rule,
            [
                SegmentInput(s.segment, i.value, i.samples, i.baseline, i.baseline_samples)
                for s in segments
                for i in (_rule_inputs(rule, cfg, s.values, s.agg, s.ref),)
            ],
        )
        if verdict is None:
            return []  # no segment could be judged: "no data", the lifecycle holds
        worst = verdict.worst
        breaching = verdict.breaching
        evidence["any_segment"] = {
            "correction": "bonferroni" if rule.test else "none",
            "alpha": verdict.alpha if rule.test else None,
            "rule_alpha": rule.alpha if rule.test else None,
            "segments_judged": verdict.judged,
            "breaching_count": len(breaching),
            "breaching": [
                {
                    "segment": b.segment,
                    "observed": b.observed,
                    "threshold": b.threshold,
                    "baseline": b.baseline,
                    "n": b.samples,
                }
                for b in breaching[:ANY_SEGMENT_EVIDENCE]
            ],
        }
        return self.tracker.observe_verdict(
            rule,
            model_id=model_id,
            model_version=model_version,
            segment={},
            window_start_ms=start,
            window_end_ms=end,
            breached=verdict.breached,
            cleared=verdict.cleared,
            value=worst.observed,
            threshold=worst.threshold,
            clear_threshold=worst.clear_threshold,
            baseline=worst.baseline,
            samples=worst.samples,
            evidence={**evidence, "worst_segment": worst.segment},
        )

    def _reference_window(
        self, model_id: str, version: str, segment: Mapping[str, str], ref: Reference | None
    ) -> Window | None:
        """The event-time span a bootstrapped reference was learnt from (None for a file's)."""
        boot = self._bootstrap.get((model_id, version, segment_key(segment)))
        if ref is None or boot is None or boot.reference is not ref or not boot.windows:
            return None
        window_ms = self.catalog.model(model_id).window_ms
        return Window(
            start=ms_to_rfc3339(min(boot.windows)), end=ms_to_rfc3339(max(boot.windows) + window_ms)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker.to_dict(),
            "retraining": self.retraining.to_dict(),
            "online": self.online_state(),
            "cusum": [[m, v, s, c.to_dict()] for (m, v, s), c in sorted(self._cusum.items())],
        }

    # -- checkpoints -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything evaluation remembers between windows, msgpack-safe: alert lifecycles,
        retraining cooldowns, online detectors and bootstrapped references (as the windows
        they were learnt from, so restoring rebuilds them exactly)."""
        boots = []
        for (model_id, version, segment), boot in self._bootstrap.items():
            boots.append(
                {
                    "key": [model_id, version, segment],
                    "windows": boot.windows,
                    "samples": {k: [a.tolist() for a in v] for k, v in boot.samples.items()},
                    "predictions": None if boot.predictions is None else boot.predictions.to_dict(),
                    "outcomes": None if boot.outcomes is None else boot.outcomes.to_dict(),
                }
            )
        return {
            **self.to_dict(),
            "bootstrap": boots,
            "inputs": self.inputs.to_wire(),
            "judged_against": [[m, v, s, src] for (m, v, s), src in sorted(self._judged_against.items())],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        self.tracker = AlertTracker.from_dict(data["tracker"])
        self.retraining = RetrainingPolicy.from_dict(data["retraining"])
        self.inputs = InputHistory(self.retraining.lookback_ms)
        self.inputs.restore(data.get("inputs"))  # absent in checkpoints from before version 2
        self._online = {}
        self.restore_online(data["online"])
        # absent from snapshots written before the CUSUM existed: its slices start at 0
        self._cusum = {
            (str(m), str(v), str(s)): DriftCusum.from_dict(c) for m, v, s, c in data.get("cusum", [])
        }
        # absent before stored profiles: the first window after the restore sets it
        self._judged_against = {
            (str(m), str(v), str(s)): str(src) for m, v, s, src in data.get("judged_against", [])
        }
        self._bootstrap = {}
        for item in data["bootstrap"]:
            model_id, version, segment = item["key"]
            cfg = self.catalog.model(model_id)
            spec = self.catalog.spec(model_id)
            boot = _Bootstrap(
                windows=list(item["windows"]),
                samples={k: [np.asarray(a, dtype=np.float64) for a in v] for k, v in item["samples"].items()},
                predictions=None
                if item["predictions"] is None
                else WindowAggregate.from_dict(item["predictions"], spec),
                outcomes=None
                if item["outcomes"] is None
                else WindowAggregate.from_dict(item["outcomes"], spec),
            )
            if boot.predictions is not None and len(boot.windows) >= cfg.bootstrap_windows:
                boot.reference = Reference.from_aggregate(boot.predictions, boot.samples)
                if boot.outcomes is not None:
                    boot.reference.metrics = performance(boot.outcomes)
            self._bootstrap[(model_id, version, segment)] = boot


def _baseline(ref: Reference | None, metric: str, cfg: ModelConfig) -> float | None:
    """A slice's reference value of ``metric`` (or of the metric an estimate estimates)."""
    if ref is None:
        return None
    value = ref.metrics.get(metric)
    if value is None:
        value = ref.metrics.get(realised_name(metric, cfg.positive_label))
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _RuleInputs:
    value: float | None
    samples: int
    baseline: float | None
    baseline_samples: int


def _rule_inputs(
    rule: Rule, cfg: ModelConfig, values: Mapping[str, float], agg: WindowAggregate, ref: Reference | None
) -> _RuleInputs:
    """What a rule is judged on in one slice: its value, the samples behind it (predictions
    for a label-free metric, labels otherwise) and its baseline with the reference's size."""
    label_free = is_label_free(rule.metric)
    samples = agg.n_predictions if label_free or rule.metric == "label_coverage" else agg.n_labelled
    # an estimate is judged against the reference's own estimate (the profile's, or the
    # bootstrap windows'), else against the realised value of its metric
    reference_metrics = ref.metrics if ref is not None else {}
    baseline = reference_metrics.get(rule.metric)
    if baseline is None:
        baseline = reference_metrics.get(realised_name(rule.metric, cfg.positive_label))
    baseline_n = reference_metrics.get("n", 0.0)
    return _RuleInputs(
        values.get(rule.metric), samples, baseline, int(baseline_n) if math.isfinite(baseline_n) else 0
    )


def _ranked(rule: Rule, model: Pending, segments: Sequence[Pending]) -> list[SegmentContribution]:
    """``model``'s window's segments ranked for ``rule``, each against its slice's own
    reference (the one its result was judged against), worst first."""
    refs = {s.segment: s.ref for s in (model, *segments)}
    def reference_n(key: str) -> int | None:
        ref = refs.get(key)
        n = None if ref is None else ref.metrics.get("n")
        return int(n) if n is not None and math.isfinite(n) else None

    ranked = rank_for_rule(
        rule,
        [model.result, *(s.result for s in segments)],
        lambda key: _baseline(refs.get(key), rule.metric, model.cfg),
        baseline_n=reference_n,
    )
    return contributions(rule.metric, ranked)


def _attribution(
    ref: Reference | None, agg: WindowAggregate, cfg: ModelConfig
) -> AttributionDriftResult | None:
    """The window's attribution drift against its reference: None unless both carry
    attributions (a model that sends none, or a reference without, has nothing to compare)."""
    if ref is None or not ref.attributions or not agg.attributions:
        return None
    window = agg.attributions.means()
    found = attribution_drift(ref.attributions, window, threshold=cfg.attribution_threshold)
    counts = agg.attributions.counts
    return AttributionDriftResult(
        ndcg=found.ndcg,
        threshold=found.threshold,
        drifted=found.alert,
        features=[
            AttributionFeature(
                feature=f,
                window=window.get(f, 0.0),
                reference=float(ref.attributions.get(f, 0.0)),
                window_rank=w,
                reference_rank=r,
                rank_change=r - w,
                count=counts.get(f, 0),
            )
            for f, r, w in found.ranks()
        ],
    )


def _merged(base: WindowAggregate | None, agg: WindowAggregate) -> WindowAggregate:
    if base is None:
        base = WindowAggregate(agg.spec)
    base.merge(agg)
    return base


def metric_values(
    found: Comparison, agg: WindowAggregate, detections: Sequence[Detection], online: Sequence[str]
) -> dict[str, float]:
    """The numbers rules can name, by the names they use (``docs/alerting.md``): metrics,
    counts, ``dataset_drift``, ``drift.<feature>.statistic``, ``missing_rate.<feature>``,
    ``online.<detector>.detections``, ... (``drift_cusum`` is added by :meth:`Evaluator.evaluate`,
    which keeps the CUSUM's state)"""
    values: dict[str, float] = {k: v for k, v in found.metrics.items() if v is not None}
    n = agg.n_predictions
    values.update(prediction_count=float(n), labelled_count=float(agg.n_labelled))
    if n:
        values["label_coverage"] = agg.n_labelled / n
    if found.dataset_drift is not None:
        values["dataset_drift"] = 1.0 if found.dataset_drift else 0.0
        values["drift_share"] = float(found.drift_share or 0.0)
        values["drifted_features"] = float(sum(d.drifted for d in found.drift if d.kind == "feature"))
    for d in found.drift:
        prefix = f"drift.{d.feature}" if d.kind == "feature" else f"drift.{d.kind}"
        if d.statistic is not None:
            values[f"{prefix}.statistic"] = d.statistic
        if d.p_value is not None:
            values[f"{prefix}.p_value"] = d.p_value
    for kind in online:
        values[f"online.{kind}.detections"] = float(sum(d.detector == kind for d in detections))
    values.update(_multivariate_values(found))
    for name, q in found.quality.items():
        values[f"missing_rate.{name}"] = q.missing_rate
        values[f"type_error_rate.{name}"] = q.type_error_rate
        if q.out_of_range_rate is not None:
            values[f"out_of_range_rate.{name}"] = q.out_of_range_rate
    return values


def _policy(cfg: ModelConfig) -> TestPolicy:
    return TestPolicy(cfg.drift_alpha, cfg.drift_correction, cfg.drift_share, cfg.drift_tests)


def _evidence(rule: Rule, result: WindowResult) -> dict[str, Any]:
    """What an alert shows besides its value. A label-free rule is judged when predictions are
    complete, while labels are still arriving: its evidence carries nothing label-based, whose
    value at that moment would depend on how the label stream happened to interleave."""
    evidence: dict[str, Any] = {"prediction_count": result.prediction_count}
    if not is_label_free(rule.metric):
        evidence["labelled_count"] = result.labelled_count
    if rule.metric.startswith("drift") or rule.metric == "dataset_drift":
        evidence["drifted_features"] = sorted(
            d.feature for d in result.drift if d.drifted and d.kind == "feature"
        )
        evidence["features"] = drift_evidence(result.drift)  # ranked by effect, with the numbers
    if rule.metric.startswith("multivariate") and result.multivariate is not None:
        evidence["multivariate"] = _multivariate_evidence(result.multivariate)
    if rule.metric.startswith("attribution_") and result.attribution is not None:
        a = result.attribution
        evidence["attribution"] = {
            "ndcg": a.ndcg,
            "threshold": a.threshold,
            # the features whose rank moved most, with both sides' mean |attribution|
            "moved": [msgspec.to_builtins(f) for f in a.features[:EVIDENCE_ATTRIBUTIONS] if f.rank_change],
        }
    return evidence


# -- multivariate drift (detectors/multivariate.py) -------------------------------------------
def _multivariate_values(found: Comparison) -> dict[str, float]:
    """``multivariate_error`` and ``multivariate_drift`` (1/0) of a window that has them."""
    mv = found.multivariate
    if mv is None or mv.error is None:
        return {}
    return {"multivariate_error": mv.error, "multivariate_drift": 1.0 if mv.drifted else 0.0}


def _multivariate_evidence(mv: MultivariateDrift) -> dict[str, Any]:
    """What a multivariate alert shows: the error against its band, and the features that
    drive it, each with its share of the error (largest rise over the reference first)."""
    return {
        "error": mv.error,
        "threshold": mv.threshold,
        "reference_error": mv.reference_error,
        "exceedance": mv.exceedance,
        "drivers": [{"feature": f, "contribution": mv.contributions.get(f)} for f in mv.drivers],
    }


def _multivariate_segments(evidence: dict[str, Any], segments: Sequence[Pending]) -> None:
    """The segment slices of the same window whose own multivariate signal fired, largest
    exceedance first (then by key), each with its drivers: where the joint shift is. Label-free,
    so it is there at the provisional phase, as the alert is."""
    fired = [
        s for s in segments
        if s.result.multivariate is not None and s.result.multivariate.drifted
    ]
    fired.sort(key=lambda s: (-(s.result.multivariate.exceedance or 0.0), s.segment))  # type: ignore[union-attr]
    evidence["segments"] = [
        {
            "segment": s.segment,
            "exceedance": s.result.multivariate.exceedance,  # type: ignore[union-attr]
            "drivers": list(s.result.multivariate.drivers),  # type: ignore[union-attr]
        }
        for s in fired[:EVIDENCE_SEGMENTS]
    ]


def _worst_segments(evidence: Mapping[str, Any], result: WindowResult) -> list[SegmentContribution]:
    """The segments a retraining request names, worst first: those of the alert's evidence
    (ranked on its own metric), else the window's ranking of the headline metric. Both are
    label-based, so only final windows have them; a label-free rule's alert has neither."""
    if "segments" in evidence:
        return msgspec.convert(evidence["segments"], list[SegmentContribution])
    return list(result.segments_ranked[:EVIDENCE_SEGMENTS])


def _request_evidence(result: WindowResult, *, label_free: bool) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "dataset_drift": result.dataset_drift,
        "drifted_features": sorted(d.feature for d in result.drift if d.drifted and d.kind == "feature"),
        "features": drift_evidence(result.drift),
    }
    if not label_free:  # see _evidence: label-based numbers only once the window is final
        evidence["metrics"] = {k: v for k, v in result.metrics.items() if "." not in k}
        evidence["label_coverage"] = result.label_coverage
    return evidence
