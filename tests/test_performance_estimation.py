"""Calibrated performance estimation (CBPE): the calibrator against scikit-learn's, the expected
ROC AUC against a weighted scikit-learn oracle, and the estimates and their intervals against
the realised metrics (scikit-learn on the labels) over many seeded windows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from driftline.detectors.aggregates import AggregateSpec, WindowAggregate, feature_columns
from driftline.detectors.calibration import Calibrator, fit_calibrator, fit_isotonic, fit_platt
from driftline.detectors.comparison import TestPolicy, compare, performance
from driftline.detectors.estimation import calibrate_multiclass, estimate_binary, estimate_multiclass
from driftline.detectors.loss_model import LossModel, estimate_regression, fit_loss_model
from driftline.detectors.profile import ReferenceProfile, build_profile
from driftline.detectors.sketches import CalibratedScores, ExpectedConfusion

pytestmark = pytest.mark.timeout(300)

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def _model(rng: np.random.Generator, n: int, overconfidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels): true logit z ~ N(0, 3²), y ~ Bernoulli(sigmoid(z)), score sigmoid(k·z). k = 1 is a
    calibrated model, k = 2 an over-confident one (logits scaled by 2)."""
    z = rng.normal(0.0, 3.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    return 1.0 / (1.0 + np.exp(-overconfidence * z)), y


def _realised(y: np.ndarray, pred: np.ndarray, s: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(y, pred),
        "precision": precision_score(y, pred),
        "recall": recall_score(y, pred),
        "f1": f1_score(y, pred),
        "roc_auc": roc_auc_score(y, s),
    }


def _window(s: np.ndarray, cal: Calibrator | None) -> tuple[CalibratedScores, ExpectedConfusion]:
    q = s if cal is None else cal.apply(s)
    pred = s >= 0.5
    cs, ec = CalibratedScores(), ExpectedConfusion()
    cs.update(pred, s, q)
    ec.update(pred, q)
    return cs, ec


# ---- the calibrator ---------------------------------------------------------------------------
def test_isotonic_predicts_as_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    s, y = _model(rng, 5000, 2.0)
    s = np.round(s, 3)  # ties, which PAV must pool as scikit-learn does
    x, v = fit_isotonic(s, y)
    oracle = IsotonicRegression(out_of_bounds="clip").fit(s, y)
    grid = np.r_[rng.random(2000), 0.0, 1.0, s[:500]]
    np.testing.assert_allclose(np.interp(grid, x, v), oracle.predict(grid), rtol=0, atol=1e-12)
    cal = fit_calibrator(s, y, method="isotonic")
    np.testing.assert_allclose(cal.apply(grid), oracle.predict(grid), rtol=0, atol=1e-12)


def test_platt_is_the_maximum_likelihood_logistic_fit_on_the_logit() -> None:
    rng = np.random.default_rng(4)
    s, y = _model(rng, 20000, 2.0)
    a, b = fit_platt(s, y)
    logit = np.log(s) - np.log1p(-s)
    oracle = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(logit[:, None], y)
    assert a == pytest.approx(float(oracle.coef_[0, 0]), abs=1e-6)
    assert b == pytest.approx(float(oracle.intercept_[0]), abs=1e-6)
    assert a == pytest.approx(0.5, abs=0.03)  # logits scaled by 2 are scaled back by 1/2


def test_cross_validation_chooses_a_fitted_map_for_an_overconfident_model_only() -> None:
    rng = np.random.default_rng(5)
    over = fit_calibrator(*_model(rng, 20000, 2.0))
    calibrated = fit_calibrator(*_model(rng, 20000, 1.0))
    assert over.method in ("platt", "isotonic")
    assert over.scores[over.method] < over.scores["identity"]
    assert calibrated.method == "identity" and calibrated.fitted_rows == 0
    too_few = fit_calibrator(*_model(rng, 100, 2.0))
    assert too_few.method == "identity"
    for c in (over, calibrated):
        assert Calibrator.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="newer"):
        Calibrator.from_dict({**over.to_dict(), "v": 99})


def test_the_profile_keeps_scores_and_labels_and_stores_its_calibrator() -> None:
    rng = np.random.default_rng(6)
    s, y = _model(rng, 3000, 2.0)
    rows = [
        {
            "prediction_id": str(i),
            "features": {"x": float(v)},
            "prediction": str(int(v >= 0.5)),
            "label": str(t),
            **({"score": float(v)} if i % 2 else {"scores": {"1": float(v), "0": 1 - float(v)}}),
        }
        for i, (v, t) in enumerate(zip(s, y, strict=True))
    ]
    profile = build_profile(rows, model_id="m", model_version="7", task="binary")
    assert profile.calibrator is not None and profile.calibrator.method in ("platt", "isotonic")
    assert profile.calibrator.n == 3000  # `score` and `scores[positive]` both read
    assert ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    old = profile.to_dict()
    del old["calibrator"]  # a profile written before calibration still loads, uncalibrated
    assert ReferenceProfile.from_dict(old).calibrator is None
    assert build_profile(rows, model_id="m", model_version="7", task="regression").calibrator is None
    # the reference's own estimate, the baseline of rules on estimated_*: calibrated on the
    # same rows, it is within sampling error of the reference's realised accuracy
    cs, ec = _window(s, profile.calibrator)
    own = estimate_binary(cs, expected=ec).values
    assert profile.metrics["estimated_accuracy"] == own["estimated_accuracy"]
    assert profile.metrics["estimated_accuracy"] == pytest.approx(profile.metrics["accuracy"], abs=0.01)


# ---- the sketch and the expected ROC AUC ------------------------------------------------------
def test_calibrated_scores_merge_exactly_in_any_split() -> None:
    rng = np.random.default_rng(7)
    s = np.r_[rng.random(4000), 0.0, 1.0, np.nan]
    q = np.r_[rng.random(4002), 0.5]
    pred = rng.random(s.size) < 0.5
    whole = CalibratedScores()
    whole.update(pred, s, q)
    merged = CalibratedScores()
    for idx in np.array_split(rng.permutation(s.size), 6):
        part = CalibratedScores()
        part.update(pred[idx], s[idx], q[idx])
        merged.merge(CalibratedScores.from_dict(json.loads(json.dumps(part.to_dict()))))
    assert merged == whole and whole.n == 4002
    assert estimate_binary(merged) == estimate_binary(whole)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        whole.update(np.array([True]), np.array([0.5]), np.array([1.5]))


def test_expected_roc_auc_equals_weighted_scikit_learn_on_the_binned_scores() -> None:
    """Each event counted as a positive with weight q and a negative with weight 1 - q, ranked
    by its raw-score bin: scikit-learn's weighted ROC AUC is then exactly E[U] / (E[P]·E[N])."""
    rng = np.random.default_rng(8)
    s = rng.beta(0.5, 0.5, 3000)
    q = np.clip(s + rng.normal(0, 0.05, s.size), 0, 1)
    cs = CalibratedScores()
    cs.update(s >= 0.5, s, q)
    b = cs.bins(s)
    oracle = roc_auc_score(
        np.r_[np.ones(s.size), np.zeros(s.size)], np.r_[b, b], sample_weight=np.r_[q, 1 - q]
    )
    assert estimate_binary(cs).values["estimated_roc_auc"] == pytest.approx(oracle, abs=1e-9)


# ---- estimates and intervals over many seeded windows -----------------------------------------
def _trials(
    overconfidence: float, calibrate: bool, seed: int, method: str = "auto"
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean absolute error and interval coverage over 30 references x 10 windows of 5000."""
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {m: [] for m in METRICS}
    covered: dict[str, list[bool]] = {m: [] for m in METRICS}
    for _ in range(30):
        cal = fit_calibrator(*_model(rng, 20_000, overconfidence), method=method) if calibrate else None
        for _ in range(10):
            s, y = _model(rng, 5000, overconfidence)
            cs, ec = _window(s, cal)
            found = estimate_binary(cs, expected=ec, n_reference=0 if cal is None else cal.fitted_rows)
            for m, real in _realised(y, s >= 0.5, s).items():
                est = found.values[f"estimated_{m}"]
                lo, hi = found.intervals[f"estimated_{m}"]
                errors[m].append(abs(est - real))
                covered[m].append(lo <= real <= hi)
    return (
        {m: float(np.mean(v)) for m, v in errors.items()},
        {m: float(np.mean(v)) for m, v in covered.items()},
    )


def test_overconfident_model_is_estimated_within_half_a_point_once_calibrated() -> None:
    mae, coverage = _trials(2.0, calibrate=True, seed=11)
    assert mae["accuracy"] <= 0.005 and mae["roc_auc"] <= 0.005
    assert max(mae.values()) <= 0.0075  # precision: only the predicted positives count
    for m in METRICS:
        assert 0.90 <= coverage[m] <= 0.98, (m, coverage[m])


def test_isotonic_calibration_also_estimates_and_covers() -> None:
    """Cross-validation picks Platt here (logit scaling is its exact case); the isotonic map,
    whose own fitting noise the interval's widening is mostly for, must hold up as well."""
    mae, coverage = _trials(2.0, calibrate=True, seed=7, method="isotonic")
    assert mae["accuracy"] <= 0.005 and mae["roc_auc"] <= 0.005
    for m in METRICS:
        assert 0.90 <= coverage[m] <= 0.98, (m, coverage[m])


def test_calibrated_model_intervals_cover_at_the_nominal_level() -> None:
    mae, coverage = _trials(1.0, calibrate=True, seed=12)
    assert mae["accuracy"] <= 0.005
    for m in METRICS:
        assert 0.90 <= coverage[m] <= 0.98, (m, coverage[m])


def test_without_calibration_the_overconfident_model_estimates_itself_too_well() -> None:
    """The reason the reference fits a calibrator: raw over-confident scores overstate accuracy
    by several points, and the intervals (which assume calibration) then almost never cover."""
    rng = np.random.default_rng(13)
    gaps = []
    for _ in range(20):
        s, y = _model(rng, 5000, 2.0)
        cs, ec = _window(s, None)
        gaps.append(
            estimate_binary(cs, expected=ec).values["estimated_accuracy"] - accuracy_score(y, s >= 0.5)
        )
    assert np.mean(gaps) > 0.03


# ---- through the window aggregate -------------------------------------------------------------
def test_window_applies_the_calibrator_and_reports_intervals_and_estimation_errors() -> None:
    rng = np.random.default_rng(14)
    cal = fit_calibrator(*_model(rng, 20_000, 2.0))
    s, y = _model(rng, 5000, 2.0)
    pred = np.where(s >= 0.5, "1", "0").astype(object)
    labels = y.astype(str).astype(object)
    agg = WindowAggregate(AggregateSpec(calibrator=cal))
    keys = np.arange(s.size, dtype=np.uint64)
    idx = np.arange(s.size)
    agg.add_predictions(feature_columns([{}] * s.size), idx, keys, pred, s)
    provisional = compare(agg, None, TestPolicy())
    cs, ec = _window(s, cal)
    expected = estimate_binary(cs, expected=ec, n_reference=cal.fitted_rows)
    assert provisional.metrics == expected.values and provisional.intervals == expected.intervals
    assert provisional.interval_level == 0.95
    assert not any(k.startswith("estimation_error_") for k in provisional.metrics)
    agg.add_outcomes(pred, labels, s, keys)
    got = performance(agg)
    real = _realised(y, s >= 0.5, s)
    assert got["estimation_error_accuracy"] == pytest.approx(
        got["estimated_accuracy"] - real["accuracy"], abs=1e-12
    )
    assert got["estimation_error_f1"] == pytest.approx(got["estimated_f1"] - real["f1"], abs=1e-12)
    # realised ROC AUC is on the 200-bin score histogram, within its own reported bound
    assert abs(got["estimation_error_roc_auc"] - (got["estimated_roc_auc"] - real["roc_auc"])) <= (
        got["roc_auc_error_bound"] + 1e-12
    )
    assert all(math.isfinite(v) for k, v in got.items() if k.startswith("estimation_error_"))


def test_the_catalog_gives_every_partition_the_reference_calibrator() -> None:
    """From reference rows to the sketch spec every join partition folds with: the profile's
    calibrator, fitted once, is the spec's (segment profiles do not replace it)."""
    from driftline.platform.config import Config, ModelConfig
    from driftline.streams.catalog import ModelCatalog, build_profiles

    rng = np.random.default_rng(15)
    s, y = _model(rng, 4000, 2.0)
    rows = [
        {
            "prediction_id": str(i),
            "features": {"x": float(v)},
            "prediction": str(int(v >= 0.5)),
            "label": str(t),
            "score": float(v),
            "segments": {"channel": "ab"[i % 2]},
        }
        for i, (v, t) in enumerate(zip(s, y, strict=True))
    ]
    cfg = Config(defaults=ModelConfig(task="binary"))
    profiles = build_profiles(rows, "m", cfg.model("m"))
    catalog = ModelCatalog(cfg, profiles)
    spec = catalog.spec("m")
    assert spec.calibrator is not None and spec.calibrator == profiles[("m", "")].calibrator
    assert spec.calibrator.method in ("platt", "isotonic") and spec.calibrator.n == 4000


# ---- regression: the loss model by prediction bin ---------------------------------------------
def _regression(rng: np.random.Generator, n: int, low: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(y, ŷ): ŷ = x on U(low, 10), y = x + N(0, (0.5 + 0.2x)²): the error grows with ŷ."""
    x = rng.uniform(low, 10.0, n)
    return x + rng.normal(0.0, 0.5 + 0.2 * x), x


def test_loss_model_bins_the_reference_errors_by_prediction() -> None:
    rng = np.random.default_rng(20)
    y, yhat = _regression(rng, 5000)
    model = fit_loss_model(y, yhat, bins=10)
    assert model is not None and len(model.rows) == 10 and sum(model.rows) == 5000
    edges = np.array(model.edges)
    b = np.clip(np.searchsorted(edges, yhat, side="right") - 1, 0, 9)
    for i in range(10):
        e = np.abs(y - yhat)[b == i]
        assert model.abs_mean[i] == pytest.approx(float(e.mean()), rel=1e-12)
        assert model.sq_var[i] == pytest.approx(float(np.var(e**2, ddof=1)), rel=1e-12)
    assert LossModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    assert fit_loss_model(y[:50], yhat[:50]) is None


@pytest.mark.parametrize("low", [0.0, 5.0], ids=["stationary", "predictions-shift-to-high-error"])
def test_regression_estimates_follow_the_predictions_and_their_intervals_cover(low: float) -> None:
    """Windows of 5000 against realised MAE/RMSE (scikit-learn). With predictions moved to
    where the model errs more (low = 5) the estimate follows them: realised MAE rises ~30 %."""
    rng = np.random.default_rng(21 + int(low))
    errors: dict[str, list[float]] = {"mae": [], "rmse": []}
    covered: dict[str, list[bool]] = {"mae": [], "rmse": []}
    for _ in range(20):
        model = fit_loss_model(*_regression(rng, 20_000))
        assert model is not None
        for _ in range(10):
            y, yhat = _regression(rng, 5000, low)
            counts = np.bincount(
                np.clip(
                    np.searchsorted(np.array(model.edges), yhat, side="right") - 1, 0, len(model.rows) - 1
                ),
                minlength=len(model.rows),
            )
            values, intervals = estimate_regression(counts, model)
            realised = {"mae": mean_absolute_error(y, yhat), "rmse": root_mean_squared_error(y, yhat)}
            for m, real in realised.items():
                lo, hi = intervals[f"estimated_{m}"]
                errors[m].append(abs(values[f"estimated_{m}"] - real) / real)
                covered[m].append(lo <= real <= hi)
    for m in errors:
        assert np.mean(errors[m]) <= 0.015, (m, np.mean(errors[m]))  # relative: 5000 errors
        assert 0.90 <= np.mean(covered[m]) <= 0.98, (m, np.mean(covered[m]))


def test_regression_window_reports_estimates_intervals_and_estimation_errors() -> None:
    rng = np.random.default_rng(22)
    rows = [
        {"prediction_id": str(i), "features": {}, "prediction": float(p), "label": float(t)}
        for i, (t, p) in enumerate(zip(*_regression(rng, 3000), strict=True))
    ]
    profile = build_profile(rows, model_id="r", model_version="1", task="regression")
    assert profile.loss_model is not None
    assert ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    y, yhat = _regression(rng, 4000)
    agg = WindowAggregate(AggregateSpec(task="regression", loss_model=profile.loss_model))
    keys = np.arange(y.size, dtype=np.uint64)
    agg.add_predictions(
        feature_columns([{}] * y.size), np.arange(y.size), keys, yhat, np.full(y.size, np.nan)
    )
    found = compare(agg, None, TestPolicy())
    assert set(found.intervals) == {"estimated_mae", "estimated_rmse"}
    lo, hi = found.intervals["estimated_mae"]
    assert lo < found.metrics["estimated_mae"] < hi
    agg.add_outcomes(yhat, y, np.full(y.size, np.nan), keys)
    got = performance(agg)
    assert got["estimation_error_mae"] == pytest.approx(
        got["estimated_mae"] - mean_absolute_error(y, yhat), abs=1e-12
    )
    assert got["estimation_error_rmse"] == pytest.approx(
        got["estimated_rmse"] - root_mean_squared_error(y, yhat), abs=1e-12
    )


def test_default_rules_warn_on_an_estimated_accuracy_drop_before_any_label() -> None:
    """The evaluator with the default rules and a calibrated reference: predictions that move to
    where the model is unsure (|z| smaller, covariate shift) lower the estimated accuracy by
    ~15 points; the label-free warning fires on the second such window, at the provisional
    phase, with no label; stationary windows stay quiet."""
    from driftline.platform.config import Config, ModelConfig
    from driftline.streams.catalog import ModelCatalog, build_profiles
    from driftline.streams.evaluation import Evaluator

    rng = np.random.default_rng(23)
    s, y = _model(rng, 20_000, 2.0)
    rows = [
        {
            "prediction_id": str(i),
            "features": {},
            "prediction": str(int(v >= 0.5)),
            "label": str(t),
            "score": float(v),
        }
        for i, (v, t) in enumerate(zip(s, y, strict=True))
    ]
    cfg = Config(defaults=ModelConfig(task="binary"))
    catalog = ModelCatalog(cfg, build_profiles(rows, "m", cfg.model("m")))
    evaluator = Evaluator(catalog)
    fired: list[tuple[int, str, str]] = []
    for w in range(6):
        z = rng.normal(0.0, 3.0 if w < 3 else 1.0, 5000)
        scores = 1.0 / (1.0 + np.exp(-2.0 * z))
        agg = WindowAggregate(catalog.spec("m"))
        agg.add_predictions(
            feature_columns([{}] * z.size),
            np.arange(z.size),
            np.arange(w * 5000, (w + 1) * 5000, dtype=np.uint64),
            np.where(scores >= 0.5, "1", "0").astype(object),
            scores,
        )
        start = w * 300_000
        out = evaluator.evaluate(
            "m", "1", "", start, start + 300_000, agg, "provisional", judge_label_free=True
        )
        assert out.result.intervals["estimated_accuracy"][0] < out.values["estimated_accuracy"]
        fired += [(w, a.data.rule, a.data.status) for a in out.alerts]
    assert fired == [(4, "estimated-accuracy-drop", "firing")]


# ---- multiclass (pure: the pipeline does not carry score vectors yet) -------------------------
def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multiclass(rng: np.random.Generator, n: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of a 3-class model: true logits N(0, 2²) each, scores softmax(k·logits)."""
    logits = rng.normal(0.0, 2.0, (n, 3))
    cumulative = np.cumsum(_softmax(logits), axis=1)
    y = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    return _softmax(k * logits), y


def test_multiclass_estimates_macro_metrics_of_an_overconfident_model() -> None:
    """One-vs-rest calibrators renormalised, one CalibratedScores per class: accuracy, macro
    precision/recall/F1 and one-vs-rest macro ROC AUC against scikit-learn on the labels."""
    rng = np.random.default_rng(24)
    errors: dict[str, list[float]] = {m: [] for m in METRICS}
    covered = []
    raw_gap = []
    for _ in range(20):
        s, y = _multiclass(rng, 20_000, 2.0)
        cals = [fit_calibrator(s[:, k], (y == k).astype(float)) for k in range(3)]
        for _ in range(10):
            s, y = _multiclass(rng, 5000, 2.0)
            pred = s.argmax(axis=1)
            found, raw = (
                estimate_multiclass(_per_class(pred, s, q), n_reference=20_000)
                for q in (calibrate_multiclass(s, cals), s)
            )
            realised = {
                "accuracy": accuracy_score(y, pred),
                "precision": precision_score(y, pred, average="macro"),
                "recall": recall_score(y, pred, average="macro"),
                "f1": f1_score(y, pred, average="macro"),
                "roc_auc": roc_auc_score(y, s, multi_class="ovr", average="macro"),
            }
            for m, real in realised.items():
                errors[m].append(abs(found.values[f"estimated_{m}"] - real))
            lo, hi = found.intervals["estimated_accuracy"]
            covered.append(lo <= realised["accuracy"] <= hi)
            raw_gap.append(raw.values["estimated_accuracy"] - realised["accuracy"])
    mae = {m: float(np.mean(v)) for m, v in errors.items()}
    assert max(mae.values()) <= 0.008, mae
    assert 0.90 <= np.mean(covered) <= 0.98
    assert np.mean(raw_gap) > 0.05  # uncalibrated, the model believes itself far better


def _per_class(pred: np.ndarray, s: np.ndarray, q: np.ndarray) -> list[CalibratedScores]:
    out = []
    for k in range(s.shape[1]):
        cs = CalibratedScores()
        cs.update(pred == k, s[:, k], q[:, k])
        out.append(cs)
    return out
