"""The quickstart demo, shortened: it must detect the injected changes and nothing before them,
and ``driftline status`` and ``driftline report --html`` must work on the history it recorded."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from report_browser import rendered

from driftline.apps.demo_view import DemoCounts, DemoView


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.apps.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_demo_detects_the_change_and_records_history(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/demo.sqlite"
    demo = _cli("demo", "--duration", "45", "--store-url", store)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "result: drift and accuracy drop detected after the change, no alert before it" in out
    assert "(0 before the injected change)" in out
    assert ">> ALERT FIRING" in out and ">> RETRAINING REQUESTED" in out
    # stdout is a pipe here: plain lines, progress from the start, not one escape code
    assert "\x1b" not in demo.stdout and "\x1b" not in demo.stderr
    # progress comes first, before any window closes (by order, not by the clock: a loaded CI
    # machine may print it a second late)
    progress = re.search(r"^  progress +\d+s: sent \d+/\d+ predictions", out, re.M)
    first_window = re.search(r"^  window \d\d:\d\d:\d\d-", out, re.M)
    assert progress and first_window and progress.start() < first_window.start(), out[:2000]
    # the summary's counts are the lengths of its lists, and match the events printed live
    summary = out[out.index("\nsummary\n") :]
    fired = int(re.search(r"alerts fired: (\d+)", summary).group(1))  # type: ignore[union-attr]
    listed = re.findall(r"^    \S+ +\[[^\]]*\] at window \d\d:\d\d:\d\d$", summary, re.M)
    assert fired == len(listed) == out.count(">> ALERT FIRING") > 0
    requests = int(re.search(r"retraining requests: (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert requests == out.count(">> RETRAINING REQUESTED") >= 1
    closed = int(re.search(r"windows evaluated \(whole model\): (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert closed == len(re.findall(r"^  window \d\d:\d\d:\d\d-", out, re.M)) == 16

    status = _cli("status", "--store-url", store, "--json")
    assert status.returncode == 0, status.stderr
    models = json.loads(status.stdout)["models"]
    assert [m["model_id"] for m in models] == ["fraud-detector"]
    assert {a["rule"] for a in models[0]["firing_alerts"]} >= {"accuracy-floor"}  # still firing at the end
    assert models[0]["last_window"]["dataset_drift"] is True

    html = tmp_path / "report.html"
    report = _cli("report", "--model", "fraud-detector", "--html", str(html), "--store-url", store)
    assert report.returncode == 0, report.stderr
    page = html.read_text()
    assert "fraud-detector" in page
    _check_report_in_chromium(tmp_path, html)


def _check_report_in_chromium(tmp_path: Path, html: Path) -> None:
    """The demo's report as the browser draws it: a chart per metric family, the estimate beside
    the realised accuracy with its interval band (stored since revision 0003), the drifted
    feature's distributions, a test-table row per feature
    and the accuracy alert with its evidence."""
    body, charts, dom = rendered(tmp_path, html)
    assert body["data-plots-rendered"] == body["data-plots-expected"] != "0"
    families = {c.get("data-family") for c in charts.values()}
    assert {"accuracy", "prf", "auc", "probabilistic", "coverage"} <= families, families
    for chart in charts.values():
        if chart.get("data-drifted") == "false":
            continue  # a feature without drift: its distributions are drawn on demand (opened)
        assert int(chart["data-rendered-traces"]) + int(chart["data-rendered-heatmaps"]) >= 1, chart
    estimate = charts["estimate-accuracy"]
    assert {"estimated_accuracy", "accuracy (realised)"} <= set(estimate["data-rendered-legend"].split("|"))
    assert estimate["data-band"] == "true" and int(estimate["data-rendered-fills"]) >= 1
    x1 = [c for c in charts.values() if c.get("data-feature") == "x1"]
    assert x1, "no distribution plot of the drifted feature x1"
    assert x1[0]["data-drifted"] == "true" and int(x1[0]["data-rendered-bars"]) >= 2
    table = dom[dom.index('<table id="drift-tests"') :]
    table = table[: table.index("</table>")]
    for feature in ("x1", "x2", "amount", "channel"):
        assert f"<td>{feature}</td>" in table
    assert "<td>drifted</td>" in table and "<td>no drift</td>" in table
    alerts = dom[dom.index('<table id="alerts"') :]
    alerts = alerts[: alerts.index("</table>")]
    floor = [
        row for row in alerts.split("<tr>") if "<td>accuracy-floor</td>" in row and "<td>firing</td>" in row
    ]
    assert floor and re.search(r"<td>[^<]*value: 0\.\d+", floor[0]), floor[:1]
    assert '<table id="retraining"' in dom


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_demo_view_is_live_on_a_terminal_and_plain_in_a_pipe() -> None:
    counts = DemoCounts(predictions_total=100, first_window_ms=0, window_ms=1000)
    with counts.lock:
        counts.predictions_sent, counts.labels_sent, counts.event_time_ms = 40, 30, 2500
        counts.closed.add(0)
    pipe = io.StringIO()
    with DemoView(counts, pipe) as view:
        view.say("  window a")
    text = pipe.getvalue()
    assert "\x1b" not in text
    # windows 0, 1000 and 2000 have started; 0 is final
    assert "sent 40/100 predictions, 30 labels; windows 1 closed, 2 open" in text
    assert text.index("progress") < text.index("  window a")

    terminal = _Terminal()
    with DemoView(counts, terminal) as view:
        view.say("  window b")
    drawn = terminal.getvalue()
    assert "\x1b[" in drawn and "  window b" in drawn and "predictions" in drawn
