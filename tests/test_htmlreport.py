"""The HTML report from known store contents: the exact marks in the markup, nothing that
reaches the network, escaped names, and (in headless Chromium) every mark actually drawn.

Oracles: the mark counts and data attributes are derived by hand from the rows below; the
browser's own layout (``getBBox``) says whether the SVG rendered.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from driftline.apps.commands import ops_cli
from driftline.apps.htmlreport import build_report, chart_windows, render_report
from driftline.platform.store import make_engine, record_alert, record_window_result, session_factory, upgrade
from driftline.schemas import AlertData, DriftTest, Window, WindowResult, alert_event, ms_to_rfc3339
from driftline.schemas.results import OnlineDetection

pytestmark = pytest.mark.timeout(120)

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
        data_quality={},
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
        [_t("x1", True, 0.001), _t(EVIL, False, 0.4), _t("prediction", False, 0.5, kind="prediction")],
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
        3, "final", 0.1, 0.1, [_t("x1", False, 0.9)], segment={"channel": "web"},
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
EXPECTED_MARKS = 3 + 4 + len(CELLS) + len(ALERTS)


@pytest.fixture()
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path}/report.sqlite"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory.begin() as s:
        for w in WINDOWS:
            record_window_result(s, w)
        for a in ALERTS:
            record_alert(s, a)  # type: ignore[arg-type]
    try:
        yield factory
    finally:
        engine.dispose()


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr", "td", "section",
    "svg", "line", "text", "polyline", "circle", "rect", "path", "script",
}  # fmt: skip


class _Tags(HTMLParser):
    """Element names, attributes that would make the browser fetch something, inline code."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.fetching: list[tuple[str, str]] = []
        self.style = self.script = ""
        self._in = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self._in = tag
        self.fetching += [
            (tag, k) for k, _ in attrs if k in ("src", "href", "xlink:href", "srcset", "action")
        ]

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.style += data
        elif self._in == "script":
            self.script += data


def _page(sessions: sessionmaker[Session]) -> str:
    with sessions() as s:
        return build_report(s, "fraud", now_ms=T0 + 10 * MINUTE)


def test_chart_windows_prefer_final_and_skip_segments() -> None:
    chosen = chart_windows(WINDOWS)
    assert [(w.window_start_ms, w.phase) for w in chosen] == [
        (T0, "final"),
        (T0 + MINUTE, "final"),
        (T0 + 2 * MINUTE, "final"),
        (T0 + 3 * MINUTE, "provisional"),
    ]


def test_page_marks_and_data(sessions: sessionmaker[Session]) -> None:
    page = _page(sessions)
    points = re.findall(r'data-series="(\w+)" data-window="(\d+)" data-value="([^"]+)"', page)
    assert sorted(points) == sorted(
        [
            ("metric", str(T0), "0.93"),
            ("metric", str(T0 + MINUTE), "0.91"),
            ("metric", str(T0 + 3 * MINUTE), "0.62"),
        ]
        + [("label_coverage", str(T0 + i * MINUTE), v) for i, v in enumerate(["1.0", "1.0", "0.0", "0.5"])]
    )
    escaped = EVIL.replace("<", "&lt;").replace(">", "&gt;")
    cells = re.findall(r'data-feature="([^"]+)" data-window="(\d+)" data-drifted="(true|false)"', page)
    assert {(f, (int(w) - T0) // MINUTE): d == "true" for f, w, d in cells} == {
        (f.replace("<", "&lt;").replace(">", "&gt;"), i): d for (f, i), d in CELLS.items()
    }
    assert len(cells) == len(CELLS)
    assert page.count('class="cell missing"') == 4 * 3 - len(CELLS)
    markers = re.findall(r'data-status="(firing|resolved)" data-at="(\d+)"', page)
    assert markers == [
        ("firing", str(T0 + MINUTE)),
        ("resolved", str(T0 + 3 * MINUTE)),
        ("firing", str(T0 + 2 * MINUTE)),
    ]
    assert page.count('class="span"') == 2  # one closed firing period, one still open
    assert f'data-marks-expected="{EXPECTED_MARKS}"' in page
    # self-contained and safe: nothing fetched, producer strings never become markup
    assert EVIL not in page and escaped in page
    tags = _Tags()
    tags.feed(page)
    assert tags.names <= ALLOWED_TAGS, tags.names - ALLOWED_TAGS
    assert not tags.fetching, tags.fetching
    assert not re.search(r"https?:|@import|url\(", tags.style + tags.script)
    assert "NaN" not in page and "inf" not in page
    # the segment window's detection is not the whole model's: it is not counted
    assert "<td>online detections</td><td>adwin/error x1, ddm/error x2 (in 2 windows)</td>" in page


def test_empty_model_page(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        page = build_report(s, "nobody", now_ms=T0)
    assert "no windows for this model" in page
    assert 'data-marks-expected="0"' in page
    assert render_report("x&y", [], [], generated_ms=T0).count("x&amp;y") == 2


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = _chromium()
    if binary is None:
        message = "chromium not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must check that the HTML report renders")
        pytest.skip(message)
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_page_renders_in_headless_chromium(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(_page(sessions), encoding="utf-8")
    done = _browser(tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body is not None, done.stdout[:2000]
    assert f'data-marks-rendered="{EXPECTED_MARKS}"' in body.group(0)
    assert 'data-charts-rendered="3"' in body.group(0)  # performance, drift, alerts
    shot = tmp_path / "report.png"
    done = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1000,1100", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
    windows = re.findall(r'data-series="metric" data-window="(\d+)"', page)
    assert windows == [str(T0 + MINUTE), str(T0 + 3 * MINUTE)]  # window 0 is before --since
