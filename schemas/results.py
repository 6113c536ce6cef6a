"""Window results: what driftline concluded about one window of one model slice.

Published on the ``window-results`` topic (JSON), stored as history, printed by the demo and
collected into the replay report. ``segment`` is ``{}`` for the whole model, or one
``{dimension: value}`` for a per-segment slice.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "DriftKind",
    "DriftTest",
    "FeatureQuality",
    "OnlineDetection",
    "WindowResult",
    "decode_window_result",
]

#: what a drift test compares with the reference: one feature, the predictions or the labels
DriftKind = Literal["feature", "prediction", "label"]


class DriftTest(msgspec.Struct, kw_only=True):
    """One drift test of one feature (or of the predictions or labels) against the reference."""

    feature: str
    kind: DriftKind = "feature"
    test: str
    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool


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


_decoder = msgspec.json.Decoder(WindowResult)


def decode_window_result(data: bytes) -> WindowResult:
    return _decoder.decode(data)
