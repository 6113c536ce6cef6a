"""Metrics from sketches against scikit-learn on the same events (the independent oracle)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from driftline.detectors.metrics import (
    classification_metrics,
    probability_metrics,
    ranking_metrics,
    regression_metrics,
)
from driftline.detectors.sketches import ConfusionCounts, ProbabilitySums, RegressionSums, ScoreHistogram

SEEDS = [0, 1, 2, 3, 4]
TOL = 1e-9


def _chunks(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random split of range(n), to feed sketches batch by batch (and merge some)."""
    cuts = np.sort(rng.integers(0, n, size=4))
    return np.split(np.arange(n), cuts)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_classes", [2, 4])
def test_classification_matches_sklearn(seed: int, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    classes = np.array(["cat", "dog", "eel", "fox"][:n_classes], dtype=object)
    y = classes[rng.integers(0, n_classes, 500)]
    # predictions never say the last class (zero_division path) and sometimes an unseen one
    p = np.concatenate([classes[:-1], ["gnu"]])[rng.integers(0, n_classes, 500)]
    parts = []
    for idx in _chunks(y.size, rng):
        cc = ConfusionCounts()
        cc.update(y[idx], p[idx])
        parts.append(cc)
    cc = parts[0]
    for other in parts[1:]:
        cc.merge(other)
    m = classification_metrics(cc)
    labels = sorted(set(y) | set(p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=TOL)
    assert m["balanced_accuracy"] == pytest.approx(_balanced(y, p), abs=TOL)
    for avg in ("macro", "micro", "weighted"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(y, p, average=avg, zero_division=0)
        assert m[f"precision_{avg}"] == pytest.approx(pr, abs=TOL)
        assert m[f"recall_{avg}"] == pytest.approx(rc, abs=TOL)
        assert m[f"f1_{avg}"] == pytest.approx(f1, abs=TOL)
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    for i, label in enumerate(labels):
        assert m[f"precision.{label}"] == pytest.approx(pr[i], abs=TOL)
        assert m[f"recall.{label}"] == pytest.approx(rc[i], abs=TOL)
        assert m[f"f1.{label}"] == pytest.approx(f1[i], abs=TOL)
        assert m[f"support.{label}"] == sup[i]


def _balanced(y: np.ndarray, p: np.ndarray) -> float:
    # sklearn warns about labels predicted but never true, and ignores them (as we do)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skm.balanced_accuracy_score(y, p)


def test_empty_sketches_give_nan() -> None:
    assert math.isnan(classification_metrics(ConfusionCounts())["accuracy"])
    assert math.isnan(probability_metrics(ProbabilitySums())["log_loss"])
    assert math.isnan(ranking_metrics(ScoreHistogram())["roc_auc"])
    r = regression_metrics(RegressionSums())
    assert all(math.isnan(r[k]) for k in ("mae", "rmse", "mape", "r2", "mean_error"))


@pytest.mark.parametrize("seed", SEEDS)
def test_probability_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    p = np.clip(rng.beta(2, 2, 400) * 0.6 + 0.4 * y, 0, 1)
    p[:3] = [0.0, 1.0, 1e-20]  # clipping path
    ps = ProbabilitySums()
    for idx in _chunks(y.size, rng):
        ps.update(y[idx], p[idx])
    m = probability_metrics(ps)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), abs=TOL)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p), abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_bins", [10, 200])
def test_ranking_exact_on_bins_and_within_bound_on_raw(seed: int, n_bins: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 3000)
    s = 1.0 / (1.0 + np.exp(-(rng.normal(size=y.size) + 1.2 * y)))
    h = ScoreHistogram(n_bins)
    for idx in _chunks(y.size, rng):
        h.update(y[idx], s[idx])
    m = ranking_metrics(h)
    b = h.bins(s)
    # exact for the binned scores
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, b), abs=TOL)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, b), abs=TOL)
    # documented bound against the raw scores, and the bound is informative
    raw_auc, raw_ap = skm.roc_auc_score(y, s), skm.average_precision_score(y, s)
    assert abs(m["roc_auc"] - raw_auc) <= m["roc_auc_error_bound"] + 1e-12
    assert abs(m["pr_auc"] - raw_ap) <= m["pr_auc_error_bound"] + 1e-12
    if n_bins == 200:
        assert m["roc_auc_error_bound"] < 0.01 and m["pr_auc_error_bound"] < 0.02


def test_ranking_bounds_are_tight_enough_to_matter() -> None:
    # all scores in one bin: the bound must admit every possible raw AUC/AP
    y = np.array([0, 1, 0, 1])
    s = np.array([0.501, 0.502, 0.503, 0.504])
    h = ScoreHistogram(10)
    h.update(y, s)
    m = ranking_metrics(h)
    assert (m["roc_auc"], m["roc_auc_error_bound"]) == (0.5, 0.5)
    assert m["pr_auc"] == 0.5
    assert abs(m["pr_auc"] - skm.average_precision_score(y, s)) <= m["pr_auc_error_bound"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_regression_matches_sklearn(seed: int, offset: float) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=500) * 3 + offset
    y[0] = 0.0  # MAPE's eps denominator
    yp = y + rng.normal(size=500)
    rs = RegressionSums()
    for idx in _chunks(y.size, rng):
        part = RegressionSums()
        part.update(y[idx], yp[idx])
        rs.merge(part)
    m = regression_metrics(rs)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, yp), abs=TOL)
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(y, yp), abs=TOL)
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, yp), rel=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(y, yp), abs=TOL)
    assert m["mean_error"] == pytest.approx(float(np.mean(yp - y)), abs=TOL)


def test_regression_r2_edge_cases_follow_sklearn() -> None:
    for y, yp in (([2.0, 2.0], [2.0, 2.0]), ([2.0, 2.0], [1.0, 2.0]), ([1.0, 3.0], [1.0, 3.0])):
        rs = RegressionSums()
        rs.update(np.array(y), np.array(yp))
        assert regression_metrics(rs)["r2"] == skm.r2_score(y, yp)
    rs = RegressionSums()
    rs.update(np.array([1.0]), np.array([2.0]))
    assert math.isnan(regression_metrics(rs)["r2"])


@pytest.mark.parametrize("module", ["metrics"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"driftline.detectors.{module}"))
    assert result.attempted > 0 and result.failed == 0
