"""Multiclass CBPE end to end: the reference's class-probability map, the window's
:class:`ClassProbabilitySums` (exact under any split and merge), the estimates and their
intervals against scikit-learn's realised metrics over seeded trials, and a window result
through the join that carries them."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from driftline.detectors.aggregates import AggregateSpec, WindowAggregate, feature_columns
from driftline.detectors.calibration import MulticlassCalibrator, fit_multiclass_calibrator, fit_temperature
from driftline.detectors.estimation import estimate_class_probabilities
from driftline.detectors.hashing import partition_for
from driftline.detectors.metrics import class_ranking_metrics
from driftline.detectors.profile import ReferenceProfile
from driftline.detectors.sketches import (
    ClassProbabilitySums,
    ClassRankings,
    ClassScoreHistograms,
    ScoreHistogram,
)
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.columns import PredictionBlock
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.messages import PredictionColumns

CLASSES = ("a", "b", "c", "d")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _model(rng: np.random.Generator, n: int, k: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(scores, class indices) of a 4-class model: true logits N(0, 2²), scores softmax(k·logits)
    (k = 2: over-confident)."""
    logits = rng.normal(0.0, 2.0, (n, len(CLASSES)))
    cumulative = np.cumsum(_softmax(logits), axis=1)
    y = np.minimum((rng.random(n)[:, None] > cumulative).sum(axis=1), len(CLASSES) - 1)
    return _softmax(k * logits), y


def test_temperature_scaling_recovers_the_over_confidence() -> None:
    s, y = _model(np.random.default_rng(3), 50_000)
    assert fit_temperature(s, y) == pytest.approx(0.5, abs=0.02)
    cal = fit_multiclass_calibrator(s, np.array(CLASSES, dtype=object)[y], CLASSES)
    assert cal.method == "temperature"
    assert MulticlassCalibrator.from_dict(cal.to_dict()) == cal


def test_overconfident_multiclass_estimates_match_sklearn_over_seeded_trials() -> None:
    """200 windows of 5000 predictions (20 references of 20 000 rows, 10 windows each): mean
    absolute error of every estimate against scikit-learn on the labels, and how often the
    95 % interval covers the realised value."""
    rng = np.random.default_rng(14)
    names = CLASSES
    errors: dict[str, list[float]] = {}
    covered: dict[str, list[bool]] = {}
    raw_gap = []
    for _ in range(20):
        s, y = _model(rng, 20_000)
        cal = fit_multiclass_calibrator(s, np.array(names, dtype=object)[y], names)
        for _ in range(10):
            s, y = _model(rng, 5000)
            pred = s.argmax(axis=1)
            sketch, raw_sketch, rankings = ClassProbabilitySums(4), ClassProbabilitySums(4), ClassRankings(4)
            q = cal.apply(s)
            sketch.update(pred, q)
            rankings.update(pred, s, q)
            raw_sketch.update(pred, s)
            found = estimate_class_probabilities(sketch, names, rankings=rankings, n_reference=20_000)
            raw = estimate_class_probabilities(raw_sketch, names)
            labels = list(range(4))
            realised = {
                "estimated_accuracy": accuracy_score(y, pred),
                "estimated_precision": precision_score(y, pred, average="macro", zero_division=0),
                "estimated_recall": recall_score(y, pred, average="macro", zero_division=0),
                "estimated_f1": f1_score(y, pred, average="macro", zero_division=0),
                "estimated_roc_auc": roc_auc_score(y, s, multi_class="ovr", average="macro"),
            }
            realised.update({f"estimated_roc_auc.{c}": roc_auc_score(y == i, s[:, i])
                             for i, c in enumerate(names)})
            for metric, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
                per = fn(y, pred, average=None, labels=labels, zero_division=0)
                realised.update({f"estimated_{metric}.{c}": float(per[i]) for i, c in enumerate(names)})
            for name, real in realised.items():
                errors.setdefault(name, []).append(abs(found.values[name] - real))
                lo, hi = found.intervals[name]
                covered.setdefault(name, []).append(lo <= real <= hi)
            raw_gap.append(raw.values["estimated_accuracy"] - realised["estimated_accuracy"])
    mae = {name: float(np.mean(v)) for name, v in errors.items()}
    coverage = {name: float(np.mean(v)) for name, v in covered.items()}
    print("MAE", {k: round(v, 4) for k, v in mae.items()})
    print("coverage", {k: round(v, 3) for k, v in coverage.items()})
    assert mae["estimated_accuracy"] <= 0.01, mae
    assert max(mae.values()) <= 0.015, mae
    assert 0.90 <= coverage["estimated_accuracy"] <= 0.98, coverage
    # the macro ROC AUC's interval counts how one label moves two classes' curves: without the
    # pairs' covariance it covered 87 % (the variance understated 1.6-fold)
    assert 0.90 <= coverage["estimated_roc_auc"] <= 0.98, coverage
    assert all(0.90 <= c <= 0.995 for c in coverage.values()), coverage  # widened: conservative
    assert np.mean(raw_gap) > 0.05  # uncalibrated, the model believes itself far better


@pytest.mark.parametrize("seed", range(10))
def test_split_and_merge_is_exact(seed: int) -> None:
    """Any split of the events over partials, merged in any order, through to_dict: the same
    integers as one sketch of all of them."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    s, _ = _model(rng, n)
    s[rng.random(n) < 0.05, 1] = np.nan
    pred = rng.integers(0, 5, n)  # 4: a label outside the reference's classes
    whole = ClassProbabilitySums(4)
    whole.update(pred, s)
    cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 6))))
    parts = []
    for chunk in np.split(np.arange(n), cuts):
        part = ClassProbabilitySums(4)
        part.update(pred[chunk], s[chunk])
        parts.append(ClassProbabilitySums.from_dict(msgspec.json.decode(msgspec.json.encode(part.to_dict()))))
    merged = ClassProbabilitySums(4)
    for i in rng.permutation(len(parts)).tolist():
        merged.merge(parts[i])
    assert merged == whole
    assert merged.n == int((~np.isnan(s).any(axis=1)).sum())


@pytest.mark.parametrize("seed", range(6))
def test_realised_roc_auc_per_class_and_macro_against_sklearn(seed: int) -> None:
    """Realised one-vs-rest ROC AUC from the labelled events' per-class score histograms:
    exactly scikit-learn's on the binned scores, per class (``average=None``) and macro, and
    within the stated bound of scikit-learn's on the raw scores, ``multi_class="ovr"``."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(300, 5000))
    s, y = _model(rng, n, k=float(rng.uniform(0.5, 3.0)))
    ch = ClassScoreHistograms(4)
    ch.update(y, s)
    got = class_ranking_metrics(ch, CLASSES)
    bins = ScoreHistogram().bins(s)
    per_binned = roc_auc_score(np.eye(4)[y], bins, average=None)
    per_raw = roc_auc_score(y, s, multi_class="ovr", average=None)
    for i, c in enumerate(CLASSES):
        assert got[f"roc_auc.{c}"] == pytest.approx(per_binned[i], abs=1e-12)
        assert abs(got[f"roc_auc.{c}"] - per_raw[i]) <= got[f"roc_auc_error_bound.{c}"] + 1e-12
    assert got["roc_auc"] == pytest.approx(float(np.mean(per_binned)), abs=1e-12)
    macro = roc_auc_score(y, s, multi_class="ovr", average="macro")
    assert abs(got["roc_auc"] - macro) <= got["roc_auc_error_bound"] + 1e-12
    assert got["roc_auc_error_bound"] < 0.03  # 0.002 at k = 1, 0.024 at k = 3 (5000 events)


def test_realised_roc_auc_leaves_out_unknown_labels_and_undefined_classes() -> None:
    """A label outside the reference's classes is a negative of every class; a class with no
    labelled positives has no ROC AUC and the macro mean is over the others (scikit-learn
    refuses the whole call then; per class it agrees)."""
    rng = np.random.default_rng(3)
    s, y = _model(rng, 2000)
    y = np.where(y == 3, 4, y)  # class d never labelled; 4: another label
    ch = ClassScoreHistograms(4)
    ch.update(y, s)
    got = class_ranking_metrics(ch, CLASSES)
    assert math.isnan(got["roc_auc.d"])
    per = [roc_auc_score(y == i, s[:, i]) for i in range(3)]
    for i, c in enumerate(CLASSES[:3]):
        assert abs(got[f"roc_auc.{c}"] - per[i]) <= got[f"roc_auc_error_bound.{c}"] + 1e-12
    assert got["roc_auc"] == pytest.approx(np.mean([got[f"roc_auc.{c}"] for c in CLASSES[:3]]))
    assert math.isnan(class_ranking_metrics(ClassScoreHistograms(4), CLASSES)["roc_auc"])


@pytest.mark.parametrize("seed", range(6))
def test_ranking_sketches_split_and_merge_exactly(seed: int) -> None:
    """The realised histograms and the estimate's rankings (with their pair sums), split over
    partials in any way and merged in any order through to_dict: the same integers."""
    rng = np.random.default_rng(50 + seed)
    n = int(rng.integers(1, 3000))
    s, y = _model(rng, n)
    pred = rng.integers(0, 5, n)
    whole_h, whole_r = ClassScoreHistograms(4), ClassRankings(4)
    whole_h.update(y, s)
    whole_r.update(pred, s, s)
    cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 6))))
    merged_h, merged_r = ClassScoreHistograms(4), ClassRankings(4)
    for chunk in rng.permutation(np.array(np.split(np.arange(n), cuts), dtype=object)).tolist():
        chunk = np.asarray(chunk, dtype=np.int64)
        h, r = ClassScoreHistograms(4), ClassRankings(4)
        h.update(y[chunk], s[chunk])
        r.update(pred[chunk], s[chunk], s[chunk])
        merged_h.merge(ClassScoreHistograms.from_dict(msgspec.json.decode(msgspec.json.encode(h.to_dict()))))
        merged_r.merge(ClassRankings.from_dict(msgspec.json.decode(msgspec.json.encode(r.to_dict()))))
    assert merged_h == whole_h and merged_r == whole_r
    assert merged_r.pairs_n == n and whole_r.pairs.sum() > 0


def test_estimates_are_plug_in_functions_of_the_expected_confusion_matrix() -> None:
    """A hand-computable window: two events predicted a, one b."""
    sketch = ClassProbabilitySums(2)
    sketch.update(np.array([0, 0, 1]), np.array([[0.75, 0.25], [0.5, 0.5], [0.25, 0.75]]))
    v = estimate_class_probabilities(sketch, ("a", "b")).values
    # E[confusion] rows predicted, columns true: [[1.25, 0.75], [0.25, 0.75]]
    assert v["estimated_accuracy"] == pytest.approx(2.0 / 3.0)
    assert v["estimated_precision.a"] == pytest.approx(1.25 / 2)
    assert v["estimated_recall.a"] == pytest.approx(1.25 / 1.5)
    assert v["estimated_f1.b"] == pytest.approx(1.5 / 2.5)
    assert v["estimated_precision"] == pytest.approx((1.25 / 2 + 0.75) / 2)


def test_old_partials_and_profiles_load() -> None:
    cal = MulticlassCalibrator(CLASSES)
    spec = AggregateSpec(task="multiclass", class_calibrator=cal)
    agg = WindowAggregate(spec)
    old = agg.to_dict()
    del old["class_probabilities"], old["class_rankings"], old["class_histograms"]
    loaded = WindowAggregate.from_dict(old, spec)
    assert loaded.class_probabilities == ClassProbabilitySums(4)
    assert loaded.class_rankings == ClassRankings(4)
    assert loaded.class_histograms == ClassScoreHistograms(4)
    rankings = ClassRankings(4)
    rankings.update(np.array([0]), np.full((1, 4), 0.25), np.full((1, 4), 0.25))
    old_rankings = rankings.to_dict()
    del old_rankings["pairs"], old_rankings["pair_cells"], old_rankings["pairs_n"]
    # a partial from before the pair sums: its window keeps the macro estimate, not its interval
    assert ClassRankings.from_dict(old_rankings).pairs_n == 0
    profile = ReferenceProfile("m", "*", {}, class_calibrator=cal).to_dict()
    assert ReferenceProfile.from_dict(profile).class_calibrator == cal
    del profile["class_calibrator"]
    assert ReferenceProfile.from_dict(profile).class_calibrator is None


# ---- through the join ---------------------------------------------------------------------
T0 = 1_767_225_600_000
W = 60_000


def _events(
    rng: np.random.Generator, n: int, start: int
) -> tuple[list[PredictionEvent], list[GroundTruthEvent]]:
    s, y = _model(rng, n)
    preds, labels = [], []
    for i in range(n):
        ts = start + int(i * W // n)
        preds.append(PredictionEvent(
            prediction_id=f"p{start}-{i}", model_id="m", timestamp=ts, features={"x": float(s[i, 0])},
            prediction=CLASSES[int(s[i].argmax())],
            scores={c: float(s[i, j]) for j, c in enumerate(CLASSES)} if i % 10 else None))
        labels.append(GroundTruthEvent(prediction_id=f"p{start}-{i}", model_id="m", label=CLASSES[int(y[i])],
                                       timestamp=ts + 100))
    return preds, labels


def _window_results(n_partitions: int, restart: bool = False) -> list:
    rng = np.random.default_rng(7)
    ref_preds, ref_labels = _events(rng, 5000, T0 - 10 * W)
    rows = [{**msgspec.to_builtins(p), "label": lab.label}
            for p, lab in zip(ref_preds, ref_labels, strict=True)]
    cfg = ModelConfig(task="multiclass", window_ms=W, grace_ms=1000, label_horizon_ms=5000)
    config = Config(defaults=cfg)
    catalog = ModelCatalog(config, build_profiles(rows, "m", cfg))
    joins = [JoinPartition(p, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
             for p in range(n_partitions)]
    merger = WindowMerger(catalog, Evaluator(catalog), n_partitions)
    preds, labels = _events(rng, 3000, T0)
    for offset, chunk in enumerate(range(0, len(preds), 700)):
        events = preds[chunk:chunk + 700]
        targets = partition_for([e.prediction_id for e in events], n_partitions).tolist()
        for p, jp in enumerate(joins):
            members = [e for e, t in zip(events, targets, strict=True) if t == p]
            if members and jp.accept("p:0", offset):
                block = PredictionBlock.from_events(members, catalog.positive_label)
                # through the join-input wire format, as from the ingest stage
                wire = msgspec.msgpack.decode(msgspec.msgpack.encode(block.to_wire("p:0", offset, 0)),
                                              type=PredictionColumns)
                jp.add_prediction_block(PredictionBlock.from_wire(wire))
    if restart:  # a checkpoint while the predictions wait for their labels, restored elsewhere
        snapshots = [jp.snapshot() for jp in joins]
        joins = [JoinPartition(p, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
                 for p in range(n_partitions)]
        for jp, data in zip(joins, snapshots, strict=True):
            jp.restore(data)
    for p, jp in enumerate(joins):
        targets = partition_for([e.prediction_id for e in labels], n_partitions).tolist()
        jp.add_labels([e for e, t in zip(labels, targets, strict=True) if t == p])
    results = []
    for jp in joins:
        for source in ("p:0", "l:0"):
            for message in [*jp.end_source(source), jp.progress()]:
                results.extend(e.result for e in merger.add(message).evaluations)
    return [r for r in results if not r.segment]


def test_a_multiclass_window_result_carries_the_estimates_through_the_join() -> None:
    results = _window_results(3)
    provisional = [r for r in results if r.phase == "provisional"]
    final = [r for r in results if r.phase == "final"]
    assert provisional and final
    for r in provisional + final:
        m = r.metrics
        for name in ("estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1",
                     *(f"estimated_recall.{c}" for c in CLASSES), "estimated_roc_auc.b"):
            assert m[name] is not None and 0.0 < m[name] < 1.0, name
            lo, hi = r.intervals[name]
            assert lo < m[name] < hi
        auc = [m[f"estimated_roc_auc.{c}"] for c in CLASSES]
        assert m["estimated_roc_auc"] == pytest.approx(np.mean(auc))
        lo, hi = r.intervals["estimated_roc_auc"]
        assert lo < m["estimated_roc_auc"] < hi
    last = final[-1].metrics
    # realised ROC AUC from the labelled events whose prediction carried a score vector
    assert 0.5 < last["roc_auc"] < 1.0 and last["roc_auc_error_bound"] < 0.02
    assert last["roc_auc"] == pytest.approx(np.mean([last[f"roc_auc.{c}"] for c in CLASSES]))
    assert last["estimation_error_roc_auc"] == pytest.approx(last["estimated_roc_auc"] - last["roc_auc"])
    assert last["estimation_error_roc_auc.c"] == pytest.approx(
        last["estimated_roc_auc.c"] - last["roc_auc.c"])
    assert all(("roc_auc" in r.metrics) == ("accuracy" in r.metrics) for r in results)
    assert last["estimation_error_accuracy"] == pytest.approx(last["estimated_accuracy"] - last["accuracy"])
    assert last["estimation_error_precision"] == pytest.approx(
        last["estimated_precision"] - last["precision_macro"])
    assert last["estimation_error_f1.a"] == pytest.approx(last["estimated_f1.a"] - last["f1.a"])
    assert abs(last["estimation_error_accuracy"]) < 0.05
    # and the same numbers on one partition: the sketch merges exactly
    one = [r for r in _window_results(1) if r.phase == "final"][-1].metrics
    estimated = {k: v for k, v in last.items() if k.startswith(("estimated_", "roc_auc"))}
    assert estimated == {k: v for k, v in one.items() if k.startswith(("estimated_", "roc_auc"))}
    assert all(v is None or math.isfinite(v) for v in estimated.values())


def test_score_vectors_wait_with_their_predictions_through_a_checkpoint() -> None:
    """The realised ROC AUC needs each prediction's vector when its label comes: a join
    checkpoint taken in between keeps them, so a restored run gives the same window."""
    plain = [r for r in _window_results(2) if r.phase == "final"][-1].metrics
    restored = [r for r in _window_results(2, restart=True) if r.phase == "final"][-1].metrics
    assert restored["roc_auc"] is not None and restored == plain


def test_unscored_or_unknown_rows_are_skipped_and_counted_by_predicted_row() -> None:
    spec = AggregateSpec(task="multiclass", class_calibrator=MulticlassCalibrator(("a", "b")))
    agg = WindowAggregate(spec)
    cols = feature_columns([{}, {}, {}, {}])
    preds = np.array(["a", "zzz", "b", "a"], dtype=object)
    agg.add_predictions(cols, np.arange(4), np.arange(4, dtype=np.uint64), preds, np.full(4, np.nan),
                        [{"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.5}, None, {"a": 0.2}])
    cp = agg.class_probabilities
    assert cp is not None
    assert cp.n == 2 and cp.count.tolist() == [1, 0, 1]


def test_blocks_carry_only_the_score_vectors_of_models_that_use_them() -> None:
    events = [PredictionEvent(prediction_id=str(i), model_id=m, timestamp=T0, prediction="a",
                              scores={"a": 0.7, "b": 0.3})
              for i, m in enumerate(["multi", "bin", "multi"])]
    keep = PredictionBlock.from_events(events, lambda m: "a", keeps_vectors=lambda m: m == "multi")
    assert keep.class_scores == [{"a": 0.7, "b": 0.3}, None, {"a": 0.7, "b": 0.3}]
    assert keep.take(np.array([1])).class_scores == [None]
    none = PredictionBlock.from_events(events, lambda m: "a", keeps_vectors=lambda m: False)
    assert none.class_scores is None
    assert PredictionBlock.from_events(events, lambda m: "a").class_scores is not None


def test_the_reference_fits_the_class_map_and_its_own_estimates() -> None:
    rng = np.random.default_rng(5)
    preds, labels = _events(rng, 4000, T0)
    rows = [{**msgspec.to_builtins(p), "label": lab.label} for p, lab in zip(preds, labels, strict=True)]
    cfg = ModelConfig(task="multiclass")
    profile = build_profiles(rows, "m", cfg)[("m", "")]
    cal = profile.class_calibrator
    assert cal is not None and cal.classes == CLASSES and cal.method == "temperature"
    assert cal.temperature == pytest.approx(0.5, abs=0.05)
    assert ReferenceProfile.from_dict(msgspec.json.decode(msgspec.json.encode(profile.to_dict()))) == profile
    # the baseline a rule on estimated_accuracy compares with, near the reference's realised one
    assert profile.metrics["estimated_accuracy"] == pytest.approx(profile.metrics["accuracy"], abs=0.03)
    assert "estimated_roc_auc.a" in profile.metrics
    binary = build_profiles(rows, "m", ModelConfig(task="binary"))[("m", "")]
    assert binary.class_calibrator is None


def test_join_input_written_before_score_vectors_still_decodes() -> None:
    from driftline.streams.messages import decode_join_input

    events = [PredictionEvent(prediction_id="1", model_id="m", timestamp=T0, prediction="a",
                              scores={"a": 0.7, "b": 0.3})]
    wire = PredictionBlock.from_events(events, lambda m: "a").to_wire("p:0", 0, 0)
    old = msgspec.to_builtins(wire, builtin_types=(bytes,))
    del old["class_scores"]
    decoded = decode_join_input(msgspec.msgpack.encode(old))
    assert isinstance(decoded, PredictionColumns) and decoded.class_scores is None
    assert PredictionBlock.from_wire(decoded).class_scores is None
    assert decode_join_input(msgspec.msgpack.encode(wire)) == wire


def test_the_html_report_compares_a_multiclass_estimate_with_the_macro_average() -> None:
    from driftline.apps.htmlreport import _realised_name

    multiclass = {"estimated_precision", "estimated_precision.a", "precision.a", "precision.b",
                  "precision_macro"}
    assert _realised_name("precision", multiclass) == "precision_macro"
    binary = {"estimated_precision", "precision.1", "precision_macro"}
    assert _realised_name("precision", binary) == "precision.1"


def test_multiclass_benchmark_bars_at_5000_predictions() -> None:
    """The issue's bars on ``benchmarks/estimation_accuracy.py``'s multiclass model, fixed
    seed, through the window aggregate as the join folds it: over-confident (logits x2),
    calibrated on references of 20 000 rows, 100 windows of 5000. Accuracy's mean absolute error
    at most 0.005 (its sampling floor here is about 0.004) and the 95 % intervals of accuracy,
    macro F1 and macro ROC AUC covering 90-98 %. The benchmark runs 300 windows per model."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from estimation_accuracy import multiclass_estimation

    mae, coverage, floor, chosen = multiclass_estimation(2.0, references=4, windows=25, seed=14,
                                                         method="temperature")
    print("MAE", mae, "coverage", coverage, "floor", floor)
    assert chosen == "temperature"
    assert mae["accuracy"] <= 0.005, mae
    assert floor < mae["accuracy"]
    assert all(0.90 <= c <= 0.98 for c in coverage.values()), coverage
