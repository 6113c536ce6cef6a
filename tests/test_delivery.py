"""The outbox and delivery stages against local Slack and PagerDuty fakes.

Time is a hand-moved clock wherever the assertion is about scheduling (backoff, Retry-After,
group_wait, the default Slack rate), so expected due times are exact; only the rate-limit test
uses the wall clock, because it measures what the receiver saw.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import msgspec
import pytest
from fakes import Reply, sample_alert
from fakes.pagerduty import FakePagerDuty, invalid_event
from fakes.slack import FakeSlack, slack_error
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from driftline.alerting.delivery import Delivery, Sent
from driftline.alerting.outbox import RetryPolicy, TokenBucket, ingest
from driftline.alerting.secrets import Secret
from driftline.alerting.subscriptions import Subscription, make_notifier
from driftline.platform.store import make_engine, session_factory, upgrade
from driftline.platform.store.models import Notification, NotificationAttempt
from driftline.schemas import AlertEvent

pytestmark = pytest.mark.timeout(60)

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
T0 = 1_800_000_000.0
SEED = 7


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def sessions() -> Iterator[sessionmaker[Session]]:
    engine = make_engine("sqlite://")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def slack_sub(fake: FakeSlack, **kw: Any) -> Subscription:
    return Subscription(name="team", kind="slack", settings={"url": Secret(fake.webhook_url)}, **kw)


def pd_sub(fake: FakePagerDuty, **kw: Any) -> Subscription:
    settings = {"routing_key": Secret(ROUTING_KEY), "url": fake.enqueue_url}
    return Subscription(name="oncall", kind="pagerduty", settings=settings, **kw)


def make_delivery(
    sessions: sessionmaker[Session],
    subs: list[Subscription],
    client: httpx.Client,
    clock: Any,
    policy: RetryPolicy | None = None,
) -> Delivery:
    notifiers = {s.name: make_notifier(s) for s in subs}
    return Delivery(
        sessions, subs, notifiers, client, policy=policy, clock=clock, rng=random.Random(SEED), timeout_s=5
    )


def queue(sessions: sessionmaker[Session], subs: list[Subscription], clock: Any, *events: AlertEvent) -> None:
    with sessions.begin() as session:
        for event in events:
            ingest(session, event, subs, int(clock() * 1000))


def notifications(sessions: sessionmaker[Session]) -> list[Notification]:
    with sessions() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def attempts(sessions: sessionmaker[Session]) -> list[tuple[str, int | None, str | None]]:
    with sessions() as session:
        rows = session.scalars(select(NotificationAttempt).order_by(NotificationAttempt.id))
        return [(a.outcome, a.http_status, a.error) for a in rows]


# ---- outcomes, one per answer -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "attempt", "next_delay_ms"),
    [
        (None, "delivered", ("delivered", 200, None), None),
        (slack_error(400, "invalid_payload"), "failed", ("failed", 400, "HTTP 400: invalid_payload"), None),
        (
            slack_error(404, "channel_not_found"),
            "failed",
            ("failed", 404, "HTTP 404: channel_not_found"),
            None,
        ),
        (
            slack_error(410, "channel_is_archived"),
            "failed",
            ("failed", 410, "HTTP 410: channel_is_archived"),
            None,
        ),
        (
            slack_error(429, "rate_limited", {"Retry-After": "7"}),
            "pending",
            ("retry_after", 429, "HTTP 429: rate_limited"),
            7000,
        ),
    ],
)
def test_slack_outcomes(
    sessions: sessionmaker[Session],
    client: httpx.Client,
    slack: FakeSlack,
    reply: Reply | None,
    status: str,
    attempt: tuple[str, int, str | None],
    next_delay_ms: int | None,
) -> None:
    clock = Clock()
    subs = [slack_sub(slack)]
    if reply is not None:
        slack.script([reply])
    queue(sessions, subs, clock, sample_alert())
    sent = make_delivery(sessions, subs, client, clock).run_once()
    assert len(sent) == 1 and len(slack.requests) == 1
    [row] = notifications(sessions)
    assert row.status == status
    assert row.attempts == 1
    assert attempts(sessions) == [attempt]
    if next_delay_ms is None:
        assert row.next_attempt_ms is None
    else:
        assert row.next_attempt_ms == int(T0 * 1000) + next_delay_ms
    assert (row.delivered_ms == int(T0 * 1000)) is (status == "delivered")


@pytest.mark.parametrize(
    ("reply", "status", "attempt"),
    [
        (None, "delivered", ("delivered", 202, None)),
        (invalid_event(["'payload.summary' is missing or blank"]), "failed", None),
        (Reply.json(429, {"status": "throttled"}), "pending", ("retry", 429, "HTTP 429: throttled")),
        (Reply.json(500, {"status": "error"}), "pending", ("retry", 500, "HTTP 500: error")),
    ],
)
def test_pagerduty_outcomes(
    sessions: sessionmaker[Session],
    client: httpx.Client,
    pagerduty: FakePagerDuty,
    reply: Reply | None,
    status: str,
    attempt: tuple[str, int, str] | None,
) -> None:
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    if reply is not None:
        pagerduty.script([reply])
    queue(sessions, subs, clock, sample_alert())
    make_delivery(sessions, subs, client, clock, RetryPolicy(base_s=2.0, cap_s=60)).run_once()
    [row] = notifications(sessions)
    assert row.status == status
    if attempt is None:  # the 400: PagerDuty's own error list is kept for a human
        assert attempts(sessions) == [("failed", 400, "HTTP 400: 'payload.summary' is missing or blank")]
    else:
        assert attempts(sessions) == [attempt]
    if status == "pending":
        # full jitter: uniform in [0, base * 2**0), one draw from the seeded generator
        expected = round(random.Random(SEED).random() * 2.0 * 1000)
        assert row.next_attempt_ms == int(T0 * 1000) + expected


def test_retries_back_off_until_the_age_limit_then_dead(
    sessions: sessionmaker[Session],
    client: httpx.Client,
    pagerduty: FakePagerDuty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    pagerduty.script([Reply.json(500, {"status": "error"})] * 100)
    queue(sessions, subs, clock, sample_alert())
    policy = RetryPolicy(base_s=1.0, cap_s=4.0, give_up_after_s=10.0)
    delivery = make_delivery(sessions, subs, client, clock, policy)
    oracle = random.Random(SEED)
    deadline_ms = int(T0 * 1000) + 10_000
    dead_before = _count("pagerduty", "dead")
    retries = 0
    while True:
        delivery.run_once()
        [row] = notifications(sessions)
        jitter = oracle.random()  # one draw per request, used or not
        if row.status != "pending":
            break
        retries += 1
        ceiling = min(4.0, 1.0 * 2 ** (retries - 1))
        expected = min(int(clock() * 1000) + round(jitter * ceiling * 1000), deadline_ms)
        assert row.next_attempt_ms == expected
        clock.t = (row.next_attempt_ms - 1) / 1000
        assert delivery.run_once() == []  # not before its backoff
        clock.t = row.next_attempt_ms / 1000
    # The last try is at the deadline itself, and it ends the row.
    assert (row.status, clock()) == ("dead", T0 + 10.0)
    assert retries > 4  # the cap was reached, and a count would not have stopped it earlier
    outcomes = attempts(sessions)
    assert [a[0] for a in outcomes] == ["retry"] * retries + ["expired"]
    assert outcomes[-1][2] == "gave up after 10 s of retries: HTTP 500: error"
    assert len(pagerduty.requests) == retries + 1
    assert _count("pagerduty", "dead") == dead_before + 1
    assert [r.levelname for r in caplog.records if "gave up" in r.getMessage()] == ["ERROR"]
    clock.t += 3600
    assert delivery.run_once() == []  # dead rows are never retried


def test_a_429_or_a_5xx_never_exhausts_a_notification(
    sessions: sessionmaker[Session], client: httpx.Client, pagerduty: FakePagerDuty
) -> None:
    """Fifty failures in a row (the old limit was 12) inside the age limit, then delivered."""
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    pagerduty.script(
        [Reply.json(503, {"status": "unavailable"}), Reply.json(429, {"status": "throttled"})] * 25
    )
    queue(sessions, subs, clock, sample_alert())
    delivery = make_delivery(sessions, subs, client, clock)  # the default policy: 24 h
    dead_before = _count("pagerduty", "dead")
    for _ in range(50):
        assert len(delivery.run_once()) == 1
        [row] = notifications(sessions)
        assert row.status == "pending"
        clock.t = row.next_attempt_ms / 1000
    assert clock() - T0 < 24 * 3600
    delivery.run_once()
    [row] = notifications(sessions)
    assert (row.status, row.attempts) == ("delivered", 51)
    assert [r.status for r in pagerduty.requests] == [503, 429] * 25 + [202]
    assert _count("pagerduty", "dead") == dead_before


def test_retry_after_is_obeyed_and_moves_no_backoff_step(
    sessions: sessionmaker[Session], client: httpx.Client, pagerduty: FakePagerDuty
) -> None:
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    throttled = Reply.json(429, {"status": "throttled"}, {"Retry-After": "5"})
    error = Reply.json(500, {"status": "error"})
    pagerduty.script([error, throttled, throttled, throttled, error, error])
    queue(sessions, subs, clock, sample_alert())
    delivery = make_delivery(sessions, subs, client, clock, RetryPolicy(base_s=2.0, cap_s=60.0))
    oracle = random.Random(SEED)
    delays = []
    for _ in range(6):
        before_ms = int(clock() * 1000)
        delivery.run_once()
        [row] = notifications(sessions)
        delays.append((row.next_attempt_ms - before_ms, oracle.random()))
        clock.t = row.next_attempt_ms / 1000
    # steps 1, 2, 3 for the three 500s (ceilings 2 s, 4 s, 8 s); exactly 5 s for each 429
    assert [d for d, _ in delays] == [
        round(delays[0][1] * 2000),
        5000,
        5000,
        5000,
        round(delays[4][1] * 4000),
        round(delays[5][1] * 8000),
    ]
    assert [a[0] for a in attempts(sessions)] == ["retry", "retry_after", "retry_after", "retry_after"] + [
        "retry"
    ] * 2


def test_retry_after_past_the_deadline_is_obeyed_then_the_row_is_dead(
    sessions: sessionmaker[Session], client: httpx.Client, pagerduty: FakePagerDuty
) -> None:
    clock = Clock()
    subs = [pd_sub(pagerduty, give_up_after_s=3.0)]  # the subscription's own limit
    pagerduty.script([Reply.json(429, {"status": "throttled"}, {"Retry-After": "5"})] * 2)
    queue(sessions, subs, clock, sample_alert())
    delivery = make_delivery(sessions, subs, client, clock)  # the notifier's default: 24 h
    delivery.run_once()
    [row] = notifications(sessions)
    assert row.next_attempt_ms == int(T0 * 1000) + 5000  # not pulled in to the 3 s deadline
    clock.t = T0 + 5.0
    delivery.run_once()
    [row] = notifications(sessions)
    assert row.status == "dead"
    assert [a[0] for a in attempts(sessions)] == ["retry_after", "expired"]


def later(event: AlertEvent, minutes: int) -> AlertEvent:
    """The same series, ``minutes`` later (a new window, so a new emission)."""
    from driftline.schemas import Window, alert_event, ms_to_rfc3339
    from driftline.schemas.timefmt import rfc3339_to_ms

    d = event.data
    shift = minutes * 60_000

    def moved(t: str) -> str:
        return ms_to_rfc3339(rfc3339_to_ms(t) + shift)

    window = Window(start=moved(d.window.start), end=moved(d.window.end))
    return alert_event(
        msgspec.structs.replace(
            d, window=window, starts_at=moved(d.starts_at), ends_at=d.ends_at and moved(d.ends_at)
        )
    )


def test_a_4xx_on_a_trigger_withholds_its_resolve_and_counts_dead(
    sessions: sessionmaker[Session],
    client: httpx.Client,
    pagerduty: FakePagerDuty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    key = "fedcba9876543210fedcba9876543210"
    pagerduty.script([invalid_event(["'payload.summary' is missing or blank"])])
    queue(sessions, subs, clock, sample_alert("firing", key=key), sample_alert("resolved", key=key))
    counts = {o: _count("pagerduty", o) for o in ("dead", "superseded", "failed")}
    delivery = make_delivery(sessions, subs, client, clock)
    assert [s.final_statuses for s in delivery.run_once()] == [("failed",)]
    clock.t += 1
    assert delivery.run_once() == []  # the resolve is not sent...
    clock.t += 3600
    assert delivery.run_once() == []  # ...ever
    assert [r.json()["event_action"] for r in pagerduty.requests] == ["trigger"]
    trigger, resolve = notifications(sessions)
    assert (trigger.status, trigger.last_error) == (
        "failed",
        "HTTP 400: 'payload.summary' is missing or blank",
    )
    assert (resolve.status, resolve.next_attempt_ms) == ("dead", None)
    assert resolve.last_error == (
        f"superseded: its trigger (notification {trigger.id}) was failed: "
        "HTTP 400: 'payload.summary' is missing or blank"
    )
    assert attempts(sessions)[-1] == ("superseded", None, resolve.last_error)
    assert {o: _count("pagerduty", o) - counts[o] for o in counts} == {
        "dead": 1,
        "superseded": 1,
        "failed": 1,
    }
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"subscription oncall: gave up on firing {key} (failed): "
        "HTTP 400: 'payload.summary' is missing or blank",
        f"subscription oncall: not sending the resolve of {key}: {resolve.last_error}",
    ]


def test_a_trigger_given_up_by_age_withholds_its_resolve(
    sessions: sessionmaker[Session], client: httpx.Client, pagerduty: FakePagerDuty
) -> None:
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    key = "fedcba9876543210fedcba9876543210"
    pagerduty.script([Reply.json(503, {"status": "unavailable"})] * 100)
    queue(sessions, subs, clock, sample_alert("firing", key=key))
    delivery = make_delivery(
        sessions, subs, client, clock, RetryPolicy(base_s=1.0, cap_s=1.0, give_up_after_s=5.0)
    )
    delivery.run_once()
    clock.t += 0.5
    queue(sessions, subs, clock, sample_alert("resolved", key=key))  # arrives during the outage
    while clock.t < T0 + 60:
        delivery.run_once()
        clock.t += 0.25
    assert {r.json()["event_action"] for r in pagerduty.requests} == {"trigger"}
    trigger, resolve = notifications(sessions)
    assert (trigger.status, resolve.status) == ("dead", "dead")
    assert resolve.last_error == (
        f"superseded: its trigger (notification {trigger.id}) was dead: "
        "gave up after 5 s of retries: HTTP 503: unavailable"
    )


def test_a_new_firing_after_a_lost_one_is_paged_and_resolved(
    sessions: sessionmaker[Session], client: httpx.Client, pagerduty: FakePagerDuty
) -> None:
    """Only the resolve of the lost trigger is withheld; the series' next incident is whole."""
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    first = sample_alert("firing")
    pagerduty.script([invalid_event(["'payload.summary' is missing or blank"])])
    queue(
        sessions,
        subs,
        clock,
        first,
        sample_alert("resolved"),
        later(first, 30),
        later(sample_alert("resolved"), 30),
    )
    delivery = make_delivery(sessions, subs, client, clock)
    for _ in range(5):
        delivery.run_once()
        clock.t += 1
    actions = [(r.json()["event_action"], r.status) for r in pagerduty.requests]
    assert actions == [("trigger", 400), ("trigger", 202), ("resolve", 202)]
    assert [n.status for n in notifications(sessions)] == ["failed", "dead", "delivered", "delivered"]


# ---- ordering ----------------------------------------------------------------------------------


def test_resolve_waits_for_its_trigger(
    sessions: sessionmaker[Session], client: httpx.Client, pagerduty: FakePagerDuty
) -> None:
    clock = Clock()
    subs = [pd_sub(pagerduty)]
    key = "fedcba9876543210fedcba9876543210"
    pagerduty.script([Reply.json(500, {"status": "error"})])
    # Enqueued in the worst order: the resolve first.
    queue(sessions, subs, clock, sample_alert("resolved", key=key), sample_alert("firing", key=key))
    delivery = make_delivery(sessions, subs, client, clock, RetryPolicy(base_s=10.0, cap_s=10.0))
    first = delivery.run_once()
    assert len(first) == 1 and first[0].outcome.http_status == 500
    # The trigger is backing off; the resolve is due but must not overtake it.
    clock.t += 0.001
    assert delivery.run_once() == []
    clock.t += 10.0
    delivery.run_once()
    delivery.run_once()
    actions = [(r.json()["event_action"], r.status) for r in pagerduty.requests]
    assert actions == [("trigger", 500), ("trigger", 202), ("resolve", 202)]
    assert {n.status for n in notifications(sessions)} == {"delivered"}


# ---- grouping and rate limits ------------------------------------------------------------------


def test_alerts_within_group_wait_make_one_message(
    sessions: sessionmaker[Session], client: httpx.Client, slack: FakeSlack
) -> None:
    clock = Clock()
    subs = [slack_sub(slack, group_wait_s=1.0, rate_limit_per_s=100.0)]
    delivery = make_delivery(sessions, subs, client, clock)
    for i, rule in enumerate(("accuracy-drop", "drift", "null-rate")):
        clock.t = T0 + 0.3 * i
        queue(sessions, subs, clock, sample_alert(rule=rule, key=f"{i:032d}"))
        assert delivery.run_once() == []  # group_wait has not passed for the first
    queue(sessions, subs, clock, sample_alert(model_id="fraud", key="f" * 32))  # another model
    clock.t = T0 + 0.999
    assert delivery.run_once() == []
    clock.t = T0 + 1.0
    sent = delivery.run_once()
    assert [len(s.notification_ids) for s in sent] == [3]
    [message] = [r.json() for r in slack.requests]
    sections = [b for b in message["blocks"] if b["type"] == "section"]
    assert len(sections) == 3
    assert {"accuracy-drop", "drift", "null-rate"} == set(
        re.findall(r"accuracy-drop|drift|null-rate", str(sections))
    )
    clock.t = T0 + 0.6 + 1.0  # the other model's own group_wait
    assert [len(s.notification_ids) for s in delivery.run_once()] == [1]
    assert "fraud" in slack.requests[1].json()["text"]


def test_slack_default_rate_is_one_per_second(
    sessions: sessionmaker[Session], client: httpx.Client, slack: FakeSlack
) -> None:
    clock = Clock()
    subs = [slack_sub(slack)]
    queue(sessions, subs, clock, *(sample_alert(model_id=m, key=m * 8) for m in ("aaaa", "bbbb", "cccc")))
    delivery = make_delivery(sessions, subs, client, clock)
    assert len(delivery.run_once()) == 1
    clock.t += 0.999
    assert delivery.run_once() == []
    clock.t += 0.001
    assert len(delivery.run_once()) == 1
    clock.t += 1.0
    assert len(delivery.run_once()) == 1
    assert len(slack.requests) == 3


class TimedSlack(FakeSlack):
    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        self.arrivals.append(time.monotonic())
        return super().handle(path, headers, body)


def test_rate_limit_spacing_seen_by_the_receiver(
    sessions: sessionmaker[Session], client: httpx.Client
) -> None:
    rate = 5.0
    with TimedSlack() as fake:
        subs = [slack_sub(fake, rate_limit_per_s=rate)]
        queue(sessions, subs, time.time, *(sample_alert(model_id=f"m{i}", key=f"{i:032d}") for i in range(5)))
        delivery = make_delivery(sessions, subs, client, time.time)
        deadline = time.monotonic() + 10
        while len(fake.arrivals) < 5 and time.monotonic() < deadline:
            delivery.run_once()
            time.sleep(0.005)
    assert len(fake.arrivals) == 5
    gaps = [b - a for a, b in zip(fake.arrivals, fake.arrivals[1:], strict=False)]
    # 1/rate apart at the sender; loopback latency jitter is far below 20 ms
    assert min(gaps) >= 1 / rate - 0.02, gaps


def test_token_bucket_refills_at_rate() -> None:
    clock = Clock(0.0)
    bucket = TokenBucket(rate_per_s=4.0, burst=2, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]
    assert bucket.wait_s() == pytest.approx(0.25)
    clock.t = 0.25
    assert bucket.try_take() and not bucket.try_take()


# ---- secrets -------------------------------------------------------------------------------------


def test_no_secret_in_logs_rows_or_reasons(
    sessions: sessionmaker[Session],
    client: httpx.Client,
    slack: FakeSlack,
    pagerduty: FakePagerDuty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    subs = [slack_sub(slack), pd_sub(pagerduty)]
    token = slack.path.rsplit("/", 1)[1]
    # Destinations that echo the credential back in their error text.
    slack.script([Reply.text(500, f"upstream failed for {slack.webhook_url}")])
    pagerduty.script([invalid_event([f"routing_key {ROUTING_KEY} is not enabled"])])
    queue(sessions, subs, clock, sample_alert())
    delivery = make_delivery(sessions, subs, client, clock, RetryPolicy(base_s=0.001, cap_s=0.001))
    sent: list[Sent] = delivery.run_once()
    # And a refused connection, whose httpx message would carry the URL.
    slack.__exit__()
    clock.t += 1
    sent += delivery.run_once()
    assert len(sent) == 3
    with sessions() as session:
        stored = [str(n.last_error) for n in session.scalars(select(Notification))]
        stored += [str(a.error) for a in session.scalars(select(NotificationAttempt))]
    texts = [caplog.text, *stored, *(s.outcome.reason for s in sent), *(repr(s) for s in sent)]
    assert any("transport error" in t for t in texts)
    for text in texts:
        assert token not in text and ROUTING_KEY not in text and slack.path not in text


# ---- metrics --------------------------------------------------------------------------------------


def _count(receiver: str, outcome: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        "driftline_notifications_total", {"receiver": receiver, "outcome": outcome}
    )
    return value or 0.0


def _delivery_observations(receiver: str) -> tuple[float, float]:
    from prometheus_client import REGISTRY

    labels = {"receiver": receiver}
    count = REGISTRY.get_sample_value("driftline_notification_delivery_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("driftline_notification_delivery_seconds_sum", labels) or 0.0
    return count, total


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (None, "delivered"),
        (slack_error(404, "channel_not_found"), "failed"),
        (slack_error(429, "rate_limited", {"Retry-After": "7"}), "rate_limited"),
        (Reply.text(503, "upstream down"), "retry"),
    ],
)
def test_every_attempt_is_counted_by_receiver_kind_and_outcome(
    sessions: sessionmaker[Session], client: httpx.Client, slack: FakeSlack, reply: Reply | None, outcome: str
) -> None:
    """``driftline_notifications_total{receiver, outcome}`` per notification attempt, and the
    time from the alert (its window end) to delivery in ``..._delivery_seconds``."""
    clock = Clock()
    subs = [slack_sub(slack)]
    if reply is not None:
        slack.script([reply])
    alert = sample_alert()
    queue(sessions, subs, clock, alert)
    before = {o: _count("slack", o) for o in ("delivered", "failed", "rate_limited", "retry")}
    observed = _delivery_observations("slack")
    make_delivery(sessions, subs, client, clock).run_once()
    after = {o: _count("slack", o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {o: float(o == outcome) for o in before}
    count, total = _delivery_observations("slack")
    if outcome == "delivered":
        from driftline.schemas.timefmt import rfc3339_to_ms

        assert count - observed[0] == 1
        assert total - observed[1] == pytest.approx(T0 - rfc3339_to_ms(alert.time) / 1000)
    else:
        assert count == observed[0]


def test_a_replayed_alert_is_counted_as_deduplicated(
    sessions: sessionmaker[Session], slack: FakeSlack
) -> None:
    from driftline.alerting.notifier_service import NotifierService
    from driftline.platform.kafka import KafkaSettings

    subs = [slack_sub(slack)]
    service = NotifierService(KafkaSettings("127.0.0.1:9"), "alerts", "sqlite://", subs, group_id="g")
    alert = sample_alert()
    before = _count("slack", "deduplicated")
    with sessions.begin() as session:
        service.record(session, [alert], int(T0 * 1000))
    assert _count("slack", "deduplicated") == before
    with sessions.begin() as session:  # the same batch read again after a crash
        service.record(session, [alert], int(T0 * 1000))
    assert _count("slack", "deduplicated") == before + 1
    assert len(notifications(sessions)) == 1
