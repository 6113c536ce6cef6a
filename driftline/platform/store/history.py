"""The model version history: the audit trail alert → request → new version → its traffic.

Every (model, version) driftline has seen, with when (first and last window), how much
traffic (final whole-model windows: predictions, labelled), which references it was judged
against and where they came from, its alerts, its retraining requests and what happened to
each: which trainers acknowledged it (the trainer helper records that after its handler
returns) and which version of the model was seen next, from when.

Derived at read time from the rows the sink already writes wherever possible, so nothing can
disagree with them and a replayed input cannot double-count: traffic and references come from
``window_results`` (so they reach back as far as window retention, 90 days by default),
alerts from ``alerts``, requests from ``retraining_requests``. Only what no other table
knows is stored here: a version's registry lineage and the acknowledgements.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from driftline.platform.store.models import (
    AlertRow,
    ModelVersion,
    ReferenceProfileRow,
    RetrainingAcknowledgement,
    RetrainingRequestRow,
    WindowResultRow,
)
from driftline.platform.store.repository import _insert, _inserted, touch_model

__all__ = ["VersionHistory", "acknowledge_retraining_request", "set_lineage", "version_history"]


def set_lineage(
    session: Session,
    model_id: str,
    model_version: str,
    lineage: dict[str, Any],
    seen_ms: int,
    *,
    drop: tuple[str, ...] = (),
) -> None:
    """Record a version's registry reference (the version row is made if it is new).

    Keys present replace stored ones, absent keys are kept: a request that knows only the
    registered model does not erase an alias learnt from the registry. ``drop`` removes keys
    (an alias that moved on to another version)."""
    touch_model(session, model_id, model_version, seen_ms, None)
    held = session.scalar(
        select(ModelVersion.lineage).where(
            ModelVersion.model_id == model_id, ModelVersion.model_version == model_version
        )
    )
    merged = {**(held or {}), **{k: v for k, v in lineage.items() if v is not None}}
    for key in drop:
        merged.pop(key, None)
    if merged != held:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.model_id == model_id, ModelVersion.model_version == model_version)
            .values(lineage=merged)
        )


def acknowledge_retraining_request(
    session: Session, idempotency_key: str, consumer: str, now_ms: int, outcome: str = "handled"
) -> bool:
    """A trainer handled a request; True when this consumer had not acknowledged it before."""
    stmt = _insert(session, RetrainingAcknowledgement.__table__).values(
        idempotency_key=idempotency_key, consumer=consumer, acknowledged_ms=now_ms, outcome=outcome
    )
    return _inserted(session, stmt.on_conflict_do_nothing(index_elements=["idempotency_key", "consumer"]))


@dataclass(slots=True)
class VersionHistory:
    """One model version's audit trail (times are epoch ms; event time but for ``*_recorded``)."""

    model_id: str
    model_version: str
    first_seen_ms: int
    last_seen_ms: int
    lineage: dict[str, Any] | None = None
    windows: int = 0
    predictions: int = 0
    labelled: int = 0
    references: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def version_history(
    session: Session, model_id: str | None = None, model_version: str | None = None
) -> list[VersionHistory]:
    """Every version seen (of ``model_id``; only ``model_version``), oldest first per model."""
    stmt = select(ModelVersion)
    if model_id is not None:
        stmt = stmt.where(ModelVersion.model_id == model_id)
    rows = list(session.scalars(stmt.order_by(ModelVersion.model_id, ModelVersion.first_seen_ms)))
    by_model: dict[str, list[ModelVersion]] = defaultdict(list)
    for row in rows:
        by_model[row.model_id].append(row)
    out = {
        (r.model_id, r.model_version): VersionHistory(
            r.model_id, r.model_version, r.first_seen_ms, r.last_seen_ms, r.lineage
        )
        for r in rows
        if model_version is None or r.model_version == model_version
    }
    if not out:
        return []
    models = sorted({m for m, _ in out})
    whole = (
        WindowResultRow.segment == "",
        WindowResultRow.phase == "final",
        WindowResultRow.model_id.in_(models),
    )
    w = WindowResultRow
    traffic = select(
        w.model_id,
        w.model_version,
        w.reference,
        func.count(),
        func.sum(w.prediction_count),
        func.sum(w.labelled_count),
        func.min(w.window_start_ms),
        func.max(w.window_end_ms),
    ).where(*whole)
    for m, v, reference, n, preds, labelled, first, last in session.execute(
        traffic.group_by(w.model_id, w.model_version, w.reference).order_by(func.min(w.window_start_ms))
    ):
        h = out.get((m, v))
        if h is None:
            continue
        h.windows += int(n)
        h.predictions += int(preds or 0)
        h.labelled += int(labelled or 0)
        h.references.append(
            {"reference": reference, "first_window_ms": first, "last_window_ms": last, "windows": n}
        )
    p = ReferenceProfileRow
    for m, v, source, created in session.execute(
        select(p.model_id, p.model_version, p.source, p.created_ms)
        .where(p.model_id.in_(models))
        .order_by(p.created_ms)
    ):
        if (m, v) in out:
            out[(m, v)].profiles.append({"source": source, "created_ms": created})
    for a in session.scalars(
        select(AlertRow).where(AlertRow.model_id.in_(models)).order_by(AlertRow.first_fired_ms)
    ):
        if (a.model_id, a.model_version) in out:
            out[(a.model_id, a.model_version)].alerts.append(
                {
                    "dedup_key": a.dedup_key,
                    "rule": a.rule,
                    "severity": a.severity,
                    "status": a.status,
                    "segment": a.segment,
                    "first_fired_ms": a.first_fired_ms,
                    "last_changed_ms": a.last_changed_ms,
                }
            )
    requests = list(
        session.scalars(
            select(RetrainingRequestRow)
            .where(RetrainingRequestRow.model_id.in_(models))
            .order_by(RetrainingRequestRow.window_end_ms)
        )
    )
    acks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if requests:
        ack = RetrainingAcknowledgement
        for key, consumer, when, outcome in session.execute(
            select(ack.idempotency_key, ack.consumer, ack.acknowledged_ms, ack.outcome)
            .where(ack.idempotency_key.in_([r.idempotency_key for r in requests]))
            .order_by(ack.acknowledged_ms)
        ):
            acks[key].append({"consumer": consumer, "acknowledged_ms": when, "outcome": outcome})
    for r in requests:
        h = out.get((r.model_id, r.model_version))
        if h is None:
            continue
        data = r.event.get("data", {})
        later = [
            v
            for v in by_model[r.model_id]
            if v.model_version != r.model_version and v.first_seen_ms >= r.window_end_ms
        ]
        nxt = min(later, key=lambda v: (v.first_seen_ms, v.model_version)) if later else None
        h.requests.append(
            {
                "idempotency_key": r.idempotency_key,
                "reason": r.reason,
                "action": data.get("action", "retrain"),
                "schema_version": data.get("schema_version", "1.0"),
                "window_end_ms": r.window_end_ms,
                "acknowledged": acks.get(r.idempotency_key, []),
                "next_version": None if nxt is None else nxt.model_version,
                "next_version_first_seen_ms": None if nxt is None else nxt.first_seen_ms,
            }
        )
    return list(out.values())
