"""``driftline status``: what an on-call engineer asks first, answered from the store.

Per model: the latest whole-model window (its key metric, label coverage, volume, drift
verdict and drifted features), the alerts firing now, and the lag between now and the end of
that window. The lag is the number to watch: a stalled worker, a stuck input partition and a
dead history sink all show up as a growing lag long before anyone misses a chart. Below them:
the segments that did the latest final window the most harm (the ranking the alerts and the
replay report name, read from the store), and the notifications given up in the last day, the
pages nobody got.

One function collects (:func:`collect_status`), two render (:func:`render_table` for a
terminal, :func:`status_json` for machines), and :func:`make_status_server` serves the JSON
read-only over HTTP for dashboards and probes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from driftline.platform.health import Verdict
from driftline.platform.jsonhttp import JsonHandler, JsonServer
from driftline.platform.store import GivenUp, given_up_notifications, list_alerts, segment_key
from driftline.platform.store.models import Model, WindowResultRow
from driftline.platform.text import printable
from driftline.schemas import ms_to_rfc3339

__all__ = [
    "AlertSummary",
    "ModelStatus",
    "StatusServer",
    "collect_status",
    "format_lag",
    "make_status_server",
    "render_table",
    "status_json",
]

log = logging.getLogger(__name__)

#: the metric shown per task, first present wins: classification, then regression
KEY_METRICS = ("accuracy", "rmse")
MAX_ALERTS_PER_MODEL = 1000
#: how far back ``status`` reports notifications given up
GIVEN_UP_LOOKBACK_MS = 24 * 3600 * 1000
#: how many of the latest final window's ranked segments are shown per model (worst first)
TOP_SEGMENTS = 3


@dataclass(frozen=True, slots=True)
class AlertSummary:
    dedup_key: str
    rule: str
    severity: str
    segment: dict[str, str]
    since_ms: int


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One model's latest whole-model window (None before the first one) and its firing alerts."""

    model_id: str
    model_version: str | None = None
    window_start_ms: int | None = None
    window_end_ms: int | None = None
    phase: str | None = None
    metric: str | None = None
    metric_value: float | None = None
    label_coverage: float | None = None
    prediction_count: int | None = None
    labelled_count: int | None = None
    dataset_drift: bool | None = None
    drifted_features: tuple[str, ...] = ()
    #: the online detectors' detections in that window (river, on the labelled error stream)
    online: tuple[dict[str, Any], ...] = ()
    lag_ms: int | None = None
    firing: tuple[AlertSummary, ...] = field(default=())
    #: notifications about this model's alerts given up in the last GIVEN_UP_LOOKBACK_MS
    given_up: tuple[GivenUp, ...] = field(default=())
    #: the latest *final* whole-model window (the ranking needs labels; None before one) and the
    #: first TOP_SEGMENTS entries of its ``segments_ranked`` (``SegmentContribution`` fields)
    final_window_end_ms: int | None = None
    final_model_version: str | None = None
    worst_segments: tuple[dict[str, Any], ...] = ()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _key_metric(metrics: dict[str, Any]) -> tuple[str | None, float | None]:
    for name in KEY_METRICS:
        if name in metrics:
            return name, _finite(metrics[name])
    return None, None


def _latest_window(session: Session, model_id: str, *, final: bool = False) -> WindowResultRow | None:
    # Newest window first; for the same window ``final`` sorts before ``provisional``, the
    # better-informed row; the version breaks ties deterministically (a canary beside a champion).
    where = [WindowResultRow.model_id == model_id, WindowResultRow.segment == ""]
    if final:
        where.append(WindowResultRow.phase == "final")
    return session.scalar(
        select(WindowResultRow)
        .where(*where)
        .order_by(
            WindowResultRow.window_start_ms.desc(),
            WindowResultRow.phase,
            WindowResultRow.model_version.desc(),
        )
        .limit(1)
    )


def collect_status(session: Session, now_ms: int | None = None) -> list[ModelStatus]:
    """Every known model, sorted by id. ``now_ms`` defaults to the wall clock (lag is wall
    clock minus event time: it assumes producers stamp events with a roughly true clock)."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    known = set(session.scalars(select(Model.model_id)))
    known |= set(session.scalars(select(WindowResultRow.model_id).distinct()))
    lost: dict[str, list[GivenUp]] = {}
    for g in given_up_notifications(session, since_ms=now - GIVEN_UP_LOOKBACK_MS):
        lost.setdefault(g.model_id, []).append(g)
    known |= set(lost)
    out = []
    for model_id in sorted(known):
        given_up = tuple(lost.get(model_id, ()))
        row = _latest_window(session, model_id)
        firing = tuple(
            AlertSummary(a.dedup_key, a.rule, a.severity, dict(a.segment), a.first_fired_ms)
            for a in sorted(
                list_alerts(session, model_id=model_id, status="firing", limit=MAX_ALERTS_PER_MODEL),
                key=lambda a: (a.first_fired_ms, a.rule, segment_key(a.segment), a.dedup_key),
            )
        )
        if row is None:
            out.append(ModelStatus(model_id, firing=firing, given_up=given_up))
            continue
        metric, value = _key_metric(row.metrics)
        final = row if row.phase == "final" else _latest_window(session, model_id, final=True)
        drifted = tuple(sorted({t["feature"] for t in row.drift if t.get("drifted")}))
        out.append(
            ModelStatus(
                model_id=model_id,
                model_version=row.model_version,
                window_start_ms=row.window_start_ms,
                window_end_ms=row.window_end_ms,
                phase=row.phase,
                metric=metric,
                metric_value=value,
                label_coverage=_finite(row.label_coverage),
                prediction_count=row.prediction_count,
                labelled_count=row.labelled_count,
                dataset_drift=row.dataset_drift,
                drifted_features=drifted,
                online=tuple(sorted(row.online, key=lambda d: (d["time_ms"], d["detector"], d["signal"]))),
                lag_ms=now - row.window_end_ms,
                firing=firing,
                given_up=given_up,
                final_window_end_ms=None if final is None else final.window_end_ms,
                final_model_version=None if final is None else final.model_version,
                worst_segments=() if final is None else _worst_segments(final.segments_ranked),
            )
        )
    return out


def _worst_segments(ranked: list[dict[str, Any]] | None) -> tuple[dict[str, Any], ...]:
    """The stored ranking is worst first already (``detectors/segments.py``); non-finite numbers
    become None so the JSON stays strict. Rows stored before revision 0005 hold []."""
    return tuple(
        {k: _finite(v) if isinstance(v, float) else v for k, v in entry.items()}
        for entry in (ranked or [])[:TOP_SEGMENTS]
    )


# ---- rendering ----------------------------------------------------------------------------------
def format_lag(ms: int | None) -> str:
    """A lag a human reads at a glance: the two largest units.

    >>> format_lag(None), format_lag(950), format_lag(75_000), format_lag(90_061_000), format_lag(-2_000)
    ('-', '0s', '1m15s', '1d1h', '-2s')
    """
    if ms is None:
        return "-"
    sign, seconds = ("-" if ms < 0 else ""), abs(ms) // 1000
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(parts[:2])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _window_end(ms: int | None) -> str:
    # Second precision is enough on screen; the JSON keeps the exact contract spelling.
    return "-" if ms is None else ms_to_rfc3339(ms)[:19].replace("T", " ") + "Z"


# The variable-width column goes last, so a long list of drifted features never pushes the
# rest of the row out of a terminal's width.
HEADERS = ("MODEL", "VERSION", "WINDOW END", "PHASE", "METRIC", "LABELS", "PREDS", "FIRING", "LAG", "DRIFT")
_NUMERIC = {"LABELS", "PREDS", "FIRING"}


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _drift(s: ModelStatus) -> str:
    """``yes (x1,x2)``: the verdict, then the features that drifted (also under a ``no``: one
    drifted feature need not tip the dataset verdict, but it is worth seeing), then which
    online detectors fired on the error stream (``; online ddm/error``)."""
    verdict = "-" if s.dataset_drift is None else ("yes" if s.dataset_drift else "no")
    cell = f"{verdict} ({','.join(s.drifted_features)})" if s.drifted_features else verdict
    if s.online:
        fired = dict.fromkeys(f"{d['detector']}/{d['signal']}" for d in s.online)
        cell += f"; online {','.join(fired)}"
    return cell


def _row(s: ModelStatus) -> tuple[str, ...]:
    return (
        s.model_id,
        s.model_version or "-",
        _window_end(s.window_end_ms),
        s.phase or "-",
        "-" if s.metric is None else f"{s.metric}={_fmt(s.metric_value)}",
        _percent(s.label_coverage),
        "-" if s.prediction_count is None else str(s.prediction_count),
        str(len(s.firing)),
        format_lag(s.lag_ms),
        _drift(s),
    )


def _align(rows: Sequence[Sequence[str]], headers: Sequence[str], numeric: set[str]) -> list[str]:
    # Every cell is escaped here, before the widths are measured: the names come from producers,
    # and a raw ESC or newline would drive the terminal or forge a row (issue 19).
    rows = [[printable(cell) for cell in r] for r in rows]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [
            cell.rjust(w) if headers[i] in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_table(statuses: Sequence[ModelStatus]) -> str:
    """Plain aligned text (no colours, no box drawing): pipes into grep and reads over ssh."""
    if not statuses:
        return "no models in the store yet (is the history sink running?)\n"
    lines = _align([_row(s) for s in statuses], HEADERS, _NUMERIC)
    alerts = [(s.model_id, a) for s in statuses for a in s.firing]
    if alerts:
        lines += ["", "FIRING ALERTS"]
        rows = [
            (
                model_id,
                a.rule,
                a.severity,
                ",".join(f"{k}={v}" for k, v in sorted(a.segment.items())) or "-",
                _window_end(a.since_ms),
            )
            for model_id, a in alerts
        ]
        lines += _align(rows, ("MODEL", "RULE", "SEVERITY", "SEGMENT", "SINCE"), set())
    worst = [(s, seg) for s in statuses for seg in s.worst_segments]
    if worst:
        lines += ["", "WORST SEGMENTS (latest final window)"]
        worst_rows = [
            (
                s.model_id,
                _window_end(s.final_window_end_ms),
                f"{seg['dimension']}={seg['value']}",
                seg["metric"],
                _fmt(seg["observed"]),
                _fmt(seg["baseline"]),
                _fmt(seg["contribution"]),
                "yes" if seg["significant"] else "no",
            )
            for s, seg in worst
        ]
        worst_headers = (
            "MODEL", "WINDOW END", "SEGMENT", "METRIC", "OBSERVED", "BASELINE", "CONTRIBUTION", "SIGNIFICANT"
        )
        lines += _align(worst_rows, worst_headers, {"OBSERVED", "BASELINE", "CONTRIBUTION"})
    lost = [(s.model_id, g) for s in statuses for g in s.given_up]
    if lost:
        lines += ["", "NOTIFICATIONS GIVEN UP (last 24h)"]
        lost_rows = [
            (
                model_id,
                g.rule,
                g.subscription,
                g.alert_status,
                g.status,
                _window_end(g.given_up_ms),
                g.reason or "",
            )
            for model_id, g in lost
        ]
        lost_headers = ("MODEL", "RULE", "SUBSCRIPTION", "ALERT", "STATUS", "AT", "REASON")
        lines += _align(lost_rows, lost_headers, set())
    return "\n".join(lines) + "\n"


def status_json(statuses: Sequence[ModelStatus], now_ms: int) -> dict[str, Any]:
    """The JSON document of ``--json`` and ``GET /status`` (times as epoch ms and RFC 3339)."""

    def when(ms: int | None) -> str | None:
        return None if ms is None else ms_to_rfc3339(ms)

    models = []
    for s in statuses:
        window = None
        if s.window_end_ms is not None and s.window_start_ms is not None:
            window = {
                "start": when(s.window_start_ms),
                "end": when(s.window_end_ms),
                "start_ms": s.window_start_ms,
                "end_ms": s.window_end_ms,
                "phase": s.phase,
                "model_version": s.model_version,
                "metric": None if s.metric is None else {"name": s.metric, "value": s.metric_value},
                "label_coverage": s.label_coverage,
                "prediction_count": s.prediction_count,
                "labelled_count": s.labelled_count,
                "dataset_drift": s.dataset_drift,
                "drifted_features": list(s.drifted_features),
                "online_detections": [dict(d) for d in s.online],
            }
        models.append(
            {
                "model_id": s.model_id,
                "last_window": window,
                "lag_ms": s.lag_ms,
                "worst_segments": None
                if s.final_window_end_ms is None
                else {
                    "window_end": when(s.final_window_end_ms),
                    "window_end_ms": s.final_window_end_ms,
                    "model_version": s.final_model_version,
                    "segments": [dict(seg) for seg in s.worst_segments],
                },
                "firing_alerts": [
                    {
                        "dedup_key": a.dedup_key,
                        "rule": a.rule,
                        "severity": a.severity,
                        "segment": a.segment,
                        "since": when(a.since_ms),
                        "since_ms": a.since_ms,
                    }
                    for a in s.firing
                ],
            }
        )
    document: dict[str, Any] = {
        "generated_at": when(now_ms),
        "generated_at_ms": now_ms,
        "firing_alerts": sum(len(s.firing) for s in statuses),
        "models": models,
    }
    lost = [g for s in statuses for g in s.given_up]
    if lost:  # present only when a page was lost, so it stands out
        document["notifications_given_up"] = [
            {
                "model_id": g.model_id,
                "rule": g.rule,
                "dedup_key": g.dedup_key,
                "subscription": g.subscription,
                "alert_status": g.alert_status,
                "status": g.status,
                "reason": g.reason,
                "at": when(g.given_up_ms),
                "at_ms": g.given_up_ms,
            }
            for g in lost
        ]
    return document


# ---- HTTP ---------------------------------------------------------------------------------------
class StatusServer(JsonServer):
    """Read-only JSON over HTTP: ``GET /status`` and ``GET /healthz``; nothing else.

    Every request opens its own short session, so the answer is as fresh as the store and a
    slow client never holds a transaction (or, on SQLite, a read lock) open. With ``workers``
    (``driftline.apps.group_health.GroupHealth.check``), ``/healthz`` also fails when the
    workers' topics are gone or their consumer group stopped committing on partitions with data
    waiting.
    """

    thread_name = "driftline-status"

    def __init__(
        self,
        address: tuple[str, int],
        sessions: sessionmaker[Session],
        workers: Callable[[], Verdict] | None = None,
    ) -> None:
        self.sessions = sessions
        self.workers = workers
        super().__init__(address, _Handler)

    def status(self) -> dict[str, Any]:
        now = time.time_ns() // 1_000_000
        with self.sessions() as session:
            return status_json(collect_status(session, now), now)

    def healthy(self) -> bool:
        try:
            with self.sessions() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:
            log.warning("status server: store unreachable", exc_info=True)
            return False

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/healthz``: the store, then (when configured) the workers as the broker sees them."""
        ok = self.healthy()
        body: dict[str, Any] = {"status": "ok" if ok else "store unavailable"}
        if self.workers is None:
            return ok, body
        try:
            verdict = self.workers()
        except Exception:
            log.exception("status server: the workers' health check failed")
            verdict = Verdict(False, ("the workers' health check failed (see the status server's log)",))
        body["workers"] = verdict.document()
        if not verdict.healthy:
            body["reasons"] = list(verdict.reasons)
            if ok:
                body["status"] = "workers unhealthy"
        return ok and verdict.healthy, body


class _Handler(JsonHandler):
    server: StatusServer
    server_version = "driftline-status"
    label = "status server"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/status":
            try:
                self.send_json(HTTPStatus.OK, self.server.status())
            except Exception:
                log.exception("status server: could not read the store")
                self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "store unavailable"})
        elif path == "/healthz":
            ok, body = self.server.health()
            self.send_json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found", "endpoints": ["/status", "/healthz"]})




def make_status_server(
    sessions: sessionmaker[Session],
    host: str = "127.0.0.1",
    port: int = 0,
    workers: Callable[[], Verdict] | None = None,
) -> StatusServer:
    """A bound, not yet serving server (port 0 picks a free one: read ``server_address``).

    Loopback by default: the status names models and alert rules, which is not for the world;
    exposing it is a deliberate ``--host``.
    """
    return StatusServer((host, port), sessions, workers)
