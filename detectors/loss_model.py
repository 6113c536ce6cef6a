"""Label-free MAE and RMSE for regression models: a loss model fitted on the reference.

NannyML's direct loss estimation (DLE) fits a model of each event's loss |y - ŷ| (or (y - ŷ)²)
on the reference, then averages its predictions over a window. Here the loss model is a
function of the *prediction* alone: quantile bins of ŷ on the reference, each with the mean
and variance of |e| and e². A window then needs only the count of its predictions per bin
(a mergeable histogram), and

    estimated_mae  = Σ_b c_b · mean|e|_b / n,    estimated_rmse = sqrt(Σ_b c_b · mean(e²)_b / n).

What it sees and what it does not. A model's error usually depends on where it predicts
(heteroscedastic targets, saturating predictions), so a window whose predictions move into
regions where the model erred more on the reference gets a higher estimate. A shift in the
features that leaves ŷ where it was but makes the model wrong there (concept drift, or
covariate shift into regions the reference never had at that ŷ) is invisible, as for CBPE;
NannyML's DLE, with the features as inputs, sees more of the latter. A feature-based loss
model would have to be evaluated on every event's feature vector as it is folded, and shipped
as something other than JSON: not done.

Intervals: given the window's predictions, the realised errors are independent draws with the
bin's variance, and each bin's mean was itself estimated from r_b reference rows, so
Var(estimate - realised) = Σ_b c_b² · Var_b · (1/c_b + 1/r_b) / n² (delta method for RMSE).

>>> import numpy as np
>>> m = fit_loss_model(np.array([0.0, 1.0, 2.0, 3.0] * 25), np.array([0.5, 1.0, 2.0, 4.0] * 25), bins=2)
>>> m.edges, m.abs_mean
((0.5, 1.5, 4.0), (0.25, 0.5))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.detectors.estimation import two_sided_z
from driftline.detectors.sketches import bin_index

__all__ = ["LossModel", "estimate_regression", "fit_loss_model"]

_VERSION = 1
#: fewer labelled reference rows than this fit no loss model
MIN_ROWS = 100


@dataclass(frozen=True, slots=True)
class LossModel:
    """Per prediction bin (``edges``, as :func:`~driftline.detectors.sketches.bin_index` bins):
    reference rows, mean and variance of |e| and of e²."""

    edges: tuple[float, ...]
    rows: tuple[int, ...]
    abs_mean: tuple[float, ...]
    abs_var: tuple[float, ...]
    sq_mean: tuple[float, ...]
    sq_var: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "edges": list(self.edges),
            "rows": list(self.rows),
            "abs_mean": list(self.abs_mean),
            "abs_var": list(self.abs_var),
            "sq_mean": list(self.sq_mean),
            "sq_var": list(self.sq_var),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossModel:
        if int(d.get("v", 1)) > _VERSION:
            raise ValueError(f"loss model format v{d['v']} is newer than this driftline reads (v{_VERSION})")

        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(v) for v in d[key])

        return cls(
            floats("edges"),
            tuple(int(v) for v in d["rows"]),
            floats("abs_mean"),
            floats("abs_var"),
            floats("sq_mean"),
            floats("sq_var"),
        )


def fit_loss_model(y: np.ndarray, y_pred: np.ndarray, *, bins: int = 20) -> LossModel | None:
    """Quantile bins of the predictions (deduplicated edges) and the error moments in each;
    None below :data:`MIN_ROWS` finite pairs. Bins with fewer than two rows borrow the
    overall moments, so no bin has an undefined variance."""
    t = np.asarray(y, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if t.size < MIN_ROWS:
        return None
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size < 2:
        edges = np.repeat(edges, 2)
    k = edges.size - 1
    b = bin_index(edges, p)
    a = np.abs(t - p)
    s = a * a
    rows = np.bincount(b, minlength=k)
    out: dict[str, list[float]] = {"abs_mean": [], "abs_var": [], "sq_mean": [], "sq_var": []}
    for i in range(k):
        sel = b == i
        ai, si = (a[sel], s[sel]) if rows[i] >= 2 else (a, s)
        out["abs_mean"].append(float(ai.mean()))
        out["abs_var"].append(float(ai.var(ddof=1)))
        out["sq_mean"].append(float(si.mean()))
        out["sq_var"].append(float(si.var(ddof=1)))
    return LossModel(
        tuple(edges.tolist()),
        tuple(int(r) for r in rows.tolist()),
        *(tuple(out[key]) for key in ("abs_mean", "abs_var", "sq_mean", "sq_var")),
    )


def estimate_regression(
    counts: np.ndarray, model: LossModel, *, level: float = 0.95
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """``estimated_mae`` and ``estimated_rmse`` of a window whose predictions fell ``counts``
    times in the model's bins, with intervals at ``level`` (see the module docstring)."""
    c = np.asarray(counts, dtype=np.float64)
    n = float(c.sum())
    if n == 0 or c.size != len(model.rows):
        return {"estimated_mae": math.nan, "estimated_rmse": math.nan}, {}
    r = np.maximum(np.asarray(model.rows, dtype=np.float64), 1.0)
    z = two_sided_z(level)
    mae = float(np.dot(c, model.abs_mean) / n)
    mse = float(np.dot(c, model.sq_mean) / n)
    rmse = math.sqrt(mse)
    spread = c * c * (1.0 / np.maximum(c, 1.0) + 1.0 / r) / n**2
    sd_mae = math.sqrt(float(np.dot(spread, model.abs_var)))
    sd_mse = math.sqrt(float(np.dot(spread, model.sq_var)))
    sd_rmse = sd_mse / (2.0 * rmse) if rmse > 0 else 0.0
    intervals = {
        "estimated_mae": (max(0.0, mae - z * sd_mae), mae + z * sd_mae),
        "estimated_rmse": (max(0.0, rmse - z * sd_rmse), rmse + z * sd_rmse),
    }
    return {"estimated_mae": mae, "estimated_rmse": rmse}, intervals
