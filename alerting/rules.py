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

A rule with ``test: proportion`` judges a proportion (accuracy) against the reference baseline
by a one-sided two-proportion z-test at the window's own sample size: it fires only when the
drop is both at least the minimum effect (``threshold``, an offset) and significant at
``alpha``, so one rule is strict on windows of 20 000 labels and patient on windows of 200.

>>> t = Rule(name="drop", metric="accuracy", comparison="<", threshold=-0.02, relative_to_baseline=True,
...          test="proportion", alpha=0.005)
>>> round(t.thresholds(0.9, samples=500, baseline_samples=20000)[0], 4)    # the test decides
0.865
>>> round(t.thresholds(0.9, samples=10**6, baseline_samples=10**6)[0], 4)  # the minimum effect does
0.88

``scope`` says which slices of a window the rule judges: ``every_slice`` (the default, and the
behaviour before scopes existed: the whole model and each segment slice, each its own alert
series), ``model`` (the whole model only), ``each_segment`` (each segment slice, own series) or
``any_segment``: one verdict per window for the model, breached when any segment slice
breaches, a ``test`` then run at ``alpha`` / the number of segment slices judged in that window
(Bonferroni, so "some segment is worse" keeps the rule's false-alarm rate; see
:mod:`driftline.alerting.any_segment`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Any, Literal, get_args

Comparison = Literal["<", "<=", ">", ">="]
Severity = Literal["critical", "error", "warning", "info"]

COMPARISONS: tuple[str, ...] = get_args(Comparison)
SEVERITIES: tuple[str, ...] = get_args(Severity)
#: statistical tests a relative rule can add to its threshold ("": none, the threshold alone)
RULE_TESTS = ("", "proportion")
#: what a retraining request may ask for (the ``action`` of schemas' RetrainingRequestData)
ACTIONS: tuple[str, ...] = ("retrain", "recalibrate", "rollback", "investigate")
#: which slices of a window a rule judges (see the module docstring); the first is the default
SCOPES: tuple[str, ...] = ("every_slice", "model", "each_segment", "any_segment")

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

    ``test="proportion"`` (relative rules on a proportion such as accuracy) moves the fire
    threshold further from the baseline until a one-sided two-proportion z-test rejects "no
    change" at ``alpha``: with baseline p0 on n0 reference labels and n labels in the window,
    the bad side starts at p0 - z(1-alpha)·sqrt(p0(1-p0)(1/n + 1/n0)) (p0 + … for ``>``), or at
    ``baseline + threshold`` if that is further (the minimum effect worth an alert). The
    variance is the null's, so the threshold is one number per window, shown in the alert.
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
    test: str = ""
    alpha: float = 0.005
    #: what the retraining request of a ``retrain`` rule asks for (docs/retraining.md)
    action: str = "retrain"
    #: which slices the rule judges (SCOPES; module docstring)
    scope: str = "every_slice"

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
        if self.scope not in SCOPES:
            raise ValueError(f"rule {self.name!r}: scope {self.scope!r} is not one of {list(SCOPES)}")
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
        if self.test not in RULE_TESTS:
            known = [t for t in RULE_TESTS if t]
            raise ValueError(f"rule {self.name!r}: test {self.test!r} is not one of {known}")
        if self.test and not self.relative_to_baseline:
            raise ValueError(
                f"rule {self.name!r}: test {self.test!r} compares with the reference baseline; "
                "set relative_to_baseline: true (threshold is then the minimum effect, e.g. -0.02)"
            )
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"rule {self.name!r}: alpha must be in (0, 0.5), got {self.alpha!r}")
        minimums = (("min_samples", 0), ("for_windows", 1), ("clear_windows", 1), ("cooldown_ms", 0))
        for field_name, minimum in minimums:
            value = getattr(self, field_name)
            if value < minimum:
                raise ValueError(f"rule {self.name!r}: {field_name} must be >= {minimum}, got {value}")

    def thresholds(
        self, baseline: float | None = None, *, samples: int = 0, baseline_samples: int = 0, family: int = 1
    ) -> tuple[float, float]:
        """The absolute (fire, clear) thresholds, resolving baseline offsets and, for a rule
        with a ``test``, the window's (``samples``) and the baseline's (``baseline_samples``;
        0: the baseline is taken as exact) sample sizes.

        Raises ``ValueError`` for a relative rule without a finite baseline, because silently
        comparing against the raw offset (e.g. accuracy < -0.1) would never fire.
        """
        clear = self.threshold if self.clear_threshold is None else self.clear_threshold
        if not self.relative_to_baseline:
            return self.threshold, clear
        if baseline is None or not math.isfinite(baseline):
            raise ValueError(f"rule {self.name!r} is relative to a baseline, but no baseline was given")
        fire, clear = baseline + self.threshold, baseline + clear
        if self.test == "proportion":
            p0 = min(max(baseline, 0.0), 1.0)
            inverse_n = (1.0 / samples if samples > 0 else math.inf) + (
                1.0 / baseline_samples if baseline_samples > 0 else 0.0
            )
            # ``family``: how many slices the same test is run on in one window (Bonferroni)
            alpha = self.alpha / max(1, family)
            margin = NormalDist().inv_cdf(1.0 - alpha) * math.sqrt(p0 * (1.0 - p0) * inverse_n)
            if self.comparison in ("<", "<="):
                fire = min(fire, baseline - margin)
                clear = max(clear, fire)
            else:
                fire = max(fire, baseline + margin)
                clear = min(clear, fire)
        return fire, clear

    def judgeable(self, value: float | None, samples: int, baseline: float | None) -> bool:
        """Whether a window can be judged at all: a value that is a number, at least
        ``min_samples`` samples, and for a relative rule a finite baseline. Anything else is
        "no data", which holds an alert's state instead of guessing."""
        if value is None or math.isnan(value) or samples < self.min_samples:
            return False
        return not (self.relative_to_baseline and (baseline is None or not math.isfinite(baseline)))

    def sides(self, value: float, fire: float, clear: float) -> tuple[bool, bool]:
        """(breached, cleared) of ``value`` against thresholds already computed by
        :meth:`thresholds`: on the bad side of ``fire``; strictly past ``clear`` on the good
        side. NaN is neither."""
        if math.isnan(value):
            return False, False
        op = _OPS[self.comparison]
        return op(value, fire), not op(value, clear)

    def judge(self, value: float, baseline: float | None = None, **sizes: int) -> tuple[bool, bool]:
        """(breached, cleared) of ``value`` at the thresholds for this baseline and these sample
        sizes (``samples``, ``baseline_samples``, ``family``, as for :meth:`thresholds`, which
        rejects any other name): :meth:`thresholds` then :meth:`sides`, for one value."""
        fire, clear = self.thresholds(baseline, **sizes)
        return self.sides(value, fire, clear)

    def breached(self, value: float, baseline: float | None = None, **sizes: int) -> bool:
        """True when ``value`` is on the bad side of the fire threshold (NaN never breaches);
        ``sizes`` as for :meth:`judge`."""
        return self.judge(value, baseline, **sizes)[0]

    def cleared(self, value: float, baseline: float | None = None, **sizes: int) -> bool:
        """True when ``value`` is strictly past the clear threshold on the good side (NaN never
        clears); ``sizes`` as for :meth:`judge`."""
        return self.judge(value, baseline, **sizes)[1]


_REQUIRED = ("name", "metric", "comparison", "threshold")
_FIELD_NAMES = tuple(f.name for f in fields(Rule))
_FLOATS = ("threshold", "clear_threshold", "alpha")
_INTS = ("min_samples", "for_windows", "clear_windows", "cooldown_ms")
_BOOLS = ("retrain", "relative_to_baseline")
_STRS = ("name", "metric", "comparison", "severity", "test", "action", "scope")


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
    # labels arrive. A warning, not a page: drift does not always hurt accuracy. Not on a
    # window's verdict (a test at alpha: with 288 windows a day per slice, two in a row still
    # fire every few days) but on the per-feature CUSUMs of the windows' evidence, whose
    # threshold is spent over the model's features and slices for an expected run length and
    # reported on a common scale where 3 is that threshold (detectors/sequential.py):
    # benchmarks/DETECTION.md measures under one false alert per model per 30 days counting
    # every slice, and a 0.2 sigma shift at 1000 events a window found within 3 windows. It
    # clears once the CUSUM is back under half its threshold. 100 predictions keeps the tests
    # off near-empty windows.
    Rule(
        name="dataset-drift",
        metric="drift_cusum",
        comparison=">=",
        threshold=3.0,
        clear_threshold=1.5,
        min_samples=100,
        for_windows=1,
        severity="warning",
    ),
    # Multivariate drift (models with ``multivariate: true``; silent for the others, which have
    # no such value): the features' joint structure left the reference's, which per-feature
    # tests cannot see. A warning, label-free like dataset-drift. The band is 3 sigma with a
    # skew correction, measured at 0.004 false alarms per stationary window
    # (tests/test_multivariate.py); two windows in a row makes that ~1.6e-5 if windows are
    # independent, about 0.14 false alerts per slice in 30 days of 5-minute windows. The
    # evidence names the driving features and, for the whole model, the segments where it fired.
    Rule(
        name="multivariate-drift",
        metric="multivariate_drift",
        comparison=">=",
        threshold=1.0,
        min_samples=100,
        for_windows=2,
        severity="warning",
    ),
    # The question that matters: is the model worse than when it was validated? Relative to the
    # reference baseline so one rule fits models of any accuracy, and judged by a one-sided
    # two-proportion test at each window's labelled n (and the reference's), so it is as strict
    # as the evidence allows: a 5-point drop at 2000 labels a window is found in 2 windows, and
    # at alpha 0.005 with two windows in a row a stationary model sees well under one false
    # alert per 30 days of 5-minute windows (benchmarks/estimation_accuracy.py). A drop under 2
    # points is never worth a retraining request (expensive), however significant. It clears
    # within 1 point of baseline (or above the test's threshold), so it does not flap.
    Rule(
        name="accuracy-drop",
        metric="accuracy",
        comparison="<",
        threshold=-0.02,
        clear_threshold=-0.01,
        relative_to_baseline=True,
        test="proportion",
        alpha=0.005,
        min_samples=50,
        for_windows=2,
        severity="error",
        retrain=True,
    ),
    # The same question before labels arrive: the calibrated label-free estimate against the
    # reference accuracy. A warning, never a retraining request: the estimate is blind to
    # concept drift and trusts the calibration (docs/detectors.md). The test at the window's
    # prediction count is conservative for an estimate, whose noise is below a realised
    # accuracy's at the same n.
    Rule(
        name="estimated-accuracy-drop",
        metric="estimated_accuracy",
        comparison="<",
        threshold=-0.03,
        clear_threshold=-0.015,
        relative_to_baseline=True,
        test="proportion",
        alpha=0.005,
        min_samples=100,
        for_windows=2,
        severity="warning",
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
    # Feature attribution drift: the model now leans on other features than it did on the
    # reference (nDCG of the ranking of mean |attribution| below the model's
    # attribution_threshold, 0.9 as SageMaker Clarify). Label-free, so often the first sign of
    # a broken feature pipeline; a warning, since a new ranking is not always a worse model.
    # Silent for models whose events (or reference) carry no attributions.
    Rule(
        name="attribution-drift",
        metric="attribution_drift",
        comparison=">=",
        threshold=1.0,
        min_samples=100,
        for_windows=1,
        severity="warning",
    ),
)
