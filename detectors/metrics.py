"""Performance metrics computed from merged window sketches.

Each function reads one sketch and returns ``{name: float}``; a metric that is undefined for the
window (no samples, a single class for AUC) is NaN, never an exception, so a thin window
simply reports "unknown". Values equal scikit-learn's on the same events (to float rounding),
except the ranking metrics, which are exact for the *binned* scores and carry an error bound.

>>> from driftline.detectors.sketches import ConfusionCounts
>>> cc = ConfusionCounts()
>>> cc.update(np.array(["a", "a", "b", "b"]), np.array(["a", "b", "b", "b"]))
>>> m = classification_metrics(cc)
>>> m["accuracy"], m["precision.b"], m["recall.a"]
(0.75, 0.6666666666666666, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from driftline.detectors.sketches import (
    ClassScoreHistograms,
    ConfusionCounts,
    ProbabilitySums,
    RegressionSums,
    ScoreHistogram,
)

__all__ = [
    "class_ranking_metrics",
    "classification_metrics",
    "probability_metrics",
    "ranking_metrics",
    "regression_metrics",
]

_NAN = math.nan


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0: scikit-learn's ``zero_division=0``."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def classification_metrics(cc: ConfusionCounts) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision/recall/F1 (macro, micro, weighted and per class).

    Per-class keys are ``precision.<label>``, ``recall.<label>``, ``f1.<label>``,
    ``support.<label>``; averages are ``precision_macro`` … ``f1_weighted``. Labels are those
    seen in the window (true or predicted), as scikit-learn infers them.
    """
    m = cc.matrix.astype(np.float64)
    n = float(m.sum())
    tp = np.diag(m)
    pred_sum = m.sum(axis=0)
    true_sum = m.sum(axis=1)
    out: dict[str, float] = {"n": n}
    if n == 0:
        for key in ("accuracy", "balanced_accuracy"):
            out[key] = _NAN
        for metric in ("precision", "recall", "f1"):
            for avg in ("macro", "micro", "weighted"):
                out[f"{metric}_{avg}"] = _NAN
        return out
    precision = _safe_div(tp, pred_sum)
    recall = _safe_div(tp, true_sum)
    f1 = _safe_div(2.0 * tp, pred_sum + true_sum)  # = 2tp / (2tp + fp + fn)
    accuracy = float(tp.sum() / n)
    out["accuracy"] = accuracy
    out["balanced_accuracy"] = float(recall[true_sum > 0].mean())
    for name, per_class in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = float(per_class.mean())
        out[f"{name}_micro"] = accuracy  # every label counted: micro P = R = F1 = accuracy
        out[f"{name}_weighted"] = float(np.sum(per_class * true_sum) / n)
        for label, value in zip(cc.labels, per_class.tolist(), strict=True):
            out[f"{name}.{label}"] = value
    for label, s in zip(cc.labels, true_sum.tolist(), strict=True):
        out[f"support.{label}"] = s
    return out


def probability_metrics(ps: ProbabilitySums) -> dict[str, float]:
    """Mean binary log-loss (natural log, sklearn's clipping) and Brier score."""
    if ps.n == 0:
        return {"n": 0.0, "log_loss": _NAN, "brier": _NAN}
    return {"n": float(ps.n), "log_loss": ps.log_loss_sum.value / ps.n, "brier": ps.brier_sum.value / ps.n}


def ranking_metrics(h: ScoreHistogram) -> dict[str, float]:
    """ROC AUC and PR AUC (average precision) from a score histogram, with error bounds.

    Both are computed *exactly for the binned scores* (a bin is one threshold; pairs inside a
    bin are ties), i.e. they equal ``roc_auc_score`` / ``average_precision_score`` applied to
    the bin index. Against the raw scores the error is bounded, and the bound is returned:

    * ``roc_auc_error_bound`` = 0.5 · Σ_b pos_b · neg_b / (P · N). Pairs in different bins are
      ordered as the raw scores order them; a pair sharing a bin counts ½ instead of 0, ½ or 1.
    * ``pr_auc_error_bound`` = Σ_b (pos_b / P) · (hi_b - lo_b), where, with T and F the positives
      and negatives in higher bins, hi_b = (T + pos_b)/(T + F + pos_b) and
      lo_b = (T + 1)/(T + F + 1 + neg_b) bound the precision any positive of bin b can get,
      however the raw scores order the bin; the binned value uses (T + pos_b)/(T + F + pos_b + neg_b),
      which lies between them.

    With 200 bins and smooth score distributions both bounds are typically below 0.01.
    """
    pos = h.pos.astype(np.float64)[::-1]  # highest scores first
    neg = h.neg.astype(np.float64)[::-1]
    P, N = float(pos.sum()), float(neg.sum())
    out = {"n": P + N, "n_positive": P}
    if P == 0 or N == 0:
        out.update(roc_auc=_NAN, roc_auc_error_bound=_NAN)
    else:
        pos_above = np.cumsum(pos) - pos
        out["roc_auc"] = float(np.sum(neg * (pos_above + 0.5 * pos)) / (P * N))
        out["roc_auc_error_bound"] = float(0.5 * np.sum(pos * neg) / (P * N))
    if P == 0:
        out.update(pr_auc=_NAN, pr_auc_error_bound=_NAN)
        return out
    t = np.cumsum(pos) - pos  # positives above the bin
    f = np.cumsum(neg) - neg
    has = pos > 0
    tb, fb, pb, nb = t[has], f[has], pos[has], neg[has]
    precision = (tb + pb) / (tb + fb + pb + nb)
    out["pr_auc"] = float(np.sum(pb * precision) / P)
    hi = (tb + pb) / (tb + fb + pb)
    lo = (tb + 1.0) / (tb + fb + 1.0 + nb)
    out["pr_auc_error_bound"] = float(np.sum(pb * (hi - lo)) / P)
    return out


def class_ranking_metrics(ch: ClassScoreHistograms, classes: Sequence[str]) -> dict[str, float]:
    """A multiclass model's one-vs-rest ROC AUC per class (``roc_auc.<class>``, with
    ``roc_auc_error_bound.<class>``) and their macro mean (``roc_auc``, ``roc_auc_error_bound``).

    Each class's value is :func:`ranking_metrics` on that class's histogram: exactly
    ``roc_auc_score(y == k, bin of score k)``, and within its bound of ``roc_auc_score(y == k,
    score k)``. The macro mean is over the classes whose ROC AUC is defined (labels of that class
    and of another in the window), so when every class is labelled it is scikit-learn's
    ``roc_auc_score(y, scores, multi_class="ovr", average="macro")`` on the binned scores, and
    within the mean of the bounds (itself a bound: the mean of errors is at most the mean of their
    sizes) of it on the raw ones. NaN when no class's ROC AUC is defined."""
    if len(classes) != len(ch.parts):
        raise ValueError("one class name per part of the sketch")
    out: dict[str, float] = {}
    values, bounds = [], []
    for c, part in zip(classes, ch.parts, strict=True):
        one = ranking_metrics(part)
        out[f"roc_auc.{c}"] = one["roc_auc"]
        out[f"roc_auc_error_bound.{c}"] = one["roc_auc_error_bound"]
        if math.isfinite(one["roc_auc"]):
            values.append(one["roc_auc"])
            bounds.append(one["roc_auc_error_bound"])
    out["roc_auc"] = float(np.mean(values)) if values else _NAN
    out["roc_auc_error_bound"] = float(np.mean(bounds)) if bounds else _NAN
    return out


def regression_metrics(rs: RegressionSums) -> dict[str, float]:
    """MAE, RMSE, MAPE (fraction, sklearn's eps denominator), R² and mean error (ŷ - y).

    R² follows scikit-learn: NaN below two samples; when y is constant, 1.0 for a perfect fit and
    0.0 otherwise (``force_finite``). Its total sum of squares comes from exact moments.
    """
    n = rs.n
    if n == 0:
        return {"n": 0.0, "mae": _NAN, "rmse": _NAN, "mape": _NAN, "r2": _NAN, "mean_error": _NAN}
    sse = rs.sq_err.value
    out = {
        "n": float(n),
        "mae": rs.abs_err.value / n,
        "rmse": math.sqrt(sse / n),
        "mape": rs.ape.value / n,
        "mean_error": rs.err.value / n,
    }
    if n < 2:
        out["r2"] = _NAN
    else:
        s1 = rs.y.fraction
        sst = float(rs.y2.fraction - s1 * s1 / n)
        if sst == 0.0:
            out["r2"] = 1.0 if sse == 0.0 else 0.0
        else:
            out["r2"] = 1.0 - sse / sst
    return out
