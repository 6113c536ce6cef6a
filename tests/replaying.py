"""``driftline replay`` through the real command line, for the tests that check its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def replay_cli(
    config: Path, predictions: Path, ground_truth: Path, report: Path, *extra: str, timeout: float = 600
) -> dict[str, Any]:
    """Run ``driftline --config CONFIG replay …``, assert it succeeded, return the report."""
    cmd = [sys.executable, "-m", "driftline", "--config", str(config), "replay"]
    cmd += ["--predictions", str(predictions), "--ground-truth", str(ground_truth), "--report", str(report)]
    done = subprocess.run([*cmd, *extra], capture_output=True, timeout=timeout, cwd=report.parent)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(report.read_text())
