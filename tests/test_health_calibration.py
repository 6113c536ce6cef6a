"""The default integration-health thresholds against issue 14's bound: at most one false
alert per model per 30 days of 5-minute windows (8640), counting every slice (5: the model and
two segment dimensions of two values). Bonferroni-style, each check gets a share of that one
alert (volume half, each coverage check a quarter), so its false alarms per slice-window must
stay under share / (8640 * 5); and the same defaults still find a drop to half, at once.
The whole-pipeline numbers are benchmarks/health_alarms.py's (benchmarks/HEALTH.md).

Checked to fail: with the previous values (volume_k 4, volume_alpha and coverage_alpha 1e-3)
the volume test counts 31 false alarms (3 Poisson, 9 overdispersed, 19 daily) and the coverage
test 50 (33 low, 17 falling); with volume_k 20 the drop test misses 181-200 of 200 drops."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors.integration import LabelWatch, volume_band
from driftline.platform.config import HealthConfig

SLICE_WINDOWS = 8640 * 5
HISTORY = 48


def _segment_counts(rng: np.random.Generator, kind: str, n: int, share: float = 0.5) -> np.ndarray:
    """One slice's counts: ``share`` of the model's 1000 a window (a segment value: half)."""
    t = np.arange(n) + int(rng.integers(288))
    if kind == "poisson":
        model = rng.poisson(1000, n)
    elif kind == "overdispersed":  # negative binomial, variance 3x the mean
        model = rng.negative_binomial(500, 1 / 3, n)
    else:
        model = rng.poisson(1000 * (1 + 0.3 * np.sin(2 * np.pi * t / 288)))
    return rng.binomial(model, share)


def _alarms(counts: np.ndarray, p: HealthConfig) -> int:
    return sum(
        not lo <= counts[w] <= hi
        for w in range(HISTORY, counts.size)
        for lo, hi in [volume_band(counts[w - HISTORY : w].tolist(), k=p.volume_k, alpha=p.volume_alpha)]
    )


def test_default_volume_band_false_alarms_stay_within_the_monthly_budget() -> None:
    """14,400 slice-windows of each stationary kind (43,200 in all, a model's 30 days at 5
    slices): the budget is half an alert, so any more than 1 false alarm fails (a rate even
    4x the budget gives 2 or more with probability 0.6)."""
    p = HealthConfig()
    rng = np.random.default_rng(1714)
    alarms = {kind: _alarms(_segment_counts(rng, kind, 14_400 + HISTORY), p)
              for kind in ("poisson", "overdispersed", "diurnal")}
    assert sum(alarms.values()) <= 1, alarms


def test_default_label_coverage_checks_stay_within_the_monthly_budget() -> None:
    """Binomial coverage 0.9 at 500 predictions, 43,200 windows: label-coverage-low against
    the true coverage and label-coverage-falling, a quarter of an alert each."""
    p = HealthConfig()
    rng = np.random.default_rng(1715)
    watch = LabelWatch(
        3_600_000, expected_coverage=0.9, alpha=p.coverage_alpha, trend_windows=p.trend_windows,
        min_drop=p.min_drop, tolerance=p.coverage_tolerance,
    )
    kinds: dict[str, int] = {}
    for w, labelled in enumerate(rng.binomial(500, 0.9, SLICE_WINDOWS).tolist()):
        for e in watch.update(w, "", 500, labelled):
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
    assert sum(kinds.values()) <= 1, kinds


@pytest.mark.parametrize("kind", ["poisson", "overdispersed", "diurnal"])
def test_a_drop_to_half_is_found_within_two_windows_by_the_default_band(kind: str) -> None:
    """200 seeded histories per kind, of the model (1000 a window) and of a segment value
    (500): after 48 windows the volume halves, and one of the first two halved windows is
    out of the band of the 48 before it (the second's history holds the first, as the watch
    keeps it). The model's drop is found every time. A segment value of the overdispersed
    stream (variance 2x its mean) sits nearest the edge, 7.9 sd below its centre against a
    band of 6 estimated sd: a high spread estimate there misses about 1 in 400 twice."""
    p = HealthConfig()
    rng = np.random.default_rng(1716)
    missed = {1.0: 0, 0.5: 0}
    for _ in range(200):
        for share in missed:
            counts = _segment_counts(rng, kind, HISTORY + 2, share).astype(float)
            counts[HISTORY:] = np.round(counts[HISTORY:] * 0.5)
            found = False
            for w in (HISTORY, HISTORY + 1):
                lo, _hi = volume_band(counts[w - HISTORY : w].tolist(), k=p.volume_k, alpha=p.volume_alpha)
                found |= bool(counts[w] < lo)
            missed[share] += not found
    assert missed[1.0] == 0, missed
    assert missed[0.5] <= 2, missed
