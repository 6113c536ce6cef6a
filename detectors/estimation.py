"""Label-free performance estimation for binary classifiers (confidence-based, CBPE).

Labels often arrive days after predictions, or never. If the model's scores are *calibrated*,
p = P(y=1 | score), the expected confusion matrix of a window follows from the scores alone
(:class:`~driftline.detectors.sketches.ExpectedConfusion`): an event predicted positive is a
true positive with probability p and a false positive with probability 1 - p. Expected accuracy,
precision, recall and F1 follow from those expected counts, as in NannyML's CBPE (which uses the
same expectations per chunk). The estimate is available the moment a window's predictions close.

Calibration first. Scores are mapped to probabilities by a calibrator fitted on the reference
(:mod:`driftline.detectors.calibration`), per event, before summing: the window keeps
:class:`~driftline.detectors.sketches.CalibratedScores`, exact fixed-point sums of q and q² per
(predicted class, raw-score bin), which merge exactly across workers.

Expected ROC AUC, as NannyML's CBPE computes it (``estimate_roc_auc`` in
``nannyml/performance_estimation/confidence_based/metrics.py``): rank by the model's *raw*
score, count each event as q positive and 1 - q negative, and take the area under the
expected ROC curve. Here the ranking is by raw-score bin (pairs in one bin count ½), so it is
the exact expectation for the binned scores: E[U] / (E[P]·E[N]) with U the Mann-Whitney count.

Intervals. Given the window's predictions, calibration makes the labels independent
Bernoulli(qᵢ); TP and FN are then independent Poisson-binomial counts with variances Σq(1-q)
over predicted positives and negatives. Accuracy and precision are linear in them (exact
variance); recall, F1 and ROC AUC (a function of the per-bin positive counts) get the delta
method. The calibrator itself was estimated from ``n_reference`` rows; its error moves every
event of the window alike, as much as sampling the reference did, so the variance is widened
by (1 + n / n_reference). The interval is estimate ± z·sd clipped to [0, 1], and it covers the
realised metric at about the nominal level *while the calibration holds*
(``tests/test_estimation.py`` measures it over seeded trials).

Assumption, and where it fails. Calibration is assumed to hold *in production*, i.e. P(y | x)
is unchanged since calibration. Under covariate shift alone (P(x) moves, P(y | x) does not) the
estimate stays unbiased, which is why it is worth having. Under *concept drift* (P(y | x)
changes) the scores are no longer calibrated and the estimate is biased, in the direction of
the model's own confidence: a model that is confidently wrong estimates itself as accurate.
CBPE cannot see concept drift; only labelled metrics can, so estimated metrics complement
them and never replace them. Calibrate on held-out data first (isotonic or Platt) when the raw
scores are not probabilities; tree ensembles and SVM scores usually are not.

>>> import numpy as np
>>> from driftline.detectors.sketches import ExpectedConfusion
>>> ec = ExpectedConfusion()
>>> ec.update(np.array([True, True, False, False]), np.array([0.9, 0.6, 0.2, 0.1]))
>>> {k: round(v, 4) for k, v in estimate_performance(ec).items()}
{'estimated_accuracy': 0.8, 'estimated_precision': 0.75, 'estimated_recall': 0.8333, 'estimated_f1': 0.7895}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from driftline.detectors.calibration import Calibrator
from driftline.detectors.sketches import CalibratedScores, ExpectedConfusion

__all__ = [
    "DEFAULT_LEVEL",
    "Estimate",
    "calibrate_multiclass",
    "estimate_binary",
    "estimate_multiclass",
    "estimate_performance",
    "estimation_errors",
    "realised_name",
]

#: the nominal level of the intervals around estimates
DEFAULT_LEVEL = 0.95
#: the estimated metrics of a binary model, by the name of the realised metric they estimate
ESTIMATED = {"accuracy": "accuracy", "precision": "precision.{positive}", "recall": "recall.{positive}",
             "f1": "f1.{positive}", "roc_auc": "roc_auc", "mae": "mae", "rmse": "rmse"}
#: the binary model's estimates (the regression ones are :mod:`driftline.detectors.loss_model`'s)
_BINARY = ("accuracy", "precision", "recall", "f1", "roc_auc")


def _ratio(num: float, den: float) -> float:
    """num / den with 0 when den == 0: scikit-learn's ``zero_division=0``, as the labelled metrics."""
    return num / den if den > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimated metrics (``estimated_<metric>``), their intervals and the intervals' level."""

    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    level: float


def _interval(value: float, var: float, z: float) -> tuple[float, float]:
    sd = math.sqrt(max(var, 0.0))
    return max(0.0, value - z * sd), min(1.0, value + z * sd)


def _expected_auc(mu: np.ndarray, c: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Expected ROC AUC over bins in ascending score order, with its delta-method variance.

    mu: expected positives per bin, c: events per bin, v: variance of the positives per bin."""
    neg = c - mu
    P, N = float(mu.sum()), float(neg.sum())
    if P <= 0.0 or N <= 0.0:
        return math.nan, math.nan
    neg_below = np.cumsum(neg) - neg
    pos_above = mu.sum() - np.cumsum(mu)
    U = float(np.sum(mu * (neg_below + 0.5 * neg)))
    auc = U / (P * N)
    # ∂U/∂P_b: bin b's positives gain the negatives below it (and half its own), and each one
    # moved from negative to positive costs the positives above b and half of bin b's
    dU = neg_below + 0.5 * neg - 0.5 * mu - pos_above
    grad = (dU * P * N - U * (N - P)) / (P * N) ** 2
    return auc, float(np.sum(grad * grad * v))


def estimate_binary(
    cs: CalibratedScores,
    *,
    expected: ExpectedConfusion | None = None,
    level: float = DEFAULT_LEVEL,
    n_reference: int = 0,
) -> Estimate:
    """CBPE estimates of accuracy, precision, recall, F1 (of the positive class) and ROC AUC
    from a window's calibrated scores, with intervals at ``level`` (see the module docstring).
    ``n_reference`` is the number of rows the calibrator was fitted on (0: scores taken as
    calibrated, no widening). ``expected``, the same window's exact expected confusion, gives
    the point estimates exactly (the fixed-point sums of ``cs`` agree to ~1e-10); ``cs`` gives
    the variances and ROC AUC. An empty window gives NaN estimates and no intervals."""
    names = [f"estimated_{m}" for m in _BINARY]
    if expected is not None and expected.n != cs.n:
        # partials from a version without the calibrated sketch were merged in: the exact
        # point estimates still hold, the intervals and ROC AUC would cover part of the window
        return Estimate({**estimate_performance(expected), "estimated_roc_auc": math.nan}, {}, level)
    if cs.n == 0:
        return Estimate({k: math.nan for k in names}, {}, level)
    count, sq, sq2 = cs.sums()
    var_q = np.maximum(sq - sq2, 0.0)  # Σq(1-q) per cell
    n = float(cs.n)
    n_pp = float(count[1].sum())
    tp, fn = float(sq[1].sum()), float(sq[0].sum())
    tn = float(count[0].sum()) - fn
    if expected is not None and expected.n == cs.n:
        tp, fn, tn = expected.tp.value, expected.fn.value, expected.tn.value
    v_tp, v_fn = float(var_q[1].sum()), float(var_q[0].sum())
    widen = 1.0 + (n / n_reference if n_reference > 0 else 0.0)
    z = float(norm.ppf(0.5 + level / 2.0))
    values: dict[str, float] = {}
    variances: dict[str, float] = {}
    values["estimated_accuracy"] = (tp + tn) / n
    variances["estimated_accuracy"] = (v_tp + v_fn) / n**2
    values["estimated_precision"] = _ratio(tp, n_pp)
    variances["estimated_precision"] = v_tp / n_pp**2 if n_pp > 0 else math.nan
    pos = tp + fn
    values["estimated_recall"] = _ratio(tp, pos)
    variances["estimated_recall"] = (fn**2 * v_tp + tp**2 * v_fn) / pos**4 if pos > 0 else math.nan
    d = n_pp + tp + fn
    values["estimated_f1"] = _ratio(2.0 * tp, d)
    variances["estimated_f1"] = (
        ((2.0 * (n_pp + fn)) ** 2 * v_tp + (2.0 * tp) ** 2 * v_fn) / d**4 if d > 0 else math.nan
    )
    auc, v_auc = _expected_auc(sq.sum(axis=0), count.sum(axis=0), var_q.sum(axis=0))
    values["estimated_roc_auc"] = auc
    variances["estimated_roc_auc"] = v_auc
    intervals = {
        k: _interval(values[k], variances[k] * widen, z)
        for k in names
        if math.isfinite(values[k]) and math.isfinite(variances[k])
    }
    return Estimate(values, intervals, level)


def calibrate_multiclass(scores: np.ndarray, calibrators: Sequence[Calibrator]) -> np.ndarray:
    """Class probabilities from an (n, K) score matrix: each class's one-vs-rest calibrator
    (fitted on the reference as ``fit_calibrator(scores[:, k], y == k)``), then each row
    renormalised to sum to 1, as NannyML calibrates multiclass models."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(calibrators):
        raise ValueError("scores must be an (n, K) matrix with one calibrator per class")
    q = np.column_stack([cal.apply(s[:, k]) for k, cal in enumerate(calibrators)])
    total = q.sum(axis=1, keepdims=True)
    return np.divide(q, total, out=np.full_like(q, 1.0 / q.shape[1]), where=total > 0)


def estimate_multiclass(
    per_class: Sequence[CalibratedScores], *, level: float = DEFAULT_LEVEL, n_reference: int = 0
) -> Estimate:
    """CBPE for a K-class model from one :class:`CalibratedScores` per class, each fed
    one-vs-rest (``pred == k``, the raw score of class k, the calibrated q of class k; see
    :func:`calibrate_multiclass`). Accuracy is Σ_k E[TP_k] / n with its exact Poisson-binomial
    interval; precision, recall, F1 and ROC AUC are the macro averages of the per-class
    estimates, as scikit-learn's ``average="macro"`` (ROC AUC one-vs-rest), without intervals:
    one event's label moves every class's counts, so per-class variances do not add.

    Not wired into the pipeline: events carry one score (the positive class's) through the
    join, not the class-probability vector (docs/detectors.md)."""
    names = [f"estimated_{m}" for m in _BINARY]
    n = per_class[0].n if per_class else 0
    if n == 0 or any(cs.n != n for cs in per_class):
        return Estimate({k: math.nan for k in names}, {}, level)
    classes = [estimate_binary(cs, level=level, n_reference=n_reference) for cs in per_class]
    tp = v_tp = 0.0
    for cs in per_class:
        _, sq, sq2 = cs.sums()
        tp += float(sq[1].sum())
        v_tp += float(np.maximum(sq[1] - sq2[1], 0.0).sum())
    values = {"estimated_accuracy": tp / n}
    for m in _BINARY[1:]:
        values[f"estimated_{m}"] = float(np.mean([c.values[f"estimated_{m}"] for c in classes]))
    widen = 1.0 + (n / n_reference if n_reference > 0 else 0.0)
    z = float(norm.ppf(0.5 + level / 2.0))
    intervals = {"estimated_accuracy": _interval(values["estimated_accuracy"], v_tp / n**2 * widen, z)}
    return Estimate(values, intervals, level)


def realised_name(metric: str, positive: str) -> str:
    """The realised metric an ``estimated_<metric>`` estimates (``estimated_precision`` is the
    positive class's ``precision.<positive>``); any other name is its own."""
    template = ESTIMATED.get(metric.removeprefix("estimated_")) if metric.startswith("estimated_") else None
    return metric if template is None else template.format(positive=positive)


def estimation_errors(
    estimated: dict[str, float], realised: dict[str, float], positive: str
) -> dict[str, float]:
    """``estimation_error_<metric>`` = estimate - realised, for each estimate whose realised
    metric the window has (precision, recall and F1 are the positive class's)."""
    out: dict[str, float] = {}
    for metric, template in ESTIMATED.items():
        est = estimated.get(f"estimated_{metric}")
        real = realised.get(template.format(positive=positive))
        if est is not None and real is not None and math.isfinite(est) and math.isfinite(real):
            out[f"estimation_error_{metric}"] = est - real
    return out


def estimate_performance(ec: ExpectedConfusion) -> dict[str, float]:
    """Expected accuracy, precision, recall and F1 of the positive class; NaN for an empty window.

    These are ratios of expectations (E[TP] / E[TP + FP]), not expectations of ratios: the
    difference is O(1/n) and the same plug-in choice NannyML makes.
    """
    if ec.n == 0:
        return {k: math.nan for k in ("estimated_accuracy", "estimated_precision",
                                      "estimated_recall", "estimated_f1")}
    tp, fp, fn, tn = ec.tp.value, ec.fp.value, ec.fn.value, ec.tn.value
    return {
        "estimated_accuracy": (tp + tn) / ec.n,
        "estimated_precision": _ratio(tp, tp + fp),
        "estimated_recall": _ratio(tp, tp + fn),
        "estimated_f1": _ratio(2.0 * tp, 2.0 * tp + fp + fn),
    }
