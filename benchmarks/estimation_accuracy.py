"""How far label-free performance estimates are off, how often their intervals cover, and how
fast the default accuracy-drop rule finds a drop (and how often it cries wolf).

    .venv/bin/python benchmarks/estimation_accuracy.py [--quick]

Estimates: a synthetic binary model, true logit z ~ N(0, 3²), labels y ~ Bernoulli(sigmoid(z)),
scores sigmoid(k·z): k = 1 is calibrated, k = 2 over-confident (logits scaled by 2). Each trial
fits the calibrator on a fresh reference of 20 000 scored, labelled rows (as
``driftline baseline`` does), folds a window of 5000 predictions through
:class:`~driftline.detectors.aggregates.WindowAggregate` and compares its estimates with the
realised metrics (scikit-learn on the window's labels, raw scores for ROC AUC).

Multiclass estimates: a 4-class model, true logits z ~ N(0, 4²) per class, labels drawn from
softmax(z), scores softmax(k·z) sent as each event's ``scores`` vector; the reference fits the
multiclass calibrator (identity, temperature or one-vs-rest) on 20 000 rows and each window of
5000 goes through :class:`~driftline.detectors.aggregates.WindowAggregate` as the join folds
it. Accuracy, macro F1 and macro one-vs-rest ROC AUC against scikit-learn. The "floor" is the
mean absolute error an estimator that knew each window's expected accuracy exactly would still
have, from the labels' own sampling: no estimate can beat it, so the 0.005 bar only means
something for a model accurate enough (this one: about 0.83) that the floor is below it.

Rule: windows of 2000 labels, accuracies drawn binomially, a reference of 20 000 labels (its
accuracy a draw too), judged by the default ``accuracy-drop`` rule through the alert
lifecycle. Delay counts windows from the first degraded one to the one that fires (1 = the
first, 2 = the second: ``for_windows`` is 2). False alerts: firing events over stationary
months of 5-minute windows (8640 a month). The old rule (fixed -0.10, two windows) is run on
the same draws as the baseline.

``rows()`` returns the markdown rows (``| measure | value | note |``) that
``benchmarks/detection.py`` collects into ``benchmarks/DETECTION.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from driftline.alerting.lifecycle import AlertTracker
from driftline.alerting.rules import DEFAULT_RULES, Rule
from driftline.detectors.aggregates import AggregateSpec, WindowAggregate, feature_columns
from driftline.detectors.calibration import fit_calibrator, fit_multiclass_calibrator
from driftline.detectors.comparison import TestPolicy, compare

__all__ = ["HEADER", "multiclass_estimation", "multiclass_model", "multiclass_rows", "rows", "table"]

HEADER = "| measure | value | note |\n|---|---|---|"
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
#: the multiclass rows' metrics (the macro averages), as ``estimated_<metric>`` names them
MULTICLASS_METRICS = ("accuracy", "f1", "roc_auc")
CLASSES = ("a", "b", "c", "d")
WINDOWS_PER_MONTH = 30 * 24 * 12
_OLD_RULE = Rule(
    name="accuracy-drop (fixed -0.10)",
    metric="accuracy",
    comparison="<",
    threshold=-0.1,
    clear_threshold=-0.05,
    relative_to_baseline=True,
    min_samples=50,
    for_windows=2,
)


def _model(rng: np.random.Generator, n: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    z = rng.normal(0.0, 3.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    return 1.0 / (1.0 + np.exp(-k * z)), y


def estimation(
    k: float, *, references: int, windows: int, window: int = 5000, seed: int = 0, calibrate: bool = True
) -> tuple[dict[str, float], dict[str, float], str]:
    """(mean absolute error, interval coverage) per metric, and the calibrators chosen."""
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {m: [] for m in METRICS}
    covered: dict[str, list[bool]] = {m: [] for m in METRICS}
    chosen: set[str] = set()
    for _ in range(references):
        cal = fit_calibrator(*_model(rng, 20_000, k)) if calibrate else None
        chosen.add("none" if cal is None else cal.method)
        for _ in range(windows):
            s, y = _model(rng, window, k)
            pred = np.where(s >= 0.5, "1", "0").astype(object)
            agg = WindowAggregate(AggregateSpec(calibrator=cal))
            agg.add_predictions(
                feature_columns([{}] * window), np.arange(window), np.arange(window, dtype=np.uint64), pred, s
            )
            found = compare(agg, None, TestPolicy())
            hard = s >= 0.5
            realised = {
                "accuracy": accuracy_score(y, hard),
                "precision": precision_score(y, hard),
                "recall": recall_score(y, hard),
                "f1": f1_score(y, hard),
                "roc_auc": roc_auc_score(y, s),
            }
            for m, real in realised.items():
                lo, hi = found.intervals[f"estimated_{m}"]
                errors[m].append(abs(found.metrics[f"estimated_{m}"] - real))
                covered[m].append(lo <= real <= hi)
    return (
        {m: float(np.mean(v)) for m, v in errors.items()},
        {m: float(np.mean(v)) for m, v in covered.items()},
        "/".join(sorted(chosen)),
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def multiclass_model(
    rng: np.random.Generator, n: int, k: float, spread: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, class indices): labels from softmax(z), scores softmax(k·z), z ~ N(0, spread²)."""
    z = rng.normal(0.0, spread, (n, len(CLASSES)))
    cumulative = np.cumsum(_softmax(z), axis=1)
    y = np.minimum((rng.random(n)[:, None] > cumulative).sum(axis=1), len(CLASSES) - 1)
    return _softmax(k * z), y


def multiclass_estimation(
    k: float, *, references: int, windows: int, window: int = 5000, seed: int = 0, method: str = "auto"
) -> tuple[dict[str, float], dict[str, float], float, str]:
    """(mean absolute error, interval coverage) of the multiclass macro estimates, the
    accuracy's sampling floor, and the calibrators chosen (``method``: as
    :func:`~driftline.detectors.calibration.fit_multiclass_calibrator`'s; "auto" chooses by
    cross-validation, the slow part)."""
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {m: [] for m in MULTICLASS_METRICS}
    covered: dict[str, list[bool]] = {m: [] for m in MULTICLASS_METRICS}
    floor: list[float] = []
    chosen: set[str] = set()
    names = np.array(CLASSES, dtype=object)
    for _ in range(references):
        s, y = multiclass_model(rng, 20_000, k)
        cal = fit_multiclass_calibrator(s, names[y], CLASSES, method=method)
        chosen.add(cal.method)
        for _ in range(windows):
            s, y = multiclass_model(rng, window, k)
            hard = s.argmax(axis=1)
            vectors = [dict(zip(CLASSES, row, strict=True)) for row in s.tolist()]
            agg = WindowAggregate(AggregateSpec(task="multiclass", class_calibrator=cal))
            agg.add_predictions(feature_columns([{}] * window), np.arange(window),
                                np.arange(window, dtype=np.uint64), names[hard], np.full(window, np.nan),
                                vectors)
            found = compare(agg, None, TestPolicy())
            realised = {
                "accuracy": accuracy_score(y, hard),
                "f1": f1_score(y, hard, average="macro", labels=list(range(len(CLASSES))), zero_division=0),
                "roc_auc": roc_auc_score(y, s, multi_class="ovr", average="macro"),
            }
            for m, real in realised.items():
                lo, hi = found.intervals[f"estimated_{m}"]
                errors[m].append(abs(found.metrics[f"estimated_{m}"] - real))
                covered[m].append(lo <= real <= hi)
            # the accuracy a perfect estimator would give: each event right with P(y = ŷ)
            expected = float(_softmax(np.log(np.clip(s, 1e-300, 1.0)) / k)[np.arange(window), hard].mean())
            floor.append(abs(expected - realised["accuracy"]))
    return (
        {m: float(np.mean(v)) for m, v in errors.items()},
        {m: float(np.mean(v)) for m, v in covered.items()},
        float(np.mean(floor)),
        "/".join(sorted(chosen)),
    )


def _fired(
    rule: Rule, accuracies: np.ndarray, rng: np.random.Generator, baseline: float, n: int, n0: int
) -> list[int]:
    tracker = AlertTracker()
    out = []
    for i, k in enumerate(rng.binomial(n, accuracies).tolist()):
        for a in tracker.observe(
            rule,
            model_id="m",
            model_version="1",
            segment={},
            window_start_ms=i * 300_000,
            window_end_ms=(i + 1) * 300_000,
            value=k / n,
            samples=n,
            baseline=baseline,
            baseline_samples=n0,
        ):
            if a.status == "firing":
                out.append(i)
    return out


def detection(
    rule: Rule,
    drop: float,
    p: float,
    *,
    trials: int,
    months: int,
    seed: int = 0,
    n: int = 2000,
    n0: int = 20_000,
) -> tuple[float, float, float, float]:
    """(median delay, share within 2 windows, share never found in 12 windows, false alerts
    per 30 days) of ``rule`` on a drop of ``drop`` from accuracy ``p``."""
    rng = np.random.default_rng(seed)
    delays = []
    for _ in range(trials):
        baseline = rng.binomial(n0, p) / n0
        fired = [
            i
            for i in _fired(rule, np.r_[np.full(3, p), np.full(12, p - drop)], rng, baseline, n, n0)
            if i >= 3
        ]
        delays.append(fired[0] - 3 + 1 if fired else np.inf)
    d = np.array(delays)
    false = [
        len(_fired(rule, np.full(WINDOWS_PER_MONTH, p), rng, rng.binomial(n0, p) / n0, n, n0))
        for _ in range(months)
    ]
    found = d[np.isfinite(d)]
    median = float(np.median(found)) if found.size else float("nan")
    return median, float(np.mean(d <= 2)), float(np.mean(~np.isfinite(d))), float(np.mean(false))


def multiclass_rows(quick: bool = False) -> list[str]:
    """The multiclass estimation rows (macro accuracy, F1 and ROC AUC: error and coverage)."""
    refs, wins = (2, 5) if quick else (20, 15)
    out = []
    for label, k in (("over-confident (logits x2)", 2.0), ("calibrated scores", 1.0)):
        mae, cov, floor, chosen = multiclass_estimation(k, references=refs, windows=wins,
                                                        seed=int(k * 10) + 1)
        note = (f"4 classes, {refs * wins} windows of 5000, calibrator {chosen}; "
                f"accuracy sampling floor {floor:.4f}")
        out.append(f"| multiclass estimate MAE, {label} | "
                   + ", ".join(f"{m} {mae[m]:.4f}" for m in MULTICLASS_METRICS) + f" | {note} |")
        out.append(f"| multiclass 95 % interval coverage, {label} | "
                   + ", ".join(f"{m} {cov[m]:.3f}" for m in MULTICLASS_METRICS) + f" | {note} |")
    return out


def rows(quick: bool = False) -> list[str]:
    """The benchmark's markdown rows; ``quick`` shrinks the trial counts for a smoke run."""
    refs, wins, trials, months = (5, 4, 40, 3) if quick else (30, 10, 300, 60)
    out = []
    for label, k, calibrate in (
        ("over-confident (logits x2), calibrated on the reference", 2.0, True),
        ("calibrated scores", 1.0, True),
        ("over-confident, no calibrator (before issue 14)", 2.0, False),
    ):
        mae, cov, chosen = estimation(k, references=refs, windows=wins, calibrate=calibrate, seed=int(k * 10))
        n = refs * wins
        note = f"{n} windows of 5000, calibrator {chosen}"
        out.append(
            f"| estimate MAE, {label} | " + ", ".join(f"{m} {mae[m]:.4f}" for m in METRICS) + f" | {note} |"
        )
        out.append(
            f"| 95 % interval coverage, {label} | "
            + ", ".join(f"{m} {cov[m]:.3f}" for m in METRICS)
            + f" | {note} |"
        )
    out += multiclass_rows(quick)
    rule = next(r for r in DEFAULT_RULES if r.name == "accuracy-drop")
    for drop in (0.05, 0.10):
        for p in (0.9, 0.8):
            for r in (rule, _OLD_RULE):
                median, within2, missed, false = detection(
                    r, drop, p, trials=trials, months=months, seed=int(drop * 100 + p * 10)
                )
                out.append(
                    f"| {r.name}: {drop * 100:.0f}-point drop from {p:.2f} "
                    f"| median delay {median:g} windows, "
                    f"{within2 * 100:.1f} % within 2, {missed * 100:.1f} % missed in 12; "
                    f"{false:.2f} false alerts / 30 days | 2000 labels/window, {trials} drops, {months} "
                    f"stationary months |"
                )
    return out


def table(quick: bool = False) -> str:
    return "\n".join([HEADER, *rows(quick)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few trials (smoke run)")
    args = parser.parse_args(argv)
    text = table(args.quick)
    print(text)
    target = Path(__file__).with_name("DETECTION.md")
    if not args.quick and not target.exists():  # detection.py owns the file once it exists
        target.write_text(
            "# Detection benchmarks\n\n## Performance estimation and the accuracy-drop rule\n\n"
            f"`{' '.join([Path(sys.executable).name, *sys.argv])}`\n\n{text}\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
