"""Label-free performance estimation: exact against a weighted scikit-learn oracle, unbiased when
scores are calibrated, biased (the documented limitation) when they are not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from driftline.detectors.estimation import estimate_performance
from driftline.detectors.sketches import ExpectedConfusion

pytestmark = pytest.mark.timeout(60)


def _estimate(pred: np.ndarray, p: np.ndarray) -> dict[str, float]:
    ec = ExpectedConfusion()
    ec.update(pred, p)
    return estimate_performance(ec)


def test_equals_sklearn_on_events_split_into_weighted_outcomes() -> None:
    """E[confusion] is the confusion matrix of each event counted as y=1 with weight p and y=0
    with weight 1-p, so sklearn's weighted metrics are an exact, independent oracle."""
    rng = np.random.default_rng(1)
    p = rng.random(777)
    pred = rng.random(777) < 0.4  # predictions need not be thresholded scores
    y = np.r_[np.ones(p.size), np.zeros(p.size)]
    yhat = np.r_[pred, pred].astype(int)
    w = np.r_[p, 1.0 - p]
    got = _estimate(pred, p)
    assert got["estimated_accuracy"] == pytest.approx(accuracy_score(y, yhat, sample_weight=w), abs=1e-12)
    assert got["estimated_precision"] == pytest.approx(precision_score(y, yhat, sample_weight=w), abs=1e-12)
    assert got["estimated_recall"] == pytest.approx(recall_score(y, yhat, sample_weight=w), abs=1e-12)
    assert got["estimated_f1"] == pytest.approx(f1_score(y, yhat, sample_weight=w), abs=1e-12)


def test_calibrated_scores_estimate_realised_accuracy() -> None:
    rng = np.random.default_rng(2024)
    errors: dict[str, list[float]] = {"accuracy": [], "precision": [], "recall": [], "f1": []}
    realised_fn = {"accuracy": accuracy_score, "precision": precision_score,
                   "recall": recall_score, "f1": f1_score}
    for _ in range(200):
        p = rng.beta(2.0, 2.0, size=5000)
        y = (rng.random(p.size) < p).astype(int)  # calibrated by construction
        pred = p >= 0.5
        est = _estimate(pred, p)
        for name, fn in realised_fn.items():
            errors[name].append(est[f"estimated_{name}"] - fn(y, pred.astype(int)))
    mae = {k: float(np.mean(np.abs(v))) for k, v in errors.items()}
    assert mae["accuracy"] <= 0.01
    assert max(mae.values()) <= 0.02
    # unbiased: the mean signed error is within 4 standard errors of 0
    for v in errors.values():
        assert abs(np.mean(v)) <= 4 * np.std(v) / math.sqrt(len(v))


def test_concept_drift_biases_the_estimate() -> None:
    """After concept drift (here: P(y=1|x) pulled towards 0.5, the model now overconfident)
    the scores no longer mean what they say and CBPE overestimates accuracy: the limitation
    the module documents, not a bug to fix here."""
    rng = np.random.default_rng(5)
    gaps = []
    for _ in range(50):
        p = rng.beta(2.0, 2.0, size=5000)
        true_p = 0.5 + 0.5 * (p - 0.5)
        y = (rng.random(p.size) < true_p).astype(int)
        pred = p >= 0.5
        gaps.append(_estimate(pred, p)["estimated_accuracy"] - accuracy_score(y, pred.astype(int)))
    # expected gap: E|p - 0.5| * 0.5 under Beta(2, 2) = 0.1875 * 0.5 ≈ 0.094
    assert np.mean(gaps) == pytest.approx(0.09375, abs=0.01)
    assert min(gaps) > 0.05


def test_merge_in_any_split_is_bit_identical_to_one_pass() -> None:
    rng = np.random.default_rng(9)
    p = np.r_[rng.random(3000), np.nan, 1e-300, 1.0]
    pred = rng.random(p.size) < 0.5
    whole = ExpectedConfusion()
    whole.update(pred, p)
    parts = []
    for idx in np.array_split(rng.permutation(p.size), 5):
        part = ExpectedConfusion()
        part.update(pred[idx], p[idx])
        parts.append(ExpectedConfusion.from_dict(json.loads(json.dumps(part.to_dict()))))
    merged = ExpectedConfusion()
    for part in reversed(parts):
        merged.merge(part)
    assert merged == whole
    assert merged.n == 3002  # the NaN score is skipped
    assert estimate_performance(merged) == estimate_performance(whole)


def test_empty_and_invalid_inputs() -> None:
    assert all(math.isnan(v) for v in estimate_performance(ExpectedConfusion()).values())
    only_negative = _estimate(np.array([False, False]), np.array([0.2, 0.4]))
    assert only_negative["estimated_precision"] == 0.0  # zero_division=0, as scikit-learn
    assert only_negative["estimated_accuracy"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _estimate(np.array([True]), np.array([1.5]))
