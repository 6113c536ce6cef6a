"""Segment ranking from the real join and merge (streams/ranking.py): accuracy falls only for
channel=ios; the window's ranking names it first, against references per slice."""

from __future__ import annotations

import numpy as np
import pytest
from segment_traffic import T0, W, labelled_events, model_catalog, reference_rows

from driftline.alerting.rules import Rule
from driftline.platform.config import ModelConfig
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.ranking import rank_for_rule


def test_the_segment_that_lost_accuracy_is_ranked_first_through_join_and_merge() -> None:
    rng = np.random.default_rng(5)
    rows = reference_rows(*labelled_events(rng, 3000, T0 - 10 * W, {"ios": 0.9}))
    cfg = ModelConfig(window_ms=W, grace_ms=1_000, label_horizon_ms=2_000, online_detectors=())
    catalog = model_catalog(cfg, rows)
    evaluator = Evaluator(catalog)
    jp = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
    merger = WindowMerger(catalog, evaluator, 1)
    preds, labels = labelled_events(rng, 3000, T0, {"ios": 0.6})
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
