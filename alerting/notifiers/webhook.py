"""Generic webhooks: the AlertEvents themselves, as CloudEvents over HTTP.

Batched mode (default) posts a JSON array with ``Content-Type: application/cloudevents-batch+json``
(CloudEvents HTTP binding, batched content mode), even for one alert, so receivers parse one
shape. With ``batch=False`` every request carries exactly one event in structured mode
(``application/cloudevents+json``).

With a signing secret, the request carries ``X-Driftline-Timestamp: <unix seconds>`` and
``X-Driftline-Signature: sha256=<hex>``, where the MAC is HMAC-SHA256 over
``<timestamp>.<body>``. The timestamp is inside the MAC so a receiver that rejects stale
timestamps (say older than 5 minutes) is protected against replays; a MAC over the body alone
would let anyone re-send a captured request forever. Verification, in any language::

    expected = hmac_sha256(secret, timestamp + "." + raw_body).hexdigest()
    ok = constant_time_equal("sha256=" + expected, header) and abs(now - timestamp) < 300
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from driftline.alerting.notifiers.base import (
    SECRET,
    URL_OR_SECRET,
    HttpRequest,
    NotifierKind,
    Setting,
    classify_response,
)
from driftline.alerting.secrets import Secret
from driftline.schemas import AlertEvent

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


def signature(secret: Secret, timestamp: str, body: bytes) -> str:
    """The ``X-Driftline-Signature`` value for a body sent at ``timestamp``."""
    mac = hmac.new(secret.reveal().encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


@dataclass(frozen=True)
class WebhookNotifier:
    """Posts CloudEvents to any HTTP endpoint; ``url`` is a Secret when it embeds a token."""

    url: Secret | str
    signing_secret: Secret | None = None
    batch: bool = True
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    kind: str = "webhook"

    @property
    def max_alerts_per_request(self) -> int | None:
        return None if self.batch else 1

    def build(self, alerts: Sequence[AlertEvent]) -> HttpRequest:
        if not alerts:
            raise ValueError("nothing to notify")
        if self.batch:
            body, content_type = msgspec.json.encode(list(alerts)), BATCH_CONTENT_TYPE
        elif len(alerts) == 1:
            body, content_type = msgspec.json.encode(alerts[0]), STRUCTURED_CONTENT_TYPE
        else:
            raise ValueError(f"structured mode sends one event per request, got {len(alerts)}")
        headers: dict[str, str | Secret] = {**self.headers, "Content-Type": content_type}
        if self.signing_secret is not None:
            timestamp = str(int(self.clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self.signing_secret, timestamp, body)
        return HttpRequest(method="POST", url=self.url, headers=headers, body=body)

    classify = staticmethod(classify_response)


def _from_settings(settings: Mapping[str, Any], secret: Callable[[str], Secret]) -> WebhookNotifier:
    url = settings["url"]
    return WebhookNotifier(
        url=url if isinstance(url, str) else secret("url"),
        signing_secret=secret("signing_secret") if "signing_secret" in settings else None,
        batch=bool(settings.get("batch", True)),
        headers=dict(settings.get("headers", {})),
    )


KIND: Final = NotifierKind(
    name="webhook",
    settings={
        "url": Setting(URL_OR_SECRET, required=True),
        "signing_secret": Setting(SECRET),
        "batch": Setting(bool),
        "headers": Setting(dict),
    },
    make=_from_settings,
)
