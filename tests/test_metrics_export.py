"""The Prometheus exposition: values equal independent oracles, series stay bounded, and
``promtool check metrics`` accepts the text.

Windows are evaluated by the real :class:`Evaluator` on aggregates of simulated traffic;
the oracles are scikit-learn (accuracy) and scipy (the KS statistic) on the raw events.
The registry is process-global, so every test uses its own model ids.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import REGISTRY, generate_latest
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score

from driftline.apps.simulate import simulate
from driftline.detectors.aggregates import WindowAggregate, feature_columns
from driftline.detectors.categories import category_strings
from driftline.detectors.hashing import stable_keys
from driftline.platform import metrics
from driftline.platform.config import Config, ModelConfig, TopicConfig
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluation, Evaluator

WINDOW_MS = 60_000
START_MS = 1_767_225_600_000


@dataclass
class Window:
    """One evaluated window and the raw events it came from (for the oracles)."""

    evaluation: Evaluation
    y_true: list[str]
    y_pred: list[str]
    reference_x1: np.ndarray
    current_x1: np.ndarray


def model_config() -> ModelConfig:
    # no rules: these tests look at gauges, not alerts
    return ModelConfig(window_ms=WINDOW_MS, grace_ms=0, label_horizon_ms=0, rules=())


def make_catalog(model_id: str, *, n_ref: int = 400, seed: int = 1) -> tuple[Config, ModelCatalog]:
    """A catalog whose reference profile declares x1, x2, amount and channel."""
    cfg = model_config()
    config = Config(models={model_id: cfg})
    reference = simulate(n_ref, model_id=model_id, seed=seed, id_prefix="r")
    profiles = build_profiles(reference.predictions, model_id, cfg)
    return config, ModelCatalog(config, profiles)


def evaluate_window(
    catalog: ModelCatalog,
    evaluator: Evaluator,
    model_id: str,
    *,
    n: int = 400,
    seed: int = 2,
    start_ms: int = START_MS,
    label_share: float = 0.75,
    feature_drift_at: float | None = None,
    extra_feature: str | None = None,
    phase: str = "final",
    segment: str = "",
) -> Window:
    """Aggregate ``n`` simulated predictions (and their labels) into one window and evaluate it."""
    traffic = simulate(
        n,
        model_id=model_id,
        seed=seed,
        start_ms=start_ms,
        label_share=label_share,
        feature_drift_at=feature_drift_at,
        id_prefix=f"w{start_ms}-",
    )
    events = traffic.predictions
    if extra_feature:
        for i, e in enumerate(events):
            e["features"][extra_feature] = float(i)
    agg = WindowAggregate(catalog.spec(model_id))
    ids = [e["prediction_id"] for e in events]
    keys = stable_keys(ids)
    columns = feature_columns([e["features"] for e in events])
    preds = category_strings([e["prediction"] for e in events])
    scores = np.array([e["score"] for e in events], dtype=np.float64)
    agg.add_predictions(columns, np.arange(n), keys, preds, scores)
    index = {pid: i for i, pid in enumerate(ids)}
    rows = np.array([index[label["prediction_id"]] for label in traffic.labels], dtype=np.int64)
    labels = category_strings([label["label"] for label in traffic.labels])
    agg.add_outcomes(preds[rows], labels, scores[rows], keys[rows])
    evaluation = evaluator.evaluate(
        model_id,
        "v1",
        segment,
        start_ms,
        start_ms + WINDOW_MS,
        agg,
        phase,
        judge_label_free=True,
    )
    ref = catalog.profile(model_id)
    return Window(
        evaluation,
        y_true=list(labels),
        y_pred=list(preds[rows]),
        reference_x1=np.asarray(ref.features["x1"].sample, dtype=np.float64),
        current_x1=columns.numeric["x1"],
    )


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture()
def model_id() -> Iterator[str]:
    yield f"m-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def configured(model_id: str) -> tuple[ModelCatalog, Evaluator]:
    config, catalog = make_catalog(model_id)
    metrics.configure(config, catalog)
    return catalog, Evaluator(catalog)


def test_window_gauges_equal_sklearn_and_scipy(model_id: str, configured: tuple) -> None:
    catalog, evaluator = configured
    w = evaluate_window(catalog, evaluator, model_id, feature_drift_at=0.0)
    metrics.observe_evaluation(w.evaluation)

    assert value("driftline_window_accuracy", model=model_id) == pytest.approx(
        accuracy_score(w.y_true, w.y_pred), abs=1e-12
    )
    assert value("driftline_window_metric", model=model_id, metric="accuracy") == pytest.approx(
        accuracy_score(w.y_true, w.y_pred), abs=1e-12
    )
    assert value("driftline_window_predictions", model=model_id) == 400
    assert value("driftline_window_labelled", model=model_id) == len(w.y_true)
    assert value("driftline_window_label_coverage", model=model_id) == len(w.y_true) / 400
    ks = ks_2samp(w.reference_x1, w.current_x1)
    assert value("driftline_feature_drift_statistic", model=model_id, feature="x1", test="ks") == (
        pytest.approx(ks.statistic, abs=1e-12)
    )
    assert value("driftline_feature_drift_p_value", model=model_id, feature="x1", test="ks") == (
        pytest.approx(ks.pvalue, rel=1e-9)
    )
    # x1 shifted by 1.5 sd over the whole window: drifted, and its share is counted
    assert value("driftline_feature_drifted", model=model_id, feature="x1") == 1.0
    drifted = sum(d.drifted for d in w.evaluation.result.drift if d.kind == "feature")
    tested = sum(1 for d in w.evaluation.result.drift if d.kind == "feature")
    assert value("driftline_window_drift_share", model=model_id) == pytest.approx(drifted / tested)
    assert value("driftline_window_end_timestamp_seconds", model=model_id, phase="final") == (
        (START_MS + WINDOW_MS) / 1000
    )


def test_undeclared_features_get_no_series(model_id: str, configured: tuple) -> None:
    """A feature that only traffic sends (here ``request_seq``) must not create series:
    otherwise a producer with random keys could flood the TSDB."""
    catalog, evaluator = configured
    w = evaluate_window(catalog, evaluator, model_id, extra_feature="request_seq")
    assert "request_seq" in w.evaluation.result.data_quality  # the evaluator did see it
    metrics.observe_evaluation(w.evaluation)
    exposition = generate_latest().decode()
    assert f'model="{model_id}"' in exposition
    assert "request_seq" not in exposition
    assert value("driftline_feature_missing_rate", model=model_id, feature="x1") == 0.0


def test_tracked_features_are_config_plus_reference() -> None:
    cfg = ModelConfig(feature_types={"age": "numeric"})
    assert metrics.tracked_features(cfg, ["x1", "channel"]) == {"age", "x1", "channel"}
    assert metrics.tracked_features(ModelConfig()) == frozenset()


def test_labelled_gauges_come_from_final_windows_only(model_id: str, configured: tuple) -> None:
    catalog, evaluator = configured
    final = evaluate_window(catalog, evaluator, model_id, seed=3, start_ms=START_MS)
    metrics.observe_evaluation(final.evaluation)
    accuracy = accuracy_score(final.y_true, final.y_pred)
    provisional = evaluate_window(
        catalog, evaluator, model_id, n=300, seed=4, start_ms=START_MS + WINDOW_MS, phase="provisional"
    )
    metrics.observe_evaluation(provisional.evaluation)
    # volume follows the newer provisional window, accuracy stays the final one's
    assert value("driftline_window_predictions", model=model_id) == 300
    assert value("driftline_window_accuracy", model=model_id) == pytest.approx(accuracy, abs=1e-12)


def test_an_older_window_never_overwrites_a_newer_one(model_id: str, configured: tuple) -> None:
    catalog, evaluator = configured
    newer = evaluate_window(catalog, evaluator, model_id, n=350, seed=5, start_ms=START_MS + WINDOW_MS)
    older = evaluate_window(catalog, evaluator, model_id, n=250, seed=6, start_ms=START_MS)
    metrics.observe_evaluation(newer.evaluation)
    metrics.observe_evaluation(older.evaluation)
    assert value("driftline_window_predictions", model=model_id) == 350
    assert value("driftline_window_accuracy", model=model_id) == pytest.approx(
        accuracy_score(newer.y_true, newer.y_pred), abs=1e-12
    )


def test_segment_slices_stay_out_of_gauges(model_id: str, configured: tuple) -> None:
    catalog, evaluator = configured
    w = evaluate_window(catalog, evaluator, model_id, segment="channel=web")
    metrics.observe_evaluation(w.evaluation)
    assert value("driftline_window_predictions", model=model_id) is None


def test_progress_counters_follow_the_largest_cumulative_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every merge partition reports the same global cumulative counters, some behind the
    others: the Prometheus counter must add each increase once and never go back."""
    prefix = f"p{uuid.uuid4().hex[:6]}."
    monkeypatch.setattr(metrics, "_state", metrics._State())  # forget other tests' progress
    metrics.configure(Config(topics=TopicConfig(prefix=prefix)))
    model = f"m-{uuid.uuid4().hex[:8]}"
    metrics.observe_progress({"late_predictions": 3, "duplicate_labels": 2, "joined": 5}, START_MS, [model])
    metrics.observe_progress({"late_predictions": 2, "duplicate_labels": 2, "joined": 5}, START_MS, [model])
    metrics.observe_progress({"late_predictions": 7, "duplicate_labels": 4, "joined": 9}, START_MS, [model])
    assert value("driftline_events_late_total", topic=f"{prefix}predictions") == 7
    assert value("driftline_events_duplicate_total", topic=f"{prefix}ground-truth") == 2 + 2
    # watermark only moves forward; lag is computed at scrape time from the clock
    metrics.observe_progress({}, START_MS + 5_000, [model])
    metrics.observe_progress({}, START_MS + 1_000, [model])
    monkeypatch.setattr(metrics, "_clock", lambda: START_MS / 1000 + 65.5)
    assert value("driftline_watermark_timestamp_seconds", model=model) == (START_MS + 5_000) / 1000
    assert value("driftline_event_time_lag_seconds", model=model) == pytest.approx(60.5, abs=1e-6)
    monkeypatch.setattr(metrics, "_clock", lambda: START_MS / 1000 + 125.5)
    assert value("driftline_event_time_lag_seconds", model=model) == pytest.approx(120.5, abs=1e-6)


def test_no_watermark_before_the_first_event() -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    metrics.observe_progress({}, -(2**62), [model])
    assert value("driftline_event_time_lag_seconds", model=model) is None


def test_notifications_by_outcome_and_latency() -> None:
    receiver = f"webhook-{uuid.uuid4().hex[:6]}"
    metrics.observe_notification(receiver, "retry")
    metrics.observe_notification(receiver, "delivered", 0.3)
    metrics.observe_notification(receiver, "delivered", 7.0)
    assert value("driftline_notifications_total", receiver=receiver, outcome="retry") == 1
    assert value("driftline_notifications_total", receiver=receiver, outcome="delivered") == 2
    assert value("driftline_notification_delivery_seconds_count", receiver=receiver) == 2
    assert value("driftline_notification_delivery_seconds_sum", receiver=receiver) == pytest.approx(7.3)
    assert value("driftline_notification_delivery_seconds_bucket", receiver=receiver, le="0.5") == 1
    assert metrics.notification_outcome(delivered=False, retry=True) == "retry"
    with pytest.raises(ValueError, match="outcome"):
        metrics.observe_notification(receiver, "maybe")


def test_exported_names_include_histogram_suffixes_not_bare_counters() -> None:
    names = metrics.exported_metric_names()
    assert "driftline_notification_delivery_seconds_bucket" in names
    assert "driftline_events_late_total" in names
    assert "driftline_events_late" not in names
    assert "driftline_window_accuracy" in names


def test_promtool_accepts_the_exposition(model_id: str, configured: tuple, tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian package: prometheus)")
        pytest.skip("promtool not installed (Debian package: prometheus)")
    catalog, evaluator = configured
    metrics.observe_evaluation(evaluate_window(catalog, evaluator, model_id).evaluation)
    metrics.observe_notification("slack", "delivered", 1.0)
    text = generate_latest()
    assert b"driftline_feature_drift_statistic" in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
