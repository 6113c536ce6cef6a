"""Latency from window close to the alert on its topic, through one real worker.

"Window close" is the wall-clock moment the producer hands over the first event whose event
time reaches the window's ``end + grace`` (here grace = label horizon, so the provisional and
final phases close together). The alert is timed when a consumer polling ``alerts`` receives
it. Windows alternate between 30 % and 95 % accuracy under an ``accuracy < 0.6`` rule (clear at
0.7), so every window emits one alert (firing, resolved, firing, ...). Windows are driven one
at a time, so each latency is measured on an otherwise idle pipeline.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from throughput import broker, prefix_of, run_worker, write_config

from driftline.platform.kafka import KafkaSettings, confluent_config
from driftline.schemas import rfc3339_to_ms

T0 = 1_767_225_600_000
WINDOW_MS = 10_000
GRACE_MS = 2_000
PER_WINDOW = 100
#: the alert reader's fetch long-poll (librdkafka ``fetch.wait.max.ms``, default 500)
READER_WAIT_MS = 5
TOPICS = {k: 1 for k in ("predictions", "ground_truth", "join", "partials", "results", "alerts")}
RULE = {
    "name": "accuracy-low",
    "metric": "accuracy",
    "comparison": "<",
    "threshold": 0.6,
    "clear_threshold": 0.7,
    "min_samples": 20,
    "severity": "critical",
}


def _window(w: int, rng: np.random.Generator) -> tuple[bytes, bytes]:
    """Window ``w``'s predictions and labels, starting at ``start + grace`` (so the first event
    closes window ``w - 1``)."""
    start = T0 + w * WINDOW_MS
    accuracy = 0.3 if w % 2 == 0 else 0.95
    preds = rng.integers(0, 2, PER_WINDOW)
    correct = rng.random(PER_WINDOW) < accuracy
    predictions, labels = [], []
    for i in range(PER_WINDOW):
        pid = f"w{w}-{i}"
        ts = start + GRACE_MS + i * 50
        predictions.append(
            {
                "prediction_id": pid,
                "model_id": "m",
                "timestamp": ts,
                "features": {"x": i},
                "prediction": int(preds[i]),
            }
        )
        label = int(preds[i]) if correct[i] else 1 - int(preds[i])
        labels.append({"prediction_id": pid, "model_id": "m", "label": label, "timestamp": ts + 10})
    return (
        orjson.dumps({"schema_version": "1.0", "kind": "predictions", "events": predictions}),
        orjson.dumps({"schema_version": "1.0", "kind": "ground_truth", "events": labels}),
    )


def latencies(settings: KafkaSettings, windows: int, directory: Path) -> list[float]:
    """Seconds from each window's close to its alert."""
    config = write_config(
        settings,
        directory,
        TOPICS,
        defaults={"window": "10s", "grace": "2s", "label_horizon": "2s", "rules": [RULE]},
    )
    prefix = prefix_of(config)
    rng = np.random.default_rng(5)
    producer = Producer(confluent_config(settings, **{"linger.ms": 0}))
    # the embedded broker answers a fetch when its wait ends, not when data arrives (measured:
    # a message produced into a pending fetch arrived after 30-245 ms at librdkafka's default
    # 500 ms wait, 4-32 ms at 50 ms): at the default this reader, not the worker, made p50 ~250 ms
    group = f"bench-{uuid.uuid4().hex}"
    consumer = Consumer(confluent_config(settings, group_id=group, **{"fetch.wait.max.ms": READER_WAIT_MS}))
    out: list[float] = []
    with run_worker(settings, config):
        consumer.assign([TopicPartition(f"{prefix}alerts", 0, 0)])
        for w in range(windows + 1):
            predictions, labels = _window(w, rng)
            closed = time.perf_counter()
            producer.produce(f"{prefix}predictions", predictions, partition=0)
            producer.produce(f"{prefix}ground-truth", labels, partition=0)
            producer.flush(10)
            if w == 0:
                continue
            want = T0 + (w - 1) * WINDOW_MS
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                m = consumer.poll(0.001)
                if m is None or m.error() or not m.value():
                    continue
                start = rfc3339_to_ms(orjson.loads(m.value())["data"]["window"]["start"])
                if start == want:
                    out.append(time.perf_counter() - closed)
                    break
    consumer.close()
    return out


def run(quick: bool) -> list[tuple[str, str, str]]:
    windows = 10 if quick else 40
    with broker() as settings, tempfile.TemporaryDirectory() as tmp:
        seconds = latencies(settings, windows, Path(tmp))
    if not seconds:
        return [("window close -> alert latency", "no alert received", "")]
    ms = np.array(seconds) * 1000
    return [
        (
            f"window close -> alert on topic ({len(ms)} of {windows} windows alerted)",
            f"p50 {np.percentile(ms, 50):,.0f} ms",
            f"p99 {np.percentile(ms, 99):,.0f} ms, max {ms.max():,.0f} ms",
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
