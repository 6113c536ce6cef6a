"""Drift tests of a current window against a reference.

Two families, one result type. *Hypothesis tests* (KS, chi-square, z, Fisher, Anderson-Darling,
Cramér-von Mises) answer "could both come from one distribution?" and flag drift when
``p < alpha``; on large samples they flag shifts too small to matter, which is why windows use
bounded samples. *Distances* (PSI, Jensen-Shannon, normed Wasserstein, Hellinger) measure how far
apart the distributions are and flag drift when ``statistic >= threshold``; ``p_value`` is None.

Sample tests take float arrays (the reference profile's sample and the window's bottom-k
sample); count tests take counts over the same bins or categories (:func:`align_counts` lines
up two category dicts). Undefined tests (an empty side) return NaN and ``drifted=False``.

>>> ref, cur = np.arange(100.0), np.arange(100.0) + 50
>>> r = ks_test(ref, cur, feature="age")
>>> r.test, r.statistic, r.drifted
('ks', 0.5, True)
>>> psi(np.array([50, 50]), np.array([50, 50])).drifted
False
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

__all__ = [
    "COUNT_TESTS",
    "SAMPLE_TESTS",
    "DriftResult",
    "align_counts",
    "anderson_darling",
    "chi_square_test",
    "choose_test",
    "correct",
    "cramer_von_mises",
    "dataset_drift",
    "fisher_exact_test",
    "hellinger",
    "jensen_shannon",
    "ks_binned",
    "ks_binned_statistic",
    "ks_binning_error",
    "ks_p_value",
    "ks_p_values",
    "ks_test",
    "psi",
    "run_test",
    "wasserstein_binned",
    "wasserstein_normed",
    "z_test_proportions",
]

PSI_EPS = 1e-4  # floor for empty-bin proportions, so PSI stays finite (Evidently's choice)
_NAN = math.nan


@dataclass(frozen=True, slots=True)
class DriftResult:
    """Verdict of one test on one feature. ``threshold`` is alpha for tests, the cut-off for
    distances. After :func:`correct`, ``p_value`` is the corrected p-value (the verdict's),
    ``raw_p_value`` the test's own and ``correction`` the method; before, both are None."""

    feature: str
    test: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    raw_p_value: float | None = None
    correction: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: non-finite numbers (strict JSON has none) become None."""

        def safe(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {"feature": self.feature, "test": self.test, "statistic": safe(self.statistic),
                "p_value": safe(self.p_value), "threshold": float(self.threshold),
                "drifted": bool(self.drifted), "raw_p_value": safe(self.raw_p_value),
                "correction": self.correction}


def _by_p(feature: str, test: str, statistic: float, p: float, alpha: float) -> DriftResult:
    statistic, p = float(statistic), float(p)
    return DriftResult(feature, test, statistic, p, alpha, bool(p < alpha))  # NaN < alpha is False


def _by_distance(feature: str, test: str, statistic: float, threshold: float) -> DriftResult:
    statistic = float(statistic)
    return DriftResult(feature, test, statistic, None, threshold, bool(statistic >= threshold))


def _samples(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    return r[~np.isnan(r)], c[~np.isnan(c)]


def _counts(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"counts must be 1-d over the same bins: {r.shape} vs {c.shape}")
    return r, c


def _proportions(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    r, c = _counts(ref, cur)
    if r.sum() <= 0 or c.sum() <= 0:
        return None
    return r / r.sum(), c / c.sum()


def align_counts(ref: Mapping[str, int], cur: Mapping[str, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Line up two category-count dicts on the sorted union of categories (missing = 0)."""
    cats = sorted(set(ref) | set(cur))
    return (cats, np.array([ref.get(c, 0) for c in cats], dtype=np.int64),
            np.array([cur.get(c, 0) for c in cats], dtype=np.int64))


# ---- sample tests (p-values) ----------------------------------------------------------------
def ks_test(ref_sample: np.ndarray, cur_sample: np.ndarray, alpha: float = 0.05, *,
            feature: str = "") -> DriftResult:
    """Two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``, two-sided, method auto)."""
    r, c = _samples(ref_sample, cur_sample)
    if r.size == 0 or c.size == 0:
        return _by_p(feature, "ks", _NAN, _NAN, alpha)
    res = stats.ks_2samp(r, c)
    return _by_p(feature, "ks", res.statistic, res.pvalue, alpha)


def anderson_darling(ref_sample: np.ndarray, cur_sample: np.ndarray, alpha: float = 0.05, *,
                     feature: str = "") -> DriftResult:
    """k-sample Anderson-Darling (``scipy.stats.anderson_ksamp``). Its p-value is interpolated
    from tables and capped to [0.001, 0.25]: fine for a verdict at usual alphas."""
    r, c = _samples(ref_sample, cur_sample)
    if r.size == 0 or c.size == 0 or np.unique(np.concatenate([r, c])).size < 2:
        return _by_p(feature, "anderson_darling", _NAN, _NAN, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "p-value capped/floored" is expected, not actionable
        res = stats.anderson_ksamp([r, c], variant="midrank")
    return _by_p(feature, "anderson_darling", res.statistic, res.pvalue, alpha)


def cramer_von_mises(ref_sample: np.ndarray, cur_sample: np.ndarray, alpha: float = 0.05, *,
                     feature: str = "") -> DriftResult:
    """Two-sample Cramér-von Mises (``scipy.stats.cramervonmises_2samp``; exact p for small samples)."""
    r, c = _samples(ref_sample, cur_sample)
    if r.size < 2 or c.size < 2:
        return _by_p(feature, "cramer_von_mises", _NAN, _NAN, alpha)
    res = stats.cramervonmises_2samp(r, c)
    return _by_p(feature, "cramer_von_mises", res.statistic, res.pvalue, alpha)


def ks_binned(ref_counts: np.ndarray, cur_counts: np.ndarray, alpha: float = 0.05, *,
              feature: str = "") -> DriftResult:
    """Two-sample Kolmogorov-Smirnov on counts over the same *ordered* bins: the whole window.

    The statistic is max |F_ref - F_cur| over the bins' upper edges, i.e. the raw KS statistic
    restricted to those points. Two properties follow (``tests/test_drift.py`` and
    ``tests/test_calibration.py`` check both against ``scipy.stats.ks_2samp`` on the raw data):

    * it is never above the raw statistic, so under no drift its p-value is never below the raw
      test's: the binned test is conservative (size <= alpha) however the bins were chosen;
    * it is below the raw statistic by at most :func:`ks_binning_error`, the largest share
      either side has in one bin (within a bin both ECDFs are monotone): about 1/200 on a grid
      of 200 reference quantiles, against a 0.1 sigma shift's 0.04.

    The p-value is :func:`ks_p_value`.
    """
    d, n1, n2 = ks_binned_statistic(ref_counts, cur_counts)
    return _by_p(feature, "ks", d, _NAN if math.isnan(d) else ks_p_value(d, n1, n2), alpha)


def ks_binned_statistic(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, float]:
    """:func:`ks_binned`'s statistic and both sizes, ``(d, n1, n2)``; d is NaN when a side is
    empty. Its p-value is :func:`ks_p_value`, or :func:`ks_p_values` for many at once."""
    r, c = _counts(ref_counts, cur_counts)
    n1, n2 = float(r.sum()), float(c.sum())
    if n1 <= 0 or n2 <= 0:
        return _NAN, n1, n2
    return float(np.max(np.abs(np.cumsum(r)[:-1] / n1 - np.cumsum(c)[:-1] / n2), initial=0.0)), n1, n2


_KSTWO_MAX_N = 500  # above it scipy's kstwo.sf costs milliseconds (a second at 10^6) per call


def ks_p_value(d: float, n1: float, n2: float) -> float:
    """Two-sided two-sample KS p-value of statistic ``d`` for sizes ``n1``, ``n2``.

    With en = n1·n2/(n1+n2): scipy's asymptotic mode, ``kstwo.sf(d, round(en))``, up to
    en = 500; above, Stephens' approximation ``kstwobign.sf((√en + 0.12 + 0.11/√en)·d)``
    (M. A. Stephens, JRSS B 32, 1970; Numerical Recipes 14.3), which costs microseconds where
    ``kstwo`` costs milliseconds: within 0.005 of it, and within 4 % of it below p = 0.05, from
    en = 500 on, closer as en grows (``tests/test_drift.py``).
    """
    return float(ks_p_values(np.array([d]), np.array([n1]), np.array([n2]))[0])


def ks_p_values(d: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """:func:`ks_p_value` of many statistics at once: one ``kstwo.sf`` and one
    ``kstwobign.sf`` call for all of them. scipy's distribution methods cost about a
    millisecond a call in argument checks whatever the array size, and a window close holds
    one KS test per numeric feature of every slice closing (issue 15); the values are the
    scalar ones, element by element (both are element-wise special functions)."""
    d = np.asarray(d, dtype=np.float64)
    n1 = np.asarray(n1, dtype=np.float64)
    n2 = np.asarray(n2, dtype=np.float64)
    en = n1 * n2 / (n1 + n2)
    out = np.empty(d.shape, dtype=np.float64)
    small = en <= _KSTWO_MAX_N
    if small.any():
        out[small] = stats.kstwo.sf(d[small], np.round(en[small]))
    large = ~small
    if large.any():
        root = np.sqrt(en[large])
        out[large] = stats.kstwobign.sf((root + 0.12 + 0.11 / root) * d[large])
    return np.clip(out, 0.0, 1.0)


def ks_binning_error(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """The most :func:`ks_binned`'s statistic can be below the raw KS statistic of the values
    the counts came from: the largest share of either side in one bin."""
    r, c = _counts(ref_counts, cur_counts)
    shares = [x.max() / x.sum() for x in (r, c) if x.sum() > 0]
    return float(max(shares, default=0.0))


# ---- count tests (p-values) -----------------------------------------------------------------
def chi_square_test(ref_counts: np.ndarray, cur_counts: np.ndarray, alpha: float = 0.05, *,
                    feature: str = "") -> DriftResult:
    """Chi-square test of homogeneity on the 2xk table (reference row, current row).

    Homogeneity, not goodness-of-fit: the reference is a sample too, so its noise counts.
    Categories empty on both sides are dropped (they carry no information and would make the
    expected counts zero). scipy's default Yates correction applies when only 2 columns remain.
    """
    r, c = _counts(ref_counts, cur_counts)
    table = np.vstack([r, c])
    table = table[:, table.sum(axis=0) > 0]
    if r.sum() <= 0 or c.sum() <= 0:
        return _by_p(feature, "chi_square", _NAN, _NAN, alpha)
    if table.shape[1] < 2:  # one category on both sides: identical distributions
        return _by_p(feature, "chi_square", 0.0, 1.0, alpha)
    res = stats.chi2_contingency(table)
    return _by_p(feature, "chi_square", res.statistic, res.pvalue, alpha)


def _binary(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, c = _counts(ref_counts, cur_counts)
    if r.size != 2:
        raise ValueError("binary tests need counts of exactly 2 categories")
    return r, c


def z_test_proportions(ref_counts: np.ndarray, cur_counts: np.ndarray, alpha: float = 0.05, *,
                       feature: str = "") -> DriftResult:
    """Two-sided pooled two-proportion z-test on the share of the second category.

    The statistic is z (current minus reference); z² equals the uncorrected 2x2 chi-square.
    """
    r, c = _binary(ref_counts, cur_counts)
    n1, n2 = r.sum(), c.sum()
    if n1 <= 0 or n2 <= 0:
        return _by_p(feature, "z", _NAN, _NAN, alpha)
    p1, p2 = r[1] / n1, c[1] / n2
    pooled = (r[1] + c[1]) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:  # both sides all one category: no difference
        return _by_p(feature, "z", 0.0, 1.0, alpha)
    z = (p2 - p1) / se
    return _by_p(feature, "z", z, 2.0 * stats.norm.sf(abs(z)), alpha)


def fisher_exact_test(ref_counts: np.ndarray, cur_counts: np.ndarray, alpha: float = 0.05, *,
                      feature: str = "") -> DriftResult:
    """Fisher's exact test on the 2x2 table (``scipy.stats.fisher_exact``, two-sided);
    the statistic is the sample odds ratio. Exact, so right for small counts."""
    r, c = _binary(ref_counts, cur_counts)
    if r.sum() <= 0 or c.sum() <= 0:
        return _by_p(feature, "fisher", _NAN, _NAN, alpha)
    res = stats.fisher_exact(np.vstack([r, c]).astype(np.int64))
    return _by_p(feature, "fisher", res.statistic, res.pvalue, alpha)


# ---- distances ------------------------------------------------------------------------------
def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, threshold: float = 0.2, *,
        feature: str = "", eps: float = PSI_EPS) -> DriftResult:
    """Population Stability Index Σ (c - r)·ln(c / r) over bin proportions.

    Smoothing: proportions below ``eps`` (default 1e-4) are raised to ``eps`` before the sum, so
    an empty bin on one side costs a large but finite amount. Rule of thumb: < 0.1 stable,
    0.1-0.2 moderate, >= 0.2 significant shift.
    """
    props = _proportions(ref_counts, cur_counts)
    if props is None:
        return _by_distance(feature, "psi", _NAN, threshold)
    r, c = (np.maximum(p, eps) for p in props)
    return _by_distance(feature, "psi", float(np.sum((c - r) * np.log(c / r))), threshold)


def jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray, threshold: float = 0.1, *,
                   feature: str = "") -> DriftResult:
    """Jensen-Shannon *distance* (square root of the divergence) with base-2 logs, so it lies in
    [0, 1]; ``scipy.spatial.distance.jensenshannon(p, q, base=2)``. No smoothing needed."""
    props = _proportions(ref_counts, cur_counts)
    if props is None:
        return _by_distance(feature, "jensen_shannon", _NAN, threshold)
    return _by_distance(feature, "jensen_shannon", float(distance.jensenshannon(*props, base=2)), threshold)


def hellinger(ref_counts: np.ndarray, cur_counts: np.ndarray, threshold: float = 0.1, *,
              feature: str = "") -> DriftResult:
    """Hellinger distance sqrt(1 - Σ sqrt(r·c)) over bin proportions, in [0, 1]."""
    props = _proportions(ref_counts, cur_counts)
    if props is None:
        return _by_distance(feature, "hellinger", _NAN, threshold)
    bc = float(np.sum(np.sqrt(props[0] * props[1])))
    return _by_distance(feature, "hellinger", math.sqrt(max(0.0, 1.0 - bc)), threshold)


def wasserstein_normed(ref_sample: np.ndarray, cur_sample: np.ndarray, threshold: float = 0.1, *,
                       feature: str = "") -> DriftResult:
    """Earth mover's distance in units of the reference standard deviation (population, ddof=0),
    so one threshold fits every feature's scale. A constant reference gives 0 if the current
    window matches it and inf otherwise."""
    r, c = _samples(ref_sample, cur_sample)
    if r.size == 0 or c.size == 0:
        return _by_distance(feature, "wasserstein", _NAN, threshold)
    d = float(stats.wasserstein_distance(r, c))
    sd = float(np.std(r))
    value = d / sd if sd > 0 else (0.0 if d == 0 else math.inf)
    return _by_distance(feature, "wasserstein", value, threshold)


def wasserstein_binned(edges: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray,
                       scale: float) -> float:
    """Earth mover's distance between two histograms on the same ``edges``, each bin's mass
    spread evenly over it, divided by ``scale`` (the reference standard deviation).

    ∫|F - G| with both CDFs piecewise linear between edges: exact per bin, including a bin
    where the CDFs cross. Resolution is the grid's; values outside the edges were counted in
    the end bins, so a shift past the reference range is under-stated (callers take the larger
    of this and the exact |Δmean|/scale, which never exceeds the true distance).
    """
    e = np.asarray(edges, dtype=np.float64)
    r, c = _counts(ref_counts, cur_counts)
    if r.sum() <= 0 or c.sum() <= 0:
        return _NAN
    diff = np.concatenate([[0.0], np.cumsum(r) / r.sum() - np.cumsum(c) / c.sum()])
    a, b = diff[:-1], diff[1:]
    width = np.diff(e)
    same = a * b >= 0
    total = np.abs(a) + np.abs(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = np.where(total > 0, (a * a + b * b) / (2.0 * total), 0.0)
    # math.fsum, not np.sum: numpy's SIMD pairwise sum rounds differently by CPU, and this
    # number must be the same on every worker's machine (and in the golden replay)
    area = math.fsum((width * np.where(same, total / 2.0, crossing)).tolist())
    if scale > 0:
        return area / scale
    return 0.0 if area == 0 else math.inf


# ---- choice, dispatch, corrections ----------------------------------------------------------
_TESTS: dict[str, tuple[Callable[..., DriftResult], str]] = {
    "ks": (ks_test, "alpha"),
    "anderson_darling": (anderson_darling, "alpha"),
    "cramer_von_mises": (cramer_von_mises, "alpha"),
    "wasserstein": (wasserstein_normed, "threshold"),
    "chi_square": (chi_square_test, "alpha"),
    "z": (z_test_proportions, "alpha"),
    "fisher": (fisher_exact_test, "alpha"),
    "psi": (psi, "threshold"),
    "jensen_shannon": (jensen_shannon, "threshold"),
    "hellinger": (hellinger, "threshold"),
}
SAMPLE_TESTS = frozenset({"ks", "anderson_darling", "cramer_von_mises", "wasserstein"})
COUNT_TESTS = frozenset(_TESTS) - SAMPLE_TESTS
MIN_SAMPLE = 30


def choose_test(kind: str, n_ref: int, n_cur: int) -> str:
    """Pick a default test from the feature kind and sample sizes.

    * ``numeric``: ``"ks"`` when both samples have >= 30 values; below that
      ``"cramer_von_mises"``, whose exact small-sample p-values are sharper than KS's.
    * ``binary`` (two categories, e.g. a bool feature or a binary prediction): ``"z"`` when both
      sides have >= 30 observations, else ``"fisher"`` (exact, so valid for small counts).
    * ``categorical``: ``"chi_square"`` (homogeneity on the 2xk table).

    Sizes are bounded by design (window bottom-k samples, profile samples), so p-value tests do
    not degenerate into flagging negligible shifts on millions of events.
    """
    small = min(n_ref, n_cur) < MIN_SAMPLE
    if kind == "numeric":
        return "cramer_von_mises" if small else "ks"
    if kind == "binary":
        return "fisher" if small else "z"
    if kind == "categorical":
        return "chi_square"
    raise ValueError(f"unknown feature kind {kind!r} (numeric, binary, categorical)")


def run_test(name: str, ref: np.ndarray, cur: np.ndarray, *, feature: str = "",
             alpha: float = 0.05, threshold: float | None = None) -> DriftResult:
    """Run test ``name``: samples for names in SAMPLE_TESTS, counts for COUNT_TESTS.
    ``threshold`` overrides a distance's default cut-off; tests use ``alpha``."""
    try:
        fn, kind = _TESTS[name]
    except KeyError:
        raise ValueError(f"unknown drift test {name!r}; known: {sorted(_TESTS)}") from None
    if kind == "alpha":
        return fn(ref, cur, alpha, feature=feature)
    if threshold is None:
        return fn(ref, cur, feature=feature)
    return fn(ref, cur, threshold, feature=feature)


def correct(results: Sequence[DriftResult], method: str = "bonferroni",
            alpha: float = 0.05) -> list[DriftResult]:
    """Adjust p-values for testing many features at once, and re-decide at ``alpha``.

    ``bonferroni`` (family-wise error: p·m) or ``bh`` (Benjamini-Hochberg false discovery rate,
    ``scipy.stats.false_discovery_control``). m counts results with a finite p-value; distance
    results and undefined tests pass through unchanged.
    """
    if method not in ("bonferroni", "bh"):
        raise ValueError(f"unknown correction {method!r} (bonferroni, bh)")
    idx = [i for i, r in enumerate(results) if r.p_value is not None and math.isfinite(r.p_value)]
    out = list(results)
    if not idx:
        return out
    p = np.array([results[i].p_value for i in idx], dtype=np.float64)
    adjusted = np.minimum(p * p.size, 1.0) if method == "bonferroni" else stats.false_discovery_control(p)
    for i, q in zip(idx, adjusted.tolist(), strict=True):
        out[i] = replace(results[i], p_value=q, threshold=alpha, drifted=bool(q < alpha),
                         raw_p_value=results[i].p_value, correction=method)
    return out


def dataset_drift(results: Sequence[DriftResult], share: float = 0.5) -> bool:
    """True when at least ``share`` of the features drifted (Evidently's dataset-drift rule)."""
    if not results:
        return False
    return sum(r.drifted for r in results) / len(results) >= share
