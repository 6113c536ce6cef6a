"""Real ``driftline worker`` processes for integration tests: one config shape, one lifecycle."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml

from driftline.platform.kafka import KafkaSettings
from driftline.platform.store.db import upgrade

#: small, explicit topic layout: every test topic is created with these partition counts
SMALL_TOPICS = {
    "predictions": 2,
    "ground_truth": 2,
    "join": 2,
    "partials": 1,
    "results": 1,
    "alerts": 1,
    "retraining": 1,
    "dead_letter": 1,
}

#: the end-to-end worker tests' rule: accuracy under 0.6 on 20+ labels is a critical alert that
#: asks for retraining, cleared above 0.7; their traffic is built to fire it once and resolve it
ACCURACY_LOW_RULE: Mapping[str, Any] = {
    "name": "accuracy-low",
    "metric": "accuracy",
    "comparison": "<",
    "threshold": 0.6,
    "clear_threshold": 0.7,
    "min_samples": 20,
    "severity": "critical",
    "retrain": True,
}


def write_worker_config(tmp_path: Path, settings: KafkaSettings, prefix: str, **overrides: Any) -> Path:
    """A worker config under ``prefix`` with a fresh, migrated SQLite store (the worker
    checkpoints there), 10 s windows and the small topic layout. ``overrides`` replace
    top-level keys; ``topics`` and ``defaults`` are merged into the base ones."""
    store_url = f"sqlite:///{tmp_path}/store.sqlite"
    upgrade(store_url)
    config: dict[str, Any] = {
        "app_id": f"{prefix}app",
        "bootstrap_servers": settings.bootstrap_servers,
        "store_url": store_url,
        "topics": {"prefix": prefix, **SMALL_TOPICS},
        "defaults": {"window": "10s", "grace": "2s", "label_horizon": "4s"},
    }
    for key, value in overrides.items():
        if key in ("topics", "defaults") and isinstance(value, Mapping):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / "driftline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def running_worker(
    config: Path, log: Path, *args: str, idle_after: float = 2.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``driftline worker`` with fast rebalances on the embedded broker; stopped (SIGTERM, then
    SIGKILL) however the test ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "driftline.apps.cli", "--config", str(config), "worker"),
                *("--session-timeout", "6", "--idle-after", str(idle_after), *args),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def ingest_batch(kind: str, events: Sequence[Mapping[str, Any]]) -> bytes:
    """One input-topic record as clients send it: a schema 1.0 batch of ``kind`` events
    (``predictions`` or ``ground_truth``)."""
    return orjson.dumps({"schema_version": "1.0", "kind": kind, "events": list(events)})


def window_events(
    model: str, t0: int, window_ms: int, w: int, n: int, n_correct: int
) -> tuple[list[dict], list[dict]]:
    """Window ``w`` after ``t0``: n predictions 100 ms apart alternating 0/1, each labelled
    500 ms later; the first ``n_correct`` labels agree with their prediction."""
    predictions, labels = [], []
    for i in range(n):
        pid, ts, predicted = f"w{w}-{i:03d}", t0 + w * window_ms + i * 100, i % 2
        predictions.append(
            {
                "prediction_id": pid,
                "model_id": model,
                "model_version": "v1",
                "timestamp": ts,
                "features": {"x1": float(i)},
                "prediction": predicted,
                "score": 0.5,
            }
        )
        label = predicted if i < n_correct else 1 - predicted
        labels.append({"prediction_id": pid, "model_id": model, "label": label, "timestamp": ts + 500})
    return predictions, labels


def tail_events(model: str, partition: int, timestamp: int) -> tuple[list[dict], list[dict]]:
    """Three predictions and their labels at ``timestamp`` for one input partition: its event
    time ignores its two newest stamps, so three move it on and every earlier window whose
    label horizon has passed becomes final. Shaped like :func:`window_events`' first event."""
    first = window_events(model, 0, 0, 0, 1, 1)[0][0]
    ids = [f"tail-{partition}-{i}" for i in range(3)]
    predictions = [{**first, "prediction_id": pid, "timestamp": timestamp} for pid in ids]
    labels = [{"prediction_id": pid, "model_id": model, "label": 0, "timestamp": timestamp} for pid in ids]
    return predictions, labels
