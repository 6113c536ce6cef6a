"""What each side of a drift test looked like: the reference-versus-window summaries.

A p-value says whether a change is real, not whether it matters; at high traffic a trivial
change is "significant". Every drift entry therefore carries, besides a distance, a short
description of both sides (:class:`~driftline.schemas.results.DistributionSummary`): exact
count, mean and standard deviation, quartiles and a coarse histogram for numeric data, the top
category shares for categorical data. Everything here reads sketches that merge exactly, so a
summary is the same however a window's events were split over workers.

>>> s = categorical_summary({"a": 3, "b": 1})
>>> s.count, s.categories
(4, {'a': 0.75, 'b': 0.25})
>>> cuts = coarse_cuts(np.array([5, 5, 5, 5]), 2)
>>> cuts.tolist()
[0, 2, 4]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from driftline.schemas.results import DistributionSummary

__all__ = [
    "SUMMARY_BINS",
    "TOP_CATEGORIES",
    "categorical_summary",
    "coarse_cuts",
    "histogram_quantiles",
    "numeric_summary",
]

#: at most this many histogram bins in a summary (deciles of the reference's mass)
SUMMARY_BINS = 10
#: at most this many categories in a summary, the most frequent first
TOP_CATEGORIES = 10


def _f(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def coarse_cuts(ref_counts: np.ndarray, bins: int = SUMMARY_BINS) -> np.ndarray:
    """Indices into fine bins that group them into at most ``bins`` bins of about equal
    *reference* mass (first 0, last ``len(ref_counts)``): both sides of a test are shown on the
    same coarse bins, chosen from the reference alone."""
    r = np.asarray(ref_counts, dtype=np.float64)
    k = r.size
    if k <= bins or r.sum() <= 0:
        return np.arange(k + 1)
    cum = np.cumsum(r) / r.sum()
    inner = np.searchsorted(cum, np.arange(1, bins) / bins, side="left") + 1
    return np.unique(np.concatenate([[0], np.clip(inner, 1, k - 1), [k]]))


def histogram_quantiles(edges: np.ndarray, counts: np.ndarray, qs: tuple[float, ...]) -> list[float | None]:
    """Quantiles of a histogram, each bin's mass spread evenly over it (linear CDF between
    edges). Values outside the edges were counted in the end bins, so quantiles stay inside."""
    e = np.asarray(edges, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0 or e.size != c.size + 1:
        return [None for _ in qs]
    cdf = np.concatenate([[0.0], np.cumsum(c) / total])
    # np.interp needs increasing x: where a bin is empty the CDF is flat, take its right end
    out: list[float | None] = []
    for q in qs:
        i = int(np.clip(np.searchsorted(cdf, q, side="left"), 1, c.size))
        lo, hi = cdf[i - 1], cdf[i]
        frac = 0.0 if hi <= lo else (q - lo) / (hi - lo)
        out.append(_f(e[i - 1] + frac * (e[i] - e[i - 1])))
    return out


def numeric_summary(
    n: int,
    mean: float,
    std: float,
    *,
    edges: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    cuts: np.ndarray | None = None,
    sample: np.ndarray | None = None,
) -> DistributionSummary:
    """Exact count, mean and std; quartiles and shares from the histogram on ``edges`` (a
    reference-quantile grid) when there is one, quartiles from ``sample`` otherwise. ``cuts``
    (:func:`coarse_cuts` of the reference's counts) coarsens the shown histogram."""
    if n <= 0:
        return DistributionSummary(count=0)
    has_hist = (
        edges is not None and counts is not None and counts.size >= 2 and edges.size == counts.size + 1
        and counts.sum() > 0
    )
    q25 = med = q75 = None
    shown_edges: list[float] = []
    shares: list[float] = []
    if has_hist:
        assert edges is not None and counts is not None
        q25, med, q75 = histogram_quantiles(edges, counts, (0.25, 0.5, 0.75))
        idx = cuts if cuts is not None else coarse_cuts(counts)
        grouped = np.add.reduceat(counts, idx[:-1]) if idx.size > 1 else counts
        shown_edges = [float(x) for x in edges[idx]]
        shares = [float(x) for x in grouped / counts.sum()]
    elif sample is not None and sample.size:
        q25, med, q75 = (_f(float(v)) for v in np.quantile(sample, [0.25, 0.5, 0.75]))
    return DistributionSummary(
        count=int(n), mean=_f(mean), std=_f(std), q25=q25, median=med, q75=q75,
        edges=shown_edges, shares=shares,
    )


def categorical_summary(counts: Mapping[str, int], overflow: int = 0) -> DistributionSummary:
    """Count (kept categories plus overflow) and the shares of the most frequent categories."""
    total = int(sum(counts.values())) + int(overflow)
    if total <= 0:
        return DistributionSummary(count=0)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]
    return DistributionSummary(count=total, categories={k: v / total for k, v in top if v > 0})
