"""Label-free performance estimation for binary classifiers (confidence-based, CBPE).

Labels often arrive days after predictions, or never. If the model's scores are *calibrated*,
p = P(y=1 | score), the expected confusion matrix of a window follows from the scores alone
(:class:`~driftline.detectors.sketches.ExpectedConfusion`): an event predicted positive is a
true positive with probability p and a false positive with probability 1 - p. Expected accuracy,
precision, recall and F1 follow from those expected counts, as in NannyML's CBPE (which uses the
same expectations per chunk). The estimate is available the moment a window's predictions close.

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

from driftline.detectors.sketches import ExpectedConfusion

__all__ = ["estimate_performance"]


def _ratio(num: float, den: float) -> float:
    """num / den with 0 when den == 0: scikit-learn's ``zero_division=0``, as the labelled metrics."""
    return num / den if den > 0 else 0.0


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
