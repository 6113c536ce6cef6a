"""Which segments the model's change comes from: every value of every dimension, ranked.

A window already has one slice per segment value (``country=BR``, ``channel=ios``), each with
its metric. What an alert needs is the ranking: where did the accuracy go? A segment's
*contribution* is its share of the window's labelled events times its drop against the
baseline,

    contribution_s = w_s · (baseline - metric_s),   w_s = labelled_s / labelled_total

and for a metric that is a mean over labelled events (accuracy, error rates, MAE) with the
model's reference value as the baseline, the contributions of one dimension's values add up
*exactly* to the model's own drop: ``Σ_s w_s (ref - m_s) = ref - Σ_s w_s m_s = ref - m``. So
"80 % of the drop is in country=BR" is a decomposition, not a heuristic. With the segment's own
reference as its baseline (``SegmentStats.reference``) the contribution is the drop *within*
the segment, and the rest of the model's drop is a change of mix.

Each contribution carries an interval: Wilson's for a proportion metric (accuracy), the normal
one from a standard error otherwise, at ``alpha`` shared by every ranked segment (Bonferroni),
because a ranking that names "the worst segment" is a test over all of them; a segment with
fewer than ``min_support`` labelled events is not ranked at all, since with a handful of labels
the worst segment is nearly always a small one by chance. Segments without labels yet (the
provisional phase) are ranked after, by their drift effect.

>>> stats = [SegmentStats("country=BR", n=300, labelled=300, value=0.70),
...          SegmentStats("country=US", n=700, labelled=700, value=0.90)]
>>> [(s.key, round(s.contribution, 3), round(s.share_of_change, 2))
...  for s in rank_segments(stats, reference=0.9)]
[('country=BR', 0.06, 1.0), ('country=US', 0.0, 0.0)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scipy import stats as _stats

from driftline.schemas.windows import parse_segment_key

__all__ = ["RankedSegment", "SegmentStats", "rank_segments", "wilson_interval"]


@dataclass(frozen=True, slots=True)
class SegmentStats:
    """One segment value's numbers in a window (what its slice already carries)."""

    key: str  # slice key, "country=BR"
    n: int  # predictions in the window
    labelled: int  # labelled predictions: the metric's support
    value: float | None  # the segment's metric in the window (None: no labels yet)
    reference: float | None = None  # the segment's own reference metric; None: the model's
    stderr: float | None = None  # for a metric that is not a proportion
    drift: float | None = None  # the segment's drift effect (the caller's: e.g. drifted share)
    #: labelled events behind ``reference``; given, a proportion's interval is Newcombe's for
    #: the difference of two proportions, since the reference is a sample too
    reference_n: int | None = None


@dataclass(frozen=True, slots=True)
class RankedSegment:
    key: str
    dimension: str
    value: str
    traffic_share: float  # n / the window's predictions
    weight: float  # labelled / the window's labelled predictions
    metric: float | None
    baseline: float
    change: float | None  # the segment's drop against its baseline (positive = worse)
    contribution: float | None
    low: float | None  # interval of the contribution
    high: float | None
    share_of_change: float | None  # contribution / the model's drop
    significant: bool  # the interval excludes 0 on the worse side
    support: int
    drift: float | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def wilson_interval(successes: float, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion; good at small n and near 0 or 1, where the
    normal interval leaves [0, 1]."""
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _newcombe(p_ref: float, n_ref: int, p: float, n: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for ``p_ref - p`` from the two
    Wilson intervals: both sides are samples, the window's and the reference's."""
    l1, u1 = wilson_interval(p_ref * n_ref, n_ref, z)
    l2, u2 = wilson_interval(p * n, n, z)
    d = p_ref - p
    return d - math.hypot(p_ref - l1, u2 - p), d + math.hypot(u1 - p_ref, p - l2)


def _dimension(key: str) -> tuple[str, str]:
    parts = parse_segment_key(key)
    if len(parts) != 1:
        raise ValueError(f"segment key {key!r} must name one dimension")
    ((dim, value),) = parts.items()
    return dim, value


def rank_segments(
    segments: Sequence[SegmentStats],
    *,
    reference: float,
    current: float | None = None,
    higher_is_better: bool = True,
    proportion: bool = True,
    min_support: int = 30,
    alpha: float = 0.05,
    correction: Literal["bonferroni", "none"] = "bonferroni",
) -> list[RankedSegment]:
    """Segments ranked by contribution to the model's drop, largest first (ties by key).

    ``reference`` is the model's reference metric (the baseline of segments without their
    own); ``current`` the model's metric in the window (default: the labelled-weighted mean of
    the segments of the first dimension, which it equals for a mean metric). Totals are taken
    per dimension: every event is in exactly one value of each dimension.
    """
    if not segments:
        return []
    dims = {key: _dimension(key) for key in (s.key for s in segments)}
    totals: dict[str, list[int]] = {}
    for s in segments:
        t = totals.setdefault(dims[s.key][0], [0, 0])
        t[0] += s.n
        t[1] += s.labelled
    ranked_count = sum(1 for s in segments if s.value is not None and s.labelled >= min_support)
    tail = alpha / 2 / (ranked_count if correction == "bonferroni" and ranked_count else 1)
    z = float(_stats.norm.isf(tail))
    sign = 1.0 if higher_is_better else -1.0
    if current is None:
        first = dims[segments[0].key][0]
        labelled = [
            (s.labelled, s.value) for s in segments if dims[s.key][0] == first and s.value is not None
        ]
        total = sum(n for n, _ in labelled)
        current = sum(n * v for n, v in labelled) / total if total else None
    model_drop = sign * (reference - current) if current is not None else None
    out = []
    for s in segments:
        dim, value = dims[s.key]
        n_total, labelled_total = totals[dim]
        baseline = reference if s.reference is None else s.reference
        weight = s.labelled / labelled_total if labelled_total else 0.0
        change = contribution = low = high = share = None
        significant = False
        if s.value is not None:
            if s.labelled < min_support:
                continue
            change = sign * (baseline - s.value)
            contribution = weight * change
            bounds: tuple[float, float] | None = None
            if proportion and s.reference is not None and s.reference_n:
                low, high = _newcombe(s.reference, s.reference_n, s.value, s.labelled, z)
                if sign < 0:
                    low, high = -high, -low
                low, high = weight * low, weight * high
                significant = low > 0
            elif proportion:
                bounds = wilson_interval(s.value * s.labelled, s.labelled, z)
            elif s.stderr is not None:
                bounds = (s.value - z * s.stderr, s.value + z * s.stderr)
            if bounds is not None:
                ends = sorted(weight * sign * (baseline - b) for b in bounds)
                low, high = ends[0], ends[1]
                significant = low > 0
            if model_drop:
                share = contribution / model_drop
        out.append(
            RankedSegment(
                key=s.key,
                dimension=dim,
                value=value,
                traffic_share=s.n / n_total if n_total else 0.0,
                weight=weight,
                metric=s.value,
                baseline=baseline,
                change=change,
                contribution=contribution,
                low=low,
                high=high,
                share_of_change=share,
                significant=significant,
                support=s.labelled,
                drift=s.drift,
            )
        )

    def order(r: RankedSegment) -> tuple[int, float, str]:
        if r.contribution is not None:
            return (0, -r.contribution, r.key)
        return (1, -(r.drift if r.drift is not None else -math.inf), r.key)

    return sorted(out, key=order)
