"""Retraining requests, version 2: built from a real replay, checked against the input the
test put on the topics.

The replay puts prediction line ``k`` (in event-time order) into batch ``k // BATCH_LINES``,
batch ``m`` on partition ``m % partitions`` at offset ``m // partitions`` of a fresh topic,
and the same for labels (tests/test_replay.py relies on the same layout). So the test knows
where every record is, and which window it belongs to, without asking driftline.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import jsonschema
import msgspec
import yaml
from replaying import replay_events

from driftline.apps.replay import BATCH_LINES
from driftline.apps.simulate import simulate
from driftline.schemas import decode_retraining_request, ms_to_rfc3339, rfc3339_to_ms
from driftline.schemas import jsonschema as schema_gen

WINDOW_MS = 60_000
DAY_MS = 86_400_000
PARTITIONS = 3


def _positions(lines: list[dict]) -> list[tuple[dict, int, int]]:
    """(line, partition, offset) of each line as the replay lays them out."""
    ordered = sorted(enumerate(lines), key=lambda t: (t[1]["timestamp"], t[0]))
    out = []
    for k, (_, line) in enumerate(ordered):
        message = k // BATCH_LINES
        out.append((line, message % PARTITIONS, message // PARTITIONS))
    return out


def _ranges(rows) -> dict[int, tuple[int, int]]:
    found: dict[int, list[int]] = defaultdict(list)
    for _, partition, offset in rows:
        found[partition].append(offset)
    return {p: (min(o), max(o)) for p, o in sorted(found.items())}


def test_a_concept_drift_gives_a_v2_request_with_the_exact_input_of_its_windows(tmp_path: Path) -> None:
    # 8 windows of 60 s at 30/s; the first 3 bootstrap the reference, the relation flips from
    # the 5th; 80 % of predictions get a label, up to 5 s later (some before their prediction
    # reaches the join: the early-label path records positions too)
    traffic = simulate(14_400, events_per_s=30.0, concept_drift_at=4 / 8, label_share=0.8, seed=9)
    config = {
        "topics": {"predictions": PARTITIONS, "ground_truth": PARTITIONS},
        "defaults": {
            "window": "60s",
            "grace": "10s",
            "label_horizon": "30s",
            "registry": {"uri": "sqlite:///mlflow.db", "name": "fraud", "alias": "champion"},
        },
    }
    report = replay_events(tmp_path, traffic.predictions, traffic.labels, config)

    assert report["retraining_requests"], "the flipped relation must ask for retraining"
    event = report["retraining_requests"][0]
    request = decode_retraining_request(json.dumps(event).encode())
    data = request.data
    assert data.schema_version == "2.0"
    end = rfc3339_to_ms(data.window.end)
    t0 = traffic.predictions[0]["timestamp"]
    assert end >= t0 + 5 * WINDOW_MS  # not before the drift has lasted two windows

    # what the test built: every prediction before the triggering window's end is in range
    predictions = _positions(traffic.predictions)
    labels = _positions(traffic.labels)
    time_of = {p["prediction_id"]: p["timestamp"] for p in traffic.predictions}
    in_range = [r for r in predictions if r[0]["timestamp"] < end]
    labels_in_range = [r for r in labels if time_of[r[0]["prediction_id"]] < end]
    td = data.training_data
    assert td is not None
    assert (td.range.start, td.range.end) == (ms_to_rfc3339(end - 7 * DAY_MS), ms_to_rfc3339(end))
    assert td.covered is not None
    assert (td.covered.start, td.covered.end) == (ms_to_rfc3339(t0), ms_to_rfc3339(end))
    assert td.windows == (end - t0) // WINDOW_MS
    assert td.prediction_count == len(in_range)
    assert td.labelled_count == len(labels_in_range)
    assert td.label_coverage == len(labels_in_range) / len(in_range)
    topic = "driftline.predictions"
    assert {(r.topic, r.partition): (r.first_offset, r.last_offset) for r in td.predictions} == {
        (topic, p): r for p, r in _ranges(in_range).items()
    }
    assert {(r.topic, r.partition): (r.first_offset, r.last_offset) for r in td.labels} == {
        ("driftline.ground-truth", p): r for p, r in _ranges(labels_in_range).items()
    }

    # why, what is asked, and against what
    firing = [a["data"] for a in report["alerts"] if a["type"] == "io.driftline.alert.firing"]
    trigger = data.trigger
    assert trigger is not None and trigger.rule == data.reason == "accuracy-drop"
    alert = next(a for a in firing if a["rule"] == "accuracy-drop" and a["window"]["end"] == data.window.end)
    assert trigger.dedup_keys == [alert["dedup_key"]]
    assert (trigger.severity, trigger.observed, trigger.threshold) == (
        "error",
        alert["observed"],
        alert["threshold"],
    )
    assert data.action == "retrain"
    label_of = {y["prediction_id"]: y["label"] for y in traffic.labels}
    # the reference of the alert's slice (the whole model or a segment) is its first 3 windows
    boot = [
        p
        for p in traffic.predictions
        if p["timestamp"] < t0 + 3 * WINDOW_MS
        and p["prediction_id"] in label_of
        and all(p["segments"].get(k) == v for k, v in trigger.segment.items())
    ]
    accuracy = sum(p["prediction"] == label_of[p["prediction_id"]] for p in boot) / len(boot)
    assert data.baseline is not None
    assert (data.baseline.metric, data.baseline.reference) == ("accuracy", "bootstrap")
    assert abs(data.baseline.value - accuracy) < 1e-12
    assert data.baseline.reference_window is not None
    assert rfc3339_to_ms(data.baseline.reference_window.start) == t0
    assert rfc3339_to_ms(data.baseline.reference_window.end) == t0 + 3 * WINDOW_MS
    assert trigger.metrics["accuracy"].baseline == data.baseline.value
    assert trigger.metrics["accuracy"].value == alert["observed"]
    assert data.lineage is not None
    assert (data.lineage.registered_model, data.lineage.alias, data.lineage.version) == (
        "fraud",
        "champion",
        "v1",
    )

    # flat strings for workflow engines
    params = data.parameters
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
    assert params["request_id"] == request.id
    assert params["range_start"] == td.range.start and params["action"] == "retrain"
    assert params["registered_model"] == "fraud" and params["baseline_metric"] == "accuracy"
    assert float(params["baseline_value"]) == data.baseline.value
    spelled = {f"{topic}:{p}:{a}-{b}" for p, (a, b) in _ranges(in_range).items()}
    assert set(params["prediction_offsets"].split(",")) == spelled

    # the committed JSON Schema accepts it (validated independently of msgspec)
    schema = json.loads(schema_gen.generate()["retraining-request.schema.json"])
    jsonschema.validate(event, schema)
    assert msgspec.to_builtins(request) == event


def test_the_join_records_positions_on_every_label_path_and_across_a_restore() -> None:
    """Early labels (waiting across a checkpoint), the fast path, the per-label path with a
    duplicate, and a second window: each window's partial names exactly its records."""
    import numpy as np

    from driftline.platform.config import Config, ModelConfig
    from driftline.schemas import GroundTruthEvent, PredictionEvent
    from driftline.streams.catalog import ModelCatalog
    from driftline.streams.columns import LabelBlock, PredictionBlock
    from driftline.streams.join import JoinPartition
    from driftline.streams.positions import InputPositions

    t0, w = 1_767_225_600_000, 10_000
    catalog = ModelCatalog(Config(defaults=ModelConfig(window_ms=w, grace_ms=1_000, label_horizon_ms=5_000)))

    def join() -> JoinPartition:
        return JoinPartition(0, catalog, prediction_sources=["p:0", "p:1"], label_sources=["l:0"])

    def preds(*rows):
        events = [
            PredictionEvent(prediction_id=i, model_id="m", timestamp=ts, features={"x": 1.0}, prediction=1)
            for i, ts in rows
        ]
        return PredictionBlock.from_events(events, catalog.positive_label)

    def labels(*rows):
        return LabelBlock.from_events(
            [GroundTruthEvent(prediction_id=i, model_id="m", label=1, timestamp=ts) for i, ts in rows]
        )

    jp = join()
    jp.add_label_block(labels(("a", t0 + 10)), at=("l:0", np.array([7])))  # before its prediction
    restored = join()
    restored.restore(jp.snapshot())
    jp = restored
    jp.add_prediction_block(preds(("a", t0 + 5), ("b", t0 + 6)), at=("p:0", np.array([40, 41])))
    jp.add_prediction_block(preds(("c", t0 + 7), ("d", t0 + w + 1)), at=("p:1", np.array([3, 4])))
    jp.add_label_block(labels(("b", t0 + 20), ("c", t0 + 21)), at=("l:0", np.array([9, 12])))  # fast path
    jp.add_label_block(
        labels(("c", t0 + 22), ("d", t0 + w + 30)), at=("l:0", np.array([13, 15]))
    )  # dup: slow
    partials = [*jp.source_progress("p:0", t0 + 10 * w), *jp.source_progress("p:1", t0 + 10 * w)]
    partials += jp.source_progress("l:0", t0 + 10 * w)
    by_window = {
        p.window_start: InputPositions.from_wire(p.positions).ranges
        for p in partials
        if p.phase == "final" and p.segment == ""
    }
    assert by_window == {
        t0: {"predictions": {"p:0": (40, 41), "p:1": (3, 3)}, "labels": {"l:0": (7, 12)}},
        t0 + w: {"predictions": {"p:1": (4, 4)}, "labels": {"l:0": (15, 15)}},
    }
    assert jp.counters["duplicate_labels"] == 1
    assert jp.positions.to_wire() == []  # dropped once final


def _v1_record() -> bytes:
    """A version 1 request as workers before version 2 wrote it (no schema_version)."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": "k1",
            "source": "/driftline/worker",
            "type": "io.driftline.retraining.requested",
            "subject": "churn",
            "time": "2024-05-01T10:05:00.000Z",
            "datacontenttype": "application/json",
            "data": {
                "idempotency_key": "k1",
                "model_id": "churn",
                "model_version": "3",
                "reason": "accuracy-drop",
                "evidence": {"accuracy": 0.71},
                "window": {"start": "2024-05-01T10:00:00.000Z", "end": "2024-05-01T10:05:00.000Z"},
                "suggested_training_range": {
                    "start": "2024-04-24T10:05:00.000Z",
                    "end": "2024-05-01T10:05:00.000Z",
                },
                "requested_at": "2024-05-01T10:05:00.000Z",
            },
        }
    ).encode()


def _v2_record() -> bytes:
    from driftline.schemas import (
        InputRange,
        RetrainingRequestData,
        TrainingData,
        Window,
        encode,
        retraining_request,
    )
    from driftline.streams.requests import workflow_parameters

    window = Window(start="2024-05-01T10:00:00.000Z", end="2024-05-01T10:05:00.000Z")
    data = RetrainingRequestData(
        idempotency_key="k2",
        model_id="churn",
        model_version="3",
        reason="accuracy-drop",
        evidence={},
        window=window,
        suggested_training_range=window,
        requested_at=window.end,
        schema_version="2.0",
        action="recalibrate",
        training_data=TrainingData(
            range=window,
            predictions=[
                InputRange(topic="driftline.predictions", partition=0, first_offset=5, last_offset=9)
            ],
            prediction_count=5,
        ),
    )
    data = msgspec.structs.replace(data, parameters=workflow_parameters(data))
    return encode(retraining_request(data))


def test_the_trainer_helper_reads_both_versions(kafka_settings, unique_prefix: str, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    from driftline.platform.kafka import confluent_config, ensure_topics, quick_join_consumer_config
    from driftline.platform.store import make_engine, session_factory, upgrade
    from driftline.platform.store.models import RetrainingAcknowledgement
    from driftline.streams.trainer import RetrainingConsumer, StoreAcknowledger

    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    upgrade(store_url)
    acknowledge = StoreAcknowledger(store_url, "trainers", clock_ms=lambda: 42)

    topic = f"{unique_prefix}retraining-requests"
    ensure_topics(kafka_settings, {topic: 1})
    producer = Producer(confluent_config(kafka_settings))
    for value in (_v1_record(), _v2_record()):
        producer.produce(topic, value=value)
    assert producer.flush(10) == 0
    seen = []
    consumer = RetrainingConsumer(
        kafka_settings,
        group_id=f"{unique_prefix}trainer",
        handler=seen.append,
        topic_prefix=unique_prefix,
        consumer_config=quick_join_consumer_config(),
        acknowledge=acknowledge,
    )
    try:
        consumer.run(idle_timeout=8)
    finally:
        consumer.close()
        acknowledge.close()
    assert consumer.stats.undecodable == consumer.stats.acknowledge_failures == 0
    engine = make_engine(store_url)
    with session_factory(engine).begin() as session:
        acks = {
            (a.idempotency_key, a.consumer, a.acknowledged_ms)
            for a in session.query(RetrainingAcknowledgement)
        }
    engine.dispose()
    assert acks == {("k1", "trainers", 42), ("k2", "trainers", 42)}
    v1, v2 = seen
    assert (v1.data.schema_version, v1.data.action, v1.data.training_data) == ("1.0", "retrain", None)
    assert (v2.data.schema_version, v2.data.action) == ("2.0", "recalibrate")
    assert v2.data.parameters["prediction_offsets"] == "driftline.predictions:0:5-9"
    # the example trainer describes both
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "example_trainer", Path(__file__).parents[1] / "examples" / "trainer.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert "suggested range" in example.describe(v1)
    assert "recalibrate" in example.describe(v2) and "driftline.predictions[0] 5..9" in example.describe(v2)


def test_the_documented_configuration_loads_and_bad_keys_stop_start_up() -> None:
    import re

    import pytest

    from driftline.platform.config import config_from_mapping

    doc = (Path(__file__).parents[1] / "docs" / "retraining.md").read_text()
    block = re.search(r"```yaml\n(models:.*?)```", doc, re.S)
    assert block is not None
    config = config_from_mapping(yaml.safe_load(block.group(1)))
    fraud = config.model("fraud")
    assert fraud.registry["alias"] == "champion"
    assert [r.action for r in fraud.rules] == ["retrain", "recalibrate"]
    with pytest.raises(ValueError, match=r"registry: unknown keys \['alais'\]"):
        config_from_mapping({"models": {"m": {"registry": {"alais": "champion"}}}})
    with pytest.raises(ValueError, match="action 'retrian' is not one of"):
        rule = {"name": "r", "metric": "accuracy", "comparison": "<", "threshold": 0.5, "action": "retrian"}
        config_from_mapping({"models": {"m": {"rules": [rule]}}})
