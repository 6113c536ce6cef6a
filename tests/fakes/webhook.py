"""Generic receivers: a CloudEvents webhook and an Alertmanager ``/api/v2/alerts`` endpoint.

The webhook fake checks only what the CloudEvents HTTP binding requires (content type, an array
in batch mode, the required context attributes); signature checks are left to the test, which
must verify the HMAC independently of the code that produced it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from fakes import FakeServer, Reply

REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
ALERTS_PATH = "/api/v2/alerts"
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


class FakeWebhook(FakeServer):
    """Accepts CloudEvents (structured or batched) on any path with 200."""

    def validate(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        content_type = headers.get("content-type", "")
        try:
            parsed = json.loads(body)
        except ValueError:
            return Reply.text(400, "invalid JSON")
        if content_type.startswith("application/cloudevents-batch+json"):
            if not isinstance(parsed, list):
                return Reply.text(400, "batch must be a JSON array")
            events = parsed
        elif content_type.startswith("application/cloudevents+json"):
            events = [parsed]
        else:
            return Reply.text(415, "unsupported content type")
        for event in events:
            if not isinstance(event, dict) or any(a not in event for a in REQUIRED_ATTRIBUTES):
                return Reply.text(400, "missing CloudEvents attribute")
        return None


class FakeAlertmanager(FakeServer):
    """``POST /api/v2/alerts``: a list of postable alerts; 200 on success, 400 with a JSON string."""

    @property
    def alerts_url(self) -> str:
        return self.base_url

    def validate(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        if path != ALERTS_PATH:
            return Reply.text(404, "not found")
        try:
            alerts = json.loads(body)
        except ValueError:
            return Reply.json(400, "invalid JSON")
        problem = alerts_problem(alerts)
        return None if problem is None else Reply.json(400, problem)


def alerts_problem(alerts: Any) -> str | None:
    """Why Alertmanager would reject this list of postable alerts, or ``None``."""
    if not isinstance(alerts, list):
        return "body must be an array of alerts"
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            return f"alerts[{i}] must be an object"
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not labels:
            return f"alerts[{i}].labels: at least one label pair required"
        for name, value in labels.items():
            if not _LABEL.fullmatch(name) or not isinstance(value, str) or not value:
                return f"alerts[{i}].labels: invalid label {name!r}"
        annotations = alert.get("annotations", {})
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            return f"alerts[{i}].annotations must map names to strings"
        for key in ("startsAt", "endsAt"):
            if key in alert and not _RFC3339.fullmatch(str(alert[key])):
                return f"alerts[{i}].{key}: not a date-time"
        if "generatorURL" in alert and not str(alert["generatorURL"]).startswith(("http://", "https://")):
            return f"alerts[{i}].generatorURL: not a URL"
    return None
