"""``driftline report --html``: one model's history as a single self-contained HTML page.

The page is attached to incident tickets and mailed around, so it must open anywhere, offline
and years later: one file, no CDN, no web font, nothing fetched. Charts are drawn by Plotly,
whose JavaScript (plotly.js, from the ``plotly`` package) is inlined in the page: interactive
(zoom, hover, toggle series in the legend) and the library most readers of Evidently or NannyML
reports already know. What the page shows, per model, version and segment:

- every metric family over time (accuracy, precision/recall/F1, ROC/PR AUC, log loss/Brier,
  regression errors), with label coverage and volume;
- the label-free estimates beside the realised values, with their interval band when the
  window carries one (``WindowResult.intervals``);
- drift: a heat map of the (corrected) p-values with the numbers printed in the cells, the
  tests as a sortable table (statistic, raw and corrected p-value, effect size, verdict), and
  reference-versus-window distributions for the drifted features (on demand for the rest);
- data quality, online detections, alerts with their evidence, retraining requests, and the
  worst segments: the stored ranking (``WindowResult.segments_ranked``) of the latest final
  window and the segment ranked worst most often over the page's range, then each segment
  slice's own metric.

Fields newer than a stored result (distribution summaries, raw p-values, effect sizes,
intervals) are shown when present and left out, said so, when absent. Every producer string
(model, feature, segment, rule names) is HTML-escaped in markup and entity-escaped inside chart
labels (Plotly renders a few HTML tags in labels); the chart data is JSON with ``<``, ``>`` and
``&`` escaped, so nothing from the data can close the script or open markup. An inline script
checks the drawing: ``<body data-plots-rendered>`` counts the charts Plotly actually laid out
(tests read it from headless Chromium).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from driftline.platform.store import list_alerts, list_retraining_requests, version_history
from driftline.platform.store.history import VersionHistory
from driftline.platform.store.models import AlertTransition, WindowResultRow
from driftline.platform.store.repository import _window_result
from driftline.schemas import ms_to_rfc3339

__all__ = ["AlertMark", "alert_marks", "build_report", "chart_windows", "load_windows", "render_report"]

MAX_ALERT_SERIES = 10_000
MAX_TEST_ROWS = 5_000
#: metric families, one chart each: (chart id, title, exact names, name prefixes)
FAMILIES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("accuracy", "Accuracy", ("accuracy", "balanced_accuracy"), ()),
    (
        "prf",
        "Precision, recall and F1",
        ("precision_macro", "recall_macro", "f1_macro"),
        ("precision.", "recall.", "f1."),
    ),
    ("auc", "ROC AUC and PR AUC", ("roc_auc", "pr_auc"), ()),
    ("probabilistic", "Log loss and Brier score", ("log_loss", "brier"), ()),
    ("regression", "Regression errors", ("mae", "rmse", "mape", "mean_error"), ()),
    ("r2", "R²", ("r2",), ()),
)
ESTIMATED = ("accuracy", "precision", "recall", "f1", "roc_auc")
_KIND_ORDER = {"feature": 0, "prediction": 1, "label": 2}
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


# ---- data ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AlertMark:
    """One alert emission, at the end of the window that caused it, with what it said."""

    dedup_key: str
    rule: str
    severity: str
    segment: dict[str, str]
    status: str
    at_ms: int
    observed: float | None = None
    threshold: float | None = None
    metric: str = ""
    evidence: Mapping[str, Any] | None = None
    window_start_ms: int | None = None


def _as_dict(w: Any) -> dict[str, Any]:
    """A window result as a plain dict (a contract struct or an already decoded mapping), so
    fields newer than this module's copy of the contract are read when they are there."""
    return dict(w) if isinstance(w, Mapping) else msgspec.to_builtins(w)


def load_windows(session: Session, model_id: str, since_ms: int | None = None) -> list[dict[str, Any]]:
    """Every stored window of the model (all versions and segments), as dicts. The stored JSON
    of the drift tests is used as is: fields the contract gained later (summaries, effect
    sizes) survive even where this reader's contract type does not know them yet."""
    stmt = select(WindowResultRow).where(WindowResultRow.model_id == model_id)
    if since_ms is not None:
        stmt = stmt.where(WindowResultRow.window_start_ms >= since_ms)
    stmt = stmt.order_by(
        WindowResultRow.window_start_ms, WindowResultRow.segment, WindowResultRow.phase.desc()
    )
    out = []
    for row in session.scalars(stmt):
        w = msgspec.to_builtins(_window_result(row))
        w["drift"] = list(row.drift or [])
        for extra in ("intervals", "interval_level"):
            if getattr(row, extra, None) is not None:
                w[extra] = getattr(row, extra)
        out.append(w)
    return out


def _slice_key(w: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((w.get("segment") or {}).items()))


def chart_windows(
    windows: Iterable[Any], segment: str = "", version: str | None = None
) -> list[dict[str, Any]]:
    """One result per window start of one slice (``""``: the whole model), the best informed:
    ``final`` over ``provisional``, then the highest version (a deterministic pick when two
    versions served in the same window)."""
    best: dict[int, dict[str, Any]] = {}
    for raw in windows:
        w = _as_dict(raw)
        if _slice_key(w) != segment or (version is not None and w["model_version"] != version):
            continue
        current = best.get(w["window_start_ms"])
        rank = (w["phase"] == "final", w["model_version"])
        if current is None or rank > (current["phase"] == "final", current["model_version"]):
            best[w["window_start_ms"]] = w
    return [best[k] for k in sorted(best)]


def alert_marks(session: Session, model_id: str, since_ms: int | None = None) -> list[AlertMark]:
    """Every firing/resolved emission of the model's alert series, in event time order."""
    series = {a.dedup_key: a for a in list_alerts(session, model_id=model_id, limit=MAX_ALERT_SERIES)}
    if not series:
        return []
    stmt = select(AlertTransition).where(AlertTransition.dedup_key.in_(series))
    if since_ms is not None:
        stmt = stmt.where(AlertTransition.window_end_ms >= since_ms)
    stmt = stmt.order_by(AlertTransition.window_end_ms, AlertTransition.dedup_key, AlertTransition.status)
    out = []
    for t in session.scalars(stmt):
        a = series[t.dedup_key]
        data = (t.event or {}).get("data") or {}
        out.append(
            AlertMark(
                t.dedup_key,
                a.rule,
                a.severity,
                dict(a.segment),
                t.status,
                t.window_end_ms,
                observed=t.observed,
                threshold=t.threshold,
                metric=str(data.get("metric", "")),
                evidence=data.get("evidence") or {},
                window_start_ms=t.window_start_ms,
            )
        )
    return out


def _requests(session: Session, model_id: str, since_ms: int | None) -> list[dict[str, Any]]:
    out = []
    for r in list_retraining_requests(session, model_id=model_id, since_ms=since_ms, limit=1000):
        data = (r.event or {}).get("data") or {}
        out.append(
            {
                "window_start_ms": r.window_start_ms,
                "model_version": r.model_version,
                "reason": r.reason,
                "status": getattr(r, "status", None) or data.get("status") or "requested",
                "evidence": data.get("evidence") or {},
                "training": data.get("suggested_training_range") or {},
            }
        )
    return sorted(out, key=lambda r: r["window_start_ms"])


def build_report(
    session: Session, model_id: str, *, since_ms: int | None = None, now_ms: int | None = None
) -> str:
    """The HTML page for ``model_id`` from the store (windows starting at ``since_ms`` or later)."""
    windows = load_windows(session, model_id, since_ms)
    marks = alert_marks(session, model_id, since_ms)
    requests = _requests(session, model_id, since_ms)
    generated = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    history = version_history(session, model_id)
    return render_report(model_id, windows, marks, generated_ms=generated, requests=requests, history=history)


# ---- helpers ------------------------------------------------------------------------------------
def _h(value: Any) -> str:
    """Markup text and attribute values."""
    return escape(str(value), quote=True)


def _label(value: Any) -> str:
    """Text inside a chart: Plotly renders a few HTML tags in labels and decodes entities, so
    entity-escaping shows producer strings literally."""
    return escape(str(value), quote=False)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _fmt(v: Any, digits: int = 4) -> str:
    n = _num(v)
    return "-" if n is None else f"{n:.{digits}g}"


def _time(ms: int) -> str:
    return ms_to_rfc3339(ms)[:19].replace("T", " ")


def _mid(w: Mapping[str, Any]) -> str:
    return ms_to_rfc3339((w["window_start_ms"] + w["window_end_ms"]) // 2)


def _table(
    table_id: str, headers: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False
) -> str:
    """A table; every cell escaped. Sortable tables sort by a click on a header (numbers as
    numbers: a cell's ``data-v`` holds the value to sort by)."""
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{_h(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, tuple):  # (shown, sort value)
                shown, key = cell
                cells.append(f'<td data-v="{_h(key)}">{_h(shown)}</td>')
            else:
                cells.append(f"<td>{_h(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{table_id}"{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _finite(value: Any) -> Any:
    """The chart data with every NaN or infinity as null (a gap): a stored result with an open
    outer histogram edge or a NaN share must cost a point, never the page."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class _Figures:
    """The page's charts: a ``<div>`` each, their Plotly specs in one JSON object."""

    def __init__(self) -> None:
        self.eager: dict[str, Any] = {}
        self.lazy: dict[str, Any] = {}

    def add(
        self,
        chart_id: str,
        data: list[dict[str, Any]],
        layout: dict[str, Any],
        *,
        lazy: bool = False,
        attrs: str = "",
    ) -> str:
        base: dict[str, Any] = {
            "margin": {"l": 60, "r": 20, "t": 36, "b": 40},
            "height": 300,
            "hovermode": "x unified",
        }
        if "yaxis2" in layout:  # the legend right of the second axis, never over its labels
            base["legend"] = {"x": 1.07, "xanchor": "left"}
        spec = {"data": data, "layout": {**base, **layout}}
        (self.lazy if lazy else self.eager)[chart_id] = spec
        return f'<div class="chart" id="chart-{_h(chart_id)}"{attrs}></div>'

    def json(self) -> str:
        figures = _finite({"eager": self.eager, "lazy": self.lazy})
        text = json.dumps(figures, allow_nan=False, separators=(",", ":"))
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _series(windows: Sequence[Mapping[str, Any]], get: Any) -> tuple[list[str], list[float | None]]:
    return [_mid(w) for w in windows], [_num(get(w)) for w in windows]


# ---- sections ------------------------------------------------------------------------------------
def _family_names(
    chosen: Sequence[Mapping[str, Any]], exact: Sequence[str], prefixes: Sequence[str]
) -> list[str]:
    present: dict[str, None] = {}
    for w in chosen:
        for name in w.get("metrics") or {}:
            if name in exact or name.startswith(tuple(prefixes)):
                present.setdefault(name, None)
    order = {n: i for i, n in enumerate(exact)}
    return sorted(present, key=lambda n: (order.get(n, len(order)), n))


def _lines(
    slices: Mapping[str, list[dict[str, Any]]], by_version: Mapping[str, list[dict[str, Any]]]
) -> list[tuple[str, list[dict[str, Any]], bool | str, str]]:
    """(label, windows, visible, dash) per line of a metric: the whole model, each version when
    several served, each segment (one click away in the legend)."""
    out: list[tuple[str, list[dict[str, Any]], bool | str, str]] = [("", slices.get("", []), True, "solid")]
    if len(by_version) > 1:
        out += [(f"version {v}", ws, True, "dashdot") for v, ws in sorted(by_version.items())]
    out += [(seg, ws, "legendonly", "dot") for seg, ws in slices.items() if seg]
    return out


def _performance(
    figs: _Figures,
    slices: Mapping[str, list[dict[str, Any]]],
    by_version: Mapping[str, list[dict[str, Any]]] | None = None,
) -> list[str]:
    """A chart per metric family present; the whole model drawn (and each version when several
    served), segments one click away in the legend; label coverage on a second axis."""
    whole = slices.get("", [])
    lines = _lines(slices, by_version or {})
    out = []
    for chart_id, title, exact, prefixes in FAMILIES:
        names = _family_names([w for ws in slices.values() for w in ws], exact, prefixes)
        if not names:
            continue
        data = []
        for i, name in enumerate(names):
            for segment, ws, visible, dash in lines:
                x, y = _series(ws, lambda w, n=name: (w.get("metrics") or {}).get(n))
                if not any(v is not None for v in y):
                    continue
                data.append(
                    {
                        "type": "scatter",
                        "mode": "lines+markers",
                        "x": x,
                        "y": y,
                        "name": _label(name if not segment else f"{name} [{segment}]"),
                        "line": {"color": _COLOURS[i % len(_COLOURS)], "dash": dash},
                        "visible": visible,
                        "meta": name,
                    }
                )
        x, y = _series(whole, lambda w: w.get("label_coverage"))
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": x,
                "y": y,
                "name": "label coverage",
                "yaxis": "y2",
                "line": {"color": "#7f7f7f", "dash": "dash"},
                "meta": "label_coverage",
            }
        )
        layout = {
            "title": {"text": title, "font": {"size": 14}},
            "yaxis": {"title": {"text": "value"}},
            "yaxis2": {
                "overlaying": "y",
                "side": "right",
                "range": [0, 1.05],
                "title": {"text": "coverage"},
                "showgrid": False,
            },
        }
        out.append(figs.add(f"metric-{chart_id}", data, layout, attrs=f' data-family="{chart_id}"'))
    x, y = _series(whole, lambda w: w.get("prediction_count"))
    out.append(
        figs.add(
            "volume",
            [
                {"type": "bar", "x": x, "y": y, "name": "predictions", "marker": {"color": "#9ecae1"}},
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": x,
                    "y": _series(whole, lambda w: w.get("label_coverage"))[1],
                    "name": "label coverage",
                    "yaxis": "y2",
                    "line": {"color": "#7f7f7f", "dash": "dash"},
                },
            ],
            {
                "title": {"text": "Predictions and label coverage per window", "font": {"size": 14}},
                "yaxis2": {"overlaying": "y", "side": "right", "range": [0, 1.05], "showgrid": False},
            },
            attrs=' data-family="coverage"',
        )
    )
    return out


def _realised_name(metric: str, names: Iterable[str]) -> str | None:
    """The realised counterpart of ``estimated_<metric>``: the same name, else the positive
    class's (``precision.1``), else the macro average. A multiclass model's (its windows carry
    per-class estimates, ``estimated_precision.<class>``) is the macro average, which it estimates."""
    names = set(names)
    if metric in names:
        return metric
    if f"{metric}_macro" in names and any(n.startswith(f"estimated_{metric}.") for n in names):
        return f"{metric}_macro"
    for positive in ("1", "true", "True", "yes", "positive"):
        if f"{metric}.{positive}" in names:
            return f"{metric}.{positive}"
    per_class = sorted(n for n in names if n.startswith(f"{metric}."))
    if per_class:
        return per_class[-1]
    return f"{metric}_macro" if f"{metric}_macro" in names else None


def _estimates(figs: _Figures, whole: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    names = {n for w in whole for n in (w.get("metrics") or {})}
    for metric in ESTIMATED:
        est = f"estimated_{metric}"
        if est not in names:
            continue
        x, y = _series(whole, lambda w, e=est: (w.get("metrics") or {}).get(e))
        lows = [_num(((w.get("intervals") or {}).get(est) or [None, None])[0]) for w in whole]
        highs = [_num(((w.get("intervals") or {}).get(est) or [None, None])[-1]) for w in whole]
        levels = {_num(w.get("interval_level")) for w in whole} - {None}
        level = f"{100 * float(next(iter(levels)) or 0):.0f}% " if len(levels) == 1 else ""
        data: list[dict[str, Any]] = []
        has_band = any(v is not None for v in lows) and any(v is not None for v in highs)
        if has_band:
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": x,
                    "y": lows,
                    "name": f"{est} low",
                    "line": {"width": 0},
                    "showlegend": False,
                    "meta": "band-low",
                    "connectgaps": False,
                }
            )
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": x,
                    "y": highs,
                    "fill": "tonexty",
                    "fillcolor": "rgba(31,119,180,0.2)",
                    "line": {"width": 0},
                    "name": f"{level}interval of {est}",
                    "meta": "band",
                }
            )
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": x,
                "y": y,
                "name": est,
                "line": {"color": "#1f77b4", "dash": "dot"},
                "meta": "estimate",
            }
        )
        realised = _realised_name(metric, names)
        if realised:
            xr, yr = _series(whole, lambda w, r=realised: (w.get("metrics") or {}).get(r))
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": xr,
                    "y": yr,
                    "name": f"{realised} (realised)",
                    "line": {"color": "#d62728"},
                    "meta": "realised",
                }
            )
        note = "" if has_band else " (no interval recorded for these windows)"
        out.append(
            figs.add(
                f"estimate-{metric}",
                data,
                {
                    "title": {
                        "text": f"Estimated {metric} (label-free) beside the realised value{note}",
                        "font": {"size": 14},
                    }
                },
                attrs=f' data-estimate="{metric}" data-band="{str(has_band).lower()}"',
            )
        )
    return out


def _drift_tests(whole: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    return [(w, t) for w in whole for t in (w.get("drift") or [])]


def _heatmap(figs: _Figures, whole: Sequence[Mapping[str, Any]]) -> str:
    tests = _drift_tests(whole)
    if not tests:
        return '<p class="empty">no drift tests in these windows</p>'
    rows = sorted({(_KIND_ORDER.get(t.get("kind", "feature"), 3), t["feature"]) for _, t in tests})
    features = [f for _, f in rows]
    x = [_mid(w) for w in whole]
    col = {w["window_start_ms"]: i for i, w in enumerate(whole)}
    z: list[list[float | None]] = [[None] * len(x) for _ in features]
    text: list[list[str]] = [[""] * len(x) for _ in features]
    index = {f: i for i, f in enumerate(features)}
    for w, t in tests:
        i, j = index[t["feature"]], col[w["window_start_ms"]]
        p = _num(t.get("p_value"))
        # colour: evidence as -log10(p), capped; a test without a p-value shows its statistic
        z[i][j] = min(-math.log10(max(p, 1e-12)), 12.0) if p is not None else None
        mark = " ✱" if t.get("drifted") else ""
        text[i][j] = (f"{p:.2g}" if p is not None else f"s={_fmt(t.get('statistic'), 2)}") + mark
    data = [
        {
            "type": "heatmap",
            "x": x,
            "y": [_label(f) for f in features],
            "z": z,
            "text": text,
            "texttemplate": "%{text}",
            "textfont": {"size": 10},
            "colorscale": "Reds",
            "zmin": 0,
            "zmax": 6,
            "colorbar": {"title": {"text": "-log10 p"}},
            "hovertemplate": "%{y} %{x}: p %{text}<extra></extra>",
        }
    ]
    layout = {
        "title": {
            "text": "Drift per feature and window: corrected p-value (✱ drifted)",
            "font": {"size": 14},
        },
        "height": 120 + 26 * len(features),
        "yaxis": {"autorange": "reversed", "automargin": True},
        "hovermode": "closest",
    }
    return figs.add("drift", data, layout)


def _tests_table(whole: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for w, t in _drift_tests(whole)[:MAX_TEST_ROWS]:
        p, raw = _num(t.get("p_value")), _num(t.get("raw_p_value"))
        distance = _num(t.get("distance"))
        effect = "-" if distance is None else f"{distance:.4g} ({t.get('distance_name') or 'distance'})"
        rows.append(
            [
                (_time(w["window_start_ms"]), w["window_start_ms"]),
                t["feature"],
                t.get("kind", "feature"),
                t.get("test", ""),
                (
                    _fmt(t.get("statistic")),
                    "" if _num(t.get("statistic")) is None else _num(t.get("statistic")),
                ),
                (_fmt(raw, 3), raw if raw is not None else ""),
                (_fmt(p, 3), p if p is not None else ""),
                t.get("correction") or "-",
                (effect, distance if distance is not None else ""),
                "drifted" if t.get("drifted") else "no drift",
            ]
        )
    return _table(
        "drift-tests",
        [
            "window",
            "feature",
            "kind",
            "test",
            "statistic",
            "raw p-value",
            "p-value (corrected)",
            "correction",
            "effect size",
            "verdict",
        ],
        rows,
        sortable=True,
    )


def _bound(edge: Any, default: float) -> float:
    """A bin edge, or the finite extreme for an open (infinite) outer edge."""
    n = _num(edge)
    return default if n is None else n


def _summary_traces(t: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Reference and window side by side: histogram shares over the edges (numeric) or the
    top category shares (categorical); None when the result carries no summaries."""
    ref, win = t.get("reference_summary"), t.get("window_summary")
    if not isinstance(ref, Mapping) or not isinstance(win, Mapping):
        return None
    traces = []
    for name, s, colour in (("reference", ref, "#7f7f7f"), ("window", win, "#d62728")):
        edges, shares = list(s.get("edges") or []), list(s.get("shares") or [])
        cats = s.get("categories") or {}
        if shares and len(edges) == len(shares) + 1:
            finite = [e for e in edges if _num(e) is not None]
            lo_hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
            xs = [(_bound(a, lo_hi[0]) + _bound(b, lo_hi[1])) / 2 for a, b in itertools.pairwise(edges)]
            traces.append(
                {
                    "type": "bar",
                    "x": xs,
                    "y": shares,
                    "name": name,
                    "opacity": 0.6,
                    "marker": {"color": colour},
                    "meta": name,
                }
            )
        elif cats:
            traces.append(
                {
                    "type": "bar",
                    "x": [_label(c) for c in cats],
                    "y": list(cats.values()),
                    "name": name,
                    "marker": {"color": colour},
                    "meta": name,
                }
            )
    return traces or None


def _distributions(figs: _Figures, whole: Sequence[Mapping[str, Any]]) -> list[str]:
    by_feature: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = defaultdict(list)
    for w, t in _drift_tests(whole):
        if t.get("kind", "feature") == "feature":
            by_feature[t["feature"]].append((w, t))
    if not by_feature:
        return ['<p class="empty">no feature drift tests</p>']
    drifted = [f for f, tests in by_feature.items() if any(t.get("drifted") for _, t in tests)]
    out, missing = [], []
    for n, feature in enumerate(sorted(by_feature, key=lambda f: (f not in drifted, f))):
        tests = by_feature[feature]
        # the window to show: the strongest evidence among the drifted windows that carry
        # summaries, else among any that carry them (the latest first)
        summarised = [(w, t) for w, t in tests if _summary_traces(t) is not None]
        candidates = [(w, t) for w, t in summarised if t.get("drifted")] or summarised[-1:]
        if not candidates:
            missing.append(feature)
            continue

        def strength(wt: tuple[Mapping[str, Any], Mapping[str, Any]]) -> tuple[float, int]:
            p = _num(wt[1].get("p_value"))
            return (1.0 if p is None else p, -wt[0]["window_start_ms"])

        w, t = min(candidates, key=strength)
        traces = _summary_traces(t) or []
        ws = t.get("window_summary") or {}
        rs = t.get("reference_summary") or {}
        caption = (
            f"{feature}: window {_time(w['window_start_ms'])} vs reference; {t.get('test', '')} p "
            f"{_fmt(t.get('p_value'), 3)}; mean {_fmt(ws.get('mean'), 3)} vs {_fmt(rs.get('mean'), 3)}, "
            f"median {_fmt(ws.get('median'), 3)} vs {_fmt(rs.get('median'), 3)}"
        )
        layout = {
            "title": {"text": _label(caption), "font": {"size": 12}},
            "barmode": "overlay",
            "height": 260,
            "yaxis": {"title": {"text": "share"}},
            "hovermode": "closest",
        }
        attrs = f' data-feature="{_h(feature)}" data-drifted="{str(feature in drifted).lower()}"'
        if feature in drifted:
            out.append(figs.add(f"dist-{n}", traces, layout, attrs=attrs))
        else:
            div = figs.add(f"dist-{n}", traces, layout, lazy=True, attrs=attrs)
            out.append(
                f'<details class="lazy" data-chart="dist-{n}"><summary>{_h(feature)} (no drift)</summary>'
                f"{div}</details>"
            )
    if missing:
        out.append(
            '<p class="empty">no distribution summaries recorded for '
            f"{_h(', '.join(sorted(missing)))} (results written before driftline recorded them)</p>"
        )
    return out


def _quality(whole: Sequence[Mapping[str, Any]]) -> str:
    worst: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    for w in whole:
        for feature, q in (w.get("data_quality") or {}).items():
            for key in ("missing_rate", "type_error_rate", "out_of_range_rate", "unseen_category_rate"):
                v = _num((q or {}).get(key))
                if v is not None and v >= worst[feature].get(key, (-1.0, 0))[0]:
                    worst[feature][key] = (v, w["window_start_ms"])
    if not worst:
        return '<p class="empty">no data quality figures in these windows</p>'

    def cell(feature: str, key: str) -> tuple[str, float | str]:
        got = worst[feature].get(key)
        if got is None:
            return ("-", "")
        v, at = got
        return (f"{v:.2%}" + (f" at {_time(at)}" if v > 0 else ""), v)

    rows = [
        [
            f,
            cell(f, "missing_rate"),
            cell(f, "type_error_rate"),
            cell(f, "out_of_range_rate"),
            cell(f, "unseen_category_rate"),
        ]
        for f in sorted(worst)
    ]
    return _table(
        "data-quality",
        ["feature", "missing (worst window)", "type errors", "out of range", "unseen categories"],
        rows,
        sortable=True,
    )


def _online(whole: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            (_time(d["time_ms"]), d["time_ms"]),
            d.get("detector", ""),
            d.get("signal", ""),
            _time(w["window_start_ms"]),
        ]
        for w in whole
        for d in (w.get("online") or [])
    ]
    if not rows:
        return '<p class="empty">no online detections</p>'
    return _table("online", ["detected at", "detector", "signal", "window"], rows, sortable=True)


def _evidence(evidence: Mapping[str, Any] | None) -> str:
    if not evidence:
        return "-"
    parts = []
    for k, v in evidence.items():
        shown = _fmt(v) if _num(v) is not None else json.dumps(v, default=str)[:200]
        parts.append(f"{k}: {shown}")
    return "; ".join(parts)


def _segment_text(segment: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(segment.items())) or "all"


def _alerts(marks: Sequence[AlertMark]) -> str:
    if not marks:
        return '<p class="empty">no alerts</p>'
    rows = [
        [
            (_time(m.at_ms), m.at_ms),
            m.status,
            m.severity,
            m.rule,
            _segment_text(m.segment),
            m.metric or "-",
            (_fmt(m.observed), "" if _num(m.observed) is None else _num(m.observed)),
            _fmt(m.threshold),
            _evidence(m.evidence),
        ]
        for m in marks
    ]
    return _table(
        "alerts",
        [
            "at (window end)",
            "status",
            "severity",
            "rule",
            "segment",
            "metric",
            "observed",
            "threshold",
            "evidence",
        ],
        rows,
        sortable=True,
    )


def _retraining(requests: Sequence[Mapping[str, Any]]) -> str:
    if not requests:
        return '<p class="empty">no retraining requests</p>'
    rows = [
        [
            (_time(r["window_start_ms"]), r["window_start_ms"]),
            r["model_version"],
            r["reason"],
            r["status"],
            f"{(r['training'] or {}).get('start', '')} .. {(r['training'] or {}).get('end', '')}",
            _evidence(r["evidence"]),
        ]
        for r in requests
    ]
    return _table(
        "retraining", ["window", "version", "reason", "status", "suggested training range", "evidence"], rows
    )


def _versions(history: Sequence[VersionHistory]) -> str:
    """The model's version history (as ``driftline models show`` prints it): every version ever
    seen, not only those of the page's windows, with its requests and who acknowledged them."""
    if not history:
        return '<p class="empty">no version history in the store</p>'

    def requests(h: VersionHistory) -> str:
        return "; ".join(
            f"{r['action']} after {_time(r['window_end_ms'])}: "
            + (
                ", ".join(f"{a['outcome']} by {a['consumer']}" for a in r["acknowledged"])
                or "not acknowledged"
            )
            + (f", then {r['next_version']}" if r["next_version"] else "")
            for r in h.requests
        )

    rows = [
        [
            h.model_version,
            (_time(h.first_seen_ms), h.first_seen_ms),
            (_time(h.last_seen_ms), h.last_seen_ms),
            h.windows,
            h.predictions,
            h.labelled,
            len(h.alerts),
            requests(h) or "none",
        ]
        for h in history
    ]
    headers = [
        "version",
        "first seen",
        "last seen",
        "windows",
        "predictions",
        "labelled",
        "alerts",
        "requests",
    ]
    return _table("versions", headers, rows)


def _key_metric(windows: Iterable[Mapping[str, Any]]) -> str | None:
    names = {n for w in windows for n in (w.get("metrics") or {})}
    return next((m for m in ("accuracy", "rmse", "mae", "estimated_accuracy") if m in names), None)


_RANKED_HEADERS = (
    "segment", "metric", "observed", "baseline", "contribution", "interval", "significant", "support"
)


def _ranked_segments(whole: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ranking the alerts and the replay report name, read back as stored (worst first,
    ``detectors/segments.py``): the latest final window's in full, then per segment how many
    of the range's ranked windows it came first in (ties: the most recent first place wins)."""
    ranked = [w for w in whole if w.get("phase") == "final" and w.get("segments_ranked")]
    if not ranked:
        return ['<p class="empty">no segment ranking stored for these windows (final ones only)</p>']

    def name(c: Mapping[str, Any]) -> str:
        return f"{c['dimension']}={c['value']}"

    latest = ranked[-1]
    rows = [
        [
            name(c),
            c["metric"],
            (_fmt(c.get("observed")), _num(c.get("observed")) or ""),
            (_fmt(c.get("baseline")), _num(c.get("baseline")) or ""),
            (_fmt(c.get("contribution")), _num(c.get("contribution")) or ""),
            "-" if _num(c.get("low")) is None else f"[{_fmt(c['low'])}, {_fmt(c.get('high'))}]",
            "yes" if c.get("significant") else "no",
            c.get("support", ""),
        ]
        for c in latest["segments_ranked"]
    ]
    first: dict[tuple[str, str], list[Any]] = {}  # (segment, metric) -> [count, significant, last end]
    for w in ranked:
        top = w["segments_ranked"][0]
        got = first.setdefault((name(top), top["metric"]), [0, 0, 0])
        got[0] += 1
        got[1] += bool(top.get("significant"))
        got[2] = w["window_end_ms"]
    often = sorted(first.items(), key=lambda kv: (-kv[1][0], -kv[1][2], kv[0]))
    return [
        f"<h3>Latest final window (ending {_h(_time(latest['window_end_ms']))}): segments by their "
        "contribution to the model's change, worst first</h3>",
        _table(
            "ranked-segments",
            _RANKED_HEADERS,
            rows,
            sortable=True,
        ),
        f"<h3>Ranked worst most often ({len(ranked)} final windows with a ranking)</h3>",
        _table(
            "often-worst-segments",
            ["segment", "metric", "windows ranked worst", "of them significant", "last (window end)"],
            [[seg, metric, n, sig, _time(end)] for (seg, metric), (n, sig, end) in often],
        ),
        "<h3>Segment slices</h3>",
    ]


def _worst_segments(slices: Mapping[str, list[dict[str, Any]]]) -> str:
    metric = _key_metric(w for ws in slices.values() for w in ws)
    rows = []
    lower_is_worse = metric in ("accuracy", "estimated_accuracy")
    for segment, ws in slices.items():
        if not segment:
            continue
        values = [v for v in (_num((w.get("metrics") or {}).get(metric or "")) for w in ws) if v is not None]
        drifted = sum(bool(w.get("dataset_drift")) for w in ws)
        worst = (min(values) if lower_is_worse else max(values)) if values else None
        mean = sum(values) / len(values) if values else None
        rows.append((worst, segment, mean, drifted, len(ws)))
    if not rows or metric is None:
        return '<p class="empty">no segments in these windows</p>'
    rows.sort(key=lambda r: (r[0] is None, (r[0] or 0.0) if lower_is_worse else -(r[0] or 0.0)))
    return _table(
        "worst-segments",
        ["segment", f"worst {metric}", f"mean {metric}", "windows with dataset drift", "windows"],
        [
            [
                seg,
                (_fmt(worst), worst if worst is not None else ""),
                (_fmt(mean), mean if mean is not None else ""),
                drifted,
                n,
            ]
            for worst, seg, mean, drifted, n in rows
        ],
        sortable=True,
    )


# ---- page ---------------------------------------------------------------------------------------
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 6px; border-bottom: 1px solid #ddd; }
.meta, .empty { color: #666; } table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
td, th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
table.sortable th { cursor: pointer; background: #f6f6f6; } table.sortable th:hover { background: #e8e8e8; }
.chart { min-height: 240px; } details.lazy { margin: 4px 0; }
.tablewrap { max-height: 420px; overflow: auto; }
"""

_SCRIPT = r"""
(function () {
  var figs = JSON.parse(document.getElementById("driftline-figures").textContent);
  var config = {displaylogo: false, responsive: true};
  function draw(id, spec) {
    var div = document.getElementById("chart-" + id);
    if (div && !div.dataset.drawn) {
      Plotly.newPlot(div, spec.data, spec.layout, config);
      div.dataset.drawn = "1";
    }
  }
  Object.keys(figs.eager).forEach(function (id) { draw(id, figs.eager[id]); });
  document.querySelectorAll("details.lazy").forEach(function (d) {
    d.addEventListener("toggle", function () {
      if (d.open) draw(d.dataset.chart, figs.lazy[d.dataset.chart]);
    });
  });
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var asc = th.dataset.sort !== "asc"; th.dataset.sort = asc ? "asc" : "desc";
        function key(r) {
          var c = r.cells[col], v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
          var n = parseFloat(v);
          return isNaN(n) ? v : n;
        }
        rows.sort(function (a, b) { var x = key(a), y = key(b);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  var drawn = 0;
  document.querySelectorAll(".chart").forEach(function (div) {
    if (div.querySelector("svg.main-svg")) drawn++;
    // what the browser laid out, per chart: traces, filled areas (bands), bars, heat-map cells
    div.setAttribute("data-rendered-traces", String(div.querySelectorAll("g.trace").length));
    div.setAttribute("data-rendered-fills", String(div.querySelectorAll("path.js-fill").length));
    div.setAttribute("data-rendered-bars", String(div.querySelectorAll("g.point path").length));
    div.setAttribute("data-rendered-heatmaps", String(div.querySelectorAll("g.hm image").length));
    div.setAttribute("data-rendered-cell-text", String(div.querySelectorAll("g.heatmap-label text").length));
    div.setAttribute("data-rendered-legend", Array.prototype.map.call(
      div.querySelectorAll("g.legend text.legendtext"), function (t) { return t.textContent; }).join("|"));
  });
  document.body.setAttribute("data-plots-rendered", String(drawn));
  var traces = document.querySelectorAll(".chart g.trace").length;
  document.body.setAttribute("data-traces-rendered", String(traces));
})();
"""


@functools.cache
def _plotly_js() -> str:
    """plotly.js from the installed ``plotly`` package, safe inside a ``<script>`` element."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


def render_report(
    model_id: str,
    windows: Sequence[Any],
    marks: Sequence[AlertMark],
    *,
    generated_ms: int,
    requests: Sequence[Mapping[str, Any]] = (),
    history: Sequence[VersionHistory] = (),
) -> str:
    """The page for already loaded data (``windows``: contract structs or dicts, any order, any
    segment; ``requests``: retraining requests as :func:`build_report` loads them; ``history``:
    the model's versions, platform/store/history.py)."""
    all_windows = [_as_dict(w) for w in windows]
    segments = sorted({_slice_key(w) for w in all_windows})
    slices = {s: chart_windows(all_windows, s) for s in segments}
    whole = slices.get("", [])
    versions = sorted({w["model_version"] for w in all_windows if not w.get("segment")})
    by_version = {v: chart_windows(all_windows, "", v) for v in versions}
    title = f"driftline report: {model_id}"
    head = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_h(title)}</title>'
        f"<style>{_STYLE}</style></head>\n"
    )
    if not whole:
        return (
            f'{head}<body data-plots-expected="0"><h1>{_h(title)}</h1>'
            f'<p class="meta">no windows for this model in the store '
            f"(generated {ms_to_rfc3339(generated_ms)})</p></body></html>\n"
        )
    figs = _Figures()
    start, end = whole[0]["window_start_ms"], max(w["window_end_ms"] for w in whole)
    fired = sum(m.status == "firing" for m in marks)
    versions_text = ", ".join(versions)
    drifted = sorted({t["feature"] for _, t in _drift_tests(whole) if t.get("drifted")})
    summary = _table(
        "summary",
        ["", ""],
        [
            ["windows", f"{len(whole)} ({ms_to_rfc3339(start)} to {ms_to_rfc3339(end)})"],
            ["versions", versions_text],
            ["segments", ", ".join(s for s in segments if s) or "none"],
            ["windows with dataset drift", sum(bool(w.get("dataset_drift")) for w in whole)],
            ["drifted (in some window)", ", ".join(drifted) or "none"],
            ["alert emissions", f"{fired} firing, {len(marks) - fired} resolved"],
            ["retraining requests", len(requests)],
        ],
    )
    sections = [
        (
            "performance",
            "Performance over time (segments: click their names in a legend)",
            _performance(figs, slices, by_version),
        ),
        (
            "estimates",
            "Label-free estimates beside realised values",
            _estimates(figs, whole) or ['<p class="empty">no label-free estimates in these windows</p>'],
        ),
        (
            "drift",
            "Drift",
            [
                _heatmap(figs, whole),
                "<h3>Drift tests (click a column to sort)</h3>",
                f'<div class="tablewrap">{_tests_table(whole)}</div>',
            ],
        ),
        ("distributions", "Reference versus window distributions", _distributions(figs, whole)),
        ("quality", "Data quality", [_quality(whole)]),
        ("online", "Online detections (error stream)", [_online(whole)]),
        ("alerts", "Alerts", [_alerts(marks)]),
        ("retraining", "Retraining requests", [_retraining(requests)]),
        ("versions", "Model versions", [_versions(history)]),
        ("segments", "Worst segments", [*_ranked_segments(whole), _worst_segments(slices)]),
    ]
    body = "\n".join(
        f'<section id="{sid}"><h2>{_h(heading)}</h2>\n' + "\n".join(parts) + "</section>"
        for sid, heading, parts in sections
    )
    return (
        f'{head}<body data-plots-expected="{len(figs.eager)}">\n<h1>{_h(title)}</h1>\n'
        f'<p class="meta">generated {ms_to_rfc3339(generated_ms)} from the driftline store; times are UTC '
        f"event time (window middles); charts by plotly.js, inlined</p>\n{summary}\n{body}\n"
        f'<script type="application/json" id="driftline-figures">{figs.json()}</script>\n'
        f"<script>/* plotly.js */\n{_plotly_js()}\n/* driftline */{_SCRIPT}</script>\n</body></html>\n"
    )
