"""Integration-health decisions (detectors/integration.py), each with the exact window and, for
schema changes, the exact position of the first offending event."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from scipy import stats

from driftline.detectors import integration
from driftline.detectors.integration import (
    LabelWatch,
    SilenceWatch,
    VolumeWatch,
    schema_changes,
    schema_of,
    volume_band,
)

W = 60_000
T0 = 1_767_225_600_000


def _kinds(events) -> list[tuple[str, str, int]]:
    return [(e.kind, e.key, e.window_start_ms) for e in events]


def test_doctests() -> None:
    assert doctest.testmod(integration).failed == 0


def test_a_segment_value_silent_for_three_windows_is_named_at_the_third_and_once() -> None:
    watch = SilenceWatch(windows=3, window_ms=W)
    seen = []
    for i in range(9):
        counts = {"": 10, "channel=web": 7}
        if not 2 <= i <= 6:  # ios sends in windows 0, 1, 7, 8
            counts["channel=ios"] = 3
        seen += watch.update(T0 + i * W, counts)
    assert _kinds(seen) == [
        ("no_predictions", "channel=ios", T0 + 4 * W),
        ("predictions_resumed", "channel=ios", T0 + 7 * W),
    ]
    assert seen[0].detail == {"windows": 3, "since_ms": T0 + 2 * W}
    assert seen[1].detail == {"silent_windows": 5}


def test_windows_in_which_nothing_arrived_count_as_silent_and_the_event_names_the_skipped_window() -> None:
    """The stream never evaluates a window without events: windows 1..4 are never shown."""
    watch = SilenceWatch(windows=2, window_ms=W)
    assert watch.update(T0, {"": 5}) == []
    events = watch.update(T0 + 5 * W, {"": 5})
    assert _kinds(events) == [("no_predictions", "", T0 + 2 * W), ("predictions_resumed", "", T0 + 5 * W)]
    # a re-delivered or older window decides nothing again
    assert watch.update(T0 + 5 * W, {}) == []
    # the state survives a JSON round trip
    again = SilenceWatch.from_dict(json.loads(json.dumps(watch.to_dict())))
    assert _kinds(again.update(T0 + 7 * W, {})) == [("no_predictions", "", T0 + 7 * W)]


def test_an_expected_key_that_never_sends_is_silent_from_the_start() -> None:
    watch = SilenceWatch(windows=2, window_ms=W, expected=["model=fraud"])
    assert watch.update(T0, {}) == []
    assert _kinds(watch.update(T0 + W, {})) == [("no_predictions", "model=fraud", T0 + W)]


def test_the_volume_band_is_the_wider_of_the_robust_trend_and_the_poisson_quantiles() -> None:
    """Oracles: scipy's Theil-Sen line (its slope, then the median intercept) extrapolated one
    window, and the Qn scale of its residuals from every pairwise distance; a regular
    history falls back on scipy's Poisson quantiles at the extrapolated centre."""
    from itertools import combinations

    history = [1000, 1100, 900, 1050, 950, 980, 1020, 30, 1010, 1040]  # an outage in the history
    t = np.arange(len(history))
    slope = stats.theilslopes(history, t, method="separate").slope
    intercept = float(np.median(np.array(history) - slope * t))
    residuals = np.array(history) - intercept - slope * t
    distances = sorted(abs(a - b) for a, b in combinations(residuals.tolist(), 2))
    h = len(history) // 2 + 1
    qn = 2.2219 * distances[h * (h - 1) // 2 - 1] * len(history) / (len(history) + 3.8)
    centre = intercept + slope * len(history)
    low, high = volume_band(history, k=4.0, alpha=0.001)
    assert (low, high) == pytest.approx((centre - 4 * qn, centre + 4 * qn), rel=1e-12)
    regular = [500] * 10  # no spread: the band is Poisson's
    assert volume_band(regular, alpha=0.001) == (stats.poisson.ppf(5e-4, 500), stats.poisson.isf(5e-4, 500))
    rising = [500 + 10 * i for i in range(10)]  # a steady trend is followed, not flagged
    assert volume_band(rising, alpha=0.001) == (stats.poisson.ppf(5e-4, 600), stats.poisson.isf(5e-4, 600))


def test_volume_outside_the_learnt_band_is_named_at_its_window() -> None:
    rng = np.random.default_rng(4)
    watch = VolumeWatch(history=24, min_history=8)
    counts = [int(c) for c in rng.poisson(1000, size=20)]
    counts[12], counts[16] = 400, 2500
    events = []
    for i, c in enumerate(counts):
        events += watch.update(T0 + i * W, {"": c})
    assert _kinds(events) == [("volume_low", "", T0 + 12 * W), ("volume_high", "", T0 + 16 * W)]
    assert events[0].detail["count"] == 400
    # a key that disappears counts 0 against its history
    again = VolumeWatch.from_dict(json.loads(json.dumps(watch.to_dict())))
    assert _kinds(again.update(T0 + 20 * W, {"other": 3})) == [("volume_low", "", T0 + 20 * W)]


def test_volume_false_alarms_on_overdispersed_stationary_traffic_are_rare() -> None:
    """Negative-binomial counts (variance 5x the mean): 200 streams of 48 windows."""
    rng = np.random.default_rng(8)
    alarms = judged = 0
    for _ in range(200):
        watch = VolumeWatch(history=48, min_history=8)
        for i, c in enumerate(rng.negative_binomial(250, 0.2, size=48)):  # mean 1000, var 5000
            alarms += len(watch.update(T0 + i * W, {"": int(c)}))
            judged += i >= 8
    assert alarms / judged < 0.01, alarms / judged


def test_label_coverage_low_lag_high_and_falling_each_name_their_window() -> None:
    watch = LabelWatch(
        horizon_ms=3_600_000, expected_coverage=0.9, alpha=0.001, trend_windows=3, min_drop=0.05
    )
    series = [  # (predictions, labelled, p90 lag)
        (1000, 905, 600_000),
        (1000, 898, 600_000),
        (1000, 880, 2_900_000),  # lag above 0.8 of the horizon (2,880,000)
        (1000, 860, 1_000_000),  # below binom.ppf(0.001, 1000, 0.9); third fall, only 0.045 in all
        (1000, 850, 1_000_000),  # low; falling 0.048 since 0.898: not yet 0.05
        (1000, 700, 1_000_000),  # low; falling 0.18 since 0.880
    ]
    events = []
    for i, (n, labelled, lag) in enumerate(series):
        events += watch.update(T0 + i * W, "", n, labelled, lag)
    floor = int(stats.binom.ppf(0.001, 1000, 0.9))
    assert 860 < floor <= 880
    assert _kinds(events) == [
        ("label_lag_high", "", T0 + 2 * W),
        ("label_coverage_low", "", T0 + 3 * W),
        ("label_coverage_low", "", T0 + 4 * W),
        ("label_coverage_low", "", T0 + 5 * W),
        ("label_coverage_falling", "", T0 + 5 * W),
    ]
    assert events[1].detail["min_labelled"] == floor
    again = LabelWatch(
        horizon_ms=3_600_000, expected_coverage=0.9, alpha=0.001, trend_windows=3, min_drop=0.05
    )
    again.restore(json.loads(json.dumps(watch.to_dict())))
    assert _kinds(again.update(T0 + 6 * W, "", 1000, 600)) == [
        ("label_coverage_low", "", T0 + 6 * W),
        ("label_coverage_falling", "", T0 + 6 * W),
    ]


def test_schema_changes_name_the_first_offending_event_of_each() -> None:
    reference = [{"amount": 1.5, "country": "BR", "age": 30}, {"amount": 2, "country": "US", "age": None}]
    expected = schema_of(reference)
    assert expected == {
        "amount": frozenset({"number"}),
        "country": frozenset({"string"}),
        "age": frozenset({"number"}),
    }
    window = [
        {"amount": 3.0, "country": "BR", "age": 41},
        {"amount": 3.0, "country": "BR", "age": None},  # null is a missing value, not a change
        {"amount": "3.0", "country": "BR", "age": 40},  # type change at 2
        {"amount": 3.0, "country": "BR", "age": 22, "device": "ios"},  # new feature at 3
        {"amount": 1.0, "age": 50, "device": "web"},  # country missing at 4
        {"amount": "7", "age": 50, "device": "web"},
    ]
    offsets = [100, 101, 102, 103, 104, 105]
    events = schema_changes(expected, window, offsets, T0)
    assert [(e.kind, e.key, e.position, e.detail["events"]) for e in events] == [
        ("type_change", "amount", 102, 2),
        ("new_feature", "device", 103, 3),
        ("feature_missing", "country", 104, 2),
    ]
    assert events[0].detail == {"events": 2, "share": 2 / 6, "expected": ["number"], "got": "string"}
    assert all(e.window_start_ms == T0 for e in events)
    assert schema_changes(expected, reference, [0, 1], T0) == []
    with pytest.raises(ValueError, match="same length"):
        schema_changes(expected, window, offsets[:2], T0)


def test_every_health_event_kind_is_a_listed_name() -> None:
    from driftline.detectors.vocabulary import HEALTH_EVENTS

    assert integration.HEALTH_EVENTS is HEALTH_EVENTS  # one list, in the vocabulary
    with pytest.raises(ValueError, match="unknown health event kind 'volume_odd'"):
        integration.HealthEvent("volume_odd", "", T0)
