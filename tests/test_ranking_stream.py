"""Segment ranking from the real join and merge (streams/ranking.py): accuracy falls only for
channel=ios; the window's ranking names it first, against references per slice."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.alerting.rules import Rule
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.ranking import rank_for_rule

T0 = 1_767_225_600_000
W = 60_000


def _events(rng, n: int, t0: int, ios_accuracy: float):
    preds, labels = [], []
    for i in range(n):
        channel = ["web", "ios", "android"][i % 3]
        region = ["eu", "us"][int(rng.integers(2))]
        y = int(rng.integers(2))
        right = rng.random() < (ios_accuracy if channel == "ios" else 0.9)
        pid = f"{t0}-{i}"
        ts = t0 + i * (W // n)
        preds.append(
            PredictionEvent(
                prediction_id=pid,
                model_id="m",
                timestamp=ts,
                features={"x": float(rng.normal())},
                prediction=y if right else 1 - y,
                segments={"channel": channel, "region": region},
            )
        )
        labels.append(GroundTruthEvent(prediction_id=pid, model_id="m", label=y, timestamp=ts + 10))
    return preds, labels


def test_the_segment_that_lost_accuracy_is_ranked_first_through_join_and_merge() -> None:
    rng = np.random.default_rng(5)
    ref_preds, ref_labels = _events(rng, 3000, T0 - 10 * W, ios_accuracy=0.9)
    rows = [
        {
            "features": dict(p.features),
            "prediction": p.prediction,
            "label": g.label,
            "segments": dict(p.segments),
        }
        for p, g in zip(ref_preds, ref_labels, strict=True)
    ]
    cfg = ModelConfig(window_ms=W, grace_ms=1_000, label_horizon_ms=2_000, online_detectors=())
    catalog = ModelCatalog(Config(defaults=cfg, models={"m": cfg}), build_profiles(rows, "m", cfg))
    evaluator = Evaluator(catalog)
    jp = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
    merger = WindowMerger(catalog, evaluator, 1)
    preds, labels = _events(rng, 3000, T0, ios_accuracy=0.6)
    jp.add_predictions(preds)
    jp.add_labels(labels)
    results = []
    for source in ("p:0", "l:0"):
        for message in [*jp.end_source(source), jp.progress()]:
            results += [e.result for e in merger.add(message).evaluations if e.result.phase == "final"]
    assert {segment_of(r) for r in results} == {
        "",
        "channel=android",
        "channel=ios",
        "channel=web",
        "region=eu",
        "region=us",
    }

    def baseline(key: str) -> float | None:
        ref = evaluator.reference("m", "", key)
        return None if ref is None else ref.metrics.get("accuracy")

    rule = Rule(name="floor", metric="accuracy", comparison="<", threshold=0.85)
    ranked = rank_for_rule(rule, results, baseline)
    assert ranked[0].key == "channel=ios" and ranked[0].significant
    assert ranked[0].support == 1000 and ranked[0].weight == pytest.approx(1 / 3)
    model = next(r for r in results if not r.segment)
    ios = next(r for r in results if r.segment == {"channel": "ios"})
    assert ranked[0].contribution == pytest.approx((baseline("channel=ios") - ios.metrics["accuracy"]) / 3)
    assert [r.key for r in ranked if r.significant and r.dimension == "channel"] == ["channel=ios"]
    # a rule whose bad side is "higher" reads the other direction: ios becomes the best segment
    flipped = rank_for_rule(
        Rule(name="x", metric="accuracy", comparison=">", threshold=0.95), results, baseline
    )
    assert [r.key for r in flipped if r.dimension == "channel"][-1] == "channel=ios"
    assert model.metrics["accuracy"] == pytest.approx(
        sum(r.metrics["accuracy"] * r.labelled_count for r in results if "channel" in r.segment)
        / model.labelled_count
    )


def segment_of(r) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(r.segment.items()))
