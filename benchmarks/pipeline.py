"""The worker's compute, in process and without a broker: ingest -> join -> merge on one core.

Why: the end-to-end benchmark (``throughput.py``) mixes our code with Faust, the broker and the
scheduler. This one runs the same pure objects the agents call (``Router``, ``JoinPartition``,
``WindowMerger``) on the same producer-encoded messages, in log order, so a change to the hot
path shows up here in seconds, and ``--profile`` (cProfile) says where the time goes. The
baseline in the same process is what the bare consumer does per message: ``orjson.loads``.

    .venv/bin/python benchmarks/pipeline.py --events 200000 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from driftline.apps.simulate import Traffic, simulate
from driftline.detectors.hashing import partition_of
from driftline.platform.config import Config, TopicConfig
from driftline.schemas import encode_batch
from driftline.streams.catalog import ModelCatalog
from driftline.streams.evaluation import Evaluator
from driftline.streams.ingest import Router
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.messages import Partial, decode_join_input, decode_partials, encode_internal
from driftline.streams.producer import _as_struct

__all__ = ["encode_traffic", "encoded_messages", "run_pipeline"]

PARTITIONS = 6


def encoded_messages(n: int, batch: int = 500) -> list[tuple[str, int, int, bytes]]:
    """(kind, partition, offset, value) as the producer helper writes them by default: batches
    of up to ``batch`` events per input partition, grouped by the join's hash of the id."""
    return encode_traffic(simulate(n, events_per_s=100.0, label_delay_ms=5_000, seed=1), batch)


def encode_traffic(
    traffic: Traffic, batch: int = 500, partitions: int = PARTITIONS
) -> list[tuple[str, int, int, bytes]]:
    """``traffic`` as :func:`encoded_messages` writes it (per input partition, in order)."""
    out: list[tuple[str, int, int, bytes]] = []
    for kind, rows in (("predictions", traffic.predictions), ("ground_truth", traffic.labels)):
        buffers: dict[int, list[Any]] = defaultdict(list)
        offsets: dict[int, int] = defaultdict(int)
        for row in rows:
            p = partition_of(row["prediction_id"], partitions)
            buffers[p].append(_as_struct(kind, row))  # type: ignore[arg-type]
            if len(buffers[p]) == batch or row is rows[-1]:
                for q in [q for q, b in buffers.items() if len(b) == batch or row is rows[-1]]:
                    if buffers[q]:
                        out.append((kind, q, offsets[q], encode_batch(buffers[q], kind)))
                        offsets[q] += 1
                        buffers[q] = []
    return out


def _config(partitions: int) -> Config:
    topics = TopicConfig(predictions=partitions, ground_truth=partitions, join=partitions, partials=1)
    return Config(topics=topics, max_future_skew_ms=10**15)


def run_pipeline(
    messages: Sequence[tuple[str, int, int, bytes]],
    *,
    merge: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    partitions: int = PARTITIONS,
) -> dict[str, Any]:
    """Run every stage over ``messages`` (the merge and evaluation only with ``merge``);
    returns counts and the seconds each stage took on ``clock`` (wall time by default;
    ``time.process_time`` for CPU time, which other processes on a shared machine disturb less).
    ``partitions`` must be what ``messages`` were encoded for (input and join partitions)."""
    config = _config(partitions)
    catalog = ModelCatalog(config)
    router = Router(config, catalog, partitions)
    topics = config.topics
    pred_sources = [f"{topics.name('predictions')}:{p}" for p in range(partitions)]
    label_sources = [f"{topics.name('ground-truth')}:{p}" for p in range(partitions)]
    joins = [
        JoinPartition(p, catalog, prediction_sources=pred_sources, label_sources=label_sources)
        for p in range(partitions)
    ]
    merger = WindowMerger(catalog, Evaluator(catalog), partitions)
    timing: dict[str, float] = defaultdict(float)
    join_log: list[list[bytes]] = [[] for _ in range(partitions)]
    t0 = clock()
    for kind, p, offset, value in messages:
        topic = topics.name("predictions" if kind == "predictions" else "ground-truth")
        for record in router.route(kind, value, topic, p, offset, wall_ms=0):  # type: ignore[arg-type]
            if record.partition is not None and record.topic == router.join_topic:
                join_log[record.partition].append(record.value or b"")
    for kind, topic in (("predictions", "predictions"), ("ground_truth", "ground-truth")):
        for p in range(partitions):
            for record in router.route(kind, None, topics.name(topic), p, 0,  # type: ignore[arg-type]
                                       [("driftline-control", b"end-of-input")]):
                join_log[record.partition or 0].append(record.value or b"")
    timing["ingest"] = clock() - t0
    partials: list[bytes] = []
    t0 = clock()
    for jp, log in zip(joins, join_log, strict=True):
        for offset, value in enumerate(log):
            jp.next_offset = offset
            out = jp.apply(decode_join_input(value))
            partials.extend(encode_internal(x) for x in out)
            partials.append(encode_internal(jp.progress()))
    timing["join"] = clock() - t0
    if not merge:
        return {"timing": dict(timing), "evaluations": 0, "partials": len(partials), "counters": {}}
    t0 = clock()
    windows = 0
    for value in partials:
        windows += len(merger.add(decode_partials(value)).evaluations)
    timing["merge"] = clock() - t0
    n_partials = sum(1 for v in partials if isinstance(decode_partials(v), Partial))
    return {"timing": dict(timing), "evaluations": windows, "partials": n_partials,
            "counters": merger.counters}


def bare_decode(messages: Sequence[tuple[str, int, int, bytes]]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = sum(len(orjson.loads(v)["events"]) for _, _, _, v in messages)
    return n, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    messages = encoded_messages(args.events, args.batch)
    n, bare_s = bare_decode(messages)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    result = run_pipeline(messages)
    if profiler:
        profiler.disable()
    total = sum(result["timing"].values())
    print(f"events {n:,}  bare orjson {n / bare_s:,.0f}/s  pipeline {n / total:,.0f}/s  "
          f"ratio {bare_s / total:.3f}")
    print("  ".join(f"{k} {v:.2f}s" for k, v in result["timing"].items()),
          f"evaluations {result['evaluations']} partials {result['partials']}")
    print(result["counters"])
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
