"""``driftline status`` shows the pages nobody got: notifications given up in the last day.

The store is filled through the real delivery stage against the PagerDuty fake: a trigger that
PagerDuty refuses (400) is ``failed`` and its resolve is withheld (``dead``, superseded).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import pytest
from fakes import sample_alert
from fakes.pagerduty import FakePagerDuty, invalid_event
from sqlalchemy.orm import Session, sessionmaker

from driftline.alerting.delivery import Delivery
from driftline.alerting.outbox import ingest
from driftline.alerting.secrets import Secret
from driftline.alerting.subscriptions import Subscription, make_notifier
from driftline.apps.status import GIVEN_UP_LOOKBACK_MS, collect_status, render_table, status_json
from driftline.platform.store import make_engine, session_factory, upgrade

pytestmark = pytest.mark.timeout(60)

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
T0_MS = 1_800_000_000_000
KEY = "c" * 32
REASON = "HTTP 400: 'payload.summary' is missing or blank"


@pytest.fixture()
def sessions(pagerduty: FakePagerDuty, client: httpx.Client) -> Iterator[sessionmaker[Session]]:
    engine = make_engine("sqlite://")
    upgrade(engine)
    sessions = session_factory(engine)
    sub = Subscription(
        "oncall", "pagerduty", settings={"routing_key": Secret(ROUTING_KEY), "url": pagerduty.enqueue_url}
    )
    with sessions.begin() as session:
        ingest(session, sample_alert("firing", key=KEY), [sub], T0_MS)
        ingest(session, sample_alert("resolved", key=KEY), [sub], T0_MS)
    pagerduty.script([invalid_event(["'payload.summary' is missing or blank"])])
    now = [T0_MS / 1000]
    delivery = Delivery(
        sessions, [sub], {"oncall": make_notifier(sub)}, client, clock=lambda: now[0], rng=random.Random(0)
    )
    delivery.run_once()
    now[0] += 1
    delivery.run_once()
    yield sessions
    engine.dispose()


def test_status_lists_the_given_up_notifications(sessions: sessionmaker[Session]) -> None:
    now = T0_MS + 60_000
    with sessions() as session:
        statuses = collect_status(session, now)
    table = render_table(statuses)
    section = table.split("\n\nNOTIFICATIONS GIVEN UP (last 24h)\n")[1].splitlines()
    assert [line.split()[:6] for line in section] == [
        ["MODEL", "RULE", "SUBSCRIPTION", "ALERT", "STATUS", "AT"],
        ["churn", "accuracy-drop", "oncall", "resolved", "dead", "2027-01-15"],
        ["churn", "accuracy-drop", "oncall", "firing", "failed", "2027-01-15"],
    ]
    assert section[1].endswith(f"superseded: its trigger (notification 1) was failed: {REASON}")
    assert section[2].endswith(REASON)
    document = status_json(statuses, now)
    assert [(g["alert_status"], g["status"], g["at_ms"]) for g in document["notifications_given_up"]] == [
        ("resolved", "dead", T0_MS + 1000),
        ("firing", "failed", T0_MS),
    ]
    assert document["notifications_given_up"][1] == {
        "model_id": "churn",
        "rule": "accuracy-drop",
        "dedup_key": KEY,
        "subscription": "oncall",
        "alert_status": "firing",
        "status": "failed",
        "reason": REASON,
        "at": "2027-01-15T08:00:00.000Z",
        "at_ms": T0_MS,
    }


def test_status_forgets_give_ups_older_than_a_day(sessions: sessionmaker[Session]) -> None:
    now = T0_MS + 1000 + GIVEN_UP_LOOKBACK_MS + 1
    with sessions() as session:
        statuses = collect_status(session, now)
    assert "NOTIFICATIONS GIVEN UP" not in render_table(statuses)
    assert "notifications_given_up" not in status_json(statuses, now)
