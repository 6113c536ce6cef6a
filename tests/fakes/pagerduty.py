"""PagerDuty Events API v2: ``POST /v2/enqueue``.

Validates as documented: JSON object; ``routing_key`` a 32-char string; ``event_action`` one of
trigger/acknowledge/resolve; ``dedup_key`` <= 255 chars and required for acknowledge/resolve; a
trigger needs ``payload`` with ``summary`` (<= 1024 chars), ``source`` and ``severity``
(critical/error/warning/info). Violations get ``400 {"status": "invalid event", ...}``; valid
events ``202 {"status": "success", "message": "Event processed", "dedup_key": ...}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from fakes import FakeServer, Reply

ENQUEUE_PATH = "/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")


def invalid_event(errors: list[str]) -> Reply:
    return Reply.json(
        400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    )


class FakePagerDuty(FakeServer):
    @property
    def enqueue_url(self) -> str:
        return self.base_url + ENQUEUE_PATH

    def validate(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        if path != ENQUEUE_PATH:
            return Reply.json(404, {"status": "not found"})
        try:
            event = json.loads(body)
        except ValueError:
            return Reply.json(400, {"status": "invalid request", "message": "Invalid JSON", "errors": []})
        errors = event_errors(event)
        return invalid_event(errors) if errors else None

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        event = json.loads(body)
        key = event.get("dedup_key") or uuid.uuid4().hex
        return Reply.json(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def events(self, dedup_key: str, action: str | None = None) -> list[dict[str, Any]]:
        """Accepted (202) events for one dedup_key, optionally of one action."""
        found = []
        for r in self.requests:
            if r.status != 202:
                continue
            event = r.json()
            if event.get("dedup_key") == dedup_key and (action is None or event["event_action"] == action):
                found.append(event)
        return found


def event_errors(event: Any) -> list[str]:
    """PagerDuty's validation messages for an event (empty when valid)."""
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup:
        errors.append("'dedup_key' is required for acknowledge and resolve events")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*errors, "'payload' is missing or not an object"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary:
            errors.append("'payload.summary' is missing or blank")
        elif len(summary) > 1024:
            errors.append("Length of 'payload.summary' is too long (maximum is 1024 characters)")
        if not isinstance(payload.get("source"), str) or not payload.get("source"):
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
        details = payload.get("custom_details")
        if details is not None and not isinstance(details, dict):
            errors.append("'payload.custom_details' must be an object")
    return errors
