"""Columnar join input: a block of events must mean exactly what those events mean one by one.

Oracles: :func:`feature_columns` of all rows for the concatenation of column parts, and a join
fed the same events one at a time (where within-block rules reduce to the sequential ones)
for a join fed one columnar block through the wire format.
"""

from __future__ import annotations

import random

import msgspec
import numpy as np
import pytest

from driftline.detectors.aggregates import FeatureColumns, feature_columns
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog
from driftline.streams.columns import LabelBlock, PredictionBlock
from driftline.streams.join import JoinPartition
from driftline.streams.messages import (
    LabelColumns,
    PredictionColumns,
    decode_join_input,
    encode_internal,
)

T0 = 1_767_225_600_000
W = 10_000
P_SRC, L_SRC = "preds:0", "labels:0"

_POOLS = {
    "numbers": [1, 2.5, -3, 0.0, None],
    "strings": ["a", "b", None],
    "nulls": [None],
    "mixed": [1, "x", True, 2.0, None],
    "bools": [True, False],
}


def _equal_columns(a: FeatureColumns, b: FeatureColumns) -> None:
    for field in ("numeric", "categorical", "numeric_mask", "categorical_mask", "present"):
        da, db = getattr(a, field), getattr(b, field)
        assert sorted(da) == sorted(db), field
        for name in da:
            assert da[name].dtype == db[name].dtype, (field, name)
            if da[name].dtype == np.float64:
                np.testing.assert_array_equal(da[name], db[name])
            else:
                assert da[name].tolist() == db[name].tolist(), (field, name)
    assert a.size == b.size


@pytest.mark.parametrize("seed", range(25))
def test_concatenated_parts_are_the_columns_of_all_rows(seed: int) -> None:
    rng = random.Random(seed)
    names = rng.sample(["f1", "f2", "f3", "f4"], k=rng.randint(1, 4))
    rows = []
    for _ in range(rng.randint(1, 40)):
        row = {}
        for name in names:
            if rng.random() < 0.8:  # otherwise the feature is absent from this event
                row[name] = rng.choice(_POOLS[rng.choice(list(_POOLS))])
        rows.append(row)
    cuts = sorted(rng.sample(range(1, len(rows)), k=min(len(rows) - 1, rng.randint(0, 4))))
    parts = []
    for i, j in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        if rng.random() < 0.5:
            parts.append(feature_columns(rows[i:j]))
        else:  # a join partition's share of a bigger batch, typed over all of that batch
            others = [dict(rng.choice(rows)) for _ in range(rng.randint(1, 5))]
            part = feature_columns([*others, *rows[i:j]])
            parts.append(part.take(np.arange(len(others), len(others) + j - i)))
    whole = feature_columns(rows)
    _equal_columns(FeatureColumns.concat(parts), whole)
    # the wire form carries everything (JSON input holds no NaN, so masks can be derived)
    _equal_columns(FeatureColumns.from_wire(whole.to_wire(), len(rows)), whole)


def _config() -> Config:
    slow = ModelConfig(
        window_ms=3 * W, grace_ms=1_000, label_horizon_ms=20_000, positive_label="yes", negative_label="no"
    )
    return Config(
        defaults=ModelConfig(window_ms=W, grace_ms=2_000, label_horizon_ms=5_000),
        models={"slow": slow},
        max_segment_values=2,
    )


def _join() -> JoinPartition:
    return JoinPartition(0, ModelCatalog(_config()), prediction_sources=[P_SRC], label_sources=[L_SRC])


def _pred(pid: str, dt: int, model: str = "m", **kw: object) -> PredictionEvent:
    kw.setdefault("prediction", 1)
    kw.setdefault("features", {"x": float(dt % 7), "c": "abc"[dt % 3]})
    return PredictionEvent(prediction_id=pid, model_id=model, timestamp=T0 + dt, **kw)  # type: ignore[arg-type]


def _label(pid: str, dt: int, label: object = 1, model: str = "m") -> GroundTruthEvent:
    return GroundTruthEvent(prediction_id=pid, model_id=model, label=label, timestamp=T0 + dt)  # type: ignore[arg-type]


def _script() -> list[tuple[str, list]]:
    """A log with every rule in play, in blocks: duplicates inside and across blocks (with
    other content), a late prediction followed by an on-time one of the same id, early,
    duplicate and unmatched labels, scores from the ``scores`` map, segments listed in two
    orders and over a segment cap, two models with different windows, mixed feature types."""
    seg = {"region": "eu", "tier": "gold"}
    seg_reordered = {"tier": "gold", "region": "eu"}
    return [
        ("l", [_label("early", 10), _label("ghost", 20), _label("early", 30, label=0)]),
        ("p", [
            _pred("a", 50, segments=seg),
            _pred("b", 60, segments=seg_reordered, score=0.25),
            _pred("a", 70, prediction=0),  # duplicate inside the block
            _pred("s1", 80, model="slow", prediction="yes", scores={"yes": 0.8, "no": 0.2}),
            _pred("s2", 90, model="slow", prediction="no", scores={"no": 0.9}),
            _pred("early", 100, features={"x": "text", "c": 3}),
            _pred("r1", 110, segments={"region": "us"}),
            _pred("r2", 120, segments={"region": "apac"}),  # over the cap of two regions
        ]),
        ("l", [_label("a", 200), _label("b", 210, 0), _label("a", 220), _label("s1", 230, "no", "slow")]),
        ("p", [_pred("a", 300, prediction=0), _pred("c", 310, features={})]),  # a: across blocks
        ("wp", [T0 + W + 2_500]),  # closes the first default window (end + grace)
        ("p", [
            _pred("late", 400),  # its window passed its grace: late
            _pred("late", W + 3_000),  # the same id, on time: accepted, not a duplicate
            _pred("d", W + 3_100, features={"x": None}),
            _pred("s3", 500, model="slow"),  # the slow model's window is still open
        ]),
        ("l", [_label("late", W + 3_200), _label("d", W + 3_300), _label("s3", W + 3_400, "yes", "slow")]),
        ("wl", [T0 + W + 4_000]),
        ("wp", [T0 + 10 * W]),
        ("wl", [T0 + 10 * W]),
    ]


def _drive(jp: JoinPartition, *, as_block: bool) -> tuple[list[bytes], dict[str, str]]:
    """The partials the script releases, and the in-flight entries (less their internal
    window ids) just before the last watermarks close everything."""
    out: list[bytes] = []
    in_flight: dict[str, str] = {}
    for n, (kind, items) in enumerate(_script()):
        if n == len(_script()) - 2:
            in_flight = {  # repr: NaN scores
                f"{model}/{pid}": repr(e[1:]) for model, es in jp._entries.items() for pid, e in es.items()
            }
        if kind in ("wp", "wl"):
            partials = jp.source_progress(P_SRC if kind == "wp" else L_SRC, items[0])
        elif not as_block:
            for event in items:
                if kind == "p":
                    jp.add_predictions([event])
                else:
                    jp.add_labels([event])
            partials = []
        else:
            source = P_SRC if kind == "p" else L_SRC
            block = (
                PredictionBlock.from_events(items, jp.catalog.positive_label)
                if kind == "p"
                else LabelBlock.from_events(items)
            )
            wm = max(e.timestamp for e in items)
            message = decode_join_input(encode_internal(block.to_wire(source, n, wm)))
            assert isinstance(message, PredictionColumns if kind == "p" else LabelColumns)
            assert jp.accept(source, n)
            if isinstance(message, PredictionColumns):
                jp.add_prediction_block(PredictionBlock.from_wire(message))
            else:
                jp.add_label_block(LabelBlock.from_wire(message))
            partials = []
        out.extend(encode_internal(p) for p in partials)
    return out, in_flight


def test_a_columnar_block_means_what_its_events_mean_one_by_one() -> None:
    one_by_one, block = _join(), _join()
    expected, expected_in_flight = _drive(one_by_one, as_block=False)
    got, in_flight = _drive(block, as_block=True)
    assert one_by_one.counters == {
        "predictions": 11,  # a b s1 s2 early r1 r2 | c | late(on time) d s3
        "labels": 10,
        "joined": 7,  # early a b s1 late d s3
        "early_labels": 2,  # early, ghost
        "late_predictions": 1,  # late, the first time
        "duplicate_predictions": 2,  # a inside the first block, a in the second
        "duplicate_labels": 2,  # early's second label, a's second label
        "expired_unlabelled": 4,  # s2 r1 r2 c
        "unmatched_labels": 1,  # ghost
        "ahead_of_stream": 0,  # no event is an hour ahead of its partition
    }
    assert block.counters == one_by_one.counters
    assert len(expected) == 14  # model m: 2 windows x 4 slices + overflow; slow: 1 x 1 x 2 phases
    assert got == expected
    # no window has reached its label horizon yet: every accepted prediction is in flight
    assert sorted(expected_in_flight) == [
        *(f"m/{pid}" for pid in ["a", "b", "c", "d", "early", "late", "r1", "r2"]),
        *(f"slow/{pid}" for pid in ["s1", "s2", "s3"]),
    ]
    assert in_flight == expected_in_flight


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_block_of_many_models_sharing_ids_joins_each_label_to_its_own_model(seed: int) -> None:
    """Models interleaved row by row in one block, every id scored by several models, labels
    in another order: the block path (one lookup per model, put back in block order) gives
    the one-by-one path's partials and state, and each model's own label meets its prediction."""
    rng = random.Random(seed)
    models = [f"m{k}" for k in range(7)]
    rows = [(f"id{i}", model) for i in range(40) for model in rng.sample(models, 3)]
    rng.shuffle(rows)
    preds = [_pred(pid, 50 + i, model=model, prediction=int(model[1:]) % 2)
             for i, (pid, model) in enumerate(rows)]
    rng.shuffle(rows)
    labels = [_label(pid, 500 + i, int(model[1:]) % 2, model) for i, (pid, model) in enumerate(rows)]
    one, block = _join(), _join()
    for e in preds:
        one.add_predictions([e])
    for e in labels:
        one.add_labels([e])
    block.add_prediction_block(PredictionBlock.from_events(preds, block.catalog.positive_label))
    block.add_label_block(LabelBlock.from_events(labels))
    assert block.counters == one.counters and one.counters["joined"] == len(rows)
    out_one = one.source_progress(P_SRC, T0 + 10 * W) + one.source_progress(L_SRC, T0 + 10 * W)
    out_block = block.source_progress(P_SRC, T0 + 10 * W) + block.source_progress(L_SRC, T0 + 10 * W)
    assert [encode_internal(p) for p in out_block] == [encode_internal(p) for p in out_one]
    finals = [p for p in out_block if p.phase == "final" and p.segment == ""]
    assert {p.model_id for p in finals} == set(models)
    for p in finals:  # every prediction met the label of its own model: all correct
        assert p.aggregate["n_labelled"] == p.aggregate["n_predictions"] > 0
        matrix = p.aggregate["confusion"]["matrix"]  # label x prediction: only the diagonal
        assert all(v == 0 for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j)
        assert sum(map(sum, matrix)) == p.aggregate["n_labelled"]


def test_join_input_written_by_the_previous_version_is_still_read() -> None:
    """An upgraded worker resuming mid-log meets event-struct batches: same state either way."""
    from driftline.streams.messages import LabelBatch, PredictionBatch

    preds = [_pred("a", 50), _pred("b", 60, score=0.3), _pred("a", 70)]
    labels = [_label("b", 100), _label("zz", 110)]
    old, new = _join(), _join()
    old.apply(decode_join_input(encode_internal(PredictionBatch(P_SRC, 0, T0 + 70, preds))))
    old.apply(decode_join_input(encode_internal(LabelBatch(L_SRC, 0, T0 + 110, labels))))
    pb = PredictionBlock.from_events(preds, new.catalog.positive_label).to_wire(P_SRC, 0, T0 + 70)
    new.apply(decode_join_input(encode_internal(pb)))
    new.apply(decode_join_input(encode_internal(LabelBlock.from_events(labels).to_wire(L_SRC, 0, T0 + 110))))
    assert old.counters == new.counters
    assert old.counters["joined"] == 1 and old.counters["duplicate_predictions"] == 1
    assert old.snapshot() == new.snapshot()


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_regression_and_multiclass_blocks_mean_what_their_events_mean(task: str) -> None:
    """Predictions and labels travel as raw scalars (floats, ints, strings, bools) and are
    typed by the model's task at the join, whichever way they arrived."""
    config = Config(defaults=ModelConfig(window_ms=W, grace_ms=2_000, label_horizon_ms=5_000, task=task))
    values: list[object] = [1.5, 2, -0.25, 7.0] if task == "regression" else ["cat", 2, True, 2.0]

    def run(as_block: bool) -> list[bytes]:
        jp = JoinPartition(0, ModelCatalog(config), prediction_sources=[P_SRC], label_sources=[L_SRC])
        preds = [_pred(f"p{i}", 10 * i, prediction=v) for i, v in enumerate(values)]
        labels = [_label(f"p{i}", 100 + i, label=values[(i + 1) % len(values)]) for i in range(len(values))]
        if as_block:
            pb = PredictionBlock.from_events(preds, jp.catalog.positive_label).to_wire(P_SRC, 0, T0 + 30)
            lb = LabelBlock.from_events(labels).to_wire(L_SRC, 0, T0 + 103)
            jp.apply(decode_join_input(encode_internal(pb)))
            jp.apply(decode_join_input(encode_internal(lb)))
        else:
            for p in preds:
                jp.add_predictions([p])
            for lab in labels:
                jp.add_labels([lab])
        out = jp.end_source(P_SRC) + jp.end_source(L_SRC)
        assert jp.counters["joined"] == len(values)
        # input positions are known only to messages from a source (the block path)
        return [encode_internal(msgspec.structs.replace(p, positions=None)) for p in out]

    expected = run(as_block=False)
    assert len(expected) == 2  # one window: provisional and final
    assert run(as_block=True) == expected
