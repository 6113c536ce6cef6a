"""Worker RSS over a day of events for 10 models x 50 features, at two window sizes.

Why: window aggregates are sketches bounded by the number of features (bottom-k samples, fixed
bins, capped categories), never by the number of events, so a 1 h window must not cost more
memory than a 5 min one. The day is scaled down in events (``--events``) but keeps its 24 h
event-time span, so the number of windows opened and closed is the real one.

RSS is sampled from ``/proc/<pid>/status`` every 100 ms while the worker runs; the table shows
the started-but-idle baseline and the peak.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from confluent_kafka import Producer
from throughput import (
    broker,
    prefix_of,
    rss_mb,
    run_worker,
    send_end_of_input,
    wait_end_of_results,
    write_config,
)

from driftline.detectors.aggregates import (
    AggregateSpec,
    WindowAggregate,
    feature_columns,
    fold_outcomes,
    fold_predictions,
)
from driftline.detectors.hashing import stable_keys
from driftline.platform.kafka import KafkaSettings, confluent_config
from driftline.streams.producer import DriftlineProducer

MODELS = 10
FEATURES = 50
DAY_MS = 86_400_000
T0 = 1_767_225_600_000
SLICE = 100  # events produced (and flushed) at a time
TOPICS = {"predictions": 6, "ground_truth": 6, "join": 6, "partials": 2, "results": 1}


def _day(n: int, seed: int = 3) -> tuple[list[dict], list[dict]]:
    """``n`` predictions spread evenly over 24 h, round-robin over models, with labels."""
    rng = np.random.default_rng(seed)
    ts = T0 + (np.arange(n) * (DAY_MS // n)).astype(np.int64)
    x = rng.normal(0.0, 1.0, (n, FEATURES)).round(4)
    names = [f"f{j:02d}" for j in range(FEATURES)]
    predictions, labels = [], []
    for i in range(n):
        model = f"model-{i % MODELS}"
        pid = f"m{i:08d}"
        features = dict(zip(names, x[i].tolist(), strict=True))
        predictions.append(
            {
                "prediction_id": pid,
                "model_id": model,
                "timestamp": int(ts[i]),
                "features": features,
                "prediction": int(x[i, 0] > 0),
                "score": float(1 / (1 + np.exp(-x[i, 0]))),
            }
        )
        labels.append(
            {
                "prediction_id": pid,
                "model_id": model,
                "label": int(x[i, 1] > 0),
                "timestamp": int(ts[i]) + 1000,
            }
        )
    return predictions, labels


def peak_rss(settings: KafkaSettings, n: int, window: str, directory: Path) -> tuple[float, float, float]:
    """(baseline MB, peak MB, seconds) of one worker over the day at ``window``."""
    predictions, labels = _day(n)
    # The producer batches per (model, partition), so within a slice of SLICE events the
    # messages of one partition are out of event-time order by up to the slice's span (29 min
    # of the compressed day at 5,000 events); the grace covers it, or most predictions would be
    # dropped as late and the benchmark would measure the windows it did not open.
    config = write_config(
        settings, directory, TOPICS, defaults={"window": window, "grace": "1h", "label_horizon": "1h"}
    )
    prefix = prefix_of(config)
    samples: list[float] = []
    with run_worker(settings, config) as run:
        baseline = rss_mb(run.process.pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                samples.append(rss_mb(run.process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        with DriftlineProducer(settings, topic_prefix=prefix) as producer:
            # labels follow their predictions closely, as a live label stream would
            for i in range(0, n, SLICE):
                for event in predictions[i : i + SLICE]:
                    producer.send_prediction(event)
                for event in labels[i : i + SLICE]:
                    producer.send_ground_truth(event)
                producer.flush()
        end_producer = Producer(confluent_config(settings))
        send_end_of_input(end_producer, prefix, TOPICS["predictions"])
        end_producer.flush(30)
        end = wait_end_of_results(settings, prefix, TOPICS["partials"], timeout=900)
        stop.set()
        sampler.join()
    return baseline, max(samples), end - start


def run(quick: bool) -> list[tuple[str, str, str]]:
    n = 5_000 if quick else 20_000
    rows = []
    with broker() as settings, tempfile.TemporaryDirectory() as tmp:
        for window in ("5m", "1h"):
            d = Path(tmp) / window
            d.mkdir()
            baseline, peak, seconds = peak_rss(settings, n, window, d)
            rows.append(
                (
                    f"worker RSS, {MODELS} models x {FEATURES} features, {n:,} events/24 h, {window} windows",
                    f"peak {peak:,.0f} MB",
                    f"baseline {baseline:,.0f} MB, +{peak - baseline:,.0f} MB, {n / seconds:,.0f} pred/s",
                )
            )
    return rows


def window_bytes(features: int, events: int, slices: int = 200) -> tuple[float, float]:
    """(bytes per open window slice with no feature, bytes per numeric feature per open window
    slice) of ``slices`` binary-model aggregates, each folded ``events`` predictions with
    their labels, as the join holds them (tracemalloc: Python and numpy allocations alike)."""
    spec = AggregateSpec(sample_size=1000)
    rng = np.random.default_rng(5)
    names = [f"f{j:02d}" for j in range(features)]
    x = rng.normal(0.0, 1.0, (events, features))
    columns = feature_columns([dict(zip(names, row, strict=True)) for row in x.tolist()])
    keys = stable_keys([f"p{i}" for i in range(events)])
    predictions = np.array([str(int(v > 0)) for v in x[:, 0]], dtype=object)
    scores = 1.0 / (1.0 + np.exp(-x[:, 0]))
    labels = np.array([str(int(v > 0)) for v in rng.normal(size=events)], dtype=object)
    times = np.arange(events, dtype=np.float64)
    rows = np.arange(events)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    aggregates = [WindowAggregate(spec) for _ in range(slices)]
    empty = tracemalloc.get_traced_memory()[0]
    for agg in aggregates:
        fold_predictions([(agg, rows)], columns, keys, predictions, scores)
        fold_outcomes([(agg, rows)], predictions, labels, scores, keys, times)
    full = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del aggregates
    fixed = (empty - base) / slices
    return fixed, (full - empty) / slices / max(features, 1)


def per_window(features: int) -> list[str]:
    lines = [f"Memory of open window slices, in process (binary model, {features} numeric features, "
             "sample_size 1000, no reference profile)", "",
             "| events per window slice | bytes per slice (fixed parts, empty) "
             "| bytes per numeric feature per slice, filled |", "|---|---|---|"]
    for events in (10, 100, 1000, 10_000):
        fixed, per_feature = window_bytes(features, events)
        lines.append(f"| {events:,} | {fixed:,.0f} | {per_feature:,.0f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--per-window", action="store_true",
                        help="only the bytes per open window slice and per feature, in process (seconds)")
    parser.add_argument("--features", type=int, default=20, help="numeric features (--per-window)")
    args = parser.parse_args(argv)
    if args.per_window:
        print("\n".join(per_window(args.features)))
        return
    for row in run(args.quick):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
