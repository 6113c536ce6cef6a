"""The delivery stage: due outbox rows -> grouped requests -> notifier -> recorded attempt.

One call of :meth:`Delivery.run_once` does, in Alertmanager's order:

1. **select** due rows (``due_notifications``), looking ``group_wait`` ahead;
2. **order**: rows of one (subscription, dedup_key) go strictly in event order (firing before
   resolved), and a row waits while an earlier one of its series is still pending, so a
   PagerDuty ``resolve`` can never overtake its ``trigger``, not even after a failed trigger
   went into backoff; a resolve whose trigger was given up is never sent (it would close an
   incident nobody saw open) but marked ``dead``, outcome ``superseded``;
3. **group** rows of one subscription and model whose due times lie within ``group_wait_s`` of
   the earliest into one request, up to the notifier's ``max_alerts_per_request``;
4. **rate-limit** per subscription (token bucket; a limited group simply waits for the next
   round, nothing blocks);
5. **send** and **record** the outcome of every row of the request in one transaction: a 2xx
   is ``delivered``; a 429, a 5xx or a transport error is retried (see
   :class:`~driftline.alerting.outbox.RetryPolicy`) until the row is ``give_up_after_s`` old,
   then ``dead``; any other answer is ``failed`` at once. Giving up is loud: an ERROR line and
   ``driftline_notifications_total{outcome="dead"}``.

Delivery guarantee: at least once, with a single documented duplicate window. A row whose
success was committed is never selected again; an undelivered row resumes after a restart. A
crash *after* the destination answered 2xx but *before* the attempt is committed re-sends
that request once on restart. PagerDuty collapses the duplicate (same ``dedup_key``); Slack
cannot, so the channel shows the message twice. Marking a row "sending" before the request
would close that window only by opening a worse one (a crash mid-request would lose the
alert), so driftline keeps at-least-once.

Run exactly one delivery loop per store: rows are read in one short transaction and recorded
in another (SQLite allows one writer, and holding a transaction across an HTTP call would
block ingestion), so two loops could send the same row concurrently.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx
import msgspec
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from driftline.alerting.notifiers.base import Notifier, Outcome, send
from driftline.alerting.outbox import RetryPolicy, TokenBucket, default_rate_per_s
from driftline.alerting.subscriptions import Subscription
from driftline.platform import metrics
from driftline.platform.store import due_notifications, record_attempt
from driftline.platform.store.models import AlertTransition, Notification, NotificationAttempt
from driftline.schemas import AlertEvent
from driftline.schemas.timefmt import rfc3339_to_ms

logger = logging.getLogger(__name__)

#: Largest group when the notifier sets no limit: a Slack message holds ~50 blocks and an
#: alert needs two, so 20 alerts stay readable and within limits.
MAX_GROUP = 20

#: Row statuses of a notification driftline stopped trying to deliver.
GIVEN_UP = ("failed", "dead")


@dataclass(frozen=True)
class _Row:
    """A due outbox row with what ordering and grouping need from its alert."""

    id: int
    subscription: str
    attempts: int
    next_attempt_ms: int
    created_ms: int
    event: AlertEvent
    order: tuple[int, int, int]  # (window end, firing=0/resolved=1, row id): the series order


@dataclass(frozen=True)
class _SeriesRow:
    """Any row (whatever its status) of a series some due row belongs to."""

    id: int
    status: str
    last_error: str | None
    order: tuple[int, int, int]

    @property
    def firing(self) -> bool:
        return self.order[1] == 0


@dataclass(frozen=True)
class Sent:
    """One request made by :meth:`Delivery.run_once`, for logs and tests."""

    subscription: str
    notification_ids: tuple[int, ...]
    outcome: Outcome
    #: per notification: delivered, failed, dead, or None (to be retried)
    final_statuses: tuple[str | None, ...]


class Delivery:
    """Drives the outbox rows of the configured subscriptions to their destinations.

    ``notifiers`` are built once (secrets resolved) by the caller; ``clock`` is wall-clock
    seconds, shared with the rate limiters so tests can slow or speed time consistently.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        subscriptions: Sequence[Subscription],
        notifiers: Mapping[str, Notifier],
        client: httpx.Client,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        timeout_s: float = 10.0,
        batch_limit: int = 500,
    ) -> None:
        self._sessions = sessions
        self._subs = {s.name: s for s in subscriptions}
        self._notifiers = dict(notifiers)
        self._client = client
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._rng = rng or random.Random()
        self._timeout_s = timeout_s
        self._batch_limit = batch_limit
        self._buckets: dict[str, TokenBucket] = {}
        for sub in subscriptions:
            rate = sub.rate_limit_per_s if sub.rate_limit_per_s is not None else default_rate_per_s(sub.kind)
            if rate is not None:
                self._buckets[sub.name] = TokenBucket(rate, clock=clock)
        self._horizon_ms = round(max((s.group_wait_s for s in subscriptions), default=0.0) * 1000)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- one round ------------------------------------------------------------------------

    def run_once(self, *, budget_s: float = 5.0) -> list[Sent]:
        """Send every request that is due and allowed now, for at most about ``budget_s``.

        The budget keeps a slow destination (timeouts) from starving the Kafka consumer that
        shares this thread; what is left over stays due for the next round.
        """
        started = time.monotonic()
        sent: list[Sent] = []
        for sub_name, rows in self._ready_requests():
            if time.monotonic() - started > budget_s:
                break
            bucket = self._buckets.get(sub_name)
            if bucket is not None and not bucket.try_take():
                continue
            sent.append(self._attempt(sub_name, rows))
        return sent

    def _ready_requests(self) -> list[tuple[str, list[_Row]]]:
        now_ms = self._now_ms()
        with self._sessions.begin() as session:
            due = due_notifications(session, now_ms + self._horizon_ms, self._batch_limit)
            unknown = [
                n
                for n in due
                if n.subscription not in self._subs
                and n.next_attempt_ms is not None
                and n.next_attempt_ms <= now_ms
            ]
            for n in unknown:
                # A subscription removed from the config: keep the row for audit, stop retrying.
                record_attempt(
                    session,
                    n.id,
                    "failed",
                    None,
                    "subscription is no longer configured",
                    now_ms,
                    None,
                    "failed",
                )
            due = [n for n in due if n.subscription in self._subs]
            rows, orphans = self._load_rows(session, due)
            for n in orphans:
                record_attempt(
                    session, n.id, "failed", None, "no alert recorded for this event", now_ms, None, "failed"
                )
            series = self._series(session, rows)
            withheld = self._withhold(session, rows, series, now_ms)
            rows = [r for r in rows if r.id not in withheld]
            blocked = self._blocked_ids(rows, series, withheld)
        return self._group([r for r in rows if r.id not in blocked], now_ms)

    @staticmethod
    def _load_rows(session: Session, due: Sequence[Notification]) -> tuple[list[_Row], list[Notification]]:
        if not due:
            return [], []
        found = {
            t.event_id: t
            for t in session.scalars(
                select(AlertTransition).where(AlertTransition.event_id.in_({n.event_id for n in due}))
            )
        }
        rows, orphans = [], []
        for n in due:
            t = found.get(n.event_id)
            if t is None:
                orphans.append(n)
                continue
            event = msgspec.convert(t.event, AlertEvent)
            order = (t.window_end_ms, 0 if t.status == "firing" else 1, n.id)
            rows.append(
                _Row(n.id, n.subscription, n.attempts, n.next_attempt_ms or 0, n.created_ms, event, order)
            )
        return rows, orphans

    @staticmethod
    def _series(session: Session, rows: Sequence[_Row]) -> dict[tuple[str, str], list[_SeriesRow]]:
        """Every row, in any status, of the (subscription, dedup_key) series of these rows."""
        if not rows:
            return {}
        keys = {r.event.data.dedup_key for r in rows}
        found = session.execute(
            select(
                Notification.id,
                Notification.subscription,
                Notification.status,
                Notification.last_error,
                AlertTransition.dedup_key,
                AlertTransition.window_end_ms,
                AlertTransition.status,
            )
            .join(AlertTransition, AlertTransition.event_id == Notification.event_id)
            .where(AlertTransition.dedup_key.in_(keys))
        ).all()
        series: dict[tuple[str, str], list[_SeriesRow]] = defaultdict(list)
        for nid, sub, status, error, key, end, transition in found:
            order = (end, 0 if transition == "firing" else 1, nid)
            series[(sub, key)].append(_SeriesRow(nid, status, error, order))
        return series

    def _withhold(
        self,
        session: Session,
        rows: Sequence[_Row],
        series: Mapping[tuple[str, str], Sequence[_SeriesRow]],
        now_ms: int,
    ) -> set[int]:
        """Give up the resolves whose trigger was given up, and say so.

        The trigger a resolve belongs to is the latest firing before it in its series. Sending
        the resolve anyway would close, at the destination, an incident nobody saw opened
        (PagerDuty accepts a resolve for any key), which hides the lost page.
        """
        withheld: set[int] = set()
        for r in rows:
            if r.event.data.status != "resolved":
                continue
            earlier = [s for s in series[(r.subscription, r.event.data.dedup_key)] if s.order < r.order]
            trigger = max((s for s in earlier if s.firing), key=lambda s: s.order, default=None)
            if trigger is None or trigger.status not in GIVEN_UP:
                continue
            reason = f"superseded: its trigger (notification {trigger.id}) was {trigger.status}"
            if trigger.last_error:
                reason += f": {trigger.last_error}"
            record_attempt(session, r.id, "superseded", None, reason, now_ms, None, "dead")
            metrics.observe_notification(self._subs[r.subscription].kind, "superseded")
            logger.error(
                "subscription %s: not sending the resolve of %s: %s",
                r.subscription,
                r.event.data.dedup_key,
                reason,
            )
            withheld.add(r.id)
        return withheld

    @staticmethod
    def _blocked_ids(
        rows: Sequence[_Row], series: Mapping[tuple[str, str], Sequence[_SeriesRow]], withheld: set[int]
    ) -> set[int]:
        """Rows that must wait for an earlier pending row of the same series.

        A row may still go in the same request as its predecessors (Slack groups a firing and
        its resolve into one message); :meth:`_group` keeps that order.
        """
        candidate_ids = {r.id for r in rows}

        def pending(r: _Row) -> list[_SeriesRow]:
            return [
                s
                for s in series.get((r.subscription, r.event.data.dedup_key), ())
                if s.status == "pending" and s.id not in withheld
            ]

        blocked: set[int] = set()
        for r in rows:
            # Blocked if any earlier pending row of the series is not itself a candidate now.
            if any(s.order < r.order and s.id not in candidate_ids for s in pending(r)):
                blocked.add(r.id)
        # Blocking is transitive: a row after a blocked row waits too.
        changed = True
        while changed:
            changed = False
            for r in rows:
                if r.id in blocked:
                    continue
                if any(s.order < r.order and s.id in blocked for s in pending(r)):
                    blocked.add(r.id)
                    changed = True
        return blocked

    def _group(self, rows: Sequence[_Row], now_ms: int) -> list[tuple[str, list[_Row]]]:
        by_group: dict[tuple[str, str], list[_Row]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: r.order):
            by_group[(r.subscription, r.event.data.model_id)].append(r)
        requests: list[tuple[str, list[_Row]]] = []
        for (sub_name, _model), members in by_group.items():
            heads: dict[str, int] = {}
            for r in members:
                heads.setdefault(r.event.data.dedup_key, r.next_attempt_ms)
            # Only a series' head can make a group ready: a later row cannot go before it.
            first_due = min(heads.values())
            if first_due > now_ms:
                continue  # still inside group_wait, or backing off
            limit = self._notifiers[sub_name].max_alerts_per_request or MAX_GROUP
            # A one-alert notifier (PagerDuty) sends only what is due; a grouping one also takes
            # what falls due within group_wait of the group's first alert.
            wait_ms = 0 if limit == 1 else round(self._subs[sub_name].group_wait_s * 1000)
            cutoff = max(now_ms, first_due + wait_ms)
            chosen: list[_Row] = []
            stopped: set[str] = set()  # series whose next row must wait for a later round
            for r in members:  # in series order
                key = r.event.data.dedup_key
                if key in stopped:
                    continue
                if r.next_attempt_ms > cutoff:
                    stopped.add(key)
                    continue
                chosen.append(r)
                if limit == 1:
                    stopped.add(key)  # one request per series per round, so a failure stops it
            if limit == 1:
                requests.extend((sub_name, [r]) for r in chosen)
            elif chosen:
                # One request per group and round; the rest follows once its outcome is known.
                requests.append((sub_name, chosen[:limit]))
        requests.sort(key=lambda item: min(r.next_attempt_ms for r in item[1]))
        return requests

    # -- one request ----------------------------------------------------------------------

    def _attempt(self, sub_name: str, rows: Sequence[_Row]) -> Sent:
        notifier = self._notifiers[sub_name]
        started = time.monotonic()
        try:
            request = notifier.build([r.event for r in rows])
        except Exception as exc:  # a payload we cannot build will not build on retry either
            outcome = Outcome(False, False, None, f"cannot build request: {type(exc).__name__}", None)
        else:
            outcome = send(request, self._client, self._timeout_s, classify=notifier.classify)
        duration_ms = round((time.monotonic() - started) * 1000)
        now_ms = self._now_ms()
        sub = self._subs[sub_name]
        give_up_ms = round((sub.give_up_after_s or self.policy.give_up_after_s) * 1000)
        # One draw per request: rows that went together retry together (and stay one group).
        jitter = self._rng.random()
        finals: list[str | None] = []
        with self._sessions.begin() as session:
            steps = _backoff_steps(session, [r.id for r in rows]) if _counts_a_step(outcome) else {}
            for r in rows:
                next_ms: int | None = None
                final: str | None
                error: str | None = None if outcome.delivered else outcome.reason
                deadline_ms = r.created_ms + give_up_ms
                if outcome.delivered:
                    final, label = "delivered", "delivered"
                elif not outcome.retry:
                    final, label = "failed", "failed"  # a 4xx, a 3xx, a bad URL: no retry can help
                elif now_ms >= deadline_ms:
                    final, label = "dead", "expired"
                    error = f"gave up after {give_up_ms / 1000:g} s of retries: {outcome.reason}"
                elif outcome.retry_after_s is not None:
                    # Obeyed even past the deadline (then this row is given up after that try).
                    final, label = None, "retry_after"
                    next_ms = now_ms + round(self.policy.delay_s(0, outcome.retry_after_s, jitter) * 1000)
                else:
                    final, label = None, "retry"
                    delay = self.policy.delay_s(steps.get(r.id, 0) + 1, None, jitter)
                    next_ms = min(now_ms + round(delay * 1000), deadline_ms)  # the last try at the deadline
                record_attempt(
                    session,
                    r.id,
                    label,
                    outcome.http_status,
                    error,
                    now_ms,
                    next_ms,
                    final,
                    duration_ms=duration_ms,
                )
                finals.append(final)
        for r, final in zip(rows, finals, strict=True):
            _observe(notifier.kind, outcome, final, r.event, now_ms)
        given_up = [(r, final) for r, final in zip(rows, finals, strict=True) if final in GIVEN_UP]
        if given_up:
            logger.error(
                "subscription %s: gave up on %s: %s",
                sub_name,
                ", ".join(
                    f"{r.event.data.status} {r.event.data.dedup_key} ({final})" for r, final in given_up
                ),
                outcome.reason,
            )
        return Sent(sub_name, tuple(r.id for r in rows), outcome, tuple(finals))


def _counts_a_step(outcome: Outcome) -> bool:
    """Whether this failure moves the backoff on: not when the destination said when to return."""
    return not outcome.delivered and outcome.retry and outcome.retry_after_s is None


def _backoff_steps(session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Per notification, the failures so far that counted toward its backoff (``retry``)."""
    found = session.execute(
        select(NotificationAttempt.notification_id, func.count())
        .where(NotificationAttempt.notification_id.in_(ids), NotificationAttempt.outcome == "retry")
        .group_by(NotificationAttempt.notification_id)
    ).all()
    return {nid: count for nid, count in found}


def _observe(kind: str, outcome: Outcome, final: str | None, event: AlertEvent, now_ms: int) -> None:
    """One attempt for one notification, as ``driftline_notifications_total`` counts it, plus
    ``dead`` once when the notification is given up; a delivery also records how long after
    the alert was created it reached its receiver."""
    if outcome.delivered:
        label = "delivered"
    elif final is not None:
        label = "failed"
    elif outcome.http_status == 429:
        label = "rate_limited"
    else:
        label = "retry"
    seconds = (now_ms - rfc3339_to_ms(event.time)) / 1000 if outcome.delivered else None
    metrics.observe_notification(kind, label, seconds)
    if final in GIVEN_UP:
        metrics.observe_notification(kind, "dead")
