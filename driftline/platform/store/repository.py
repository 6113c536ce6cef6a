"""Reads and writes of the store, one small function per question, each taking a Session.

Input is consumed at least once, so every write that a replay can repeat is an upsert on a
natural key (``INSERT ... ON CONFLICT``, dialect-specific in SQLAlchemy but identical for SQLite
and PostgreSQL): recording the same window, alert or request twice leaves one row. Functions
never commit; the caller decides the transaction, so a window's result, its alerts and their
outbox rows land together or not at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, FromClause, Table, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from driftline.platform.store.models import (
    NOTIFICATION_STATUSES,
    AlertRow,
    AlertTransition,
    Model,
    ModelVersion,
    Notification,
    NotificationAttempt,
    ReferenceProfileRow,
    RetrainingRequestRow,
    StreamCheckpoint,
    StreamCheckpointDelta,
    WindowResultRow,
)
from driftline.schemas import AlertEvent, RetrainingRequest
from driftline.schemas.results import (
    DriftTest,
    FeatureQuality,
    OnlineDetection,
    SegmentContribution,
    WindowResult,
)
from driftline.schemas.timefmt import ms_to_rfc3339, rfc3339_to_ms
from driftline.schemas.windows import parse_segment_key, segment_key

__all__ = [
    "Checkpoint",
    "GivenUp",
    "append_checkpoint_delta",
    "due_notifications",
    "enqueue_notification",
    "event_payload",
    "given_up_notifications",
    "latest_profile",
    "list_alerts",
    "list_retraining_requests",
    "load_checkpoint",
    "parse_segment_key",
    "prune_window_results",
    "record_alert",
    "record_attempt",
    "record_retraining_request",
    "record_window_result",
    "save_checkpoint",
    "save_profile",
    "segment_key",
    "touch_model",
    "window_history",
]

_MAX_ERROR_CHARS = 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _insert(session: Session, table: FromClause) -> Any:
    """The dialect's own INSERT, the one that has ``on_conflict_do_*`` (same API on both).

    ``table`` is a model's ``__table__``, which SQLAlchemy types as any FromClause; every model
    here maps a plain Table, and the check says so to the type checker too."""
    if not isinstance(table, Table):
        raise TypeError(f"expected a Table, got {type(table).__name__}")
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"driftline's store supports SQLite and PostgreSQL, not {name}")


def _inserted(session: Session, stmt: Any) -> bool:
    """Whether an ``ON CONFLICT DO NOTHING`` insert added a row.

    Asked through RETURNING rather than ``rowcount``: with psycopg the rowcount of a
    conflicting insert is not reliably 0, and both SQLite (3.35+) and PostgreSQL support it.
    """
    key = next(iter(stmt.table.primary_key.columns))
    return session.execute(stmt.returning(key)).first() is not None


def _least(a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
    # SQLite spells it min(a, b), PostgreSQL least(a, b); CASE is the same everywhere.
    return case((a < b, a), else_=b)


def _greatest(a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((a > b, a), else_=b)


# ---- models and profiles -----------------------------------------------------------------------
def touch_model(
    session: Session, model_id: str, model_version: str, seen_ms: int, config: dict[str, Any] | None
) -> None:
    """Note that a model version was seen at ``seen_ms``: the audit trail of versions in service.

    Seen-times widen monotonically (min/max), so out-of-order or replayed calls are harmless;
    ``config`` replaces the stored one only when given, so a caller that does not know the config
    never erases it.
    """
    models = Model.__table__
    stmt = _insert(session, models).values(
        model_id=model_id, first_seen_ms=seen_ms, last_seen_ms=seen_ms, config=config
    )
    new = stmt.excluded
    set_: dict[str, Any] = {
        "first_seen_ms": _least(models.c.first_seen_ms, new.first_seen_ms),
        "last_seen_ms": _greatest(models.c.last_seen_ms, new.last_seen_ms),
    }
    if config is not None:
        set_["config"] = new.config
    session.execute(stmt.on_conflict_do_update(index_elements=["model_id"], set_=set_))

    versions = ModelVersion.__table__
    stmt = _insert(session, versions).values(
        model_id=model_id, model_version=model_version, first_seen_ms=seen_ms, last_seen_ms=seen_ms
    )
    new = stmt.excluded
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["model_id", "model_version"],
            set_={
                "first_seen_ms": _least(versions.c.first_seen_ms, new.first_seen_ms),
                "last_seen_ms": _greatest(versions.c.last_seen_ms, new.last_seen_ms),
            },
        )
    )


def save_profile(
    session: Session,
    profile_dict: dict[str, Any],
    model_id: str,
    model_version: str,
    source: str,
    created_ms: int,
) -> None:
    """Store a reference profile (``ReferenceProfile.to_dict()``) as a new version.

    Profiles are versioned by ``created_ms`` so a rebuilt reference never erases the one past
    windows were compared with; saving the same (model, version, created_ms) again overwrites
    that one row, which makes a retried CLI import or a replayed bootstrap harmless.
    """
    table = ReferenceProfileRow.__table__
    stmt = _insert(session, table).values(
        model_id=model_id,
        model_version=model_version,
        created_ms=created_ms,
        source=source,
        profile=profile_dict,
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["model_id", "model_version", "created_ms"],
            set_={"source": stmt.excluded.source, "profile": stmt.excluded.profile},
        )
    )


def latest_profile(session: Session, model_id: str, model_version: str) -> dict[str, Any] | None:
    """The newest profile of a model version (feed it to ``ReferenceProfile.from_dict``)."""
    return session.scalar(
        select(ReferenceProfileRow.profile)
        .where(ReferenceProfileRow.model_id == model_id, ReferenceProfileRow.model_version == model_version)
        .order_by(ReferenceProfileRow.created_ms.desc(), ReferenceProfileRow.id.desc())
        .limit(1)
    )


# ---- window results ---------------------------------------------------------------------------
def record_window_result(session: Session, result: WindowResult, *, now_ms: int | None = None) -> None:
    """Store a window result; a re-delivered one (same model, version, segment, window, phase)
    overwrites its row instead of adding one.

    The last write wins because a window re-evaluated after a crash is computed from the same or
    more input, never less. ``provisional`` and ``final`` are distinct rows: the history shows
    what was known when alerts on label-free signals were decided.
    """
    table = WindowResultRow.__table__
    values = {
        "model_id": result.model_id,
        "model_version": result.model_version,
        "segment": segment_key(result.segment),
        "window_start_ms": result.window_start_ms,
        "window_end_ms": result.window_end_ms,
        "phase": result.phase,
        "prediction_count": result.prediction_count,
        "labelled_count": result.labelled_count,
        "label_coverage": result.label_coverage,
        "dataset_drift": result.dataset_drift,
        "drift_share": result.drift_share,
        "metrics": dict(result.metrics),
        "drift": msgspec.to_builtins(result.drift),
        "data_quality": msgspec.to_builtins(result.data_quality),
        "reference": result.reference,
        "online": msgspec.to_builtins(result.online),
        "intervals": {k: list(v) for k, v in result.intervals.items()},
        "interval_level": result.interval_level,
        "segments_ranked": msgspec.to_builtins(result.segments_ranked),
        "recorded_ms": _now_ms() if now_ms is None else now_ms,
    }
    key = ["model_id", "model_version", "segment", "window_start_ms", "phase"]
    stmt = _insert(session, table).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=key,
            set_={name: stmt.excluded[name] for name in values if name not in key},
        )
    )


def _window_result(row: WindowResultRow) -> WindowResult:
    return WindowResult(
        model_id=row.model_id,
        model_version=row.model_version,
        segment=parse_segment_key(row.segment),
        window_start=ms_to_rfc3339(row.window_start_ms),
        window_end=ms_to_rfc3339(row.window_end_ms),
        window_start_ms=row.window_start_ms,
        window_end_ms=row.window_end_ms,
        phase=row.phase,  # type: ignore[arg-type]  # written only from a validated WindowResult
        prediction_count=row.prediction_count,
        labelled_count=row.labelled_count,
        label_coverage=row.label_coverage,
        metrics=dict(row.metrics),
        drift=msgspec.convert(row.drift, list[DriftTest]),
        dataset_drift=row.dataset_drift,
        drift_share=row.drift_share,
        reference=row.reference,
        data_quality=msgspec.convert(row.data_quality, dict[str, FeatureQuality]),
        online=msgspec.convert(row.online, list[OnlineDetection]),
        intervals=msgspec.convert(row.intervals or {}, dict[str, list[float]]),
        interval_level=row.interval_level,
        segments_ranked=msgspec.convert(row.segments_ranked or [], list[SegmentContribution]),
    )


def window_history(
    session: Session,
    model_id: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    segment: Mapping[str, str] | str | None = None,
) -> list[WindowResult]:
    """A model's window results as the contract type, ordered by window start, segment, phase.

    ``since_ms``/``until_ms`` bound the window *start* (inclusive, exclusive), the column the
    (model_id, window_start_ms) index covers. ``segment`` is a dict or a :func:`segment_key`
    string; ``{}`` or ``""`` selects the whole-model rows, None selects every segment.
    """
    stmt = select(WindowResultRow).where(WindowResultRow.model_id == model_id)
    if since_ms is not None:
        stmt = stmt.where(WindowResultRow.window_start_ms >= since_ms)
    if until_ms is not None:
        stmt = stmt.where(WindowResultRow.window_start_ms < until_ms)
    if segment is not None:
        key = segment if isinstance(segment, str) else segment_key(segment)
        stmt = stmt.where(WindowResultRow.segment == key)
    stmt = stmt.order_by(
        WindowResultRow.window_start_ms,
        WindowResultRow.segment,
        WindowResultRow.phase.desc(),  # "provisional" before "final"
        WindowResultRow.model_version,
    )
    return [_window_result(row) for row in session.scalars(stmt)]


def prune_window_results(session: Session, older_than_ms: int) -> int:
    """Delete window results whose window ended before ``older_than_ms``; returns the count.

    Retention is by event time (window end), not by when the row was written, so a backfill of
    old windows is pruned as old.
    """
    outcome = session.execute(delete(WindowResultRow).where(WindowResultRow.window_end_ms < older_than_ms))
    return int(outcome.rowcount)  # type: ignore[attr-defined]  # DML runs give a CursorResult


# ---- alerts -----------------------------------------------------------------------------------
def record_alert(session: Session, event: AlertEvent, *, now_ms: int | None = None) -> bool:
    """Store an alert emission: upsert the series' current state, append the transition once.

    Returns True when the transition is new. The CloudEvents id is deterministic, so a replayed
    emission hits the UNIQUE event_id and changes nothing. The current state only moves forward
    in event time: a late replay of an old ``firing`` cannot overwrite a newer ``resolved``.
    """
    data = event.data
    window_start_ms = rfc3339_to_ms(data.window.start)
    window_end_ms = rfc3339_to_ms(data.window.end)
    alerts = AlertRow.__table__
    stmt = _insert(session, alerts).values(
        dedup_key=data.dedup_key,
        status=data.status,
        rule=data.rule,
        severity=data.severity,
        model_id=data.model_id,
        model_version=data.model_version,
        segment=dict(data.segment),
        first_fired_ms=rfc3339_to_ms(data.starts_at),
        last_event_id=event.id,
        last_changed_ms=window_end_ms,
    )
    new = stmt.excluded
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["dedup_key"],
            set_={
                "status": case(
                    (new.last_changed_ms >= alerts.c.last_changed_ms, new.status), else_=alerts.c.status
                ),
                "severity": case(
                    (new.last_changed_ms >= alerts.c.last_changed_ms, new.severity), else_=alerts.c.severity
                ),
                "last_event_id": case(
                    (new.last_changed_ms >= alerts.c.last_changed_ms, new.last_event_id),
                    else_=alerts.c.last_event_id,
                ),
                "first_fired_ms": _least(alerts.c.first_fired_ms, new.first_fired_ms),
                "last_changed_ms": _greatest(alerts.c.last_changed_ms, new.last_changed_ms),
            },
        )
    )
    transition = _insert(session, AlertTransition.__table__).values(
        dedup_key=data.dedup_key,
        event_id=event.id,
        status=data.status,
        window_start_ms=window_start_ms,
        window_end_ms=window_end_ms,
        observed=data.observed,
        threshold=data.threshold,
        event=msgspec.to_builtins(event),
        recorded_ms=_now_ms() if now_ms is None else now_ms,
    )
    return _inserted(session, transition.on_conflict_do_nothing(index_elements=["event_id"]))


def list_alerts(
    session: Session,
    *,
    model_id: str | None = None,
    status: str | None = None,
    since_ms: int | None = None,
    limit: int = 100,
) -> list[AlertRow]:
    """Alert series, most recently changed first; ``since_ms`` bounds the last change (event time)."""
    stmt = select(AlertRow)
    if model_id is not None:
        stmt = stmt.where(AlertRow.model_id == model_id)
    if status is not None:
        stmt = stmt.where(AlertRow.status == status)
    if since_ms is not None:
        stmt = stmt.where(AlertRow.last_changed_ms >= since_ms)
    stmt = stmt.order_by(AlertRow.last_changed_ms.desc(), AlertRow.dedup_key).limit(limit)
    return list(session.scalars(stmt))


# ---- retraining requests ----------------------------------------------------------------------
def record_retraining_request(
    session: Session, request: RetrainingRequest, *, now_ms: int | None = None
) -> bool:
    """Store a retraining request once per idempotency key; returns True when it is new.

    The first recording wins: a trainer may already have acted on it, and the audit trail must
    show what was asked then, not a later re-emission.
    """
    data = request.data
    stmt = _insert(session, RetrainingRequestRow.__table__).values(
        idempotency_key=data.idempotency_key,
        model_id=data.model_id,
        model_version=data.model_version,
        reason=data.reason,
        window_start_ms=rfc3339_to_ms(data.window.start),
        window_end_ms=rfc3339_to_ms(data.window.end),
        event=msgspec.to_builtins(request),
        recorded_ms=_now_ms() if now_ms is None else now_ms,
    )
    return _inserted(session, stmt.on_conflict_do_nothing(index_elements=["idempotency_key"]))


def list_retraining_requests(
    session: Session, *, model_id: str | None = None, since_ms: int | None = None, limit: int = 100
) -> list[RetrainingRequestRow]:
    """Retraining requests, newest window first; ``since_ms`` bounds the window end."""
    stmt = select(RetrainingRequestRow)
    if model_id is not None:
        stmt = stmt.where(RetrainingRequestRow.model_id == model_id)
    if since_ms is not None:
        stmt = stmt.where(RetrainingRequestRow.window_end_ms >= since_ms)
    stmt = stmt.order_by(
        RetrainingRequestRow.window_end_ms.desc(), RetrainingRequestRow.idempotency_key
    ).limit(limit)
    return list(session.scalars(stmt))


# ---- notification outbox ----------------------------------------------------------------------
def enqueue_notification(session: Session, event_id: str, subscription: str, kind: str, now_ms: int) -> bool:
    """Queue an event for one subscription, due now; False when it was already queued.

    Written in the same transaction as the alert itself (the outbox pattern), so an alert is
    never recorded without its notifications nor notified without being recorded. UNIQUE
    (event_id, subscription) makes a replayed alert queue nothing new.
    """
    stmt = _insert(session, Notification.__table__).values(
        event_id=event_id,
        subscription=subscription,
        kind=kind,
        status="pending",
        attempts=0,
        next_attempt_ms=now_ms,
        created_ms=now_ms,
    )
    return _inserted(session, stmt.on_conflict_do_nothing(index_elements=["event_id", "subscription"]))


def due_notifications(session: Session, now_ms: int, limit: int) -> list[Notification]:
    """Pending notifications whose next attempt is due, oldest due first.

    On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED`` until the transaction ends, so
    several delivery workers share the outbox without sending one notification twice; SQLite
    has a single writer and ignores the clause.
    """
    stmt = (
        select(Notification)
        .where(Notification.status == "pending", Notification.next_attempt_ms <= now_ms)
        .order_by(Notification.next_attempt_ms, Notification.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))


# A URL's user-info and everything after its host can hold a token (Slack webhook paths,
# ?api_key=...); keep only scheme and host, which is what an operator needs to diagnose.
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^/\s@]*@)?(?P<host>[^/\s?#]*)"
    r"(?:[^\s\"']*[^\s\"'.,:;)\]])?"  # the rest, less trailing punctuation of the sentence
)


def _scrub(error: str | None) -> str | None:
    if error is None:
        return None
    return _URL.sub(lambda m: f"{m['scheme']}{m['host']}/…", error)[:_MAX_ERROR_CHARS]


def record_attempt(
    session: Session,
    notification_id: int,
    outcome: str,
    http_status: int | None,
    error: str | None,
    now_ms: int,
    next_attempt_ms: int | None,
    final_status: str | None,
    *,
    duration_ms: int | None = None,
) -> None:
    """Log one delivery attempt and move the notification on.

    Either ``final_status`` (delivered, failed: not retryable, dead: retries exhausted) ends it,
    or ``next_attempt_ms`` reschedules it (backoff, Retry-After). URLs in ``error`` are cut to
    scheme and host before storage: webhook URLs and query strings carry secrets.
    """
    if final_status is None and next_attempt_ms is None:
        raise ValueError("give next_attempt_ms (retry) or final_status (delivered, failed, dead)")
    if final_status is not None and final_status not in NOTIFICATION_STATUSES[1:]:
        raise ValueError(f"final_status must be one of {NOTIFICATION_STATUSES[1:]}, not {final_status!r}")
    error = _scrub(error)
    values: dict[str, Any] = {"attempts": Notification.attempts + 1, "last_error": error}
    if final_status is None:
        values.update(status="pending", next_attempt_ms=next_attempt_ms)
    else:
        values.update(status=final_status, next_attempt_ms=None)
        if final_status == "delivered":
            values["delivered_ms"] = now_ms
    changed = session.execute(update(Notification).where(Notification.id == notification_id).values(**values))
    if not changed.rowcount:  # type: ignore[attr-defined]  # DML runs give a CursorResult
        raise LookupError(f"no notification with id {notification_id}")
    session.execute(
        insert(NotificationAttempt).values(
            notification_id=notification_id,
            attempted_ms=now_ms,
            outcome=outcome,
            http_status=http_status,
            error=error,
            duration_ms=duration_ms,
        )
    )


@dataclass(frozen=True, slots=True)
class GivenUp:
    """An alert notification driftline stopped trying to deliver (``failed`` or ``dead``)."""

    dedup_key: str
    model_id: str
    rule: str
    subscription: str
    alert_status: str  # the emission: firing or resolved
    status: str
    reason: str | None
    given_up_ms: int  # the last attempt's time


def given_up_notifications(
    session: Session,
    *,
    dedup_keys: Collection[str] | None = None,
    since_ms: int | None = None,
    limit: int = 1000,
) -> list[GivenUp]:
    """Alert notifications given up, newest first: the pages someone did not get.

    ``since_ms`` bounds when they were given up; ``dedup_keys`` picks alert series.
    """
    last = (
        select(NotificationAttempt.notification_id, func.max(NotificationAttempt.attempted_ms).label("at"))
        .group_by(NotificationAttempt.notification_id)
        .subquery()
    )
    stmt = (
        select(
            AlertTransition.dedup_key,
            AlertRow.model_id,
            AlertRow.rule,
            Notification.subscription,
            AlertTransition.status,
            Notification.status,
            Notification.last_error,
            last.c.at,
        )
        .join(AlertTransition, AlertTransition.event_id == Notification.event_id)
        .join(AlertRow, AlertRow.dedup_key == AlertTransition.dedup_key)
        .join(last, last.c.notification_id == Notification.id)
        .where(Notification.status.in_(("failed", "dead")))
    )
    if dedup_keys is not None:
        stmt = stmt.where(AlertTransition.dedup_key.in_(set(dedup_keys)))
    if since_ms is not None:
        stmt = stmt.where(last.c.at >= since_ms)
    stmt = stmt.order_by(last.c.at.desc(), Notification.id.desc()).limit(limit)
    return [GivenUp(*row) for row in session.execute(stmt)]


def event_payload(session: Session, event_id: str) -> dict[str, Any] | None:
    """The CloudEvent a notification refers to, as emitted (an alert or a retraining request)."""
    found = session.scalar(select(AlertTransition.event).where(AlertTransition.event_id == event_id))
    if found is None:
        found = session.scalar(
            select(RetrainingRequestRow.event).where(RetrainingRequestRow.idempotency_key == event_id)
        )
    return found


# ---- checkpoints ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint chain as stored: its base, the deltas after it in order, and the offsets
    the whole chain covers (the last delta's, or the base's)."""

    payload: bytes
    offsets: dict[str, Any]
    updated_ms: int
    chain: str | None = None
    deltas: tuple[bytes, ...] = ()


def save_checkpoint(
    session: Session,
    name: str,
    payload: bytes,
    offsets: Mapping[str, Any],
    now_ms: int,
    chain: str | None = None,
) -> None:
    """Replace a named checkpoint by a new base: worker state together with the input offsets
    it reflects, so a restart resumes from a consistent pair (replaying only what came after
    those offsets). The previous chain's deltas go in the same transaction: the base holds them."""
    stmt = _insert(session, StreamCheckpoint.__table__).values(
        name=name, payload=payload, offsets=dict(offsets), updated_ms=now_ms, chain=chain
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "payload": stmt.excluded.payload,
                "offsets": stmt.excluded.offsets,
                "updated_ms": stmt.excluded.updated_ms,
                "chain": stmt.excluded.chain,
            },
        )
    )
    session.execute(delete(StreamCheckpointDelta).where(StreamCheckpointDelta.name == name))


def append_checkpoint_delta(
    session: Session,
    name: str,
    chain: str,
    seq: int,
    payload: bytes,
    offsets: Mapping[str, Any],
    now_ms: int,
) -> bool:
    """Add delta ``seq`` (1, 2, ...) to the chain ``chain`` of a named checkpoint; False, and
    nothing written, when the stored chain is another one or does not end at ``seq - 1``:
    another writer (a worker that took the partition over) wrote since, and only a new base
    is safe then. The base row is locked (``FOR UPDATE`` on PostgreSQL; SQLite serialises
    writers) until the transaction ends, so the check and the insert are one step."""
    stored = session.execute(
        select(StreamCheckpoint.chain).where(StreamCheckpoint.name == name).with_for_update()
    ).first()
    if stored is None or stored[0] != chain:
        return False
    last = session.scalar(
        select(func.max(StreamCheckpointDelta.seq)).where(StreamCheckpointDelta.name == name)
    )
    if (last or 0) != seq - 1:
        return False
    session.execute(
        insert(StreamCheckpointDelta).values(
            name=name, seq=seq, chain=chain, payload=payload, offsets=dict(offsets), updated_ms=now_ms
        )
    )
    return True


def load_checkpoint(session: Session, name: str) -> Checkpoint | None:
    row = session.get(StreamCheckpoint, name, populate_existing=True)
    if row is None:
        return None
    deltas = session.execute(
        select(StreamCheckpointDelta.payload, StreamCheckpointDelta.offsets, StreamCheckpointDelta.updated_ms)
        # of this base's chain only: under READ COMMITTED a base written between the two reads
        # would otherwise pair this (older) base with the newer chain's deltas
        .where(StreamCheckpointDelta.name == name, StreamCheckpointDelta.chain == row.chain)
        .order_by(StreamCheckpointDelta.seq)
    ).all()
    if not deltas:
        return Checkpoint(bytes(row.payload), dict(row.offsets), row.updated_ms, row.chain)
    return Checkpoint(
        bytes(row.payload),
        dict(deltas[-1].offsets),
        deltas[-1].updated_ms,
        row.chain,
        tuple(bytes(d.payload) for d in deltas),
    )
