"""A fixed input's replay report, byte for byte: code that moves must not change a number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_replay import GOLDEN, run_replay


@pytest.mark.slow
def test_replay_report_of_the_fixed_corpus_is_unchanged(tmp_path: Path) -> None:
    report = run_replay(tmp_path)
    assert len(report["windows"]) == 40  # 2 models x 5 windows x (model + 3 channels)
    assert json.dumps(report, indent=2) + "\n" == GOLDEN.read_text()
