"""False alerts per 30 days and detection delays of the default drift configuration.

In process, on the pure evaluation: seeded windows are folded into window aggregates
(``WindowAggregate.add_predictions``, as the join does), and the real ``Evaluator`` judges them
with the default configuration (tests, correction, the ``dataset-drift`` rule on the per-feature
CUSUMs and its lifecycle), against a reference profile built by ``build_profiles`` as a worker builds it.

Rows:

* false alerts per model per 30 simulated days (8640 windows of 5 minutes, 1000 predictions a
  window) on a stationary stream of 4 numeric and 3 categorical features, counting every
  slice: the model alone, and with two segment dimensions (2 values each, so 5 slices), over
  several reference draws; next to it, the share of windows whose per-window verdict
  (``dataset_drift``) is set, which the CUSUMs replace as the alert;
* detection delay (windows from the first drifted one to the firing alert) of 0.1, 0.2 and
  0.5 sigma mean shifts of one numeric feature and of a category-frequency change of
  Jensen-Shannon distance 0.05, at 1000 predictions a window, over seeded trials;
* online detectors (river, default ``online_detectors``): false detections per 30 days on a
  stationary 0/1 error stream of 1000 labelled events a window;
* the estimation rows of ``benchmarks/estimation_accuracy.py`` (another part of issue 14)
  when that module is present: its ``rows()`` joins this table.

    .venv/bin/python benchmarks/detection.py [--days 30] [--trials 100] [--seed 14] [--quick]

Prints a Markdown table (committed as ``benchmarks/DETECTION.md``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import distance

from driftline.detectors.aggregates import FeatureColumns, WindowAggregate
from driftline.detectors.online import OnlineDetector
from driftline.platform.config import Config, ModelConfig
from driftline.schemas.windows import segment_key
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluator

WINDOW_MS = 300_000
WINDOWS_PER_DAY = 86_400_000 // WINDOW_MS  # 288
EVENTS = 1000
REFERENCE_ROWS = 20_000
MODEL = "bench"
DIMENSIONS = {"region": ("eu", "us"), "channel": ("web", "app")}

Sampler = Callable[[np.random.Generator, int], np.ndarray]
NUMERIC: dict[str, Sampler] = {
    "x_normal": lambda g, n: g.normal(10.0, 2.0, n),
    "x_lognormal": lambda g, n: g.lognormal(0.0, 1.0, n),
    "x_exponential": lambda g, n: g.exponential(3.0, n),
    "x_bimodal": lambda g, n: np.where(g.random(n) < 0.3, g.normal(-2, 0.5, n), g.normal(2, 1, n)),
}
CATEGORICAL: dict[str, list[float]] = {
    "c_binary": [0.7, 0.3],
    "c_three": [0.5, 0.3, 0.2],
    "c_six": [0.3, 0.2, 0.2, 0.1, 0.1, 0.1],
}
SIGMA = {"x_normal": 2.0}


def js_change(p: list[float], target: float = 0.05) -> list[float]:
    """``p`` with mass moved from its first category to its last, by bisection until the
    Jensen-Shannon distance (base 2) to ``p`` is ``target``."""
    lo, hi = 0.0, p[0]
    q = list(p)
    for _ in range(60):
        d = (lo + hi) / 2
        q = [p[0] - d, *p[1:-1], p[-1] + d]
        if distance.jensenshannon(p, q, base=2) < target:
            lo = d
        else:
            hi = d
    return q


def _categories(name: str) -> np.ndarray:
    return np.array([f"{name}_{i}" for i in range(len(CATEGORICAL[name]))], dtype=object)


def draw(g: np.random.Generator, n: int, change: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """n events' features; ``change`` maps a numeric feature to a shift (in its own units) or a
    categorical one to new probabilities."""
    change = change or {}
    out: dict[str, np.ndarray] = {}
    for name, sampler in NUMERIC.items():
        out[name] = sampler(g, n) + float(change.get(name, 0.0))
    for name, p in CATEGORICAL.items():
        probs = change.get(name, p)
        out[name] = _categories(name)[g.choice(len(p), size=n, p=probs)]
    out["prediction"] = np.where(g.random(n) < 0.4, "1", "0").astype(object)
    for dim, values in DIMENSIONS.items():
        out[dim] = np.array(values, dtype=object)[g.integers(0, len(values), n)]
    return out


def catalog(g: np.random.Generator, segmented: bool) -> ModelCatalog:
    data = draw(g, REFERENCE_ROWS)
    rows = []
    for i in range(REFERENCE_ROWS):
        row: dict[str, Any] = {
            "prediction_id": f"r{i}",
            "features": {name: (float(data[name][i]) if name in NUMERIC else str(data[name][i]))
                         for name in (*NUMERIC, *CATEGORICAL)},
            "prediction": str(data["prediction"][i]),
        }
        if segmented:
            row["segments"] = {dim: str(data[dim][i]) for dim in DIMENSIONS}
        rows.append(row)
    cfg = ModelConfig(task="binary", window_ms=WINDOW_MS)
    return ModelCatalog(Config(models={MODEL: cfg}), build_profiles(rows, MODEL, cfg))


def window_slices(
    cat: ModelCatalog, g: np.random.Generator, segmented: bool, change: Mapping[str, Any] | None = None
) -> dict[str, WindowAggregate]:
    """One window's aggregates per slice, folded as the join folds a batch."""
    data = draw(g, EVENTS, change)
    spec = cat.spec(MODEL)
    ones = np.ones(EVENTS, dtype=bool)
    cols = FeatureColumns(
        numeric={name: data[name] for name in NUMERIC},
        categorical={name: data[name] for name in CATEGORICAL},
        numeric_mask={name: ones for name in NUMERIC},
        categorical_mask={name: ones for name in CATEGORICAL},
        present={name: ones for name in (*NUMERIC, *CATEGORICAL)},
        size=EVENTS,
    )
    keys = g.integers(0, 2**63, EVENTS, dtype=np.uint64)
    scores = np.full(EVENTS, np.nan)
    masks: dict[str, np.ndarray] = {"": ones}
    if segmented:
        for dim, values in DIMENSIONS.items():
            for v in values:
                masks[segment_key({dim: v})] = data[dim] == v
    out = {}
    for key, mask in masks.items():
        idx = np.flatnonzero(mask)
        agg = WindowAggregate(spec)
        agg.add_predictions(cols, idx, keys[idx], data["prediction"][idx], scores[idx])
        out[key] = agg
    return out


def run(cat: ModelCatalog, ev: Evaluator, g: np.random.Generator, segmented: bool, first: int, count: int,
        change: Mapping[str, Any] | None = None) -> tuple[list[int], int, int]:
    """Evaluate ``count`` windows from window index ``first``; returns the indices of windows
    where a drift alert fired, and (windows, window-slices with dataset_drift set)."""
    fired, flagged, judged = [], 0, 0
    for w in range(first, first + count):
        start = w * WINDOW_MS
        for key, agg in window_slices(cat, g, segmented, change).items():
            e = ev.evaluate(
                MODEL, "v1", key, start, start + WINDOW_MS, agg, "provisional", judge_label_free=True
            )
            judged += 1
            flagged += bool(e.result.dataset_drift)
            if any(a.data.status == "firing" and a.data.rule == "dataset-drift" for a in e.alerts):
                fired.append(w)
    return fired, flagged, judged


def stationary(days: float, references: int, seed: int, segmented: bool) -> dict[str, float]:
    windows = round(days * WINDOWS_PER_DAY)
    per_ref = max(1, windows // references)
    alerts, flagged, judged = 0, 0, 0
    for r in range(references):
        g = np.random.default_rng([seed, r, int(segmented)])
        cat = catalog(g, segmented)
        fired, f, j = run(cat, Evaluator(cat), g, segmented, 0, per_ref)
        alerts, flagged, judged = alerts + len(fired), flagged + f, judged + j
    total = per_ref * references
    return {"alerts_per_30d": alerts * 30 * WINDOWS_PER_DAY / total, "alerts": alerts, "windows": total,
            "flag_rate": flagged / judged}


def delays(change: Mapping[str, Any], trials: int, references: int, seed: int, warmup: int = 5,
           horizon: int = 10) -> list[int | None]:
    out: list[int | None] = []
    per_ref = max(1, trials // references)
    for r in range(references):
        g = np.random.default_rng([seed, 1000 + r])
        cat = catalog(g, False)
        for _ in range(per_ref):
            ev = Evaluator(cat)
            early, _, _ = run(cat, ev, g, False, 0, warmup)
            fired, _, _ = run(cat, ev, g, False, warmup, horizon, change)
            out.append(None if early or not fired else fired[0] - warmup + 1)
    return out


def online_false(days: float, seed: int, error_rate: float = 0.1) -> dict[str, float]:
    """False detections per 30 days of each default online detector on a stationary error
    stream (1000 labelled events a window, fed as the evaluator feeds them)."""
    windows = round(days * WINDOWS_PER_DAY)
    out = {}
    for kind in ModelConfig().online_detectors:
        g = np.random.default_rng([seed, 7])
        det = OnlineDetector(kind, "error")
        n = 0
        for w in range(windows):
            values = (g.random(EVENTS) < error_rate).astype(np.float64)
            times = w * WINDOW_MS + np.sort(g.integers(0, WINDOW_MS, EVENTS))
            n += len(det.update(values, times))
        out[kind] = n * 30 / days
    return out


def _summary(ds: list[int | None]) -> tuple[str, str, str]:
    found = [d for d in ds if d is not None]
    within3 = sum(d <= 3 for d in found) / len(ds) if ds else math.nan
    median = f"{np.median(found):.0f}" if found else "-"
    return f"{within3:.2f}", median, f"{len(found)}/{len(ds)}"


def estimation_rows(quick: bool = False) -> list[list[str]]:
    """Rows from ``benchmarks/estimation_accuracy.py`` (performance half of issue 14), when
    present: its ``rows(quick)`` gives Markdown rows ``| measure | value | note |`` (or cell
    lists), which join this table under the scenario "estimation / accuracy drop"."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        mod = importlib.import_module("estimation_accuracy")
    except ImportError:
        return []
    out = []
    for row in mod.rows(quick):
        if isinstance(row, str):
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
        elif isinstance(row, Mapping):
            cells = [str(c) for c in row.values()]
        else:
            cells = [str(c) for c in row]
        out.append(["estimation / accuracy drop", *cells][-4:] if len(cells) < 4 else cells[:4])
    return out


HEADER = """# Drift detection: false alerts per 30 days and detection delays (issue 14)

Generated, this whole file, by `.venv/bin/python benchmarks/detection.py{args} > benchmarks/DETECTION.md`:
in process on the pure evaluation with the real `Evaluator` and the
default configuration (BH across features and predictions per window; the `dataset-drift`
rule on `drift_cusum >= 3`, the largest of one CUSUM per feature and prediction entry on a
common scale, its threshold spent so the model's slices and statistics together expect at most
one false alert per 30 days, detectors/sequential.py). Model: 4 numeric (normal, lognormal,
exponential, bimodal) and 3 categorical (2, 3, 6 categories) features, 1000 predictions a
5-minute window; reference profiles of 20 000 rows built by `build_profiles` (three reference
draws per stationary run). "5 slices": the model plus two segment dimensions of 2 values each,
every slice counted. Detection delays: 5 stationary windows, then the change, counted in
windows from the first changed one (1 = the first changed window alerts); trials split over 3
references. The estimation rows come from `benchmarks/estimation_accuracy.py` (`rows()`), run
by the same command.
"""


def notes(rows: Mapping[str, list[str]], trials: int) -> str:
    """The reading notes, with this run's numbers."""
    def value(label: str) -> str:
        return rows[label][2] if label in rows else "-"

    def detail(label: str) -> str:
        return rows[label][3] if label in rows else "-"

    cat = "category change JS 0.05 (c_three)"
    return f"""
Reading it:

- **False alerts**: {value("stationary, 1 slice(s)")} per 30 days for the model alone
  ({detail("stationary, 1 slice(s)").split(";")[0]}) and {value("stationary, 5 slice(s)")} with two
  segment dimensions ({detail("stationary, 5 slice(s)").split(";")[0]}), every slice counted. The
  budget is one expected false alert per 30 days (one per 8640 windows): each of the model's M
  CUSUMs (features and prediction entry, times slices: 8 and 40 here) gets an in-control run
  length of M x 8640 windows by Siegmund's approximation (threshold 3.05 for M = 8, 3.59 for
  M = 40, at k = 1.5). A run of W windows at the budget expects W / 8640 alerts, Poisson: one
  or two in a few thousand windows is within it, and the count per 30 days printed is that
  count scaled, not a rate estimate with a small error (`tests/test_drift_alerts.py` checks the
  evidence's tails and the run length the budget rests on). The per-window verdict
  `dataset_drift` is still in every result; it does not page.
- **0.2 sigma at 1000 predictions a window**: {value("0.2 sigma shift (x_normal)")} within 3
  windows ({detail("0.2 sigma shift (x_normal)")}). 0.1 sigma (not a target at this traffic):
  {value("0.1 sigma shift (x_normal)")} within 3 windows.
- **Category change of Jensen-Shannon distance 0.05** (3-category feature):
  {value(cat)} within 3 windows ({detail(cat)}) over {trials} trials; the single CUSUM of
  Simes-combined evidence it replaces found 0.58 (median 3) in the previous run. The 95 %
  target is not met: the window's chi-square test of that change at 1000 events has a
  noncentrality of about 13 (z about 2.9 a window), and even pooling the counts of the last 1,
  2 and 3 windows into Bonferroni-corrected tests would find it within 3 windows in only about
  95 % at this budget (docs/detectors.md has the ceiling and the options).
- **Online detectors** (defaults `adwin`, `ddm`, river's default parameters): false detections
  per 30 days on a stationary error stream of 1000 labelled events a window, as listed.
- **Accuracy drop**: the estimation rows' `accuracy-drop` lines (a 5-point drop at 2000 labels
  a window, found within 2 windows).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--references", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--quick", action="store_true", help="3 days and 20 trials, to try it out")
    args = ap.parse_args(argv)
    if args.quick:
        args.days, args.trials = 3.0, 20
    t0 = time.perf_counter()
    rows: list[list[str]] = []

    def add(row: list[str]) -> None:
        """Keep a row, and show it as it comes (a long run that fails later keeps its rows)."""
        rows.append(row)
        print("| " + " | ".join(row) + " |", file=sys.stderr, flush=True)

    for segmented in (False, True):
        s = stationary(args.days, args.references, args.seed, segmented)
        slices = 1 + sum(len(v) for v in DIMENSIONS.values()) if segmented else 1
        add([f"stationary, {slices} slice(s)", "false drift alerts / model / 30 days",
                     f"{s['alerts_per_30d']:.2f}",
                     f"{s['alerts']} in {s['windows']} windows ({s['windows'] / WINDOWS_PER_DAY:.0f} days, "
                     f"{args.references} references); per-window verdict set in "
                     f"{s['flag_rate']:.3f} of window-slices"])
    q = js_change(CATEGORICAL["c_three"])
    scenarios: list[tuple[str, dict[str, Any]]] = [
        ("0.1 sigma shift (x_normal)", {"x_normal": 0.1 * SIGMA["x_normal"]}),
        ("0.2 sigma shift (x_normal)", {"x_normal": 0.2 * SIGMA["x_normal"]}),
        ("0.5 sigma shift (x_normal)", {"x_normal": 0.5 * SIGMA["x_normal"]}),
        ("category change JS 0.05 (c_three)", {"c_three": q}),
    ]
    for label, change in scenarios:
        within3, median, found = _summary(delays(change, args.trials, args.references, args.seed))
        add([label, "share found within 3 windows", within3,
                     f"median delay {median} window(s); found within 10: {found}"])
    for kind, n in online_false(args.days, args.seed).items():
        add([f"stationary error stream, {kind}", "false online detections / slice / 30 days",
                     f"{n:.1f}",
                     f"{EVENTS} labelled events a window, error rate 0.1"])
    rows.extend(estimation_rows(args.quick))
    print(HEADER.replace("{args}", "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))))
    print(f"Seed {args.seed}, {EVENTS} predictions a 5-minute window, {args.days:g} days per stationary run, "
          f"{args.trials} trials per shift ({time.perf_counter() - t0:.0f} s).\n")
    print("| scenario | measure | value | detail |")
    print("|---|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(notes({row[0]: row for row in rows}, args.trials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
