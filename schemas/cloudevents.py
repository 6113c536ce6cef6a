"""Output contracts: alerts and retraining requests as CloudEvents 1.0 (structured JSON mode).

CloudEvents lets any broker, router or function platform route our output by ``type`` and
``subject`` without knowing driftline. Both envelopes are *deterministic*: ``id`` derives from
what the event is about, and ``time`` is the window end (event time) rather than the wall
clock, so a worker that replays a window after a crash re-emits byte-identical events that
consumers can drop as duplicates by ``id``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

SPEC_VERSION: Final = "1.0"
DEFAULT_SOURCE: Final = "/driftline/worker"
ALERT_FIRING: Final = "io.driftline.alert.firing"
ALERT_RESOLVED: Final = "io.driftline.alert.resolved"
RETRAINING_REQUESTED: Final = "io.driftline.retraining.requested"

#: The one timestamp spelling driftline emits: UTC, millisecond precision, ``Z``. Fixed width,
#: so these strings sort in time order and hash identically on every host.
UTC_MS_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
UtcMs = Annotated[
    str,
    Meta(
        pattern=UTC_MS_PATTERN,
        description="RFC 3339 UTC with millisecond precision, e.g. 2026-11-24T21:03:54.123Z",
    ),
]


#: An optional attribute driftline does not set is *absent* from the event, never ``null``: the
#: CloudEvents SDKs refuse ``null`` for an attribute (an empty one too). Events written before
#: that rule said ``"dataschema": null``; they are still on topics and in stores, so readers
#: accept ``null`` and treat it as absent.
DataSchema = (
    Annotated[str, Meta(min_length=1, description="URI of the data's schema; absent when none is set")]
    | None
    | UnsetType
)


class Window(msgspec.Struct, frozen=True):
    """A half-open event-time interval [start, end)."""

    start: UtcMs
    end: UtcMs


class AlertData(msgspec.Struct, kw_only=True):
    """What an alert is about. dedup_key is the same for firing and resolved, so pagers pair them."""

    dedup_key: str
    status: Literal["firing", "resolved"]
    rule: str
    metric: str
    severity: Literal["critical", "error", "warning", "info"]
    model_id: str
    model_version: str
    segment: dict[str, str]
    window: Window
    observed: float | None
    threshold: float
    comparison: Literal["<", "<=", ">", ">="]
    evidence: dict[str, Any] = {}
    links: dict[str, str] = {}
    starts_at: UtcMs
    ends_at: UtcMs | None = None


class RetrainingRequestData(msgspec.Struct, kw_only=True):
    """Why and on which data to retrain. Start at most one run per idempotency_key."""

    idempotency_key: str
    model_id: str
    model_version: str
    reason: str
    evidence: dict[str, Any]
    window: Window
    suggested_training_range: Window
    requested_at: UtcMs


class AlertEvent(msgspec.Struct, kw_only=True):
    """CloudEvents 1.0 envelope (structured JSON mode) around AlertData."""

    specversion: Literal["1.0"] = SPEC_VERSION
    id: str
    source: str
    type: Literal["io.driftline.alert.firing", "io.driftline.alert.resolved"]
    subject: str
    time: UtcMs
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: DataSchema = UNSET
    data: AlertData

    def __post_init__(self) -> None:
        if self.dataschema is None:
            self.dataschema = UNSET
        # A "resolved" type around "firing" data would page and resolve at once downstream.
        if self.type != _TYPE_BY_STATUS[self.data.status]:
            raise ValueError("type does not match data.status")


class RetrainingRequest(msgspec.Struct, kw_only=True):
    """CloudEvents 1.0 envelope (structured JSON mode) around RetrainingRequestData."""

    specversion: Literal["1.0"] = SPEC_VERSION
    id: str
    source: str
    type: Literal["io.driftline.retraining.requested"] = RETRAINING_REQUESTED
    subject: str
    time: UtcMs
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: DataSchema = UNSET
    data: RetrainingRequestData

    def __post_init__(self) -> None:
        if self.dataschema is None:
            self.dataschema = UNSET


_TYPE_BY_STATUS: Final = {"firing": ALERT_FIRING, "resolved": ALERT_RESOLVED}


def alert_id(data: AlertData) -> str:
    """The deterministic CloudEvents ``id`` of an alert emission.

    One id per (alert, transition, window): the same window replayed gives the same id, the
    next window's firing gives a new one. Fields are joined with ``|`` so that no two
    different triples can concatenate to the same string.
    """
    material = f"{data.dedup_key}|{data.status}|{data.window.end}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def alert_event(data: AlertData, *, source: str = DEFAULT_SOURCE) -> AlertEvent:
    """Wrap alert data in its CloudEvents envelope (type from ``status``, time = window end)."""
    return AlertEvent(
        id=alert_id(data),
        source=source,
        type=_TYPE_BY_STATUS[data.status],
        subject=data.model_id,
        time=data.window.end,
        data=data,
    )


def retraining_request(data: RetrainingRequestData, *, source: str = DEFAULT_SOURCE) -> RetrainingRequest:
    """Wrap a retraining request; its ``id`` *is* the idempotency key, so CloudEvents-level
    dedup and trainer-level idempotency agree."""
    return RetrainingRequest(
        id=data.idempotency_key,
        source=source,
        subject=data.model_id,
        time=data.window.end,
        data=data,
    )


_ALERT_DECODER: Final = msgspec.json.Decoder(AlertEvent)
_RETRAINING_DECODER: Final = msgspec.json.Decoder(RetrainingRequest)


def decode_alert(b: bytes) -> AlertEvent:
    """Decode and validate an alert; any bad input raises ``msgspec.ValidationError``."""
    return _strict(_ALERT_DECODER, b)


def decode_retraining_request(b: bytes) -> RetrainingRequest:
    """Decode and validate a retraining request; any bad input raises ``msgspec.ValidationError``."""
    return _strict(_RETRAINING_DECODER, b)


def _strict(decoder: msgspec.json.Decoder, b: bytes) -> Any:
    # One exception type for callers: malformed JSON and bad UTF-8 are bad input too.
    try:
        return decoder.decode(b)
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise msgspec.ValidationError(str(exc)) from exc
