"""Feature attribution drift: is the model still leaning on the features it leaned on?

Prediction events may carry ``attributions`` (each feature's contribution to that prediction,
e.g. SHAP values). Their mean absolute value per feature is the model's *global* importance in
a window; a change in its ranking says the model now decides on other grounds, often before any
label shows it. SageMaker Clarify's model-explainability monitor compares the ranking with the
baseline's by nDCG and reports a violation below 0.9; so does this module:

    DCG  = Σ_i a_ref(f_i) / log2(i + 1),   f_1, f_2, ... the features by the window's ranking
    nDCG = DCG / DCG of the reference's own ranking

so a swap among unimportant features costs little and losing the top feature costs most. Ties
in the window's ranking are averaged over their positions, as ``sklearn.metrics.ndcg_score``
does (so the score does not depend on the order features happen to be listed in).

:class:`AttributionSums` is the window's mergeable state: per feature, the count and the exact
sum of ``|attribution|``, so the mean is bit-identical however the window was split.

>>> ref = {"amount": 0.5, "country": 0.3, "hour": 0.1}
>>> round(ndcg(ref, {"amount": 0.4, "country": 0.2, "hour": 0.05}), 6)
1.0
>>> result = attribution_drift(ref, {"hour": 0.6, "country": 0.2, "amount": 0.1})
>>> round(result.ndcg, 4), result.alert, result.window_ranking
(0.7295, True, ['hour', 'country', 'amount'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from driftline.detectors.sketches import ExactSum
from driftline.detectors.vocabulary import DEFAULT_ATTRIBUTION_THRESHOLD as DEFAULT_THRESHOLD

__all__ = ["AttributionDrift", "AttributionSums", "attribution_drift", "ndcg"]


def _dcg(gains: np.ndarray, scores: np.ndarray, k: int | None) -> float:
    """DCG of ``gains`` ranked by ``scores`` (descending), ties averaged over their positions."""
    n = gains.size
    discounts = 1.0 / np.log2(np.arange(n) + 2.0)
    if k is not None:
        discounts[k:] = 0.0
    cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_gains = scores[order], gains[order]
    total, start = 0.0, 0
    while start < n:
        end = start
        while end + 1 < n and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        group = sorted_gains[start : end + 1]
        total += float(group.sum()) * float(cumulative[end + 1] - cumulative[start]) / group.size
        start = end + 1
    return total


def ndcg(reference: Mapping[str, float], window: Mapping[str, float], k: int | None = None) -> float:
    """nDCG of the window's ranking, with the reference's mean |attribution| as relevance.

    Features missing from one side count 0 there. 1.0 when the reference has no relevance at
    all (nothing to lose).
    """
    features = sorted(set(reference) | set(window))
    gains = np.array([float(reference.get(f, 0.0)) for f in features])
    scores = np.array([float(window.get(f, 0.0)) for f in features])
    if (gains < 0).any():
        raise ValueError("reference attributions must be mean absolute values (>= 0)")
    ideal = _dcg(gains, gains, k)
    return _dcg(gains, scores, k) / ideal if ideal > 0 else 1.0


def _ranking(values: Mapping[str, float]) -> list[str]:
    return sorted(values, key=lambda f: (-values[f], f))


@dataclass(frozen=True, slots=True)
class AttributionDrift:
    ndcg: float
    threshold: float
    alert: bool
    reference_ranking: list[str]
    window_ranking: list[str]
    #: features whose rank changed: (feature, reference rank, window rank), 1-based
    moved: list[tuple[str, int, int]]

    def ranks(self) -> list[tuple[str, int, int]]:
        """Every feature as (feature, reference rank, window rank), those whose rank moved
        most first, then by reference rank: the order an alert names them in."""
        where = {f: i + 1 for i, f in enumerate(self.window_ranking)}
        ranks = [(f, i + 1, where[f]) for i, f in enumerate(self.reference_ranking)]
        return sorted(ranks, key=lambda r: (-abs(r[1] - r[2]), r[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ndcg": self.ndcg,
            "threshold": self.threshold,
            "alert": self.alert,
            "reference_ranking": list(self.reference_ranking),
            "window_ranking": list(self.window_ranking),
            "moved": [list(m) for m in self.moved],
        }


def attribution_drift(
    reference: Mapping[str, float],
    window: Mapping[str, float],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    k: int | None = None,
) -> AttributionDrift:
    """Compare a window's mean |attribution| per feature with the reference's."""
    score = ndcg(reference, window, k)
    features = set(reference) | set(window)
    ref_rank = _ranking({f: float(reference.get(f, 0.0)) for f in features})
    win_rank = _ranking({f: float(window.get(f, 0.0)) for f in features})
    where = {f: i + 1 for i, f in enumerate(win_rank)}
    moved = [(f, i + 1, where[f]) for i, f in enumerate(ref_rank) if where[f] != i + 1]
    return AttributionDrift(
        ndcg=score,
        threshold=threshold,
        alert=bool(score < threshold),
        reference_ranking=ref_rank,
        window_ranking=win_rank,
        moved=moved,
    )


class AttributionSums:
    """Per feature: how many events carried an attribution, and the exact sum of |value|."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sums: dict[str, ExactSum] = {}

    def update(self, feature: str, values: np.ndarray) -> None:
        """Fold one feature's attributions in; NaN means "this event sent none for it"."""
        v = np.abs(np.asarray(values, dtype=np.float64))
        v = v[np.isfinite(v)]
        if not v.size:  # no entry for a feature never attributed: the state does not depend
            return  # on how the events without one were batched
        self.counts[feature] = self.counts.get(feature, 0) + int(v.size)
        self.sums.setdefault(feature, ExactSum()).add(v)

    @staticmethod
    def update_many(
        sums: Sequence[AttributionSums], feature: str, values: np.ndarray, seg: np.ndarray, rows: np.ndarray
    ) -> None:
        """``sums[i].update(feature, values[rows[seg == i]])`` for every ``i`` (``seg``
        non-decreasing), bit-identically: one pass over the feature's column for all of them
        (the join folds a window's model slice and its segment slices at once)."""
        v = np.abs(np.asarray(values, dtype=np.float64)[rows])
        ok = np.isfinite(v)
        s = seg[ok]
        counts = np.bincount(s, minlength=len(sums)).tolist()
        targets = [
            t.sums.setdefault(feature, ExactSum()) if c else ExactSum()
            for t, c in zip(sums, counts, strict=True)
        ]
        for t, c in zip(sums, counts, strict=True):
            if c:
                t.counts[feature] = t.counts.get(feature, 0) + c
        ExactSum.add_segments(targets, v[ok], s)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def merge(self, other: AttributionSums) -> None:
        for f, c in other.counts.items():
            self.counts[f] = self.counts.get(f, 0) + c
            self.sums.setdefault(f, ExactSum()).merge(other.sums[f])

    def means(self) -> dict[str, float]:
        return {f: self.sums[f].value / c if c else math.nan for f, c in sorted(self.counts.items())}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttributionSums):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_dict(self) -> dict[str, Any]:
        return {f: [self.counts[f], self.sums[f].to_json()] for f in sorted(self.counts)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls()
        for f, (count, total) in d.items():
            s.counts[str(f)] = int(count)
            s.sums[str(f)] = ExactSum.from_json(total)
        return s
