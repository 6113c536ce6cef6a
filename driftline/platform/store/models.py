"""The SQL schema: history, alert state, the notification outbox and worker checkpoints.

Portable by construction, so one migration serves SQLite (single host, tests, the demo) and
PostgreSQL (production): timestamps are ``BIGINT`` epoch milliseconds, the unit every other part
of driftline already works in, so nothing depends on a database's time zone handling; documents
are ``sqlalchemy.JSON``. Every table that receives replayed input has a UNIQUE natural key, which
is what lets :mod:`driftline.platform.store.repository` upsert instead of duplicating.

Changing anything here needs a new revision in ``driftline/platform/store/migrations/versions``; the test
suite compares these models with the migrated database and fails on any drift between them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit constraint names: Alembic can only alter or drop a constraint it can name, and
# SQLite's batch mode needs the names to rebuild tables.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-assigns ids to a column declared exactly ``INTEGER PRIMARY KEY``.
_ID = BigInteger().with_variant(Integer(), "sqlite")

NOTIFICATION_STATUSES = ("pending", "delivered", "failed", "dead")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, str: String(255), int: BigInteger}


class Model(Base):
    """One monitored model; ``config`` is the effective monitoring config last seen (for audit)."""

    __tablename__ = "models"

    model_id: Mapped[str] = mapped_column(primary_key=True)
    first_seen_ms: Mapped[int]
    last_seen_ms: Mapped[int]
    config: Mapped[dict[str, Any] | None]


class ModelVersion(Base):
    """Which versions of a model were seen and when: the version history for audit."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "model_version"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.model_id", ondelete="CASCADE"))
    model_version: Mapped[str]
    first_seen_ms: Mapped[int]
    last_seen_ms: Mapped[int]
    #: the version's registry reference (retraining request lineage, a followed alias);
    #: revision 0004, null before
    lineage: Mapped[dict[str, Any] | None]


class ReferenceProfileRow(Base):
    """A reference profile (``ReferenceProfile.to_dict()``), versioned by creation time."""

    __tablename__ = "reference_profiles"
    __table_args__ = (UniqueConstraint("model_id", "model_version", "created_ms"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    model_id: Mapped[str]
    model_version: Mapped[str]
    created_ms: Mapped[int]
    source: Mapped[str] = mapped_column(Text)
    profile: Mapped[dict[str, Any]]


class WindowResultRow(Base):
    """One evaluated window slice. ``segment`` is the canonical key from ``segment_key``."""

    __tablename__ = "window_results"
    __table_args__ = (
        UniqueConstraint("model_id", "model_version", "segment", "window_start_ms", "phase"),
        Index(None, "model_id", "window_start_ms"),
        Index(None, "window_end_ms"),  # retention deletes by it
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    model_id: Mapped[str]
    model_version: Mapped[str]
    segment: Mapped[str] = mapped_column(String(512))
    window_start_ms: Mapped[int]
    window_end_ms: Mapped[int]
    phase: Mapped[str] = mapped_column(String(16))
    prediction_count: Mapped[int]
    labelled_count: Mapped[int]
    label_coverage: Mapped[float | None] = mapped_column(Float)
    dataset_drift: Mapped[bool | None]
    drift_share: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]
    drift: Mapped[list[Any]]
    data_quality: Mapped[dict[str, Any]]
    reference: Mapped[str] = mapped_column(Text)
    recorded_ms: Mapped[int]
    #: the online detectors' detections (revision 0002; rows stored before it hold [])
    online: Mapped[list[Any]] = mapped_column(server_default=text("'[]'"))
    #: the label-free estimates' intervals, metric -> [low, high] (revision 0003; older rows: {})
    intervals: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'"))
    interval_level: Mapped[float | None] = mapped_column(Float)
    #: the final whole-model window's segment ranking, worst first (revision 0005; older rows: [])
    segments_ranked: Mapped[list[Any]] = mapped_column(server_default=text("'[]'"))


class AlertRow(Base):
    """The current state of one alert series (one row per dedup key)."""

    __tablename__ = "alerts"
    __table_args__ = (Index(None, "model_id", "last_changed_ms"),)

    dedup_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str]
    severity: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[str]
    model_version: Mapped[str]
    segment: Mapped[dict[str, Any]]
    first_fired_ms: Mapped[int]
    last_event_id: Mapped[str] = mapped_column(String(64))
    last_changed_ms: Mapped[int]


class AlertTransition(Base):
    """Every firing/resolved emission, once per CloudEvents id, with the event as emitted."""

    __tablename__ = "alert_transitions"
    __table_args__ = (Index(None, "dedup_key", "window_end_ms"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(64), ForeignKey("alerts.dedup_key", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    window_start_ms: Mapped[int]
    window_end_ms: Mapped[int]
    observed: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    event: Mapped[dict[str, Any]]
    recorded_ms: Mapped[int]


class Notification(Base):
    """The durable outbox: one row per (event, subscription), delivered at least once."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "subscription"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed', 'dead')", name="status"),
        Index(None, "status", "next_attempt_ms"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    subscription: Mapped[str]
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_ms: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_ms: Mapped[int]
    delivered_ms: Mapped[int | None]


class NotificationAttempt(Base):
    """One delivery try, kept for the audit trail and for tuning backoff."""

    __tablename__ = "notification_attempts"
    __table_args__ = (Index(None, "notification_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(_ID, ForeignKey("notifications.id", ondelete="CASCADE"))
    attempted_ms: Mapped[int]
    outcome: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None]


class RetrainingRequestRow(Base):
    """A retraining request as emitted, once per idempotency key."""

    __tablename__ = "retraining_requests"
    __table_args__ = (Index(None, "model_id", "recorded_ms"),)

    idempotency_key: Mapped[str] = mapped_column(primary_key=True)
    model_id: Mapped[str]
    model_version: Mapped[str]
    reason: Mapped[str] = mapped_column(Text)
    window_start_ms: Mapped[int]
    window_end_ms: Mapped[int]
    event: Mapped[dict[str, Any]]
    recorded_ms: Mapped[int]


class RetrainingAcknowledgement(Base):
    """A trainer handled a retraining request (revision 0004): once per request and consumer."""

    __tablename__ = "retraining_acknowledgements"

    idempotency_key: Mapped[str] = mapped_column(primary_key=True)
    consumer: Mapped[str] = mapped_column(primary_key=True)
    acknowledged_ms: Mapped[int]
    outcome: Mapped[str] = mapped_column(String(32))


class StreamCheckpoint(Base):
    """A partition's whole state (the base of its checkpoint chain) plus the input offsets it
    covers; the chain's deltas are in ``stream_checkpoint_deltas``."""

    __tablename__ = "stream_checkpoints"

    name: Mapped[str] = mapped_column(primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    offsets: Mapped[dict[str, Any]]
    updated_ms: Mapped[int]
    #: a new random id at every base write (revision 0006; NULL before): a writer appends a
    #: delta only to the chain it wrote or restored, so two writers never interleave deltas
    chain: Mapped[str | None] = mapped_column(String(32), nullable=True)


class StreamCheckpointDelta(Base):
    """One step of a checkpoint chain: what changed in a partition's state since the step
    before (revision 0006). Restoring applies the base, then every delta in ``seq`` order; a
    base write deletes them in the same transaction."""

    __tablename__ = "stream_checkpoint_deltas"

    name: Mapped[str] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    #: the base's ``chain`` (a reader pairs a base only with its own chain's deltas)
    chain: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    #: the offsets the chain covers up to this delta (the base row's after a base write)
    offsets: Mapped[dict[str, Any]]
    updated_ms: Mapped[int]
