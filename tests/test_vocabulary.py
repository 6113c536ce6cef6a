"""Names a configuration may use fail at load when misspelt, and the lists of valid names stay
in step with what the code computes (detectors/vocabulary.py)."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.alerting.notifiers.registry import KINDS
from driftline.detectors import drift
from driftline.detectors.online import DETECTORS
from driftline.detectors.vocabulary import (
    CORRECTIONS,
    DRIFT_TESTS,
    METRICS,
    ONLINE_DETECTORS,
    is_metric,
)
from driftline.platform.config import Config, ModelConfig, load_config
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger

T0 = 1_767_225_600_000


def _load(tmp_path, text: str) -> Config:
    path = tmp_path / "driftline.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def test_a_misspelt_drift_test_metric_and_notifier_kind_stop_loading_with_the_key_and_a_guess(
    tmp_path,
) -> None:
    with pytest.raises(ValueError) as err:
        _load(tmp_path, "models: {fraud: {drift_tests: {amount: pssi}}}\n")
    assert str(err.value) == (
        "models.fraud: drift_tests.amount must be anderson_darling, chi_square, cramer_von_mises, fisher, "
        "hellinger, jensen_shannon, ks, psi, wasserstein or z, not 'pssi'; did you mean 'psi'?"
    )
    rules = "[{name: floor, metric: acuracy, comparison: '<', threshold: 0.8}]"
    with pytest.raises(ValueError) as err:
        _load(tmp_path, f"models: {{fraud: {{rules: {rules}}}}}\n")
    assert (
        str(err.value)
        == "models.fraud: rules[0] ('floor').metric: unknown metric 'acuracy'; did you mean 'accuracy'?"
    )
    with pytest.raises(ValueError) as err:
        _load(tmp_path, "subscriptions: [{name: team, kind: slak, webhook_url: {env: X}}]\n")
    assert str(err.value) == (
        "subscriptions[0].kind: expected one of ['slack', 'pagerduty', 'webhook', 'alertmanager'], "
        "got 'slak' (did you mean 'slack'?)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "defaults: {drift_correction: bonferoni}\n",
            "defaults: drift_correction must be bh, bonferroni or none, "
            "not 'bonferoni'; did you mean 'bonferroni'?",
        ),
        (
            "defaults: {online_detectors: [adwn]}\n",
            "defaults: unknown online detectors ['adwn']; did you mean "
            "'adwin'? known: ['adwin', 'ddm', 'eddm', 'hddm_a', 'hddm_w', 'kswin', 'page_hinkley']",
        ),
        (
            "defaults: {feature_types: {amount: numerc}}\n",
            "defaults: feature_types.amount must be categorical or "
            "numeric, not 'numerc'; did you mean 'numeric'?",
        ),
        (
            "defaults: {rules: [{name: r, metric: drift.amount.statistc, comparison: '>', threshold: 1}]}\n",
            "defaults: rules[0] ('r').metric: unknown metric 'drift.amount.statistc'; did you mean "
            "'drift.<feature>.statistic'?",
        ),
        (
            "defaults: {rules: [{name: r, metric: online.adwn.detections, comparison: '>', threshold: 0}]}\n",
            "defaults: rules[0] ('r').metric: unknown metric 'online.adwn.detections'; did you mean "
            "'online.<detector>.detections'?",
        ),
    ],
)
def test_other_misspelt_names_are_named_with_their_key(tmp_path, text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        _load(tmp_path, text)
    assert str(err.value) == message


def test_the_listed_names_are_the_ones_the_code_knows() -> None:
    assert frozenset(drift._TESTS) == DRIFT_TESTS
    assert frozenset(DETECTORS) == ONLINE_DETECTORS
    assert set(KINDS) == {"alertmanager", "pagerduty", "slack", "webhook"}
    for method in CORRECTIONS[:-1]:
        drift.correct([], method)  # accepted
    with pytest.raises(ValueError):
        drift.correct([], "none")  # "none" skips correction in the comparison instead


def _evaluations(task: str) -> list:
    """Every value name three windows of a model of ``task`` carry, through join and merge."""
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"] if task == "multiclass" else ["0", "1"]
    preds, labels = [], []
    for i in range(600):
        ts = T0 + i * 100
        x = float(rng.normal())
        if task == "regression":
            prediction, label, extra = x, x + float(rng.normal()), {}
        else:
            p = rng.dirichlet(np.ones(len(classes)))
            prediction = classes[int(np.argmax(p))] if task == "multiclass" else int(np.argmax(p))
            label = classes[int(rng.integers(len(classes)))] if task == "multiclass" else int(rng.integers(2))
            extra = {"scores": {c: float(v) for c, v in zip(classes, p, strict=True)}}
        preds.append(
            PredictionEvent(
                prediction_id=f"p{i}",
                model_id="m",
                timestamp=ts,
                features={"x": x, "colour": ["red", "blue"][i % 2], "gap": None if i % 5 else 1.0},
                prediction=prediction,
                segments={"channel": ["web", "app"][i % 2]},
                attributions={"x": x, "colour": 0.1},
                **extra,
            )
        )
        labels.append(GroundTruthEvent(prediction_id=f"p{i}", model_id="m", label=label, timestamp=ts + 50))
    cfg = ModelConfig(
        task=task,  # type: ignore[arg-type]
        window_ms=20_000,
        grace_ms=1_000,
        label_horizon_ms=2_000,
        positive_label="1",
        online_detectors=tuple(sorted(ONLINE_DETECTORS)) if task != "regression" else ("adwin",),
        multivariate=task == "binary",
    )
    config = Config(defaults=cfg, models={"m": cfg})
    rows = [
        {
            "features": dict(e.features),
            "prediction": e.prediction,
            "label": g.label,
            "segments": dict(e.segments),
            "attributions": dict(e.attributions),
        }
        for e, g in zip(preds[:300], labels[:300], strict=True)
    ]
    catalog = ModelCatalog(config, build_profiles(rows, "m", cfg))
    jp = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
    merger = WindowMerger(catalog, Evaluator(catalog), 1)
    jp.add_predictions(preds)
    jp.add_labels(labels)
    evaluations = []
    for source in ("p:0", "l:0"):
        for message in [*jp.end_source(source), jp.progress()]:
            evaluations.extend(merger.add(message).evaluations)
    return evaluations


def test_every_value_a_window_carries_is_a_listed_metric_and_every_listed_metric_is_computed() -> None:
    produced: set[str] = set()
    for task in ("binary", "multiclass", "regression"):
        for evaluation in _evaluations(task):
            produced |= set(evaluation.values) | set(evaluation.result.metrics)
    unlisted = sorted(name for name in produced if not is_metric(name))
    assert unlisted == []
    assert sorted(METRICS - produced) == []
