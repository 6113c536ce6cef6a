"""The spine end to end: a real ``driftline worker`` process on the embedded broker.

Events are produced with plain confluent-kafka (batches, single events, labels before and
after their predictions, default librdkafka partitioner), mixed with malformed input. The
test computes every expected number itself and reads the worker's output back from its topics.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer
from conftest import consume_all
from scipy import stats
from workers import ACCURACY_LOW_RULE, ingest_batch, running_worker, write_worker_config

from driftline.detectors.profile import DEFAULT_GRID_BINS, quantile_edges
from driftline.platform.kafka import KafkaSettings, confluent_config, ensure_topics
from driftline.schemas import decode_alert, decode_retraining_request, decode_window_result

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of the window
WINDOW_MS = 10_000
ACCURACY = [0.9, 0.8, 0.3, 0.95]  # window 2 breaks the rule, window 3 clears it
N_PER_WINDOW = 100
MODEL = "m1"


def _events(rng: np.random.Generator) -> tuple[list[dict], list[dict], dict[int, dict[str, np.ndarray]]]:
    predictions, labels, features = [], [], {}
    for w, acc in enumerate(ACCURACY):
        n_correct = round(acc * N_PER_WINDOW)
        preds = rng.integers(0, 2, N_PER_WINDOW)
        correct = np.zeros(N_PER_WINDOW, dtype=bool)
        correct[rng.permutation(N_PER_WINDOW)[:n_correct]] = True
        truth = np.where(correct, preds, 1 - preds)
        x1 = rng.normal(0.0, 1.0, N_PER_WINDOW).round(6)
        x2 = rng.normal(0.0, 1.0, N_PER_WINDOW).round(6)
        features[w] = {"x1": x1, "x2": x2}
        for i in range(N_PER_WINDOW):
            pid = f"w{w}-{i:03d}"
            ts = T0 + w * WINDOW_MS + i * 90
            predictions.append(
                {
                    "prediction_id": pid,
                    "model_id": MODEL,
                    "model_version": "v1",
                    "timestamp": ts,
                    "features": {"x1": float(x1[i]), "x2": float(x2[i])},
                    "prediction": int(preds[i]),
                    "score": 0.5,
                }
            )
            labels.append(
                {"prediction_id": pid, "model_id": MODEL, "label": int(truth[i]), "timestamp": ts + 500}
            )
    return predictions, labels, features


@pytest.fixture()
def spine_setup(tmp_path: Path, kafka_settings: KafkaSettings, unique_prefix: str):
    rng = np.random.default_rng(42)
    reference = rng.normal(0.0, 1.0, (2, 3000)).round(6)
    ref_path = tmp_path / "reference.jsonl"
    with open(ref_path, "wb") as fh:
        for i in range(3000):
            row = {"features": {"x1": float(reference[0, i]), "x2": float(reference[1, i])}, "prediction": 1}
            fh.write(orjson.dumps(row) + b"\n")
    cfg_path = write_worker_config(
        tmp_path,
        kafka_settings,
        unique_prefix,
        topics={"join": 3, "partials": 2},
        defaults={"rules": [dict(ACCURACY_LOW_RULE)]},
        models={MODEL: {"reference": str(ref_path)}},
    )
    return cfg_path, rng, reference


def test_worker_end_to_end_with_bad_input(
    spine_setup, kafka_settings: KafkaSettings, unique_prefix: str, tmp_path
):
    cfg_path, rng, reference = spine_setup
    p = unique_prefix
    topics = {f"{p}predictions": 2, f"{p}ground-truth": 2}
    ensure_topics(kafka_settings, topics)
    with running_worker(cfg_path, tmp_path / "worker.log") as worker:
        predictions, labels, features = _events(rng)
        producer = Producer(confluent_config(kafka_settings, **{"message.max.bytes": 5_000_000}))
        pred_topic, gt_topic = f"{p}predictions", f"{p}ground-truth"
        # window 0's labels arrive before their predictions
        producer.produce(gt_topic, ingest_batch("ground_truth", labels[:100]), key=b"labels-0")
        # predictions: batches of 50 with a model key, then single events keyed by id
        for start in range(0, 300, 50):
            producer.produce(
                pred_topic, ingest_batch("predictions", predictions[start : start + 50]), key=MODEL.encode()
            )
        # bad input mixed in between valid messages
        bad_member = dict(predictions[300], features={"x1": [1, 2]})  # a list is no feature value
        mixed = predictions[300:310]
        producer.produce(pred_topic, b'{"prediction_id": "x", "model_id": ', key=b"bad-json")
        producer.produce(
            pred_topic, orjson.dumps({k: v for k, v in predictions[0].items() if k != "prediction_id"})
        )
        producer.produce(
            pred_topic, orjson.dumps(dict(predictions[0], features="abc", prediction_id="wrong-type"))
        )
        producer.produce(pred_topic, b'{"padding": "' + b"x" * 2_000_000 + b'"}')
        producer.produce(pred_topic, ingest_batch("predictions", [*mixed[:5], bad_member, *mixed[5:]]))
        for event in predictions[310:]:
            producer.produce(pred_topic, orjson.dumps(event), key=event["prediction_id"].encode())
        producer.produce(gt_topic, ingest_batch("ground_truth", labels[100:]), key=b"labels-rest")
        # event time moves on in every input partition, so windows 0..3 become final; it takes
        # watermark_outliers + 1 events (3) to move a partition's event time, never one
        later = T0 + 10 * WINDOW_MS
        for part in range(2):
            ids = [f"tail-{part}-{i}" for i in range(3)]
            tail = [dict(predictions[0], prediction_id=pid, timestamp=later) for pid in ids]
            producer.produce(pred_topic, ingest_batch("predictions", tail), partition=part)
            tail_label = [
                {"prediction_id": pid, "model_id": MODEL, "label": 1, "timestamp": later} for pid in ids
            ]
            producer.produce(gt_topic, ingest_batch("ground_truth", tail_label), partition=part)
        assert producer.flush(30) == 0

        results = _wait_for_final_windows(kafka_settings, f"{p}window-results", n=len(ACCURACY), timeout=90)
        assert worker.poll() is None, "the worker must survive bad input"

    by_window = {(r.window_start_ms - T0) // WINDOW_MS: r for r in results}
    assert sorted(by_window) == [0, 1, 2, 3]
    for w, acc in enumerate(ACCURACY):
        r = by_window[w]
        window_labels = labels[w * N_PER_WINDOW : (w + 1) * N_PER_WINDOW]
        window_preds = predictions[w * N_PER_WINDOW : (w + 1) * N_PER_WINDOW]
        expected = sum(
            p_["prediction"] == l_["label"] for p_, l_ in zip(window_preds, window_labels, strict=True)
        )
        assert r.metrics["accuracy"] == expected / N_PER_WINDOW == acc
        assert (r.prediction_count, r.labelled_count, r.label_coverage) == (100, 100, 1.0)
        # KS of the whole window against the reference, BH-corrected over the window's features
        # (and the prediction test, which is constant here): scipy is the oracle. The test runs
        # on counts over the profile's grid of 200 reference quantiles, which is exactly scipy's
        # KS of the values discretised to that grid (asymptotic p-value at these sizes), and
        # within the largest one-bin share of the raw KS statistic.
        def on_grid(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
            return np.clip(np.searchsorted(grid, values, side="right") - 1, 0, grid.size - 2)

        tests = {}
        for j, f in enumerate(("x1", "x2")):
            grid = quantile_edges(reference[j], DEFAULT_GRID_BINS)
            ref_bins, win_bins = on_grid(reference[j], grid), on_grid(np.asarray(features[w][f]), grid)
            largest = max(np.bincount(ref_bins).max() / ref_bins.size,
                          np.bincount(win_bins).max() / win_bins.size)
            tests[f] = (stats.ks_2samp(ref_bins, win_bins, method="asymp"),
                        stats.ks_2samp(reference[j], features[w][f]), largest)
        drift = {d.feature: d for d in r.drift if d.kind == "feature"}
        raw_p = [drift[f].raw_p_value for f in ("x1", "x2")]
        assert raw_p == pytest.approx([tests[f][0].pvalue for f in ("x1", "x2")], rel=1e-9)
        family = [d for d in r.drift if d.kind in ("feature", "prediction") and d.raw_p_value is not None]
        corrected = stats.false_discovery_control([d.raw_p_value for d in family])
        adjusted = {d.feature: q for d, q in zip(family, corrected, strict=True)}
        for f in ("x1", "x2"):
            binned, raw, largest_bin = tests[f]
            assert drift[f].test == "ks"
            assert drift[f].statistic == pytest.approx(binned.statistic, abs=1e-12)
            assert raw.statistic - largest_bin - 1e-12 <= drift[f].statistic <= raw.statistic + 1e-12
            assert drift[f].p_value == pytest.approx(adjusted[f], rel=1e-9)
            assert drift[f].drifted == bool(adjusted[f] < 0.05)

    alerts = [decode_alert(m.value()) for m in consume_all(kafka_settings, f"{p}alerts")]
    # the tail events jump event time to window 10: windows 4-6 pass without a prediction,
    # so the model is silent for 3 windows (integration health, docs/alerting.md)
    assert [(a.type, a.data.rule, a.data.window.start) for a in alerts] == [
        ("io.driftline.alert.firing", "accuracy-low", "2026-01-01T00:00:20.000Z"),
        ("io.driftline.alert.resolved", "accuracy-low", "2026-01-01T00:00:30.000Z"),
        ("io.driftline.alert.firing", "no-predictions", "2026-01-01T00:01:00.000Z"),
    ]
    assert alerts[0].data.dedup_key == alerts[1].data.dedup_key
    assert alerts[0].data.observed == pytest.approx(0.3)
    requests = [
        decode_retraining_request(m.value()) for m in consume_all(kafka_settings, f"{p}retraining-requests")
    ]
    assert len(requests) == 1
    request = requests[0]
    assert request.id == request.data.idempotency_key
    assert (request.data.model_id, request.data.reason, request.data.window.start) == (
        MODEL,
        "accuracy-low",
        "2026-01-01T00:00:20.000Z",
    )

    dead = consume_all(kafka_settings, f"{p}dead-letter")
    records = [(dict(m.headers()), m.value()) for m in dead]
    reasons = sorted(h["driftline-dlq-reason"].decode() for h, _ in records)
    assert reasons == ["invalid_json", "missing_field", "too_large", "wrong_type", "wrong_type"]
    for headers, _ in records:
        assert headers["driftline-source-topic"] == pred_topic.encode()
        assert int(headers["driftline-source-partition"]) in (0, 1)
        assert int(headers["driftline-source-offset"]) >= 0
    member = [(h, v) for h, v in records if "driftline-batch-index" in h]
    assert len(member) == 1
    assert member[0][0]["driftline-batch-index"] == b"5"
    assert orjson.loads(member[0][1]) == bad_member


def _wait_for_final_windows(settings: KafkaSettings, topic: str, *, n: int, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            messages = consume_all(settings, topic, idle_s=1.0, max_s=5.0)
        except AssertionError:  # topic not created yet
            time.sleep(1)
            continue
        final = [
            r
            for r in (decode_window_result(m.value()) for m in messages if m.value())
            if r.phase == "final" and not r.segment and r.window_start_ms < T0 + len(ACCURACY) * WINDOW_MS
        ]
        if len(final) >= n:
            return final
        time.sleep(1)
    raise AssertionError(f"no {n} final windows on {topic} within {timeout}s")
