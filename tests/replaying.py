"""``driftline replay`` through the real command line, for the tests that check its report."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from driftline.apps.simulate import write_jsonl


def replay_cli(
    config: Path, predictions: Path, ground_truth: Path, report: Path, *extra: str, timeout: float = 600
) -> dict[str, Any]:
    """Run ``driftline --config CONFIG replay …``, assert it succeeded, return the report."""
    cmd = [sys.executable, "-m", "driftline", "--config", str(config), "replay"]
    cmd += ["--predictions", str(predictions), "--ground-truth", str(ground_truth), "--report", str(report)]
    done = subprocess.run([*cmd, *extra], capture_output=True, timeout=timeout, cwd=report.parent)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(report.read_text())


def replay_events(
    folder: Path,
    predictions: Iterable[dict[str, Any]],
    labels: Iterable[dict[str, Any]],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the events as JSON lines and ``config`` as YAML into ``folder``, replay them
    (:func:`replay_cli`, run in ``folder``) and return the report."""
    pred, gt, cfg = folder / "p.jsonl", folder / "g.jsonl", folder / "cfg.yaml"
    write_jsonl(predictions, pred)
    write_jsonl(labels, gt)
    cfg.write_text(yaml.safe_dump(dict(config)))
    return replay_cli(cfg, pred, gt, folder / "report.json")
