"""Seconds per closed window slice: evaluation batched per close against one slice at a time.

Why: a watermark advance closes one window of every model at once (issue 15). The merger hands
the whole close to ``Evaluator.evaluate_close``, which computes every slice's KS p-values in one
vectorised scipy call and shares per-close work; before, each slice was prepared and judged on
its own. This records the closes the merger makes on the ``cost_per_event.py`` traffic at 1, 10
and 100 models (the same events round robin over the models), then replays each close through a
fresh evaluator both ways, interleaved per round (the order alternates), in CPU time of this
process, and checks that both ways give the same results and alerts, byte for byte.

    .venv/bin/python benchmarks/evaluation_cost.py                 # 100k events, 3 rounds
    .venv/bin/python benchmarks/evaluation_cost.py --events 20000 --rounds 2 --models 1 10

Only evaluation is timed (not merging the partials, which is the same both ways).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline
from cost_per_event import Case, case_messages

from driftline.streams.catalog import ModelCatalog
from driftline.streams.evaluation import ClosedSlice, Evaluation, Evaluator

Close = list[ClosedSlice]


def record_closes(models: int, events: int) -> list[Close]:
    """The closes the merger makes on the case's traffic, each the slices it handed over."""
    closes: list[Close] = []

    class Recording(Evaluator):
        def evaluate_close(self, slices: Iterable[ClosedSlice]) -> list[Evaluation]:
            close = list(slices)
            closes.append(close)
            return super().evaluate_close(close)

    messages, _ = case_messages(Case(f"{models} models", 4, 1, models), events, 500)
    saved = pipeline.Evaluator
    pipeline.Evaluator = Recording  # type: ignore[misc]
    try:
        pipeline.run_pipeline(messages, merge=True)
    finally:
        pipeline.Evaluator = saved  # type: ignore[misc]
    return closes


def one_at_a_time(ev: Evaluator, close: Close) -> list[Evaluation]:
    """The evaluation before batching: each slice prepared alone, then its window judged."""
    out: list[Evaluation] = []
    group: list = []

    def judge() -> None:
        segments = [p for p in group if p.segment]
        out.extend(ev.judge(p, segments) for p in group)

    for s in close:
        if group and (group[0].start, group[0].model_id, group[0].model_version) != (
            s.start, s.model_id, s.model_version
        ):
            judge()
            group = []
        group.append(ev.prepare(s.model_id, s.model_version, s.segment, s.start, s.end, s.agg, s.phase,
                                judge_label_free=s.judge_label_free, positions=s.positions))
    judge()
    return out


def run(closes: Sequence[Close], batched: bool) -> tuple[float, bytes]:
    ev = Evaluator(ModelCatalog(pipeline._config()))
    gc.collect()
    out: list[Evaluation] = []
    t0 = time.process_time()
    for close in closes:
        out += ev.evaluate_close(close) if batched else one_at_a_time(ev, close)
    seconds = time.process_time() - t0
    return seconds, msgspec.json.encode([(e.result, e.alerts, e.requests) for e in out])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=int, nargs="*", default=[1, 10, 100])
    args = parser.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{args.events} events, {args.rounds} rounds, CPU seconds", flush=True)
    print("| models | slices | closes | one at a time, ms/slice (median) | batched, ms/slice (median) "
          "| batched / one at a time (min / median / max) |")
    print("|---|---|---|---|---|---|")
    for models in args.models:
        closes = record_closes(models, args.events)
        slices = sum(len(c) for c in closes)
        single: list[float] = []
        batch: list[float] = []
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            found = {}
            for batched in order:
                seconds, encoded = run(closes, batched)
                (batch if batched else single).append(seconds)
                found[batched] = encoded
            if found[True] != found[False]:
                raise SystemExit(f"{models} models: batched results differ from one at a time")
        ratios = sorted(b / s for b, s in zip(batch, single, strict=True))
        print(f"| {models} | {slices} | {len(closes)} | {1000 * statistics.median(single) / slices:.2f} "
              f"| {1000 * statistics.median(batch) / slices:.2f} "
              f"| {ratios[0]:.2f} / {statistics.median(ratios):.2f} / {ratios[-1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
