"""A real Prometheus scrapes a real ``driftline worker`` process.

``tests/test_prometheus_scrape.py`` feeds the metric observers in-process; this one checks the
wiring a deployment relies on: ``driftline worker --metrics-port`` serves the registry the
stream agents update, and what Prometheus stores equals what was produced. The worker runs on
the embedded broker; predictions and labels are produced with plain confluent-kafka, two
windows with known accuracy (0.5, then 0.75), mixed with malformed messages. Every expected
value is computed here from what was produced (accuracy by scikit-learn), none read back from
the worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from sklearn.metrics import accuracy_score
from test_prometheus_scrape import free_port, query, require_prometheus, running_prometheus
from workers import ingest_batch, running_worker, tail_events, window_events, write_worker_config

from driftline.platform.kafka import KafkaSettings, confluent_config, ensure_topics

pytestmark = pytest.mark.timeout(90)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of the window
WINDOW_MS = 10_000
MODEL = "scraped"
#: per window: (predictions, correct ones); the newest final window is the second: 36/48
WINDOWS = [(40, 20), (48, 36)]
DEADLINE_S = 70.0


@pytest.fixture()
def worker(tmp_path: Path, kafka_settings: KafkaSettings, unique_prefix: str) -> Iterator[int]:
    """A ``driftline worker`` subprocess serving metrics on a free loopback port."""
    cfg_path = write_worker_config(
        tmp_path, kafka_settings, unique_prefix, metrics_host="127.0.0.1", models={MODEL: {}}
    )
    ensure_topics(kafka_settings, {f"{unique_prefix}predictions": 2, f"{unique_prefix}ground-truth": 2})
    port = free_port()
    log_path = tmp_path / "worker.log"
    with running_worker(cfg_path, log_path, "--metrics-port", str(port)) as process:
        try:
            yield port
            assert process.poll() is None, "the worker must survive malformed input"
        except BaseException:
            print(log_path.read_text(errors="replace")[-5000:])
            raise


def _produce(settings: KafkaSettings, prefix: str) -> tuple[int, int]:
    """Two windows, malformed input, then event time moved on in every partition so both
    windows become final. Returns how many messages went to predictions and ground truth."""
    pred_topic, gt_topic = f"{prefix}predictions", f"{prefix}ground-truth"
    producer = Producer(confluent_config(settings))
    sent = {pred_topic: 0, gt_topic: 0}

    def send(topic: str, value: bytes, **kwargs: object) -> None:
        producer.produce(topic, value, **kwargs)
        sent[topic] += 1

    for w, (n, n_correct) in enumerate(WINDOWS):
        predictions, labels = window_events(MODEL, T0, WINDOW_MS, w, n, n_correct)
        send(pred_topic, ingest_batch("predictions", predictions), key=MODEL.encode())
        send(gt_topic, ingest_batch("ground_truth", labels), key=MODEL.encode())
    send(pred_topic, b'{"prediction_id": "x", "model_id": ', key=b"bad-1")  # invalid_json
    send(pred_topic, b"not json at all", key=b"bad-2")  # invalid_json
    send(pred_topic, orjson.dumps({"model_id": MODEL, "timestamp": T0, "prediction": 1}))  # missing_field
    later = T0 + 6 * WINDOW_MS  # past both windows' end + label horizon
    for part in range(2):  # three events: a partition's event time ignores its two newest stamps
        tail, labels = tail_events(MODEL, part, later)
        send(pred_topic, ingest_batch("predictions", tail), partition=part)
        send(gt_topic, ingest_batch("ground_truth", labels), partition=part)
    assert producer.flush(30) == 0
    return sent[pred_topic], sent[gt_topic]


def _scrape_until(base: str, expected: dict[str, float]) -> dict[str, float | None]:
    """Query every expression until all equal their expected value (or the deadline): counters
    and gauges move while the worker catches up, so equality is awaited, then asserted."""
    deadline = time.monotonic() + DEADLINE_S
    seen: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        for expr in expected:
            try:
                result = query(base, expr)
            except OSError:  # Prometheus still starting
                result = []
            seen[expr] = float(result[0]["value"][1]) if len(result) == 1 else None
        if seen == expected:
            break
        time.sleep(0.5)
    return seen


def test_prometheus_scrapes_a_running_worker(
    worker: int, kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path
) -> None:
    binary = require_prometheus()
    with running_prometheus(binary, [f"127.0.0.1:{worker}"], tmp_path) as prometheus:
        n_pred_messages, n_gt_messages = _produce(kafka_settings, unique_prefix)
        predictions, labels = window_events(MODEL, T0, WINDOW_MS, 1, *WINDOWS[1])
        accuracy = accuracy_score([e["label"] for e in labels], [e["prediction"] for e in predictions])
        assert accuracy == 0.75
        p, m = unique_prefix, f'model="{MODEL}"'
        expected = {
            f"driftline_window_accuracy{{{m}}}": accuracy,
            f"driftline_window_predictions{{{m}}}": float(len(predictions)),
            f"driftline_window_labelled{{{m}}}": float(len(labels)),
            f"driftline_window_label_coverage{{{m}}}": 1.0,
            f'driftline_messages_consumed_total{{topic="{p}predictions"}}': float(n_pred_messages),
            f'driftline_messages_consumed_total{{topic="{p}ground-truth"}}': float(n_gt_messages),
            f'driftline_events_invalid_total{{topic="{p}predictions",reason="invalid_json"}}': 2.0,
            f'driftline_events_invalid_total{{topic="{p}predictions",reason="missing_field"}}': 1.0,
            f'sum(driftline_events_invalid_total{{topic="{p}ground-truth"}}) or vector(0)': 0.0,
            f'up{{job="driftline",instance="127.0.0.1:{worker}"}}': 1.0,
        }
        assert (n_pred_messages, n_gt_messages) == (7, 4)
        assert _scrape_until(prometheus, expected) == expected
