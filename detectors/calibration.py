"""Score calibration, fitted on the reference: what a model's score *means* as a probability.

Confidence-based performance estimation (:mod:`driftline.detectors.estimation`) reads a score p
as P(y = 1 | score). Few models' scores are that: boosted trees and over-fitted networks are
over-confident, SVMs emit margins. So the reference, which has scores *and* labels, fits a map
from score to probability once per model version, and the window applies it to every score
before summing (NannyML's CBPE does the same, with scikit-learn's calibrators).

Three candidates, chosen on the reference by 5-fold cross-validated Brier score (lower wins;
ties go to the simpler map, in the order below):

- ``identity``: the scores already are probabilities; fitting anything only adds noise.
- ``platt``: p = sigmoid(a·logit(s) + b), a logistic regression on the score's logit, fitted by
  Newton's method (Platt 1999; on the logit, as temperature scaling, Guo et al. 2017, so an
  over-confident model whose logits are scaled by k is fixed exactly by a = 1/k).
- ``isotonic``: the monotone step function of pool-adjacent-violators (Zadrozny & Elkan 2002;
  Barlow et al. 1972), interpolated linearly between block ends as scikit-learn's
  ``IsotonicRegression(out_of_bounds="clip")`` predicts. Flexible, needs more data.

Why not scikit-learn at runtime: both fits are a few lines of numpy, scikit-learn is ~40 MB
with its own compiled stack, and the worker only ever *applies* the map (``np.interp`` or one
sigmoid). The tests use ``IsotonicRegression`` and ``LogisticRegression`` as oracles.

A calibrator is plain JSON (``to_dict``/``from_dict``, versioned by ``"v"``), stored with the
reference profile.

>>> import numpy as np
>>> c = fit_calibrator(np.array([0.1, 0.2, 0.8, 0.9] * 50), np.array([0, 1, 0, 1] * 50), method="isotonic")
>>> c.method, c.apply(np.array([0.0, 0.5, 1.0])).round(3).tolist()
('isotonic', [0.0, 0.5, 1.0])
>>> Calibrator.from_dict(c.to_dict()) == c
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CALIBRATION_METHODS", "Calibrator", "fit_calibrator", "fit_isotonic", "fit_platt"]

#: candidate maps in order of simplicity (ties in cross-validation go to the earlier one)
CALIBRATION_METHODS = ("identity", "platt", "isotonic")
#: fewer labelled, scored reference rows than this (or a single class) keep the identity
MIN_ROWS = 200
_FOLDS = 5
#: cross-validation chooses on at most this many rows (a fixed subsample), the winner is then
#: fitted on all: the choice is stable long before that, and start-up stays bounded
_CV_ROWS = 100_000
_LOGIT_CLIP = 1e-12
_VERSION = 1


def _logit(s: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(s, dtype=np.float64), _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


@dataclass(frozen=True, slots=True)
class Calibrator:
    """A fitted score → probability map. ``x``/``y`` are the isotonic knots, ``a``/``b`` Platt's
    coefficients; ``n`` the reference rows it was fitted on (the interval of an estimate widens
    by the calibrator's own uncertainty, which shrinks with ``n``); ``scores`` the CV Brier
    score of each candidate, kept to show why this one won."""

    method: str = "identity"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    n: int = 0
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def fitted_rows(self) -> int:
        """The rows the map's parameters were estimated from; 0 for the identity, which has
        none (so an estimate's interval is not widened for a calibrator that was not fitted)."""
        return 0 if self.method == "identity" else self.n

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities; NaN stays NaN, scores are clipped into [0, 1] first."""
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "identity":
            return s
        if self.method == "platt":
            return np.where(np.isnan(s), np.nan, _sigmoid(self.a * _logit(s) + self.b))
        out = np.interp(np.clip(s, 0.0, 1.0), np.asarray(self.x), np.asarray(self.y))
        return np.where(np.isnan(s), np.nan, out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "method": self.method,
            "a": self.a,
            "b": self.b,
            "x": list(self.x),
            "y": list(self.y),
            "n": self.n,
            "scores": dict(sorted(self.scores.items())),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibrator:
        if int(d.get("v", 1)) > _VERSION:
            raise ValueError(f"calibrator format v{d['v']} is newer than this driftline reads (v{_VERSION})")
        method = str(d["method"])
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {method!r} ({', '.join(CALIBRATION_METHODS)})")
        return cls(
            method,
            float(d.get("a", 1.0)),
            float(d.get("b", 0.0)),
            tuple(float(v) for v in d.get("x", ())),
            tuple(float(v) for v in d.get("y", ())),
            int(d.get("n", 0)),
            {str(k): float(v) for k, v in (d.get("scores") or {}).items()},
        )


def fit_platt(scores: np.ndarray, y: np.ndarray, *, max_iter: int = 100) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of P(y=1) = sigmoid(a·logit(s) + b), by Newton-Raphson on the
    two-parameter log-likelihood (concave, so Newton converges from (1, 0) in a few steps)."""
    z = _logit(scores)
    t = np.asarray(y, dtype=np.float64)
    X = np.column_stack([z, np.ones_like(z)])
    w = np.array([1.0, 0.0])
    for _ in range(max_iter):
        p = _sigmoid(X @ w)
        grad = X.T @ (t - p)
        hess = (X * (p * (1.0 - p))[:, None]).T @ X + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w + step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return float(w[0]), float(w[1])


def fit_isotonic(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators on (score, label): the knots (x, y) of the non-decreasing fit,
    two per constant block (its first and last score), so ``np.interp`` reproduces
    scikit-learn's ``IsotonicRegression(out_of_bounds="clip").predict``."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    ux, inverse = np.unique(s, return_inverse=True)
    w = np.bincount(inverse).astype(np.float64)
    m = np.bincount(inverse, weights=t) / w
    # PAV with a stack of blocks: (weighted mean, weight, first index)
    means: list[float] = []
    weights: list[float] = []
    starts: list[int] = []
    for i, (mi, wi) in enumerate(zip(m.tolist(), w.tolist(), strict=True)):
        means.append(mi)
        weights.append(wi)
        starts.append(i)
        while len(means) > 1 and means[-2] >= means[-1]:
            w2 = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w2
            weights[-2] = w2
            means.pop()
            weights.pop()
            starts.pop()
    ends = [*(st - 1 for st in starts[1:]), ux.size - 1]
    xs: list[float] = []
    ys: list[float] = []
    for st, en, mean in zip(starts, ends, means, strict=True):
        xs.append(float(ux[st]))
        ys.append(mean)
        if en != st:
            xs.append(float(ux[en]))
            ys.append(mean)
    return np.array(xs), np.array(ys)


def _fit(method: str, s: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "platt":
        a, b = fit_platt(s, y)
        return Calibrator("platt", a=a, b=b, n=int(s.size))
    if method == "isotonic":
        x, v = fit_isotonic(s, y)
        return Calibrator("isotonic", x=tuple(x.tolist()), y=tuple(v.tolist()), n=int(s.size))
    return Calibrator("identity", n=int(s.size))


def fit_calibrator(scores: np.ndarray, y: np.ndarray, *, method: str = "auto") -> Calibrator:
    """Fit ``method`` (``"auto"``: the candidate with the lowest 5-fold CV Brier score) on the
    reference's scores and 0/1 labels. Rows with a NaN score are ignored. Folds are the rows'
    positions modulo 5 after a fixed permutation, so the choice is reproducible; above 100 000
    rows the choice is made on a fixed subsample of that size and the winner fitted on all."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    ok = ~np.isnan(s) & ~np.isnan(t)
    s, t = np.clip(s[ok], 0.0, 1.0), t[ok]
    if method != "auto":
        if method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration method must be auto or {', '.join(CALIBRATION_METHODS)}, not {method!r}"
            )
        return _fit(method, s, t)
    if s.size < MIN_ROWS or t.min(initial=0.0) == t.max(initial=0.0):
        return Calibrator("identity", n=int(s.size))
    rank = np.random.default_rng(0).permutation(s.size)
    keep = rank < _CV_ROWS  # a uniform subsample; all rows up to _CV_ROWS
    cs, ct = s[keep], t[keep]
    fold = rank[keep] % _FOLDS
    cv: dict[str, float] = {}
    for name in CALIBRATION_METHODS:
        se = 0.0
        for k in range(_FOLDS):
            test = fold == k
            fitted = _fit(name, cs[~test], ct[~test])
            se += float(np.sum((fitted.apply(cs[test]) - ct[test]) ** 2))
        cv[name] = se / cs.size
    best = min(CALIBRATION_METHODS, key=lambda name: (round(cv[name], 12), CALIBRATION_METHODS.index(name)))
    chosen = _fit(best, s, t)
    return Calibrator(
        chosen.method,
        chosen.a,
        chosen.b,
        chosen.x,
        chosen.y,
        chosen.n,
        {k: v for k, v in cv.items() if math.isfinite(v)},
    )
