"""Our alerts and retraining requests, read by the official CloudEvents Python SDK (issue 19).

The SDK is the oracle: what its Kafka binding (``cloudevents.core.bindings.kafka``) cannot
read, no CloudEvents router or function platform downstream can be expected to read either.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from driftline.schemas import (
    AlertData,
    RetrainingRequest,
    RetrainingRequestData,
    Window,
    alert_event,
    content_mode,
    decode_alert,
    decode_retraining_request,
    encode,
    kafka_record,
    retraining_request,
)

WINDOW = Window(start="2026-11-24T21:00:00.000Z", end="2026-11-24T21:05:00.000Z")


def alert(status: str) -> Any:
    return alert_event(
        AlertData(
            dedup_key="churn/v3/accuracy",
            status=status,  # type: ignore[arg-type]
            rule="accuracy-drop",
            metric="accuracy",
            severity="critical",
            model_id="churn",
            model_version="v3",
            segment={},
            window=WINDOW,
            observed=0.71,
            threshold=0.8,
            comparison="<",
            starts_at=WINDOW.end,
            ends_at=WINDOW.end if status == "resolved" else None,
        )
    )


def request() -> Any:
    return retraining_request(
        RetrainingRequestData(
            idempotency_key="churn-v3-2026-11-24T21:05:00.000Z",
            model_id="churn",
            model_version="v3",
            reason="accuracy-drop",
            evidence={"accuracy": 0.71},
            window=WINDOW,
            suggested_training_range=WINDOW,
            requested_at=WINDOW.end,
        )
    )


EVENTS = {"firing": alert("firing"), "resolved": alert("resolved"), "retraining": request()}


def assert_same_event(parsed: Any, event: Any) -> None:
    """The SDK's event carries exactly our attributes and our data."""
    attributes = dict(parsed.get_attributes())
    attributes.pop("partitionkey", None)  # the SDK's name for the Kafka message key
    expected = msgspec.to_builtins(event)
    data = expected.pop("data")
    assert attributes.pop("time") == datetime.fromisoformat(expected.pop("time"))
    assert attributes == expected
    assert parsed.get_data() == data


def sdk_message(value: bytes, headers: Any, key: bytes | None = b"churn") -> ce_kafka.KafkaMessage:
    """A Kafka message as the SDK's binding takes it (headers as a mapping of bytes)."""
    return ce_kafka.KafkaMessage(headers=dict(headers or []), key=key, value=value)


def decoder(event: Any) -> Any:
    return decode_retraining_request if isinstance(event, RetrainingRequest) else decode_alert


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_the_sdk_reads_every_envelope_in_structured_mode(name: str) -> None:
    event = EVENTS[name]
    value, headers = kafka_record(event, "structured")
    assert dict(headers) == {"content-type": b"application/cloudevents+json; charset=UTF-8"}
    assert_same_event(ce_kafka.from_structured(sdk_message(value, headers), JSONFormat()), event)
    assert_same_event(ce_kafka.from_kafka(sdk_message(value, headers), JSONFormat()), event)
    assert "dataschema" not in value.decode()  # unset optional attributes are absent
    assert value == encode(event)  # structured mode is the envelope as it always was


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_the_sdk_reads_every_envelope_in_binary_mode(name: str) -> None:
    event = EVENTS[name]
    value, headers = kafka_record(event, "binary")
    assert dict(headers)["content-type"] == b"application/json"
    assert {k for k, _ in headers} == {
        "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "content-type"
    }
    assert msgspec.json.decode(value) == msgspec.to_builtins(event.data)
    assert_same_event(ce_kafka.from_binary(sdk_message(value, headers), JSONFormat()), event)
    assert_same_event(ce_kafka.from_kafka(sdk_message(value, headers), JSONFormat()), event)


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize("name", sorted(EVENTS))
def test_driftline_decodes_both_modes_to_the_same_event(name: str, mode: str) -> None:
    event = EVENTS[name]
    value, headers = kafka_record(event, mode)  # type: ignore[arg-type]
    assert content_mode(headers) == mode
    assert decoder(event)(value, headers) == event
    assert decoder(event)(value, dict(headers)) == event  # headers as a mapping, too
    assert decoder(event)(value, [(k.encode(), v) for k, v in headers]) == event  # byte names


def test_a_message_without_cloudevents_headers_is_structured() -> None:
    # how events were written before binary mode, and how a plain producer writes them
    event = EVENTS["firing"]
    assert content_mode(None) == content_mode([]) == "structured"
    assert decode_alert(encode(event), []) == decode_alert(encode(event), None) == event
    # the binding's rule: a cloudevents content-type wins over stray ce_ headers
    mixed = [("content-type", b"application/cloudevents+json"), ("ce_specversion", b"1.0")]
    assert content_mode(mixed) == "structured"
    assert content_mode([("CE_SPECVERSION", b"1.0"), ("Content-Type", b"application/json")]) == "binary"


def test_binary_mode_refuses_what_structured_mode_refuses() -> None:
    event = EVENTS["firing"]
    value, headers = kafka_record(event, "binary")
    good = dict(headers)
    broken: list[tuple[bytes, dict[str, bytes | None]]] = [
        (value, {k: v for k, v in good.items() if k != "ce_id"}),  # a required attribute missing
        (value, {**good, "ce_type": b"io.driftline.alert.resolved"}),  # disagrees with data.status
        (value, {**good, "ce_specversion": b"0.3"}),
        (value, {**good, "ce_time": b"2026-11-24T21:05:00Z"}),  # not millisecond precision
        (value, {**good, "ce_subject": b"\xff"}),  # not UTF-8
        (value, {**good, "content-type": b"text/plain"}),
        (b"{not json", good),
        (b"", good),
        (encode(event), good),  # a whole envelope where the data belongs
    ]
    for bad_value, bad_headers in broken:
        with pytest.raises(msgspec.ValidationError):
            decode_alert(bad_value, bad_headers)
    # extension attributes and empty headers are ignored, as unknown fields are in structured mode
    assert decode_alert(value, {**good, "ce_partitionkey": b"x", "ce_dataschema": None}) == event
