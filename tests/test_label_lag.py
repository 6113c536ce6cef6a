"""Label lag (detectors/label_lag.py): quantiles against NumPy's exact ones on the same lags,
within the stated resolution; merges bit-exact however the lags were split; and through the
join, the window's quantiles are those of its raw (label time - prediction time) pairs,
whatever the number of partitions, restarts or the order labels and predictions came in."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from test_join import _run, _stream

from driftline.detectors import label_lag
from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.label_lag import RESOLUTION, SUB, LabelLagHistogram, lag_bins
from driftline.detectors.vocabulary import LABEL_LAG_QUANTILES, METRICS
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog
from driftline.streams.join import JoinPartition

T0 = 1_767_225_600_000


def test_doctests() -> None:
    assert doctest.testmod(label_lag).failed == 0


def _middle(lag: int) -> float:
    """The middle of a lag's bin, from Python integers (not the module's frexp and shifts):
    lags below 2 * SUB exactly, above them an octave [2**e, 2**(e+1)) cut into SUB bins."""
    assert SUB == 16
    lag = max(int(lag), 0)
    octave = lag.bit_length() - 1  # lag in [2**octave, 2**(octave + 1))
    shift = max(0, octave - 4)  # 16 bins of 2**(octave - 4) each
    low = (lag >> shift) << shift
    return low + ((1 << shift) - 1) / 2


def _lags(rng: np.random.Generator, n: int) -> np.ndarray:
    """Lags of one of several shapes: log-normal over octaves, uniform integers with ties,
    and a mix with zeros and negatives (labels stamped before their prediction)."""
    shape = int(rng.integers(3))
    if shape == 0:
        return np.round(rng.lognormal(mean=10.0, sigma=2.0, size=n)).astype(np.int64)
    if shape == 1:
        return rng.integers(0, 200, size=n)
    return np.concatenate([rng.integers(-5_000, 1, size=n // 4), rng.integers(0, 10**8, size=n - n // 4)])


def test_quantiles_are_numpys_exact_ones_within_the_stated_resolution() -> None:
    """300 seeded trials, 1 to 5,000 lags each, the quantiles windows carry and random ones:
    the estimate is the middle of the bin of NumPy's ``inverted_cdf`` quantile of the same
    lags (negatives read as 0), hence exact below 32 ms and within 1/32 relatively above."""
    rng = np.random.default_rng(17)
    worst = 0.0
    for _ in range(300):
        lags = _lags(rng, int(rng.integers(1, 5_000)))
        h = LabelLagHistogram()
        h.update(lags)
        assert h.n == lags.size
        clipped = np.maximum(lags, 0)
        for q in [*LABEL_LAG_QUANTILES, float(rng.random()), 0.0, 1.0]:
            exact = int(np.quantile(clipped, q, method="inverted_cdf"))
            got = h.quantile(q)
            assert got == _middle(exact)
            assert got is not None
            if exact < 2 * SUB:
                assert got == exact
            else:
                assert abs(got - exact) <= RESOLUTION * exact
                worst = max(worst, abs(got - exact) / exact)
    assert 0.02 < worst <= RESOLUTION  # the bound is tight enough to be reached, never passed


def test_bins_follow_their_definition_and_stay_bounded() -> None:
    lags = np.array([0, 1, 31, 32, 33, 1_000, 2**40 + 12_345, 2**53 - 1, 2**60])
    bins = lag_bins(lags).tolist()
    for lag, b in zip(lags.tolist(), bins, strict=True):
        h = LabelLagHistogram()
        h.counts = {b: 1}
        assert h.quantile(0.5) == _middle(min(lag, 2**53 - 1))
    assert max(bins) < 800


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_a_split_and_merged_histogram_is_bit_identical_to_one_fed_everything(parts: int) -> None:
    rng = np.random.default_rng(parts)
    for _ in range(50):
        lags = _lags(rng, 2_000)
        whole = LabelLagHistogram()
        whole.update(lags)
        where = rng.integers(0, parts, size=lags.size)
        pieces = [LabelLagHistogram() for _ in range(parts)]
        LabelLagHistogram.update_many(pieces, lags[np.argsort(where, kind="stable")], np.sort(where))
        merged = LabelLagHistogram()
        for k in rng.permutation(parts).tolist():
            merged.merge(LabelLagHistogram.from_dict(pieces[k].to_dict()))
        assert merged.to_dict() == whole.to_dict()
        assert merged == whole


def test_the_metric_names_are_listed_in_the_vocabulary() -> None:
    assert set(LABEL_LAG_QUANTILES.values()) <= METRICS


# -- through the join ----------------------------------------------------------------------


@pytest.mark.parametrize(("partitions", "restart_at"), [(1, None), (3, None), (3, 5)])
def test_a_windows_lag_quantiles_are_those_of_its_raw_pairs(partitions: int, restart_at: int | None) -> None:
    """Labels 0-3 s after their predictions (horizon 5 s), through routing, join partitions,
    a restart from snapshots, the wire and the merger: each final window's quantiles are the
    oracle's on its own events' lags."""
    preds, labels = _stream(3000, seed=5)
    lag_of = {g.prediction_id: g.timestamp for g in labels}
    results = _run(partitions, preds, labels, restart_at=restart_at)
    finals = [r for r in results if r.phase == "final"]
    assert len({r.window_start_ms for r in finals}) >= 10
    for r in finals:
        members = [
            p for p in preds
            if r.window_start_ms <= p.timestamp < r.window_end_ms
            and all(p.segments.get(k) == v for k, v in r.segment.items())
        ]
        lags = np.array([lag_of[p.prediction_id] - p.timestamp for p in members])
        assert r.labelled_count == lags.size
        for q, name in LABEL_LAG_QUANTILES.items():
            assert r.metrics[name] == _middle(int(np.quantile(lags, q, method="inverted_cdf")))


def test_early_late_and_negative_lags_join_by_every_path_and_survive_a_snapshot() -> None:
    """Labels that come before their prediction (the early-label path), after it in one block
    (the fast path), with a duplicate among them (the per-label path), and one stamped before
    its prediction (lag 0): the window's histogram is that of the raw lags, and a partition
    restored from a snapshot mid-way emits the same partial."""
    config = Config(defaults=ModelConfig(window_ms=10_000, grace_ms=1_000, label_horizon_ms=60_000))
    catalog = ModelCatalog(config)

    def pred(i: int) -> PredictionEvent:
        return PredictionEvent(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i, features={"x": 1.0},
                               prediction=1)

    def label(i: int, lag: int) -> GroundTruthEvent:
        return GroundTruthEvent(prediction_id=f"p{i}", model_id="m", label=1, timestamp=T0 + i + lag)

    lags = {i: (i * 997) % 50_000 for i in range(40)} | {3: -250}

    def run(restart: bool) -> dict:
        jp = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
        jp.add_labels([label(i, lags[i]) for i in range(10)])  # before their predictions
        jp.add_predictions([pred(i) for i in range(40)])
        if restart:
            copy = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
            copy.restore(jp.snapshot())
            jp = copy
        jp.add_labels([label(i, lags[i]) for i in range(10, 25)])  # fast path
        jp.add_labels([label(i, lags[i]) for i in (25, 26, 26, 27, *range(28, 40))])  # a duplicate
        partials = [*jp.end_source("p:0"), *jp.end_source("l:0")]
        (final,) = [p for p in partials if p.phase == "final"]
        return final.aggregate

    aggregate = run(restart=False)
    assert run(restart=True) == aggregate
    agg = WindowAggregate.from_dict(aggregate, catalog.spec("m"))
    oracle = LabelLagHistogram()
    oracle.update(np.array([max(lag, 0) for lag in lags.values()]))
    assert agg.label_lag == oracle and agg.n_labelled == 40
    assert math.isclose(agg.label_lag.quantile(0.5) or 0.0, _middle(int(np.quantile(
        np.maximum(list(lags.values()), 0), 0.5, method="inverted_cdf"))))


def test_a_window_no_label_joined_carries_no_histogram_and_no_lag_metric() -> None:
    config = Config(defaults=ModelConfig(window_ms=10_000, grace_ms=1_000, label_horizon_ms=2_000))
    catalog = ModelCatalog(config)
    jp = JoinPartition(0, catalog, prediction_sources=["p:0"], label_sources=["l:0"])
    jp.add_predictions([PredictionEvent(prediction_id="a", model_id="m", timestamp=T0, features={"x": 1.0},
                                        prediction=1)])
    partials = [*jp.end_source("p:0"), *jp.end_source("l:0")]
    assert partials and all("label_lag" not in p.aggregate for p in partials)
