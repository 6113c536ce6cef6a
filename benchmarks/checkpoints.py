"""Checkpoint cost per write, whole state against delta, as the open slices grow.

One join partition of 10 models x 2 segment dimensions (3 x 3 values) holds WINDOWS open
windows (a label horizon long enough to keep them all open), each with predictions and half of
them labelled. Then, per round, one checkpoint interval's traffic arrives (``--interval``
predictions in the newest window and as many labels for the window before it), and the same
state is checkpointed both ways, back to back: the whole snapshot (what every write was before
delta checkpoints) and the delta since the previous checkpoint. Reported: bytes, CPU per write
(encoding), and the SQL write on SQLite (``CheckpointStore.save`` / ``save_delta``: execute and
commit), min / median / max over the rounds.

    .venv/bin/python benchmarks/checkpoints.py --windows 2 8 32 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from driftline.platform.checkpoints import CheckpointStore
from driftline.platform.config import Config, ModelConfig
from driftline.platform.store.db import upgrade
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog
from driftline.streams.join import JoinPartition

T0 = 1_767_225_600_000
WINDOW_MS = 60_000
MODELS = [f"model-{i}" for i in range(10)]


def _preds(rng: np.random.Generator, start: int, n: int, first_id: int) -> list[PredictionEvent]:
    out = []
    for i in range(n):
        out.append(PredictionEvent(
            prediction_id=f"p{first_id + i}", model_id=MODELS[i % len(MODELS)],
            timestamp=start + int(rng.integers(0, WINDOW_MS)),
            features={"f0": float(rng.normal()), "f1": float(rng.normal()), "f2": float(rng.normal()),
                      "c": ["a", "b", "c"][i % 3]},
            prediction=int(rng.random() < 0.5), score=float(rng.random()),
            segments={"region": ["eu", "us", "ap"][i % 3], "device": ["web", "ios", "android"][(i // 3) % 3]},
        ))
    return out


def _labels(preds: Sequence[PredictionEvent], rng: np.random.Generator) -> list[GroundTruthEvent]:
    return [GroundTruthEvent(prediction_id=p.prediction_id, model_id=p.model_id,
                             label=int(rng.random() < 0.5), timestamp=p.timestamp + 1) for p in preds]


def _ms(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def measure(windows: int, per_window: int, interval: int, rounds: int, store: CheckpointStore) -> list[str]:
    rng = np.random.default_rng(windows)
    horizon = (windows + rounds + 2) * WINDOW_MS  # every window stays open through the rounds
    cfg = ModelConfig(window_ms=WINDOW_MS, grace_ms=5_000, label_horizon_ms=horizon)
    catalog = ModelCatalog(Config(defaults=cfg))
    jp = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
    next_id = 0
    for w in range(windows):
        batch = _preds(rng, T0 + w * WINDOW_MS, per_window, next_id)
        next_id += per_window
        jp.add_predictions(batch)
        jp.add_labels(_labels(batch[: per_window // 2], rng))
    jp.source_progress("p:0", T0 + windows * WINDOW_MS)
    jp.source_progress("l:0", T0 + windows * WINDOW_MS)
    name = f"bench/{windows}"
    store.save(name, jp.checkpoint(whole=True), 1)
    sizes: dict[str, list[float]] = {k: [] for k in ("wb", "db", "wc", "dc", "ws", "ds")}
    previous = _preds(rng, T0 + (windows - 1) * WINDOW_MS, interval, next_id)
    next_id += interval
    jp.add_predictions(previous)
    for r in range(rounds):
        newest = _preds(rng, T0 + (windows + r) * WINDOW_MS, interval, next_id)
        next_id += interval
        jp.add_predictions(newest)
        jp.add_labels(_labels(previous, rng))
        previous = newest
        jp.flush()  # folding is the join's work either way; time the checkpoint itself
        t = time.process_time()
        whole = jp.snapshot()
        sizes["wc"].append((time.process_time() - t) * 1000)
        t = time.process_time()
        delta = jp.checkpoint(whole=False)
        sizes["dc"].append((time.process_time() - t) * 1000)
        sizes["wb"].append(len(whole))
        sizes["db"].append(len(delta))
        t = time.perf_counter()
        store.save(f"{name}/whole", whole, r)
        sizes["ws"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        assert store.save_delta(name, delta, r)
        sizes["ds"].append((time.perf_counter() - t) * 1000)
    open_slices = len(jp._slices)
    wb, db = statistics.median(sizes["wb"]), statistics.median(sizes["db"])
    return [
        f"{windows} | {open_slices:,} | {wb / 1e6:.2f} MB | {db / 1e6:.3f} MB ({db / wb:.3f}) | "
        f"{_ms(sizes['wc'])} | {_ms(sizes['dc'])} | {_ms(sizes['ws'])} | {_ms(sizes['ds'])}"
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 8, 32], help="open windows")
    parser.add_argument("--per-window", type=int, default=5_000, help="predictions per open window")
    parser.add_argument("--interval", type=int, default=2_000,
                        help="predictions (and as many labels) per checkpoint interval")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print("open windows | open slices | whole bytes | delta bytes (ratio) | whole CPU ms | "
          "delta CPU ms | whole SQL write ms | delta SQL write ms")
    print("|".join(["---"] * 8))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'store.sqlite'}"
        upgrade(url)
        store = CheckpointStore(url, max_deltas=10**6)
        try:
            for windows in args.windows:
                for row in measure(windows, args.per_window, args.interval, args.rounds, store):
                    print(row, flush=True)
        finally:
            store.close()


if __name__ == "__main__":
    main()
