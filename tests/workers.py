"""Real ``driftline worker`` processes for integration tests: one config shape, one lifecycle."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
