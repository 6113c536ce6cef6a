"""The batched folds (``update_many``, ``fold_predictions``, ``fold_outcomes``) against their
oracle: the same sketches fed one ``update`` / ``add_*`` call per sketch. The join folds every
slice of every model at once through them, so they must be bit-identical, edge cases included:
missing values, infinities, signed zeros, repeated keys, full and empty samples, several bin
edges, mixed-type feature columns, regression and classification models in one batch."""

from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import pytest

import driftline.detectors.sketches as sketches_module
from driftline.detectors.aggregates import (
    AggregateSpec,
    WindowAggregate,
    feature_columns,
    fold_outcomes,
    fold_predictions,
)
from driftline.detectors.calibration import fit_calibrator
from driftline.detectors.loss_model import fit_loss_model
from driftline.detectors.multivariate import fit_reconstruction_rows
from driftline.detectors.sketches import (
    CalibratedScores,
    CategoricalSketch,
    ConfusionCounts,
    ExactSum,
    ExpectedConfusion,
    NumericSketch,
    ProbabilitySums,
    ScoreHistogram,
)

SEEDS = range(40)


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(0.0, rng.choice([1e-3, 1.0, 1e6]), n)
    special = rng.random(n)
    v[special < 0.05] = np.nan
    v[(special >= 0.05) & (special < 0.07)] = 0.0
    v[(special >= 0.07) & (special < 0.09)] = -0.0
    if rng.random() < 0.3:
        v[(special >= 0.09) & (special < 0.1)] = np.inf
    return v


def _segments(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    return np.sort(rng.integers(0, count, n))


@pytest.mark.parametrize("seed", SEEDS)
def test_numeric_update_many_is_repeated_update(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 12))
    edges = [np.array([-1.0, 0.0, 1.0]), np.linspace(-3, 3, 7)]
    size = int(rng.choice([0, 5, 40]))
    batched = [NumericSketch(edges[i % 2], size) for i in range(count)]
    for _ in range(int(rng.integers(1, 4))):  # some already hold a (full or partial) sample
        n = int(rng.integers(0, 300))
        v = _values(rng, n)
        k = rng.integers(0, 2**12 if rng.random() < 0.3 else 2**64 - 1, n, dtype=np.uint64)  # repeats
        s = _segments(rng, n, count)
        oracle = copy.deepcopy(batched)
        NumericSketch.update_many(batched, v, k, s)
        for i, sk in enumerate(oracle):
            if (s == i).any():
                sk.update(v[s == i], k[s == i])
        assert [b.to_dict() for b in batched] == [o.to_dict() for o in oracle]
        assert [repr(b.min) for b in batched] == [repr(o.min) for o in oracle]  # signed zeros


@pytest.mark.parametrize("seed", SEEDS)
def test_update_many_of_shared_rows_is_repeated_update(seed: int) -> None:
    """With ``rows``, several sketches take the same batch rows (a slice and the model's): the
    rows are binned and split once, and each sketch gets exactly what one update would give."""
    rng = np.random.default_rng(seed)
    n, count = int(rng.integers(0, 200)), int(rng.integers(1, 8))
    base_v = _values(rng, n)
    base_k = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    rows = [np.sort(rng.choice(n, int(rng.integers(0, n + 1)), replace=False)) if n else np.zeros(0, np.int64)
            for _ in range(count)]
    seg = np.repeat(np.arange(count), [r.size for r in rows])
    flat = np.concatenate(rows).astype(np.int64)
    batched = [NumericSketch(np.array([-1.0, 0.0, 1.0]), 30) for _ in range(count)]
    NumericSketch.update_many(batched, base_v, base_k, seg, rows=flat)
    sums = [ExactSum() for _ in range(count)]
    ExactSum.add_segments(sums, base_v ** 2, seg, rows=flat)
    for i, r in enumerate(rows):
        one, total = NumericSketch(np.array([-1.0, 0.0, 1.0]), 30), ExactSum()
        if r.size:
            one.update(base_v[r], base_k[r])
        total.add((base_v ** 2)[r])
        assert batched[i].to_dict() == one.to_dict() and sums[i] == total


@pytest.mark.parametrize("seed", SEEDS)
def test_exact_sums_and_small_sketches_update_many_is_repeated_update(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count, n = int(rng.integers(1, 9)), int(rng.integers(0, 400))
    s = _segments(rng, n, count)
    v = _values(rng, n)
    sums = [ExactSum() for _ in range(count)]
    ExactSum.add_segments(sums, v, s)
    for i in range(count):
        one = ExactSum()
        one.add(v[s == i])
        assert sums[i] == one and repr(sums[i].value) == repr(one.value)
    y = (rng.random(n) < 0.5).astype(np.int64)
    p = rng.random(n)
    p[rng.random(n) < 0.1] = np.nan
    cases = [(ProbabilitySums, ~np.isnan(p)), (ScoreHistogram, ~np.isnan(p)), (ExpectedConfusion, None)]
    for cls, ok in cases:
        batched = [cls() for _ in range(count)]
        yy, pp, ss = (y, p, s) if ok is None else (y[ok], p[ok], s[ok])
        cls.update_many(batched, yy, pp, ss)
        for i, sk in enumerate(batched):
            one = cls()
            if (ss == i).any():
                one.update(yy[ss == i], pp[ss == i])
            assert sk.to_dict() == one.to_dict(), cls.__name__


@pytest.mark.parametrize("count", [511, 512, 1023, 1024, 1025, 3000])
def test_add_segments_of_crowded_exponents_is_the_exact_sum(count: int) -> None:
    """A (sum, exponent) bin of many values: the high mantissa halves of ``count`` values near
    -1 (and near +1: the largest mantissa) sum to about ``count * 2**26`` in magnitude, so past
    1024 values the int64 shortcut of ``_add_parts`` (taken while |Σ high| < 2**36) is left for
    Python ints. Against the exact rational sum, on both sides of that bound."""
    rng = np.random.default_rng(count)
    near_one = 1.0 - rng.integers(0, 2**20, count) * 2.0**-53  # mantissas just below 2**53
    v = np.concatenate([-np.ones(count), near_one, near_one * 2.0**-1000, [3.5, -(2.0**-1074)]])
    seg = np.repeat(np.arange(3), [count, count, count + 2])
    sums = [ExactSum() for _ in range(3)]
    ExactSum.add_segments(sums, v, seg)
    for i in range(3):
        exact = sum((Fraction(float(x)) for x in v[seg == i]), Fraction(0))
        assert sums[i].fraction == exact


@pytest.mark.parametrize("seed", SEEDS)
def test_calibrated_scores_update_many_is_repeated_update(seed: int) -> None:
    """Onto sketches that already hold data (the cells are added in place), with NaN raw
    scores and NaN probabilities skipped, scores at 0 and 1, and empty segments."""
    rng = np.random.default_rng(seed)
    count, n, n_bins = int(rng.integers(1, 9)), int(rng.integers(0, 400)), int(rng.choice([1, 7, 400]))
    s = _segments(rng, n, count)
    pos = rng.random(n) < 0.4
    raw = rng.random(n) ** rng.choice([1.0, 8.0])
    raw[rng.random(n) < 0.05] = rng.choice([0.0, 1.0])
    raw[rng.random(n) < 0.05] = np.nan
    q = rng.random(n)
    q[rng.random(n) < 0.05] = np.nan
    batched, oracle = [], []
    for _ in range(count):
        m = int(rng.integers(0, 30))
        start = (rng.random(m) < 0.5, rng.random(m), rng.random(m))
        a, b = CalibratedScores(n_bins), CalibratedScores(n_bins)
        a.update(*start)
        b.update(*start)
        batched.append(a)
        oracle.append(b)
    CalibratedScores.update_many(batched, pos, raw, q, s)
    for i in range(count):
        oracle[i].update(pos[s == i], raw[s == i], q[s == i])
        assert batched[i] == oracle[i] and batched[i].to_dict() == oracle[i].to_dict()


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_update_many_is_repeated_update(seed: int) -> None:
    """Onto sketches that hold none, some, all or other labels than the batch (each grows to
    the union in sorted order), with empty segments; and past the table bound."""
    rng = np.random.default_rng(seed)
    count, n = int(rng.integers(1, 9)), int(rng.integers(0, 400))
    s = _segments(rng, n, count)
    pool = np.array(["0", "1", "b", "a", "zz", "10"], dtype=object)
    width = int(rng.integers(1, pool.size + 1))
    t, p = pool[rng.integers(0, width, n)], pool[rng.integers(0, width, n)]
    batched, oracle = [], []
    for _ in range(count):
        a, b = ConfusionCounts(), ConfusionCounts()
        m = int(rng.integers(0, 6))
        start = (pool[rng.integers(0, pool.size, m)], pool[rng.integers(0, pool.size, m)])
        a.update(*start)
        b.update(*start)
        batched.append(a)
        oracle.append(b)
    if seed % 4 == 0:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sketches_module, "_CONFUSION_TABLE_MAX", 0)
            ConfusionCounts.update_many(batched, t, p, s)
    else:
        ConfusionCounts.update_many(batched, t, p, s)
    for i in range(count):
        oracle[i].update(t[s == i], p[s == i])
        assert batched[i] == oracle[i] and batched[i].to_dict() == oracle[i].to_dict()


@pytest.mark.parametrize("seed", SEEDS)
def test_categorical_update_many_is_repeated_update(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count, n = int(rng.integers(1, 9)), int(rng.integers(0, 400))
    s = _segments(rng, n, count)
    pool = np.array([None, "a", "b", "c", "1", "zz", *[f"v{i}" for i in range(30)]], dtype=object)
    v = pool[rng.integers(0, pool.size, n)]
    pins, cap = ("a", "b"), int(rng.integers(0, 6))
    batched, oracle = [], []
    for _ in range(count):  # some already hold categories (kept, evicted) the batch has too
        a, b = CategoricalSketch(pins, cap), CategoricalSketch(pins, cap)
        start = pool[rng.integers(0, pool.size, int(rng.choice([0, 0, 3, 20])))]
        a.update(start)
        b.update(start)
        batched.append(a)
        oracle.append(b)
    CategoricalSketch.update_many(batched, v, s)
    for i, sk in enumerate(batched):
        one = oracle[i]
        if (s == i).any():
            one.update(v[s == i])
        assert sk.to_dict() == one.to_dict() and sk._extra_keys == one._extra_keys


def _rows(rng: np.random.Generator, n: int) -> list[dict[str, object]]:
    rows = []
    for _ in range(n):
        mixed: object = [1.5, "x", None, 2][int(rng.integers(0, 4))] if rng.random() < 0.5 else None
        rows.append({"x": float(rng.normal()), "c": ["p", "q", None][int(rng.integers(0, 3))],
                     "mixed": mixed, "declared": ["a", 3.0][int(rng.integers(0, 2))]})
    return rows


def _fitted_specs(rng: np.random.Generator) -> tuple[AggregateSpec, AggregateSpec]:
    """Specs as a reference profile gives them: whole-window quantile grids, a score calibrator
    (binary) and a loss model (regression), each folded by its own path."""
    ref_scores = rng.random(2000)
    calibrator = fit_calibrator(ref_scores, (rng.random(2000) < ref_scores**2).astype(np.int64))
    y = rng.normal(size=2000)
    loss_model = fit_loss_model(y, y + rng.normal(scale=0.3, size=2000))
    assert loss_model is not None
    grid = np.quantile(rng.normal(size=5000), np.linspace(0, 1, 41))
    grids = {"x": grid, "declared": np.linspace(-1, 6, 9)}
    # multivariate drift's encodings (each model its own), read from mixed and declared columns
    kinds = {"x": "numeric", "c": "categorical", "mixed": "categorical", "declared": "numeric"}
    moments = [fit_reconstruction_rows(_rows(rng, 400), kinds).encodings for _ in range(2)]
    binary = AggregateSpec(task="binary", numeric_edges={"declared": np.array([0.0, 5.0])},
                           sample_size=20, numeric_grids=grids, calibrator=calibrator,
                           moment_encodings=moments[0])
    regression = AggregateSpec(task="regression", categories={"declared": ("a",)}, sample_size=20,
                               numeric_grids={"x": grid}, loss_model=loss_model, moment_encodings=moments[1])
    return binary, regression


@pytest.mark.parametrize("fitted", [False, True], ids=["plain", "grids-calibrator-loss-model"])
@pytest.mark.parametrize("seed", SEEDS)
def test_fold_predictions_and_outcomes_are_one_add_per_group(seed: int, fitted: bool) -> None:
    """What the join did before: one ``add_*`` call per window key (group) and slice."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    columns = feature_columns(_rows(rng, n))
    keys = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    binary = AggregateSpec(task="binary", numeric_edges={"declared": np.array([0.0, 5.0])}, sample_size=20)
    regression = AggregateSpec(task="regression", categories={"declared": ("a",)}, sample_size=20)
    if fitted:
        binary, regression = _fitted_specs(rng)
    # rows in groups (window keys); each aggregate (slice) takes some groups
    groups = rng.integers(0, 6, n)
    is_regression = groups >= 4
    n_cls, n_reg = int((~is_regression).sum()), int(is_regression.sum())
    predictions = np.empty(n, dtype=object)
    predictions[~is_regression] = np.array(["1", "0", None], dtype=object)[rng.integers(0, 3, n_cls)]
    predictions[is_regression] = rng.normal(size=n_reg).tolist()
    labels = np.empty(n, dtype=object)
    labels[~is_regression] = np.array(["1", "0"], dtype=object)[rng.integers(0, 2, n_cls)]
    labels[is_regression] = rng.normal(size=n_reg).tolist()
    scores = rng.random(n)
    scores[rng.random(n) < 0.2] = np.nan
    times = rng.integers(0, 10**6, n).astype(np.float64)
    # slices: per model, "all" takes every group of the model, the others one group each
    slices = [[0, 1, 2, 3], [0, 2], [1], [3], [4, 5], [4], [5]]
    specs = [binary] * 4 + [regression] * 3
    batched = [WindowAggregate(spec) for spec in specs]
    oracle = [WindowAggregate(spec) for spec in specs]
    parts = []
    for agg, oagg, members, spec in zip(batched, oracle, slices, specs, strict=True):
        idx = [np.flatnonzero(groups == g) for g in members]
        idx = [i for i in idx if i.size]
        if not idx:
            continue
        parts.append((agg, np.concatenate(idx)))
        for i in idx:
            oagg.add_predictions(columns, i, keys[i], predictions[i], scores[i])
            as_float = spec is regression
            preds = predictions[i].astype(np.float64) if as_float else predictions[i]
            labs = labels[i].astype(np.float64) if as_float else labels[i]
            oagg.add_outcomes(preds, labs, scores[i], keys[i], times[i])
    fold_predictions(parts, columns, keys, predictions, scores, fold_groups=groups)
    fold_outcomes(parts, predictions, labels, scores, keys, times)
    assert [a.to_dict() for a in batched] == [o.to_dict() for o in oracle]
    if fitted:  # the moments were folded (once per group, merged into the slices)
        assert sum(a.moments.n for a in batched if a.moments is not None) == sum(p[1].size for p in parts)


@pytest.mark.parametrize("seed", SEEDS)
def test_fold_predictions_of_class_score_vectors_is_one_add_per_group(seed: int) -> None:
    """Multiclass slices (two models, each its own classes and calibrator) beside a binary one:
    score vectors missing, incomplete or naming other classes, predictions outside the classes."""
    from driftline.detectors.calibration import MulticlassCalibrator, fit_multiclass_calibrator

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    columns = feature_columns(_rows(rng, n))
    keys = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    ref = rng.dirichlet(np.ones(3), 600)
    fitted = fit_multiclass_calibrator(ref, np.array(["a", "b", "c"], dtype=object)[ref.argmax(axis=1)],
                                       ("a", "b", "c"))
    specs = [AggregateSpec(task="multiclass", class_calibrator=fitted, sample_size=20),
             AggregateSpec(task="multiclass", class_calibrator=MulticlassCalibrator(("x", "y")),
                           sample_size=20),
             AggregateSpec(task="binary", sample_size=20)]
    groups = rng.integers(0, 6, n)
    predictions = np.array(["a", "b", "c", "x", "y", "1"], dtype=object)[rng.integers(0, 6, n)]
    class_scores: list[dict[str, float] | None] = []
    for _ in range(n):
        r = rng.random()
        p = rng.dirichlet(np.ones(3)).tolist()
        class_scores.append(None if r < 0.15 else {"a": p[0], "b": p[1]} if r < 0.25
                            else {"x": p[0], "y": 1 - p[0]} if r < 0.5 else dict(zip("abc", p, strict=True)))
    scores = rng.random(n)
    slices = [([0, 1, 2], 0), ([0], 0), ([2], 0), ([3, 4], 1), ([4], 1), ([5], 2)]
    batched = [WindowAggregate(specs[s]) for _, s in slices]
    oracle = [WindowAggregate(specs[s]) for _, s in slices]
    parts = []
    for agg, oagg, (members, _) in zip(batched, oracle, slices, strict=True):
        idx = [i for i in (np.flatnonzero(groups == g) for g in members) if i.size]
        if not idx:
            continue
        parts.append((agg, np.concatenate(idx)))
        for i in idx:
            oagg.add_predictions(columns, i, keys[i], predictions[i], scores[i], [class_scores[j] for j in i])
    fold_predictions(parts, columns, keys, predictions, scores, fold_groups=groups, class_scores=class_scores)
    assert [a.to_dict() for a in batched] == [o.to_dict() for o in oracle]
    assert any(a.class_probabilities is not None and a.class_probabilities.n for a, _ in parts) or n < 20
