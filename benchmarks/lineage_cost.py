"""What the optional ``registry`` field of prediction events costs ingest's column building.

Why: events that carry no ``registry`` (the common case) must not pay for the feature; events
that carry one pay a dictionary encoding. This times ``PredictionBlock.from_events`` (the
per-event work ingest does after decoding) on the same simulated batch in three cases, as
ratios to a baseline interleaved in the same rounds: ``from_events`` with the registry scan
switched off (the code before event lineage). Rounds rotate the order; CPU time of this
process (``time.process_time``); the table gives min/median/max of each ratio.

    .venv/bin/python benchmarks/lineage_cost.py              # 4096-event batches, 200 rounds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from driftline.apps.simulate import simulate
from driftline.schemas import PredictionEvent, Registry
from driftline.streams import columns


def _events(n: int, registry: Registry | None) -> list[PredictionEvent]:
    traffic = simulate(n, events_per_s=100.0, seed=3)
    return [
        PredictionEvent(
            prediction_id=p["prediction_id"],
            model_id=p["model_id"],
            model_version=p["model_version"],
            timestamp=p["timestamp"],
            features=p["features"],
            prediction=p["prediction"],
            score=p.get("score"),
            segments=p.get("segments"),
            registry=registry,
        )
        for p in traffic.predictions
    ]


def _time(fn: Callable[[], object], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plain = _events(args.events, None)
    tagged = _events(args.events, Registry(name="fraud", alias="champion", run_id="0123456789abcdef"))
    label = lambda _m: "1"  # noqa: E731
    scan = columns._registries

    def baseline() -> None:
        columns._registries = lambda _events: None  # type: ignore[assignment]
        try:
            columns.PredictionBlock.from_events(plain, label)
        finally:
            columns._registries = scan

    cases: dict[str, Callable[[], object]] = {
        "baseline (no registry scan)": baseline,
        "events without registry": lambda: columns.PredictionBlock.from_events(plain, label),
        "events with registry": lambda: columns.PredictionBlock.from_events(tagged, label),
    }
    names = list(cases)
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        took = {n: _time(cases[n], args.repeat) for n in order}
        for n in names:
            ratios[n].append(took[n] / took[names[0]])
    print(f"PredictionBlock.from_events, {args.events} events x {args.repeat} per case, {args.rounds} rounds")
    print("case                          min    median  max   (ratio to the baseline of the same round)")
    for n in names:
        v = ratios[n]
        print(f"{n:<28}  {min(v):.3f}  {statistics.median(v):.3f}   {max(v):.3f}")


if __name__ == "__main__":
    main()
