"""``driftline report --html``: one model's history as a single self-contained HTML page.

The page is meant to be attached to an incident ticket or mailed around, so it must open
anywhere, offline and years later: no CDN, no web fonts, no external script. The charts are
inline SVG drawn here in Python (they render with scripts disabled too), on one shared time
axis so that a drop in accuracy, the features that drifted and the alerts that fired line up
vertically:

- performance per window: the key metric (accuracy, else rmse) and label coverage;
- drift per feature and window: a heat map, red where the test said drifted, shaded by
  ``1 - p`` (or by the statistic relative to the feature's maximum when a test has no p-value);
- alerts: one row per alert series, a bar while firing, a marker per firing/resolved emission.

A short inline script only checks the drawing: it counts the marks the browser actually laid
out and writes the count to ``<body data-marks-rendered>`` (tests read it from headless
Chromium). Every string from the data is HTML-escaped: model, feature and segment names come
from producers and must not become markup.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from driftline.platform.store import list_alerts, window_history
from driftline.platform.store.models import AlertTransition
from driftline.schemas import WindowResult, ms_to_rfc3339
from driftline.schemas.results import DriftTest

__all__ = ["AlertMark", "alert_marks", "build_report", "chart_windows", "render_report"]

WIDTH = 960
LEFT = 210  # room for feature and alert names
RIGHT = 24
PLOT_W = WIDTH - LEFT - RIGHT
ROW_H = 18
MAX_ALERT_SERIES = 10_000
_TICK_STEPS_MS = [
    m * 60_000 for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080, 20160, 43200)
]
_KIND_ORDER = {"feature": 0, "prediction": 1, "label": 2}


@dataclass(frozen=True, slots=True)
class AlertMark:
    """One alert emission on the timeline, at the end of the window that caused it."""

    dedup_key: str
    rule: str
    severity: str
    segment: dict[str, str]
    status: str
    at_ms: int


# ---- data ---------------------------------------------------------------------------------------
def chart_windows(windows: Sequence[WindowResult]) -> list[WindowResult]:
    """One whole-model result per window start, the best informed: ``final`` over
    ``provisional``, then the highest version (a deterministic pick when two versions
    served in the same window)."""
    best: dict[int, WindowResult] = {}
    for w in windows:
        if w.segment:
            continue
        current = best.get(w.window_start_ms)
        if current is None or (w.phase == "final", w.model_version) > (
            current.phase == "final",
            current.model_version,
        ):
            best[w.window_start_ms] = w
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
        out.append(AlertMark(t.dedup_key, a.rule, a.severity, dict(a.segment), t.status, t.window_end_ms))
    return out


def build_report(
    session: Session, model_id: str, *, since_ms: int | None = None, now_ms: int | None = None
) -> str:
    """The HTML page for ``model_id`` from the store (windows starting at ``since_ms`` or later)."""
    windows = window_history(session, model_id, since_ms=since_ms, segment={})
    marks = alert_marks(session, model_id, since_ms)
    generated = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return render_report(model_id, windows, marks, generated_ms=generated)


# ---- geometry -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _TimeScale:
    start_ms: int
    end_ms: int

    def x(self, ms: float) -> float:
        span = max(self.end_ms - self.start_ms, 1)
        return LEFT + (ms - self.start_ms) / span * PLOT_W

    def ticks(self) -> list[tuple[float, str]]:
        span = self.end_ms - self.start_ms
        step = next((s for s in _TICK_STEPS_MS if span / s <= 8), _TICK_STEPS_MS[-1])
        first = -(-self.start_ms // step) * step
        fmt = (lambda s: s[11:16]) if span <= 86_400_000 else (lambda s: s[5:10] + " " + s[11:16])
        return [(self.x(t), fmt(ms_to_rfc3339(t))) for t in range(first, self.end_ms + 1, step)]


def _n(value: float) -> str:
    """SVG coordinates: two decimals are sub-pixel; never NaN (callers filter None first)."""
    return f"{value:.2f}"


def _attr(value: Any) -> str:
    return escape(str(value), quote=True)


def _axis(scale: _TimeScale, top: float, bottom: float) -> list[str]:
    out = [f'<line class="axis" x1="{LEFT}" y1="{_n(bottom)}" x2="{LEFT + PLOT_W}" y2="{_n(bottom)}"/>']
    for x, label in scale.ticks():
        out.append(f'<line class="grid" x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(bottom)}"/>')
        out.append(
            f'<text class="tick" x="{_n(x)}" y="{_n(bottom + 14)}" text-anchor="middle">{label}</text>'
        )
    return out


# ---- charts -------------------------------------------------------------------------------------
_SERIES_COLOURS = {"metric": "#1f77b4", "label_coverage": "#7f7f7f"}


def _line_chart(
    chart_id: str,
    title: str,
    scale: _TimeScale,
    windows: Sequence[WindowResult],
    series: Sequence[tuple[str, str, list[float | None]]],
    y_max: float,
) -> tuple[str, int]:
    """A line per series with a point per window (hollow while the window is provisional);
    a missing value breaks the line instead of being drawn as zero."""
    height, top, bottom = 216, 28, 186
    y_max = y_max if y_max > 0 and math.isfinite(y_max) else 1.0

    def y(v: float) -> float:
        return bottom - (v / y_max) * (bottom - top)

    parts = _axis(scale, top, bottom)
    for frac in (0.0, 0.5, 1.0):
        tick = frac * y_max
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{_n(y(tick) + 4)}" text-anchor="end">{tick:.3g}</text>'
        )
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{_n(y(tick))}" x2="{LEFT + PLOT_W}" y2="{_n(y(tick))}"/>'
        )
    marks = 0
    for legend_row, (key, label, values) in enumerate(series):
        colour = _SERIES_COLOURS.get(key, "#2ca02c")
        dash = ' stroke-dasharray="5 3"' if key == "label_coverage" else ""
        runs: list[list[str]] = [[]]
        for w, v in zip(windows, values, strict=True):
            if v is None:
                runs.append([])
                continue
            runs[-1].append(f"{_n(scale.x((w.window_start_ms + w.window_end_ms) / 2))},{_n(y(v))}")
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline class="line" fill="none" stroke="{colour}"{dash} points="{" ".join(run)}"/>'
                )
        for w, v in zip(windows, values, strict=True):
            if v is None:
                continue
            fill = colour if w.phase == "final" else "#ffffff"
            cx, cy = _n(scale.x((w.window_start_ms + w.window_end_ms) / 2)), _n(y(v))
            parts.append(
                f'<circle class="mark point" data-series="{_attr(key)}" data-window="{w.window_start_ms}" '
                f'data-value="{v!r}" cx="{cx}" cy="{cy}" r="3.5" fill="{fill}" stroke="{colour}">'
                f"<title>{_attr(label)} {v:.4g} · {ms_to_rfc3339(w.window_start_ms)} ({w.phase})</title>"
                "</circle>"
            )
            marks += 1
        ly = 10  # legends side by side above the plot, never over a line
        lx = LEFT + legend_row * 160
        parts.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" stroke="{colour}"{dash} stroke-width="2"/>'
            f'<text class="legend" x="{lx + 26}" y="{ly + 4}">{_attr(label)}</text>'
        )
    svg = _svg(chart_id, title, height, parts)
    return svg, marks


def _cell_colour(drifted: bool, score: float) -> str:
    """White to blue for 'no drift', pale to dark red for 'drifted', by score in [0, 1]."""
    score = min(max(score, 0.0), 1.0)
    lo, hi = ((254, 224, 210), (165, 15, 21)) if drifted else ((247, 251, 255), (107, 174, 214))
    r, g, b = (round(a + (c - a) * score) for a, c in zip(lo, hi, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _heatmap(scale: _TimeScale, windows: Sequence[WindowResult]) -> tuple[str, int]:
    tests: dict[tuple[int, str], dict[int, DriftTest]] = {}
    for w in windows:
        for test in w.drift:
            tests.setdefault((_KIND_ORDER.get(test.kind, 3), test.feature), {})[w.window_start_ms] = test
    rows = sorted(tests)
    if not rows:
        return _svg(
            "drift", "Drift per feature", 40, ['<text class="empty" x="10" y="24">no drift tests</text>']
        ), 0
    top = 8
    bottom = top + ROW_H * len(rows)
    parts = _axis(scale, top, bottom)
    marks = 0
    for i, key in enumerate(rows):
        by_window = tests[key]
        feature = key[1]
        y = top + i * ROW_H
        parts.append(_row_label(y, feature))
        stats = [
            abs(t.statistic)
            for t in by_window.values()
            if t.statistic is not None and math.isfinite(t.statistic)
        ]
        row_max = max(stats, default=0.0)
        for w in windows:
            x0, x1 = scale.x(w.window_start_ms), scale.x(w.window_end_ms)
            t = by_window.get(w.window_start_ms)
            geometry = f'x="{_n(x0)}" y="{y + 1}" width="{_n(max(x1 - x0 - 1, 1))}" height="{ROW_H - 2}"'
            if t is None:
                parts.append(f'<rect class="cell missing" {geometry} fill="#eeeeee"/>')
                continue
            if t.p_value is not None and math.isfinite(t.p_value):
                score = 1.0 - t.p_value
            elif t.statistic is not None and math.isfinite(t.statistic) and row_max > 0:
                score = abs(t.statistic) / row_max
            else:
                score = 0.0
            stat = "-" if t.statistic is None else f"{t.statistic:.4g}"
            p = "-" if t.p_value is None else f"{t.p_value:.3g}"
            parts.append(
                f'<rect class="mark cell" data-feature="{_attr(feature)}" data-window="{w.window_start_ms}" '
                f'data-drifted="{str(t.drifted).lower()}" {geometry} fill="{_cell_colour(t.drifted, score)}">'
                f"<title>{_attr(feature)} · {ms_to_rfc3339(w.window_start_ms)} · {_attr(t.test)} "
                f"statistic {stat}, p {p}{' · drifted' if t.drifted else ''}</title></rect>"
            )
            marks += 1
    return _svg(
        "drift", "Drift per feature (red: drifted; darker: stronger evidence)", bottom + 22, parts
    ), marks


def _row_label(y: float, text: str, limit: int = 32) -> str:
    """A row label that fits the left margin; the full name stays in the marks' tooltips."""
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return (
        f'<text class="label" x="{LEFT - 6}" y="{_n(y + ROW_H - 5)}" text-anchor="end">{_attr(short)}</text>'
    )


def _series_label(m: AlertMark) -> str:
    segment = ",".join(f"{k}={v}" for k, v in sorted(m.segment.items()))
    return m.rule + (f" [{segment}]" if segment else "")


def _timeline(scale: _TimeScale, marks_in: Sequence[AlertMark]) -> tuple[str, int]:
    by_key: dict[str, list[AlertMark]] = {}
    for m in marks_in:
        by_key.setdefault(m.dedup_key, []).append(m)
    # rows in order of first emission, then by what they say (not by the opaque dedup key)
    keys = sorted(by_key, key=lambda k: (by_key[k][0].at_ms, _series_label(by_key[k][0]), k))
    if not keys:
        return _svg("alerts", "Alerts", 40, ['<text class="empty" x="10" y="24">no alerts</text>']), 0
    top = 8
    bottom = top + ROW_H * len(keys)
    parts = _axis(scale, top, bottom)
    count = 0
    for i, key in enumerate(keys):
        series = by_key[key]
        y = top + i * ROW_H
        mid = y + ROW_H / 2
        label = _series_label(series[0])
        parts.append(_row_label(y, label))
        firing_since: int | None = None
        for m in series:  # firing bars: from a firing emission to the next resolved one
            if m.status == "firing" and firing_since is None:
                firing_since = m.at_ms
            elif m.status == "resolved" and firing_since is not None:
                parts.append(_span(scale, firing_since, m.at_ms, mid))
                firing_since = None
        if firing_since is not None:
            parts.append(_span(scale, firing_since, scale.end_ms, mid))
        for m in series:
            x = scale.x(m.at_ms)
            common = f'class="mark marker {m.status}" data-status="{m.status}" data-at="{m.at_ms}"'
            tip = (
                f"<title>{_attr(label)} {m.status} ({_attr(m.severity)}) at {ms_to_rfc3339(m.at_ms)}</title>"
            )
            if m.status == "firing":
                d = f"M{_n(x - 5)},{_n(mid - 5)} L{_n(x + 5)},{_n(mid - 5)} L{_n(x)},{_n(mid + 5)} Z"
                parts.append(f'<path {common} d="{d}" fill="#d62728">{tip}</path>')
            else:
                parts.append(
                    f'<circle {common} cx="{_n(x)}" cy="{_n(mid)}" r="4.5" fill="#2ca02c">{tip}</circle>'
                )
            count += 1
    return _svg("alerts", "Alerts (▼ firing, ● resolved; bar while firing)", bottom + 22, parts), count


def _span(scale: _TimeScale, start_ms: int, end_ms: int, mid: float) -> str:
    x0, x1 = scale.x(start_ms), scale.x(end_ms)
    return (
        f'<rect class="span" x="{_n(x0)}" y="{_n(mid - 3)}" width="{_n(max(x1 - x0, 1))}" '
        f'height="6" fill="#f4a6a6"/>'
    )


def _svg(chart_id: str, title: str, height: float, parts: list[str]) -> str:
    body = "\n".join(parts)
    return (
        f'<section><h2>{_attr(title)}</h2>\n<svg class="chart" id="chart-{chart_id}" width="{WIDTH}" '
        f'height="{_n(height)}" viewBox="0 0 {WIDTH} {_n(height)}" role="img">\n{body}\n</svg></section>'
    )


# ---- page ---------------------------------------------------------------------------------------
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 20px 0 4px; }
.meta { color: #555; } table.summary td { padding: 1px 12px 1px 0; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #444; }
svg.chart .axis { stroke: #888; } svg.chart .grid { stroke: #eee; }
svg.chart .line { stroke-width: 1.8; }
"""

# Counts the marks the browser really laid out (a NaN or malformed coordinate leaves a mark
# with an empty box), so a headless check proves the charts rendered, not only that the
# markup is there.
_SCRIPT = """
(function () {
  var marks = document.querySelectorAll("svg.chart .mark"), drawn = 0;
  for (var i = 0; i < marks.length; i++) {
    var box = marks[i].getBBox();
    if (box.width > 0 && box.height > 0) drawn++;
  }
  document.body.setAttribute("data-marks-rendered", String(drawn));
  document.body.setAttribute("data-charts-rendered", String(document.querySelectorAll("svg.chart").length));
})();
"""


def _online(windows: Sequence[WindowResult]) -> str:
    """How often each online detector fired on the error stream, over the charted windows."""
    fired = Counter(f"{d.detector}/{d.signal}" for w in windows for d in w.online)
    if not fired:
        return "none"
    windows_with = sum(bool(w.online) for w in windows)
    parts = ", ".join(f"{_attr(name)} x{n}" for name, n in sorted(fired.items()))
    return f"{parts} (in {windows_with} window{'s' if windows_with != 1 else ''})"


def _key_metric(windows: Sequence[WindowResult]) -> str | None:
    for name in ("accuracy", "rmse"):
        if any(name in w.metrics for w in windows):
            return name
    return None


def _value(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def render_report(
    model_id: str, windows: Sequence[WindowResult], marks: Sequence[AlertMark], *, generated_ms: int
) -> str:
    """The page for already loaded data (``windows`` in any order; segments are ignored)."""
    chosen = chart_windows(windows)
    title = f"driftline report: {model_id}"
    head = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_attr(title)}</title>'
        f"<style>{_STYLE}</style></head>\n"
    )
    if not chosen:
        return (
            f'{head}<body data-marks-expected="0"><h1>{_attr(title)}</h1>'
            f'<p class="meta">no windows for this model in the store '
            f"(generated {ms_to_rfc3339(generated_ms)})</p><script>{_SCRIPT}</script></body></html>\n"
        )
    start = chosen[0].window_start_ms
    end = max(max(w.window_end_ms for w in chosen), max((m.at_ms for m in marks), default=start))
    scale = _TimeScale(start, end)
    metric = _key_metric(chosen)
    sections: list[str] = []
    total = 0
    coverage = ("label_coverage", "label coverage", [_value(w.label_coverage) for w in chosen])
    if metric is None:
        charts = [("coverage", "Label coverage per window", [coverage], 1.0)]
    else:
        values = [_value(w.metrics.get(metric)) for w in chosen]
        if metric == "accuracy":
            charts = [
                (
                    "performance",
                    "Accuracy and label coverage per window",
                    [("metric", metric, values), coverage],
                    1.0,
                )
            ]
        else:
            top = max((v for v in values if v is not None), default=1.0) * 1.1
            charts = [
                ("performance", f"{metric} per window", [("metric", metric, values)], top),
                ("coverage", "Label coverage per window", [coverage], 1.0),
            ]
    for chart_id, chart_title, series, y_max in charts:
        svg, n = _line_chart(chart_id, chart_title, scale, chosen, series, y_max)
        sections.append(svg)
        total += n
    for svg, n in (_heatmap(scale, chosen), _timeline(scale, marks)):
        sections.append(svg)
        total += n
    fired = sum(m.status == "firing" for m in marks)
    versions = ", ".join(sorted({w.model_version for w in chosen}))
    summary = (
        '<table class="summary">'
        f"<tr><td>windows</td><td>{len(chosen)} ({ms_to_rfc3339(start)} to {ms_to_rfc3339(end)})</td></tr>"
        f"<tr><td>versions</td><td>{_attr(versions)}</td></tr>"
        f"<tr><td>windows with dataset drift</td><td>{sum(bool(w.dataset_drift) for w in chosen)}</td></tr>"
        f"<tr><td>online detections</td><td>{_online(chosen)}</td></tr>"
        f"<tr><td>alert emissions</td><td>{fired} firing, {len(marks) - fired} resolved</td></tr>"
        "</table>"
    )
    return (
        f'{head}<body data-marks-expected="{total}">\n<h1>{_attr(title)}</h1>\n'
        f'<p class="meta">generated {ms_to_rfc3339(generated_ms)} from the driftline store; '
        f"times are UTC event time; hollow points are provisional windows</p>\n{summary}\n"
        + "\n".join(sections)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )
