"""Input contracts: what serving apps and label sources publish.

The structs are the single source of truth: msgspec decodes *and* validates them in one C pass
(types, lengths, ranges, patterns), and ``jsonschema.py`` derives the JSON Schema files that
producers in other languages validate against. Every constraint therefore lives in an
``Annotated[..., Meta(...)]`` where msgspec checks it in C and the JSON Schema can express it;
``__post_init__`` only does what C cannot (turning an RFC 3339 string into epoch ms).

Unknown fields are ignored so producers can add fields before readers learn them; a new
*major* ``schema_version`` is refused because its meaning may have changed under the same names.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from driftline.schemas.timefmt import RFC3339_PATTERN, rfc3339_to_ms

SCHEMA_VERSION: Final = "1.0"
#: Any 1.x is readable: minor versions only add optional fields, which this reader ignores.
SCHEMA_VERSION_PATTERN: Final = r"^1\.[0-9]+$"
MAX_BATCH_EVENTS: Final = 100_000
MAX_FEATURES: Final = 2000
MAX_SEGMENTS: Final = 16

#: Event time must fall in [2000-01-01, 2100-01-01]: outside it is almost always seconds sent
#: as milliseconds (or the reverse), which would otherwise open windows decades away.
MIN_TIMESTAMP_MS: Final = 946_684_800_000
MAX_TIMESTAMP_MS: Final = 4_102_444_800_000

UNSUPPORTED_VERSION_MESSAGE: Final = "Unsupported schema_version (this reader accepts 1.x)"
# The version is checked in ``__post_init__`` rather than by a msgspec ``pattern``: a regex per
# event costs ~0.6 µs (a fifth of the whole decode), the string compare below ~0.02 µs. The
# JSON Schema still carries the pattern for other languages.
SchemaVersion = Annotated[
    str,
    Meta(
        description="Contract version; any 1.x is accepted, other majors are rejected.",
        extra_json_schema={"pattern": SCHEMA_VERSION_PATTERN},
    ),
]
_VERSION_RE = re.compile(SCHEMA_VERSION_PATTERN)
# Integers are bounded to int64 so every value fits a numpy column; msgspec would otherwise
# hand back arbitrary-precision ints that overflow float conversion downstream.
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
# NaN/Infinity cannot reach a float field: msgspec rejects the non-JSON literals ``NaN`` and
# ``Infinity`` as malformed and out-of-range numbers such as ``1e999`` as "Number out of range".
Scalar = float | Int64 | str | bool | None
EpochMs = Annotated[
    int,
    Meta(
        ge=MIN_TIMESTAMP_MS,
        le=MAX_TIMESTAMP_MS,
        description="Event time in epoch milliseconds (UTC).",
    ),
]
Rfc3339 = Annotated[
    str,
    Meta(
        max_length=64,
        pattern=RFC3339_PATTERN,
        description="Event time as an RFC 3339 date-time with an offset.",
        extra_json_schema={"format": "date-time"},
    ),
]
Timestamp = EpochMs | Rfc3339
PredictionId = Annotated[str, Meta(min_length=1, max_length=256)]
ModelId = Annotated[str, Meta(min_length=1, max_length=128)]
ModelVersion = Annotated[str, Meta(min_length=1, max_length=128)]
FeatureName = Annotated[str, Meta(max_length=256)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
# Registry strings end up in retraining requests, workflow parameters and terminal output:
# no control characters (they could forge log lines or break a workflow engine's templating).
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
RegistryText = Annotated[str, Meta(min_length=1, max_length=256, pattern=_PRINTABLE)]
RegistryUri = Annotated[str, Meta(min_length=1, max_length=1024, pattern=r"^[^\x00-\x20\x7f]+$")]


def check_schema_version(version: str) -> None:
    """Raise ``ValueError`` unless ``version`` is a 1.x this reader understands."""
    if version != SCHEMA_VERSION and not _VERSION_RE.fullmatch(version):
        raise ValueError(UNSUPPORTED_VERSION_MESSAGE)


def _normalise_timestamp(ts: int | str) -> int:
    """Return epoch ms for either spelling, range-checked.

    Decoded ints were already range-checked in C by msgspec, but ``__post_init__`` also runs on
    plain Python construction, where msgspec applies no ``Meta`` constraints.
    """
    ms = rfc3339_to_ms(ts) if isinstance(ts, str) else ts
    if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        raise ValueError("timestamp outside 2000-01-01..2100-01-01")
    return ms


#: the message a bad ``attributions`` raises with; the decoder maps it (and any other failure
#: under ``$.attributions``) to the dead-letter reason ``invalid_attribution``
INVALID_ATTRIBUTION_MESSAGE: Final = "Invalid attributions"


def _check_attributions(event: PredictionEvent) -> None:
    """Attributions are the model's account of *its* features: one naming a feature the event
    does not carry is a producer joining the wrong explanation to a prediction, and would rank
    a feature nobody can look at. Non-finite values cannot come from JSON (the decoder refuses
    them), but can from a Python producer, and would turn a window's mean into NaN."""
    attributions = event.attributions
    assert attributions is not None
    if not attributions.keys() <= event.features.keys():
        unknown = sorted(attributions.keys() - event.features.keys())[:3]
        raise ValueError(f"{INVALID_ATTRIBUTION_MESSAGE}: not features of the event {unknown}")
    if not all(map(math.isfinite, attributions.values())):
        raise ValueError(f"{INVALID_ATTRIBUTION_MESSAGE}: values must be finite numbers")


def _post_init_event(event: PredictionEvent | GroundTruthEvent) -> None:
    # Kept to two cheap checks on the common path (int timestamp, version "1.0"): this runs once
    # per event and Python-level work here is the largest cost of a batch decode after parsing.
    ts = event.timestamp
    if ts.__class__ is not int or not MIN_TIMESTAMP_MS <= ts <= MAX_TIMESTAMP_MS:
        event.timestamp = _normalise_timestamp(ts)
    if event.schema_version != SCHEMA_VERSION:
        check_schema_version(event.schema_version)


class Registry(msgspec.Struct, kw_only=True, gc=False):
    """Where the model that made this prediction is registered (e.g. MLflow): the same keys as
    the model's ``registry`` configuration. Optional; retraining requests carry it as their
    lineage (docs/retraining.md says how it combines with the configuration). The registered
    version is the event's ``model_version``."""

    uri: RegistryUri | None = None
    name: RegistryText | None = None
    alias: Annotated[str, Meta(min_length=1, max_length=128, pattern=_PRINTABLE)] | None = None
    run_id: Annotated[str, Meta(min_length=1, max_length=128, pattern=_PRINTABLE)] | None = None


# Struct docstrings become the JSON Schema ``description`` that producers read, so they speak
# to producers; implementation notes live in comments. ``gc=False``: events hold only scalars
# and flat dicts, so they cannot form reference cycles, and untracked a 100k-event batch does
# not trigger full garbage collections.
class PredictionEvent(msgspec.Struct, kw_only=True, gc=False):
    """One model prediction as the serving app saw it. Readers normalise timestamp to epoch ms."""

    prediction_id: PredictionId
    model_id: ModelId
    model_version: ModelVersion = "unversioned"
    timestamp: Timestamp
    features: Annotated[dict[FeatureName, Scalar], Meta(max_length=MAX_FEATURES)] = {}
    prediction: str | Int64 | float | bool
    scores: dict[str, Probability] | None = None
    score: float | None = None
    segments: Annotated[dict[str, str], Meta(max_length=MAX_SEGMENTS)] | None = None
    registry: Registry | None = None
    schema_version: SchemaVersion = SCHEMA_VERSION
    # Each feature's contribution to this prediction (e.g. SHAP values): optional, and only
    # checked when present, so events without it pay one comparison.
    attributions: (
        Annotated[
            dict[FeatureName, float],
            Meta(
                max_length=MAX_FEATURES,
                description=(
                    "Optional: each feature's contribution to this prediction (e.g. SHAP values), "
                    "finite numbers keyed by names that appear in features. Windows compare the "
                    "ranking of mean absolute attribution with the reference's (nDCG)."
                ),
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        _post_init_event(self)
        if self.attributions is not None:
            _check_attributions(self)


# ``timestamp`` is when the label became known; performance is attributed to the prediction's
# window, so a late label still lands in the right window.
class GroundTruthEvent(msgspec.Struct, kw_only=True, gc=False):
    """The observed outcome (label) for an earlier prediction of the same model, joined to it by
    (model_id, prediction_id): models that score one request may share its prediction_id."""

    prediction_id: PredictionId
    model_id: ModelId
    label: str | Int64 | float | bool
    timestamp: Timestamp
    model_version: ModelVersion | None = None
    schema_version: SchemaVersion = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _post_init_event(self)


class PredictionBatch(msgspec.Struct, kw_only=True, gc=False):
    """Many predictions in one message (amortises the per-message broker cost)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    kind: Literal["predictions"] | None = None
    events: Annotated[list[PredictionEvent], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]

    def __post_init__(self) -> None:
        check_schema_version(self.schema_version)


class GroundTruthBatch(msgspec.Struct, kw_only=True, gc=False):
    """Many ground-truth labels in one message (amortises the per-message broker cost)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    kind: Literal["ground_truth"] | None = None
    events: Annotated[list[GroundTruthEvent], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]

    def __post_init__(self) -> None:
        check_schema_version(self.schema_version)
