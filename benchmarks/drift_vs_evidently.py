"""Drift of 20 features x 100k rows: driftline's window pipeline vs Evidently's DataDriftPreset.

driftline does what the stream does for one window: hash the event ids, fold the rows into one
sketch per feature in batches (as the join folds them: it holds joined events back and folds
up to ``FLUSH_EVENTS`` at once; ``--batch 1000`` folds per decoded message instead), then run
each feature's default test against a reference profile that was built once, offline.
Evidently gets both raw DataFrames and its default preset (it re-reads the whole reference on
every run: that is its design).
Interleaved in one run (ours, Evidently, ours, Evidently, ...: ``--rounds`` of each), so a
shared machine that slows down mid-run slows both alike; reported: the wall time of each side
per round (median) and the ratio Evidently / driftline per round, min / median / max.

    .venv/bin/python benchmarks/drift_vs_evidently.py [--rows 100000] [--batch 16384] [--rounds 5]

Evidently is optional (``pip install evidently "pandas<3"``); without it only our time prints.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from driftline.detectors import drift
from driftline.detectors.hashing import stable_keys
from driftline.detectors.sketches import CategoricalSketch, NumericSketch
from driftline.streams.join import FLUSH_EVENTS

N_NUMERIC, N_CATEGORICAL = 12, 8
WINDOW_SAMPLE, REFERENCE_SAMPLE = 2000, 5000


def make_data(rows: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for i in range(N_NUMERIC):
        data[f"num_{i}"] = g.normal(i, 1.0 + i / 4, rows) + (shift if i == 0 else 0.0)
    for i in range(N_CATEGORICAL):
        cats = np.array([f"c{i}_{k}" for k in range(3 + i)], dtype=object)
        data[f"cat_{i}"] = cats[g.integers(0, cats.size, rows)]
    return data


def build_reference(data: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray] | dict[str, int]]:
    rows = next(iter(data.values())).size
    keys = stable_keys([f"ref-{i}" for i in range(rows)])
    ref: dict[str, tuple[np.ndarray, np.ndarray] | dict[str, int]] = {}
    for name, x in data.items():
        if name.startswith("num_"):
            edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, 11)))
            sk = NumericSketch(edges, REFERENCE_SAMPLE)
            sk.update(x, keys)
            ref[name] = (edges, sk.sample_values)
        else:
            ck = CategoricalSketch(max_categories=rows)
            ck.update(x)
            ref[name] = dict(ck.counts)
    return ref


def ours(data: dict[str, np.ndarray], ref: dict, batch: int) -> list[drift.DriftResult]:
    rows = next(iter(data.values())).size
    numeric = {n: NumericSketch(r[0], WINDOW_SAMPLE) for n, r in ref.items() if isinstance(r, tuple)}
    categorical = {n: CategoricalSketch(list(r)) for n, r in ref.items() if isinstance(r, dict)}
    for start in range(0, rows, batch):
        stop = min(rows, start + batch)
        keys = stable_keys([f"cur-{i}" for i in range(start, stop)])
        for name, sk in numeric.items():
            sk.update(data[name][start:stop], keys)
        for name, ck in categorical.items():
            ck.update(data[name][start:stop])
    results = []
    for name, sk in numeric.items():
        sample = ref[name][1]
        test = drift.choose_test("numeric", sample.size, sk.sample_values.size)
        results.append(drift.run_test(test, sample, sk.sample_values, feature=name))
    for name, ck in categorical.items():
        _, r, c = drift.align_counts(ref[name], ck.counts)
        test = drift.choose_test("binary" if r.size == 2 else "categorical", int(r.sum()), int(c.sum()))
        results.append(drift.run_test(test, r, c, feature=name))
    return drift.correct(results, "bh")


def evidently_runner(reference: dict[str, np.ndarray], current: dict[str, np.ndarray]) -> Callable[[], int]:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=[c for c in current if c.startswith("num_")],
                                categorical_columns=[c for c in current if c.startswith("cat_")])
    ref_df, cur_df = pd.DataFrame(reference), pd.DataFrame(current)

    def run() -> int:
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(cur_df, data_definition=definition),
            Dataset.from_pandas(ref_df, data_definition=definition))
        first = snapshot.dict()["metrics"][0]["value"]  # DriftedColumnsCount
        return int(first["count"])

    return run


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=FLUSH_EVENTS,
                    help="events per sketch update (default: a join flush)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved runs of each side")
    args = ap.parse_args()
    reference = make_data(args.rows, seed=1)
    current = make_data(args.rows, seed=2, shift=0.2)

    t_ref, ref = timed(lambda: build_reference(reference))
    try:
        run = evidently_runner(reference, current)
    except ImportError:
        run = None
    ours_s: list[float] = []
    theirs_s: list[float] = []
    drifted = n_ev = 0
    for _ in range(args.rounds):
        t, results = timed(lambda: ours(current, ref, args.batch))  # type: ignore[arg-type]
        ours_s.append(t)
        drifted = sum(r.drifted for r in results)  # type: ignore[union-attr]
        if run is not None:
            t, got = timed(run)
            theirs_s.append(t)
            n_ev = int(got)  # type: ignore[call-overload]
    print(f"{N_NUMERIC + N_CATEGORICAL} features x {args.rows:,} rows (batches of {args.batch}), "
          f"{args.rounds} interleaved rounds; wall seconds, median of the rounds\n")
    print("| pipeline | seconds (median) | verdict |")
    print("|---|---|---|")
    print(f"| driftline: reference profile (once, offline) | {t_ref:.3f} | |")
    mid = statistics.median(ours_s)
    print(f"| driftline: sketches + tests (per window) | {mid:.3f} | {drifted} drifted |")
    if run is None:
        print("\nevidently not installed (pip install evidently 'pandas<3'): no comparison")
        return
    print(f"| Evidently DataDriftPreset | {statistics.median(theirs_s):.3f} | {n_ev} drifted |")
    ratios = sorted(e / o for e, o in zip(theirs_s, ours_s, strict=True))
    print(f"\nratio Evidently / driftline per round (min / median / max): {ratios[0]:.1f} / "
          f"{statistics.median(ratios):.1f} / {ratios[-1]:.1f}x")


if __name__ == "__main__":
    main()
