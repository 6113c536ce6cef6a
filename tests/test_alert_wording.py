"""What an alert says reads true in both states (issue 19, item 8).

A resolved alert used to repeat the firing condition ("accuracy 0.8833 < 0.6" on a value well
above 0.6). The alerts here come from the real :class:`AlertTracker`, so the observed value,
the thresholds and the evidence are what the pipeline emits; the expected words are written
out by hand from each rule's comparison: a ``<`` rule clears at or above its clear threshold,
``<=`` above, ``>`` at or below, ``>=`` below. Every notifier that prints the condition is
checked: the summary line (Slack's fallback, PagerDuty's summary, Alertmanager's summary),
Slack's "Observed vs threshold" field and Alertmanager's description.
"""

from __future__ import annotations

import doctest

import httpx
import pytest
from fakes.slack import FakeSlack
from fakes.webhook import FakeAlertmanager

from driftline.alerting.lifecycle import AlertTracker
from driftline.alerting.notifiers import AlertmanagerNotifier, SlackNotifier, base, deliver
from driftline.alerting.notifiers.base import summary_line
from driftline.alerting.rules import Rule
from driftline.alerting.secrets import Secret
from driftline.schemas import AlertEvent, alert_event

pytestmark = pytest.mark.timeout(30)

MIN = 60_000


def _emitted(rule: Rule, values: list[float], baseline: float | None = None) -> list[AlertEvent]:
    tracker, out = AlertTracker(), []
    for i, value in enumerate(values):
        out += tracker.observe(
            rule, model_id="churn", model_version="v3", segment={}, window_start_ms=i * MIN,
            window_end_ms=(i + 1) * MIN, value=value, samples=100, baseline=baseline,
        )  # fmt: skip
    return [alert_event(a) for a in out]


CASES = [
    # (rule, values fed, baseline, the firing words, the resolved words)
    (
        Rule(name="acc-floor", metric="accuracy", comparison="<", threshold=0.6),
        [0.5, 0.8833],
        None,
        "accuracy 0.5 < 0.6",
        "accuracy back to 0.8833, at or above 0.6",
    ),
    (
        Rule(name="acc-floor", metric="accuracy", comparison="<", threshold=0.6, clear_threshold=0.65),
        [0.5, 0.65],
        None,
        "accuracy 0.5 < 0.6",
        "accuracy back to 0.65, at or above 0.65",  # the clear threshold is the one it crossed
    ),
    (
        Rule(name="acc-floor", metric="accuracy", comparison="<=", threshold=0.6),
        [0.6, 0.61],
        None,
        "accuracy 0.6 <= 0.6",
        "accuracy back to 0.61, above 0.6",
    ),
    (
        Rule(name="rmse-ceiling", metric="rmse", comparison=">", threshold=2.0, clear_threshold=1.5),
        [3.0, 1.5],
        None,
        "rmse 3 > 2",
        "rmse back to 1.5, at or below 1.5",
    ),
    (
        Rule(name="drift", metric="dataset_drift", comparison=">=", threshold=1.0),
        [1.0, 0.0],
        None,
        "dataset_drift 1 >= 1",
        "dataset_drift back to 0, below 1",
    ),
    (  # relative to a baseline of 0.9: fires below 0.8, clears at or above 0.85
        Rule(
            name="acc-drop", metric="accuracy", comparison="<", threshold=-0.1, clear_threshold=-0.05,
            relative_to_baseline=True,
        ),
        [0.7, 0.86],
        0.9,
        "accuracy 0.7 < 0.8",
        "accuracy back to 0.86, at or above 0.85",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "values", "baseline", "firing_words", "resolved_words"), CASES)
def test_the_summary_line_reads_true_firing_and_resolved(
    rule: Rule, values: list[float], baseline: float | None, firing_words: str, resolved_words: str
) -> None:
    firing, resolved = _emitted(rule, values, baseline)
    assert summary_line(firing) == f"[FIRING warning] {rule.name} on churn v3 (all): {firing_words}"
    assert summary_line(resolved) == f"[RESOLVED] {rule.name} on churn v3 (all): {resolved_words}"


@pytest.mark.parametrize(("rule", "values", "baseline", "firing_words", "resolved_words"), CASES)
def test_slack_and_alertmanager_say_the_same(
    rule: Rule,
    values: list[float],
    baseline: float | None,
    firing_words: str,
    resolved_words: str,
    slack: FakeSlack,
    client: httpx.Client,
) -> None:
    firing, resolved = _emitted(rule, values, baseline)
    metric = rule.metric + " "
    assert deliver(SlackNotifier(Secret(slack.webhook_url)), [resolved], client).delivered
    message = slack.requests[0].json()
    assert message["text"].endswith(f": {resolved_words.replace('<', '&lt;')}")
    fields = [f["text"] for f in message["blocks"][1]["fields"]]
    assert f"*Observed vs threshold*\n{resolved_words.removeprefix(metric)}" in fields
    with FakeAlertmanager() as fake:
        assert deliver(AlertmanagerNotifier(url=fake.base_url), [firing, resolved], client).delivered
    posted = fake.requests[0].json()
    window = "in window 1970-01-01T00:{0:02d}:00.000Z to 1970-01-01T00:{1:02d}:00.000Z"
    assert [a["annotations"]["description"] for a in posted] == [
        f"{firing_words}; model churn version v3, segment all, {window.format(0, 1)}.",
        f"{resolved_words}; model churn version v3, segment all, {window.format(1, 2)}.",
    ]


def test_base_doctests() -> None:
    assert doctest.testmod(base).failed == 0
