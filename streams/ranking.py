"""Segment ranking for a closed window, from the slice results the merger produced.

``detectors/segments.py`` ranks; this module only assembles its input from one window's
:class:`~driftline.schemas.results.WindowResult` per slice (every slice of a window closes in
one ``WindowMerger._close`` call) and reads the direction of "worse" from the rule being
explained: a rule that fires on ``accuracy < 0.8`` says lower is worse, one on ``mae > 3`` that
higher is. A proportion metric (accuracy and the other label counts' shares) gets Wilson
intervals; others are ranked without an interval (their per-slice standard error is not kept).

Called by :class:`~driftline.streams.evaluation.Evaluator` when it judges a window's
whole-model slice: ``WindowMerger._close`` computes every slice of a window before judging any,
so the segment results are at hand (docs/detectors.md, "Wiring").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from driftline.alerting.rules import Rule
from driftline.detectors.segments import RankedSegment, SegmentStats, rank_segments
from driftline.detectors.vocabulary import PROPORTION_METRICS
from driftline.schemas.results import SegmentContribution, WindowResult
from driftline.schemas.windows import segment_key

__all__ = ["PROPORTIONS", "contributions", "rank_for_rule"]

#: kept for callers of the first version; the list lives in detectors/vocabulary.py
PROPORTIONS = PROPORTION_METRICS


def rank_for_rule(
    rule: Rule,
    results: Sequence[WindowResult],
    baseline: Callable[[str], float | None],
    *,
    baseline_n: Callable[[str], int | None] | None = None,
    min_support: int = 30,
    alpha: float = 0.05,
) -> list[RankedSegment]:
    """The segments of one window (one model version) ranked for ``rule``'s metric.

    ``results`` are the window's slices, the whole model (segment ``{}``) among them;
    ``baseline(slice_key)`` is a slice's reference value of the metric (``""`` the model's);
    ``baseline_n(slice_key)``, the labelled events behind it, widens a proportion's interval
    by the reference's own sampling error (without it a stationary segment is "significant"
    far more often than alpha whenever the reference is not much larger than the window).
    Empty when the model's slice or its baseline is missing.
    """
    model = [r for r in results if not r.segment]
    if len(model) != 1:
        return []
    reference = baseline("")
    current = model[0].metrics.get(rule.metric)
    if reference is None or current is None:
        return []
    stats = [
        SegmentStats(
            segment_key(r.segment),
            n=r.prediction_count,
            labelled=r.labelled_count,
            value=r.metrics.get(rule.metric),
            reference=baseline(segment_key(r.segment)),
            drift=r.drift_share,
            reference_n=None if baseline_n is None else baseline_n(segment_key(r.segment)),
        )
        for r in results
        if r.segment
    ]
    return rank_segments(
        stats,
        reference=reference,
        current=current,
        higher_is_better=rule.comparison in ("<", "<="),
        proportion=rule.metric in PROPORTIONS,
        min_support=min_support,
        alpha=alpha,
    )


def contributions(metric: str, ranked: Sequence[RankedSegment]) -> list[SegmentContribution]:
    """The ranked segments that have a value of ``metric`` (enough labels), as the contract's
    struct, in ranking order (worst first)."""
    return [
        SegmentContribution(
            dimension=r.dimension,
            value=r.value,
            metric=metric,
            observed=r.metric,
            baseline=r.baseline,
            labelled_share=r.weight,
            contribution=r.contribution,
            low=r.low,
            high=r.high,
            share_of_change=r.share_of_change,
            significant=r.significant,
            support=r.support,
        )
        for r in ranked
        if r.contribution is not None
    ]
