"""What the Airflow DAG's Kafka trigger does with each message (no Airflow import: testable).

``apply_function`` of the Kafka provider's message-queue trigger receives the raw
``confluent_kafka.Message``; returning a value fires the asset event with it as payload,
returning ``None`` skips the message. This keeps version 2 requests asking to retrain or
recalibrate, decoded from either CloudEvents content mode.
"""

from __future__ import annotations

from typing import Any

#: the actions this DAG trains for; ``rollback`` and ``investigate`` go to people instead
TRAINING_ACTIONS = ("retrain", "recalibrate")


def retraining_request(message: Any) -> dict[str, Any] | None:
    """The request as a JSON-like dict, or None for anything this DAG does not act on."""
    import msgspec

    from driftline.schemas import decode_retraining_request

    try:
        request = decode_retraining_request(message.value() or b"", message.headers())
    except Exception:
        return None  # not a request driftline wrote; the trainer helper counts these
    if request.data.schema_version != "2.0" or request.data.action not in TRAINING_ACTIONS:
        return None
    return msgspec.to_builtins(request)
