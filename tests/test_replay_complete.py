"""A replay's report holds every window slice the workers emitted (issue 19, item 5).

A merge partition used to write its end-of-results marker to one results partition while its
results went to others by model key; replay stopped reading at the markers and lost slices
(68 of 72 in three replays of 2 models x 9 windows). The race depends on timing, so the replay
is repeated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from replaying import replay_cli

from driftline.apps.simulate import simulate, write_jsonl

REPEATS = 4


@pytest.mark.slow
def test_every_replay_of_two_models_over_nine_windows_reports_all_72_slices(tmp_path: Path) -> None:
    a = simulate(900, model_id="a", events_per_s=10, seed=1, id_prefix="a")
    b = simulate(900, model_id="b", events_per_s=10, seed=2, id_prefix="b")
    pred, gt, cfg = tmp_path / "p.jsonl", tmp_path / "g.jsonl", tmp_path / "cfg.yaml"
    write_jsonl(sorted(a.predictions + b.predictions, key=lambda r: r["timestamp"]), pred)
    write_jsonl(sorted(a.labels + b.labels, key=lambda r: r["timestamp"]), gt)
    # three results partitions: the marker and a model's results usually land on different ones
    topics = {"results": 3, "partials": 2}
    cfg.write_text(
        yaml.safe_dump(
            {"defaults": {"window": "10s", "grace": "2s", "label_horizon": "5s"}, "topics": topics}
        )
    )
    counts = []
    for run in range(REPEATS):
        report = tmp_path / f"report-{run}.json"
        windows = replay_cli(cfg, pred, gt, report, timeout=300)["windows"]
        counts.append(
            len({(w["model_id"], tuple(sorted(w["segment"].items())), w["window_start_ms"]) for w in windows})
        )
    assert counts == [72] * REPEATS  # 2 models x 9 windows x (whole model + 3 channels)
