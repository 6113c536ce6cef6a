"""Output contracts: alerts and retraining requests as CloudEvents 1.0 over Kafka.

CloudEvents lets any broker, router or function platform route our output by ``type`` and
``subject`` without knowing driftline. The Kafka protocol binding has two content modes, and
each output topic is configured with one (:func:`kafka_record`): *structured* (the default:
the whole event is the JSON value) and *binary* (attributes in ``ce_*`` headers, the data alone
as the value, for routers that filter on headers without parsing values). Readers never need
to be told which: :func:`decode_alert` and :func:`decode_retraining_request` tell the mode of
each message from its headers, so a topic whose mode is changed stays readable throughout.

Both envelopes are *deterministic*: ``id`` derives from what the event is about, and ``time``
is the window end (event time) rather than the wall clock, so a worker that replays a window
after a crash re-emits byte-identical events that consumers can drop as duplicates by ``id``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Meta, UnsetType

from driftline.schemas.results import SegmentContribution

SPEC_VERSION: Final = "1.0"
DEFAULT_SOURCE: Final = "/driftline/worker"
ALERT_FIRING: Final = "io.driftline.alert.firing"
ALERT_RESOLVED: Final = "io.driftline.alert.resolved"
RETRAINING_REQUESTED: Final = "io.driftline.retraining.requested"
#: the two CloudEvents types an alert can have, one per status
AlertType = Literal["io.driftline.alert.firing", "io.driftline.alert.resolved"]

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


#: what a retraining request asks for, chosen by the rule that fired (its ``action`` key)
RetrainingAction = Literal["retrain", "recalibrate", "rollback", "investigate"]
RETRAINING_ACTIONS: Final[tuple[str, ...]] = ("retrain", "recalibrate", "rollback", "investigate")
#: the data of a version 1 request has no ``schema_version``; version 2 says ``"2.0"``
RETRAINING_SCHEMA_VERSION: Final = "2.0"


class Lineage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The model's registry reference, as far as driftline knows it (configuration ``registry``)."""

    registry_uri: str | None = None
    registered_model: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None


class InputRange(msgspec.Struct, kw_only=True):
    """First and last offset of one input partition (inclusive) holding the range's records.

    A cover: records of neighbouring windows may lie in between, so filter by event time."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


class TrainingData(msgspec.Struct, kw_only=True):
    """The data to train on: the suggested event-time range, and the input driftline saw in it.

    ``covered`` spans the windows seen in the range (absent when none); ``predictions`` and
    ``labels`` the input partitions and offsets of their accepted predictions and joined
    labels; ``label_coverage`` is ``labelled_count / prediction_count``."""

    range: Window
    covered: Window | None = None
    windows: int = 0
    predictions: list[InputRange] = []
    labels: list[InputRange] = []
    prediction_count: int = 0
    labelled_count: int = 0
    label_coverage: float | None = None


class MetricEvidence(msgspec.Struct, kw_only=True):
    """A metric of the triggering window and its reference baseline (null when unknown)."""

    value: float | None
    baseline: float | None = None


class FeatureDriftEvidence(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A drifted feature of the triggering window, with its test and effect size when known."""

    feature: str
    test: str
    statistic: float | None = None
    p_value: float | None = None
    raw_p_value: float | None = None
    distance: float | None = None
    distance_name: str | None = None


class Trigger(msgspec.Struct, kw_only=True):
    """Why: the rule that fired, its alert's dedup keys, and the evidence of the window."""

    rule: str
    severity: Literal["critical", "error", "warning", "info"]
    metric: str
    dedup_keys: list[str]
    segment: dict[str, str] = {}
    observed: float | None = None
    threshold: float | None = None
    comparison: Literal["<", "<=", ">", ">="] | None = None
    metrics: dict[str, MetricEvidence] = {}
    drifted_features: list[FeatureDriftEvidence] = []
    #: the whole model's segment values that contributed most to the change, worst first (at
    #: most 3): the alert's own ranking for a labelled metric, else the window's ranking of the
    #: headline metric; empty when unknown (segment slices, label-free or unranked windows)
    worst_segments: list[SegmentContribution] = []


class Baseline(msgspec.Struct, kw_only=True):
    """What a new model must beat: a metric's reference value, and where that reference came
    from (``reference`` as in window results; ``reference_window`` for a bootstrapped one)."""

    metric: str
    value: float
    reference: str
    reference_window: Window | None = None


class RetrainingRequestData(msgspec.Struct, kw_only=True):
    """Why and on which data to retrain. Start at most one run per idempotency_key.

    Version 1 (no ``schema_version``) has the fields up to ``requested_at``; version 2 adds
    ``schema_version`` "2.0", ``lineage``, ``training_data``, ``trigger``, ``action``,
    ``baseline`` and ``parameters`` (flat strings for workflow engines), and keeps every
    version 1 field, so a version 1 reader still understands a version 2 request."""

    idempotency_key: str
    model_id: str
    model_version: str
    reason: str
    evidence: dict[str, Any]
    window: Window
    suggested_training_range: Window
    requested_at: UtcMs
    schema_version: Literal["1.0", "2.0"] = "1.0"
    lineage: Lineage | None = None
    training_data: TrainingData | None = None
    trigger: Trigger | None = None
    action: RetrainingAction = "retrain"
    baseline: Baseline | None = None
    parameters: dict[str, str] = {}


class AlertEvent(msgspec.Struct, kw_only=True):
    """CloudEvents 1.0 envelope (structured JSON mode) around AlertData."""

    specversion: Literal["1.0"] = SPEC_VERSION
    id: str
    source: str
    type: AlertType
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


_TYPE_BY_STATUS: Final[dict[str, AlertType]] = {"firing": ALERT_FIRING, "resolved": ALERT_RESOLVED}


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


# -- the Kafka protocol binding -----------------------------------------------------------------

ContentMode: TypeAlias = Literal["structured", "binary"]
#: the content modes of the CloudEvents Kafka protocol binding, as a configuration names them
CONTENT_MODES: Final[tuple[ContentMode, ...]] = ("structured", "binary")
CONTENT_TYPE_HEADER: Final = "content-type"
STRUCTURED_CONTENT_TYPE: Final = b"application/cloudevents+json; charset=UTF-8"
#: binary mode: every attribute but ``datacontenttype`` (the content-type header) is a header
ATTRIBUTE_HEADER_PREFIX: Final = "ce_"
#: as confluent-kafka returns them (``Message.headers()``), or as a mapping
Headers: TypeAlias = Iterable[tuple[str | bytes, bytes | None]] | Mapping[str, bytes | None] | None

_ENCODER: Final = msgspec.json.Encoder()


def kafka_record(
    event: AlertEvent | RetrainingRequest, mode: ContentMode = "structured"
) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """The Kafka value and headers of ``event`` in content ``mode``; the key is the caller's.

    Structured: the whole event as JSON, ``content-type: application/cloudevents+json``.
    Binary: ``event.data`` as JSON, one ``ce_<attribute>`` header per attribute that is set
    (UTF-8), and ``datacontenttype`` as the ``content-type`` header, as the binding specifies.
    """
    if mode == "structured":
        return _ENCODER.encode(event), ((CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE),)
    if mode != "binary":
        raise ValueError(f"content mode must be one of {CONTENT_MODES}, not {mode!r}")
    headers = []
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if name == "data" or value is UNSET or value is None:
            continue
        if name == "datacontenttype":
            headers.append((CONTENT_TYPE_HEADER, value.encode()))
        else:
            headers.append((ATTRIBUTE_HEADER_PREFIX + name, value.encode()))
    return _ENCODER.encode(event.data), tuple(headers)


def content_mode(headers: Headers) -> ContentMode:
    """Which content mode a Kafka message is in, by the binding's rule: a ``content-type``
    starting ``application/cloudevents`` is structured; else a ``ce_specversion`` header
    makes it binary. A message with neither is read as structured: that is how events were
    written before binary mode existed, and how a plain producer writes them."""
    items = _header_items(headers)
    content_type = items.get(CONTENT_TYPE_HEADER, "")
    if content_type.lower().startswith("application/cloudevents"):
        return "structured"
    return "binary" if ATTRIBUTE_HEADER_PREFIX + "specversion" in items else "structured"


_ALERT_DECODER: Final = msgspec.json.Decoder(AlertEvent)
_RETRAINING_DECODER: Final = msgspec.json.Decoder(RetrainingRequest)


def decode_alert(b: bytes, headers: Headers = None) -> AlertEvent:
    """Decode and validate an alert in either content mode (``headers`` tell which; without
    them, structured); any bad input raises ``msgspec.ValidationError``."""
    return _decode(_ALERT_DECODER, AlertEvent, b, headers)


def decode_retraining_request(b: bytes, headers: Headers = None) -> RetrainingRequest:
    """Decode and validate a retraining request in either content mode (as :func:`decode_alert`);
    any bad input raises ``msgspec.ValidationError``."""
    return _decode(_RETRAINING_DECODER, RetrainingRequest, b, headers)


def _decode(decoder: msgspec.json.Decoder, cls: type, b: bytes, headers: Headers) -> Any:
    try:
        if headers is None or content_mode(headers) == "structured":
            return _strict(decoder, b)
        # Binary: the attributes from the headers around the value's data, validated as one
        # struct, so both modes accept and refuse exactly the same events.
        items = _header_items(headers)
        envelope: dict[str, Any] = {
            name[len(ATTRIBUTE_HEADER_PREFIX) :]: value
            for name, value in items.items()
            if name.startswith(ATTRIBUTE_HEADER_PREFIX)
        }
        if CONTENT_TYPE_HEADER in items:
            envelope["datacontenttype"] = items[CONTENT_TYPE_HEADER]
        envelope["data"] = msgspec.json.decode(b)
        return msgspec.convert(envelope, cls)
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, UnicodeDecodeError, TypeError) as exc:
        raise msgspec.ValidationError(str(exc)) from exc


def _header_items(headers: Headers) -> dict[str, str]:
    """Header names in lower case (the binding's names are), values as text; a header with no
    value is dropped. Raises ``UnicodeDecodeError`` on a value that is not UTF-8."""
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out = {}
    for name, value in pairs:
        if value is None:
            continue
        key = name.decode() if isinstance(name, bytes) else name
        out[key.lower()] = value.decode() if isinstance(value, bytes) else str(value)
    return out


def _strict(decoder: msgspec.json.Decoder, b: bytes) -> Any:
    # One exception type for callers: malformed JSON and bad UTF-8 are bad input too.
    try:
        return decoder.decode(b)
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise msgspec.ValidationError(str(exc)) from exc
