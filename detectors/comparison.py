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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from driftline.detectors import drift as drift_tests
from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.drift import DriftResult
from driftline.detectors.estimation import (
    DEFAULT_LEVEL,
    estimate_binary,
    estimate_class_probabilities,
    estimation_errors,
    multiclass_estimation_errors,
)
from driftline.detectors.label_lag import lag_metrics
from driftline.detectors.loss_model import estimate_regression
from driftline.detectors.metrics import (
    class_ranking_metrics,
    classification_metrics,
    probability_metrics,
    ranking_metrics,
    regression_metrics,
)
from driftline.detectors.multivariate import ReconstructionModel
from driftline.detectors.sketches import CalibratedScores, CategoricalSketch, NumericSketch, bin_index
from driftline.detectors.summaries import categorical_summary, coarse_cuts, numeric_summary
from driftline.schemas.results import (
    DistributionSummary,
    DriftKind,
    DriftTest,
    FeatureQuality,
    MultivariateDrift,
)

__all__ = [
    "Comparison",
    "Reference",
    "TestPolicy",
    "compare",
    "compare_many",
    "drift_evidence",
    "finite",
    "performance",
]


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
    """What drift is measured against: a reference profile file or bootstrapped windows.

    Numeric features keep their decile ``numeric_edges``/``numeric_counts`` (distances),
    their sample, exact moments ``(n, mean, std)`` and, from a profile, counts on the fine
    grid of quantiles the windows count on (``numeric_grids``/``numeric_grid_counts``): the
    whole-window tests. ``summaries`` caches the reference side of each entry's summary."""

    source: str
    numeric_samples: dict[str, np.ndarray] = field(default_factory=dict)
    numeric_counts: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    prediction_counts: dict[str, int] | None = None
    prediction_sample: np.ndarray | None = None
    label_counts: dict[str, int] | None = None
    label_sample: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    numeric_edges: dict[str, np.ndarray] = field(default_factory=dict)
    numeric_grids: dict[str, np.ndarray] = field(default_factory=dict)
    numeric_grid_counts: dict[str, np.ndarray] = field(default_factory=dict)
    numeric_moments: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    summaries: dict[str, DistributionSummary] = field(default_factory=dict)
    #: the PCA and band of multivariate drift fitted on the reference (a profile's; never a
    #: bootstrapped reference's, which has no rows to calibrate the band on)
    reconstruction: ReconstructionModel | None = None
    #: mean |attribution| per feature (None: the reference carried no attributions)
    attributions: dict[str, float] | None = None
    #: binary models: all predictions' raw scores counted on ``CalibratedScores``' grid
    score_counts: np.ndarray | None = None

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
            ref.numeric_edges[name] = sk.edges.copy()
            ref.numeric_moments[name] = (sk.n, sk.mean, sk.std)
            if sk.grid is not None:
                ref.numeric_grids[name] = sk.grid.copy()
                ref.numeric_grid_counts[name] = sk.grid_counts.copy()
        for name, ck in agg.categorical.items():
            ref.categorical[name] = dict(ck.counts)
        if agg.prediction_cat is not None:
            ref.prediction_counts = dict(agg.prediction_cat.counts)
        if agg.prediction_num is not None:
            ref.prediction_sample = agg.prediction_num.sample_values.copy()
        if agg.attributions:
            ref.attributions = agg.attributions.means()
        if agg.calibrated is not None and agg.calibrated.n:
            ref.score_counts = agg.calibrated.count.sum(axis=0)
        return ref

    @classmethod
    def from_profile(cls, profile: Any, source: str) -> Reference:
        """A reference from a :class:`~driftline.detectors.profile.ReferenceProfile`."""
        ref = cls(source)
        for name, feature in profile.features.items():
            if feature.kind == "numeric":
                ref.numeric_samples[name] = np.asarray(feature.sample, dtype=np.float64)
                ref.numeric_counts[name] = np.asarray(feature.counts, dtype=np.int64)
                ref.numeric_edges[name] = np.asarray(feature.edges, dtype=np.float64)
                ref.numeric_moments[name] = (int(feature.n), float(feature.mean), float(feature.std))
                if feature.grid is not None and feature.grid_counts is not None:
                    ref.numeric_grids[name] = np.asarray(feature.grid, dtype=np.float64)
                    ref.numeric_grid_counts[name] = np.asarray(feature.grid_counts, dtype=np.int64)
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
        ref.reconstruction = getattr(profile, "reconstruction", None)
        attributions = getattr(profile, "attributions", None)
        if attributions:
            ref.attributions = dict(attributions)
        scores = getattr(profile, "scores", None)
        if scores is not None:
            ref.score_counts = np.asarray(scores, dtype=np.int64)
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
    #: the window's multivariate drift, when it keeps moments and its reference fitted a PCA
    multivariate: MultivariateDrift | None = None


def compare(window: WindowAggregate, reference: Reference | None, policy: TestPolicy) -> Comparison:
    """Compare one merged window slice with its reference (None: still bootstrapping, so
    performance and data quality only)."""
    return compare_many([(window, reference, policy)])[0]


def compare_many(
    slices: Sequence[tuple[WindowAggregate, Reference | None, TestPolicy]],
) -> list[Comparison]:
    """:func:`compare` of many window slices (a window close: every slice of every model that
    closed together), with the KS p-values of all their whole-window tests computed in one
    vectorised call (``drift.ks_p_values``) instead of one scipy call per feature and slice.
    Each result is the one :func:`compare` gives the slice alone, bit for bit: the tests are
    the same element-wise functions, and the correction across a slice's features runs on
    its own tests once their p-values are in."""
    drafts = [_entries(w, r, p) if r is not None else [] for w, r, p in slices]
    _resolve_ks([e for entries in drafts for e in entries])
    return [_compare(w, r, p, entries) for (w, r, p), entries in zip(slices, drafts, strict=True)]


def _compare(
    window: WindowAggregate, reference: Reference | None, policy: TestPolicy, entries: list[_Entry]
) -> Comparison:
    drift = _drift(window, reference, policy, entries) if reference is not None else []
    features = [d for d in drift if d.kind == "feature"]
    share = sum(d.drifted for d in features) / len(features) if features else None
    dataset = None
    if share is not None:
        dataset = share > 0 if policy.share <= 0 else share >= policy.share
    metrics, intervals = _performance(window)
    metrics.update(lag_metrics(window.label_lag))  # not in _performance: no reference has a lag
    return Comparison(metrics, drift, share, dataset, _quality(window, reference), intervals,
                      DEFAULT_LEVEL if intervals else None, _multivariate(window, reference))


def _multivariate(window: WindowAggregate, reference: Reference | None) -> MultivariateDrift | None:
    """The window's reconstruction error against its reference's band. Both sides must read
    the same features in the same encoding (a segment's model is fitted in its model's)."""
    model = None if reference is None else reference.reconstruction
    moments = window.moments
    encodings = window.spec.moment_encodings
    if model is None or moments is None or encodings is None or model.encodings != encodings:
        return None
    found = model.evaluate(moments)
    spread = found.upper - found.reference_error
    exceedance = (found.error - found.reference_error) / spread if spread > 0 else math.nan
    return MultivariateDrift(
        method="pca_reconstruction",
        error=finite(found.error),
        lower=finite(found.lower),
        threshold=finite(found.upper),
        reference_error=found.reference_error,
        exceedance=finite(exceedance),
        drifted=found.alert,
        n=found.n,
        n_components=model.n_components,
        features=model.features,
        contributions={f: finite(v) for f, v in found.contributions.items()},
        drivers=list(found.drivers),
    )


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
    classes = agg.spec.class_calibrator
    if agg.class_probabilities is not None and classes is not None and agg.class_probabilities.n:
        found = estimate_class_probabilities(agg.class_probabilities, classes.classes,
                                             rankings=agg.class_rankings, n_reference=classes.fitted_rows)
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
    if agg.class_histograms is not None and classes is not None:
        out.update(class_ranking_metrics(agg.class_histograms, classes.classes))
    if agg.spec.task == "multiclass":
        out.update(multiclass_estimation_errors(out, out))
        return out, intervals
    out.update(estimation_errors(out, out, agg.spec.positive_label))
    return out, intervals


def finite(v: float | None) -> float | None:
    """A number strict JSON can carry: NaN and infinities become None."""
    return float(v) if v is not None and math.isfinite(v) else None


@dataclass(slots=True)
class _Entry:
    """One test's verdict with its effect size and both sides' summaries."""

    result: DriftResult
    kind: DriftKind
    distance: float | None = None
    distance_name: str | None = None
    reference: DistributionSummary | None = None
    window: DistributionSummary | None = None
    #: a whole-window KS test whose p-value is still to compute (:func:`_resolve_ks`): the
    #: sizes (n_ref, n_window); ``result`` holds its statistic and alpha meanwhile
    ks_sizes: tuple[float, float] | None = None


def _pending_ks(ref_counts: np.ndarray, cur_counts: np.ndarray, alpha: float, feature: str
                ) -> tuple[DriftResult, tuple[float, float] | None]:
    """``drift.ks_binned`` without its p-value: a placeholder result holding the statistic,
    and the sizes the p-value needs (None: a side is empty, the result is final)."""
    d, n1, n2 = drift_tests.ks_binned_statistic(ref_counts, cur_counts)
    if math.isnan(d):
        return drift_tests.ks_binned(ref_counts, cur_counts, alpha, feature=feature), None
    return DriftResult(feature, "ks", d, math.nan, alpha, False), (n1, n2)


def _resolve_ks(entries: Sequence[_Entry]) -> None:
    """Fill in the p-values of every pending KS test among ``entries``, in one call: the result
    is what ``drift.ks_binned`` gives each test alone (``tests/test_evaluation_batch.py``)."""
    pending = [e for e in entries if e.ks_sizes is not None]
    if not pending:
        return
    d = np.array([e.result.statistic for e in pending], dtype=np.float64)
    sizes = np.array([e.ks_sizes for e in pending], dtype=np.float64)
    p = drift_tests.ks_p_values(d, sizes[:, 0], sizes[:, 1]).tolist()
    for e, pi in zip(pending, p, strict=True):
        r = e.result
        e.result = DriftResult(r.feature, "ks", r.statistic, pi, r.threshold, bool(pi < r.threshold))
        e.ks_sizes = None


def _to_test(e: _Entry) -> DriftTest:
    r = e.result
    return DriftTest(
        feature=r.feature,
        kind=e.kind,
        test=r.test,
        statistic=finite(r.statistic),
        p_value=finite(r.p_value),
        threshold=float(r.threshold),
        drifted=bool(r.drifted),
        raw_p_value=finite(r.p_value if r.raw_p_value is None else r.raw_p_value),
        correction=r.correction,
        distance=finite(e.distance),
        distance_name=e.distance_name if e.distance is not None and math.isfinite(e.distance) else None,
        reference_summary=e.reference,
        window_summary=e.window,
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


def _categorical_entry(
    test: str, feature: str, kind: DriftKind, ref: Mapping[str, int], cur: CategoricalSketch,
    cache: dict[str, DistributionSummary], alpha: float,
) -> _Entry | None:
    result = _count_test(test, feature, ref, cur.counts, alpha)
    if result is None:
        return None
    if result.test == "psi":
        distance, dname = result.statistic, "psi"
    else:
        _, r, c = drift_tests.align_counts(ref, cur.counts)
        distance, dname = drift_tests.jensen_shannon(r, c).statistic, "jensen_shannon"
    key = f"{kind}:{feature}"
    if key not in cache:
        cache[key] = categorical_summary(ref)
    return _Entry(result, kind, distance, dname, cache[key], categorical_summary(cur.counts, cur.overflow))


def _std(x: np.ndarray) -> tuple[int, float, float]:
    return (int(x.size), float(np.mean(x)), float(np.std(x))) if x.size else (0, math.nan, math.nan)


def _numeric_entry(
    test: str, feature: str, kind: DriftKind, sk: NumericSketch, ref: Reference, ref_sample: np.ndarray,
    alpha: float,
) -> _Entry | None:
    """A numeric feature (or a regression model's predictions): the whole-window KS on the grid
    counts when the reference counted on the window's grid, else the configured count test on
    the decile bins, else the test on the bottom-k samples (bootstrapped references and
    profiles written before grids existed)."""
    if sk.n == 0 or ref_sample.size == 0:
        return None
    moments = ref.numeric_moments.get(feature) if kind == "feature" else None
    n_ref, mean_r, sd_r = moments if moments is not None else _std(ref_sample)
    grid = ref.numeric_grids.get(feature) if kind == "feature" else None
    gridded = grid is not None and sk.grid is not None and np.array_equal(grid, sk.grid)
    edges = ref.numeric_edges.get(feature) if kind == "feature" else None
    binned = (
        edges is not None
        and edges.size > 2
        and np.array_equal(edges, sk.edges)
        and feature in ref.numeric_counts
    )
    result: DriftResult | None
    ks_sizes: tuple[float, float] | None = None
    if test in drift_tests.COUNT_TESTS and binned:
        result = drift_tests.run_test(
            test, ref.numeric_counts[feature], sk.counts, feature=feature, alpha=alpha
        )
    elif test in ("", "ks") and gridded and min(n_ref, sk.n) >= drift_tests.MIN_SAMPLE:
        result, ks_sizes = _pending_ks(ref.numeric_grid_counts[feature], sk.grid_counts, alpha, feature)
    else:
        result = _sample_test(test, feature, ref_sample, sk.sample_values, alpha)
    if result is None:
        return None
    if result.test == "psi":
        distance, dname = result.statistic, "psi"
    else:
        if result.test == "wasserstein":
            w = result.statistic
        elif gridded and grid is not None:
            w = drift_tests.wasserstein_binned(
                grid, ref.numeric_grid_counts[feature], sk.grid_counts, sd_r
            )
        else:
            w = drift_tests.wasserstein_normed(ref_sample, sk.sample_values).statistic
        # W1 >= |mean difference| exactly; both means are exact, the binned/sampled W is not
        if sd_r > 0 and math.isfinite(sk.mean) and math.isfinite(mean_r):
            shift = abs(sk.mean - mean_r) / sd_r
            w = shift if math.isnan(w) else max(w, shift)
        distance, dname = w, "wasserstein_normed"
    if gridded and grid is not None:
        shown: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None] = (
            grid, ref.numeric_grid_counts[feature], sk.grid_counts
        )
    elif binned and edges is not None:
        shown = (edges, ref.numeric_counts[feature], sk.counts)
    else:
        shown = (None, None, None)
    shown_edges, ref_counts, cur_counts = shown
    cuts = None if ref_counts is None else coarse_cuts(ref_counts)
    key = f"{kind}:{feature}:{'grid' if gridded else 'edges' if binned else 'sample'}"
    if key not in ref.summaries:
        ref.summaries[key] = numeric_summary(
            n_ref, mean_r, sd_r, edges=shown_edges, counts=ref_counts, cuts=cuts, sample=ref_sample
        )
    window = numeric_summary(
        sk.n, sk.mean, sk.std, edges=shown_edges, counts=cur_counts, cuts=cuts, sample=sk.sample_values
    )
    return _Entry(result, kind, distance, dname, ref.summaries[key], window, ks_sizes)


def _score_entry(agg: WindowAggregate, ref: Reference, alpha: float) -> _Entry | None:
    """Binary models: the whole-window KS of all predictions' raw scores against the
    reference's, on the grid every window already counts them on (``CalibratedScores``: 400
    bins of the score's logit, fine where confident models put their scores), so the test costs
    no per-event work. Label-free, so it is complete at the provisional close. The distance is
    the normed Wasserstein on that grid (bins spread evenly, the reference sd from bin
    midpoints: both approximate at the grid's resolution); it is an entry of kind
    ``prediction`` named ``score``."""
    cal = agg.calibrated
    if cal is None or ref.score_counts is None or ref.score_counts.size != cal.n_bins:
        return None
    r, c = ref.score_counts, cal.count.sum(axis=0)
    if min(int(r.sum()), int(c.sum())) < drift_tests.MIN_SAMPLE:
        return None
    result, ks_sizes = _pending_ks(r, c, alpha, "score")
    edges = _score_edges(cal.n_bins)
    mid = (edges[:-1] + edges[1:]) / 2
    n_r, mean_r, sd_r = _binned_moments(mid, r)
    n_c, mean_c, sd_c = _binned_moments(mid, c)
    distance = drift_tests.wasserstein_binned(edges, r, c, sd_r) if sd_r > 0 else math.nan
    cuts = coarse_cuts(r)
    key = "prediction:score"
    if key not in ref.summaries:
        ref.summaries[key] = numeric_summary(n_r, mean_r, sd_r, edges=edges, counts=r, cuts=cuts)
    window = numeric_summary(n_c, mean_c, sd_c, edges=edges, counts=c, cuts=cuts)
    return _Entry(result, "prediction", distance, "wasserstein_normed", ref.summaries[key], window, ks_sizes)


def _score_edges(n_bins: int) -> np.ndarray:
    """``CalibratedScores``' bin edges as scores (uniform on the logit, the ends clipped)."""
    z = np.linspace(-CalibratedScores.LOGIT_RANGE, CalibratedScores.LOGIT_RANGE, n_bins + 1)
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _binned_moments(mid: np.ndarray, counts: np.ndarray) -> tuple[int, float, float]:
    n = int(counts.sum())
    if n == 0:
        return 0, math.nan, math.nan
    mean = float((mid * counts).sum() / n)
    return n, mean, float(np.sqrt(max(float((counts * (mid - mean) ** 2).sum() / n), 0.0)))


def _entries(agg: WindowAggregate, ref: Reference, policy: TestPolicy) -> list[_Entry]:
    """The window's label-free tests (features, predictions, scores), uncorrected; KS tests on
    counts are left pending for :func:`_resolve_ks`."""
    alpha = policy.alpha
    cache = ref.summaries
    entries: list[_Entry] = []
    for name in sorted(agg.numeric):
        if name not in ref.numeric_samples:
            continue
        test = policy.tests.get(name, "")
        entry = _numeric_entry(
            test, name, "feature", agg.numeric[name], ref, ref.numeric_samples[name], alpha
        )
        if entry is not None:
            entries.append(entry)
    for name in sorted(agg.categorical):
        if name not in ref.categorical:
            continue
        test = policy.tests.get(name, "")
        entry = _categorical_entry(
            test, name, "feature", ref.categorical[name], agg.categorical[name], cache, alpha
        )
        if entry is not None:
            entries.append(entry)
    if agg.prediction_cat is not None and ref.prediction_counts:
        entry = _categorical_entry(
            "", "prediction", "prediction", ref.prediction_counts, agg.prediction_cat, cache, alpha
        )
        if entry is not None:
            entries.append(entry)
    if agg.prediction_num is not None and ref.prediction_sample is not None:
        entry = _numeric_entry(
            "", "prediction", "prediction", agg.prediction_num, ref, ref.prediction_sample, alpha
        )
        if entry is not None:
            entries.append(entry)
    entry = _score_entry(agg, ref, alpha)
    if entry is not None:
        entries.append(entry)
    return entries


def _drift(
    agg: WindowAggregate, ref: Reference, policy: TestPolicy, entries: list[_Entry]
) -> list[DriftTest]:
    """Every test of the window, corrected as one family: the features' and the predictions'
    tests (``entries``, all label-free, complete at the provisional close) by
    ``policy.correction``; the label test, which exists only once labels arrive, by Bonferroni
    with that family's size plus one, so it never changes a label-free verdict already judged
    (docs/detectors.md)."""
    alpha = policy.alpha
    cache = ref.summaries
    if policy.correction != "none" and entries:
        corrected = drift_tests.correct([e.result for e in entries], policy.correction, alpha)
        for e, r in zip(entries, corrected, strict=True):
            e.result = r
    if agg.label_cat is not None and ref.label_counts and agg.label_cat.counts:
        entry = _categorical_entry("", "label", "label", ref.label_counts, agg.label_cat, cache, alpha)
        if entry is not None:
            if policy.correction != "none":
                entry.result = _bonferroni(entry.result, 1 + sum(_tested(e.result) for e in entries), alpha)
            entries.append(entry)
    return [_to_test(e) for e in entries]


def _tested(r: DriftResult) -> bool:
    return r.p_value is not None and math.isfinite(r.p_value)


def _bonferroni(r: DriftResult, m: int, alpha: float) -> DriftResult:
    if not _tested(r):
        return r
    assert r.p_value is not None
    q = min(1.0, r.p_value * m)
    return replace(r, p_value=q, raw_p_value=r.p_value, correction="bonferroni", threshold=alpha,
                   drifted=bool(q < alpha))


def drift_evidence(drift: Sequence[DriftTest]) -> list[dict[str, Any]]:
    """The drifted features, largest effect first, with the numbers behind each verdict: what
    alert and retraining evidence list. Distances of different names are not one scale (a
    normed Wasserstein is in standard deviations, Jensen-Shannon in [0, 1]); the order is by
    value, then by raw p-value, then by name, so it is deterministic."""
    drifted = [d for d in drift if d.drifted and d.kind == "feature"]
    drifted.sort(key=lambda d: (-(d.distance if d.distance is not None else -math.inf),
                                d.raw_p_value if d.raw_p_value is not None else math.inf, d.feature))
    return [
        {"feature": d.feature, "test": d.test, "distance": d.distance, "distance_name": d.distance_name,
         "p_value": d.p_value, "raw_p_value": d.raw_p_value}
        for d in drifted
    ]


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
