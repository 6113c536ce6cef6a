"""Notifiers against local fakes that validate payloads like the real APIs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from fakes import Reply, sample_alert
from fakes.pagerduty import FakePagerDuty
from fakes.slack import FakeSlack, message_problem, slack_error
from fakes.webhook import FakeAlertmanager, FakeWebhook

from driftline.alerting.notifiers import (
    AlertmanagerNotifier,
    HttpRequest,
    Outcome,
    PagerDutyNotifier,
    SlackNotifier,
    WebhookNotifier,
    deliver,
    parse_retry_after,
    send,
)
from driftline.alerting.secrets import Secret
from driftline.schemas import AlertEvent

pytestmark = pytest.mark.timeout(30)

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"  # 32 chars, as PagerDuty requires
SIGNING_SECRET = "whsec-correct-horse-battery-staple"


def ok(status: int, detail: str = "") -> Outcome:
    return Outcome(True, False, None, f"HTTP {status}: {detail}" if detail else f"HTTP {status}", status)


# --- Slack -------------------------------------------------------------------------------------


def test_slack_single_alert_is_accepted_and_carries_the_facts(slack: FakeSlack, client: httpx.Client) -> None:
    notifier = SlackNotifier(Secret(slack.webhook_url), dashboard_url="https://grafana.example/d/churn")
    assert deliver(notifier, [sample_alert()], client) == ok(200, "ok")
    message = slack.requests[0].json()
    assert message_problem(message) is None
    # Slack parses ``text`` as mrkdwn too: its < is escaped like the fields' (shown as <)
    assert message["text"] == (
        "[FIRING critical] accuracy-drop on churn v3 (region=eu): accuracy 0.71 &lt; 0.8"
    )
    header, section, context, actions = message["blocks"]
    assert header["text"]["text"] == ":red_circle: FIRING (critical): accuracy-drop on churn v3"
    fields = [f["text"] for f in section["fields"]]
    assert fields[:6] == [
        "*Model*\nchurn",
        "*Version*\nv3",
        "*Segment*\nregion=eu",
        "*Rule*\naccuracy-drop (accuracy)",
        "*Observed vs threshold*\n0.71 &lt; 0.8",  # mrkdwn escapes <
        "*Window*\n2026-11-24T21:00:00.000Z → 2026-11-24T21:05:00.000Z",
    ]
    assert context["type"] == "context"
    assert actions["elements"][0]["url"] == "https://grafana.example/d/churn"


def test_slack_resolved_is_marked(slack: FakeSlack, client: httpx.Client) -> None:
    notifier = SlackNotifier(Secret(slack.webhook_url))
    assert deliver(notifier, [sample_alert("resolved")], client) == ok(200, "ok")
    message = slack.requests[0].json()
    assert message["text"].startswith("[RESOLVED] accuracy-drop")
    assert message["blocks"][0]["text"]["text"] == ":white_check_mark: RESOLVED: accuracy-drop on churn v3"
    assert "*Resolved at*\n2026-11-24T22:10:00.000Z" in [f["text"] for f in message["blocks"][1]["fields"]]
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "context"]  # no links, no buttons


def test_slack_large_group_respects_block_limit(slack: FakeSlack, client: httpx.Client) -> None:
    alerts = [sample_alert(segment={"region": f"r{i}"}, key=f"{i:032x}") for i in range(120)]
    notifier = SlackNotifier(Secret(slack.webhook_url), dashboard_url="https://grafana.example/d/churn")
    assert deliver(notifier, alerts, client) == ok(200, "ok")
    blocks = slack.requests[0].json()["blocks"]
    assert len(blocks) == 50
    # header + 46 alert sections + "and 74 more" + context + actions
    assert blocks[0]["text"]["text"] == "120 firing: churn"
    assert blocks[47]["text"]["text"] == "_…and 74 more_"
    assert [b["type"] for b in blocks[-2:]] == ["context", "actions"]


def test_slack_oversized_fields_are_truncated_to_limits(slack: FakeSlack, client: httpx.Client) -> None:
    alert = sample_alert(
        rule="r" * 500, segment={"k": "v" * 5000}, links={"runbook": "https://x/" + "a" * 4000}
    )
    assert deliver(SlackNotifier(Secret(slack.webhook_url)), [alert], client) == ok(200, "ok")
    blocks = slack.requests[0].json()["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150
    assert max(len(f["text"]) for f in blocks[1]["fields"]) == 2000
    assert [b["type"] for b in blocks] == ["header", "section", "context"]  # over-long link dropped


def test_slack_fake_rejects_what_slack_rejects(slack: FakeSlack, client: httpx.Client) -> None:
    # The fake must not be a pushover, or the acceptance tests above prove nothing.
    header = {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}
    bad = [
        {"blocks": [header]},
        {},
        {"blocks": [{"type": "bogus"}]},
        {"text": "x", "blocks": [{"type": "section"}]},
    ]
    for message in bad:
        response = client.post(slack.webhook_url, json=message)
        assert (response.status_code, response.text) == (400, "invalid_payload")
    assert client.post(slack.base_url + "/services/T/B/wrong", json={"text": "x"}).status_code == 404


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (slack_error(400, "invalid_payload"), Outcome(False, False, None, "HTTP 400: invalid_payload", 400)),
        (
            slack_error(403, "action_prohibited"),
            Outcome(False, False, None, "HTTP 403: action_prohibited", 403),
        ),
        (
            slack_error(404, "channel_not_found"),
            Outcome(False, False, None, "HTTP 404: channel_not_found", 404),
        ),
        (
            slack_error(410, "channel_is_archived"),
            Outcome(False, False, None, "HTTP 410: channel_is_archived", 410),
        ),
        (
            slack_error(429, "rate_limited", {"Retry-After": "1"}),
            Outcome(False, True, 1.0, "HTTP 429: rate_limited", 429),
        ),
        (slack_error(429, ""), Outcome(False, True, None, "HTTP 429", 429)),
        (slack_error(500, "rollup_error"), Outcome(False, True, None, "HTTP 500: rollup_error", 500)),
        (slack_error(503, "", {"Retry-After": "7"}), Outcome(False, True, 7.0, "HTTP 503", 503)),
    ],
)
def test_slack_responses_are_classified(
    slack: FakeSlack, client: httpx.Client, reply: Reply, expected: Outcome
) -> None:
    slack.script([reply])
    assert deliver(SlackNotifier(Secret(slack.webhook_url)), [sample_alert()], client) == expected


def test_scripted_sequence_then_success(slack: FakeSlack, client: httpx.Client) -> None:
    slack.script([slack_error(500, "rollup_error"), slack_error(429, "rate_limited", {"Retry-After": "1"})])
    notifier = SlackNotifier(Secret(slack.webhook_url))
    outcomes = [deliver(notifier, [sample_alert()], client) for _ in range(3)]
    assert outcomes == [
        Outcome(False, True, None, "HTTP 500: rollup_error", 500),
        Outcome(False, True, 1.0, "HTTP 429: rate_limited", 429),
        ok(200, "ok"),
    ]
    assert [r.status for r in slack.requests] == [500, 429, 200]


# --- PagerDuty ---------------------------------------------------------------------------------


def test_pagerduty_trigger_and_resolve_share_the_dedup_key(
    pagerduty: FakePagerDuty, client: httpx.Client
) -> None:
    notifier = PagerDutyNotifier(
        Secret(ROUTING_KEY), url=pagerduty.enqueue_url, client_url="https://dl.example"
    )
    key = "0123456789abcdef0123456789abcdef"
    links = {"dashboard": "https://grafana.example/d/churn"}
    assert deliver(notifier, [sample_alert(links=links)], client) == ok(202)
    assert deliver(notifier, [sample_alert("resolved")], client) == ok(202)
    (trigger,) = pagerduty.events(key, "trigger")
    (resolve,) = pagerduty.events(key, "resolve")
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key}
    payload = trigger["payload"]
    assert (
        payload["summary"] == "[FIRING critical] accuracy-drop on churn v3 (region=eu): accuracy 0.71 < 0.8"
    )
    assert (payload["severity"], payload["component"], payload["group"], payload["class"]) == (
        "critical",
        "churn",
        "v3",
        "accuracy-drop",
    )
    assert payload["custom_details"]["evidence"] == {"n_labelled": 512, "baseline": 0.86}
    assert payload["custom_details"]["observed"] == 0.71
    assert trigger["links"] == [{"href": "https://grafana.example/d/churn", "text": "dashboard"}]
    assert trigger["client_url"] == "https://dl.example"


@pytest.mark.parametrize("severity", ["critical", "error", "warning", "info"])
def test_pagerduty_severity_and_long_summary_accepted(
    pagerduty: FakePagerDuty, client: httpx.Client, severity: str
) -> None:
    notifier = PagerDutyNotifier(Secret(ROUTING_KEY), url=pagerduty.enqueue_url)
    assert deliver(notifier, [sample_alert(rule="x" * 2000, severity=severity)], client) == ok(202)
    payload = pagerduty.requests[0].json()["payload"]
    assert (len(payload["summary"]), payload["severity"]) == (1024, severity)


def test_pagerduty_does_not_group() -> None:
    notifier = PagerDutyNotifier(Secret(ROUTING_KEY))
    assert notifier.max_alerts_per_request == 1
    with pytest.raises(ValueError, match="one event per request"):
        notifier.build([sample_alert(), sample_alert(key="f" * 32)])


def test_pagerduty_invalid_event_reason_is_pagerdutys_errors(
    pagerduty: FakePagerDuty, client: httpx.Client
) -> None:
    notifier = PagerDutyNotifier(Secret("too-short"), url=pagerduty.enqueue_url)
    expected = "HTTP 400: Length of 'routing_key' is incorrect (should be 32 characters)"
    assert deliver(notifier, [sample_alert()], client) == Outcome(False, False, None, expected, 400)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            Reply.json(429, {"status": "throttle event"}, {"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"}),
            None,
        ),
        (Reply(500, b""), Outcome(False, True, None, "HTTP 500", 500)),
        (
            Reply(502, b"<html>Bad Gateway</html>"),
            Outcome(False, True, None, "HTTP 502: <html>Bad Gateway</html>", 502),
        ),
        (
            Reply.json(
                400, {"status": "invalid event", "message": "Event object is invalid", "errors": ["a", "b"]}
            ),
            Outcome(False, False, None, "HTTP 400: a; b", 400),
        ),
    ],
)
def test_pagerduty_responses_are_classified(
    pagerduty: FakePagerDuty, client: httpx.Client, reply: Reply, expected: Outcome | None
) -> None:
    pagerduty.script([reply])
    notifier = PagerDutyNotifier(Secret(ROUTING_KEY), url=pagerduty.enqueue_url)
    before = time.time()
    outcome = deliver(notifier, [sample_alert()], client)
    after = time.time()
    if expected is None:  # 429 with an HTTP-date: the wait is relative to the wall clock
        target = datetime(2037, 10, 21, 7, 28, tzinfo=UTC).timestamp()
        assert (outcome.delivered, outcome.retry, outcome.http_status) == (False, True, 429)
        assert outcome.reason == "HTTP 429: throttle event"
        assert outcome.retry_after_s is not None
        assert target - after <= outcome.retry_after_s <= target - before
    else:
        assert outcome == expected
    assert notifier.classify(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"") == Outcome(
        False, True, 0.0, "HTTP 429", 429
    )


# --- webhook and Alertmanager ------------------------------------------------------------------


def test_webhook_batch_is_signed_verifiably(client: httpx.Client) -> None:
    alerts = [sample_alert(), sample_alert("resolved", key="f" * 32)]
    notifier = WebhookNotifier(url="", signing_secret=Secret(SIGNING_SECRET), clock=lambda: 1_800_000_000.9)
    with FakeWebhook() as fake:
        notifier = WebhookNotifier(
            url=fake.base_url + "/hooks/driftline",
            signing_secret=notifier.signing_secret,
            clock=notifier.clock,
        )
        assert deliver(notifier, alerts, client) == ok(200)
    (request,) = fake.requests
    assert request.headers["content-type"] == "application/cloudevents-batch+json"
    assert request.headers["x-driftline-timestamp"] == "1800000000"
    # Independent oracle: the receiver's verification, written from the documented recipe.
    expected = hmac.new(SIGNING_SECRET.encode(), b"1800000000." + request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-driftline-signature"] == f"sha256={expected}"
    assert msgspec.json.decode(request.body, type=list[AlertEvent]) == alerts
    assert [e["type"] for e in request.json()] == ["io.driftline.alert.firing", "io.driftline.alert.resolved"]


def test_webhook_structured_mode_sends_one_event(client: httpx.Client) -> None:
    with FakeWebhook() as fake:
        notifier = WebhookNotifier(url=fake.base_url, batch=False)
        assert notifier.max_alerts_per_request == 1
        assert deliver(notifier, [sample_alert()], client) == ok(200)
        with pytest.raises(ValueError, match="one event per request"):
            notifier.build([sample_alert(), sample_alert()])
    (request,) = fake.requests
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert "x-driftline-signature" not in request.headers
    assert msgspec.json.decode(request.body, type=AlertEvent) == sample_alert()


def test_alertmanager_postable_alerts(client: httpx.Client) -> None:
    firing = sample_alert(
        segment={"region": "eu", "model": "m-seg"}, links={"dashboard": "https://g.example/d"}
    )
    with FakeAlertmanager() as fake:
        notifier = AlertmanagerNotifier(url=fake.base_url + "/", bearer_token=Secret("am-token"))
        assert deliver(notifier, [firing, sample_alert("resolved")], client) == ok(200)
    (request,) = fake.requests
    assert request.path == "/api/v2/alerts"
    assert request.headers["authorization"] == "Bearer am-token"
    first, second = request.json()
    assert first["labels"] == {
        "alertname": "accuracy-drop",
        "model": "churn",
        "version": "v3",
        "severity": "critical",
        "metric": "accuracy",
        "region": "eu",
        "segment_model": "m-seg",
    }
    assert (first["startsAt"], first["endsAt"]) == ("2026-11-24T21:05:00.000Z", "2026-11-25T21:05:00.000Z")
    assert first["generatorURL"] == "https://g.example/d"
    assert first["annotations"]["summary"].startswith("[FIRING critical] accuracy-drop on churn v3")
    assert second["endsAt"] == "2026-11-24T22:10:00.000Z"


# --- classification helpers and transport errors -----------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: go now
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=lambda: 1445412470.0) == expected


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_retryable_and_secret_free(client: httpx.Client) -> None:
    token = "T0K3N-in-the-path-1234"
    request = HttpRequest("POST", Secret(f"http://127.0.0.1:{_closed_port()}/services/{token}"), {}, b"{}")
    outcome = send(request, client, timeout=2.0)
    assert (outcome.delivered, outcome.retry, outcome.retry_after_s, outcome.http_status) == (
        False,
        True,
        None,
        None,
    )
    assert outcome.reason.startswith("transport error: ConnectError")
    assert token not in repr(outcome)


def test_timeout_is_retryable(client: httpx.Client) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        outcome = send(HttpRequest("POST", url, {}, b"{}"), client, timeout=0.3)
    assert (outcome.delivered, outcome.retry, outcome.http_status) == (False, True, None)
    assert outcome.reason.startswith("transport error: ReadTimeout")


def test_unsupported_scheme_is_permanent(client: httpx.Client) -> None:
    outcome = send(
        HttpRequest("POST", Secret("ftp://example.invalid/s3cr3t-path"), {}, b""), client, timeout=1
    )
    assert (outcome.delivered, outcome.retry) == (False, False)
    assert outcome.reason.startswith("invalid URL: UnsupportedProtocol")
    assert "s3cr3t-path" not in outcome.reason


def test_secrets_never_leak(
    slack: FakeSlack, pagerduty: FakePagerDuty, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slack_url = slack.webhook_url
    slack_token = slack_url.rsplit("/", 1)[1]
    secrets = [slack_token, ROUTING_KEY, SIGNING_SECRET]
    slack_notifier = SlackNotifier(Secret(slack_url))
    pd = PagerDutyNotifier(Secret(ROUTING_KEY), url=pagerduty.enqueue_url)
    # a destination that echoes the request body back in its error, as some proxies do
    pagerduty.script(
        [
            Reply.json(400, {"errors": [f"bad key {ROUTING_KEY}"]}),
            Reply(500, f"routing_key={ROUTING_KEY}".encode()),
        ]
    )
    slack.script([slack_error(404, "channel_not_found")])
    refused = SlackNotifier(Secret(f"http://127.0.0.1:{_closed_port()}/services/T/B/{slack_token}"))
    outcomes = [
        deliver(slack_notifier, [sample_alert()], client),
        deliver(slack_notifier, [sample_alert()], client),
        deliver(pd, [sample_alert()], client),
        deliver(pd, [sample_alert()], client),
        deliver(pd, [sample_alert()], client),
        deliver(refused, [sample_alert()], client),
    ]
    assert [o.http_status for o in outcomes] == [404, 200, 400, 500, 202, None]
    webhook = WebhookNotifier(url=Secret(slack_url), signing_secret=Secret(SIGNING_SECRET))
    texts: list[Any] = [
        *outcomes,
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        slack_notifier,
        pd,
        webhook,
        slack_notifier.build([sample_alert()]),
        pd.build([sample_alert()]),
        webhook.build([sample_alert()]),
    ]
    assert "HTTP Request" in caplog.text  # httpx did log its requests, redacted
    for text in texts:
        for secret in secrets:
            assert secret not in repr(text) and secret not in str(text)
    assert "bad key <redacted>" in outcomes[2].reason


def test_httprequest_repr_hides_body_and_secret_url() -> None:
    request = HttpRequest("POST", Secret("https://hooks/x"), {"Authorization": Secret("Bearer t")}, b"abc")
    assert (
        repr(request)
        == "HttpRequest(method='POST', url='<redacted>', headers=['Authorization'], body=<3 bytes>)"
    )
    assert json.dumps([str(s) for s in request.all_secrets()]) == '["<redacted>", "<redacted>"]'
