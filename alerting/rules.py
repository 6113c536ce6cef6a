"""Alert rules: what "bad" means for one metric of a window's results.

A rule is configuration, not state: it says which metric to watch, which side of a threshold is
bad, and how patient to be (``for_windows``, ``clear_windows``, ``cooldown_ms``). The state that
this patience needs lives in :mod:`driftline.alerting.lifecycle`, so the same rule object can be
shared by every model, version and segment it applies to.

Hysteresis: a rule fires when the value crosses ``threshold`` and clears only when it comes back
past ``clear_threshold`` (on the good side). Between the two lies a band where a firing alert keeps
firing and a quiet one stays quiet, so a metric that hovers around the threshold cannot flap.

>>> r = Rule(name="accuracy-floor", metric="accuracy", comparison="<", threshold=0.8, clear_threshold=0.85)
>>> r.breached(0.79), r.cleared(0.79)
(True, False)
>>> r.breached(0.82), r.cleared(0.82)   # inside the band: neither
(False, False)
>>> r.breached(0.86), r.cleared(0.86)
(False, True)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

Comparison = Literal["<", "<=", ">", ">="]
Severity = Literal["critical", "error", "warning", "info"]

COMPARISONS: tuple[str, ...] = get_args(Comparison)
SEVERITIES: tuple[str, ...] = get_args(Severity)
#: what a retraining request may ask for (the ``action`` of schemas' RetrainingRequestData)
ACTIONS: tuple[str, ...] = ("retrain", "recalibrate", "rollback", "investigate")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting condition on one metric; see the module docstring for hysteresis.

    ``relative_to_baseline`` turns ``threshold`` and ``clear_threshold`` into offsets from the
    reference profile's baseline value of the metric: with a baseline accuracy of 0.92 and a
    threshold of -0.1 the rule fires below 0.82. Relative rules cannot be judged without a
    baseline; the tracker then treats the window as "no data" rather than guessing.
    """

    name: str
    metric: str
    comparison: Comparison
    threshold: float
    clear_threshold: float | None = None
    min_samples: int = 0
    for_windows: int = 1
    clear_windows: int = 1
    severity: Severity = "warning"
    retrain: bool = False
    cooldown_ms: int = 0
    relative_to_baseline: bool = False
    #: what the retraining request of a ``retrain`` rule asks for (docs/retraining.md)
    action: str = "retrain"

    def __post_init__(self) -> None:
        # Validate at construction so a bad rule fails at config load, not at 3 a.m. mid-stream.
        if not self.name:
            raise ValueError("rule name must be a non-empty string")
        if not self.metric:
            raise ValueError(f"rule {self.name!r}: metric must be a non-empty string")
        if self.comparison not in _OPS:
            raise ValueError(
                f"rule {self.name!r}: comparison {self.comparison!r} is not one of {list(COMPARISONS)}"
            )
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"rule {self.name!r}: severity {self.severity!r} is not one of {list(SEVERITIES)}"
            )
        if self.action not in ACTIONS:
            raise ValueError(f"rule {self.name!r}: action {self.action!r} is not one of {list(ACTIONS)}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"rule {self.name!r}: threshold must be finite, got {self.threshold!r}")
        clear = self.clear_threshold
        if clear is not None:
            if not math.isfinite(clear):
                raise ValueError(f"rule {self.name!r}: clear_threshold must be finite, got {clear!r}")
            # The clear threshold must sit on the good side, or a value could be both "breached"
            # and "cleared" and the alert would flap on every window.
            lower_is_bad = self.comparison in ("<", "<=")
            if (lower_is_bad and clear < self.threshold) or (not lower_is_bad and clear > self.threshold):
                side = ">=" if lower_is_bad else "<="
                raise ValueError(
                    f"rule {self.name!r}: clear_threshold {clear} must be {side} threshold {self.threshold} "
                    f"for comparison {self.comparison!r} (it must lie on the good side)"
                )
        minimums = (("min_samples", 0), ("for_windows", 1), ("clear_windows", 1), ("cooldown_ms", 0))
        for field_name, minimum in minimums:
            value = getattr(self, field_name)
            if value < minimum:
                raise ValueError(f"rule {self.name!r}: {field_name} must be >= {minimum}, got {value}")

    def thresholds(self, baseline: float | None = None) -> tuple[float, float]:
        """The absolute (fire, clear) thresholds, resolving baseline offsets.

        Raises ``ValueError`` for a relative rule without a finite baseline, because silently
        comparing against the raw offset (e.g. accuracy < -0.1) would never fire.
        """
        clear = self.threshold if self.clear_threshold is None else self.clear_threshold
        if not self.relative_to_baseline:
            return self.threshold, clear
        if baseline is None or not math.isfinite(baseline):
            raise ValueError(f"rule {self.name!r} is relative to a baseline, but no baseline was given")
        return baseline + self.threshold, baseline + clear

    def breached(self, value: float, baseline: float | None = None) -> bool:
        """True when ``value`` is on the bad side of the fire threshold (NaN never breaches)."""
        fire, _ = self.thresholds(baseline)
        return not math.isnan(value) and _OPS[self.comparison](value, fire)

    def cleared(self, value: float, baseline: float | None = None) -> bool:
        """True when ``value`` is strictly past the clear threshold on the good side (NaN never clears)."""
        _, clear = self.thresholds(baseline)
        return not math.isnan(value) and not _OPS[self.comparison](value, clear)


_REQUIRED = ("name", "metric", "comparison", "threshold")
_FIELD_NAMES = tuple(f.name for f in fields(Rule))
_FLOATS = ("threshold", "clear_threshold")
_INTS = ("min_samples", "for_windows", "clear_windows", "cooldown_ms")
_BOOLS = ("retrain", "relative_to_baseline")
_STRS = ("name", "metric", "comparison", "severity", "action")


def rule_from_dict(d: Mapping[str, Any]) -> Rule:
    """Parse one rule from configuration (YAML/JSON), with errors that name the rule and the key.

    Strict on purpose: an unknown key is almost always a typo (``for_window``) that would silently
    fall back to a default, and ``True`` is refused as a number because YAML turns ``yes`` into it.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"a rule must be a mapping, got {type(d).__name__}")
    label = repr(d.get("name", "<unnamed>"))
    unknown = sorted(set(d) - set(_FIELD_NAMES))
    if unknown:
        raise ValueError(f"rule {label}: unknown key(s) {unknown}; allowed: {list(_FIELD_NAMES)}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"rule {label}: missing required key(s) {missing}")
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in _STRS:
            if not isinstance(value, str):
                raise ValueError(f"rule {label}: {key} must be a string, got {value!r}")
        elif key in _FLOATS:
            if value is None and key == "clear_threshold":
                pass
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"rule {label}: {key} must be a number, got {value!r}")
            else:
                value = float(value)
        elif key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"rule {label}: {key} must be an integer, got {value!r}")
        elif key in _BOOLS and not isinstance(value, bool):
            raise ValueError(f"rule {label}: {key} must be true or false, got {value!r}")
        kwargs[key] = value
    return Rule(**kwargs)


DEFAULT_RULES: tuple[Rule, ...] = (
    # Data drift is label-free, so it is the earliest warning a model gets, often days before
    # labels arrive. A warning, not a page: drift does not always hurt accuracy. Two windows in a
    # row: each window's verdict is a test at alpha, so across many slices and windows a single
    # window fires by chance now and then (replaying 100k stationary events showed it); real
    # drift persists. 100 predictions keeps the tests off near-empty windows.
    Rule(
        name="dataset-drift",
        metric="dataset_drift",
        comparison=">=",
        threshold=1.0,
        min_samples=100,
        for_windows=2,
        severity="warning",
    ),
    # The question that matters: is the model worse than when it was validated? Relative to the
    # reference baseline so one rule fits models of any accuracy. 50 labels puts the standard
    # error of accuracy under ~0.07, and two windows in a row filter a single unlucky window, so
    # a retraining request (expensive) is backed by sustained evidence. It clears only once
    # accuracy is back within 5 points of baseline, so it does not flap around the threshold.
    Rule(
        name="accuracy-drop",
        metric="accuracy",
        comparison="<",
        threshold=-0.1,
        clear_threshold=-0.05,
        relative_to_baseline=True,
        min_samples=50,
        for_windows=2,
        severity="error",
        retrain=True,
    ),
    # A safety net that needs no reference profile (the relative rule is silent without one):
    # below 0.5 a binary classifier is worse than a coin. Critical because it usually means a
    # broken pipeline (feature bug, label join) rather than slow decay, which is also why it does
    # not ask for retraining: retraining on broken data would bake the bug in.
    Rule(
        name="accuracy-floor",
        metric="accuracy",
        comparison="<",
        threshold=0.5,
        min_samples=50,
        for_windows=1,
        severity="critical",
    ),
)
