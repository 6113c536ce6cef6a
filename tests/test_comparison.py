"""The comparison interface (detectors/comparison.py): a window against its reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from driftline.detectors.aggregates import AggregateSpec, WindowAggregate
from driftline.detectors.comparison import Reference, TestPolicy, compare
from driftline.detectors.sketches import CategoricalSketch


def _window(counts: dict[str, int]) -> WindowAggregate:
    agg = WindowAggregate(AggregateSpec(categories={"colour": sorted(counts)}))
    sketch = CategoricalSketch(categories=sorted(counts))
    sketch.update(np.array([c for c, n in counts.items() for _ in range(n)], dtype=object))
    agg.categorical["colour"] = sketch
    agg.n_predictions = sum(counts.values())
    agg.present["colour"] = agg.n_predictions
    return agg


@pytest.mark.parametrize("correction", ["bh", "bonferroni", "none"])
def test_a_statistic_of_exactly_zero_is_reported_as_zero_not_missing(correction: str) -> None:
    """Identical proportions give chi-square 0.0 with p = 1. The correction used to round-trip
    results through ``statistic or nan``, which turned 0.0 into null in every report."""
    counts = {"red": 30, "blue": 70}
    ref = Reference("test", categorical={"colour": dict(counts)})
    found = compare(_window(counts), ref, TestPolicy(correction=correction))
    (entry,) = found.drift
    expected = stats.chi2_contingency(np.array([[30, 70], [30, 70]]), correction=False)
    assert entry.statistic == expected.statistic == 0.0
    assert entry.p_value == pytest.approx(1.0)
    assert (entry.drifted, found.dataset_drift, found.drift_share) == (False, False, 0.0)


def test_a_window_without_reference_has_quality_but_no_drift() -> None:
    found = compare(_window({"red": 1, "blue": 3}), None, TestPolicy())
    assert (found.drift, found.drift_share, found.dataset_drift) == ([], None, None)
    assert found.quality["colour"].missing_rate == 0.0


# ---- effect sizes on every verdict (issue 14) -------------------------------------------------
def _feed(spec: AggregateSpec, x: np.ndarray, c: np.ndarray, flag: np.ndarray, g: np.random.Generator,
          prefix: str) -> WindowAggregate:
    from driftline.detectors.aggregates import feature_columns
    from driftline.detectors.hashing import stable_keys

    n = x.size
    agg = WindowAggregate(spec)
    rows = [{"x": float(a), "c": str(b), "flag": bool(f)} for a, b, f in zip(x, c, flag, strict=True)]
    cols = feature_columns(rows)
    idx = np.arange(n)
    keys = stable_keys([f"{prefix}{i}" for i in idx])
    preds = np.array([str(int(v < 0.45)) for v in g.random(n)], dtype=object)
    agg.add_predictions(cols, idx, keys, preds, np.full(n, np.nan))
    labels = np.array([str(int(v < 0.45)) for v in g.random(n)], dtype=object)
    agg.add_outcomes(preds, labels, np.full(n, np.nan), keys)
    return agg


def _profile_and_window(shift: float = 0.25, which: str = "profile"):
    """A reference (gridded profile, a profile from before grids, or bootstrapped from 4000
    events) and a 3000-event window whose x moved by ``shift`` sd and whose c changed mix."""
    from driftline.detectors.profile import ReferenceProfile, build_profile
    from driftline.platform.config import ModelConfig
    from driftline.streams.catalog import spec_from_profile

    g = np.random.default_rng(14)
    m = 4000
    rx, rc, rf = g.normal(5.0, 2.0, m), g.choice(list("abc"), size=m), g.random(m) < 0.3
    rows = [
        {"prediction_id": f"r{i}", "features": {"x": float(rx[i]), "c": str(rc[i]), "flag": bool(rf[i])},
         "prediction": str(int(g.random() < 0.4)), "label": str(int(g.random() < 0.4))}
        for i in range(m)
    ]
    profile = build_profile(rows, model_id="m", model_version="1", task="binary")
    if which == "old profile":  # as written before grids existed
        old = profile.to_dict()
        for f in old["features"].values():
            f.pop("grid", None)
            f.pop("grid_counts", None)
        profile = ReferenceProfile.from_dict(old)
    n = 3000
    x = g.normal(5.0 + shift * 2.0, 2.0, n)
    c = g.choice(list("abc"), size=n, p=[0.5, 0.3, 0.2])
    flag = g.random(n) < 0.3
    if which == "bootstrap":  # no profile: the default spec, a reference from the first windows
        spec = AggregateSpec()
        boot = _feed(spec, rx, rc, rf, g, "r")
        ref = Reference.from_aggregate(boot, {"x": [boot.numeric["x"].sample_values]})
    else:
        spec = spec_from_profile(ModelConfig(), profile)
        ref = Reference.from_profile(profile, "file:r")
    return profile, ref, _feed(spec, x, c, flag, g, "w"), x, c


@pytest.mark.parametrize("which", ["profile", "old profile", "bootstrap"])
def test_every_drift_entry_carries_its_effect_size_and_both_summaries(which: str) -> None:
    """Must show: a drift entry without a distance, a raw p-value or a summary fails here, for
    every kind of entry (numeric, categorical, binary feature; predictions; labels) and every
    kind of reference (gridded profile, a profile from before grids, bootstrapped)."""
    profile, ref, agg, x, c = _profile_and_window(which=which)
    found = compare(agg, ref, TestPolicy())
    kinds = {(d.feature, d.kind) for d in found.drift}
    expected_kinds = {("x", "feature"), ("c", "feature"), ("flag", "feature"), ("prediction", "prediction")}
    assert expected_kinds <= kinds
    if which != "bootstrap":  # a bootstrapped reference learns no label counts
        assert ("label", "label") in kinds
    for d in found.drift:
        assert d.distance is not None and math.isfinite(d.distance) and d.distance >= 0, d
        assert d.distance_name == ("wasserstein_normed" if d.feature == "x" else "jensen_shannon"), d
        assert d.raw_p_value is not None and d.p_value is not None and d.p_value >= d.raw_p_value, d
        assert d.correction == ("bonferroni" if d.kind == "label" else "bh"), d
        assert d.reference_summary is not None and d.reference_summary.count > 0, d
        assert d.window_summary is not None and d.window_summary.count > 0, d
    x_entry = next(d for d in found.drift if d.feature == "x")
    w = x_entry.window_summary
    assert w is not None and w.count == x.size
    assert w.mean == pytest.approx(float(np.mean(x)), rel=1e-12)
    assert w.std == pytest.approx(float(np.std(x)), rel=1e-12)
    assert w.q25 is not None and w.median is not None and w.q75 is not None
    assert abs(w.median - float(np.median(x))) < 0.1  # at grid (or sample) resolution
    assert x_entry.distance == pytest.approx(stats.wasserstein_distance(profile.features["x"].sample, x)
                                             / profile.features["x"].std, abs=0.05)
    assert x_entry.drifted and x_entry.distance >= 0.2  # a quarter-sigma shift, stated in sigmas
    if which != "bootstrap":
        assert len(w.edges) == len(w.shares) + 1 and sum(w.shares) == pytest.approx(1.0)
    c_entry = next(d for d in found.drift if d.feature == "c")
    assert c_entry.window_summary is not None
    values, counts = np.unique(c, return_counts=True)
    shares = {v: k / c.size for v, k in zip(values.tolist(), counts.tolist(), strict=True)}
    assert c_entry.window_summary.categories == shares


def test_numeric_features_use_the_whole_window_against_a_gridded_profile() -> None:
    """With a grid the KS statistic comes from every event's count (not the bottom-k sample):
    it equals scipy's on the raw values within the grid's stated bound."""
    from driftline.detectors import drift

    profile, ref, agg, x, _ = _profile_and_window(shift=0.05)
    entry = next(d for d in compare(agg, ref, TestPolicy()).drift if d.feature == "x")
    sk = agg.numeric["x"]
    assert sk.grid is not None and sk.grid_counts.sum() == x.size > sk.sample_size
    fp = profile.features["x"]
    expected = drift.ks_binned(fp.grid_counts, sk.grid_counts)
    assert entry.statistic == expected.statistic and entry.raw_p_value == pytest.approx(expected.p_value)
    _, old_ref, old_agg, _, _ = _profile_and_window(shift=0.05, which="old profile")
    sampled = next(d for d in compare(old_agg, old_ref, TestPolicy()).drift if d.feature == "x")
    expected_sample = stats.ks_2samp(fp.sample, old_agg.numeric["x"].sample_values).statistic
    assert old_agg.numeric["x"].grid is None and sampled.statistic == pytest.approx(expected_sample)


def test_label_drift_is_corrected_with_the_window_family() -> None:
    _, ref, agg, _, _ = _profile_and_window()
    found = compare(agg, ref, TestPolicy())
    label = next(d for d in found.drift if d.kind == "label")
    family = [d for d in found.drift if d.kind != "label"]
    assert label.raw_p_value is not None
    assert label.p_value == pytest.approx(min(1.0, label.raw_p_value * (len(family) + 1)))
    uncorrected = compare(agg, ref, TestPolicy(correction="none"))
    assert all(d.correction is None and d.p_value == d.raw_p_value for d in uncorrected.drift)


def test_drift_evidence_ranks_drifted_features_by_effect() -> None:
    from driftline.detectors.comparison import drift_evidence

    _, ref, agg, _, _ = _profile_and_window(shift=0.5)
    found = compare(agg, ref, TestPolicy())
    ranked = drift_evidence(found.drift)
    assert [r["feature"] for r in ranked] == ["x", "c"]
    assert ranked[0]["distance"] > ranked[1]["distance"]
    assert set(ranked[0]) == {"feature", "test", "distance", "distance_name", "p_value", "raw_p_value"}


def test_drift_entries_written_before_effect_sizes_still_decode() -> None:
    import msgspec

    from driftline.schemas.results import DriftTest

    old = b'{"feature": "x", "kind": "feature", "test": "ks", "statistic": 0.2, "p_value": 0.01,' \
          b' "threshold": 0.05, "drifted": true}'
    entry = msgspec.json.decode(old, type=DriftTest)
    assert (entry.raw_p_value, entry.distance, entry.reference_summary) == (None, None, None)
    # and a summary leaves out what it does not have
    _, ref, agg, _, _ = _profile_and_window()
    c = next(d for d in compare(agg, ref, TestPolicy()).drift if d.feature == "c")
    assert "mean" not in msgspec.json.decode(msgspec.json.encode(c.window_summary))
