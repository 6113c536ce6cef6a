"""The dead-letter contract: why an input was rejected, and where its bytes came from.

A rejected message (or one member of a batch) is written to the ``dead-letter`` topic with its
original bytes and these headers (docs/contracts.md). :class:`Reason` is the one vocabulary of
reasons: dashboards, the ``driftline_events_invalid_total{reason}`` counter and dead-letter
consumers match on its values, so they never change meaning once released.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Final

__all__ = [
    "BATCH_INDEX_HEADER",
    "DETAIL_HEADER",
    "MAX_DETAIL_BYTES",
    "REASON_HEADER",
    "SOURCE_OFFSET_HEADER",
    "SOURCE_PARTITION_HEADER",
    "SOURCE_TOPIC_HEADER",
    "Reason",
    "dead_letter_headers",
    "reason_of",
]

REASON_HEADER: Final = "driftline-dlq-reason"
DETAIL_HEADER: Final = "driftline-dlq-detail"
SOURCE_TOPIC_HEADER: Final = "driftline-source-topic"
SOURCE_PARTITION_HEADER: Final = "driftline-source-partition"
SOURCE_OFFSET_HEADER: Final = "driftline-source-offset"
BATCH_INDEX_HEADER: Final = "driftline-batch-index"
MAX_DETAIL_BYTES: Final = 1000


class Reason(StrEnum):
    """Why a message or a batch member was rejected. Values are stable."""

    # the bytes are not a valid event (schemas/codec.py)
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    WRONG_KIND = "wrong_kind"
    EMPTY_BATCH = "empty_batch"
    # a valid event the stream will not take (streams/ingest.py)
    TOO_FAR_AHEAD = "too_far_ahead"
    UNKNOWN_MODEL = "unknown_model"
    # a label, or a prediction, whose value does not fit its model's task (streams/ingest.py):
    # not one of a binary model's two classes, not a number for a regression model
    INVALID_LABEL = "invalid_label"
    TASK_MISMATCH = "task_mismatch"
    # ``attributions`` naming a feature the event does not carry, or not finite numbers
    # (schemas/events.py); the prediction itself may be fine, but its explanation is not
    INVALID_ATTRIBUTION = "invalid_attribution"
    # a message whose processing raised: a bug, kept out of the stream (streams/app.py)
    PROCESSING_ERROR = "processing_error"


Headers = tuple[tuple[str, bytes], ...]


def dead_letter_headers(
    reason: Reason, detail: str, topic: str, partition: int, offset: int, index: int | None
) -> Headers:
    """The headers of one dead-letter record: why, and where the bytes came from."""
    headers: list[tuple[str, bytes]] = [
        (REASON_HEADER, str(reason).encode()),
        (DETAIL_HEADER, detail.encode()[:MAX_DETAIL_BYTES]),
        (SOURCE_TOPIC_HEADER, topic.encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
    ]
    if index is not None:
        headers.append((BATCH_INDEX_HEADER, str(index).encode()))
    return tuple(headers)


def reason_of(
    headers: Mapping[str, bytes | None] | Sequence[tuple[str, bytes | None]] | None,
) -> str:
    """The reason a dead-letter record's headers give (``"?"`` when there is none). Values
    may be None because Kafka allows a header without a value; that too gives ``"?"``."""
    reason = dict(headers or {}).get(REASON_HEADER)
    return "?" if reason is None else reason.decode()
