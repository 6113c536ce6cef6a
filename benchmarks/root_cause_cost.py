"""Per-event cost of the multivariate moment sketch, as a ratio to the fold it would join.

Why: issue 17 allows no per-event work proportional to segments x features beyond what the
scale issue allows. The reconstruction-error aggregate adds, per event and slice, an encoding
of ``d`` features and ``d (d + 1) / 2`` products folded into exact sums. The baseline, in the
same process and interleaved round by round, is what a slice already does with the same batch:
``WindowAggregate.add_predictions`` (one sketch per feature, bottom-k samples, exact sums).

The same baseline prices ingest's schema-change check (``column_schema_changes``) on the
batch's columns, which ingest builds anyway, against a reference schema of the same features.

    .venv/bin/python benchmarks/root_cause_cost.py [--rows 16384] [--features 8 20] [--rounds 7]

``--join`` measures what the wired sketch costs where it runs: the same prediction events
through ``JoinPartition`` (blocks of 500, flushed into every slice) for a model with and without
``multivariate: true``, both with the same reference profile, interleaved round by round, in CPU
time of this process; the ratio is the whole join's cost with moments over without:

    .venv/bin/python benchmarks/root_cause_cost.py --join [--events 50000] [--features 8 20]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import numpy as np

from driftline.detectors.aggregates import AggregateSpec, WindowAggregate, feature_columns
from driftline.detectors.hashing import stable_keys
from driftline.detectors.integration import column_schema_changes
from driftline.detectors.multivariate import fit_reconstruction
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import PredictionEvent
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.join import JoinPartition


def _rows(rng: np.random.Generator, n: int, d: int) -> list[dict[str, object]]:
    numeric = d - d // 4
    out = []
    x = rng.normal(size=(n, numeric))
    cats = rng.choice(["a", "b", "c", "d", "e"], size=(n, d - numeric))
    for i in range(n):
        row: dict[str, object] = {f"n{j}": float(x[i, j]) for j in range(numeric)}
        row.update({f"c{j}": str(cats[i, j]) for j in range(d - numeric)})
        out.append(row)
    return out


def _time(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(rows: int, d: int, rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    ref_rows = _rows(rng, 5000, d)
    names = sorted(ref_rows[0])
    kinds = {f: ("numeric" if f.startswith("n") else "categorical") for f in names}
    model = fit_reconstruction(
        {
            f: np.array([r[f] for r in ref_rows], dtype=object if kinds[f] == "categorical" else np.float64)
            for f in names
        },
        kinds,
    )  # type: ignore[arg-type]
    batch = _rows(rng, rows, d)
    columns = feature_columns(batch)
    idx = np.arange(rows)
    keys = stable_keys([str(i) for i in range(rows)])
    preds = np.array(["1", "0"] * (rows // 2), dtype=object)
    scores = rng.random(rows)
    spec = AggregateSpec(
        numeric_edges={f: np.linspace(-3, 3, 11) for f in names if kinds[f] == "numeric"},
        categories={f: ["a", "b", "c", "d", "e"] for f in names if kinds[f] == "categorical"},
        sample_size=2000,
    )

    def fold() -> None:
        WindowAggregate(spec).add_predictions(columns, idx, keys, preds, scores)

    def moments() -> None:
        model.new_sketch().update(model.encode_columns(columns, idx))

    types = {"numeric": frozenset({"number"}), "categorical": frozenset({"string", "boolean"})}
    expected = {f: types[kinds[f]] for f in names}
    starts = np.zeros(rows, dtype=np.int64)

    def schema() -> None:
        assert column_schema_changes(expected, columns, batch, starts, lambda i: i) == []

    base, extra, check = [], [], []
    for _ in range(rounds):  # interleaved, so load on the shared box hits all alike
        base.append(_time(fold))
        extra.append(_time(moments))
        check.append(_time(schema))
    ratios = [e / b for e, b in zip(extra, base, strict=True)]
    schema_ratios = [c / b for c, b in zip(check, base, strict=True)]
    return {
        "schema_us_per_event": statistics.median(check) / rows * 1e6,
        "schema_ratio_median": statistics.median(schema_ratios),
        "schema_ratio_max": max(schema_ratios),
        "fold_us_per_event": statistics.median(base) / rows * 1e6,
        "moments_us_per_event": statistics.median(extra) / rows * 1e6,
        "ratio_min": min(ratios),
        "ratio_median": statistics.median(ratios),
        "ratio_max": max(ratios),
    }


_DIMS = (("channel", ("web", "ios", "android")), ("region", ("eu", "us", "apac")), ("tier", ("a", "b", "c")))


def _events(rng: np.random.Generator, n: int, d: int, dims: int, t0: int) -> list[PredictionEvent]:
    rows = _rows(rng, n, d)
    seg = rng.integers(0, 3, size=(n, dims)).tolist()
    return [
        PredictionEvent(
            prediction_id=f"{t0}-{i}",
            model_id="m",
            timestamp=t0 + i * 10,  # 100 events/s: 50k events span 9 windows of a minute
            features=row,
            prediction=int(i % 2),
            score=0.5,
            segments={_DIMS[k][0]: _DIMS[k][1][v] for k, v in enumerate(seg[i])},
        )
        for i, row in enumerate(rows)
    ]


def measure_join(events: int, d: int, dims: int, rounds: int) -> dict[str, float]:
    """The join's CPU time per event with moments over without (same events, same profile)."""
    rng = np.random.default_rng(1)
    t0 = 1_767_225_600_000
    reference = [
        {"features": dict(e.features), "prediction": e.prediction, "segments": dict(e.segments)}
        for e in _events(rng, 5000, d, dims, t0 - 10**8)
    ]
    stream = _events(rng, events, d, dims, t0)
    catalogs = {}
    for on in (False, True):
        cfg = ModelConfig(window_ms=60_000, grace_ms=1_000, label_horizon_ms=2_000, multivariate=on)
        profiles = build_profiles(reference, "m", cfg)
        catalogs[on] = ModelCatalog(Config(defaults=cfg, models={"m": cfg}), profiles)

    def run(on: bool) -> float:
        jp = JoinPartition(0, catalogs[on], prediction_sources=["p"], label_sources=["l"])
        gc.collect()
        t = time.process_time()
        for start in range(0, len(stream), 500):
            jp.add_predictions(stream[start : start + 500])
        jp.flush()
        return time.process_time() - t

    off, on = [], []
    for r in range(rounds):
        for flag in ((False, True) if r % 2 == 0 else (True, False)):
            (on if flag else off).append(run(flag))
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    return {
        "off_us_per_event": statistics.median(off) / events * 1e6,
        "on_us_per_event": statistics.median(on) / events * 1e6,
        "ratio_min": min(ratios),
        "ratio_median": statistics.median(ratios),
        "ratio_max": max(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16_384)
    parser.add_argument("--features", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--join", action="store_true", help="the join with and without multivariate")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--dimensions", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    if args.join:
        print("| features | segment dimensions | join µs/event without | with moments | with / without "
              "(min, median, max) |")
        print("|---:|---:|---:|---:|---|")
        for d in args.features:
            for dims in args.dimensions:
                m = measure_join(args.events, d, dims, args.rounds)
                print(
                    f"| {d} | {dims} | {m['off_us_per_event']:.2f} | {m['on_us_per_event']:.2f} | "
                    f"{m['ratio_min']:.2f}, {m['ratio_median']:.2f}, {m['ratio_max']:.2f} |"
                )
        return
    print("| features | fold µs/event | moments µs/event | moments / fold (min, median, max) |")
    print("|---:|---:|---:|---|")
    found = [(d, measure(args.rows, d, args.rounds)) for d in args.features]
    for d, m in found:
        print(
            f"| {d} | {m['fold_us_per_event']:.2f} | {m['moments_us_per_event']:.2f} | "
            f"{m['ratio_min']:.2f}, {m['ratio_median']:.2f}, {m['ratio_max']:.2f} |"
        )
    print()
    print("| features | schema check µs/event | schema check / fold (median, max) |")
    print("|---:|---:|---|")
    for d, m in found:
        ratios = f"{m['schema_ratio_median']:.3f}, {m['schema_ratio_max']:.3f}"
        print(f"| {d} | {m['schema_us_per_event']:.3f} | {ratios} |")


if __name__ == "__main__":
    main()
