"""Segment ranking for a closed window, from the slice results the merger produced.

``detectors/segments.py`` ranks; this module only assembles its input from one window's
:class:`~driftline.schemas.results.WindowResult` per slice (every slice of a window closes in
one ``WindowMerger._close`` call) and reads the direction of "worse" from the rule being
explained: a rule that fires on ``accuracy < 0.8`` says lower is worse, one on ``mae > 3`` that
higher is. A proportion metric (accuracy and the other label counts' shares) gets Wilson
intervals; others are ranked without an interval (their per-slice standard error is not kept).

Not yet called by the worker; the planned hook (docs/detectors.md): evaluate a window's
segment slices before its whole-model slice in ``WindowMerger._close`` and pass the ranking
into the whole-model slice's alert evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from driftline.alerting.rules import Rule
from driftline.detectors.segments import RankedSegment, SegmentStats, rank_segments
from driftline.schemas.results import WindowResult
from driftline.schemas.windows import segment_key

__all__ = ["PROPORTIONS", "rank_for_rule"]

#: metrics that are a share of labelled events, for which Wilson intervals hold
PROPORTIONS = frozenset({"accuracy", "label_coverage"})


def rank_for_rule(
    rule: Rule,
    results: Sequence[WindowResult],
    baseline: Callable[[str], float | None],
    *,
    min_support: int = 30,
    alpha: float = 0.05,
) -> list[RankedSegment]:
    """The segments of one window (one model version) ranked for ``rule``'s metric.

    ``results`` are the window's slices, the whole model (segment ``{}``) among them;
    ``baseline(slice_key)`` is a slice's reference value of the metric (``""`` the model's).
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
