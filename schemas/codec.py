"""Decode and validate input messages; the hot path of every worker.

Design: the common case (a valid batch) costs exactly one msgspec call that parses, validates
and builds every event in C. Only when that call fails do we pay for the slow path, which
re-reads the envelope with its events left as raw bytes and decodes them one by one, so one bad
event goes to dead-letter alone while its neighbours are kept, in order.

``decode_*`` never raise: every input yields events and/or ``Rejection`` records, whose
``reason`` is a small fixed vocabulary (a Prometheus label and a dead-letter header) and whose
``detail`` carries msgspec's message and JSON path but never a payload value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from driftline.schemas.deadletter import Reason
from driftline.schemas.events import (
    INVALID_ATTRIBUTION_MESSAGE,
    MAX_BATCH_EVENTS,
    SCHEMA_VERSION,
    UNSUPPORTED_VERSION_MESSAGE,
    GroundTruthBatch,
    GroundTruthEvent,
    PredictionBatch,
    PredictionEvent,
    SchemaVersion,
    check_schema_version,
)

DEFAULT_MAX_BYTES: Final = 1_048_576
MAX_DETAIL_CHARS: Final = 500


class Rejection(msgspec.Struct, frozen=True):
    """One input that could not be accepted, with what a dead-letter record needs."""

    reason: Reason
    detail: str
    index: int | None
    raw: bytes


E = TypeVar("E", PredictionEvent, GroundTruthEvent)


@dataclass(slots=True)
class Decoded(Generic[E]):
    """What one message yielded. ``batch`` is False when the message could not be identified
    as a batch (single events, and messages too large or too broken to look inside)."""

    events: list[E]
    rejected: list[Rejection]
    batch: bool


# Envelopes for the slow path: members stay undecoded so each can fail on its own.
class _RawPredictionBatch(msgspec.Struct, kw_only=True):
    schema_version: SchemaVersion = SCHEMA_VERSION
    kind: Literal["predictions"] | None = None
    events: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]

    def __post_init__(self) -> None:
        check_schema_version(self.schema_version)


class _RawGroundTruthBatch(msgspec.Struct, kw_only=True):
    schema_version: SchemaVersion = SCHEMA_VERSION
    kind: Literal["ground_truth"] | None = None
    events: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]

    def __post_init__(self) -> None:
        check_schema_version(self.schema_version)


@dataclass(frozen=True, slots=True)
class _Decoders:
    single: msgspec.json.Decoder
    batch: msgspec.json.Decoder
    envelope: msgspec.json.Decoder


# Decoders are built once: msgspec compiles the type into a C validation plan at construction.
_PREDICTIONS: Final = _Decoders(
    single=msgspec.json.Decoder(PredictionEvent),
    batch=msgspec.json.Decoder(PredictionBatch),
    envelope=msgspec.json.Decoder(_RawPredictionBatch),
)
_GROUND_TRUTH: Final = _Decoders(
    single=msgspec.json.Decoder(GroundTruthEvent),
    batch=msgspec.json.Decoder(GroundTruthBatch),
    envelope=msgspec.json.Decoder(_RawGroundTruthBatch),
)
# Top-level keys with raw values: tells "batch" from "single event" without trusting a substring.
_PROBE: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _enc_hook(obj: Any) -> Any:
    """Let evidence carry numpy scalars and arrays without this package importing numpy."""
    for method in ("tolist", "item"):  # ndarray.tolist, numpy scalar .item -> plain Python
        convert = getattr(obj, method, None)
        if callable(convert):
            return convert()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook)
_BATCH_MARKER: Final = b'"events"'
# RecursionError: msgspec parses nesting recursively, and JSON nested deeper than Python's
# recursion limit (a few thousand levels) is no event anyone sends on purpose
_DECODE_ERRORS: Final = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode_predictions(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded[PredictionEvent]:
    """Decode one message (a single PredictionEvent or a batch envelope) into events and rejections."""
    return _decode(data, max_bytes, _PREDICTIONS)


def decode_ground_truth(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded[GroundTruthEvent]:
    """Decode one message (a single GroundTruthEvent or a batch envelope) into events and rejections."""
    return _decode(data, max_bytes, _GROUND_TRUTH)


def encode(obj: msgspec.Struct | Mapping[str, Any]) -> bytes:
    """Encode any contract struct (or a plain JSON object, such as the counters an
    end-of-results marker carries) as compact JSON."""
    return _ENCODER.encode(obj)


_KIND_TO_TYPE: Final[dict[str, type]] = {"predictions": PredictionEvent, "ground_truth": GroundTruthEvent}


def encode_batch(events: Sequence[PredictionEvent | GroundTruthEvent], kind: str) -> bytes:
    """Encode a batch envelope. Refuses what every reader would reject (empty, mixed or
    mislabelled batches), so a producer bug fails at the producer rather than in dead-letter."""
    cls = _KIND_TO_TYPE.get(kind)
    if cls is None:
        raise ValueError(f"kind must be one of {sorted(_KIND_TO_TYPE)}")
    if not events:
        raise ValueError("a batch needs at least one event")
    if len(events) > MAX_BATCH_EVENTS:
        raise ValueError(f"a batch holds at most {MAX_BATCH_EVENTS} events")
    if not all(type(e) is cls for e in events):
        raise TypeError(f"every event of a {kind!r} batch must be a {cls.__name__}")
    envelope = {"schema_version": SCHEMA_VERSION, "kind": kind, "events": list(events)}
    return _ENCODER.encode(envelope)


def _decode(data: bytes, max_bytes: int, dec: _Decoders) -> Decoded:
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > max_bytes:
        detail = f"Message is {len(data)} bytes, over the {max_bytes}-byte limit - at `$`"
        return Decoded([], [Rejection(Reason.TOO_LARGE, detail, None, data)], False)
    # Fast path: one C call. The substring test only picks which shape to try first; the slow
    # path decides properly (e.g. a single event with a feature named "events").
    try:
        if _BATCH_MARKER in data:
            decoded = Decoded(dec.batch.decode(data).events, [], True)
        else:
            decoded = Decoded([dec.single.decode(data)], [], False)
    except _DECODE_ERRORS:
        return _decode_slow(data, dec)
    # msgspec skips ignored fields without checking their UTF-8, so an otherwise valid message
    # could carry invalid bytes; RFC 8259 makes that invalid JSON wherever it sits.
    return decoded if _is_utf8(data) else _decode_slow(data, dec)


def _is_utf8(data: bytes) -> bool:
    if data.isascii():  # no allocation; the common case for machine-produced JSON
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_slow(data: bytes, dec: _Decoders) -> Decoded:
    """Classify a message the fast path refused, isolating bad members of a batch."""
    members: list[bytes] | None = None  # set when the batch had to be split by hand
    envelope_data = data
    top: Mapping[str, msgspec.Raw | None]  # only its keys are read
    try:
        top = _PROBE.decode(data)
    except RecursionError as exc:  # msgspec parses nesting recursively, even to skip a value
        split = _split_batch(data)
        if split is None:
            return Decoded([], [_reject(exc, None, data)], False)
        envelope_data, members = split
        top = {"events": None}
    except _DECODE_ERRORS as exc:
        return Decoded([], [_reject(exc, None, data)], False)
    message_is_utf8 = _is_utf8(data)
    if "events" not in top:
        if not message_is_utf8:
            return Decoded([], [_invalid_utf8(None, data)], False)
        try:
            return Decoded([dec.single.decode(data)], [], False)
        except _DECODE_ERRORS as exc:
            return Decoded([], [_reject(exc, None, data)], False)
    try:
        envelope = dec.envelope.decode(envelope_data)
    except _DECODE_ERRORS as exc:
        return Decoded([], [_reject(exc, None, data)], True)
    events: list = []
    rejected: list[Rejection] = []
    single = dec.single.decode
    for i, member in enumerate(envelope.events if members is None else members):
        raw = bytes(member)
        if not message_is_utf8 and not _is_utf8(raw):
            rejected.append(_invalid_utf8(i, raw))
            continue
        try:
            events.append(single(raw))
        except _DECODE_ERRORS as exc:
            rejected.append(_reject(exc, i, raw, prefix=f"$.events[{i}]"))
    member_had_bad_utf8 = any(r.index is not None and r.reason == Reason.INVALID_JSON for r in rejected)
    if not message_is_utf8 and not member_had_bad_utf8:
        # The invalid bytes sit in the envelope itself, outside every member.
        return Decoded([], [_invalid_utf8(None, data)], True)
    return Decoded(events, rejected, True)


_STRUCTURE: Final = re.compile(rb'["\[\]{},]')
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _split_batch(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """A batch envelope too deeply nested for msgspec, taken apart without recursion: the
    members of its top-level ``events`` array, and the envelope with each member replaced by
    ``0``, so that msgspec can still check the envelope's own fields. None when ``data`` is not
    a JSON object with an ``events`` array at its top level.

    Only structural bytes are visited (strings are skipped whole by a regex), so the cost is
    linear in the message, which the size limit bounds. Anything malformed is left for msgspec
    to find when it decodes the envelope or a member."""
    depth, pos = 0, 0
    last_key: bytes | None = None
    events_from = -1  # after the '[' or ',' that precedes the current member, while in events
    spans: list[tuple[int, int]] = []
    while (m := _STRUCTURE.search(data, pos)) is not None:
        c, at, pos = m.group(), m.start(), m.end()
        if c == b'"':
            string = _STRING.match(data, at)
            if string is None:
                return None
            pos = string.end()
            if depth == 1:
                last_key = string.group()[1:-1]
        elif c in b"[{":
            if depth == 0 and c != b"{":
                return None
            depth += 1
            if depth == 2 and c == b"[" and last_key == b"events" and not spans and events_from < 0:
                events_from = pos
        elif c in b",]}":
            if events_from >= 0 and depth == 2:
                raw = data[events_from:at]
                if raw.strip():
                    lead = len(raw) - len(raw.lstrip())
                    spans.append((events_from + lead, events_from + lead + len(raw.strip())))
                events_from = pos if c == b"," else -1
            if c != b",":
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1:
                last_key = None
    if not spans:
        return None
    parts, last = [], 0
    for start, end in spans:
        parts += [data[last:start], b"0"]
        last = end
    parts.append(data[last:])
    return b"".join(parts), [data[a:b] for a, b in spans]


def _invalid_utf8(index: int | None, raw: bytes) -> Rejection:
    path = "$" if index is None else f"$.events[{index}]"
    return Rejection(Reason.INVALID_JSON, f"Invalid UTF-8 - at `{path}`", index, raw)


def _reject(exc: Exception, index: int | None, raw: bytes, prefix: str = "$") -> Rejection:
    reason, detail = classify(exc, prefix)
    return Rejection(reason, detail, index, raw)


_KEY_MARKER: Final = "key` in `"


def classify(exc: Exception, prefix: str = "$") -> tuple[Reason, str]:
    """Map a msgspec/Unicode decode error to ``(reason, detail)``.

    msgspec has no error codes, only messages of a stable shape (``<what> - at `<path>```), so
    the mapping keys on the message prefix and the JSON path. Paths are relative to the object
    that was decoded; ``prefix`` re-roots them (``$`` -> ``$.events[3]``) for batch members.
    """
    if isinstance(exc, UnicodeDecodeError):
        return Reason.INVALID_JSON, _detail("Invalid UTF-8", "$", prefix)
    if isinstance(exc, RecursionError):
        return Reason.INVALID_JSON, _detail("JSON nested too deeply", "$", prefix)
    message = str(exc)
    base, sep, path = message.rpartition(" - at `")
    if sep:
        path = path.rstrip("`")
        if path.startswith(_KEY_MARKER):  # a dict key failed, e.g. "at `key` in `$.features`"
            base, path = f"{base} (in a key)", path[len(_KEY_MARKER) :]
    else:
        base, path = message, "$"
    if not isinstance(exc, msgspec.ValidationError):  # a DecodeError proper: not JSON at all
        return Reason.INVALID_JSON, _detail(base, path, prefix)
    if base.startswith("Invalid enum value"):
        base = "Invalid enum value"  # msgspec quotes the offending value; details never echo payload
    if path == "$.kind":  # only envelopes have `kind`; any mismatch (value or type) is the same fault
        reason = Reason.WRONG_KIND
    elif base.startswith(INVALID_ATTRIBUTION_MESSAGE):  # raised by __post_init__, on the object
        path = path + ".attributions"
        reason = Reason.INVALID_ATTRIBUTION
    elif path.startswith("$.attributions"):  # a wrong type, a number out of range, too many:
        reason = Reason.INVALID_ATTRIBUTION  # the prediction may be fine, its explanation is not
    elif base == "Invalid enum value":
        reason = Reason.INVALID_VALUE
    elif base.startswith("Object missing required field"):
        reason = Reason.MISSING_FIELD
    elif base.startswith("Expected `") and "`, got `" in base:
        not_object = path == "$" and base.startswith("Expected `object`")
        reason = Reason.NOT_AN_OBJECT if not_object else Reason.WRONG_TYPE
    elif base == UNSUPPORTED_VERSION_MESSAGE:  # raised by __post_init__, so reported on the object
        path = path + ".schema_version"
        reason = Reason.UNSUPPORTED_SCHEMA_VERSION
    elif path == "$.events" and "length >= 1" in base:
        reason = Reason.EMPTY_BATCH
    else:
        reason = Reason.INVALID_VALUE
    return reason, _detail(base, path, prefix)


def _detail(base: str, path: str, prefix: str) -> str:
    full_path = prefix + path[1:]
    detail = f"{base} - at `{full_path}`"
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
    return detail
