"""Slack incoming webhooks: one Block Kit message per group of alerts.

The webhook URL *is* the credential (anyone holding it can post to the channel), so it is a
:class:`~driftline.alerting.secrets.Secret`. Slack answers ``200 ok`` or a status with a short
error string (``invalid_payload``, ``action_prohibited``, ``channel_not_found``,
``channel_is_archived``, ...), which becomes the Outcome's reason.

Block Kit limits are enforced here rather than discovered as a 400 at 3 a.m.: header text
<= 150 chars, section text <= 3000, <= 10 fields of <= 2000 chars, button text <= 75, <= 50
blocks per message. A group larger than the block budget shows the first alerts and a final
"and N more" section.
"""

from __future__ import annotations

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
    truncate,
)
from driftline.alerting.secrets import Secret
from driftline.platform.text import printable
from driftline.schemas import AlertEvent

MAX_BLOCKS: Final = 50
MAX_HEADER_CHARS: Final = 150
MAX_SECTION_TEXT_CHARS: Final = 3000
MAX_FIELDS: Final = 10
MAX_FIELD_CHARS: Final = 2000
MAX_BUTTON_TEXT_CHARS: Final = 75
MAX_URL_CHARS: Final = 3000
MAX_CONTEXT_ELEMENTS: Final = 10
MAX_ACTION_ELEMENTS: Final = 25
#: Slack truncates ``text`` beyond 40 000 chars; the fallback only needs to be a notification line.
MAX_FALLBACK_CHARS: Final = 3000
#: Link buttons shown per message; more would bury the alert under buttons.
MAX_LINK_BUTTONS: Final = 5

_EMOJI: Final = {"critical": ":red_circle:", "error": ":large_orange_circle:", "warning": ":warning:"}


@dataclass(frozen=True)
class SlackNotifier:
    """Formats alerts for one Slack incoming webhook.

    ``dashboard_url`` adds an "Open dashboard" button to every message; links carried by the
    alerts themselves (``AlertData.links``) become buttons too.
    """

    url: Secret
    dashboard_url: str | None = None
    kind: str = "slack"
    max_alerts_per_request: int | None = None

    def build(self, alerts: Sequence[AlertEvent]) -> HttpRequest:
        if not alerts:
            raise ValueError("nothing to notify")
        message = {"text": _fallback_text(alerts), "blocks": self._blocks(alerts)}
        return HttpRequest(
            method="POST",
            url=self.url,
            headers={"Content-Type": "application/json; charset=utf-8"},
            body=msgspec.json.encode(message),
        )

    classify = staticmethod(classify_response)

    def _blocks(self, alerts: Sequence[AlertEvent]) -> list[dict[str, Any]]:
        links = self._links(alerts)
        tail: list[dict[str, Any]] = [_context(alerts)]
        if links:
            tail.append(_actions(links))
        budget = MAX_BLOCKS - 1 - len(tail)  # the header comes first
        shown = alerts if len(alerts) <= budget else alerts[: budget - 1]
        blocks = [_header(alerts), *(_alert_section(a) for a in shown)]
        if len(shown) < len(alerts):
            blocks.append(_mrkdwn_section(f"_…and {len(alerts) - len(shown)} more_"))
        return blocks + tail

    def _links(self, alerts: Sequence[AlertEvent]) -> list[tuple[str, str]]:
        """(label, url) pairs: the configured dashboard first, then the alerts' own links,
        each URL once, skipping any too long for a button."""
        candidates: list[tuple[str, str]] = []
        if self.dashboard_url:
            candidates.append(("Open dashboard", self.dashboard_url))
        for event in alerts:
            candidates.extend(
                (name.replace("_", " ").capitalize(), url) for name, url in event.data.links.items()
            )
        seen: set[str] = set()
        links: list[tuple[str, str]] = []
        for label, url in candidates:
            if url not in seen and len(url) <= MAX_URL_CHARS and url.startswith(("https://", "http://")):
                seen.add(url)
                links.append((label, url))
        return links[:MAX_LINK_BUTTONS]


def _escape(text: str) -> str:
    # Slack's mrkdwn treats &, < and > as control characters (links, mentions): escape user data,
    # after its own control characters (a newline would forge a line of the message).
    return printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fallback_text(alerts: Sequence[AlertEvent]) -> str:
    """The notification line (phones, screen readers, clients without Block Kit). Slack parses
    ``text`` as mrkdwn too, so it is escaped like the blocks: a model id's ``<!channel>`` must
    not notify the channel."""
    if len(alerts) == 1:
        return truncate(_escape(summary_line(alerts[0])), MAX_FALLBACK_CHARS)
    lines = [_group_title(alerts), *(summary_line(a) for a in alerts)]
    return truncate("\n".join(_escape(line) for line in lines), MAX_FALLBACK_CHARS)


def _group_title(alerts: Sequence[AlertEvent]) -> str:
    firing = sum(a.data.status == "firing" for a in alerts)
    resolved = len(alerts) - firing
    models = sorted({printable(a.data.model_id) for a in alerts})
    counts = ", ".join(
        p for p in (f"{firing} firing" if firing else "", f"{resolved} resolved" if resolved else "") if p
    )
    return f"{counts}: {', '.join(models)}"


def _header(alerts: Sequence[AlertEvent]) -> dict[str, Any]:
    if len(alerts) == 1:
        d = alerts[0].data
        what = printable(f"{d.rule} on {d.model_id} {d.model_version}")
        if d.status == "resolved":
            title = f":white_check_mark: RESOLVED: {what}"
        else:
            title = f"{_EMOJI.get(d.severity, ':information_source:')} FIRING ({d.severity}): {what}"
    else:
        title = _group_title(alerts)
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(title, MAX_HEADER_CHARS), "emoji": True},
    }


def _alert_section(event: AlertEvent) -> dict[str, Any]:
    d = event.data
    state = ":white_check_mark: *RESOLVED*" if d.status == "resolved" else f"*FIRING* ({d.severity})"
    title = f"{state} `{_escape(d.rule)}` on *{_escape(d.model_id)}*"
    fields = [
        ("Model", d.model_id),
        ("Version", d.model_version),
        ("Segment", describe_segment(d.segment)),
        ("Rule", f"{d.rule} ({d.metric})"),
        ("Observed vs threshold", condition_text(d)),
        ("Window", f"{d.window.start} → {d.window.end}"),
    ]
    if d.status == "resolved" and d.ends_at:
        fields.append(("Resolved at", d.ends_at))
    else:
        fields.append(("Firing since", d.starts_at))
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(title, MAX_SECTION_TEXT_CHARS)},
        "fields": [
            {"type": "mrkdwn", "text": truncate(f"*{name}*\n{_escape(value)}", MAX_FIELD_CHARS)}
            for name, value in fields[:MAX_FIELDS]
        ],
    }


def _mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_TEXT_CHARS)}}


def _context(alerts: Sequence[AlertEvent]) -> dict[str, Any]:
    keys = sorted({a.data.dedup_key for a in alerts})
    shown = ", ".join(f"`{_escape(k)}`" for k in keys[:3]) + (f" +{len(keys) - 3}" if len(keys) > 3 else "")
    return {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "driftline"},
            {"type": "mrkdwn", "text": truncate(f"dedup key {shown}", MAX_SECTION_TEXT_CHARS)},
        ][:MAX_CONTEXT_ELEMENTS],
    }


def _actions(links: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": f"driftline-link-{i}",
                "text": {"type": "plain_text", "text": truncate(printable(label), MAX_BUTTON_TEXT_CHARS)},
                "url": url,
            }
            for i, (label, url) in enumerate(links[:MAX_ACTION_ELEMENTS])
        ],
    }


def _from_settings(settings: Mapping[str, Any], secret: Callable[[str], Secret]) -> SlackNotifier:
    return SlackNotifier(url=secret("url"), dashboard_url=settings.get("dashboard_url"))


#: Slack documents one message per second per incoming webhook, hence the default rate.
KIND: Final = NotifierKind(
    name="slack",
    settings={"url": Setting(SECRET, required=True), "dashboard_url": Setting(str)},
    make=_from_settings,
    default_rate_per_s=1.0,
)
