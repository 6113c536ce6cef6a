"""The HTML report from known store contents: every section with the values put in, nothing
that reaches the network, escaped names, and (in headless Chromium) every chart actually drawn.

Oracles: the expected rows, traces and cells are derived by hand from the rows below; the
browser's own layout (what Plotly put in the DOM) says whether the charts rendered. The drift
entries are stored with the contract's newer fields (raw p-value, correction, effect size,
distribution summaries) as a newer worker writes them, and the estimate band is checked on
windows carrying ``intervals``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from collections.abc import Iterator
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec
import pytest
from report_browser import rendered, screenshot
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.commands import ops_cli
from driftline.apps.htmlreport import build_report, chart_windows, render_report
from driftline.platform.store import make_engine, record_alert, record_window_result, session_factory, upgrade
from driftline.platform.store.models import WindowResultRow
from driftline.schemas import AlertData, DriftTest, Window, WindowResult, alert_event, ms_to_rfc3339
from driftline.schemas.results import FeatureQuality, OnlineDetection, SegmentContribution

pytestmark = pytest.mark.timeout(180)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
EVIL = "<img src=x onerror=alert(1)>"


def _t(
    feature: str, drifted: bool, p: float | None, statistic: float | None = 0.2, kind: str = "feature"
) -> DriftTest:
    return DriftTest(
        feature=feature,
        kind=kind,
        test="ks",
        statistic=statistic,
        p_value=p,
        threshold=0.05,
        drifted=drifted,  # type: ignore[arg-type]
    )


def _window(
    i: int,
    phase: str,
    accuracy: float | None,
    coverage: float | None,
    drift: list[DriftTest],
    *,
    segment: dict[str, str] | None = None,
    online: list[OnlineDetection] | None = None,
    quality: dict[str, FeatureQuality] | None = None,
) -> WindowResult:
    start = T0 + i * MINUTE
    return WindowResult(
        model_id="fraud",
        model_version="v1",
        segment=segment or {},
        window_start=ms_to_rfc3339(start),
        window_end=ms_to_rfc3339(start + MINUTE),
        window_start_ms=start,
        window_end_ms=start + MINUTE,
        phase=phase,  # type: ignore[arg-type]
        prediction_count=500,
        labelled_count=0,
        label_coverage=coverage,
        metrics={"accuracy": accuracy},
        drift=drift,
        dataset_drift=any(t.drifted for t in drift),
        drift_share=None,
        reference="ref",
        data_quality=quality or {},
        online=online or [],
    )


def _detection(detector: str, at_ms: int) -> OnlineDetection:
    return OnlineDetection(detector=detector, signal="error", time=ms_to_rfc3339(at_ms), time_ms=at_ms)


WINDOWS = [
    _window(0, "provisional", 0.5, 0.4, [_t("x1", False, 0.8), _t(EVIL, False, 0.5)]),
    _window(
        0,
        "final",
        0.93,
        1.0,
        [_t("x1", False, 0.7), _t(EVIL, False, 0.6), _t("prediction", False, 0.9, kind="prediction")],
    ),
    _window(
        1,
        "final",
        0.91,
        1.0,
        [
            _t("x1", True, 0.001),
            _t(EVIL, False, 0.4),
            _t("x2", False, 0.6),
            _t("prediction", False, 0.5, kind="prediction"),
        ],
        quality={"x1": FeatureQuality(missing_rate=0.02, type_error_rate=0.0, out_of_range_rate=0.01)},
        online=[_detection("adwin", T0 + MINUTE + 30_000), _detection("ddm", T0 + MINUTE + 40_000)],
    ),
    _window(
        2,
        "final",
        None,
        0.0,
        [_t("x1", True, None, statistic=0.4), _t("prediction", True, 0.01, kind="prediction")],
        online=[_detection("ddm", T0 + 2 * MINUTE + 5_000)],
    ),
    _window(
        3,
        "provisional",
        0.62,
        0.5,
        [_t("x1", True, 0.0001), _t(EVIL, True, 0.02), _t("prediction", True, 0.001, kind="prediction")],
    ),
    _window(  # not the whole model
        3,
        "final",
        0.1,
        0.1,
        [_t("x1", False, 0.9)],
        segment={"channel": "web"},
        online=[_detection("kswin", T0 + 3 * MINUTE + 1_000)],
    ),
]
# charted: windows 0 (final), 1, 2, 3 (provisional); accuracy points 3 (window 2 has none),
# coverage points 4; heat-map cells 3 + 2 + 3 = ... counted per feature below
CELLS = {  # (feature, window index) -> drifted
    ("x1", 0): False,
    ("x1", 1): True,
    ("x1", 2): True,
    ("x1", 3): True,
    (EVIL, 0): False,
    (EVIL, 1): False,
    (EVIL, 3): True,
    ("prediction", 0): False,
    ("prediction", 1): False,
    ("prediction", 2): True,
    ("prediction", 3): True,
}


def _alert(rule: str, status: str, window_index: int) -> object:
    end = T0 + (window_index + 1) * MINUTE
    return alert_event(
        AlertData(
            dedup_key=f"fraud-{rule}",
            status=status,  # type: ignore[arg-type]
            rule=rule,
            metric="accuracy",
            severity="critical",
            model_id="fraud",
            model_version="v1",
            segment={"channel": "web"} if rule == "drift" else {},
            evidence={"drifted_features": ["x1"], "value": 0.6} if rule == "drift" else {},
            window=Window(start=ms_to_rfc3339(end - MINUTE), end=ms_to_rfc3339(end)),
            observed=0.6,
            threshold=0.8,
            comparison="<",
            starts_at=ms_to_rfc3339(end),
        )
    )


ALERTS = [
    _alert("accuracy-low", "firing", 0),
    _alert("accuracy-low", "resolved", 2),
    _alert("drift", "firing", 1),  # still firing
]

#: the newer fields of a drift entry, by (window index, feature), as a newer worker stores them
EDGES = [-2.0, -1.0, 0.0, 1.0, 2.0]
NEWER: dict[tuple[int, str], dict[str, Any]] = {
    (1, "x1"): {
        "raw_p_value": 0.0004, "correction": "bh", "distance": 0.8, "distance_name": "wasserstein_normed",
        "reference_summary": {"count": 500, "mean": 0.0, "median": 0.0, "edges": EDGES,
                              "shares": [0.1, 0.4, 0.4, 0.1]},
        "window_summary": {"count": 500, "mean": 0.9, "median": 1.0, "edges": EDGES,
                           "shares": [0.05, 0.15, 0.4, 0.4]},
    },
    (3, EVIL): {
        "raw_p_value": 0.01, "correction": "bh", "distance": 0.3, "distance_name": "jensen_shannon",
        "reference_summary": {"count": 500, "categories": {"a": 0.5, "b": 0.5}},
        "window_summary": {"count": 500, "categories": {"a": 0.2, "b": 0.3, EVIL: 0.5}},
    },
    (1, "x2"): {
        "raw_p_value": 0.6, "correction": "bh", "distance": 0.05, "distance_name": "wasserstein_normed",
        "reference_summary": {"count": 500, "mean": 0.0, "edges": EDGES, "shares": [0.25] * 4},
        "window_summary": {"count": 500, "mean": 0.1, "edges": EDGES, "shares": [0.2, 0.3, 0.25, 0.25]},
    },
}  # fmt: skip


def _newer_drift(w: WindowResult) -> list[dict[str, Any]]:
    i = (w.window_start_ms - T0) // MINUTE
    out = []
    for t in msgspec.to_builtins(w.drift):
        extra = NEWER.get((i, t["feature"])) if w.phase == "final" or i == 3 else None
        out.append({**t, **(extra or {})})
    return out


@pytest.fixture()
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path}/report.sqlite"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory.begin() as s:
        for w in WINDOWS:
            record_window_result(s, w)
            if not w.segment:  # stored as the newer contract writes them
                s.execute(
                    update(WindowResultRow)
                    .where(WindowResultRow.window_start_ms == w.window_start_ms)
                    .where(WindowResultRow.phase == w.phase)
                    .where(WindowResultRow.segment == "")
                    .values(drift=_newer_drift(w))
                )
        for a in ALERTS:
            record_alert(s, a)  # type: ignore[arg-type]
    try:
        yield factory
    finally:
        engine.dispose()


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table", "thead", "tbody", "tr",
    "th", "td", "section", "div", "details", "summary", "script",
}  # fmt: skip


class _Tags(HTMLParser):
    """Element names, attributes that would make the browser fetch something, inline code."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.fetching: list[tuple[str, str]] = []
        self._in = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self._in = tag
        self.fetching += [
            (tag, k) for k, _ in attrs if k in ("src", "href", "xlink:href", "srcset", "action")
        ]


def _page(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        return build_report(s, "fraud", now_ms=T0 + 10 * MINUTE)


def _own(page: str) -> str:
    """The page without the inlined plotly.js (a library of 4 MB: its strings are its own)."""
    a, b = page.index("/* plotly.js */"), page.index("/* driftline */")
    return page[:a] + page[b:]


def _figures(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="driftline-figures">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def _rows(page: str, table_id: str) -> list[list[str]]:
    m = re.search(rf'<table id="{table_id}"[^>]*>.*?<tbody>(.*?)</tbody>', page, re.S)
    assert m is not None, table_id
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", m.group(1))]


def test_chart_windows_prefer_final_and_skip_segments() -> None:
    chosen = chart_windows(WINDOWS)
    assert [(w["window_start_ms"], w["phase"]) for w in chosen] == [
        (T0, "final"),
        (T0 + MINUTE, "final"),
        (T0 + 2 * MINUTE, "final"),
        (T0 + 3 * MINUTE, "provisional"),
    ]
    assert [w["window_start_ms"] for w in chart_windows(WINDOWS, "channel=web")] == [T0 + 3 * MINUTE]


def test_page_sections_and_data(sessions: sessionmaker[Session]) -> None:
    page = _page(sessions)
    figs = _figures(page)["eager"]
    # performance: the accuracy family (whole model drawn, the segment one click away) + volume
    acc = figs["metric-accuracy"]["data"]
    whole = next(t for t in acc if t["name"] == "accuracy")
    assert whole["y"] == [0.93, 0.91, None, 0.62] and whole["visible"] is True
    assert whole["x"][0] == ms_to_rfc3339(T0 + 30_000)  # window middles
    segment = next(t for t in acc if t["name"] == "accuracy [channel=web]")
    assert segment["y"] == [0.1] and segment["visible"] == "legendonly"
    assert next(t for t in acc if t["name"] == "label coverage")["y"] == [1.0, 1.0, 0.0, 0.5]
    assert figs["volume"]["data"][0]["y"] == [500, 500, 500, 500]
    assert "no label-free estimates in these windows" in page
    # heat map: features first (sorted), then the prediction; p-values printed in the cells
    heat = figs["drift"]["data"][0]
    assert heat["y"] == [escape(EVIL, quote=False), "x1", "x2", "prediction"]
    assert heat["text"][1] == ["0.7", "0.001 ✱", "s=0.4 ✱", "0.0001 ✱"]
    assert heat["text"][2] == ["", "0.6", "", ""]
    assert heat["z"][1][1] == pytest.approx(3.0)  # -log10(0.001)
    # the tests table: one row per test of the charted windows (3 + 4 + 2 + 3)
    rows = _rows(page, "drift-tests")
    assert len(rows) == 12
    x1 = next(r for r in rows if r[1] == "x1" and r[0] == "2026-01-01 00:01:00")
    assert x1 == ["2026-01-01 00:01:00", "x1", "feature", "ks", "0.2", "0.0004", "0.001", "bh",
                  "0.8 (wasserstein_normed)", "drifted"]  # fmt: skip
    old = next(r for r in rows if r[1] == "x1" and r[0] == "2026-01-01 00:02:00")
    assert old[5:9] == ["-", "-", "-", "-"] and old[4] == "0.4"  # older data: no raw p, no effect size
    # distributions: the drifted features drawn, the others on demand
    dist = {f["layout"]["title"]["text"].split(":")[0]: f for f in figs.values() if "barmode" in f["layout"]}
    assert set(dist) == {"x1", escape(EVIL, quote=False)}
    assert [t["y"] for t in dist["x1"]["data"]] == [[0.1, 0.4, 0.4, 0.1], [0.05, 0.15, 0.4, 0.4]]
    assert dist["x1"]["data"][0]["x"] == [-1.5, -0.5, 0.5, 1.5]
    assert dist[escape(EVIL, quote=False)]["data"][1]["x"] == ["a", "b", escape(EVIL, quote=False)]
    lazy = _figures(page)["lazy"]
    assert len(lazy) == 1 and "<summary>x2 (no drift)</summary>" in page
    # data quality, online detections (whole model only), alerts with evidence, worst segments
    assert _rows(page, "data-quality") == [["x1", "2.00% at 2026-01-01 00:01:00", "0.00%",
                                             "1.00% at 2026-01-01 00:01:00", "-"]]  # fmt: skip
    assert [r[1] for r in _rows(page, "online")] == ["adwin", "ddm", "ddm"]
    alerts = _rows(page, "alerts")
    assert [(r[0], r[1], r[3]) for r in alerts] == [
        ("2026-01-01 00:01:00", "firing", "accuracy-low"),
        ("2026-01-01 00:02:00", "firing", "drift"),
        ("2026-01-01 00:03:00", "resolved", "accuracy-low"),
    ]
    assert alerts[1][4] == "channel=web" and alerts[1][8] == "drifted_features: [&quot;x1&quot;]; value: 0.6"
    assert _rows(page, "worst-segments") == [["channel=web", "0.1", "0.1", "0", "1"]]
    # self-contained and safe: nothing fetched, producer strings never become markup
    own = _own(page)
    assert EVIL not in own and escape(EVIL) in own
    tags = _Tags()
    tags.feed(own)
    assert tags.names <= ALLOWED_TAGS, tags.names - ALLOWED_TAGS
    assert not tags.fetching, tags.fetching
    assert not re.search(r"https?:|@import|url\(", own)
    data = own[: own.index("/* driftline */")]  # markup and chart data, not the page's own script
    assert "NaN" not in data and "Infinity" not in data
    assert f'data-plots-expected="{len(figs)}"' in page


def _ranked(segment: str, contribution: float | None, significant: bool) -> SegmentContribution:
    dimension, value = segment.split("=", 1)
    return SegmentContribution(
        dimension=dimension, value=value, metric="accuracy",
        observed=None if contribution is None else 0.9 - 2 * contribution, baseline=0.9,
        labelled_share=0.5, contribution=contribution,
        low=None if contribution is None else contribution - 0.02,
        high=None if contribution is None else contribution + 0.02,
        share_of_change=None, significant=significant, support=0 if contribution is None else 250,
    )


def test_worst_segments_read_the_stored_ranking(tmp_path: Path) -> None:
    """The section shows the latest final window's stored ranking (not the newer provisional
    window's, which has none) and counts first places over the range; a hostile segment value
    stays text."""
    rankings = {
        0: [_ranked("region=EU", 0.1, True), _ranked("plan=pro", 0.01, False)],
        1: [_ranked("plan=pro", 0.05, False), _ranked("region=EU", 0.02, False)],
        2: [
            _ranked("region=EU", 0.15, True),
            _ranked(f"evil={EVIL}", 0.125, True),
            _ranked("plan=pro", None, False),
        ],
    }
    url = f"sqlite:///{tmp_path}/ranked.sqlite"
    upgrade(url)
    engine = make_engine(url)
    try:
        factory = session_factory(engine)
        with factory.begin() as s:
            for i, ranked in rankings.items():
                record_window_result(
                    s, msgspec.structs.replace(_window(i, "final", 0.8, 1.0, []), segments_ranked=ranked)
                )
            record_window_result(s, _window(3, "provisional", 0.7, 0.5, []))
        with factory() as s:
            page = build_report(s, "fraud", now_ms=T0 + 10 * MINUTE)
    finally:
        engine.dispose()
    assert "Latest final window (ending 2026-01-01 00:03:00)" in page
    assert _rows(page, "ranked-segments") == [
        ["region=EU", "accuracy", "0.6", "0.9", "0.15", "[0.13, 0.17]", "yes", "250"],
        [escape(f"evil={EVIL}"), "accuracy", "0.65", "0.9", "0.125", "[0.105, 0.145]", "yes", "250"],
        ["plan=pro", "accuracy", "-", "0.9", "-", "-", "no", "0"],
    ]
    assert _rows(page, "often-worst-segments") == [
        ["region=EU", "accuracy", "2", "2", "2026-01-01 00:03:00"],
        ["plan=pro", "accuracy", "1", "0", "2026-01-01 00:02:00"],
    ]
    assert EVIL not in _own(page)


def test_two_versions_in_the_same_windows_are_both_drawn() -> None:
    v2 = [msgspec.structs.replace(w, model_version="v2", metrics={"accuracy": 0.5}) for w in WINDOWS[1:3]]
    page = render_report("fraud", [*WINDOWS, *v2], [], generated_ms=T0)
    lines = {t["name"]: t["y"] for t in _figures(page)["eager"]["metric-accuracy"]["data"]}
    # v2 served (final) windows 0 and 1 beside v1
    assert lines["accuracy [version v1]"] == [0.93, 0.91, None, 0.62]
    assert lines["accuracy [version v2]"] == [0.5, 0.5]
    assert lines["accuracy"] == [0.5, 0.5, None, 0.62]  # per window: final first, then the higher version


def test_non_finite_stored_values_cost_a_point_not_the_page() -> None:
    w = chart_windows(WINDOWS)[1]
    inf = float("inf")
    w["drift"][0].update(
        reference_summary={"count": 3, "edges": [-inf, 0.0, inf], "shares": [0.5, float("nan")]},
        window_summary={"count": 3, "edges": [-inf, 0.0, inf], "shares": [0.25, 0.75]},
    )
    page = render_report("fraud", [w], [], generated_ms=T0)
    dist = next(f for f in _figures(page)["eager"].values() if "barmode" in f["layout"])
    assert [t["y"] for t in dist["data"]] == [[0.5, None], [0.25, 0.75]]
    assert dist["data"][0]["x"] == [0.0, 0.0]  # open outer edges: the finite extreme


def test_empty_model_page(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        page = build_report(s, "nobody", now_ms=T0)
    assert "no windows for this model" in page
    assert 'data-plots-expected="0"' in page
    assert render_report("x&y", [], [], generated_ms=T0).count("x&amp;y") == 2


def _with_estimates() -> list[dict[str, Any]]:
    """The fixture's whole-model windows with label-free estimates and their 90 % intervals."""
    out = []
    for i, w in enumerate(chart_windows(WINDOWS)):
        est = 0.9 - 0.05 * i
        w["metrics"] = {**w["metrics"], "estimated_accuracy": est, "estimation_error_accuracy": 0.01}
        w["intervals"] = {"estimated_accuracy": [est - 0.04, est + 0.04]}
        w["interval_level"] = 0.9
        out.append(w)
    return out


def test_estimates_are_drawn_beside_the_realised_metric_with_their_band() -> None:
    page = render_report("fraud", _with_estimates(), [], generated_ms=T0)
    spec = _figures(page)["eager"]["estimate-accuracy"]
    by_meta = {t["meta"]: t for t in spec["data"]}
    assert by_meta["band-low"]["y"] == pytest.approx([0.86, 0.81, 0.76, 0.71])
    assert by_meta["band"]["y"] == pytest.approx([0.94, 0.89, 0.84, 0.79])
    assert (
        by_meta["band"]["fill"] == "tonexty"
        and by_meta["band"]["name"] == "90% interval of estimated_accuracy"
    )
    assert by_meta["estimate"]["y"] == pytest.approx([0.9, 0.85, 0.8, 0.75])
    assert by_meta["realised"]["y"] == [0.93, 0.91, None, 0.62]
    assert 'data-band="true"' in page


def test_page_renders_in_headless_chromium(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(_page(sessions), encoding="utf-8")
    body, charts, dom = rendered(tmp_path, page)
    expected = int(body["data-plots-expected"])
    assert expected == 5  # accuracy, volume, drift heat map, two distributions
    assert body["data-plots-rendered"] == str(expected)
    assert charts["metric-accuracy"]["data-family"] == "accuracy"
    assert charts["metric-accuracy"]["data-rendered-legend"].split("|")[:2] == [
        "accuracy",
        "accuracy [channel=web]",
    ]
    assert int(charts["drift"]["data-rendered-heatmaps"]) == 1
    assert int(charts["drift"]["data-rendered-cell-text"]) == 12  # a number in every tested cell
    x1 = next(c for c in charts.values() if c.get("data-feature") == "x1")
    assert x1["data-drifted"] == "true" and int(x1["data-rendered-bars"]) == 8  # 4 bins x 2 sides
    evil = next(c for c in charts.values() if c.get("data-feature") == EVIL)
    assert int(evil["data-rendered-bars"]) == 2 + 3
    assert "onerror" not in re.sub(r"(&lt;|&amp;lt;)img src=x onerror", "", dom).split("/* driftline */")[-1]
    # the estimate band: a filled area laid out by the browser
    band = tmp_path / "band.html"
    band.write_text(render_report("fraud", _with_estimates(), [], generated_ms=T0), encoding="utf-8")
    body, charts, _ = rendered(tmp_path, band)
    assert body["data-plots-rendered"] == body["data-plots-expected"]
    assert int(charts["estimate-accuracy"]["data-rendered-fills"]) >= 1
    assert "90% interval of estimated_accuracy" in charts["estimate-accuracy"]["data-rendered-legend"]
    shot = tmp_path / "report.png"
    screenshot(tmp_path, page, shot, "1240,1400")
    if os.environ.get("DRIFTLINE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["DRIFTLINE_KEEP_SCREENSHOT"])


def test_report_command_writes_the_page_since_a_time(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="driftline")
    ops_cli.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "fraud.html"
    url = str(sessions.kw["bind"].url)
    since = ms_to_rfc3339(T0 + MINUTE)
    args = parser.parse_args(
        ["report", "--model", "fraud", "--html", str(out), "--store-url", url, "--since", since]
    )
    assert args.func(args) == 0
    assert capsys.readouterr().out == f"wrote the report of fraud to {out}\n"
    page = out.read_text(encoding="utf-8")
    accuracy = next(t for t in _figures(page)["eager"]["metric-accuracy"]["data"] if t["name"] == "accuracy")
    assert accuracy["x"][0] == ms_to_rfc3339(T0 + MINUTE + 30_000)  # window 0 is before --since
    assert len(accuracy["y"]) == 3


def test_the_page_lists_the_model_versions_with_their_requests_and_acknowledgements(tmp_path: Path) -> None:
    """The golden replay (fraud drifts and asks for retraining) in a store, a trainer's
    acknowledgement, and a v2 seen after it: the page's version table, from the raw report."""
    from driftline.platform.store import acknowledge_retraining_request, touch_model
    from driftline.schemas import rfc3339_to_ms
    from driftline.streams.sink import ingest_report

    report = json.loads((Path(__file__).parent / "data" / "replay-golden.json").read_text())
    request = report["retraining_requests"][0]["data"]
    end = rfc3339_to_ms(request["window"]["end"])
    url = f"sqlite:///{tmp_path}/versions.sqlite"
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_factory(engine).begin() as s:
            ingest_report(report, s)
            acknowledge_retraining_request(s, request["idempotency_key"], "trainers", now_ms=end + 5)
            touch_model(s, "fraud", "v2", end + 600_000, None)
            page = build_report(s, "fraud", now_ms=end)
    finally:
        engine.dispose()
    finals = [
        w
        for w in report["windows"]
        if w["model_id"] == "fraud" and not w["segment"] and w["phase"] == "final"
    ]
    fired = {a["data"]["dedup_key"] for a in report["alerts"] if a["data"]["model_id"] == "fraud"}
    v1, v2 = _rows(page, "versions")
    assert v1[0] == "v1" and v1[3:7] == [
        str(len(finals)),
        str(sum(w["prediction_count"] for w in finals)),
        str(sum(w["labelled_count"] for w in finals)),
        str(len(fired)),
    ]
    assert v1[7] == f"retrain after {ms_to_rfc3339(end)[:19].replace('T', ' ')}: handled by trainers, then v2"
    assert v2[0] == "v2" and v2[1] == v2[2] == ms_to_rfc3339(end + 600_000)[:19].replace("T", " ")
    assert v2[3:] == ["0", "0", "0", "0", "none"]
