"""Label-free performance estimation for classifiers (confidence-based, CBPE).

Binary models below; multiclass ones in :func:`estimate_class_probabilities`, the same idea on
the expected confusion matrix of calibrated class-probability vectors.

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
from functools import lru_cache

import numpy as np
from scipy.stats import norm

from driftline.detectors.calibration import Calibrator
from driftline.detectors.sketches import (
    CalibratedScores,
    ClassProbabilitySums,
    ClassRankings,
    ExpectedConfusion,
)

__all__ = [
    "DEFAULT_LEVEL",
    "Estimate",
    "calibrate_multiclass",
    "estimate_binary",
    "estimate_class_probabilities",
    "estimate_multiclass",
    "estimate_performance",
    "estimation_errors",
    "multiclass_estimation_errors",
    "realised_name",
    "two_sided_z",
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


@lru_cache(maxsize=64)
def two_sided_z(level: float) -> float:
    """The normal quantile of a two-sided interval at ``level``: a constant per level, but
    ``norm.ppf`` costs about a millisecond a call in scipy's argument checks, paid per window
    slice and estimate before it was cached (issue 15)."""
    return float(norm.ppf(0.5 + level / 2.0))


def _interval(value: float, var: float, z: float) -> tuple[float, float]:
    sd = math.sqrt(max(var, 0.0))
    return max(0.0, value - z * sd), min(1.0, value + z * sd)


def _expected_auc(mu: np.ndarray, c: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Expected ROC AUC over bins in ascending score order, with its delta-method variance.

    mu: expected positives per bin, c: events per bin, v: variance of the positives per bin."""
    auc, grad = _auc_gradient(mu, c)
    return auc, float(np.sum(grad * grad * v)) if math.isfinite(auc) else math.nan


def _auc_gradient(mu: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    """Expected ROC AUC and its gradient in each bin's positive count (NaN, zeros when
    undefined)."""
    neg = c - mu
    P, N = float(mu.sum()), float(neg.sum())
    if P <= 0.0 or N <= 0.0:
        return math.nan, np.zeros_like(mu)
    neg_below = np.cumsum(neg) - neg
    pos_above = mu.sum() - np.cumsum(mu)
    U = float(np.sum(mu * (neg_below + 0.5 * neg)))
    auc = U / (P * N)
    # ∂U/∂P_b: bin b's positives gain the negatives below it (and half its own), and each one
    # moved from negative to positive costs the positives above b and half of bin b's
    dU = neg_below + 0.5 * neg - 0.5 * mu - pos_above
    grad = (dU * P * N - U * (N - P)) / (P * N) ** 2
    return auc, grad


def _macro_auc_variance(rankings: ClassRankings) -> float:
    """Delta-method variance of the macro mean of the classes' expected ROC AUC.

    Linearised, the mean is Σ_i Σ_k a_k(i)·[y_i = k] with a_k(i) = g_k(bin of score k of i) / K
    (g_k: class k's gradient, :func:`_auc_gradient`). Given the predictions, label i is
    categorical(q_i), so its term has variance Σ_k a_k² q_k(1 - q_k) - Σ_{k≠l} a_k a_l q_k q_l.
    The first sum is the classes' own variances (their parts' Σq(1-q) per bin); the second,
    the pairs', comes from :attr:`ClassRankings.pairs` with each g_k averaged (weighted by Σq)
    over the part bins of a pair bin. Leaving it out (classes independent) understated the
    variance by a factor 1.6 in the seeded trials of the 4-class model of
    ``tests/test_multiclass_estimation.py`` and covered 87 %; the coarse pair bins gave the
    same variance as the per-event sum to 3 digits."""
    k = len(rankings.parts)
    step = rankings.parts[0].n_bins // rankings.PAIR_BINS
    own = 0.0
    coarse: list[np.ndarray] = []
    for part in rankings.parts:
        count, sq, sq2 = part.sums()
        mu, c = sq.sum(axis=0), count.sum(axis=0)
        auc, g = _auc_gradient(mu, c)
        if not math.isfinite(auc):
            return math.nan
        own += float(np.sum(g * g * np.maximum(sq - sq2, 0.0).sum(axis=0)))
        mass = mu.reshape(-1, step).sum(axis=1)
        weighted = (g * mu).reshape(-1, step).sum(axis=1)
        coarse.append(np.divide(weighted, mass, out=np.zeros_like(mass), where=mass > 0))
    cross = 0.0
    pairs = rankings.pair_sums()
    pair = 0
    for a in range(k):
        for b in range(a + 1, k):
            cross += 2.0 * float(coarse[a] @ pairs[pair] @ coarse[b])
            pair += 1
    return (own - cross) / k**2


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
    z = two_sided_z(level)
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

    Not wired into the pipeline, which uses :func:`estimate_class_probabilities` on the
    window's :class:`ClassProbabilitySums` (no ROC AUC there: it needs per-class rankings)."""
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
    z = two_sided_z(level)
    intervals = {"estimated_accuracy": _interval(values["estimated_accuracy"], v_tp / n**2 * widen, z)}
    return Estimate(values, intervals, level)


#: the multiclass estimates, by the name of the realised metric they estimate (macro averages,
#: as the realised ``precision_macro``...; per class ``estimated_precision.<class>``...)
MULTICLASS_ESTIMATED = {"accuracy": "accuracy", "precision": "precision_macro", "recall": "recall_macro",
                        "f1": "f1_macro", "roc_auc": "roc_auc"}


def estimate_class_probabilities(
    s: ClassProbabilitySums,
    classes: Sequence[str],
    *,
    rankings: ClassRankings | None = None,
    level: float = DEFAULT_LEVEL,
    n_reference: int = 0,
) -> Estimate:
    """CBPE for a K-class model from its window's calibrated class-probability sums.

    The expected confusion matrix M (row: predicted class, column: true class) is Σq per
    predicted class; accuracy, precision, recall and F1 per class and their macro averages
    (over the reference's classes, scikit-learn's ``average="macro"``) are plug-in functions
    of M, named ``estimated_accuracy``, ``estimated_precision`` (macro) and
    ``estimated_precision.<class>``. Intervals by the delta method with the exact covariance
    of M given the predictions: rows are independent, row i has diag(Σq) - Σq qᵀ; widened by
    (1 + n / n_reference) for the calibrator's own error, as :func:`estimate_binary`.

    With ``rankings`` (the same window's per-class raw-score bins) also the one-vs-rest
    ``estimated_roc_auc.<class>`` (:func:`estimate_binary`'s expected ROC AUC, with its interval)
    and their macro mean ``estimated_roc_auc``, as scikit-learn's ``multi_class="ovr",
    average="macro"``, with its interval: one event's label moves every class's curve, so the
    classes' variances do not simply add (:func:`_macro_auc_variance` counts the pairs'
    covariance; the bound that ignored it, the mean of the per-class standard deviations,
    covered 100 % in the seeded trials, far above its nominal level)."""
    k = s.k
    if len(classes) != k:
        raise ValueError("one class name per column of the sketch")
    per = [f"estimated_{m}.{c}" for m in ("precision", "recall", "f1") for c in classes]
    names = [f"estimated_{m}" for m in ("accuracy", "precision", "recall", "f1")] + per
    if s.n == 0:
        return Estimate({name: math.nan for name in names}, {}, level)
    count, m, mm = s.sums()
    n = float(count.sum())
    cov = np.zeros_like(mm)
    idx = np.arange(k)
    cov[:, idx, idx] = m
    cov -= mm  # per predicted row: diag(Σq) - Σq qᵀ
    tp = np.diag(m[:k])
    pred = count[:k]
    true = m.sum(axis=0)
    eye = np.eye(k + 1, k)  # eye[i, j] = [i == j]: the cells that are true positives
    values: dict[str, float] = {"estimated_accuracy": float(tp.sum() / n)}
    grads: dict[str, np.ndarray] = {"estimated_accuracy": eye / n}
    for j, c in enumerate(classes):
        g = np.zeros((k + 1, k))
        g[j, j] = 1.0 / pred[j] if pred[j] > 0 else 0.0
        values[f"estimated_precision.{c}"] = _ratio(float(tp[j]), float(pred[j]))
        grads[f"estimated_precision.{c}"] = g if pred[j] > 0 else np.full((k + 1, k), np.nan)
        g = np.zeros((k + 1, k))
        if true[j] > 0:
            g[:, j] = (eye[:, j] * true[j] - tp[j]) / true[j] ** 2
        values[f"estimated_recall.{c}"] = _ratio(float(tp[j]), float(true[j]))
        grads[f"estimated_recall.{c}"] = g if true[j] > 0 else np.full((k + 1, k), np.nan)
        d = pred[j] + true[j]
        g = np.zeros((k + 1, k))
        if d > 0:
            g[:, j] = (2.0 * eye[:, j] * d - 2.0 * tp[j]) / d**2
        values[f"estimated_f1.{c}"] = _ratio(2.0 * float(tp[j]), float(d))
        grads[f"estimated_f1.{c}"] = g if d > 0 else np.full((k + 1, k), np.nan)
    for metric in ("precision", "recall", "f1"):
        members = [f"estimated_{metric}.{c}" for c in classes]
        values[f"estimated_{metric}"] = float(np.mean([values[x] for x in members]))
        grads[f"estimated_{metric}"] = np.mean([grads[x] for x in members], axis=0)
    widen = 1.0 + (n / n_reference if n_reference > 0 else 0.0)
    z = two_sided_z(level)
    intervals: dict[str, tuple[float, float]] = {}
    for name in names:
        g = grads[name]
        var = float(np.einsum("ij,ijl,il->", g, cov, g))
        if math.isfinite(values[name]) and math.isfinite(var):
            intervals[name] = _interval(values[name], var * widen, z)
    if rankings is not None and all(part.n == s.n for part in rankings.parts):
        for c, part in zip(classes, rankings.parts, strict=True):
            one = estimate_binary(part, level=level, n_reference=n_reference)
            name = f"estimated_roc_auc.{c}"
            values[name] = one.values["estimated_roc_auc"]
            if "estimated_roc_auc" in one.intervals:
                intervals[name] = one.intervals["estimated_roc_auc"]
        macro = float(np.mean([values[f"estimated_roc_auc.{c}"] for c in classes]))
        values["estimated_roc_auc"] = macro
        if rankings.pairs_n == s.n and math.isfinite(macro):
            var = _macro_auc_variance(rankings)
            if math.isfinite(var):
                intervals["estimated_roc_auc"] = _interval(macro, var * widen, z)
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


def multiclass_estimation_errors(estimated: dict[str, float], realised: dict[str, float]) -> dict[str, float]:
    """``estimation_error_<metric>`` of a multiclass window: the macro estimates against the
    realised ``accuracy``/``precision_macro``/... and ``estimation_error_precision.<class>``
    against ``precision.<class>``, for each pair the window has."""
    pairs = [(f"estimated_{m}", real, f"estimation_error_{m}") for m, real in MULTICLASS_ESTIMATED.items()]
    pairs += [(name, name.removeprefix("estimated_"), "estimation_error_" + name.removeprefix("estimated_"))
              for name in estimated if name.startswith(("estimated_precision.", "estimated_recall.",
                                                        "estimated_f1.", "estimated_roc_auc."))]
    out: dict[str, float] = {}
    for est_name, real_name, out_name in pairs:
        est, real = estimated.get(est_name), realised.get(real_name)
        if est is not None and real is not None and math.isfinite(est) and math.isfinite(real):
            out[out_name] = est - real
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
