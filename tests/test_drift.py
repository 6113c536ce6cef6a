"""Drift tests against scipy on the same samples, plus power / null behaviour."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from driftline.detectors import drift as d
from driftline.detectors.drift import DriftResult


@pytest.fixture(params=[0, 1, 2])
def samples(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(request.param)
    return rng.normal(size=300), rng.normal(0.2, 1.1, size=200)


@pytest.fixture(params=[0, 1, 2])
def counts(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(request.param)
    ref = rng.multinomial(1000, [0.1, 0.2, 0.3, 0.4, 0.0])
    cur = rng.multinomial(400, [0.15, 0.2, 0.25, 0.3, 0.1])
    return ref, cur


def test_sample_tests_equal_scipy(samples: tuple[np.ndarray, np.ndarray]) -> None:
    r, c = samples
    ks = stats.ks_2samp(r, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "p-value floored" on strong shifts
        ad = stats.anderson_ksamp([r, c], variant="midrank")
    cvm = stats.cramervonmises_2samp(r, c)
    for res, (stat, p), name in (
        (d.ks_test(r, c, feature="x"), (ks.statistic, ks.pvalue), "ks"),
        (d.anderson_darling(r, c), (ad.statistic, ad.pvalue), "anderson_darling"),
        (d.cramer_von_mises(r, c), (cvm.statistic, cvm.pvalue), "cramer_von_mises"),
    ):
        assert (res.test, res.statistic, res.p_value) == (name, stat, p)
        assert res.drifted == (p < 0.05)
    w = d.wasserstein_normed(r, c)
    assert w.statistic == stats.wasserstein_distance(r, c) / np.std(r) and w.p_value is None


def test_count_tests_equal_scipy(counts: tuple[np.ndarray, np.ndarray]) -> None:
    ref, cur = counts
    table = np.vstack([ref, cur])
    chi = stats.chi2_contingency(table)
    res = d.chi_square_test(ref, cur)
    assert (res.statistic, res.p_value) == (chi.statistic, chi.pvalue)
    p, q = ref / ref.sum(), cur / cur.sum()
    assert d.jensen_shannon(ref, cur).statistic == distance.jensenshannon(p, q, base=2)
    h = np.linalg.norm(np.sqrt(p) - np.sqrt(q)) / math.sqrt(2)  # the other textbook form
    assert d.hellinger(ref, cur).statistic == pytest.approx(h, abs=1e-12)
    pe, qe = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert d.psi(ref, cur).statistic == pytest.approx(float(np.sum((qe - pe) * np.log(qe / pe))), rel=1e-12)


def test_chi_square_drops_columns_empty_on_both_sides() -> None:
    ref, cur = np.array([10, 0, 30, 5]), np.array([12, 0, 20, 9])
    chi = stats.chi2_contingency(np.array([[10, 30, 5], [12, 20, 9]]))
    res = d.chi_square_test(ref, cur)
    assert (res.statistic, res.p_value) == (chi.statistic, chi.pvalue)
    # homogeneity, not goodness of fit: differs from chisquare(cur, expected from ref)
    gof = stats.chisquare(cur[cur + ref > 0], ref[cur + ref > 0] / ref.sum() * cur.sum())
    assert res.p_value != gof.pvalue


def test_binary_tests() -> None:
    ref, cur = np.array([70, 30]), np.array([40, 45])
    z = d.z_test_proportions(ref, cur)
    chi = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert z.statistic**2 == pytest.approx(chi.statistic, rel=1e-12)
    assert z.p_value == pytest.approx(chi.pvalue, rel=1e-9)
    assert z.statistic > 0  # current has the larger share of the second category
    f = d.fisher_exact_test(ref, cur)
    fe = stats.fisher_exact([[70, 30], [40, 45]])
    assert (f.statistic, f.p_value) == (fe.statistic, fe.pvalue)
    with pytest.raises(ValueError):
        d.z_test_proportions(np.array([1, 2, 3]), np.array([1, 2, 3]))


def test_strong_shift_is_flagged_null_mostly_not() -> None:
    rng = np.random.default_rng(7)
    flagged = {name: 0 for name in ("ks", "anderson_darling", "cramer_von_mises", "wasserstein")}
    trials = 40
    for _ in range(trials):
        r, c = rng.normal(size=500), rng.normal(size=500)
        for name in flagged:
            flagged[name] += d.run_test(name, r, c).drifted
    for name, k in flagged.items():
        assert k <= 6, (name, k)  # alpha = 0.05 -> ~2 of 40; wasserstein ~0.06 sd under the null
    r, c = rng.normal(size=500), rng.normal(1.0, 1.0, size=500)
    assert all(d.run_test(name, r, c).drifted for name in flagged)
    edges = np.quantile(r, np.linspace(0, 1, 11))
    rc = np.histogram(np.clip(r, edges[0], edges[-1]), edges)[0]
    cc = np.histogram(np.clip(c, edges[0], edges[-1]), edges)[0]
    count_tests = ("chi_square", "psi", "jensen_shannon", "hellinger")
    assert all(d.run_test(name, rc, cc).drifted for name in count_tests)
    cc_null = np.histogram(np.clip(rng.normal(size=500), edges[0], edges[-1]), edges)[0]
    assert not any(d.run_test(n, rc, cc_null).drifted for n in ("psi", "jensen_shannon", "hellinger"))


def test_undefined_cases_are_nan_not_errors() -> None:
    empty = np.array([], dtype=np.float64)
    assert math.isnan(d.ks_test(empty, np.ones(3)).statistic)
    r = d.chi_square_test(np.array([0, 0]), np.array([1, 2]))
    assert math.isnan(r.statistic) and not r.drifted
    assert d.chi_square_test(np.array([5, 0]), np.array([3, 0])).p_value == 1.0
    assert d.wasserstein_normed(np.ones(5), np.ones(5)).statistic == 0.0
    assert d.wasserstein_normed(np.ones(5), np.full(5, 2.0)).statistic == math.inf


def test_choose_test_rule() -> None:
    assert d.choose_test("numeric", 5000, 1024) == "ks"
    assert d.choose_test("numeric", 5000, 29) == "cramer_von_mises"
    assert d.choose_test("binary", 100, 100) == "z"
    assert d.choose_test("binary", 100, 10) == "fisher"
    assert d.choose_test("categorical", 10, 10) == "chi_square"
    with pytest.raises(ValueError):
        d.choose_test("text", 10, 10)
    assert {
        "ks", "anderson_darling", "cramer_von_mises", "wasserstein",
        "chi_square", "z", "fisher", "psi", "jensen_shannon", "hellinger"} == d.SAMPLE_TESTS | d.COUNT_TESTS
    assert d.run_test("psi", np.array([50, 50]), np.array([60, 40]), threshold=0.01).drifted
    with pytest.raises(ValueError):
        d.run_test("nope", np.ones(2), np.ones(2))


def _res(p: float | None, drifted: bool = False, stat: float = 1.0) -> DriftResult:
    return DriftResult("f", "ks" if p is not None else "psi", stat, p, 0.05, drifted)


def test_corrections() -> None:
    ps = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]
    results = [_res(p) for p in ps] + [_res(None, drifted=True)]
    bonf = d.correct(results, "bonferroni", 0.05)
    assert [r.p_value for r in bonf[:8]] == [min(1.0, p * 8) for p in ps]
    assert [r.drifted for r in bonf[:8]] == [True] + [False] * 7
    assert bonf[8] == results[8]
    # Benjamini-Hochberg by hand: q_(i) = min_{j >= i} p_(j) * m / j
    m = len(ps)
    expected = [min(ps[j] * m / (j + 1) for j in range(i, m)) for i in range(m)]
    bh = d.correct(results, "bh", 0.05)
    assert [r.p_value for r in bh[:8]] == pytest.approx(expected, rel=1e-12)
    assert [r.drifted for r in bh[:8]] == [q < 0.05 for q in expected]
    with pytest.raises(ValueError):
        d.correct(results, "holm")


def test_dataset_drift_and_to_dict() -> None:
    assert d.dataset_drift([_res(0.01, True), _res(0.5, False)], share=0.5)
    assert not d.dataset_drift([_res(0.01, True), _res(0.5), _res(0.6)], share=0.5)
    assert not d.dataset_drift([])
    r = DriftResult("f", "fisher", math.inf, 0.01, 0.05, True)
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False)) == {
        "feature": "f", "test": "fisher", "statistic": None, "p_value": 0.01, "threshold": 0.05,
        "drifted": True, "raw_p_value": None, "correction": None,
    }


_SHAPES = {
    "normal": lambda g, n: g.normal(10.0, 2.0, n),
    "lognormal": lambda g, n: g.lognormal(0.0, 1.0, n),
    "bimodal": lambda g, n: np.where(g.random(n) < 0.3, g.normal(-2, 0.5, n), g.normal(2, 1, n)),
    "discrete": lambda g, n: g.poisson(3.0, n).astype(np.float64),
}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_binned_ks_is_within_its_stated_bound_of_scipy_on_the_raw_values(shape: str) -> None:
    """Against ``scipy.stats.ks_2samp`` on the raw data, 60 seeded trials per shape, shifts 0 to
    0.3 sd, windows of 200 to 5000 on a 200-quantile grid of a 20000-row reference:
    D_raw - ks_binning_error <= D_binned <= D_raw, so the binned p-value is never below the raw
    statistic's (never more false alarms)."""
    from driftline.detectors.profile import quantile_edges
    from driftline.detectors.sketches import bin_index

    g = np.random.default_rng(sorted(_SHAPES).index(shape))
    draw = _SHAPES[shape]
    ref = draw(g, 20_000)
    grid = quantile_edges(ref, 200)
    rc = np.bincount(bin_index(grid, ref), minlength=grid.size - 1)
    worst = 0.0
    for trial in range(60):
        n = int(g.choice([200, 1000, 5000]))
        cur = draw(g, n) + float(g.choice([0.0, 0.1, 0.3])) * float(np.std(ref))
        cc = np.bincount(bin_index(grid, cur), minlength=grid.size - 1)
        binned, raw = d.ks_binned(rc, cc), stats.ks_2samp(ref, cur, method="asymp")
        bound = d.ks_binning_error(rc, cc)
        assert raw.statistic - bound - 1e-12 <= binned.statistic <= raw.statistic + 1e-12, trial
        assert binned.p_value >= d.ks_p_value(raw.statistic, ref.size, cur.size) - 1e-12
        assert d.ks_p_value(raw.statistic, ref.size, cur.size) == pytest.approx(raw.pvalue, abs=0.005)
        worst = max(worst, raw.statistic - binned.statistic)
    if shape != "discrete":  # continuous: the grid is fine, the loss is a fraction of a bin
        assert worst <= 0.01


def test_binned_ks_statistic_equals_scipy_when_bins_hold_single_values() -> None:
    """Integer data on a grid with one value per bin: binning loses nothing, so statistic and
    asymptotic p-value equal scipy's on the raw values."""
    g = np.random.default_rng(9)
    ref, cur = g.integers(0, 20, 3000).astype(float), g.integers(1, 21, 2000).astype(float)
    grid = np.arange(0.0, 22.0)
    from driftline.detectors.sketches import bin_index

    rc = np.bincount(bin_index(grid, ref), minlength=grid.size - 1)
    cc = np.bincount(bin_index(grid, cur), minlength=grid.size - 1)
    raw = stats.ks_2samp(ref, cur, method="asymp")
    got = d.ks_binned(rc, cc)
    assert got.statistic == pytest.approx(raw.statistic, abs=1e-12)
    assert got.p_value == pytest.approx(raw.pvalue, abs=0.005)


@pytest.mark.parametrize("n1, n2", [(60, 40), (400, 600), (20_000, 1000), (20_000, 5000), (10**5, 10**4)])
def test_ks_p_value_agrees_with_scipys_asymptotic_mode(n1: int, n2: int) -> None:
    """Within 0.005 everywhere and 4 % in the tail (p < 0.05), where verdicts are made."""
    en = n1 * n2 / (n1 + n2)
    for lam in np.linspace(0.3, 2.5, 23):
        dd = float(lam / math.sqrt(en))
        expected = float(stats.kstwo.sf(dd, round(en)))
        got = d.ks_p_value(dd, n1, n2)
        assert got == pytest.approx(expected, abs=0.005)
        if expected < 0.05:
            assert got == pytest.approx(expected, rel=0.04)


def test_binned_wasserstein_against_scipy_on_the_raw_values() -> None:
    from driftline.detectors.profile import quantile_edges
    from driftline.detectors.sketches import bin_index

    g = np.random.default_rng(11)
    ref = g.normal(0.0, 1.0, 20_000)
    grid = quantile_edges(ref, 200)
    rc = np.bincount(bin_index(grid, ref), minlength=grid.size - 1)
    for shift in (0.0, 0.1, 0.2, 0.5, 1.0):
        cur = g.normal(shift, 1.0, 5000)
        cc = np.bincount(bin_index(grid, cur), minlength=grid.size - 1)
        expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
        # within 0.01 sd, or 2 % where the tail bins (spread evenly up to the extremes) dominate
        got = d.wasserstein_binned(grid, rc, cc, float(np.std(ref)))
        assert got == pytest.approx(expected, abs=0.01, rel=0.02)
    assert d.wasserstein_binned(grid, rc, rc, 0.0) == 0.0


def test_corrected_results_keep_the_raw_p_value() -> None:
    results = [_res(0.01), _res(0.04), _res(0.2)]
    for method in ("bh", "bonferroni"):
        out = d.correct(results, method, 0.05)
        assert [r.raw_p_value for r in out] == [0.01, 0.04, 0.2]
        assert {r.correction for r in out} == {method}
        assert out[0].p_value == pytest.approx(0.03)


@pytest.mark.parametrize("module", ["drift"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"driftline.detectors.{module}"))
    assert result.attempted > 0 and result.failed == 0
