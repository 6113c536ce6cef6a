"""Attribution drift through the real join, merge and evaluation (issue 17, item 4).

Events carry ``attributions``; the join folds |attribution| per feature into each window slice
(exact sums), the merger merges the partials and the evaluator compares the window's ranking
with the reference profile's by nDCG. The oracle is ``sklearn.metrics.ndcg_score``, whose
definition is the module's: linear gains (the reference's mean |attribution|, not 2**rel - 1),
discount 1/log2(rank + 1), ties averaged over their positions (tests/test_attribution.py checks
it on 300 random cases); the exact value is also written out by hand below.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import orjson
import pytest
from sklearn.metrics import ndcg_score

from driftline.detectors.aggregates import WindowAggregate, fold_attributions
from driftline.platform.config import Config, ModelConfig, config_from_mapping
from driftline.schemas import GroundTruthEvent, PredictionEvent, decode_predictions
from driftline.schemas.deadletter import REASON_HEADER, Reason
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluator
from driftline.streams.ingest import Router
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger

T0 = 1_767_225_600_000
W = 60_000
FEATURES = ("a", "b", "c", "d")
#: the reference's mean |attribution|: a > b > c > d
REFERENCE = {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1}


def _events(rng, n: int, t0: int, means: dict[str, float], noise: float = 0.0):
    """``n`` predictions whose attributions have mean |value| ``means`` (exactly, when
    ``noise`` is 0: every value is ±mean), with their labels."""
    preds, labels = [], []
    for i in range(n):
        pid = f"{t0}-{i}"
        ts = t0 + i * (W // n)
        sign = rng.choice([-1.0, 1.0], size=len(FEATURES))
        size = np.abs(np.array([means[f] for f in FEATURES]) + noise * rng.normal(size=len(FEATURES)))
        preds.append(
            PredictionEvent(
                prediction_id=pid,
                model_id="m",
                timestamp=ts,
                features={f: float(rng.normal()) for f in FEATURES},
                prediction=int(rng.integers(2)),
                segments={"channel": ["web", "ios"][i % 2]},
                attributions={f: float(s * v) for f, s, v in zip(FEATURES, sign, size, strict=True)},
            )
        )
        labels.append(
            GroundTruthEvent(prediction_id=pid, model_id="m", label=int(rng.integers(2)), timestamp=ts)
        )
    return preds, labels


def _run(reference: tuple[list, list], windows: list[tuple[list, list]], cfg: ModelConfig | None = None):
    """The final evaluations of ``windows`` through one join partition and the merger,
    against a profile built from ``reference``."""
    cfg = cfg or ModelConfig(window_ms=W, grace_ms=1_000, label_horizon_ms=2_000, online_detectors=())
    rows = [
        {
            "features": dict(p.features),
            "prediction": p.prediction,
            "label": g.label,
            "segments": dict(p.segments or {}),
            "attributions": dict(p.attributions or {}),
        }
        for p, g in zip(*reference, strict=True)
    ]
    catalog = ModelCatalog(Config(defaults=cfg, models={"m": cfg}), build_profiles(rows, "m", cfg))
    jp = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
    merger = WindowMerger(catalog, Evaluator(catalog), 1)
    for preds, labels in windows:
        jp.add_predictions(preds)
        jp.add_labels(labels)
    evaluations = []
    for source in ("p:0", "l:0"):
        for message in [*jp.end_source(source), jp.progress()]:
            evaluations += merger.add(message).evaluations
    return evaluations


def _hand_ndcg(window_order: list[str]) -> float:
    dcg = sum(REFERENCE[f] / math.log2(i + 2) for i, f in enumerate(window_order))
    ideal = sum(v / math.log2(i + 2) for i, v in enumerate(sorted(REFERENCE.values(), reverse=True)))
    return dcg / ideal


def test_swapping_the_top_and_bottom_attributions_gives_the_exact_ndcg_and_an_alert_naming_them() -> None:
    rng = np.random.default_rng(11)
    reference = _events(rng, 2000, T0 - 10 * W, REFERENCE)
    swapped = {**REFERENCE, "a": REFERENCE["d"], "d": REFERENCE["a"]}  # d > b > c > a
    evaluations = _run(reference, [_events(rng, 400, T0, swapped)])
    final = [e for e in evaluations if e.result.phase == "final"]
    model = next(e for e in final if not e.result.segment)
    a = model.result.attribution
    assert a is not None
    expected = _hand_ndcg(["d", "b", "c", "a"])  # (.1 + .3/log2 3 + .2/2 + .4/log2 5) / ideal
    oracle = float(ndcg_score([[REFERENCE[f] for f in FEATURES]], [[swapped[f] for f in FEATURES]]))
    assert expected == pytest.approx(0.766781, abs=1e-6)
    assert a.ndcg == pytest.approx(expected, rel=1e-12) and a.ndcg == pytest.approx(oracle, rel=1e-12)
    assert a.threshold == 0.9 and a.drifted
    assert model.values["attribution_ndcg"] == a.ndcg and model.values["attribution_drift"] == 1.0
    # the window's means are the exact ones (every |value| is the mean), ranks and moves follow
    by = {f.feature: f for f in a.features}
    assert {f: by[f].window for f in FEATURES} == swapped
    assert {f: by[f].reference for f in FEATURES} == REFERENCE
    assert [(f.feature, f.reference_rank, f.window_rank, f.rank_change) for f in a.features] == [
        ("a", 1, 4, -3),
        ("d", 4, 1, 3),
        ("b", 2, 2, 0),
        ("c", 3, 3, 0),
    ]
    assert all(f.count == 400 for f in a.features)
    # the default rule fires once the predictions are complete, naming the two that moved
    fired = [
        alert
        for e in evaluations
        for alert in e.alerts
        if alert.data.rule == "attribution-drift" and not alert.data.segment
    ]
    assert [x.data.status for x in fired] == ["firing"]
    evidence = fired[0].data.evidence["attribution"]
    assert evidence["ndcg"] == a.ndcg
    assert [(m["feature"], m["reference_rank"], m["window_rank"]) for m in evidence["moved"]] == [
        ("a", 1, 4),
        ("d", 4, 1),
    ]
    # each segment slice is judged against its own segment's reference, and moved the same way
    for e in final:
        assert e.result.attribution is not None and e.result.attribution.ndcg == pytest.approx(expected)


def test_a_stationary_stream_with_attributions_never_alerts() -> None:
    """20 seeds x 4 windows of 300 noisy attributions (sd 0.08 around the reference means,
    so neighbours swap in single events all the time): no window's nDCG falls near 0.9."""
    lowest = 1.0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        reference = _events(rng, 1000, T0 - 10 * W, REFERENCE, noise=0.08)
        windows = [_events(rng, 300, T0 + k * W, REFERENCE, noise=0.08) for k in range(4)]
        evaluations = _run(reference, windows)
        results = [e.result for e in evaluations if e.result.attribution is not None]
        assert len(results) == 4 * 3 * 2  # 4 windows x (model, web, ios) x 2 phases
        lowest = min(lowest, *(r.attribution.ndcg for r in results))
        assert not any(a.data.rule == "attribution-drift" for e in evaluations for a in e.alerts)
    assert lowest > 0.98


def test_the_threshold_is_configurable_and_validated() -> None:
    rng = np.random.default_rng(3)
    reference = _events(rng, 500, T0 - 10 * W, REFERENCE)
    minor = {**REFERENCE, "c": REFERENCE["d"], "d": REFERENCE["c"]}  # the two least important swap
    strict = ModelConfig(
        window_ms=W, grace_ms=1_000, label_horizon_ms=2_000, online_detectors=(), attribution_threshold=0.999
    )
    model = next(e for e in _run(reference, [_events(rng, 200, T0, minor)], strict) if not e.result.segment)
    assert model.result.attribution is not None
    assert model.result.attribution.ndcg == pytest.approx(_hand_ndcg(["a", "b", "d", "c"]))
    assert model.result.attribution.threshold == 0.999 and model.result.attribution.drifted
    for bad in (0, 1.5, "high", True):
        with pytest.raises(ValueError, match="attribution_threshold must be a number in"):
            config_from_mapping({"defaults": {"attribution_threshold": bad}})


def test_a_model_without_attributions_has_no_attribution_section() -> None:
    rng = np.random.default_rng(4)
    reference = _events(rng, 300, T0 - 10 * W, REFERENCE)
    preds, labels = _events(rng, 200, T0, REFERENCE)
    plain = [msgspec.structs.replace(p, attributions=None) for p in preds]
    evaluations = _run(reference, [(plain, labels)])
    assert evaluations and all(e.result.attribution is None for e in evaluations)
    assert all("attribution_ndcg" not in e.values for e in evaluations)


def test_folding_attributions_is_split_invariant_and_survives_a_checkpoint_exactly() -> None:
    """One partition that folds everything equals two halves merged, byte for byte; a join
    snapshot taken between two blocks and restored gives the partials of an uninterrupted run."""
    rng = np.random.default_rng(8)
    preds, _ = _events(rng, 600, T0, REFERENCE, noise=0.3)
    # some events send no attributions, some only part of them
    preds = [
        msgspec.structs.replace(
            p, attributions=None if i % 7 == 0 else dict(list(p.attributions.items())[: 1 + i % 4])
        )
        for i, p in enumerate(preds)
    ]
    cfg = ModelConfig(window_ms=W, grace_ms=1_000, label_horizon_ms=2_000, online_detectors=())
    catalog = ModelCatalog(Config(defaults=cfg, models={"m": cfg}))

    def partials(jp: JoinPartition) -> list[bytes]:
        return [orjson.dumps(p.aggregate, option=orjson.OPT_SORT_KEYS) for p in jp.end_source("p:0")]

    whole = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=[])
    whole.add_predictions(preds)
    expected = partials(whole)
    assert expected and all(b'"attributions"' in p for p in expected)

    first = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=[])
    first.add_predictions(preds[:250], at=("p:0", 1))
    resumed = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=[])
    resumed.restore(first.snapshot())
    resumed.add_predictions(preds[250:], at=("p:0", 2))
    assert partials(resumed) == expected

    # the batched fold equals per-slice updates, and merging halves equals the whole
    spec = catalog.spec("m")
    columns = {f: np.array([(p.attributions or {}).get(f, np.nan) for p in preds]) for f in FEATURES}
    idx = np.arange(len(preds))
    a, b, one = WindowAggregate(spec), WindowAggregate(spec), WindowAggregate(spec)
    fold_attributions([(a, idx[:300]), (b, idx[300:]), (one, idx)], columns)
    a.merge(b)
    assert a.to_dict() == one.to_dict()
    means = one.attributions.means()
    for f in FEATURES:
        v = columns[f][~np.isnan(columns[f])]
        assert one.attributions.counts[f] == v.size
        assert means[f] == pytest.approx(np.abs(v).mean(), rel=1e-14)
    restored = WindowAggregate.from_dict(orjson.loads(orjson.dumps(one.to_dict())), spec)
    assert restored.to_dict() == one.to_dict()
    # a slice none of whose events sent attributions stays without
    empty = WindowAggregate(spec)
    fold_attributions([(empty, np.flatnonzero(np.isnan(columns["a"])))], columns)
    assert empty.attributions is None and "attributions" not in empty.to_dict()


def _event(pid: str, **extra) -> dict:
    return {
        "prediction_id": pid,
        "model_id": "m",
        "timestamp": T0,
        "prediction": 1,
        "features": {"a": 1.0, "b": 2.0},
        **extra,
    }


def test_bad_attributions_are_dead_lettered_with_a_reason_and_counted_and_the_rest_flow() -> None:
    cfg = Config(watermark_outliers=0)
    router = Router(cfg, ModelCatalog(cfg), join_partitions=1)
    good = [_event("ok1", attributions={"a": 0.5, "b": -0.1}), _event("ok2")]
    bad = [
        _event("unknown", attributions={"a": 0.5, "zzz": 0.2}),  # not a feature of the event
        _event("null", attributions={"a": None}),
        _event("text", attributions={"a": "0.5"}),
        _event("shape", attributions=[0.5, 0.1]),
    ]
    body = orjson.dumps({"kind": "predictions", "events": [good[0], *bad, good[1]]})
    huge = orjson.dumps(_event("huge", attributions={"a": 1.0})).replace(b'"a":1.0}}', b'"a":1e999}}')
    assert b"1e999" in huge
    out = router.route("predictions", body, "preds", 0, 5, wall_ms=T0)
    out += router.route("predictions", huge, "preds", 0, 6, wall_ms=T0)
    dead = [o for o in out if o.topic == router.dead_letter_topic]
    reasons = [dict(o.headers)[REASON_HEADER].decode() for o in dead]
    assert reasons == [Reason.INVALID_ATTRIBUTION] * 5
    details = [dict(o.headers)["driftline-dlq-detail"].decode() for o in dead]
    assert "not features of the event ['zzz']" in details[0] and "$.events[1].attributions" in details[0]
    assert all("attributions" in d for d in details)
    assert router.invalid[("preds", Reason.INVALID_ATTRIBUTION)] == 5
    joined = [o for o in out if o.topic == router.join_topic and o.value]
    decoded = decode_predictions(orjson.dumps({"kind": "predictions", "events": good}))
    assert [e.prediction_id for e in decoded.events] == ["ok1", "ok2"] and joined
    # a Python producer cannot build one either
    for value in (math.nan, math.inf):
        with pytest.raises(ValueError, match="Invalid attributions: values must be finite"):
            PredictionEvent(
                prediction_id="x",
                model_id="m",
                timestamp=T0,
                prediction=1,
                features={"a": 1.0},
                attributions={"a": value},
            )


def test_the_reference_profile_keeps_the_mean_absolute_attributions_and_round_trips() -> None:
    from driftline.detectors.profile import ReferenceProfile, build_profile

    rows = [
        {"x": float(i), "prediction": 1, "attributions": {"x": (-1.0) ** i * 0.1 * i, "y": 0.5}}
        for i in range(10)
    ]
    rows.append({"x": 3.0, "prediction": 0})  # a row without attributions counts for none
    p = build_profile(rows, model_id="m", model_version="1")
    assert "attributions" not in p.features  # a flat row's attributions are not a feature
    assert p.attributions == {"x": pytest.approx(0.45, rel=1e-15), "y": 0.5}
    assert ReferenceProfile.from_dict(orjson.loads(orjson.dumps(p.to_dict()))) == p
    assert ReferenceProfile.from_dict(p.to_dict()).attributions == p.attributions
    plain = build_profile([{"x": 1.0, "prediction": 1}], model_id="m", model_version="1")
    assert plain.attributions is None and "attributions" not in plain.to_dict()
