"""Multivariate drift on the stream (issue 17, item 2 and the first "Must show"), through the
real join (two partitions), merge and evaluation.

The scenario of tests/test_root_cause.py, now as events: `amount` is raised for the travel
merchants in the reference; in country=BR's windows it is raised for two thirds of the grocery
ones instead (each marginal unchanged: the amount mixture and the merchant frequencies are the
same), and BR's accuracy falls from 0.9 to 0.72. The accuracy alert's evidence names
country=BR first, the multivariate rule fires on BR's slice (drivers: the two features) and
on none of the others, and no univariate test does. The window's moments are checked exactly
against Python fractions of the same rows, and their error against the PCA row by row.
"""

from __future__ import annotations

from fractions import Fraction

import msgspec
import numpy as np
import pytest

from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.hashing import stable_keys
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger

T0 = 1_767_225_600_000
W = 60_000
FEATURES = ("amount", "device", "hour", "merchant_type")
SIZES = {"BR": 600, "US": 900, "DE": 500}


def _features(rng: np.random.Generator, flipped: bool) -> dict[str, object]:
    travel = bool(rng.random() < 0.4)
    raised = (not travel and rng.random() < 2 / 3) if flipped else travel
    return {
        "amount": float(rng.normal() + 1.5 * raised),
        "merchant_type": "travel" if travel else "grocery",
        "hour": float(rng.uniform(0, 24)),
        "device": str(rng.choice(["ios", "android", "web"])),
    }


def _window(rng: np.random.Generator, t0: int, *, drifted: bool, tag: str):
    """One window's events, countries interleaved; ``drifted`` flips BR's joint structure and
    drops its accuracy."""
    countries = [c for c, n in SIZES.items() for _ in range(n)]
    rng.shuffle(countries)
    preds, labels = [], []
    for i, country in enumerate(countries):
        bad = drifted and country == "BR"
        y = int(rng.integers(2))
        right = rng.random() < (0.72 if bad else 0.9)
        pid = f"{tag}-{i}"
        ts = t0 + i * (W // len(countries))
        preds.append(
            PredictionEvent(
                prediction_id=pid,
                model_id="m",
                timestamp=ts,
                features=_features(rng, bad),
                prediction=y if right else 1 - y,
                segments={"country": country, "channel": ["app", "web"][i % 2]},
            )
        )
        labels.append(GroundTruthEvent(prediction_id=pid, model_id="m", label=y, timestamp=ts + 10))
    return preds, labels


def _catalog(rng: np.random.Generator, multivariate: bool = True) -> ModelCatalog:
    rows = []
    for k in range(3):
        preds, labels = _window(rng, T0 - (10 + k) * W, drifted=False, tag=f"ref{k}")
        rows += [
            {"features": dict(p.features), "prediction": p.prediction, "label": g.label,
             "segments": dict(p.segments)}
            for p, g in zip(preds, labels, strict=True)
        ]
    cfg = ModelConfig(
        window_ms=W, grace_ms=1_000, label_horizon_ms=2_000, online_detectors=(), multivariate=multivariate
    )
    return ModelCatalog(Config(defaults=cfg, models={"m": cfg}), build_profiles(rows, "m", cfg))


def _run(catalog: ModelCatalog, windows: list[tuple[list, list]], partitions: int = 2):
    """Events split over join partitions by id, one merger; every evaluation, and the merged
    aggregates the merger closed (the test reads their moments)."""
    joins = [
        JoinPartition(j, catalog, prediction_sources=[f"p:{j}"], label_sources=[f"l:{j}"])
        for j in range(partitions)
    ]
    merger = WindowMerger(catalog, Evaluator(catalog), partitions)
    closed: dict[tuple[str, int, str], WindowAggregate] = {}
    evaluate_close = merger.evaluator.evaluate_close

    def kept(slices):  # the merged aggregate each slice is evaluated on
        for s in slices:
            closed[(s.segment, s.start, s.phase)] = s.agg
            yield s

    merger.evaluator.evaluate_close = lambda slices: evaluate_close(kept(slices))  # type: ignore[method-assign]
    evaluations = []
    for preds, labels in windows:
        part = stable_keys([p.prediction_id for p in preds]) % np.uint64(partitions)
        for j, jp in enumerate(joins):
            jp.add_predictions([p for p, k in zip(preds, part.tolist(), strict=True) if k == j])
            jp.add_labels([g for g, k in zip(labels, part.tolist(), strict=True) if k == j])
    for j, jp in enumerate(joins):
        for source in (f"p:{j}", f"l:{j}"):
            for partial in jp.end_source(source):
                evaluations += merger.add(partial).evaluations
        evaluations += merger.add(jp.progress()).evaluations
    return evaluations, closed


SEEDS = range(8)


def _one_stream(seed: int):
    rng = np.random.default_rng(seed)
    catalog = _catalog(rng)
    windows = [_window(rng, T0 + k * W, drifted=True, tag=f"w{k}") for k in range(3)]
    evaluations, closed = _run(catalog, windows)
    return catalog, windows, evaluations, closed


def test_a_joint_shift_in_one_segment_is_named_by_segment_and_features_and_by_no_univariate_test() -> None:
    """Over seeded streams of three windows each: the alert-level claims hold on every one;
    per-window univariate verdicts on the shifted slices stay at their stationary rate."""
    univariate_verdicts = univariate_fired = 0
    for seed in SEEDS:
        catalog, windows, evaluations, closed = _one_stream(seed)
        alerts = [a.data for e in evaluations for a in e.alerts if a.data.status == "firing"]

        # the accuracy alert of the whole model names country=BR first
        accuracy = [a for a in alerts if a.rule == "accuracy-drop" and a.segment == {}]
        assert accuracy, (seed, [(a.rule, a.segment) for a in alerts])
        first = accuracy[0].evidence["segments"][0]
        assert (first["dimension"], first["value"]) == ("country", "BR") and first["significant"], seed

        # the multivariate rule fires on BR's slice, driven by the two features, on no other
        # country's (the whole model and the channel slices hold BR's rows: they may fire too)
        multivariate = [a for a in alerts if a.rule == "multivariate-drift"]
        assert {a.segment["country"] for a in multivariate if "country" in a.segment} == {"BR"}, seed
        br = [a for a in multivariate if a.segment == {"country": "BR"}]
        drivers = [d["feature"] for d in br[0].evidence["multivariate"]["drivers"]]
        assert set(drivers[:2]) == {"amount", "merchant_type"}, (seed, drivers)
        whole = [a for a in multivariate if a.segment == {}]
        for a in whole:  # the whole model's alert names the segment where the joint shift is
            assert a.evidence["multivariate"]["segments"][0]["segment"] == "country=BR", seed
        results = [e.result for e in evaluations]
        br_results = [r for r in results if r.segment == {"country": "BR"}]
        assert len(br_results) == 3
        assert all(r.multivariate is not None and r.multivariate.drifted for r in br_results), seed
        others = [r for r in results if r.segment.get("country") in ("US", "DE")]
        assert others and not any(r.multivariate is not None and r.multivariate.drifted for r in others)

        # ... and no univariate alert: the default drift rule fires on no slice
        assert not [a for a in alerts if a.rule == "dataset-drift"], seed
        for r in results:
            if r.segment in ({}, {"country": "BR"}):
                univariate_verdicts += 1
                univariate_fired += any(d.drifted for d in r.drift if d.kind == "feature")

        if seed == SEEDS[0]:
            _check_exact(catalog, windows, closed, br_results[0])
    # a window's verdict is a test at alpha = 0.05 (BH over the features): the slices holding
    # the joint shift drift no more often than stationary ones would (3 sigma over the trials)
    rate = univariate_fired / univariate_verdicts
    bound = 0.05 + 3 * np.sqrt(0.05 * 0.95 / univariate_verdicts)
    assert rate <= bound, (univariate_fired, univariate_verdicts)


def _check_exact(catalog: ModelCatalog, windows, closed, br_result) -> None:
    """BR's merged moments of window 0 are the exact sums of its rows, encoded (Python
    fractions as the oracle), and its error is the PCA's row by row."""
    model = catalog.profile("m", "country=BR").reconstruction
    rows = [p.features for p in windows[0][0] if p.segments["country"] == "BR"]
    columns = {f: np.array([r[f] for r in rows], dtype=object if f in ("device", "merchant_type") else float)
               for f in FEATURES}
    z = model.encode(columns)
    moments = closed[("country=BR", T0, br_result.phase)].moments
    assert moments is not None and moments.n == len(rows) == SIZES["BR"]
    assert moments._sums.fractions() == [sum(map(Fraction, z[:, c]), Fraction(0)) for c in range(z.shape[1])]
    i, j = np.triu_indices(z.shape[1])
    assert moments._cross.fractions() == [
        sum(map(Fraction, z[:, a] * z[:, b]), Fraction(0)) for a, b in zip(i, j, strict=True)
    ]
    np.testing.assert_allclose(moments.second_moment(), z.T @ z / len(rows), rtol=1e-12)
    result = br_result.multivariate
    assert result.error == pytest.approx(float(model.row_errors(z).mean()), rel=1e-9)
    assert result.n == SIZES["BR"] and result.features == list(FEATURES)


def test_moments_are_bit_identical_however_the_events_are_split_and_survive_a_restore() -> None:
    rng = np.random.default_rng(3)
    catalog = _catalog(rng)
    windows = [_window(rng, T0 + k * W, drifted=k == 1, tag=f"w{k}") for k in range(2)]
    one, _ = _run(catalog, windows, partitions=1)
    three, _ = _run(catalog, windows, partitions=3)
    assert [msgspec.json.encode(e.result) for e in one] == [msgspec.json.encode(e.result) for e in three]
    assert any(e.result.multivariate is not None and e.result.multivariate.drifted for e in one)

    # a join partition restored from a snapshot mid-window emits the partials it would have
    preds, labels = windows[1]
    whole = JoinPartition(0, catalog, prediction_sources=["p"], label_sources=["l"])
    half = len(preds) // 2
    whole.add_predictions(preds[:half])
    restored = JoinPartition(0, catalog, prediction_sources=["p"], label_sources=["l"])
    restored.restore(whole.snapshot())
    for jp in (whole, restored):
        jp.add_predictions(preds[half:])
        jp.add_labels(labels)
    a = [p for s in ("p", "l") for p in whole.end_source(s)]
    b = [p for s in ("p", "l") for p in restored.end_source(s)]
    assert a and [msgspec.msgpack.encode(p) for p in a] == [msgspec.msgpack.encode(p) for p in b]
    assert all(p.aggregate["moments"]["n"] > 0 for p in a)


def test_a_model_without_multivariate_keeps_no_moments_and_its_results_do_not_change() -> None:
    rng = np.random.default_rng(4)
    catalog = _catalog(rng, multivariate=False)
    assert catalog.spec("m").moment_encodings is None
    evaluations, closed = _run(catalog, [_window(rng, T0, drifted=True, tag="w")])
    assert all(agg.moments is None for agg in closed.values())
    assert all(e.result.multivariate is None for e in evaluations)
    assert not [a for e in evaluations for a in e.alerts if a.data.rule == "multivariate-drift"]


def test_multivariate_without_a_reference_is_refused_at_start_up_naming_the_key() -> None:
    cfg = ModelConfig(multivariate=True)
    with pytest.raises(ValueError, match=r"models\.m\.multivariate: true needs a reference profile"):
        ModelCatalog(Config(defaults=cfg, models={"m": cfg}))
    from driftline.platform.config import config_from_mapping

    with pytest.raises(ValueError, match=r"models\.m.*multivariate must be true or false"):
        config_from_mapping({"models": {"m": {"multivariate": "sometimes"}}})
