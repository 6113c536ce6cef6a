"""A rule with ``scope: any_segment``: one verdict per window for the model, from its segment slices.

Judging a rule on each of m segment slices at ``alpha`` and paging when any of them breaches
is a test of "some segment got worse" at about m·alpha, not alpha: with 6 segment values and
alpha 0.05 a stationary model pages in a quarter of its windows. This rule runs the rule's
``test`` once per segment at ``alpha / m`` (Bonferroni), m being the segment slices *judged*
in that window (those with a value, ``min_samples`` samples and, for a relative rule, a
baseline), so the window's false-alarm rate stays at most ``alpha``. Holm's step-down would
reject "no segment changed" exactly when Bonferroni does (its first step is Bonferroni); it
would only name more segments once one is found, so the simpler, one-threshold-per-segment
Bonferroni is used. A rule without a ``test`` has absolute thresholds, nothing to correct.

Hysteresis carries over: the verdict is breached when any judged segment breaches, cleared
when every judged segment is past its clear threshold.

>>> from driftline.alerting.rules import Rule
>>> r = Rule(name="drop", metric="accuracy", comparison="<", threshold=0.0, relative_to_baseline=True,
...          test="proportion", alpha=0.06, scope="any_segment")
>>> v = judge_any_segment(r, [SegmentInput("c=a", 0.80, 400, 0.9, 4000),
...                            SegmentInput("c=b", 0.89, 400, 0.9, 4000),
...                            SegmentInput("c=c", 0.70, 10, 0.9, 4000)])
>>> round(v.alpha, 3), v.judged, [s.segment for s in v.breaching], v.breached, v.cleared
(0.02, 3, ['c=a', 'c=c'], True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from driftline.alerting.rules import Rule

__all__ = ["AnySegmentVerdict", "JudgedSegment", "SegmentInput", "judge_any_segment"]


@dataclass(frozen=True, slots=True)
class SegmentInput:
    """One segment slice's numbers for the rule's metric in a window."""

    segment: str  # slice key, "country=BR"
    value: float | None
    samples: int
    baseline: float | None = None  # the slice's reference value (relative rules)
    baseline_samples: int = 0


@dataclass(frozen=True, slots=True)
class JudgedSegment:
    segment: str
    observed: float
    threshold: float  # fire threshold at the corrected alpha
    clear_threshold: float
    baseline: float | None
    samples: int
    breached: bool
    cleared: bool
    #: how far ``observed`` is past ``threshold`` on the bad side, in the metric's units
    #: (negative: on the good side); the order "worst first"
    margin: float


@dataclass(frozen=True, slots=True)
class AnySegmentVerdict:
    alpha: float  # the corrected alpha each segment's test ran at
    judged: int  # m: the segment slices judged
    segments: tuple[JudgedSegment, ...]  # every judged segment, worst first (ties by key)

    @property
    def breaching(self) -> list[JudgedSegment]:
        return [s for s in self.segments if s.breached]

    @property
    def breached(self) -> bool:
        return any(s.breached for s in self.segments)

    @property
    def cleared(self) -> bool:
        return all(s.cleared for s in self.segments)

    @property
    def worst(self) -> JudgedSegment:
        return self.segments[0]


def judge_any_segment(rule: Rule, inputs: Sequence[SegmentInput]) -> AnySegmentVerdict | None:
    """The window's verdict over its segment slices; None when no segment can be judged ("no
    data": the lifecycle holds its state, as for a slice without enough samples)."""
    usable = [s for s in inputs if rule.judgeable(s.value, s.samples, s.baseline)]
    if not usable:
        return None
    # the rule's own Bonferroni family (Rule.thresholds): alpha / the segments judged
    alpha = rule.alpha / len(usable) if rule.test else rule.alpha
    lower_is_bad = rule.comparison in ("<", "<=")
    judged = []
    for s in usable:
        value = float(s.value)  # type: ignore[arg-type]  # filtered above
        fire, clear = rule.thresholds(
            s.baseline, samples=int(s.samples), baseline_samples=int(s.baseline_samples), family=len(usable)
        )
        breached, cleared = rule.sides(value, fire, clear)
        judged.append(
            JudgedSegment(
                segment=s.segment,
                observed=value,
                threshold=fire,
                clear_threshold=clear,
                baseline=None if s.baseline is None else float(s.baseline),
                samples=int(s.samples),
                breached=breached,
                cleared=cleared,
                margin=(fire - value) if lower_is_bad else (value - fire),
            )
        )
    judged.sort(key=lambda j: (-j.margin, j.segment))
    return AnySegmentVerdict(alpha=alpha, judged=len(judged), segments=tuple(judged))
