"""Window results: what driftline concluded about one window of one model slice.

Published on the ``window-results`` topic (JSON), stored as history, printed by the demo and
collected into the replay report. ``segment`` is ``{}`` for the whole model, or one
``{dimension: value}`` for a per-segment slice.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "AttributionDriftResult",
    "AttributionFeature",
    "DistributionSummary",
    "DriftKind",
    "DriftTest",
    "FeatureQuality",
    "MultivariateDrift",
    "OnlineDetection",
    "SegmentContribution",
    "WindowResult",
    "decode_window_result",
]

#: what a drift test compares with the reference: one feature, the predictions or the labels
DriftKind = Literal["feature", "prediction", "label"]


class DistributionSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What one side of a drift test looked like, so a reader can judge the size of a change.

    Numeric: ``count`` values, their exact mean and population standard deviation, quartiles
    read from the histogram on the reference's quantile edges (linear within a bin), and the
    histogram itself (``shares`` over ``edges``, coarsened to at most 20 bins). Categorical:
    ``count`` values and the shares of the (at most 10) most frequent categories in
    ``categories``. A side with no data has ``count`` 0 and nothing else.
    """

    count: int
    mean: float | None = None
    std: float | None = None
    q25: float | None = None
    median: float | None = None
    q75: float | None = None
    edges: list[float] = []
    shares: list[float] = []
    categories: dict[str, float] = {}


class DriftTest(msgspec.Struct, kw_only=True):
    """One drift test of one feature (or of the predictions or labels) against the reference.

    ``p_value`` is the *corrected* p-value, the one the verdict ``drifted`` compares with
    ``threshold`` (alpha); ``raw_p_value`` is the test's own and ``correction`` names the
    family-wise method applied (``"bh"``, ``"bonferroni"``; None when uncorrected). ``distance``
    is an effect size that does not grow with traffic: ``wasserstein_normed`` (earth mover's
    distance in reference standard deviations) for numeric data, ``jensen_shannon`` (base 2,
    in [0, 1]) for categorical data, ``psi`` when the test is PSI. The fields after
    ``drifted`` are newer than the contract: older results decode with them None/empty.
    """

    feature: str
    kind: DriftKind = "feature"
    test: str
    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool
    raw_p_value: float | None = None
    correction: str | None = None
    distance: float | None = None
    distance_name: str | None = None
    reference_summary: DistributionSummary | None = None
    window_summary: DistributionSummary | None = None


class FeatureQuality(msgspec.Struct, kw_only=True):
    """Data quality of one feature in one window (rates are shares of the window's events)."""

    missing_rate: float
    type_error_rate: float
    out_of_range_rate: float | None = None
    unseen_category_rate: float | None = None


class OnlineDetection(msgspec.Struct, kw_only=True):
    """A change found by an online detector (river) in the window's time-ordered error sample,
    stamped with the event time of the sampled event that triggered it."""

    detector: str
    signal: str
    time: str
    time_ms: int


class SegmentContribution(msgspec.Struct, kw_only=True):
    """One segment value's part in the whole model's change of a metric in one window
    (``detectors/segments.py``): ``contribution = labelled_share · (baseline - observed)``, sign
    flipped for metrics where higher is worse, so positive is always "made the model worse".

    ``baseline`` is the segment's own reference value of ``metric`` (the model's when the
    segment has none); ``low``/``high`` bound the contribution (Wilson, Bonferroni-corrected over
    the ranked segments; None for metrics that are not proportions); ``significant`` says the
    interval excludes 0 on the worse side; ``share_of_change`` is the contribution over the
    model's own change; ``support`` the segment's labelled predictions.
    """

    dimension: str
    value: str
    metric: str
    observed: float | None
    baseline: float
    labelled_share: float
    contribution: float | None
    low: float | None
    high: float | None
    share_of_change: float | None
    significant: bool
    support: int


class MultivariateDrift(msgspec.Struct, kw_only=True):
    """Multivariate drift of one window slice (``detectors/multivariate.py``): the mean squared
    error of reconstructing the window's standardised, encoded features from the principal
    components of the reference, against the band the reference's own errors give a window of
    this size. It sees a change in how features move together that no per-feature test sees.

    ``drifted`` when ``error`` leaves [``lower``, ``threshold``] (and ``n`` is at least the
    model's minimum); ``exceedance`` is ``(error - reference_error) / (threshold -
    reference_error)``: 0 at the reference, 1 at the threshold. ``contributions`` split
    ``error`` by feature; ``drivers`` are the features whose share rose above the reference's,
    largest rise first (empty unless drifted). ``error`` and the band are None for an empty
    window."""

    method: str
    error: float | None
    lower: float | None
    threshold: float | None
    reference_error: float
    exceedance: float | None
    drifted: bool
    n: int
    n_components: int
    features: list[str]
    contributions: dict[str, float | None]
    drivers: list[str]


class AttributionFeature(msgspec.Struct, kw_only=True):
    """One feature's mean absolute attribution in the window and in the reference, and its
    rank by it on each side (1 = the feature the model leans on most; a feature one side never
    attributed counts 0 there). ``rank_change`` is ``reference_rank - window_rank``: positive
    when the model leans on the feature more than it did. ``count`` is how many of the
    window's events sent an attribution for it."""

    feature: str
    window: float
    reference: float
    window_rank: int
    reference_rank: int
    rank_change: int
    count: int


class AttributionDriftResult(msgspec.Struct, kw_only=True):
    """Feature attribution drift (``detectors/attribution.py``): the nDCG of the window's
    ranking of mean |attribution| with the reference's means as relevance, and ``drifted``
    when it is below ``threshold`` (the model's ``attribution_threshold``, 0.9 by default as
    SageMaker Clarify). ``features`` lists every attributed feature, those whose rank moved
    most first (then by reference rank)."""

    ndcg: float
    threshold: float
    drifted: bool
    features: list[AttributionFeature]


class WindowResult(msgspec.Struct, kw_only=True):
    """The evaluation of one window slice. ``phase`` is ``provisional`` when event time passed
    the window's end plus grace (label-free results complete, labels may still come) and
    ``final`` when the label horizon passed too."""

    model_id: str
    model_version: str
    segment: dict[str, str]
    window_start: str
    window_end: str
    window_start_ms: int
    window_end_ms: int
    phase: Literal["provisional", "final"]
    prediction_count: int
    labelled_count: int
    label_coverage: float | None
    metrics: dict[str, float | None]
    drift: list[DriftTest]
    dataset_drift: bool | None
    drift_share: float | None
    reference: str
    data_quality: dict[str, FeatureQuality]
    #: online detections in this window; judged on labels, so empty until the final phase
    online: list[OnlineDetection] = []
    #: intervals of the label-free estimates: metric name -> [low, high], at ``interval_level``
    #: (e.g. 0.95); they cover the realised value at that rate while the calibration holds
    intervals: dict[str, list[float]] = {}
    interval_level: float | None = None
    #: the whole-model slice's segment values ranked by their contribution to the change of
    #: the model's headline metric (``detectors.vocabulary.SEGMENT_RANKING_METRIC``), worst
    #: first; empty for segment slices and until the window is final (it needs labels)
    segments_ranked: list[SegmentContribution] = []
    #: multivariate drift, for models with ``multivariate: true`` (None otherwise, and for a
    #: segment whose reference had too few rows to fit it)
    multivariate: MultivariateDrift | None = None
    #: attribution drift, when the window's events carried ``attributions`` and its reference
    #: has them too; None otherwise
    attribution: AttributionDriftResult | None = None


_decoder = msgspec.json.Decoder(WindowResult)


def decode_window_result(data: bytes) -> WindowResult:
    return _decoder.decode(data)
