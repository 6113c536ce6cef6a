"""The notifier as a process: alerts topic -> outbox -> fakes, through failures and a SIGKILL.

The kill happens while both destinations answer 500, so no 2xx can be in flight: that is the
one window in which driftline may re-send (documented in docs/alerting.md), and excluding it is
what lets this test demand *exactly* once at the receivers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from fakes import FakeServer, Reply, sample_alert
from fakes.pagerduty import FakePagerDuty
from fakes.slack import FakeSlack
from sqlalchemy import select

from driftline.platform.broker import EmbeddedBroker
from driftline.platform.kafka import KafkaSettings, confluent_config, ensure_topics
from driftline.platform.store import make_engine, session_factory, upgrade
from driftline.platform.store.models import Notification, NotificationAttempt
from driftline.schemas import AlertEvent, encode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"

# Runs `driftline notifier` whether or not the lead has listed the module in MODULES yet.
RUNNER = """
import sys
import driftline.apps.commands as commands
name = "driftline.apps.commands.alerting_cli"
if name not in commands.MODULES:
    commands.MODULES = (*commands.MODULES, name)
from driftline.apps.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Switchable:
    """Mixin: answer per ``mode`` (``ok``, ``500``, ``429``) and stop/restart listening on the
    same port, so "connection refused" and "back again" hit one URL."""

    mode = "500"

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        if self.mode == "500":
            return Reply.json(500, {"status": "error"})
        if self.mode == "429":
            return Reply.json(429, {"status": "throttled"}, {"Retry-After": "1"})
        return super().handle(path, headers, body)  # type: ignore[misc]

    def go_down(self) -> None:
        server: ThreadingHTTPServer = self._server  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()

    def come_back(self) -> None:
        old: ThreadingHTTPServer = self._server  # type: ignore[attr-defined]
        new = ThreadingHTTPServer(old.server_address[:2], old.RequestHandlerClass)
        new.daemon_threads = True
        self._server = new
        threading.Thread(target=new.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


class SwitchSlack(Switchable, FakeSlack):
    pass


class SwitchPagerDuty(Switchable, FakePagerDuty):
    pass


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def failed_requests(fake: FakeServer) -> int:
    return sum(1 for r in fake.requests if r.status >= 300)


def test_exactly_once_through_failures_and_sigkill(
    broker: EmbeddedBroker, unique_prefix: str, tmp_path: Path
) -> None:
    settings = KafkaSettings(broker.bootstrap_servers, client_id="notifier-test")
    topic = f"{unique_prefix}alerts"
    ensure_topics(settings, {topic: 2})
    store_url = f"sqlite:///{tmp_path}/store.sqlite"
    upgrade(store_url)

    with SwitchSlack() as slack, SwitchPagerDuty() as pagerduty:
        config = tmp_path / "driftline.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "app_id": f"{unique_prefix}app",
                    "topics": {"prefix": unique_prefix},
                    "subscriptions": [
                        {
                            "name": "team",
                            "kind": "slack",
                            "settings": {"url": {"env": "TEST_SLACK_URL"}},
                            "rate_limit_per_s": 50,
                        },
                        {
                            "name": "oncall",
                            "kind": "pagerduty",
                            "matchers": ['severity=~"critical|error"'],
                            "settings": {"routing_key": {"env": "TEST_PD_KEY"}, "url": pagerduty.enqueue_url},
                        },
                    ],
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(TEST_SLACK_URL=slack.webhook_url, TEST_PD_KEY=ROUTING_KEY, DRIFTLINE_STORE_URL=store_url)
        argv = [
            sys.executable, "-c", RUNNER, "--config", str(config), "notifier",
            "--broker", broker.bootstrap_servers, "--quick-join",
            "--retry-base", "0.2", "--retry-cap", "0.5",
        ]  # fmt: skip
        logs = [open(tmp_path / f"notifier{i}.log", "wb") for i in (1, 2)]  # noqa: SIM115

        def start(i: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, env=env, stdout=logs[i], stderr=subprocess.STDOUT)

        # Three alert series on three models; two of them also resolve. One is a warning, which
        # the PagerDuty subscription's matcher does not take.
        keys = {"churn": "a" * 32, "fraud": "b" * 32, "ltv": "c" * 32}
        events: list[AlertEvent] = [
            sample_alert("firing", model_id="churn", key=keys["churn"]),
            sample_alert("firing", model_id="fraud", key=keys["fraud"], severity="error"),
            sample_alert("firing", model_id="ltv", key=keys["ltv"], severity="warning"),
            sample_alert("resolved", model_id="churn", key=keys["churn"]),
            sample_alert("resolved", model_id="fraud", key=keys["fraud"], severity="error"),
        ]
        producer = Producer(confluent_config(settings))
        for event in events:
            producer.produce(topic, encode(event), key=event.data.model_id.encode())
        assert producer.flush(10) == 0

        first = start(0)
        try:
            # Phase 1: 500s. Kill once both destinations have refused several attempts.
            wait_until(
                lambda: failed_requests(slack) >= 3 and failed_requests(pagerduty) >= 3,
                40,
                "500s at both fakes",
            )
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            # Phase 2: a new process, destinations throttle with Retry-After.
            slack.mode = pagerduty.mode = "429"
            second = start(1)
            wait_until(
                lambda: (
                    any(r.status == 429 for r in slack.requests)
                    and any(r.status == 429 for r in pagerduty.requests)
                ),
                40,
                "429s at both fakes",
            )
            # Phase 3: connection refused for a while.
            slack.go_down()
            pagerduty.go_down()
            time.sleep(2.0)
            # Phase 4: back, healthy.
            slack.mode = pagerduty.mode = "ok"
            slack.come_back()
            pagerduty.come_back()
            engine = make_engine(store_url)
            sessions = session_factory(engine)

            def all_delivered() -> bool:
                with sessions() as s:
                    statuses = list(s.scalars(select(Notification.status)))
                return len(statuses) == 9 and set(statuses) == {"delivered"}

            wait_until(all_delivered, 30, "every notification delivered")
            time.sleep(1.0)  # anything re-sent after delivery would show up now
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
        finally:
            for proc in (first, locals().get("second")):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            for log in logs:
                log.close()

        # Slack: each of the 5 emissions exactly once in accepted messages.
        seen: Counter[tuple[str, str]] = Counter()
        for r in slack.requests:
            if r.status == 200:
                for state, model in re.findall(r"\[(FIRING \w+|RESOLVED)\] \S+ on (\w+)", r.json()["text"]):
                    seen[(state.split()[0], model)] += 1
        assert seen == Counter(
            {
                ("FIRING", "churn"): 1,
                ("FIRING", "fraud"): 1,
                ("FIRING", "ltv"): 1,
                ("RESOLVED", "churn"): 1,
                ("RESOLVED", "fraud"): 1,
            }
        )
        # PagerDuty: one accepted trigger and one accepted resolve per paged series, none for the
        # warning, and no resolve ever *sent* before its trigger was accepted.
        for model in ("churn", "fraud"):
            key = keys[model]
            assert len(pagerduty.events(key, "trigger")) == 1
            assert len(pagerduty.events(key, "resolve")) == 1
            sequence = [
                (r.json()["event_action"], r.status)
                for r in pagerduty.requests
                if r.json()["dedup_key"] == key
            ]
            first_resolve = next(i for i, (a, _) in enumerate(sequence) if a == "resolve")
            assert ("trigger", 202) in sequence[:first_resolve], sequence
        assert pagerduty.events(keys["ltv"]) == []
        # The store saw all three kinds of trouble, and no credential.
        with sessions() as s:
            errors = [str(e) for e in s.scalars(select(NotificationAttempt.error))]
        engine.dispose()
        assert any("HTTP 500" in e for e in errors) and any("HTTP 429" in e for e in errors)
        assert any("transport error" in e for e in errors)
        logged = "".join((tmp_path / f"notifier{i}.log").read_text() for i in (1, 2))
        for text in [*errors, logged]:
            assert ROUTING_KEY not in text and slack.path not in text
        assert json.dumps(errors)  # rows are plain strings
