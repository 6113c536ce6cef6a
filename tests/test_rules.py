"""Rules: comparisons at their boundaries, hysteresis bands, baseline offsets, strict config parsing."""

from __future__ import annotations

import doctest
import math

import pytest

from driftline.alerting import rules
from driftline.alerting.rules import DEFAULT_RULES, Rule, rule_from_dict


def test_docstring_examples_run() -> None:
    result = doctest.testmod(rules)
    assert result.attempted == 4
    assert result.failed == 0


# (comparison, value) -> breached, with threshold 0.8: boundaries decide strict vs inclusive.
@pytest.mark.parametrize(
    ("comparison", "value", "expected"),
    [
        ("<", 0.79, True),
        ("<", 0.8, False),
        ("<", 0.81, False),
        ("<=", 0.79, True),
        ("<=", 0.8, True),
        ("<=", 0.81, False),
        (">", 0.79, False),
        (">", 0.8, False),
        (">", 0.81, True),
        (">=", 0.79, False),
        (">=", 0.8, True),
        (">=", 0.81, True),
    ],
)
def test_breached_at_boundaries(comparison: str, value: float, expected: bool) -> None:
    rule = Rule(name="r", metric="m", comparison=comparison, threshold=0.8)  # type: ignore[arg-type]
    assert rule.breached(value) is expected
    # Without a hysteresis band, clearing is exactly "not breached".
    assert rule.cleared(value) is (not expected)


@pytest.mark.parametrize(
    ("comparison", "threshold", "clear", "value", "breached", "cleared"),
    [
        # Lower is bad: fire below 0.8, clear only at or above 0.85.
        ("<", 0.8, 0.85, 0.79, True, False),
        ("<", 0.8, 0.85, 0.8, False, False),
        ("<", 0.8, 0.85, 0.849, False, False),
        ("<", 0.8, 0.85, 0.85, False, True),
        ("<=", 0.8, 0.85, 0.85, False, False),  # "<=": 0.85 is still on the bad side of 0.85
        ("<=", 0.8, 0.85, 0.851, False, True),
        # Higher is bad: fire at or above 0.3, clear only below 0.2.
        (">=", 0.3, 0.2, 0.3, True, False),
        (">=", 0.3, 0.2, 0.25, False, False),
        (">=", 0.3, 0.2, 0.2, False, False),
        (">=", 0.3, 0.2, 0.199, False, True),
        (">", 0.3, 0.2, 0.2, False, True),
    ],
)
def test_hysteresis_band(
    comparison: str, threshold: float, clear: float, value: float, breached: bool, cleared: bool
) -> None:
    rule = Rule(name="r", metric="m", comparison=comparison, threshold=threshold, clear_threshold=clear)  # type: ignore[arg-type]
    assert (rule.breached(value), rule.cleared(value)) == (breached, cleared)


def test_nan_neither_breaches_nor_clears() -> None:
    rule = Rule(name="r", metric="m", comparison="<", threshold=0.8)
    assert rule.breached(math.nan) is False
    assert rule.cleared(math.nan) is False


def test_relative_thresholds_are_offsets_from_the_baseline() -> None:
    # Binary-exact numbers so the sums are exact: 0.875 - 0.125 = 0.75, 0.875 - 0.0625 = 0.8125.
    rule = Rule(
        name="acc-drop",
        metric="accuracy",
        comparison="<",
        threshold=-0.125,
        clear_threshold=-0.0625,
        relative_to_baseline=True,
    )
    assert rule.thresholds(0.875) == (0.75, 0.8125)
    assert rule.breached(0.74, baseline=0.875) is True
    assert rule.breached(0.75, baseline=0.875) is False
    assert rule.cleared(0.8, baseline=0.875) is False
    assert rule.cleared(0.8125, baseline=0.875) is True
    # A different baseline moves the thresholds with it.
    assert rule.thresholds(0.5) == (0.375, 0.4375)
    assert rule.breached(0.74, baseline=0.5) is False
    with pytest.raises(ValueError, match="no baseline"):
        rule.breached(0.5)
    with pytest.raises(ValueError, match="no baseline"):
        rule.thresholds(math.nan)


def test_absolute_rule_ignores_baseline() -> None:
    rule = Rule(name="r", metric="m", comparison="<", threshold=0.8)
    assert rule.thresholds(0.1) == (0.8, 0.8)
    assert rule.breached(0.7, baseline=100.0) is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"comparison": "=="}, "comparison '=='"),
        ({"severity": "fatal"}, "severity 'fatal'"),
        ({"threshold": math.inf}, "threshold must be finite"),
        ({"clear_threshold": 0.7}, "clear_threshold 0.7 must be >= threshold 0.8"),
        ({"for_windows": 0}, "for_windows must be >= 1"),
        ({"clear_windows": 0}, "clear_windows must be >= 1"),
        ({"min_samples": -1}, "min_samples must be >= 0"),
        ({"cooldown_ms": -5}, "cooldown_ms must be >= 0"),
        ({"name": ""}, "name must be a non-empty"),
        ({"metric": ""}, "metric must be a non-empty"),
    ],
)
def test_invalid_rules_are_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "r", "metric": "m", "comparison": "<", "threshold": 0.8}
    with pytest.raises(ValueError, match=message):
        Rule(**{**base, **kwargs})  # type: ignore[arg-type]


def test_clear_threshold_on_bad_side_refused_for_higher_is_bad() -> None:
    with pytest.raises(ValueError, match=r"must be <= threshold 0\.3"):
        Rule(name="r", metric="m", comparison=">", threshold=0.3, clear_threshold=0.4)


def test_rule_from_dict_full() -> None:
    rule = rule_from_dict(
        {
            "name": "accuracy-drop",
            "metric": "accuracy",
            "comparison": "<",
            "threshold": -0.1,
            "clear_threshold": -0.05,
            "min_samples": 50,
            "for_windows": 2,
            "clear_windows": 3,
            "severity": "error",
            "retrain": True,
            "cooldown_ms": 3_600_000,
            "relative_to_baseline": True,
        }
    )
    assert rule == Rule(
        name="accuracy-drop",
        metric="accuracy",
        comparison="<",
        threshold=-0.1,
        clear_threshold=-0.05,
        min_samples=50,
        for_windows=2,
        clear_windows=3,
        severity="error",
        retrain=True,
        cooldown_ms=3_600_000,
        relative_to_baseline=True,
    )


def test_rule_from_dict_defaults_and_int_threshold() -> None:
    rule = rule_from_dict({"name": "drift", "metric": "dataset_drift", "comparison": ">=", "threshold": 1})
    assert rule == Rule(name="drift", metric="dataset_drift", comparison=">=", threshold=1.0)
    assert isinstance(rule.threshold, float)
    assert (rule.for_windows, rule.clear_windows, rule.min_samples, rule.severity) == (1, 1, 0, "warning")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"for_window": 2}, r"rule 'r': unknown key\(s\) \['for_window'\]"),
        ({"threshold": "0.8"}, "threshold must be a number"),
        ({"threshold": True}, "threshold must be a number"),
        ({"for_windows": 2.0}, "for_windows must be an integer"),
        ({"for_windows": True}, "for_windows must be an integer"),
        ({"retrain": "yes"}, "retrain must be true or false"),
        ({"comparison": "lt"}, "comparison 'lt'"),
        ({"metric": 3}, "metric must be a string"),
    ],
)
def test_rule_from_dict_errors(extra: dict[str, object], message: str) -> None:
    d: dict[str, object] = {"name": "r", "metric": "m", "comparison": "<", "threshold": 0.8, **extra}
    with pytest.raises(ValueError, match=message):
        rule_from_dict(d)


def test_rule_from_dict_missing_and_not_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['comparison', 'threshold'\]"):
        rule_from_dict({"name": "r", "metric": "m"})
    with pytest.raises(ValueError, match="must be a mapping"):
        rule_from_dict(["name", "r"])  # type: ignore[arg-type]


def test_default_rules() -> None:
    by_name = {r.name: r for r in DEFAULT_RULES}
    assert list(by_name) == ["dataset-drift", "accuracy-drop", "accuracy-floor"]

    drift = by_name["dataset-drift"]
    from driftline.detectors.sequential import CUSUM_H

    # the CUSUM of drift evidence, at the threshold detectors/sequential.py documents
    assert (drift.metric, drift.comparison, drift.threshold) == ("drift_cusum", ">=", CUSUM_H)
    assert (drift.for_windows, drift.clear_threshold) == (1, CUSUM_H / 2)
    assert (drift.severity, drift.retrain) == ("warning", False)
    assert drift.breached(CUSUM_H) and not drift.breached(CUSUM_H - 0.01)

    drop = by_name["accuracy-drop"]
    assert (drop.metric, drop.comparison, drop.threshold) == ("accuracy", "<", -0.1)
    assert drop.relative_to_baseline is True
    assert (drop.severity, drop.retrain, drop.min_samples, drop.for_windows) == ("error", True, 50, 2)
    assert drop.breached(0.81, baseline=0.92) and not drop.breached(0.83, baseline=0.92)

    floor = by_name["accuracy-floor"]
    assert (floor.metric, floor.comparison, floor.threshold, floor.relative_to_baseline) == (
        "accuracy",
        "<",
        0.5,
        False,
    )
    assert floor.retrain is False
    # Every default survives a trip through config parsing unchanged.
    for rule in DEFAULT_RULES:
        d = {name: getattr(rule, name) for name in rule.__slots__}  # type: ignore[attr-defined]
        assert rule_from_dict(d) == rule
