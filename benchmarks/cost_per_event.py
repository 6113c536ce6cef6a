"""Cost per event as a deployment grows: features, segment dimensions, models.

Why: what users grow is the number of features, the segment dimensions they slice by and the
number of models; the cost per event should grow linearly in features and stay flat in the
other two. This runs the worker's pure stages in process (``Router`` -> ``JoinPartition``,
and with ``--merge`` also ``WindowMerger`` with the evaluation, see ``pipeline.py``) on the same
simulated traffic reshaped per case, and reports each case's cost per event as a ratio to the
1-model, 1-dimension, 4-feature case *of the same round*, in CPU time of this process
(``time.process_time``: on a shared machine other processes inflate wall time by up to 4x
between consecutive cases, CPU time much less). Rounds interleave every case (the order
rotates per round), so a machine that slows down mid-run slows all cases alike; the table gives
min/median/max of the ratio over the rounds.

    .venv/bin/python benchmarks/cost_per_event.py            # 100k events, 3 rounds
    .venv/bin/python benchmarks/cost_per_event.py --events 1000000 --rounds 3 [--merge]

Events are predictions plus their labels (every prediction is labelled). Segment dimensions
have 3 values each (3 dimensions: 27 combinations); models share the traffic round robin, so
with 100 models each one sees a hundredth of it, as in a real fleet.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import PARTITIONS, encode_traffic, run_pipeline

from driftline.apps.simulate import Traffic, simulate

__all__ = ["CASES", "Case", "case_messages"]


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    features: int
    dimensions: int
    models: int
    #: every prediction carries ``attributions`` for every feature (issue 17): their extra
    #: cost per event is this case's ratio over the same case without
    attributions: bool = False


BASELINE = Case("1 model, 1 dimension, 4 features (baseline)", 4, 1, 1)
CASES = (
    BASELINE,
    Case("20 features", 20, 1, 1),
    Case("100 features", 100, 1, 1),
    Case("0 segment dimensions", 4, 0, 1),
    Case("3 segment dimensions (27 combinations)", 4, 3, 1),
    Case("10 models", 4, 1, 10),
    Case("100 models", 4, 1, 100),
    Case("4 features, with attributions", 4, 1, 1, attributions=True),
    Case("20 features, with attributions", 20, 1, 1, attributions=True),
)
_EXTRA_DIMENSIONS = (("region", ("eu", "us", "apac")), ("tier", ("free", "pro", "team")))


def case_traffic(case: Case, n: int, rate: float = 100.0) -> Traffic:
    """The simulator's traffic (4 features, segments by ``channel``), reshaped to ``case``:
    extra numeric features, 0 to 3 segment dimensions, models round robin. ``rate`` is
    predictions per second of event time: what sets the events per model per window, hence
    how far the per-slice fixed costs are shared (``--events`` alone only adds windows)."""
    base = simulate(n, events_per_s=rate, label_delay_ms=5_000, seed=1, attributions=case.attributions)
    rng = np.random.default_rng(7)
    extra = np.round(rng.normal(0.0, 1.0, (n, max(case.features - 4, 0))), 6).tolist()
    dims = rng.integers(0, 3, (n, len(_EXTRA_DIMENSIONS))).tolist()
    model_of = {}
    for i, row in enumerate(base.predictions):
        model = "fraud-detector" if case.models == 1 else f"model-{i % case.models:03d}"
        model_of[row["prediction_id"]] = model
        row["model_id"] = model
        if extra[i]:
            row["features"].update({f"f{j:03d}": v for j, v in enumerate(extra[i])})
            if case.attributions:
                row["attributions"].update({f"f{j:03d}": 0.1 * v for j, v in enumerate(extra[i])})
        if case.dimensions == 0:
            row["segments"] = {}
        else:  # channel, then region and tier as far as asked
            extra_dims = _EXTRA_DIMENSIONS[: case.dimensions - 1]
            for (dim, values), k in zip(extra_dims, dims[i][: len(extra_dims)], strict=True):
                row["segments"][dim] = values[k]
    for row in base.labels:
        row["model_id"] = model_of[row["prediction_id"]]
    return base


def case_messages(
    case: Case, n: int, batch: int, rate: float = 100.0, partitions: int = PARTITIONS
) -> tuple[list[tuple[str, int, int, bytes]], int]:
    traffic = case_traffic(case, n, rate)
    return encode_traffic(traffic, batch, partitions), len(traffic.predictions) + len(traffic.labels)


def measure(
    messages: Sequence[tuple[str, int, int, bytes]], merge: bool, partitions: int = PARTITIONS
) -> dict[str, float]:
    gc.collect()
    timing = run_pipeline(messages, merge=merge, clock=time.process_time, partitions=partitions)["timing"]
    stream = timing["ingest"] + timing["join"]
    return {"stream": stream, "join": timing["join"], "merge": timing.get("merge", 0.0)}


def _mmm(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000,
                        help="predictions per case (plus as many labels)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--merge", action="store_true", help="also time the merge and window evaluation")
    parser.add_argument("--only", nargs="*", help="case names to run (with the baseline)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="predictions per second of event time (events per window per model)")
    parser.add_argument("--partitions", type=int, default=PARTITIONS,
                        help="input and join partitions: each holds its own part of every open slice")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c is BASELINE or any(o in c.name for o in args.only)]
    prepared = {}
    for case in cases:
        prepared[case] = case_messages(case, args.events, args.batch, args.rate, args.partitions)
    results: dict[Case, list[dict[str, float]]] = {c: [] for c in cases}
    for r in range(args.rounds):
        order = cases[r % len(cases):] + cases[: r % len(cases)]
        for case in order:
            messages, _ = prepared[case]
            results[case].append(measure(messages, args.merge, args.partitions))
        print(f"round {r + 1}: " + ", ".join(
            f"{c.name.split(' (')[0]} {results[c][-1]['stream']:.2f}s" for c in cases), file=sys.stderr)
    print(f"\n{args.events:,} predictions and their labels per case at {args.rate:g}/s of event time, "
          f"{args.partitions} partitions, {args.rounds} interleaved rounds; "
          f"Python {platform.python_version()}, {platform.machine()}\n")
    head = ("| case | CPU µs per event (ingest + join), median "
            "| ratio to baseline (min / median / max) | join alone: ratio |")
    if args.merge:
        head += " merge + evaluation, s (median) |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for case in cases:
        n = prepared[case][1]
        per_round = results[case]
        ratios = [x["stream"] / b["stream"] for x, b in zip(per_round, results[BASELINE], strict=True)]
        join_ratios = [x["join"] / b["join"] for x, b in zip(per_round, results[BASELINE], strict=True)]
        us = statistics.median(x["stream"] for x in per_round) / n * 1e6
        row = f"| {case.name} | {us:.2f} | {_mmm(ratios)} | {_mmm(join_ratios)} |"
        if args.merge:
            row += f" {statistics.median(x['merge'] for x in per_round):.2f} |"
        print(row)


if __name__ == "__main__":
    main()
