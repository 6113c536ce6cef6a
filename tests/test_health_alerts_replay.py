"""Integration-health alerts end to end: ``driftline replay`` on the session's broker runs the
real worker (ingest, join, merge agents), and its report's alerts name the exact window of a
silent segment value and the exact position of a schema change's first event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from replaying import replay_cli

from driftline.platform.kafka import KafkaSettings
from driftline.schemas import rfc3339_to_ms

T0 = 1_767_225_600_000  # a multiple of W
W = 60_000
PER_WINDOW = 200
FIRST_DEVICE = 2 * PER_WINDOW + 37  # the first event with the new feature, in window 2


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_replay_names_the_silent_segment_window_and_the_schema_change_position(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    """8 windows of 200 predictions alternating web/ios; ios sends nothing in windows 3-5;
    from event 437 (window 2) on, events carry a ``device`` feature the reference never had.
    The replay batches 500 lines a message on one partition, so that event is at offset 0
    (lines 0-499) and the silence alert names window 5 (the third silent one)."""
    preds, labels, index = [], [], 0
    first_device = None
    for w in range(8):
        for j in range(PER_WINDOW):
            channel = ("web", "ios")[j % 2]
            if channel == "ios" and 3 <= w <= 5:
                continue
            ts = T0 + w * W + j * 250
            features: dict = {"x": float(j % 7), "kind": "ab"[j % 2]}
            n = w * PER_WINDOW + j
            if n >= FIRST_DEVICE:
                features["device"] = "phone"
                if first_device is None:
                    first_device = (index, f"p{n}", ts)
            preds.append(
                {"prediction_id": f"p{n}", "model_id": "m", "model_version": "1", "timestamp": ts,
                 "features": features, "prediction": j % 2, "segments": {"channel": channel}}
            )
            label = {"prediction_id": f"p{n}", "model_id": "m", "label": j % 3 % 2, "timestamp": ts + 100}
            labels.append(label)
            index += 1
    reference = [
        {"prediction_id": f"r{i}", "model_id": "m", "features": {"x": float(i % 7), "kind": "ab"[i % 2]},
         "prediction": i % 2, "label": i % 2, "segments": {"channel": ("web", "ios")[i % 2]}}
        for i in range(400)
    ]
    pred, gt, ref, report = (tmp_path / n for n in ("p.jsonl", "g.jsonl", "r.jsonl", "report.json"))
    _write(pred, preds)
    _write(gt, labels)
    _write(ref, reference)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "topics": {"predictions": 1, "ground_truth": 1, "join": 2, "partials": 1},
                "defaults": {"window": "60s", "grace": "10s", "label_horizon": "30s", "rules": []},
            }
        )
    )
    out = replay_cli(
        cfg, pred, gt, report, "--reference", str(ref), "--broker", kafka_settings.bootstrap_servers
    )
    alerts = [a["data"] for a in out["alerts"]]

    def named(rule: str, status: str = "firing") -> list[tuple[dict, int, int]]:
        return [
            (a["segment"], rfc3339_to_ms(a["window"]["start"]) - T0, rfc3339_to_ms(a["window"]["end"]) - T0)
            for a in alerts
            if a["rule"] == rule and a["status"] == status
        ]

    assert named("no-predictions") == [({"channel": "ios"}, 5 * W, 6 * W)]
    assert named("no-predictions", "resolved") == [({"channel": "ios"}, 6 * W, 7 * W)]
    assert first_device is not None
    line, prediction_id, ts = first_device
    schema = [a for a in alerts if a["rule"].startswith("schema-change/")]
    assert [(a["rule"], a["status"]) for a in schema] == [("schema-change/new_feature/device", "firing")]
    assert rfc3339_to_ms(schema[0]["window"]["start"]) == T0 + 2 * W
    position = schema[0]["evidence"]["position"]
    assert position["topic"].endswith("predictions")
    where = (position["partition"], position["offset"], position["prediction_id"])
    assert where == (0, line // 500, prediction_id)
    # the events with the new feature were scored, not dead-lettered
    assert out["dead_letter"]["total"] == 0
    assert sum(w["prediction_count"] for w in out["windows"] if not w["segment"]) == len(preds)
