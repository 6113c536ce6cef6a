"""Merge laws and serialisation of the window sketches.

The oracle for a merge is one sketch fed the concatenated data: a merged partial must equal it
exactly (floating-point sums included, and the bottom-k sample), whatever the split and order.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.hashing import partition_for, stable_keys
from driftline.detectors.sketches import (
    CategoricalSketch,
    ConfusionCounts,
    ExactSum,
    NumericSketch,
    ProbabilitySums,
    RegressionSums,
    ScoreHistogram,
    bin_index,
    exact_int_text,
    exact_int_value,
)

EDGES = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)
maybe_nan = st.one_of(finite, st.just(math.nan))
labels = st.sampled_from(["a", "b", "c", "10", "2"])
probs = st.floats(0.0, 1.0, allow_nan=False)


def _roundtrip(s):
    return type(s).from_dict(json.loads(json.dumps(s.to_dict(), allow_nan=False)))


def _split3(items: list, data) -> tuple[list, list, list]:
    i = data.draw(st.integers(0, len(items)))
    j = data.draw(st.integers(i, len(items)))
    return items[:i], items[i:j], items[j:]


def _check_laws(make, feed, rows: list, data) -> None:
    """merge is associative, commutative, equals the one-pass sketch, and round-trips."""
    parts = _split3(rows, data)
    whole = make()
    feed(whole, rows)
    sk = []
    for p in parts:
        s = make()
        feed(s, p)
        sk.append(s)
    left = make()  # ((a + b) + c), with a passed through JSON
    for s in (_roundtrip(sk[0]), sk[1], sk[2]):
        left.merge(s)
    bc = make()  # (c + b) + a: other grouping and order
    bc.merge(sk[2])
    bc.merge(sk[1])
    right = make()
    right.merge(bc)
    right.merge(sk[0])
    assert left == whole
    assert right == whole
    assert _roundtrip(whole) == whole
    assert _roundtrip(whole).to_dict() == whole.to_dict()


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(labels, labels), max_size=60), data=st.data())
def test_confusion_counts_laws(rows, data):
    def feed(s: ConfusionCounts, r):
        if r:
            t, p = zip(*r, strict=True)
            s.update(np.array(t, dtype=object), np.array(p, dtype=object))

    _check_laws(ConfusionCounts, feed, rows, data)


def test_confusion_counts_values():
    cc = ConfusionCounts()
    cc.update(np.array(["b", "a", "b"]), np.array(["a", "a", "c"]))
    cc.update(np.array([1]), np.array(["a"]))  # callers may pass ints: compared as strings
    assert cc.labels == ["1", "a", "b", "c"]
    assert cc.matrix.tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 1), probs), max_size=60), data=st.data())
def test_probability_sums_laws(rows, data):
    def feed(s: ProbabilitySums, r):
        s.update(np.array([x[0] for x in r], dtype=np.int64), np.array([x[1] for x in r]))

    _check_laws(ProbabilitySums, feed, rows, data)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 1), probs), max_size=60), data=st.data())
def test_score_histogram_laws(rows, data):
    def feed(s: ScoreHistogram, r):
        s.update(np.array([x[0] for x in r], dtype=np.int64), np.array([x[1] for x in r]))

    _check_laws(lambda: ScoreHistogram(16), feed, rows, data)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(finite, finite), max_size=60), data=st.data())
def test_regression_sums_laws(rows, data):
    def feed(s: RegressionSums, r):
        s.update(np.array([x[0] for x in r]), np.array([x[1] for x in r]))

    _check_laws(RegressionSums, feed, rows, data)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.tuples(maybe_nan, st.integers(0, 40)), max_size=80),
    size=st.integers(0, 8),
    data=st.data(),
)
def test_numeric_sketch_laws(rows, size, data):
    # keys drawn from a small range so duplicate keys (replays) are exercised
    def feed(s: NumericSketch, r):
        s.update(np.array([x[0] for x in r], dtype=np.float64), np.array([x[1] for x in r], dtype=np.uint64))

    _check_laws(lambda: NumericSketch(EDGES, sample_size=size), feed, rows, data)


GRID = np.array([-3.0, -1.0, -0.25, 0.0, 0.1, 0.25, 1.0, 3.0])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(maybe_nan, st.integers(0, 40)), max_size=80),
    data=st.data(),
)
def test_numeric_sketch_laws_with_a_grid(rows, data):
    """Whole-window counts on the grid merge exactly, in any grouping and order."""
    def feed(s: NumericSketch, r):
        s.update(np.array([x[0] for x in r], dtype=np.float64), np.array([x[1] for x in r], dtype=np.uint64))

    _check_laws(lambda: NumericSketch(EDGES, sample_size=3, grid=GRID), feed, rows, data)


def test_grid_counts_every_value_as_numpy_does():
    g = np.random.default_rng(5)
    x = g.normal(0, 1.5, 10_000)
    sk = NumericSketch(EDGES, sample_size=10, grid=GRID)
    for part in np.array_split(x, 7):
        sk.update(part, stable_keys([str(v) for v in part]))
    expected = np.histogram(np.clip(x, GRID[0], GRID[-1]), bins=GRID)[0]
    assert sk.grid_counts.tolist() == expected.tolist() and sk.grid_counts.sum() == x.size


def test_a_part_without_a_grid_drops_it_whichever_side_it_is_on():
    """An old partial (before grids) merged with a new one: the result has no grid in either
    order, so the merge stays commutative, and the drift test falls back to the sample."""
    x = np.array([0.05, 0.2, 2.0])
    keys = np.array([1, 2, 3], dtype=np.uint64)
    new, old = NumericSketch(EDGES, 4, GRID), NumericSketch(EDGES, 4)
    new.update(x, keys)
    old.update(-x, keys + np.uint64(10))
    old_dict = old.to_dict()
    assert "grid" not in old_dict  # what a partial written before grids looks like
    a = NumericSketch.from_dict(new.to_dict())
    a.merge(NumericSketch.from_dict(old_dict))
    b = NumericSketch.from_dict(old_dict)
    b.merge(new)
    assert a == b and a.grid is None and a.n == 6
    with pytest.raises(ValueError, match="grid"):
        NumericSketch(EDGES, 4, GRID).merge(NumericSketch(EDGES, 4, GRID[:-1]))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.one_of(st.none(), st.sampled_from(list("abcdefgh"))), max_size=60),
    cap=st.integers(0, 4),
    data=st.data(),
)
def test_categorical_sketch_laws(rows, cap, data):
    def feed(s: CategoricalSketch, r):
        s.update(np.array(r, dtype=object))

    _check_laws(lambda: CategoricalSketch(categories=["a", "b"], max_categories=cap), feed, rows, data)


def test_categorical_sketch_is_bounded_and_counts_everything():
    s = CategoricalSketch(categories=["a"], max_categories=3)
    vals = np.array([f"c{i}" for i in range(100)] + ["a", "a", None], dtype=object)
    s.update(vals)
    assert len(s.counts) == 4 and s.counts["a"] == 2  # pinned + 3 kept
    assert s.overflow == 97 and s.missing == 1 and s.n == 102
    kept = sorted(c for c in s.counts if c != "a")
    names = [f"c{i}" for i in range(100)]
    expected = [names[i] for i in np.argsort(stable_keys(names), kind="stable")[:3]]
    assert kept == sorted(expected)


def test_numeric_sketch_values_against_numpy():
    rng = np.random.default_rng(0)
    v = rng.normal(size=5000)
    v[::50] = np.nan
    v[1] = -7.0
    keys = stable_keys([f"id{i}" for i in range(v.size)])
    s = NumericSketch(EDGES, sample_size=100)
    for chunk in np.array_split(np.arange(v.size), 7):
        s.update(v[chunk], keys[chunk])
    x = v[~np.isnan(v)]
    xk = keys[~np.isnan(v)]
    assert s.missing == 100 and s.n == x.size
    clipped = np.clip(x, EDGES[0], EDGES[-1])
    assert s.counts.tolist() == np.histogram(clipped, EDGES)[0].tolist()
    assert s.out_of_range_low == int((x < -2).sum()) and s.out_of_range_high == int((x > 2).sum())
    assert (s.min, s.max) == (-7.0, float(x.max()))
    assert s.mean == pytest.approx(np.mean(x), rel=1e-13)
    assert s.std == pytest.approx(np.std(x), rel=1e-13)
    order = np.argsort(xk)[:100]
    assert s.sample_keys.tolist() == xk[order].tolist()
    assert s.sample_values.tolist() == x[order].tolist()


def test_bin_index_matches_numpy_histogram_inside_edges():
    v = np.array([-2.0, -0.5, -0.49, 0.0, 0.5, 1.9, 2.0])
    assert np.bincount(bin_index(EDGES, v), minlength=4).tolist() == np.histogram(v, EDGES)[0].tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e300, 1e300), max_size=40))
def test_exact_sum_is_correctly_rounded(xs):
    s = ExactSum()
    s.add(np.array(xs, dtype=np.float64))
    assert s.value == math.fsum(xs)  # fsum is correctly rounded: an independent oracle
    t = ExactSum()
    for x in reversed(xs):
        t.add_scalar(x)
    assert t == s


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e300, 1e300, allow_subnormal=True), max_size=20))
def test_exact_sum_text_round_trips_and_reads_the_old_plain_hex(xs):
    s = ExactSum()
    s.add(np.array(xs, dtype=np.float64))
    back = ExactSum.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s and back.fraction == s.fraction
    n = s.fraction.numerator * (1 << 1126) // s.fraction.denominator  # the scaled integer
    assert exact_int_value(format(n, "x")) == n  # what checkpoints of earlier versions hold
    assert exact_int_value(exact_int_text(n)) == n


def test_exact_sum_text_is_short_for_ordinary_values():
    s = ExactSum()
    s.add(np.array([123.25, -0.5, 1e-3, 7.0]))
    text = s.to_json()[0]
    assert len(text) < 40, text  # the full integer was ~285 hex digits
    assert exact_int_text(0) == "0" and exact_int_value("0") == 0
    assert exact_int_value(exact_int_text(-(5 << 900))) == -(5 << 900)
    assert exact_int_text(-(5 << 900)) == "-5p900"


def test_exact_sum_non_finite():
    s = ExactSum()
    s.add(np.array([1.0, math.inf]))
    assert s.value == math.inf
    s.add(np.array([-math.inf]))
    assert math.isnan(s.value)
    assert math.isnan(_roundtrip_exact(s).value)


def _roundtrip_exact(s: ExactSum) -> ExactSum:
    return ExactSum.from_json(json.loads(json.dumps(s.to_json())))


def test_merge_rejects_incompatible():
    with pytest.raises(ValueError):
        NumericSketch(EDGES).merge(NumericSketch(EDGES[:-1]))
    with pytest.raises(ValueError):
        ScoreHistogram(10).merge(ScoreHistogram(20))


def test_stable_keys_known_values():
    # xxh64(b"abc", seed=0), the published test vector: stable across processes by construction
    assert stable_keys(["abc", ""]).tolist() == [0x44BC2CF5AD770999, 0xEF46DB3751D8E999]
    assert partition_for(["abc", ""], 7).tolist() == [0x44BC2CF5AD770999 % 7, 0xEF46DB3751D8E999 % 7]


@pytest.mark.parametrize("module", ["hashing", "sketches"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"driftline.detectors.{module}"))
    assert result.attempted > 0 and result.failed == 0
