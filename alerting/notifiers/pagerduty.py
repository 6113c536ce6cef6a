"""PagerDuty Events API v2: one event per alert, paired by ``dedup_key``.

The Events API takes exactly one event per request, and PagerDuty does its own grouping of
alerts into incidents, so this notifier never groups (``max_alerts_per_request = 1``): the
grouping stage sends each alert of a group as its own request. A ``firing`` alert is a
``trigger``, a ``resolved`` one a ``resolve`` with the *same* ``dedup_key``
(``AlertData.dedup_key``), which is what lets PagerDuty close the incident it opened.

The routing key sits in the JSON body, so it is declared in ``HttpRequest.secrets`` and
scrubbed from anything :func:`~driftline.alerting.notifiers.base.send` reports. Responses:
``202 {"status": "success", "message": "Event processed", "dedup_key": ...}``;
``400 {"status": "invalid event", "message": ..., "errors": [...]}`` (permanent, the errors
become the reason); 429 and 5xx are retried.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from driftline.alerting.notifiers.base import (
    SECRET,
    HttpRequest,
    NotifierKind,
    Outcome,
    Setting,
    body_text,
    classify_status,
    summary_line,
    truncate,
)
from driftline.alerting.secrets import Secret
from driftline.platform.text import printable
from driftline.schemas import AlertEvent

EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY_CHARS: Final = 1024
MAX_DEDUP_KEY_CHARS: Final = 255
#: driftline's severities are PagerDuty's (PD-CEF) enum, so the mapping is the identity; it is
#: spelled out so that a new driftline severity fails loudly here instead of being sent as is.
SEVERITY: Final = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


@dataclass(frozen=True)
class PagerDutyNotifier:
    """Formats alerts for one Events API v2 integration (``routing_key``)."""

    routing_key: Secret
    url: str = EVENTS_URL
    source: str = "driftline"
    client_url: str | None = None
    kind: str = "pagerduty"
    max_alerts_per_request: int | None = 1

    def build(self, alerts: Sequence[AlertEvent]) -> HttpRequest:
        if len(alerts) != 1:
            raise ValueError(f"PagerDuty takes one event per request, got {len(alerts)} alerts")
        return HttpRequest(
            method="POST",
            url=self.url,
            headers={"Content-Type": "application/json"},
            body=msgspec.json.encode(self.event(alerts[0])),
            secrets=(self.routing_key,),
        )

    def event(self, alert: AlertEvent) -> dict[str, Any]:
        """The Events API v2 body for one alert (routing key included: handle as secret)."""
        d = alert.data
        if d.status == "resolved":
            # A resolve needs only the key; PagerDuty ignores any payload on it.
            return {
                "routing_key": self.routing_key.reveal(),
                "event_action": "resolve",
                "dedup_key": pd_dedup_key(d.dedup_key),
            }
        event: dict[str, Any] = {
            "routing_key": self.routing_key.reveal(),
            "event_action": "trigger",
            "dedup_key": pd_dedup_key(d.dedup_key),
            "payload": {
                "summary": truncate(summary_line(alert), MAX_SUMMARY_CHARS),
                "source": self.source,
                "severity": SEVERITY[d.severity],
                "timestamp": d.starts_at,
                # plain text on PagerDuty's pages and phones, like the summary (for an ordinary
                # name printable is the identity, so routing rules on component still match)
                "component": printable(d.model_id),
                "group": printable(d.model_version),
                "class": printable(d.rule),
                "custom_details": {
                    "metric": d.metric,
                    "observed": d.observed,
                    "comparison": d.comparison,
                    "threshold": d.threshold,
                    "segment": d.segment,
                    "window": {"start": d.window.start, "end": d.window.end},
                    "evidence": d.evidence,
                    "alert_id": alert.id,
                },
            },
            "client": "driftline",
        }
        if self.client_url:
            event["client_url"] = self.client_url
        links = [{"href": url, "text": name} for name, url in sorted(d.links.items())]
        if links:
            event["links"] = links
        return event

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        return classify_status(status, headers, _detail(status, body))


def pd_dedup_key(key: str) -> str:
    """PagerDuty caps ``dedup_key`` at 255 chars; longer keys are hashed (deterministically, so
    trigger and resolve still agree). driftline's own keys are 32 hex chars and pass as is."""
    return key if len(key) <= MAX_DEDUP_KEY_CHARS else hashlib.sha256(key.encode()).hexdigest()


def _detail(status: int, body: bytes) -> str:
    """PagerDuty's ``errors`` list (else ``message``, else ``status``) for failures; nothing for a 2xx."""
    if 200 <= status < 300:
        return ""
    try:
        parsed = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body_text(body)
    if isinstance(parsed, dict):
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors:
            return body_text("; ".join(str(e) for e in errors).encode())
        for key in ("message", "status"):
            if isinstance(parsed.get(key), str):
                return body_text(parsed[key].encode())
    return body_text(body)


def _from_settings(settings: Mapping[str, Any], secret: Callable[[str], Secret]) -> PagerDutyNotifier:
    return PagerDutyNotifier(
        routing_key=secret("routing_key"),
        url=settings.get("url", EVENTS_URL),
        source=settings.get("source", "driftline"),
        client_url=settings.get("client_url"),
    )


#: A trigger opens an incident that only its resolve closes.
KIND: Final = NotifierKind(
    name="pagerduty",
    settings={
        "routing_key": Setting(SECRET, required=True),
        "url": Setting(str),
        "source": Setting(str),
        "client_url": Setting(str),
    },
    make=_from_settings,
    needs_resolve=True,
)
