"""Forward alerts to a Prometheus Alertmanager (``POST /api/v2/alerts``).

Useful where Alertmanager already owns routing, silences and inhibition: driftline alerts then
look like any Prometheus alert (``alertname`` = rule, plus ``model``, ``version``, ``severity``,
``metric`` and one label per segment dimension).

Alertmanager expects clients to re-send firing alerts and resolves an alert by itself once its
``endsAt`` passes (``resolve_timeout`` when absent, 5 minutes by default). driftline emits a
firing alert once, so a firing alert carries ``endsAt = startsAt + firing_ttl_s`` (24 h by
default): long enough not to auto-resolve during an incident, short enough that an alert whose
resolve was lost does not hang forever. The resolve sends the real ``endsAt``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from driftline.alerting.notifiers.base import (
    SECRET,
    HttpRequest,
    NotifierKind,
    Setting,
    classify_response,
    condition_text,
    describe_segment,
    summary_line,
)
from driftline.alerting.secrets import Secret
from driftline.platform.text import printable
from driftline.schemas import AlertEvent
from driftline.schemas.timefmt import ms_to_rfc3339, rfc3339_to_ms

ALERTS_PATH: Final = "/api/v2/alerts"
#: Labels driftline sets itself; a segment dimension of the same name is prefixed ``segment_``.
RESERVED_LABELS: Final = frozenset({"alertname", "model", "version", "severity", "metric", "source"})
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def label_name(name: str) -> str:
    """A Prometheus-legal label name (``[a-zA-Z_][a-zA-Z0-9_]*``) for a segment dimension.

    >>> label_name("country-code"), label_name("2nd"), label_name("model")
    ('country_code', '_2nd', 'segment_model')
    """
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if not _LABEL_NAME.fullmatch(cleaned):
        cleaned = "_" + cleaned
    return f"segment_{cleaned}" if cleaned in RESERVED_LABELS else cleaned


@dataclass(frozen=True)
class AlertmanagerNotifier:
    """Posts alerts to one Alertmanager; ``url`` is its base (``http://am:9093``)."""

    url: str
    bearer_token: Secret | None = None
    generator_url: str | None = None
    firing_ttl_s: float = 24 * 3600.0
    kind: str = "alertmanager"
    max_alerts_per_request: int | None = None

    def build(self, alerts: Sequence[AlertEvent]) -> HttpRequest:
        if not alerts:
            raise ValueError("nothing to notify")
        headers: dict[str, str | Secret] = {"Content-Type": "application/json"}
        if self.bearer_token is not None:
            headers["Authorization"] = Secret(f"Bearer {self.bearer_token.reveal()}")
        return HttpRequest(
            method="POST",
            url=self.url.rstrip("/") + ALERTS_PATH,
            headers=headers,
            body=msgspec.json.encode([self.alert(a) for a in alerts]),
        )

    def alert(self, event: AlertEvent) -> dict[str, Any]:
        """One ``postableAlert`` of the Alertmanager v2 API."""
        d = event.data
        labels = {label_name(k): v for k, v in d.segment.items()}
        labels.update(
            alertname=d.rule, model=d.model_id, version=d.model_version, severity=d.severity, metric=d.metric
        )
        if d.status == "resolved":
            ends_at = d.ends_at or d.window.end
        else:
            ends_at = ms_to_rfc3339(rfc3339_to_ms(d.starts_at) + round(self.firing_ttl_s * 1000))
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {
                "summary": summary_line(event),
                # Annotations are text for people (and for templates that put them in an email or
                # a chat): escaped like every summary. Labels stay exact: routes and silences
                # match on them, and JSON carries any string.
                "description": printable(
                    f"{d.metric} {condition_text(d)}; model {d.model_id} version {d.model_version}, "
                    f"segment {describe_segment(d.segment)}, in window {d.window.start} to {d.window.end}."
                ),
                "dedup_key": d.dedup_key,
            },
            "startsAt": d.starts_at,
            "endsAt": ends_at,
        }
        generator = self.generator_url or d.links.get("dashboard")
        if generator:
            alert["generatorURL"] = generator
        return alert

    classify = staticmethod(classify_response)


def _from_settings(settings: Mapping[str, Any], secret: Callable[[str], Secret]) -> AlertmanagerNotifier:
    return AlertmanagerNotifier(
        url=settings["url"],
        bearer_token=secret("bearer_token") if "bearer_token" in settings else None,
        generator_url=settings.get("generator_url"),
        firing_ttl_s=float(settings.get("firing_ttl_s", 24 * 3600.0)),
    )


#: A firing alert stays active (until ``endsAt``) unless its resolve ends it.
KIND: Final = NotifierKind(
    name="alertmanager",
    settings={
        "url": Setting(str, required=True),
        "bearer_token": Setting(SECRET),
        "generator_url": Setting(str),
        "firing_ttl_s": Setting((int, float)),
    },
    make=_from_settings,
    needs_resolve=True,
)
