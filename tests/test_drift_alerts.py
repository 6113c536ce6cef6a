"""Drift alerts bounded over time (issue 14, item 2): the CUSUM of per-window drift evidence.

The claims of ``detectors/sequential.py`` measured over seeded windows that go through the
stream's path (``WindowAggregate.add_predictions``, ``compare``, ``Evaluator``), on the model of
``benchmarks/detection.py`` (4 numeric and 3 categorical features, 1000 predictions a window):

* the evidence is Simes' global p-value of the window's raw feature p-values (as scipy's BH
  gives it), features under their effect floor counting as p = 1;
* under no drift it is no larger than N(0, 1) in the upper tail, which is what carries the
  CUSUM's in-control run length of N(0, 1) increments over to the pipeline;
* a 0.2 sigma shift of one feature at 1000 predictions a window alerts within 3 windows in
  >= 95 % of trials, through the real Evaluator and the default rule;
* the statistic is fed once per window (re-evaluations and restores add nothing).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from driftline.detectors.comparison import Reference, TestPolicy, compare
from driftline.detectors.sequential import (
    CUSUM_H,
    CUSUM_K,
    DISTANCE_FLOORS,
    DriftCusum,
    siegmund_arl,
    window_evidence,
)
from driftline.schemas.results import DriftTest
from driftline.streams.evaluation import Evaluator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import detection as bench  # the benchmark's simulated model, shared on purpose

pytestmark = pytest.mark.timeout(300)


def _entry(p: float, distance: float, name: str = "wasserstein_normed", kind: str = "feature") -> DriftTest:
    return DriftTest(feature=f"f{p}", kind=kind, test="ks", statistic=0.1, p_value=min(1.0, p * 3),
                     threshold=0.05, drifted=False, raw_p_value=p, distance=distance, distance_name=name)


def test_window_evidence_is_simes_with_floors() -> None:
    ps = [0.001, 0.02, 0.3, 0.04]
    entries = [_entry(p, 0.5) for p in ps]
    simes = float(stats.false_discovery_control(np.array(ps)).min())
    assert window_evidence(entries) == pytest.approx(stats.norm.isf(simes))
    # the strongest p under its effect floor: it counts as p = 1
    floored = [_entry(0.001, DISTANCE_FLOORS["wasserstein_normed"] / 2), *entries[1:]]
    simes2 = float(stats.false_discovery_control(np.array([1.0, *ps[1:]])).min())
    assert window_evidence(floored) == pytest.approx(stats.norm.isf(simes2))
    # predictions and labels are not feature evidence; nothing tested gives None
    assert window_evidence([_entry(0.001, 1.0, kind="prediction")]) is None


def test_cusum_run_length_matches_siegmund_on_normal_evidence() -> None:
    """The approximation the threshold is documented with, on a fast case (h = 1): 400 seeded
    runs of N(0, 1) evidence; the mean run length is within 15 % of Siegmund's."""
    g = np.random.default_rng(3)
    lengths = []
    for _ in range(400):
        c, t = DriftCusum(k=CUSUM_K, cap=2.0), 0
        while c.value < 1.0:
            t += 1
            c.update(float(g.normal()))
        lengths.append(t)
    assert np.mean(lengths) == pytest.approx(siegmund_arl(CUSUM_K, 1.0), rel=0.15)
    assert siegmund_arl(CUSUM_K, CUSUM_H) > 5 * 8640  # > 5 slices x 30 days of 5-minute windows


@pytest.fixture(scope="module")
def null_evidence() -> np.ndarray:
    zs = []
    for r in range(2):
        g = np.random.default_rng([2026, r])
        cat = bench.catalog(g, True)
        refs = {k: Reference.from_profile(cat.profile(bench.MODEL, k), "file") for k in cat_segments()}
        for _ in range(150):
            for key, agg in bench.window_slices(cat, g, True).items():
                z = window_evidence(compare(agg, refs[key], TestPolicy()).drift)
                assert z is not None
                zs.append(z)
    return np.array(zs)


def cat_segments() -> list[str]:
    return ["", *(f"{dim}={v}" for dim, values in bench.DIMENSIONS.items() for v in values)]


@pytest.mark.parametrize("c", [1.0, 1.5, 2.0])
def test_stationary_evidence_is_no_larger_than_normal_in_the_tail(
    null_evidence: np.ndarray, c: float
) -> None:
    """1500 stationary window-slices (model and 4 segment slices, 2 references): P(z > c) is
    at most the normal tail plus 3 binomial standard deviations."""
    tail = float(stats.norm.sf(c))
    bound = tail + 3 * math.sqrt(tail * (1 - tail) / null_evidence.size)
    assert float(np.mean(null_evidence > c)) <= bound


def test_a_fifth_of_a_sigma_alerts_within_three_windows() -> None:
    """Issue 14, item 2: 0.2 sigma in one feature at 1000 predictions a window, default config,
    the real Evaluator: the dataset-drift alert fires within 3 windows in >= 95 % of 40 trials
    (2 references x 20), after 3 stationary windows that must not alert."""
    delays = bench.delays({"x_normal": 0.2 * bench.SIGMA["x_normal"]}, trials=40, references=2, seed=7,
                          warmup=3, horizon=3)
    assert np.mean([d is not None and d <= 3 for d in delays]) >= 0.95


def test_the_cusum_is_fed_once_per_window_and_survives_a_restore() -> None:
    g = np.random.default_rng(5)
    cat = bench.catalog(g, False)
    ev = Evaluator(cat)
    shift = {"x_normal": 0.2 * bench.SIGMA["x_normal"]}  # S stays under its cap (2h) for two windows
    aggs = [bench.window_slices(cat, g, False, shift)[""] for _ in range(3)]

    def judge(evaluator: Evaluator, w: int, phase: str = "provisional") -> float:
        start = w * bench.WINDOW_MS
        e = evaluator.evaluate(
            bench.MODEL, "v1", "", start, start + bench.WINDOW_MS, aggs[w], phase,  # type: ignore[arg-type]
            judge_label_free=phase == "provisional",
        )
        return e.values["drift_cusum"]

    first = judge(ev, 0)
    assert first > 0 and judge(ev, 0, "final") == first  # the final phase adds nothing
    snap = ev.snapshot()
    second = judge(ev, 1)
    restored = Evaluator(cat)
    restored.restore(snap)
    assert judge(restored, 1) == second
    old = {k: v for k, v in snap.items() if k != "cusum"}  # a snapshot from before the CUSUM
    fresh = Evaluator(cat)
    fresh.restore(old)
    assert judge(fresh, 1) < second
