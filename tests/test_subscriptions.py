"""Subscriptions, matchers and secret references."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes import sample_alert

from driftline.alerting.notifiers import (
    AlertmanagerNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
)
from driftline.alerting.secrets import Secret, SecretError, resolve_secret, scrub
from driftline.alerting.subscriptions import (
    Matcher,
    Subscription,
    SubscriptionConfigError,
    alert_labels,
    make_notifier,
    route,
    subscriptions_from_config,
)

pytestmark = pytest.mark.timeout(30)


# --- matchers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('severity=~"critical|error"', "severity", "=~", "critical|error"),
        ("model = churn", "model", "=", "churn"),
        ('region!=""', "region", "!=", ""),
        (r'rule!="a\"b\\c"', "rule", "!=", 'a"b\\c'),
    ],
)
def test_matcher_parse(text: str, name: str, op: str, value: str) -> None:
    m = Matcher.parse(text)
    assert (m.name, m.op, m.value) == (name, op, value)
    assert Matcher.parse(str(m)) == m  # str() round-trips, quoting included


@pytest.mark.parametrize("text", ["severity", "=x", '1abc="x"', 'a="x', 'a="x"y"', 'a=~"("'])
def test_matcher_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Matcher.parse(text)


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ('severity=~"critical|error"', {"severity": "error"}, True),
        ('severity=~"critical|error"', {"severity": "warning"}, False),
        ('severity=~"crit"', {"severity": "critical"}, False),  # anchored: no substring match
        ('severity=~"crit.*"', {"severity": "critical"}, True),
        ('model=~"a|b"', {"model": "xa"}, False),  # anchoring covers the whole alternation
        ('severity!~"info|warning"', {"severity": "critical"}, True),
        ('severity!~"info|warning"', {"severity": "info"}, False),
        ("region=eu", {"region": "eu"}, True),
        ("region=eu", {}, False),
        ('region=""', {}, True),  # absent label == empty string, as in Alertmanager
        ("region!=eu", {}, True),
        ('region=~".*"', {}, True),
        ('region=~".+"', {}, False),
    ],
)
def test_matcher_semantics(matcher: str, labels: dict[str, str], expected: bool) -> None:
    # Oracle: Alertmanager anchors as ^(?:re)$, checked here with re.match on the anchored form.
    m = Matcher.parse(matcher)
    if m.op in ("=~", "!~"):
        anchored = re.match(f"^(?:{m.value})$", labels.get(m.name, "")) is not None
        assert anchored == (expected if m.op == "=~" else not expected)
    assert m.matches(labels) is expected


def test_alert_labels_and_routing() -> None:
    alert = sample_alert(segment={"region": "eu", "severity": "shadowed"})
    assert alert_labels(alert) == {
        "region": "eu",
        "model": "churn",
        "version": "v3",
        "rule": "accuracy-drop",
        "metric": "accuracy",
        "severity": "critical",  # the built-in label wins over a segment dimension
        "status": "firing",
    }
    subs = subscriptions_from_config(
        [
            {
                "name": "pager",
                "kind": "pagerduty",
                "matchers": ['severity=~"critical|error"', 'status="firing"'],
                "settings": {"routing_key": {"env": "PD_KEY"}},
            },
            {"name": "eu", "kind": "slack", "matchers": ["region=eu"], "settings": {"url": {"env": "SLACK"}}},
            {"name": "us", "kind": "slack", "matchers": ["region=us"], "settings": {"url": {"env": "SLACK"}}},
            {"name": "all", "kind": "webhook", "settings": {"url": "http://127.0.0.1:9/x"}},
        ]
    )
    assert [s.name for s in route(alert, subs)] == ["pager", "eu", "all"]
    assert [s.name for s in route(sample_alert("resolved", segment={"region": "us"}), subs)] == ["us", "all"]
    assert route(alert, subs)[0].matches(alert)


# --- config ------------------------------------------------------------------------------------


def test_config_builds_subscriptions() -> None:
    (sub,) = subscriptions_from_config(
        [
            {
                "name": "oncall",
                "kind": "pagerduty",
                "matchers": ["severity=critical"],
                "settings": {"routing_key": {"env": "PD_KEY"}, "source": "prod"},
                "group_wait_s": 30,
                "rate_limit_per_s": 2,
            }
        ]
    )
    assert sub == Subscription(
        name="oncall",
        kind="pagerduty",
        matchers=(Matcher("severity", "=", "critical"),),
        settings={"routing_key": {"env": "PD_KEY"}, "source": "prod"},
        group_wait_s=30.0,
        rate_limit_per_s=2.0,
    )


def test_a_subscription_may_set_how_long_its_notifications_are_retried() -> None:
    raw = {"name": "oncall", "kind": "pagerduty", "settings": {"routing_key": {"env": "K"}}}
    (default,) = subscriptions_from_config([raw])
    (own,) = subscriptions_from_config([{**raw, "give_up_after_s": 7200}])
    assert (default.give_up_after_s, own.give_up_after_s) == (None, 7200.0)
    for bad, message in ((0, "must be > 0"), ("1d", "expected a number")):
        with pytest.raises(
            SubscriptionConfigError, match=f"subscriptions\\[0\\] \\(oncall\\).give_up_after_s: {message}"
        ):
            subscriptions_from_config([{**raw, "give_up_after_s": bad}])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x"}, "subscriptions: expected a list"),
        ([{"kind": "slack"}], "subscriptions[0].name: required non-empty string"),
        ([{"name": "a", "kind": "email"}], "subscriptions[0] (a).kind: expected one of"),
        ([{"name": "a", "kind": "slack", "settings": {}}], "subscriptions[0] (a).settings.url: required"),
        (
            [{"name": "a", "kind": "slack", "settings": {"url": "https://hooks.slack.com/services/T/B/x"}}],
            "subscriptions[0] (a).settings.url: a literal secret is not allowed here",
        ),
        (
            [{"name": "a", "kind": "slack", "settings": {"url": {"vault": "x"}}}],
            'subscriptions[0] (a).settings.url: a secret reference must be {"env": NAME} or {"file": PATH}',
        ),
        (
            [{"name": "a", "kind": "slack", "settings": {"url": {"env": "S"}, "chanel": "#x"}}],
            "subscriptions[0] (a).settings: unknown keys ['chanel'] for kind 'slack'",
        ),
        (
            [{"name": "a", "kind": "slack", "matchers": ["sev"], "settings": {"url": {"env": "S"}}}],
            "subscriptions[0] (a).matchers[0]: not a matcher",
        ),
        (
            [{"name": "a", "kind": "webhook", "settings": {"url": "http://h", "batch": "yes"}}],
            "subscriptions[0] (a).settings.batch: wrong type str",
        ),
        (
            [{"name": "a", "kind": "webhook", "settings": {"url": "http://h"}, "rate_limit_per_s": 0}],
            "subscriptions[0] (a).rate_limit_per_s: must be > 0",
        ),
        (
            [
                {"name": "a", "kind": "webhook", "settings": {"url": "http://h"}},
                {"name": "a", "kind": "webhook", "settings": {"url": "http://h"}},
            ],
            "subscriptions[1] (a).name: duplicate subscription name",
        ),
        (
            [{"name": "a", "kind": "webhook", "settings": {"url": "h"}, "grop": 1}],
            "subscriptions[0]: unknown keys",
        ),
    ],
)
def test_config_errors_say_where(raw: object, message: str) -> None:
    with pytest.raises(SubscriptionConfigError) as info:
        subscriptions_from_config(raw)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_make_notifier_resolves_secrets_from_env_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "pd.key"
    key_file.write_text("K" * 32 + "\n")
    env = {"SLACK_URL": "https://hooks.slack.com/services/T/B/tok", "SIGN": "s3cret", "AM": "am-tok"}
    subs = subscriptions_from_config(
        [
            {
                "name": "s",
                "kind": "slack",
                "settings": {"url": {"env": "SLACK_URL"}, "dashboard_url": "https://d"},
            },
            {"name": "p", "kind": "pagerduty", "settings": {"routing_key": {"file": str(key_file)}}},
            {
                "name": "w",
                "kind": "webhook",
                "settings": {"url": "http://h/x", "signing_secret": {"env": "SIGN"}, "batch": False},
            },
            {
                "name": "a",
                "kind": "alertmanager",
                "settings": {"url": "http://am:9093", "bearer_token": {"env": "AM"}, "firing_ttl_s": 600},
            },
        ]
    )
    slack, pd, webhook, am = (make_notifier(s, environ=env) for s in subs)
    assert slack == SlackNotifier(Secret(env["SLACK_URL"]), dashboard_url="https://d")
    assert pd == PagerDutyNotifier(Secret("K" * 32))
    assert isinstance(webhook, WebhookNotifier)
    assert (webhook.url, webhook.signing_secret, webhook.batch) == ("http://h/x", Secret("s3cret"), False)
    assert am == AlertmanagerNotifier("http://am:9093", bearer_token=Secret("am-tok"), firing_ttl_s=600.0)


def test_missing_secret_is_a_clear_error() -> None:
    (sub,) = subscriptions_from_config([{"name": "s", "kind": "slack", "settings": {"url": {"env": "NOPE"}}}])
    with pytest.raises(SecretError, match="environment variable 'NOPE' is not set"):
        make_notifier(sub, environ={})


def test_literal_secrets_only_when_allowed_and_never_shown() -> None:
    url = "https://hooks.slack.com/services/T/B/literal-token"
    raw = [{"name": "s", "kind": "slack", "settings": {"url": url}}]
    with pytest.raises(SubscriptionConfigError):
        subscriptions_from_config(raw)
    (sub,) = subscriptions_from_config(raw, allow_literal_secrets=True)
    assert "literal-token" not in repr(sub)
    assert make_notifier(sub) == SlackNotifier(Secret(url))


# --- secrets -----------------------------------------------------------------------------------


def test_secret_hides_its_value() -> None:
    s = Secret("p@ss")
    assert [repr(s), str(s), f"{s}", f"{s!r}", "%s" % s] == ["<redacted>"] * 5  # noqa: UP031
    assert s.reveal() == "p@ss"
    assert s == Secret("p@ss") and s != Secret("other") and s != "p@ss"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(s)


def test_resolve_secret_errors_never_contain_values(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        resolve_secret({"file": str(empty)})
    with pytest.raises(SecretError, match="cannot read secret file"):
        resolve_secret({"file": str(tmp_path / "missing")})
    with pytest.raises(SecretError, match="literal secret is not allowed") as info:
        resolve_secret("hunter2")
    assert "hunter2" not in str(info.value)
    assert resolve_secret("hunter2", allow_literal=True).reveal() == "hunter2"
    assert resolve_secret({"env": "X"}, environ={"X": "v"}).reveal() == "v"


def test_scrub_removes_longest_first() -> None:
    url, token = "https://h/services/abc123", "abc123"
    assert scrub(f"failed {url} and {token}", [Secret(token), url]) == "failed <redacted> and <redacted>"
    assert scrub("nothing here", [Secret("")]) == "nothing here"
