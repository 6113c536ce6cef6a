"""Alert destinations: each module formats a payload for one destination and classifies its
answers (see :mod:`.base` for the contract). Retry, dedup, rate limiting and the durable outbox
are shared stages that drive these through :func:`send`."""

from driftline.alerting.notifiers.alertmanager import AlertmanagerNotifier
from driftline.alerting.notifiers.base import (
    HttpRequest,
    Notifier,
    Outcome,
    classify_status,
    deliver,
    parse_retry_after,
    send,
)
from driftline.alerting.notifiers.pagerduty import PagerDutyNotifier
from driftline.alerting.notifiers.slack import SlackNotifier
from driftline.alerting.notifiers.webhook import WebhookNotifier

__all__ = [
    "AlertmanagerNotifier",
    "HttpRequest",
    "Notifier",
    "Outcome",
    "PagerDutyNotifier",
    "SlackNotifier",
    "WebhookNotifier",
    "classify_status",
    "deliver",
    "parse_retry_after",
    "send",
]
