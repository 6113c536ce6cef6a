"""Open an HTML report in headless Chromium (the real browser) and read back what it laid out.

The report's own script writes, after Plotly has drawn, ``data-plots-rendered`` on ``<body>``
and per chart ``data-rendered-traces/-fills/-bars/-legend``; the DOM as the browser holds it
then is dumped (``--dump-dom``) and parsed here. Shared by test_htmlreport.py (known store
contents) and test_demo.py (the demo's data)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = chromium()
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
            "--virtual-time-budget=10000",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def rendered(tmp_path: Path, page: Path) -> tuple[dict[str, str], dict[str, dict[str, str]], str]:
    """(body attributes, chart id -> attributes of its div, the whole DOM) after rendering."""
    done = browser(tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:2000]
    charts = {}
    for tag in re.findall(r'<div [^>]*id="chart-[^>]*>', dom):  # Plotly adds classes of its own
        attrs = {k: unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag)}
        charts[attrs["id"].removeprefix("chart-")] = attrs
    return {k: unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', body.group(1))}, charts, dom


def screenshot(tmp_path: Path, page: Path, out: Path, size: str = "1240,3200") -> None:
    done = browser(
        tmp_path, f"--screenshot={out}", f"--window-size={size}", "--hide-scrollbars", page.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
