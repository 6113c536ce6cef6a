"""Label-free drift of a binary model's own scores (detectors/comparison.py, profile.py).

Oracle: scipy's two-sample KS on the scores discretised to the grid every window counts them on
(``CalibratedScores``' logit bins): the binned test is exactly that test (asymptotic p-value).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from driftline.detectors.aggregates import WindowAggregate, feature_columns
from driftline.detectors.comparison import Reference, TestPolicy, compare
from driftline.detectors.hashing import stable_keys
from driftline.detectors.profile import ReferenceProfile, build_profile
from driftline.detectors.sketches import CalibratedScores


def _rows(g: np.random.Generator, n: int, shift: float) -> tuple[list[dict], np.ndarray]:
    """Scores of a model whose logit moves by ``shift``; one feature that never moves."""
    s = 1 / (1 + np.exp(-(g.normal(-1.0 + shift, 1.5, n))))
    rows = [{"prediction_id": f"p{i}", "features": {"x": float(g.normal())}, "score": float(s[i]),
             "prediction": str(int(s[i] > 0.5)), "label": str(int(g.random() < s[i]))} for i in range(n)]
    return rows, s


def _setup(shift: float, seed: int = 3, n: int = 500):
    """n = 500 against 4000 keeps en = n1 n2 / (n1 + n2) below 500, where ks_p_value is
    scipy's asymptotic mode itself (above it, Stephens' approximation, tests/test_drift.py)."""
    from driftline.platform.config import ModelConfig
    from driftline.streams.catalog import spec_from_profile

    g = np.random.default_rng(seed)
    ref_rows, ref_scores = _rows(g, 4000, 0.0)
    profile = build_profile(ref_rows, model_id="m", model_version="1", task="binary")
    profile = ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict())))  # as stored
    spec = spec_from_profile(ModelConfig(), profile)
    rows, scores = _rows(g, n, shift)
    agg = WindowAggregate(spec)
    idx = np.arange(n)
    agg.add_predictions(feature_columns([r["features"] for r in rows]), idx,
                        stable_keys([r["prediction_id"] for r in rows]),
                        np.array([r["prediction"] for r in rows], dtype=object), scores)
    return compare(agg, Reference.from_profile(profile, "file:r"), TestPolicy()), ref_scores, scores


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_the_score_test_is_scipys_ks_on_the_grid_discretised_scores(shift: float) -> None:
    found, ref_scores, scores = _setup(shift)
    entry = next(d for d in found.drift if d.feature == "score")
    grid = CalibratedScores()
    oracle = stats.ks_2samp(grid.bins(ref_scores), grid.bins(scores), method="asymp")
    assert entry.kind == "prediction" and entry.test == "ks"
    assert entry.statistic == pytest.approx(oracle.statistic, rel=1e-12)
    assert entry.raw_p_value == pytest.approx(oracle.pvalue, rel=1e-6)
    # corrected in the one family with the features' and the predictions' tests
    family = [d for d in found.drift if d.kind != "label"]
    assert entry.correction == "bh" and len(family) >= 3
    assert entry.p_value >= entry.raw_p_value
    assert entry.distance_name == "wasserstein_normed" and entry.distance >= 0
    assert entry.reference_summary.count == 4000 and entry.window_summary.count == 500


def test_a_shift_of_the_scores_alone_drifts_the_score_entry_and_no_feature() -> None:
    found, _, _ = _setup(0.6)
    by_name = {d.feature: d for d in found.drift}
    assert by_name["score"].drifted and not by_name["x"].drifted
    stationary, _, _ = _setup(0.0)
    assert not next(d for d in stationary.drift if d.feature == "score").drifted


def test_profiles_without_score_counts_have_no_score_test() -> None:
    g = np.random.default_rng(1)
    rows, _ = _rows(g, 500, 0.0)
    d = build_profile(rows, model_id="m", model_version="1", task="binary").to_dict()
    assert len(d["scores"]) == CalibratedScores().n_bins and sum(d["scores"]) == 500
    del d["scores"]
    assert ReferenceProfile.from_dict(d).scores is None
    assert "scores" not in build_profile(rows, model_id="m", model_version="1", task="regression").to_dict()
