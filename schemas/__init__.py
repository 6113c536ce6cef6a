"""driftline.schemas: the event contracts shared by every other part and by producers.

Input: ``PredictionEvent`` / ``GroundTruthEvent`` (single or batched), decoded and validated by
``decode_predictions`` / ``decode_ground_truth``, which never raise and report bad input as
``Rejection`` records. Output: ``AlertEvent`` / ``RetrainingRequest`` as CloudEvents 1.0.
JSON Schema files for other languages live in ``schemas/json/`` (see ``jsonschema.py``).
"""

from driftline.schemas.cloudevents import (
    ALERT_FIRING,
    ALERT_RESOLVED,
    CONTENT_MODES,
    RETRAINING_REQUESTED,
    AlertData,
    AlertEvent,
    ContentMode,
    RetrainingRequest,
    RetrainingRequestData,
    Window,
    alert_event,
    alert_id,
    content_mode,
    decode_alert,
    decode_retraining_request,
    kafka_record,
    retraining_request,
)
from driftline.schemas.codec import (
    DEFAULT_MAX_BYTES,
    Decoded,
    Reason,
    Rejection,
    decode_ground_truth,
    decode_predictions,
    encode,
    encode_batch,
)
from driftline.schemas.events import (
    MAX_BATCH_EVENTS,
    SCHEMA_VERSION,
    GroundTruthBatch,
    GroundTruthEvent,
    PredictionBatch,
    PredictionEvent,
)
from driftline.schemas.results import (
    DistributionSummary,
    DriftTest,
    FeatureQuality,
    WindowResult,
    decode_window_result,
)
from driftline.schemas.timefmt import ms_to_rfc3339, rfc3339_to_ms

__all__ = [
    "ALERT_FIRING",
    "ALERT_RESOLVED",
    "CONTENT_MODES",
    "DEFAULT_MAX_BYTES",
    "MAX_BATCH_EVENTS",
    "RETRAINING_REQUESTED",
    "SCHEMA_VERSION",
    "AlertData",
    "AlertEvent",
    "ContentMode",
    "Decoded",
    "DistributionSummary",
    "DriftTest",
    "FeatureQuality",
    "GroundTruthBatch",
    "GroundTruthEvent",
    "PredictionBatch",
    "PredictionEvent",
    "Reason",
    "Rejection",
    "RetrainingRequest",
    "RetrainingRequestData",
    "Window",
    "WindowResult",
    "alert_event",
    "alert_id",
    "content_mode",
    "decode_alert",
    "decode_ground_truth",
    "decode_predictions",
    "decode_retraining_request",
    "decode_window_result",
    "encode",
    "encode_batch",
    "kafka_record",
    "ms_to_rfc3339",
    "retraining_request",
    "rfc3339_to_ms",
]
