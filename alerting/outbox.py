"""The outbox's bookkeeping: putting alerts in, and when to try again.

An alert enters the outbox in the same store transaction that records it (:func:`ingest`), so
an alert is never audited without its notifications nor queued without being audited; the
Kafka offset is committed only after that transaction, so a crash in between re-reads the
event and the UNIQUE (event_id, subscription) makes the second enqueue a no-op.

Retries use exponential backoff with *full jitter* (AWS Architecture Blog, "Exponential Backoff
and Jitter", 2015): the delay is uniform in ``[0, min(cap, base * 2**(n-1))]``, which spreads
the retries of many notifications that failed together instead of hammering a recovering
destination in waves. ``n`` counts only the failures that came without a ``Retry-After``: a
destination that says when to come back is obeyed to the second, and that costs nothing.

A notification is retried for as long as it is younger than ``give_up_after_s`` (24 h by
default, per subscription or for the whole notifier), never for a number of attempts: an
outage of the destination can make any number of attempts fail, and a page lost to a count
is a page lost to the outage. The last retry is scheduled at the deadline itself, so a
notification is given up at ``give_up_after_s``, not up to a backoff cap later.

>>> policy = RetryPolicy(base_s=1.0, cap_s=300.0)
>>> policy.ceiling_s(1), policy.ceiling_s(4), policy.ceiling_s(20)
(1.0, 8.0, 300.0)
>>> policy.delay_s(3, retry_after_s=42.0, jitter=0.5), policy.delay_s(3, None, jitter=0.5)
(42.0, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from driftline.alerting.notifiers.registry import KINDS
from driftline.alerting.subscriptions import Subscription, route
from driftline.platform.store import enqueue_notification, record_alert
from driftline.platform.store.models import Notification
from driftline.schemas import AlertEvent


def default_rate_per_s(kind: str) -> float | None:
    """Requests per second a destination gets when its subscription sets no
    ``rate_limit_per_s``: what its kind declares (Slack: 1/s), ``None`` for no cap."""
    declared = KINDS.get(kind)
    return None if declared is None else declared.default_rate_per_s


#: Longest ``Retry-After`` honoured: a destination asking for a day is more likely broken than
#: sincere, and the backoff cap is the sanest bound we have besides it.
MAX_RETRY_AFTER_S = 3600.0


#: How long a notification is retried when neither its subscription nor the notifier says.
DEFAULT_GIVE_UP_AFTER_S = 24 * 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, until a notification is ``give_up_after_s`` old."""

    base_s: float = 1.0
    cap_s: float = 300.0
    give_up_after_s: float = DEFAULT_GIVE_UP_AFTER_S

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or self.give_up_after_s <= 0:
            raise ValueError("need 0 < base_s <= cap_s and give_up_after_s > 0")

    def ceiling_s(self, step: int) -> float:
        """The largest delay after the ``step``-th backoff-counted failure (1-based)."""
        exponent = min(step - 1, 64)  # 2**64 * base already exceeds any sane cap
        return min(self.cap_s, self.base_s * math.pow(2.0, exponent))

    def delay_s(self, step: int, retry_after_s: float | None, jitter: float) -> float:
        """Seconds to wait after the ``step``-th backoff-counted failure, or exactly what the
        destination asked for (up to :data:`MAX_RETRY_AFTER_S`); ``jitter`` is uniform in [0, 1)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
        return jitter * self.ceiling_s(step)


class TokenBucket:
    """Requests per second to one destination, with a burst of ``burst`` requests.

    Non-blocking on purpose: the delivery loop asks :meth:`wait_s` and serves another
    destination meanwhile, so one slow-paced Slack channel never delays a page.

    >>> t = [0.0]
    >>> bucket = TokenBucket(rate_per_s=1.0, clock=lambda: t[0])
    >>> bucket.try_take(), bucket.try_take(), bucket.wait_s()
    (True, False, 1.0)
    >>> t[0] = 1.0; bucket.try_take()
    True
    """

    def __init__(self, rate_per_s: float, *, burst: float = 1.0, clock: Callable[[], float]) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    def wait_s(self) -> float:
        """Seconds until a request may go (0.0: now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate_per_s)

    def try_take(self) -> bool:
        """Spend a token if one is available."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def ingest(
    session: Session, event: AlertEvent, subscriptions: Sequence[Subscription], now_ms: int
) -> tuple[list[str], list[Subscription]]:
    """Record an alert and queue it for every matching subscription; returns the names newly
    queued, and the matching subscriptions it was already queued for (a replayed event).

    A fresh notification becomes due after its subscription's ``group_wait_s``, which is how
    the grouping stage sees every alert of a burst before it sends the first one. The caller
    owns the transaction (and commits the Kafka offset only after it).
    """
    record_alert(session, event, now_ms=now_ms)
    queued: list[str] = []
    repeated: list[Subscription] = []
    for sub in route(event, subscriptions):
        if not enqueue_notification(session, event.id, sub.name, sub.kind, now_ms):
            repeated.append(sub)  # a replayed event: already queued, maybe already delivered
            continue
        queued.append(sub.name)
        if sub.group_wait_s > 0:
            session.execute(
                update(Notification)
                .where(Notification.event_id == event.id, Notification.subscription == sub.name)
                .values(next_attempt_ms=now_ms + round(sub.group_wait_s * 1000))
            )
    return queued, repeated
