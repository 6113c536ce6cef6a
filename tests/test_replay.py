"""``driftline replay`` through the real CLI, checked against independent computations."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from replaying import replay_cli

from driftline.apps.simulate import simulate, write_jsonl
from driftline.schemas import rfc3339_to_ms

WINDOW_MS = 60_000


def _replay(tmp_path: Path, traffic, *, reference=None, extra_config=None, timeout=600) -> dict:
    pred, gt, report = tmp_path / "p.jsonl", tmp_path / "g.jsonl", tmp_path / "report.json"
    write_jsonl(traffic.predictions, pred)
    write_jsonl(traffic.labels, gt)
    config = {"defaults": {"window": "60s", "grace": "10s", "label_horizon": "30s", **(extra_config or {})}}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    extra = []
    if reference is not None:
        ref = tmp_path / "reference.jsonl"
        write_jsonl(reference, ref)
        extra = ["--reference", str(ref)]
    return replay_cli(cfg, pred, gt, report, *extra, timeout=timeout)


@pytest.mark.slow
def test_replay_100k_matches_independent_accuracy(tmp_path: Path) -> None:
    traffic = simulate(100_000, events_per_s=200, seed=11)
    report = _replay(tmp_path, traffic)

    # independent computation: window of each prediction, its label, per slice
    label_of = {row["prediction_id"]: row["label"] for row in traffic.labels}
    correct: dict[tuple, int] = defaultdict(int)
    count: dict[tuple, int] = defaultdict(int)
    for row in traffic.predictions:
        start = row["timestamp"] - row["timestamp"] % WINDOW_MS
        hit = int(row["prediction"] == label_of[row["prediction_id"]])
        for segment in ((), (("channel", row["segments"]["channel"]),)):
            correct[(segment, start)] += hit
            count[(segment, start)] += 1

    windows = {
        (tuple(sorted(w["segment"].items())), rfc3339_to_ms(w["window_start"])): w for w in report["windows"]
    }
    assert set(windows) == set(count)
    for key, w in windows.items():
        assert w["prediction_count"] == count[key]
        assert w["labelled_count"] == count[key]
        assert w["metrics"]["accuracy"] == correct[key] / count[key]
    assert sum(w["prediction_count"] for k, w in windows.items() if not k[0]) == 100_000
    counters = report["counters"]
    assert (counters["predictions"], counters["labels"], counters["joined"]) == (100_000, 100_000, 100_000)
    assert (
        counters["late_predictions"] == counters["duplicate_predictions"] == counters["unmatched_labels"] == 0
    )
    assert report["dead_letter"] == {"total": 0, "by_reason": {}}
    # stationary traffic: nothing to alert about
    assert report["alerts"] == []
    assert report["retraining_requests"] == []


def test_replay_alerts_follow_the_injected_changes(tmp_path: Path) -> None:
    n, rate = 9000, 20.0  # 450 s of traffic: 7.5 windows of 60 s
    traffic = simulate(n, events_per_s=rate, feature_drift_at=4 / 7.5, concept_drift_at=6 / 7.5, seed=5)
    reference = simulate(5000, events_per_s=rate, seed=6, id_prefix="r")
    rows = [dict(p, label=y["label"]) for p, y in zip(reference.predictions, reference.labels, strict=True)]
    report = _replay(tmp_path, traffic, reference=rows)

    t0 = traffic.predictions[0]["timestamp"]
    drift_start = t0 + 4 * WINDOW_MS  # x1 shifts from the 5th window on
    concept_start = t0 + 6 * WINDOW_MS  # the true relation flips from the 7th window on
    firing = [a for a in report["alerts"] if a["type"] == "io.driftline.alert.firing"]
    assert firing, "the injected changes must raise alerts"
    for alert in firing:
        start = rfc3339_to_ms(alert["data"]["window"]["start"])
        rule = alert["data"]["rule"]
        if rule == "dataset-drift":
            assert start >= drift_start, alert
            assert "x1" in alert["data"]["evidence"]["drifted_features"]
        else:
            assert start >= concept_start, alert
    assert {a["data"]["rule"] for a in firing} >= {"dataset-drift", "accuracy-floor"}
    assert len(report["retraining_requests"]) >= 1
    request = report["retraining_requests"][0]
    assert request["id"] == request["data"]["idempotency_key"]
    assert rfc3339_to_ms(request["data"]["window"]["start"]) >= concept_start
    # every window names the reference file it was judged against (it read "file:None")
    assert {w["reference"] for w in report["windows"]} == {f"file:{tmp_path / 'reference.jsonl'}"}
