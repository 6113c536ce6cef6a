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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.alerting.lifecycle import AlertTracker
from driftline.alerting.retraining import RetrainingPolicy
from driftline.alerting.rules import Rule
from driftline.catalog import ModelCatalog
from driftline.config import ModelConfig
from driftline.detectors import drift as drift_tests
from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.drift import DriftResult
from driftline.detectors.estimation import estimate_performance
from driftline.detectors.metrics import (
    classification_metrics,
    probability_metrics,
    ranking_metrics,
    regression_metrics,
)
from driftline.detectors.online import DETECTORS, Detection, OnlineDetector
from driftline.schemas import AlertEvent, RetrainingRequest, alert_event, retraining_request
from driftline.schemas.results import DriftTest, FeatureQuality, OnlineDetection, WindowResult
from driftline.schemas.timefmt import ms_to_rfc3339

__all__ = ["Evaluation", "Evaluator", "Reference", "online_kinds", "online_signal", "parse_segment"]

#: metrics that need labels: judged at the final phase, with the labelled count as samples
_LABEL_FREE_PREFIXES = ("drift.", "missing_rate.", "type_error_rate.", "out_of_range_rate.", "estimated_")
_LABEL_FREE = {"dataset_drift", "drift_share", "drifted_features", "prediction_count"}


def parse_segment(segment: str) -> dict[str, str]:
    """``""`` -> ``{}``; ``"country=DE"`` -> ``{"country": "DE"}``."""
    if not segment:
        return {}
    name, _, value = segment.partition("=")
    return {name: value}


def is_label_free(metric: str) -> bool:
    """Whether a metric is complete when predictions are (label drift is not)."""
    if metric.startswith("drift.label."):
        return False
    return metric in _LABEL_FREE or metric.startswith(_LABEL_FREE_PREFIXES)


@dataclass(slots=True)
class Reference:
    """What drift is measured against: a reference profile file or bootstrapped windows."""

    source: str
    numeric_samples: dict[str, np.ndarray] = field(default_factory=dict)
    numeric_counts: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    prediction_counts: dict[str, int] | None = None
    prediction_sample: np.ndarray | None = None
    label_counts: dict[str, int] | None = None
    label_sample: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_aggregate(
        cls, agg: WindowAggregate, samples: dict[str, list[np.ndarray]], source: str = "bootstrap"
    ) -> Reference:
        """A reference from a slice's first windows: merged counts, and the windows' samples
        *concatenated* (merging bottom-k samples would keep only k values; a larger reference
        sample keeps the false-alarm rate of later windows close to alpha)."""
        ref = cls(source)
        for name, sk in agg.numeric.items():
            ref.numeric_samples[name] = np.concatenate(samples.get(name) or [sk.sample_values])
            ref.numeric_counts[name] = sk.counts.copy()
        for name, ck in agg.categorical.items():
            ref.categorical[name] = dict(ck.counts)
        if agg.prediction_cat is not None:
            ref.prediction_counts = dict(agg.prediction_cat.counts)
        if agg.prediction_num is not None:
            ref.prediction_sample = agg.prediction_num.sample_values.copy()
        return ref

    @classmethod
    def from_profile(cls, profile: Any, source: str) -> Reference:
        ref = cls(source)
        for name, feature in profile.features.items():
            if feature.kind == "numeric":
                ref.numeric_samples[name] = np.asarray(feature.sample, dtype=np.float64)
                ref.numeric_counts[name] = np.asarray(feature.counts, dtype=np.int64)
            else:
                ref.categorical[name] = {str(k): int(v) for k, v in feature.counts.items()}
        for attr, counts_attr, sample_attr in (
            ("prediction", "prediction_counts", "prediction_sample"),
            ("label", "label_counts", "label_sample"),
        ):
            part = getattr(profile, attr, None)
            if part is None:
                continue
            if part.kind == "numeric":
                setattr(ref, sample_attr, np.asarray(part.sample, dtype=np.float64))
            else:
                setattr(ref, counts_attr, {str(k): int(v) for k, v in part.counts.items()})
        ref.metrics = {k: float(v) for k, v in (getattr(profile, "metrics", None) or {}).items()}
        return ref


@dataclass(slots=True)
class Evaluation:
    result: WindowResult
    values: dict[str, float]
    alerts: list[AlertEvent]
    requests: list[RetrainingRequest]


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
        self._file_refs: dict[tuple[str, str], Reference] = {}
        self._bootstrap: dict[tuple[str, str, str], _Bootstrap] = {}
        self._online: dict[tuple[str, str, str], _OnlineSlice] = {}

    # -- references ----------------------------------------------------------------------
    def reference(self, model_id: str, model_version: str, segment: str = "") -> Reference | None:
        """The slice's reference: its profile from the reference file, else what was learnt
        from the slice's own first windows."""
        ref = self._file_refs.get((model_id, segment))
        if ref is None:
            profile = self.catalog.profile(model_id, segment)
            if profile is not None:
                cfg = self.catalog.model(model_id)
                ref = self._file_refs[(model_id, segment)] = Reference.from_profile(
                    profile, f"file:{cfg.reference}"
                )
        if ref is not None:
            return ref
        boot = self._bootstrap.get((model_id, model_version, segment))
        return None if boot is None else boot.reference

    def _learn(self, key: tuple[str, str, str], start: int, agg: WindowAggregate, phase: str) -> None:
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
                boot.reference.metrics = _performance(boot.outcomes, cfg)

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
        phase: str,
        *,
        judge_label_free: bool,
    ) -> Evaluation:
        """Evaluate one window slice; ``judge_label_free`` is False for a final phase whose
        provisional phase already judged the label-free rules."""
        cfg = self.catalog.model(model_id)
        if self.catalog.has_reference(model_id):
            ref = self.reference(model_id, model_version, segment)
        else:
            key = (model_id, model_version, segment)
            self._learn(key, start, agg, phase)
            boot = self._bootstrap[key]
            # a window the reference is learnt from is never judged against it: whether the
            # reference was complete when such a window became final depends on how partitions'
            # progress interleaved, and results must not
            ref = None if start in boot.windows else boot.reference
        metrics = _performance(agg, cfg)
        n = agg.n_predictions
        coverage = agg.n_labelled / n if n else None
        drift = _drift(agg, ref, cfg) if ref is not None else []
        features_drift = [d for d in drift if d.kind == "feature"]
        drift_share = sum(d.drifted for d in features_drift) / len(features_drift) if features_drift else None
        dataset = None
        if drift_share is not None:
            dataset = drift_share > 0 if cfg.drift_share <= 0 else drift_share >= cfg.drift_share
        quality = _quality(agg, ref)
        values: dict[str, float] = {k: v for k, v in metrics.items() if v is not None}
        values.update(
            prediction_count=float(n),
            labelled_count=float(agg.n_labelled),
        )
        if coverage is not None:
            values["label_coverage"] = coverage
        if dataset is not None:
            values["dataset_drift"] = 1.0 if dataset else 0.0
            values["drift_share"] = float(drift_share or 0.0)
            values["drifted_features"] = float(sum(d.drifted for d in features_drift))
        for d in drift:
            prefix = f"drift.{d.feature}" if d.kind == "feature" else f"drift.{d.kind}"
            if d.statistic is not None:
                values[f"{prefix}.statistic"] = d.statistic
            if d.p_value is not None:
                values[f"{prefix}.p_value"] = d.p_value
        detections: list[Detection] = []
        if phase == "final":
            detections = self._detect((model_id, model_version, segment), start, agg, cfg)
            for kind in online_kinds(cfg):
                values[f"online.{kind}.detections"] = float(sum(d.detector == kind for d in detections))
        for name, q in quality.items():
            values[f"missing_rate.{name}"] = q.missing_rate
            values[f"type_error_rate.{name}"] = q.type_error_rate
            if q.out_of_range_rate is not None:
                values[f"out_of_range_rate.{name}"] = q.out_of_range_rate
        seg = parse_segment(segment)
        result = WindowResult(
            model_id=model_id,
            model_version=model_version,
            segment=seg,
            window_start=ms_to_rfc3339(start),
            window_end=ms_to_rfc3339(end),
            window_start_ms=start,
            window_end_ms=end,
            phase=phase,  # type: ignore[arg-type]
            prediction_count=n,
            labelled_count=agg.n_labelled,
            label_coverage=coverage,
            metrics={k: _finite(v) for k, v in sorted(metrics.items())},
            drift=drift,
            dataset_drift=dataset,
            drift_share=drift_share,
            reference=ref.source if ref is not None else "none (bootstrapping)",
            data_quality=quality,
            online=[
                OnlineDetection(
                    detector=d.detector, signal=d.signal, time=ms_to_rfc3339(d.time_ms), time_ms=d.time_ms
                )
                for d in detections
            ],
        )
        alerts, requests = self._judge(
            cfg,
            model_id,
            model_version,
            seg,
            start,
            end,
            values,
            agg,
            ref,
            result,
            phase=phase,
            judge_label_free=judge_label_free,
        )
        return Evaluation(result, values, alerts, requests)

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
        phase: str,
        judge_label_free: bool,
    ) -> tuple[list[AlertEvent], list[RetrainingRequest]]:
        alerts: list[AlertEvent] = []
        requests: list[RetrainingRequest] = []
        for rule in cfg.rules:
            label_free = is_label_free(rule.metric)
            if label_free and not judge_label_free:
                continue
            if not label_free and phase != "final":
                continue
            samples = agg.n_predictions if label_free or rule.metric == "label_coverage" else agg.n_labelled
            baseline = ref.metrics.get(rule.metric) if ref is not None else None
            evidence = _evidence(rule, result)
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
                        requests.append(retraining_request(request, source=self.source))
        return alerts, requests

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker.to_dict(),
            "retraining": self.retraining.to_dict(),
            "online": self.online_state(),
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
        return {**self.to_dict(), "bootstrap": boots}

    def restore(self, data: Mapping[str, Any]) -> None:
        self.tracker = AlertTracker.from_dict(data["tracker"])
        self.retraining = RetrainingPolicy.from_dict(data["retraining"])
        self._online = {}
        self.restore_online(data["online"])
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
                    boot.reference.metrics = _performance(boot.outcomes, cfg)
            self._bootstrap[(model_id, version, segment)] = boot


def _merged(base: WindowAggregate | None, agg: WindowAggregate) -> WindowAggregate:
    if base is None:
        base = WindowAggregate(agg.spec)
    base.merge(agg)
    return base


def _performance(agg: WindowAggregate, cfg: ModelConfig) -> dict[str, float]:
    out: dict[str, float] = {}
    if agg.expected is not None and agg.expected.n:
        out.update(estimate_performance(agg.expected))
    if agg.n_labelled == 0:
        return out
    if agg.regression is not None:
        out.update(regression_metrics(agg.regression))
        return out
    if agg.confusion is not None:
        out.update(classification_metrics(agg.confusion))
    if agg.probability is not None and agg.probability.n:
        out.update(probability_metrics(agg.probability))
    if agg.score_histogram is not None and agg.probability is not None and agg.probability.n:
        out.update(ranking_metrics(agg.score_histogram))
    return out


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _as_result(d: DriftTest) -> DriftResult:
    return DriftResult(d.feature, d.test, d.statistic or math.nan, d.p_value, d.threshold, d.drifted)


def _to_test(r: DriftResult, kind: str) -> DriftTest:
    return DriftTest(
        feature=r.feature,
        kind=kind,  # type: ignore[arg-type]
        test=r.test,
        statistic=_finite(r.statistic),
        p_value=None if r.p_value is None else _finite(r.p_value),
        threshold=float(r.threshold),
        drifted=bool(r.drifted),
    )


def _count_test(
    name: str, feature: str, ref: Mapping[str, int], cur: Mapping[str, int], cfg: ModelConfig, kind: str
) -> DriftTest | None:
    if not cur:
        return None
    _, r, c = drift_tests.align_counts(ref, cur)
    if r.sum() == 0 or c.sum() == 0:
        return None
    test = name or drift_tests.choose_test(
        "binary" if len(r) == 2 else "categorical", int(r.sum()), int(c.sum())
    )
    if test in drift_tests.SAMPLE_TESTS:
        test = "chi_square"
    return _to_test(drift_tests.run_test(test, r, c, feature=feature, alpha=cfg.drift_alpha), kind)


def _sample_test(
    name: str, feature: str, ref: np.ndarray, cur: np.ndarray, cfg: ModelConfig, kind: str
) -> DriftTest | None:
    if ref.size == 0 or cur.size == 0:
        return None
    test = name or drift_tests.choose_test("numeric", int(ref.size), int(cur.size))
    if test in drift_tests.COUNT_TESTS:
        # distances on a sample: bin both on the reference's deciles
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
        if edges.size < 2:
            edges = np.array([edges[0], edges[0]])
        from driftline.detectors.sketches import bin_index

        k = edges.size - 1
        r = np.bincount(bin_index(edges, ref), minlength=k)
        c = np.bincount(bin_index(edges, cur), minlength=k)
        return _to_test(drift_tests.run_test(test, r, c, feature=feature, alpha=cfg.drift_alpha), kind)
    return _to_test(drift_tests.run_test(test, ref, cur, feature=feature, alpha=cfg.drift_alpha), kind)


def _drift(agg: WindowAggregate, ref: Reference, cfg: ModelConfig) -> list[DriftTest]:
    out: list[DriftTest] = []
    for name in sorted(agg.numeric):
        sk = agg.numeric[name]
        if name not in ref.numeric_samples or sk.n == 0:
            continue
        test = cfg.drift_tests.get(name, "")
        if (
            test in drift_tests.COUNT_TESTS
            and name in ref.numeric_counts
            and ref.numeric_counts[name].size == sk.counts.size
        ):
            r, c = ref.numeric_counts[name], sk.counts
            out.append(
                _to_test(drift_tests.run_test(test, r, c, feature=name, alpha=cfg.drift_alpha), "feature")
            )
            continue
        result = _sample_test(test, name, ref.numeric_samples[name], sk.sample_values, cfg, "feature")
        if result is not None:
            out.append(result)
    for name in sorted(agg.categorical):
        if name not in ref.categorical:
            continue
        result = _count_test(
            cfg.drift_tests.get(name, ""),
            name,
            ref.categorical[name],
            agg.categorical[name].counts,
            cfg,
            "feature",
        )
        if result is not None:
            out.append(result)
    if cfg.drift_correction != "none" and out:
        corrected = drift_tests.correct([_as_result(d) for d in out], cfg.drift_correction, cfg.drift_alpha)
        out = [_to_test(r, "feature") for r in corrected]
    if agg.prediction_cat is not None and ref.prediction_counts:
        result = _count_test(
            "", "prediction", ref.prediction_counts, agg.prediction_cat.counts, cfg, "prediction"
        )
        if result is not None:
            out.append(result)
    if agg.prediction_num is not None and ref.prediction_sample is not None:
        result = _sample_test(
            "", "prediction", ref.prediction_sample, agg.prediction_num.sample_values, cfg, "prediction"
        )
        if result is not None:
            out.append(result)
    if agg.label_cat is not None and ref.label_counts and agg.label_cat.counts:
        result = _count_test("", "label", ref.label_counts, agg.label_cat.counts, cfg, "label")
        if result is not None:
            out.append(result)
    return out


def _quality(agg: WindowAggregate, ref: Reference | None) -> dict[str, FeatureQuality]:
    n = agg.n_predictions
    out: dict[str, FeatureQuality] = {}
    if n == 0:
        return out
    names = set(agg.present) | set(agg.type_errors) | set(agg.numeric) | set(agg.categorical)
    if ref is not None:
        names |= set(ref.numeric_samples) | set(ref.categorical)
    for name in sorted(names):
        missing = 1.0 - agg.present.get(name, 0) / n
        type_errors = agg.type_errors.get(name, 0) / n
        out_of_range = None
        unseen = None
        sk = agg.numeric.get(name)
        if (
            sk is not None
            and ref is not None
            and name in ref.numeric_samples
            and ref.numeric_samples[name].size
        ):
            lo, hi = float(ref.numeric_samples[name].min()), float(ref.numeric_samples[name].max())
            sample = sk.sample_values
            if sample.size:
                out_of_range = float(((sample < lo) | (sample > hi)).mean())
        ck = agg.categorical.get(name)
        if ck is not None and ref is not None and name in ref.categorical:
            known = ref.categorical[name]
            seen = sum(ck.counts.values()) + ck.overflow
            if seen:
                unseen = (sum(v for k, v in ck.counts.items() if k not in known) + ck.overflow) / seen
        out[name] = FeatureQuality(
            missing_rate=max(0.0, missing),
            type_error_rate=type_errors,
            out_of_range_rate=out_of_range,
            unseen_category_rate=unseen,
        )
    return out


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
    return evidence


def _request_evidence(result: WindowResult, *, label_free: bool) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "dataset_drift": result.dataset_drift,
        "drifted_features": sorted(d.feature for d in result.drift if d.drifted and d.kind == "feature"),
    }
    if not label_free:  # see _evidence: label-based numbers only once the window is final
        evidence["metrics"] = {k: v for k, v in result.metrics.items() if "." not in k}
        evidence["label_coverage"] = result.label_coverage
    return evidence
