"""A window against its reference: the one interface between the pipeline and the statistics.

The pipeline (``driftline.streams.evaluation``) decides *which* reference a window slice is
judged against and what to do with the verdict; this module decides *how* they compare. It
takes a merged :class:`~driftline.detectors.aggregates.WindowAggregate`, a :class:`Reference`
(arrays and counts) and a :class:`TestPolicy`, and returns one :class:`Comparison`: realised
and estimated performance, drift tests of every feature, of the predictions and of the labels,
and data quality. Nothing here knows about configuration files, Kafka or the store.

Test choice, decile binning for distances on samples, and the correction across features all
happen here, once, on :class:`~driftline.detectors.drift.DriftResult` values; each is turned
into the contract's :class:`~driftline.schemas.results.DriftTest` exactly once, at the end, so
a statistic of exactly 0.0 stays 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.detectors import drift as drift_tests
from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.drift import DriftResult
from driftline.detectors.estimation import DEFAULT_LEVEL, estimate_binary, estimation_errors
from driftline.detectors.loss_model import estimate_regression
from driftline.detectors.metrics import (
    classification_metrics,
    probability_metrics,
    ranking_metrics,
    regression_metrics,
)
from driftline.detectors.sketches import bin_index
from driftline.schemas.results import DriftKind, DriftTest, FeatureQuality

__all__ = ["Comparison", "Reference", "TestPolicy", "compare", "finite", "performance"]


@dataclass(frozen=True, slots=True)
class TestPolicy:
    """How drift is decided: the level, the correction across a window's features, the share
    of drifted features that makes dataset drift (0: any), and per-feature test overrides."""

    __test__ = False  # not a pytest test class, whatever its name

    alpha: float = 0.05
    correction: str = "bh"
    share: float = 0.0
    tests: Mapping[str, str] = field(default_factory=dict)


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
        """A reference from a :class:`~driftline.detectors.profile.ReferenceProfile`."""
        ref = cls(source)
        for name, feature in profile.features.items():
            if feature.kind == "numeric":
                ref.numeric_samples[name] = np.asarray(feature.sample, dtype=np.float64)
                ref.numeric_counts[name] = np.asarray(feature.counts, dtype=np.int64)
            else:
                ref.categorical[name] = {str(k): int(v) for k, v in feature.counts.items()}
        for part, kind in ((profile.prediction, "prediction"), (profile.label, "label")):
            if part is None:
                continue
            if part.kind == "numeric":
                sample = np.asarray(part.sample, dtype=np.float64)
                if kind == "prediction":
                    ref.prediction_sample = sample
                else:
                    ref.label_sample = sample
            else:
                counts = {str(k): int(v) for k, v in part.counts.items()}
                if kind == "prediction":
                    ref.prediction_counts = counts
                else:
                    ref.label_counts = counts
        ref.metrics = {k: float(v) for k, v in (profile.metrics or {}).items()}
        return ref


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything one window slice says against its reference."""

    #: realised metrics (once labelled) and label-free estimates; may hold NaN
    metrics: dict[str, float]
    #: feature tests (corrected across features), then prediction and label tests
    drift: list[DriftTest]
    #: share of the tested features that drifted; None when none could be tested
    drift_share: float | None
    dataset_drift: bool | None
    quality: dict[str, FeatureQuality]
    #: intervals of the label-free estimates (metric name -> (low, high)) at ``interval_level``
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    interval_level: float | None = None


def compare(window: WindowAggregate, reference: Reference | None, policy: TestPolicy) -> Comparison:
    """Compare one merged window slice with its reference (None: still bootstrapping, so
    performance and data quality only)."""
    drift = _drift(window, reference, policy) if reference is not None else []
    features = [d for d in drift if d.kind == "feature"]
    share = sum(d.drifted for d in features) / len(features) if features else None
    dataset = None
    if share is not None:
        dataset = share > 0 if policy.share <= 0 else share >= policy.share
    metrics, intervals = _performance(window)
    return Comparison(metrics, drift, share, dataset, _quality(window, reference), intervals,
                      DEFAULT_LEVEL if intervals else None)


def performance(agg: WindowAggregate) -> dict[str, float]:
    """Label-free estimates, and realised metrics once any outcome is labelled."""
    return _performance(agg)[0]


def _performance(agg: WindowAggregate) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The window's metrics (estimated; realised once labelled; ``estimation_error_<metric>``
    once both are there) and the estimates' intervals."""
    out: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    if agg.calibrated is not None and agg.expected is not None and agg.expected.n:
        calibrator = agg.spec.calibrator
        found = estimate_binary(agg.calibrated, expected=agg.expected,
                                n_reference=0 if calibrator is None else calibrator.fitted_rows)
        out.update(found.values)
        intervals = found.intervals
    loss_model = agg.spec.loss_model
    if agg.loss_bins is not None and loss_model is not None and agg.loss_bins.n:
        values, intervals = estimate_regression(agg.loss_bins.counts, loss_model, level=DEFAULT_LEVEL)
        out.update(values)
    if agg.n_labelled == 0:
        return out, intervals
    if agg.regression is not None:
        out.update(regression_metrics(agg.regression))
        out.update(estimation_errors(out, out, agg.spec.positive_label))
        return out, intervals
    if agg.confusion is not None:
        out.update(classification_metrics(agg.confusion))
    if agg.probability is not None and agg.probability.n:
        out.update(probability_metrics(agg.probability))
    if agg.score_histogram is not None and agg.probability is not None and agg.probability.n:
        out.update(ranking_metrics(agg.score_histogram))
    out.update(estimation_errors(out, out, agg.spec.positive_label))
    return out, intervals


def finite(v: float | None) -> float | None:
    """A number strict JSON can carry: NaN and infinities become None."""
    return float(v) if v is not None and math.isfinite(v) else None


def _to_test(r: DriftResult, kind: DriftKind) -> DriftTest:
    return DriftTest(
        feature=r.feature,
        kind=kind,
        test=r.test,
        statistic=finite(r.statistic),
        p_value=finite(r.p_value),
        threshold=float(r.threshold),
        drifted=bool(r.drifted),
    )


def _count_test(
    name: str, feature: str, ref: Mapping[str, int], cur: Mapping[str, int], alpha: float
) -> DriftResult | None:
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
    return drift_tests.run_test(test, r, c, feature=feature, alpha=alpha)


def _sample_test(
    name: str, feature: str, ref: np.ndarray, cur: np.ndarray, alpha: float
) -> DriftResult | None:
    if ref.size == 0 or cur.size == 0:
        return None
    test = name or drift_tests.choose_test("numeric", int(ref.size), int(cur.size))
    if test in drift_tests.COUNT_TESTS:
        # distances on a sample: bin both on the reference's deciles
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
        if edges.size < 2:
            edges = np.array([edges[0], edges[0]])
        k = edges.size - 1
        r = np.bincount(bin_index(edges, ref), minlength=k)
        c = np.bincount(bin_index(edges, cur), minlength=k)
        return drift_tests.run_test(test, r, c, feature=feature, alpha=alpha)
    return drift_tests.run_test(test, ref, cur, feature=feature, alpha=alpha)


def _drift(agg: WindowAggregate, ref: Reference, policy: TestPolicy) -> list[DriftTest]:
    alpha = policy.alpha
    features: list[DriftResult] = []
    for name in sorted(agg.numeric):
        sk = agg.numeric[name]
        if name not in ref.numeric_samples or sk.n == 0:
            continue
        test = policy.tests.get(name, "")
        if (
            test in drift_tests.COUNT_TESTS
            and name in ref.numeric_counts
            and ref.numeric_counts[name].size == sk.counts.size
        ):
            features.append(
                drift_tests.run_test(test, ref.numeric_counts[name], sk.counts, feature=name, alpha=alpha)
            )
            continue
        result = _sample_test(test, name, ref.numeric_samples[name], sk.sample_values, alpha)
        if result is not None:
            features.append(result)
    for name in sorted(agg.categorical):
        if name not in ref.categorical:
            continue
        tested = _count_test(
            policy.tests.get(name, ""), name, ref.categorical[name], agg.categorical[name].counts, alpha
        )
        if tested is not None:
            features.append(tested)
    if policy.correction != "none" and features:
        features = drift_tests.correct(features, policy.correction, alpha)
    out = [_to_test(r, "feature") for r in features]
    others: list[tuple[DriftResult | None, DriftKind]] = []
    if agg.prediction_cat is not None and ref.prediction_counts:
        others.append(
            (
                _count_test("", "prediction", ref.prediction_counts, agg.prediction_cat.counts, alpha),
                "prediction",
            )
        )
    if agg.prediction_num is not None and ref.prediction_sample is not None:
        others.append(
            (
                _sample_test(
                    "", "prediction", ref.prediction_sample, agg.prediction_num.sample_values, alpha
                ),
                "prediction",
            )
        )
    if agg.label_cat is not None and ref.label_counts and agg.label_cat.counts:
        others.append((_count_test("", "label", ref.label_counts, agg.label_cat.counts, alpha), "label"))
    out.extend(_to_test(r, kind) for r, kind in others if r is not None)
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
