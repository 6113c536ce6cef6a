"""Segments ranked by their contribution to the model's change (detectors/segments.py).

Oracles: the metric recomputed from the rows (scikit-learn accuracy) for the exact
decomposition, scipy's Wilson interval (``binomtest(...).proportion_ci``) for the intervals.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score

from driftline.detectors import segments
from driftline.detectors.segments import SegmentStats, rank_segments, wilson_interval


def test_doctests() -> None:
    assert doctest.testmod(segments).failed == 0


def test_wilson_interval_is_scipys() -> None:
    for k, n, conf in [(0, 10, 0.95), (7, 10, 0.99), (412, 500, 0.95), (500, 500, 0.9)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
        z = stats.norm.isf((1 - conf) / 2)
        assert wilson_interval(k, n, z) == pytest.approx((ci.low, ci.high), rel=1e-12, abs=1e-15)


def _window(rng: np.random.Generator):
    """A window where country=BR (30 % of traffic) lost accuracy; the other values did not."""
    countries = rng.choice(["BR", "US", "DE"], size=4000, p=[0.3, 0.5, 0.2])
    channels = rng.choice(["ios", "web"], size=4000)
    accuracy = np.where(countries == "BR", 0.6, 0.9)
    correct = rng.random(4000) < accuracy
    y = rng.integers(0, 2, size=4000)
    pred = np.where(correct, y, 1 - y)
    return countries, channels, y, pred


def test_contributions_of_each_dimension_add_up_exactly_to_the_models_drop_and_name_br_first() -> None:
    rng = np.random.default_rng(12)
    countries, channels, y, pred = _window(rng)
    reference = 0.9
    stats_ = []
    for dim, column in (("country", countries), ("channel", channels)):
        for value in sorted(set(column.tolist())):
            mask = column == value
            stats_.append(
                SegmentStats(
                    f"{dim}={value}",
                    n=int(mask.sum()),
                    labelled=int(mask.sum()),
                    value=accuracy_score(y[mask], pred[mask]),
                )
            )
    model = accuracy_score(y, pred)
    ranked = rank_segments(stats_, reference=reference, current=model)
    assert ranked[0].key == "country=BR" and ranked[0].significant
    for dim in ("country", "channel"):
        total = sum(r.contribution for r in ranked if r.dimension == dim)
        assert total == pytest.approx(reference - model, abs=1e-12)
        assert sum(r.share_of_change for r in ranked if r.dimension == dim) == pytest.approx(1.0, abs=1e-9)
    br = ranked[0]
    n_br = int((countries == "BR").sum())
    assert br.weight == n_br / 4000 and br.traffic_share == n_br / 4000
    assert br.contribution == pytest.approx(n_br / 4000 * (0.9 - br.metric), rel=1e-12)
    # Bonferroni over the five ranked segments: z at 0.05 / 2 / 5
    z = stats.norm.isf(0.005)
    ci = stats.binomtest(round(br.metric * n_br), n_br).proportion_ci(confidence_level=0.99, method="wilson")
    assert z == pytest.approx(stats.norm.isf(0.01 / 2))
    assert (br.low, br.high) == pytest.approx(
        (br.weight * (0.9 - ci.high), br.weight * (0.9 - ci.low)), rel=1e-9
    )
    # BR's loss shows in both channels too (each holds about half of the drop), never in US or DE
    assert {r.key for r in ranked if r.significant} == {"country=BR", "channel=ios", "channel=web"}
    assert ranked[0].share_of_change > 0.9 and max(r.share_of_change for r in ranked[1:]) < 0.6


def test_exact_values_for_a_hand_built_window() -> None:
    stats_ = [
        SegmentStats("country=BR", n=200, labelled=100, value=0.5, drift=0.4),
        SegmentStats("country=US", n=300, labelled=300, value=0.8, reference=0.85),
        SegmentStats("country=FR", n=10, labelled=10, value=0.0),  # below min_support: not ranked
        SegmentStats("country=JP", n=90, labelled=0, value=None, drift=0.9),  # no labels yet
    ]
    ranked = rank_segments(stats_, reference=0.8, current=0.7, min_support=30, correction="none")
    assert [r.key for r in ranked] == ["country=BR", "country=US", "country=JP"]
    br, us, jp = ranked
    assert br.weight == 100 / 410 and br.traffic_share == 200 / 600
    assert br.change == pytest.approx(0.3) and br.contribution == pytest.approx(100 / 410 * 0.3)
    assert br.share_of_change == pytest.approx(100 / 410 * 0.3 / 0.1)
    assert us.baseline == 0.85 and us.change == pytest.approx(0.05)
    assert us.contribution == pytest.approx(300 / 410 * 0.05)
    assert jp.contribution is None and jp.drift == 0.9 and jp.support == 0
    lo, hi = wilson_interval(50, 100, stats.norm.isf(0.025))
    assert (br.low, br.high) == pytest.approx((100 / 410 * (0.8 - hi), 100 / 410 * (0.8 - lo)))


def test_for_an_error_metric_a_rise_is_the_drop_and_stderr_gives_the_interval() -> None:
    stats_ = [
        SegmentStats("region=eu", n=100, labelled=100, value=12.0, stderr=1.0),
        SegmentStats("region=us", n=100, labelled=100, value=10.0, stderr=1.0),
    ]
    ranked = rank_segments(
        stats_, reference=10.0, higher_is_better=False, proportion=False, correction="none"
    )
    assert [r.key for r in ranked] == ["region=eu", "region=us"]
    z = stats.norm.isf(0.025)
    assert ranked[0].contribution == pytest.approx(1.0)
    assert (ranked[0].low, ranked[0].high) == pytest.approx((0.5 * (2 - z), 0.5 * (2 + z)))
    assert ranked[0].share_of_change == pytest.approx(1.0)


def test_a_key_of_two_dimensions_is_refused() -> None:
    with pytest.raises(ValueError, match="one dimension"):
        rank_segments([SegmentStats("a=1&b=2", 1, 1, 1.0)], reference=1.0)
    assert rank_segments([], reference=1.0) == []
