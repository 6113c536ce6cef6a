"""Drift of 20 features x 100k rows: driftline's window pipeline vs Evidently's DataDriftPreset.

driftline does what the stream does for one window: hash the event ids, fold the rows into one
sketch per feature in batches (as decoded from Kafka), then run each feature's default test
against a reference profile that was built once, offline. Evidently gets both raw DataFrames
and its default preset (it re-reads the whole reference on every run: that is its design).
Reported: best wall time of ``--repeat`` runs each, and the ratio.

    .venv/bin/python benchmarks/drift_vs_evidently.py [--rows 100000] [--batch 1000] [--repeat 3]

Evidently is optional (``pip install evidently "pandas<3"``); without it only our time prints.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from driftline.detectors import drift
from driftline.detectors.hashing import stable_keys
from driftline.detectors.sketches import CategoricalSketch, NumericSketch

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


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000, help="events per sketch update (a decoded batch)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    reference = make_data(args.rows, seed=1)
    current = make_data(args.rows, seed=2, shift=0.2)

    t_ref, ref = best_of(lambda: build_reference(reference), 1)
    t_ours, results = best_of(lambda: ours(current, ref, args.batch), args.repeat)  # type: ignore[arg-type]
    drifted = sum(r.drifted for r in results)  # type: ignore[union-attr]
    rows = [("driftline: reference profile (once, offline)", t_ref, ""),
            ("driftline: sketches + tests (per window)", t_ours, f"{drifted} drifted")]
    try:
        run = evidently_runner(reference, current)
    except ImportError:
        run = None
    if run is not None:
        t_ev, n_ev = best_of(run, args.repeat)
        rows.append(("evidently DataDriftPreset", t_ev, f"{n_ev} drifted"))
    print(f"{N_NUMERIC + N_CATEGORICAL} features x {args.rows} rows (batches of {args.batch}), "
          f"best of {args.repeat}")
    print(f"{'pipeline':48} {'seconds':>9}  verdict")
    for name, t, verdict in rows:
        print(f"{name:48} {t:9.3f}  {verdict}")
    if run is None:
        print("evidently not installed (pip install evidently 'pandas<3'): no comparison")
    else:
        print(f"ratio evidently / driftline per window: {rows[2][1] / t_ours:.1f}x")


if __name__ == "__main__":
    main()
