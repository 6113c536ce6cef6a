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
    RetrainingRequestData,
    Window,
    alert_event,
    encode,
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


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_the_sdk_reads_every_envelope_in_structured_mode(name: str) -> None:
    event = EVENTS[name]
    message = ce_kafka.KafkaMessage(
        headers={"content-type": b"application/cloudevents+json; charset=UTF-8"},
        key=b"churn",
        value=encode(event),
    )
    parsed = ce_kafka.from_structured(message, JSONFormat())
    assert_same_event(parsed, event)
    assert "dataschema" not in encode(event).decode()  # unset optional attributes are absent
