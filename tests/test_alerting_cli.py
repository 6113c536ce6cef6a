"""``driftline subscriptions | alerts | retraining | db`` through the real entry point."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fakes import sample_alert
from fakes.pagerduty import FakePagerDuty, invalid_event
from fakes.slack import FakeSlack

import driftline.apps.cli
from driftline.alerting.delivery import Delivery
from driftline.alerting.outbox import ingest
from driftline.alerting.secrets import Secret
from driftline.alerting.subscriptions import Subscription, make_notifier
from driftline.platform.store import head_revision, make_engine, record_alert, session_factory

pytestmark = pytest.mark.timeout(60)

MODULE = "driftline.apps.commands.alerting_cli"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if MODULE not in driftline.apps.cli.MODULES:
        monkeypatch.setattr(driftline.apps.cli, "MODULES", (*driftline.apps.cli.MODULES, MODULE))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = driftline.apps.cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture()
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/cli.sqlite"
    assert run(capsys, "db", "upgrade", "--store-url", url) == (0, f"{url}: at revision {head_revision()}\n")
    yield url


def test_db_current_and_downgrade(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    head = head_revision()
    assert run(capsys, "db", "current", "--store-url", store) == (
        0,
        f"{store}: revision {head}, head {head} (up to date)\n",
    )
    assert run(capsys, "db", "downgrade", "base", "--store-url", store) == (
        0,
        f"{store}: at revision base (empty)\n",
    )
    code, out = run(capsys, "db", "current", "--store-url", store)
    assert code == 1 and "revision none" in out and "needs `driftline db upgrade`" in out


def test_alerts_list_filters_and_json(
    store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(store)
    with session_factory(engine).begin() as session:
        record_alert(session, sample_alert("firing", model_id="churn", key="a" * 32), now_ms=1)
        record_alert(session, sample_alert("firing", model_id="fraud", key="b" * 32), now_ms=1)
        record_alert(session, sample_alert("resolved", model_id="fraud", key="b" * 32), now_ms=2)
    engine.dispose()
    monkeypatch.setenv("DRIFTLINE_STORE_URL", store)  # the environment variable is enough
    code, out = run(capsys, "alerts", "list", "--status", "firing", "--json")
    assert code == 0
    assert json.loads(out) == [
        {
            "dedup_key": "a" * 32,
            "status": "firing",
            "severity": "critical",
            "rule": "accuracy-drop",
            "model_id": "churn",
            "model_version": "v3",
            "segment": {"region": "eu"},
            "first_fired": "2026-11-24T21:05:00.000Z",
            "last_changed": "2026-11-24T21:05:00.000Z",
            "notifications_given_up": [],
        }
    ]
    code, out = run(capsys, "alerts", "list", "--model", "fraud")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].split() == [
        "LAST_CHANGED",
        "STATUS",
        "SEVERITY",
        "MODEL",
        "VERSION",
        "RULE",
        "SEGMENT",
        "DEDUP_KEY",
    ]
    assert lines[1].split() == [
        "2026-11-24T21:05:00.000Z",
        "resolved",
        "critical",
        "fraud",
        "v3",
        "accuracy-drop",
        "region=eu",
        "b" * 32,
    ]
    assert run(capsys, "alerts", "list", "--since", "2026-11-24T21:05:00.001Z", "--json") == (0, "[]\n")
    code, out = run(capsys, "alerts", "list", "--limit", "1", "--json")
    assert len(json.loads(out)) == 1
    code, out = run(capsys, "retraining", "list")
    assert (code, out.split()) == (0, ["WINDOW_END", "MODEL", "VERSION", "REASON", "IDEMPOTENCY_KEY"])


def test_subscriptions_add_list_test_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "driftline.yaml"
    config.write_text(yaml.safe_dump({"app_id": "demo", "subscriptions": []}))
    with FakeSlack() as slack, FakePagerDuty() as pagerduty:
        monkeypatch.setenv("CLI_SLACK_URL", slack.webhook_url)
        monkeypatch.setenv("CLI_PD_KEY", ROUTING_KEY)
        code, out = run(
            capsys, "--config", str(config), "subscriptions", "add", "team", "--kind", "slack",
            "--setting", "url=env:CLI_SLACK_URL", "--matcher", 'model=~"churn|fraud"', "--group-wait", "30",
        )  # fmt: skip
        assert code == 0, out
        code, out = run(
            capsys, "subscriptions", "add", "oncall", "--kind", "pagerduty", "--config", str(config),
            "--setting", "routing_key=env:CLI_PD_KEY", "--setting", f"url={pagerduty.enqueue_url}",
        )  # fmt: skip
        assert code == 0, out
        # A literal secret is refused, and the file is left as it was.
        before = config.read_text()
        code, out = run(
            capsys, "subscriptions", "add", "leak", "--kind", "slack", "--config", str(config),
            "--setting", f"url={slack.webhook_url}",
        )  # fmt: skip
        assert code == 2 and "literal secret is not allowed" in out and config.read_text() == before
        assert yaml.safe_load(config.read_text())["subscriptions"][0] == {
            "name": "team",
            "kind": "slack",
            "matchers": ['model=~"churn|fraud"'],
            "settings": {"url": {"env": "CLI_SLACK_URL"}},
            "group_wait_s": 30.0,
        }
        code, out = run(capsys, "--config", str(config), "subscriptions", "list", "--json")
        assert json.loads(out) == [
            {
                "name": "team",
                "kind": "slack",
                "matchers": ['model=~"churn|fraud"'],
                "group_wait_s": 30.0,
                "rate_limit_per_s": None,
            },
            {
                "name": "oncall",
                "kind": "pagerduty",
                "matchers": [],
                "group_wait_s": 0.0,
                "rate_limit_per_s": None,
            },
        ]

        code, slack_out = run(capsys, "--config", str(config), "subscriptions", "test", "team")
        assert code == 0 and slack_out == "team: firing test alert delivered (HTTP 200: ok)\n"
        assert len(slack.requests) == 1 and "driftline-test" in slack.requests[0].json()["text"]
        code, pd_out = run(capsys, "--config", str(config), "subscriptions", "test", "oncall")
        assert code == 0, pd_out
        actions = [r.json()["event_action"] for r in pagerduty.requests if r.status == 202]
        assert actions == ["trigger", "resolve"]  # the test incident is closed again
        assert len({r.json()["dedup_key"] for r in pagerduty.requests}) == 1
    code, out = run(
        capsys, "--config", str(config), "subscriptions", "test", "team"
    )  # server gone: the exit code says so
    assert code == 1 and "retryable (transport error" in out
    for text in (slack_out, pd_out, out, config.read_text()):
        assert ROUTING_KEY not in text and slack.path not in text

    assert run(capsys, "--config", str(config), "subscriptions", "remove", "team")[0] == 0
    assert [s["name"] for s in yaml.safe_load(config.read_text())["subscriptions"]] == ["oncall"]
    code, out = run(capsys, "--config", str(config), "subscriptions", "remove", "team")
    assert code == 2 and "no subscription named 'team'" in out


def test_alerts_list_shows_the_notifications_given_up(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A lost page is visible next to its alert: the trigger a 400 ended, and its withheld resolve."""
    engine = make_engine(store)
    sessions = session_factory(engine)
    key = "c" * 32
    with FakePagerDuty() as pagerduty, httpx.Client(trust_env=False) as client:
        sub = Subscription(
            "oncall", "pagerduty", settings={"routing_key": Secret(ROUTING_KEY), "url": pagerduty.enqueue_url}
        )
        with sessions.begin() as session:
            ingest(session, sample_alert("firing", key=key), [sub], 1_000)
            ingest(session, sample_alert("resolved", key=key), [sub], 1_000)
            record_alert(session, sample_alert("firing", model_id="fraud", key="d" * 32), now_ms=1)
        pagerduty.script([invalid_event(["'payload.summary' is missing or blank"])])
        now = [1.0]
        delivery = Delivery(
            sessions,
            [sub],
            {"oncall": make_notifier(sub)},
            client,
            clock=lambda: now[0],
            rng=random.Random(0),
        )
        delivery.run_once()
        now[0] = 2.0
        delivery.run_once()
    engine.dispose()
    code, out = run(capsys, "alerts", "list", "--json", "--store-url", store)
    assert code == 0
    by_key = {r["dedup_key"]: r["notifications_given_up"] for r in json.loads(out)}
    reason = "HTTP 400: 'payload.summary' is missing or blank"
    assert by_key == {
        "d" * 32: [],
        key: [
            {
                "subscription": "oncall",
                "alert_status": "resolved",
                "status": "dead",
                "reason": f"superseded: its trigger (notification 1) was failed: {reason}",
                "given_up": "1970-01-01T00:00:02.000Z",
            },
            {
                "subscription": "oncall",
                "alert_status": "firing",
                "status": "failed",
                "reason": reason,
                "given_up": "1970-01-01T00:00:01.000Z",
            },
        ],
    }
    code, out = run(capsys, "alerts", "list", "--store-url", store)
    section = out.split("\n\nNOTIFICATIONS GIVEN UP\n")[1].splitlines()
    assert section[0].split() == ["GIVEN_UP", "SUBSCRIPTION", "ALERT", "STATUS", "DEDUP_KEY", "REASON"]
    assert section[2].split()[:5] == ["1970-01-01T00:00:01.000Z", "oncall", "firing", "failed", key]
    assert section[2].endswith(reason) and len(section) == 3
