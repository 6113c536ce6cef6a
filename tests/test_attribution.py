"""Feature attribution drift by nDCG (detectors/attribution.py); oracle sklearn.metrics.ndcg_score,
the function SageMaker Clarify's documentation points to for its attribution-drift check."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from driftline.detectors import attribution
from driftline.detectors.attribution import AttributionSums, attribution_drift, ndcg

FEATURES = ["amount", "country", "device", "hour", "merchant", "tenure"]


def _sk(reference: dict, window: dict, k: int | None = None) -> float:
    names = sorted(set(reference) | set(window))
    return float(
        ndcg_score([[reference.get(f, 0.0) for f in names]], [[window.get(f, 0.0) for f in names]], k=k)
    )


def test_doctests() -> None:
    assert doctest.testmod(attribution).failed == 0


def test_ndcg_equals_sklearn_on_random_attributions_with_ties_and_top_k() -> None:
    rng = np.random.default_rng(21)
    for trial in range(300):
        ref = dict(zip(FEATURES, rng.exponential(size=6).round(1), strict=True))
        win = dict(zip(FEATURES, rng.exponential(size=6).round(1 if trial % 2 else 0), strict=True))  # ties
        k = None if trial % 3 else int(rng.integers(1, 6))
        assert ndcg(ref, win, k) == pytest.approx(_sk(ref, win, k), rel=1e-12, abs=1e-15)


def test_a_known_reordering_alerts_below_0_9_and_says_which_features_moved() -> None:
    reference = {
        "amount": 0.40,
        "country": 0.25,
        "device": 0.15,
        "hour": 0.10,
        "merchant": 0.06,
        "tenure": 0.04,
    }
    # the same ranking with other magnitudes: no drift
    same = attribution_drift(reference, {f: v / 2 + 0.001 for f, v in reference.items()})
    assert same.ndcg == pytest.approx(1.0) and not same.alert and same.moved == []
    # two low features swap: a small loss, no alert
    minor = attribution_drift(reference, {**reference, "merchant": 0.04, "tenure": 0.06})
    assert minor.ndcg == pytest.approx(_sk(reference, {**reference, "merchant": 0.04, "tenure": 0.06}))
    assert 0.99 < minor.ndcg < 1.0 and not minor.alert
    # the model stops using amount and leans on tenure: amount falls to last, tenure rises to first
    window = {"tenure": 0.45, "country": 0.25, "device": 0.15, "hour": 0.10, "merchant": 0.06, "amount": 0.01}
    shifted = attribution_drift(reference, window)
    assert shifted.ndcg == pytest.approx(_sk(reference, window), rel=1e-12)
    assert shifted.ndcg < 0.9 and shifted.alert
    assert shifted.window_ranking == ["tenure", "country", "device", "hour", "merchant", "amount"]
    assert shifted.moved == [("amount", 1, 6), ("tenure", 6, 1)]
    # a feature the window no longer attributes at all counts 0 there
    assert ndcg(reference, {f: v for f, v in reference.items() if f != "amount"}) == pytest.approx(
        _sk(reference, {**{f: v for f, v in reference.items() if f != "amount"}, "amount": 0.0})
    )


def test_attribution_sums_merge_exactly_and_round_trip() -> None:
    rng = np.random.default_rng(3)
    values = {f: rng.normal(scale=10.0 ** rng.integers(-8, 8), size=1000) for f in FEATURES}
    whole, a, b = AttributionSums(), AttributionSums(), AttributionSums()
    for f, v in values.items():
        whole.update(f, v)
        a.update(f, v[:300])
        b.update(f, v[300:][::-1])
    b = AttributionSums.from_dict(json.loads(json.dumps(b.to_dict())))
    b.merge(a)
    assert b == whole
    means = whole.means()
    for f, v in values.items():
        assert means[f] == pytest.approx(np.abs(v).mean(), rel=1e-14)
