"""PCA reconstruction-error drift from mergeable moments (detectors/multivariate.py).

Oracles: scikit-learn's StandardScaler + PCA and the direct per-row reconstruction error on the
same rows (what NannyML computes in batch); scipy's two-sample KS for the univariate tests the
multivariate signal must beat; ExactSum for the exactness of the sums.
"""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.preprocessing import QuantileTransformer, StandardScaler

from driftline.detectors import multivariate
from driftline.detectors.multivariate import MomentSketch, ReconstructionModel, fit_reconstruction
from driftline.detectors.sketches import ExactSum

NUMERIC = {"a": "numeric", "b": "numeric", "c": "numeric", "d": "numeric"}


def _correlated(rng: np.random.Generator, n: int, rho: float) -> dict[str, np.ndarray]:
    """a and b standard normal with correlation rho; c, d independent (c skewed)."""
    a = rng.normal(size=n)
    b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n)
    return {"a": a, "b": b, "c": rng.exponential(size=n) * 3 + 10, "d": rng.normal(5, 0.01, size=n)}


def test_doctests() -> None:
    assert doctest.testmod(multivariate).failed == 0


def test_the_window_error_from_moments_equals_sklearn_pca_reconstruction_row_by_row() -> None:
    rng = np.random.default_rng(7)
    ref = _correlated(rng, 3000, 0.7)
    model = fit_reconstruction(ref, NUMERIC)
    x_ref = _scored(ref, ref, model.features)
    scaler = StandardScaler().fit(x_ref)
    pca = PCA(n_components=0.65, svd_solver="full").fit(scaler.transform(x_ref))
    assert model.n_components == pca.n_components_ == 2
    # the same subspace (components are defined up to sign): equal projections
    np.testing.assert_allclose(
        model.components.T @ model.components, pca.components_.T @ pca.components_, atol=1e-10
    )
    for rho in (0.7, 0.0, -0.7):
        win = _correlated(rng, 700, rho)
        z = scaler.transform(_scored(ref, win, model.features))
        direct = ((z - pca.inverse_transform(pca.transform(z))) ** 2).sum(axis=1).mean()
        sketch = model.new_sketch()
        sketch.update(model.encode(win))
        result = model.evaluate(sketch)
        assert result.error == pytest.approx(direct, rel=1e-9)
        assert sum(result.contributions.values()) == pytest.approx(result.error, rel=1e-12)
    # the reference's own error and per-row spread: each row's error under a PCA fitted on the
    # other folds (interleaved rows), which sees each row as fresh, as a window is
    rows = _held_out_rows(scaler.transform(x_ref), 2)
    assert model.reference_error == pytest.approx(rows.mean(), rel=1e-9)
    assert model.row_sd == pytest.approx(rows.std(ddof=1), rel=1e-9)
    assert model.row_skew == pytest.approx(stats.skew(rows), rel=1e-9)
    lo, hi = model.band(400)
    sd = rows.std(ddof=1) * np.sqrt(1 / 400 + multivariate.REFERENCE_TERM / 3000)
    shift = 8 * stats.skew(rows) / (6 * 20)
    assert (lo, hi) == pytest.approx(
        (rows.mean() - sd * (3 - shift), rows.mean() + sd * (3 + shift)), rel=1e-9
    )


def _held_out_rows(z: np.ndarray, k: int) -> np.ndarray:
    """The oracle of the reference's calibration: each row's squared error under a PCA of
    ``k`` components fitted (scikit-learn) on the other folds of interleaved rows, standardised
    on those folds (StandardScaler); the residual is taken about 0, as the model's is."""
    rows = np.empty(len(z))
    folds = np.arange(len(z)) % multivariate.CALIBRATION_FOLDS
    for f in range(multivariate.CALIBRATION_FOLDS):
        held = folds == f
        scaler = StandardScaler().fit(z[~held])
        zt, zh = scaler.transform(z[~held]), scaler.transform(z[held])
        w = PCA(n_components=k, svd_solver="full").fit(zt).components_
        rows[held] = ((zh - zh @ w.T @ w) ** 2).sum(axis=1)
    return rows


def test_categoricals_are_frequency_encoded_and_missing_values_imputed_as_nannyml_does() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    x = rng.normal(size=n)
    colour = np.where(x + 0.3 * rng.normal(size=n) > 0, "red", np.where(rng.random(n) < 0.5, "blue", "green"))
    amount = x + 0.2 * rng.normal(size=n)
    amount[::50] = np.nan
    colour = colour.astype(object)
    colour[::70] = None
    ref = {"amount": amount, "colour": colour, "x": x}
    kinds = {"amount": "numeric", "colour": "categorical", "x": "numeric"}
    model = fit_reconstruction(ref, kinds)
    # oracle: impute (mean / most frequent), encode by reference frequency, scale, PCA
    mean_amount = np.nanmean(amount)
    present = colour[colour != None].astype(str)  # noqa: E711 (elementwise)
    values, counts = np.unique(present, return_counts=True)
    freq = dict(zip(values.tolist(), (counts / present.size).tolist(), strict=True))
    mode = values[np.argmax(counts)]
    assert mode == "red" and model.encodings[1].fill == "red"

    def encode(rows: dict) -> np.ndarray:
        col = np.array([freq.get("red" if c is None else c, 0.0) for c in rows["colour"]])
        filled = np.where(np.isnan(rows["amount"]), mean_amount, rows["amount"])
        return np.column_stack([_scores(amount, filled), col, _scores(x, rows["x"])])

    scaler = StandardScaler().fit(encode(ref))
    pca = PCA(n_components=0.65, svd_solver="full").fit(scaler.transform(encode(ref)))
    win = {
        "amount": rng.normal(size=400),
        "colour": rng.choice(["red", "blue", "purple", None], 400),
        "x": rng.normal(size=400),
    }
    z = scaler.transform(encode(win))
    np.testing.assert_allclose(model.encode(win), z, rtol=1e-12, atol=1e-12)
    direct = ((z - pca.inverse_transform(pca.transform(z))) ** 2).sum(axis=1).mean()
    sketch = model.new_sketch()
    sketch.update(model.encode(win))
    assert model.evaluate(sketch).error == pytest.approx(direct, rel=1e-9)


def test_merged_sketches_are_bit_identical_whatever_the_split_and_order() -> None:
    rng = np.random.default_rng(11)
    z = rng.normal(size=(5000, 4)) * np.array([1.0, 1e12, 1e-9, 3.0])
    whole = MomentSketch(4)
    whole.update(z)
    perm = rng.permutation(5000)
    parts = [MomentSketch(4) for _ in range(3)]
    for i, idx in enumerate(np.array_split(perm, [100, 3100])):
        parts[i].update(z[idx])
    merged = MomentSketch.from_dict(json.loads(json.dumps(parts[2].to_dict())))
    merged.merge(parts[0])
    merged.merge(parts[1])
    assert merged == whole
    assert merged.to_dict() == whole.to_dict()
    # each sum is exactly the ExactSum of its column (the same scale, the same integer)
    col = ExactSum()
    col.add(z[:, 1] * z[:, 2])
    assert whole.to_dict()["cross"][5] == col.to_json()  # (1, 2) in upper-triangle order
    assert whole.covariance() == pytest.approx(np.cov(z.T, ddof=0), rel=1e-9)


def test_the_model_round_trips_through_json_and_gives_the_same_result() -> None:
    rng = np.random.default_rng(5)
    model = fit_reconstruction(_correlated(rng, 1000, 0.8), NUMERIC, chunk_size=100)
    again = ReconstructionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    sketch = model.new_sketch()
    sketch.update(model.encode(_correlated(rng, 300, -0.8)))
    assert again.evaluate(sketch) == model.evaluate(sketch)
    assert again.chunk_band == model.chunk_band


def test_nannyml_chunk_band_is_mean_plus_minus_three_sd_of_reference_chunk_errors() -> None:
    rng = np.random.default_rng(9)
    ref = _correlated(rng, 2000, 0.6)
    model = fit_reconstruction(ref, NUMERIC, threshold="chunks", chunk_size=200)
    x = _scored(ref, ref, model.features)
    scaler = StandardScaler().fit(x)
    pca = PCA(n_components=0.65, svd_solver="full").fit(scaler.transform(x))
    rows = _held_out_rows(scaler.transform(x), pca.n_components_)
    chunks = rows.reshape(10, 200).mean(axis=1)
    lo, hi = model.band(123)
    assert lo == pytest.approx(chunks.mean() - 3 * chunks.std(ddof=1), rel=1e-9)
    assert hi == pytest.approx(chunks.mean() + 3 * chunks.std(ddof=1), rel=1e-9)


def test_bad_fits_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="at least two features"):
        fit_reconstruction({"a": np.zeros(10)}, {"a": "numeric"})
    with pytest.raises(ValueError, match=r"no column for \['b'\]"):
        fit_reconstruction({"a": np.zeros(10)}, {"a": "numeric", "b": "numeric"})
    with pytest.raises(ValueError, match="needs chunk_size"):
        fit_reconstruction(
            {"a": np.arange(10.0), "b": np.arange(10.0) ** 2},
            {"a": "numeric", "b": "numeric"},
            threshold="chunks",
        )


def _scores(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The oracle of a numeric feature's normal score: scikit-learn's QuantileTransformer
    (normal output) on the reference's ``GRID_POINTS + 1`` quantiles, clipped as the encoding
    clips its CDF (``ndtri`` is increasing, so clipping the score is the same)."""
    qt = QuantileTransformer(n_quantiles=multivariate.GRID_POINTS + 1, output_distribution="normal")
    qt.fit(np.asarray(ref, dtype=np.float64).reshape(-1, 1))
    bound = stats.norm.ppf(1 - multivariate.CLIP)
    return np.clip(qt.transform(np.asarray(x, dtype=np.float64).reshape(-1, 1))[:, 0], -bound, bound)


def _scored(ref: dict, rows: dict, features: list[str]) -> np.ndarray:
    return np.column_stack([_scores(ref[f], rows[f]) for f in features])


def _ks_any(ref: dict, win: dict, features: list[str], alpha: float) -> bool:
    """Bonferroni over features, as a univariate monitor with a correction would flag."""
    return any(stats.ks_2samp(ref[f], win[f]).pvalue < alpha / len(features) for f in features)


def test_false_alarms_on_stationary_windows_stay_near_the_three_sigma_rate() -> None:
    """20 references x 100 windows of 500 rows from the reference's own distribution."""
    rng = np.random.default_rng(2026)
    alarms = trials = 0
    for _ in range(20):
        model = fit_reconstruction(_correlated(rng, 5000, 0.7), NUMERIC)
        for _ in range(100):
            sketch = model.new_sketch()
            sketch.update(model.encode(_correlated(rng, 500, 0.7)))
            alarms += model.evaluate(sketch).alert
            trials += 1
    rate = alarms / trials
    # the normal two-sided 3-sigma rate, plus 3 binomial sds (without the skew and reference
    # terms of the band this measured 0.0115)
    assert rate <= 0.0027 + 3 * np.sqrt(0.0027 * 0.9973 / trials), rate


def test_independent_features_do_not_alarm_on_large_stationary_windows() -> None:
    """A flat spectrum (independent features, one of them lognormal like a raw amount) is where
    a PCA fitted on the reference overfits it most: calibrated on the reference's in-sample
    errors, windows of 2000 rows against 4000 alarmed 9 % of the time (the dropped direction is
    the sample's least-variance one). Calibrated on held-out folds: near the 3-sigma rate."""
    rng = np.random.default_rng(11)
    kinds = {"a": "numeric", "b": "numeric", "c": "numeric", "amount": "numeric"}

    def rows(n: int) -> dict:
        return {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n),
                "amount": rng.lognormal(3.0, 0.5, size=n)}

    alarms = trials = 0
    for _ in range(20):
        model = fit_reconstruction(rows(4000), kinds)
        for _ in range(25):
            sketch = model.new_sketch()
            sketch.update(model.encode(rows(2000)))
            alarms += model.evaluate(sketch).alert
            trials += 1
    assert alarms / trials <= 0.0027 + 3 * np.sqrt(0.0027 * (1 - 0.0027) / trials), alarms


def test_a_correlation_flip_with_unchanged_marginals_fires_while_univariate_ks_does_not() -> None:
    """Must show: a and b flip from +0.8 to -0.8 correlation, each marginal still N(0, 1).
    Over 200 seeded trials the reconstruction error flags (nearly) every window and names a and b
    as its drivers; KS on each feature (Bonferroni over four) flags about alpha of them."""
    rng = np.random.default_rng(17)
    fired = ks_fired = named = 0
    trials = 200
    for _ in range(trials):
        ref = _correlated(rng, 5000, 0.8)
        model = fit_reconstruction(ref, NUMERIC)
        win = _correlated(rng, 500, -0.8)
        sketch = model.new_sketch()
        sketch.update(model.encode(win))
        result = model.evaluate(sketch)
        fired += result.alert
        named += set(result.drivers[:2]) == {"a", "b"}
        ks_fired += _ks_any(ref, win, model.features, 0.05)
    assert fired / trials >= 0.99
    assert named / trials >= 0.99
    assert ks_fired / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)


def test_small_windows_are_never_alerted_and_an_empty_window_has_no_band() -> None:
    rng = np.random.default_rng(1)
    model = fit_reconstruction(_correlated(rng, 2000, 0.8), NUMERIC, min_n=30)
    sketch = model.new_sketch()
    sketch.update(model.encode(_correlated(rng, 29, -0.99)))
    assert not model.evaluate(sketch).alert
    assert model.band(0) == (-np.inf, np.inf)
    empty = model.evaluate(model.new_sketch())
    assert not empty.alert and empty.n == 0 and empty.drivers == []
    as_json = json.loads(json.dumps(empty.to_dict(), allow_nan=False))
    assert as_json["error"] is None and as_json["lower"] is None and as_json["contributions"]["a"] is None


def test_the_method_is_a_listed_name() -> None:
    from driftline.detectors.vocabulary import MULTIVARIATE_METHODS

    rng = np.random.default_rng(0)
    model = fit_reconstruction(_correlated(rng, 500, 0.5), NUMERIC)
    assert model.evaluate(model.new_sketch()).to_dict()["method"] in MULTIVARIATE_METHODS


def test_the_joins_typed_columns_encode_as_the_rows_do() -> None:
    from driftline.detectors.aggregates import feature_columns

    rng = np.random.default_rng(6)
    kinds = {"amount": "numeric", "colour": "categorical", "code": "categorical", "x": "numeric"}
    n = 1000
    ref = {
        "amount": rng.normal(size=n),
        "colour": rng.choice(["red", "blue"], size=n).astype(object),
        "code": rng.choice(["1", "2", "3"], size=n).astype(object),
        "x": rng.normal(size=n),
    }
    model = fit_reconstruction(ref, kinds)
    events = [
        {"amount": 1.5, "colour": "red", "code": 2, "x": 0.1},
        {"amount": "oops", "colour": None, "code": 3, "x": 0.2},  # a type error and a null: missing
        {"amount": 0.5, "colour": 7, "code": 1},  # x absent, colour a number: an unseen "7"
    ]
    expected = model.encode(
        {
            "amount": np.array([1.5, np.nan, 0.5]),
            "colour": np.array(["red", None, "7"], dtype=object),
            "code": np.array(["2", "3", "1"], dtype=object),
            "x": np.array([0.1, 0.2, np.nan]),
        }
    )
    np.testing.assert_array_equal(model.encode_columns(feature_columns(events)), expected)
    np.testing.assert_array_equal(
        model.encode_columns(feature_columns(events), np.array([2, 0])), expected[[2, 0]]
    )
    assert model.encode_columns(feature_columns([{"other": 1}])).shape == (1, 4)
    # a row encodes alike whatever else its batch holds (a partition or flush of its own)
    for i, event in enumerate(events):
        np.testing.assert_array_equal(model.encode_columns(feature_columns([event])), expected[[i]])


def test_exact_sums_hold_over_the_whole_float_range() -> None:
    rng = np.random.default_rng(13)
    z = rng.normal(size=(20_000, 3)) * 10.0 ** rng.integers(-150, 150, size=(20_000, 3))
    z[::7, 0] = 5e-324  # subnormals
    z[::11, 1] = -1.7e308 / 2**160  # large, so the products stay finite
    sketch = MomentSketch(3)
    sketch.update(z)
    d = sketch.to_dict()
    i, j = np.triu_indices(3)
    for c in range(3):
        col = ExactSum()
        col.add(z[:, c])
        assert d["sums"][c] == col.to_json()
    for k, (a, b) in enumerate(zip(i, j, strict=True)):
        prod = ExactSum()
        with np.errstate(over="ignore", invalid="ignore"):
            prod.add(z[:, a] * z[:, b])
        assert d["cross"][k] == prod.to_json()


def test_fitting_on_reference_rows_equals_fitting_on_their_columns() -> None:
    from driftline.detectors.multivariate import fit_reconstruction_rows

    rng = np.random.default_rng(8)
    cols = _correlated(rng, 800, 0.6)
    rows = [
        {f: float(cols[f][i]) for f in NUMERIC} | {"colour": ["red", "blue"][i % 3 == 0]} for i in range(800)
    ]
    rows[5]["a"] = None
    del rows[6]["b"]
    kinds = {**NUMERIC, "colour": "categorical"}
    by_rows = fit_reconstruction_rows(rows, kinds)
    a, b = cols["a"].copy(), cols["b"].copy()
    a[5], b[6] = np.nan, np.nan
    colour = np.array([["red", "blue"][i % 3 == 0] for i in range(800)], dtype=object)
    by_cols = fit_reconstruction({**cols, "a": a, "b": b, "colour": colour}, kinds)
    assert by_rows.to_dict() == by_cols.to_dict()


def test_a_residual_is_always_kept_and_a_constant_reference_is_refused() -> None:
    rng = np.random.default_rng(2)
    two = {"a": rng.normal(size=2000), "b": rng.normal(size=2000)}  # uncorrelated: 0.65 needs both
    pca = PCA(n_components=0.65, svd_solver="full").fit(
        StandardScaler().fit_transform(np.column_stack([*two.values()]))
    )
    assert pca.n_components_ == 2
    model = fit_reconstruction(two, {"a": "numeric", "b": "numeric"})
    assert model.n_components == 1 and model.reference_error > 0.5
    assert fit_reconstruction(two, {"a": "numeric", "b": "numeric"}, variance=5).n_components == 1
    # a constant feature is scaled by 1 (StandardScaler's rule) and costs nothing
    with_constant = fit_reconstruction(
        {**two, "c": np.full(2000, 3.0)}, {"a": "numeric", "b": "numeric", "c": "numeric"}
    )
    assert with_constant.encodings[2].scale == 1.0
    with pytest.raises(ValueError, match="nothing to reconstruct"):
        fit_reconstruction({"a": np.ones(50), "b": np.zeros(50)}, {"a": "numeric", "b": "numeric"})


def test_a_heavy_tailed_feature_does_not_false_alarm_small_windows() -> None:
    """A lognormal amount (sigma 1, as raw amounts are) standardised as it is gives squared
    errors far heavier-tailed than the band allows: stationary windows of 300 rows alarmed
    16 % of the time (78 of these 480 windows, with the raw encoding). Through its normal score
    (the reference's quantile grid), near the 3-sigma rate."""
    rng = np.random.default_rng(300)
    kinds = {"a": "numeric", "b": "numeric", "c": "numeric", "amount": "numeric"}

    def rows(n: int) -> dict:
        a = rng.normal(size=n)
        return {"a": a, "b": 0.7 * a + np.sqrt(0.51) * rng.normal(size=n), "c": rng.normal(size=n),
                "amount": rng.lognormal(3.0, 1.0, size=n)}

    alarms = trials = 0
    for _ in range(8):
        model = fit_reconstruction(rows(5000), kinds)
        for _ in range(60):
            sketch = model.new_sketch()
            sketch.update(model.encode(rows(300)))
            alarms += model.evaluate(sketch).alert
            trials += 1
    assert alarms / trials <= 0.0027 + 3 * np.sqrt(0.0027 * (1 - 0.0027) / trials), alarms


def test_normal_scores_are_monotone_clipped_and_mid_rank_on_atoms() -> None:
    """An atom (30 % zeros) takes the middle of its CDF jump; values outside the reference take
    the clipped extremes; an encoding written before the grid keeps the raw value."""
    rng = np.random.default_rng(4)
    x = rng.permutation(np.concatenate([np.zeros(1200), rng.lognormal(size=2800)]))
    grid, levels = multivariate.quantile_grid(x)
    # levels j/200 with j * 3999/200 <= 1199 (j = 0..59) fall on the zeros: mean 29.5/200
    assert grid[0] == 0.0 and grid[1] > 0 and levels[0] == pytest.approx(29.5 / 200, rel=1e-12)
    s = multivariate.normal_scores(np.array([-5.0, 0.0, 1e9]), grid, levels)
    bound = stats.norm.ppf(1 - multivariate.CLIP)
    assert s.tolist() == pytest.approx([-bound, stats.norm.ppf(29.5 / 200), bound], rel=1e-12)
    model = fit_reconstruction({"x": x, "y": rng.normal(size=4000)}, {"x": "numeric", "y": "numeric"})
    old = multivariate.FeatureEncoding.from_dict({k: v for k, v in model.encodings[0].to_dict().items()
                                                  if k not in ("grid", "levels")})
    assert old.encode(np.array([2.0])).tolist() == [(2.0 - old.mean) / old.scale]
