"""The quickstart demo, shortened: it must detect the injected changes and nothing before them,
and ``driftline status`` and ``driftline report --html`` must work on the history it recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


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
    assert page.count("<svg") >= 3 and "fraud-detector" in page
