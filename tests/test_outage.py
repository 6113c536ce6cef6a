"""No page is lost to an outage (issue 19): 503 for two minutes, 429 ``Retry-After: 5`` for one,
then healthy, with 60 alert series (firing, then resolved) to Slack and PagerDuty, and two
SIGKILLs of the notifier on one SQLite store.

Before the fix PagerDuty ended 26 of 120 notifications ``dead`` (each 429 counted toward a
12-attempt limit) and then sent and got accepted the resolves of those 26: incidents closed
that were never opened. Here every trigger must be accepted exactly once before its resolve,
nothing may be dead, and the only duplicate allowed is the documented crash window: a request
the destination accepted while the notifier was killed before it could record that.

The notifier is a real process (``stepped_notifier.py``) whose clock this test moves one
second per round, so the outage takes seconds, not minutes. The fakes answer by that same
clock, and kill the process from inside a request, at two chosen points:

1. PagerDuty's 100th request of the 503 phase, before it answers (nothing was accepted);
2. Slack's 3rd accepted message, after accepting it and before answering (the crash window).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from fakes import Recorded, Reply, sample_alert
from fakes.pagerduty import FakePagerDuty
from fakes.slack import FakeSlack
from sqlalchemy import select

from driftline.alerting.outbox import ingest
from driftline.alerting.subscriptions import subscriptions_from_config
from driftline.platform.store import make_engine, session_factory, upgrade
from driftline.platform.store.models import Notification, NotificationAttempt
from driftline.schemas import AlertEvent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
T0 = 1_800_000_000.0
SERVICE_UNAVAILABLE_UNTIL = T0 + 120
THROTTLED_UNTIL = T0 + 180
SERIES = 60
MODELS = 6
STEPPED = Path(__file__).with_name("stepped_notifier.py")


class Outage:
    """Mixin: answer by the test's clock, 503 then 429 ``Retry-After: 5`` then normally, and
    remember when each request came."""

    clock: Callable[[], float]

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        now = self.clock()
        if now < SERVICE_UNAVAILABLE_UNTIL:
            return Reply.json(503, {"status": "unavailable"})
        if now < THROTTLED_UNTIL:
            return Reply.json(429, {"status": "throttled"}, {"Retry-After": "5"})
        return super().handle(path, headers, body)  # type: ignore[misc]


class OutageSlack(Outage, FakeSlack):
    pass


class OutagePagerDuty(Outage, FakePagerDuty):
    pass


def series_key(i: int) -> str:
    return f"{i:032x}"


def slack_alerts(request: Recorded) -> list[tuple[str, str]]:
    """(dedup key, FIRING|RESOLVED) per alert section of one Slack message, in message order."""
    found = []
    for block in request.json()["blocks"]:
        if block["type"] == "section" and "fields" in block:
            state, rule = re.search(r"(FIRING|RESOLVED)\*.*?`r(\d+)`", block["text"]["text"]).groups()
            found.append((series_key(int(rule)), state))
    return found


def test_an_outage_and_two_kills_lose_no_page_and_close_nothing_unopened(tmp_path: Path) -> None:
    started = time.monotonic()
    now = [T0]
    store_url = f"sqlite:///{tmp_path}/store.sqlite"
    upgrade(store_url)
    engine = make_engine(store_url)
    sessions = session_factory(engine)

    firing: list[AlertEvent] = []
    resolves: list[tuple[float, AlertEvent]] = []
    for i in range(SERIES):
        kw: dict[str, Any] = {"rule": f"r{i:02d}", "model_id": f"m{i % MODELS}", "key": series_key(i)}
        firing.append(sample_alert("firing", **kw))
        # resolves arrive during the 503s, the 429s and after: 30 s .. 207 s into the outage
        resolves.append((T0 + 30 + 3 * i, sample_alert("resolved", **kw)))

    proc: list[subprocess.Popen[str]] = []
    kills: list[tuple[str, Recorded]] = []

    def kill_now(fake: str, request: Recorded) -> None:
        kills.append((fake, request))
        os.kill(proc[-1].pid, signal.SIGKILL)
        proc[-1].wait(10)

    with OutageSlack() as slack, OutagePagerDuty() as pagerduty:
        arrivals: dict[str, list[tuple[float, Recorded]]] = {"slack": [], "pagerduty": []}

        def hook(
            name: str, kill_at: Callable[[list[tuple[float, Recorded]]], bool]
        ) -> Callable[[Recorded], None]:
            def before_reply(request: Recorded) -> None:
                arrivals[name].append((now[0], request))
                if kill_at(arrivals[name]):
                    kill_now(name, request)

            return before_reply

        slack.clock = pagerduty.clock = lambda: now[0]
        pagerduty.before_reply = hook(
            "pagerduty",
            lambda seen: sum(r.status == 503 for _, r in seen) == 100 and seen[-1][1].status == 503,
        )
        slack.before_reply = hook(
            "slack", lambda seen: sum(r.status == 200 for _, r in seen) == 3 and seen[-1][1].status == 200
        )
        raw_subs = [
            {"name": "team", "kind": "slack", "settings": {"url": {"env": "TEST_SLACK_URL"}}},
            {
                "name": "oncall",
                "kind": "pagerduty",
                "settings": {"routing_key": {"env": "TEST_PD_KEY"}, "url": pagerduty.enqueue_url},
            },
        ]
        subs = subscriptions_from_config(raw_subs)
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(TEST_SLACK_URL=slack.webhook_url, TEST_PD_KEY=ROUTING_KEY)
        logs = tmp_path / "notifier.log"

        def start() -> None:
            seed = str(len(proc))
            argv = [sys.executable, str(STEPPED), store_url, json.dumps(raw_subs), seed, str(now[0])]
            with logs.open("a") as log:
                p = subprocess.Popen(
                    argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
                )
            proc.append(p)
            assert p.stdout is not None and p.stdout.readline() == "ready\n"

        def statuses() -> Counter[str]:
            with sessions() as s:
                return Counter(s.scalars(select(Notification.status)))

        with sessions.begin() as s:
            for event in firing:
                ingest(s, event, subs, int(now[0] * 1000))
        start()
        try:
            while not (now[0] > THROTTLED_UNTIL and not resolves and statuses()["pending"] == 0):
                assert now[0] < T0 + 3600, f"still pending after an hour (test clock): {statuses()}"
                with sessions.begin() as s:
                    while resolves and resolves[0][0] <= now[0]:
                        ingest(s, resolves.pop(0)[1], subs, int(now[0] * 1000))
                p = proc[-1]
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write(f"run {now[0]}\n")
                p.stdin.flush()
                if p.stdout.readline() == "":  # killed mid-round: a new process, the same moment
                    assert p.wait(10) == -signal.SIGKILL
                    start()
                    continue
                now[0] += 1.0
        finally:
            for p in proc:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
        finished_at = now[0]
        assert statuses() == {"delivered": 4 * SERIES}

    elapsed = time.monotonic() - started
    with sessions() as s:
        outcomes = Counter(s.scalars(select(NotificationAttempt.outcome)))
    engine.dispose()

    # Both kills happened where planned: PagerDuty's during the 503s, Slack's on an accepted message.
    assert [(name, r.status) for name, r in kills] == [("pagerduty", 503), ("slack", 200)]
    assert len(proc) == 3

    # PagerDuty: per series, one accepted trigger then one accepted resolve, and no resolve was
    # ever sent (whatever the answer) before its trigger had been accepted.
    for i in range(SERIES):
        key = series_key(i)
        sent = [
            (r.json()["event_action"], r.status)
            for _, r in arrivals["pagerduty"]
            if r.json()["dedup_key"] == key
        ]
        accepted = [action for action, status in sent if status == 202]
        assert accepted == ["trigger", "resolve"], (key, sent)
        first_resolve = next(n for n, (action, _) in enumerate(sent) if action == "resolve")
        assert ("trigger", 202) in sent[:first_resolve], (key, sent)
    assert len(pagerduty.events(series_key(0))) == 2

    # Slack: 120 of 120, firing before resolved, each once, except the alerts of the message in
    # flight at the second kill, which the restarted notifier sent once more, identically.
    accepted = [r for _, r in arrivals["slack"] if r.status == 200]
    seen = Counter(alert for r in accepted for alert in slack_alerts(r))
    in_window = kills[1][1]
    assert set(seen) == {(series_key(i), state) for i in range(SERIES) for state in ("FIRING", "RESOLVED")}
    assert {alert for alert, n in seen.items() if n > 1} == set(slack_alerts(in_window))
    assert set(seen.values()) == {1, 2} and max(seen.values()) == 2
    assert [r.body for r in accepted].count(in_window.body) == 2
    order: dict[str, list[str]] = defaultdict(list)
    for r in accepted:
        for key, state in slack_alerts(r):
            order[key].append(state)
    for key, states in order.items():
        assert states.index("RESOLVED") > max(n for n, s in enumerate(states) if s == "FIRING"), (key, states)

    # Nothing was given up, the 429s were obeyed as asked (5 s apart per series, and never
    # counted as backoff steps), and the notifier logged no give-up.
    assert not {"failed", "dead", "expired", "superseded"} & set(outcomes)
    assert outcomes["retry_after"] > 0 and outcomes["delivered"] == 4 * SERIES
    for name in arrivals:
        throttled_at: dict[str, float] = {}  # per series, when its latest request got a 429
        for at, r in arrivals[name]:
            keys = {k for k, _ in slack_alerts(r)} if name == "slack" else {r.json()["dedup_key"]}
            for key in keys:
                if key in throttled_at:
                    assert at - throttled_at.pop(key) >= 5.0, (name, key, at)
                if r.status == 429:
                    throttled_at[key] = at
    assert "gave up" not in logs.read_text()
    print(
        f"\noutage: every notification delivered at T0+{finished_at - T0:.0f} s (test clock) "
        f"in {elapsed:.1f} s of real time; attempts {dict(outcomes)}"
    )
