"""The ingest router without a broker: dead-letter records, admission, repartitioning, ticks."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftline.detectors.hashing import partition_for
from driftline.platform.config import Config, ModelConfig
from driftline.streams.catalog import ModelCatalog
from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT, Router
from driftline.streams.messages import EndOfInput, PredictionColumns, Tick, decode_join_input

T0 = 1_767_225_600_000
WALL = T0 + 3_600_000  # the clock, one hour after the events


def _event(pid: str, ts: int = T0, model: str = "m") -> dict:
    return {"prediction_id": pid, "model_id": model, "timestamp": ts, "prediction": 1}


def _router(**config) -> Router:
    # these tests check routing, blocks and ticks: the newest event time counts at once here;
    # the robust watermark (ignoring outliers) is tested in test_hostile_input
    cfg = Config(**{"watermark_outliers": 0, **config})
    return Router(cfg, ModelCatalog(cfg), join_partitions=4)


def _batch(events: list[dict]) -> bytes:
    return orjson.dumps({"schema_version": "1.0", "kind": "predictions", "events": events})


def test_valid_events_are_routed_by_prediction_id_and_bad_ones_dead_lettered() -> None:
    router = _router()
    events = [_event(f"id{i}") for i in range(20)]
    bad = {"model_id": "m", "timestamp": T0, "prediction": 1}  # no prediction_id
    out = router.route("predictions", _batch([*events[:10], bad, *events[10:]]), "preds", 2, 77, wall_ms=WALL)
    dead = [o for o in out if o.topic == "driftline.dead-letter"]
    assert len(dead) == 1
    assert dict(dead[0].headers) == {
        "driftline-dlq-reason": b"missing_field",
        "driftline-dlq-detail": b"Object missing required field `prediction_id` - at `$.events[10]`",
        "driftline-source-topic": b"preds",
        "driftline-source-partition": b"2",
        "driftline-source-offset": b"77",
        "driftline-batch-index": b"10",
    }
    assert orjson.loads(dead[0].value) == bad
    routed: dict[int, list[str]] = {}
    for o in out:
        if o.topic == "driftline.internal.join-input":
            msg = decode_join_input(o.value)
            if isinstance(msg, PredictionColumns):
                assert (msg.source, msg.offset, msg.watermark) == ("preds:2", 77, T0)
                routed[o.partition] = msg.ids
    expected = partition_for([e["prediction_id"] for e in events], 4).tolist()
    for pid, p in zip([e["prediction_id"] for e in events], expected, strict=True):
        assert pid in routed[p]
    assert sum(map(len, routed.values())) == 20
    assert router.invalid == {("preds", "missing_field"): 1}


def test_far_future_and_unknown_models_are_refused() -> None:
    router = _router(allow_unknown_models=False, models={"known": ModelConfig()})
    ahead = _event("a", ts=WALL + 3_600_001, model="known")
    unknown = _event("u", model="nobody")
    ok = _event("k", model="known")
    out = router.route("predictions", _batch([ahead, unknown, ok]), "preds", 0, 5, wall_ms=WALL)
    reasons = [dict(o.headers)["driftline-dlq-reason"] for o in out if o.topic == "driftline.dead-letter"]
    assert reasons == [b"too_far_ahead", b"unknown_model"]
    batches = [decode_join_input(o.value) for o in out if o.topic == "driftline.internal.join-input"]
    assert [pid for b in batches if isinstance(b, PredictionColumns) for pid in b.ids] == ["k"]


def test_end_of_input_goes_to_every_join_partition() -> None:
    router = _router()
    out = router.route("predictions", None, "preds", 1, 9, [(CONTROL_HEADER, END_OF_INPUT)])
    assert sorted(o.partition for o in out) == [0, 1, 2, 3]
    assert [decode_join_input(o.value) for o in out] == [EndOfInput("preds:1")] * 4


def test_partitions_without_data_get_ticks_and_idle_sources_are_announced() -> None:
    router = _router()
    out = router.route("predictions", orjson.dumps(_event("x")), "preds", 0, 0, wall_ms=WALL)
    ticks = {
        o.partition: decode_join_input(o.value) for o in out if isinstance(decode_join_input(o.value), Tick)
    }
    data = [o.partition for o in out if isinstance(decode_join_input(o.value), PredictionColumns)]
    assert sorted([*ticks, *data]) == [0, 1, 2, 3] and len(data) == 1
    assert all(t == Tick("preds:0", T0) for t in ticks.values())
    assert router.idle_ticks([("preds", 0)], now=5.0, idle_after_s=10.0) == []
    idle = router.idle_ticks([("preds", 0)], now=11.0, idle_after_s=10.0)
    assert [decode_join_input(o.value) for o in idle] == [Tick("preds:0", T0, idle=True)] * 4
    assert router.idle_ticks([("preds", 0)], now=30.0, idle_after_s=10.0) == []  # announced once


def _messages(n: int) -> list:
    """``n`` single-event messages of source preds:0 at offsets 0..n-1 (ids s0..)."""
    from driftline.streams.ingest import Incoming

    return [Incoming(orjson.dumps(_event(f"s{i}", ts=T0 + i)), "preds", 0, i) for i in range(n)]


def test_consecutive_messages_of_a_source_reach_the_join_as_one_block_per_partition() -> None:
    """Single-event messages routed together: one block per join partition, each row with
    its message's offset, a bad message dead-lettered alone, end-of-input after the events
    that came before it."""
    from driftline.streams.ingest import Incoming
    from driftline.streams.messages import PredictionColumns

    router = _router()
    messages = _messages(40)
    messages.insert(10, Incoming(b"{not json", "preds", 0, 999))  # offsets need not be dense
    messages.append(Incoming(None, "preds", 0, 1000, ((CONTROL_HEADER, END_OF_INPUT),)))
    out = router.route_many("predictions", messages, wall_ms=WALL)
    dead = [o for o in out if o.topic == "driftline.dead-letter"]
    assert [dict(o.headers)["driftline-source-offset"] for o in dead] == [b"999"]
    joined = [(o.partition, decode_join_input(o.value)) for o in out if o.topic.endswith("join-input")]
    blocks = [(p, m) for p, m in joined if isinstance(m, PredictionColumns)]
    assert sorted(p for p, _ in blocks) == [0, 1, 2, 3]  # one per partition, 40 events in all
    expected = partition_for([f"s{i}" for i in range(40)], 4).tolist()
    for p, block in blocks:
        assert block.ids == [f"s{i}" for i in range(40) if expected[i] == p]
        rows = np.frombuffer(block.row_offsets, dtype="<i8").tolist()
        assert rows == [int(pid[1:]) for pid in block.ids]  # each row keeps its own offset
        assert block.offset == 39 and block.watermark == T0 + 39
    # end-of-input follows every block, on every partition
    last_block = max(i for i, (_, m) in enumerate(joined) if isinstance(m, PredictionColumns))
    assert [m for _, m in joined[last_block + 1 :]] == [EndOfInput("preds:0")] * 4


def test_a_block_partly_applied_before_a_restart_applies_only_the_rest() -> None:
    """After a restart ingest re-reads from its committed offset and may group messages
    differently; the join applies exactly the rows it had not applied."""
    from driftline.streams.catalog import ModelCatalog
    from driftline.streams.join import JoinPartition

    def join() -> JoinPartition:
        cfg = Config()
        return JoinPartition(0, ModelCatalog(cfg), prediction_sources=["preds:0"], label_sources=[])

    def feed(jp: JoinPartition, batches: list[list]) -> None:
        router = Router(Config(), ModelCatalog(Config()), join_partitions=1)
        for batch in batches:
            for o in router.route_many("predictions", batch, wall_ms=WALL):
                jp.apply(decode_join_input(o.value))

    messages = _messages(30)
    uninterrupted, restarted = join(), join()
    feed(uninterrupted, [messages[i : i + 1] for i in range(30)])  # one at a time
    feed(restarted, [messages[:12]])  # applied up to offset 11, then a restart from offset 7
    feed(restarted, [messages[7:20], messages[20:]])
    assert restarted.counters == uninterrupted.counters
    assert restarted.counters["predictions"] == 30 and restarted.counters["duplicate_predictions"] == 0
    assert restarted.snapshot() == uninterrupted.snapshot()


def test_blocks_are_capped_at_max_block_events(monkeypatch: pytest.MonkeyPatch) -> None:
    from driftline.streams.messages import PredictionColumns

    monkeypatch.setattr("driftline.streams.ingest.MAX_BLOCK_EVENTS", 8)
    router = Router(Config(), ModelCatalog(Config()), join_partitions=1)
    out = router.route_many("predictions", _messages(20), wall_ms=WALL)
    blocks = [m for m in (decode_join_input(o.value) for o in out) if isinstance(m, PredictionColumns)]
    assert [len(b.ids) for b in blocks] == [8, 8, 4]


def test_a_block_stops_where_a_window_would_close() -> None:
    """A backlog read in big takes must not open more windows at once than one message at a
    time would: a block ends before the event that crosses a closing boundary."""
    from driftline.streams.ingest import Incoming
    from driftline.streams.messages import PredictionColumns

    cfg = Config()
    close = T0 - T0 % cfg.defaults.window_ms + cfg.defaults.window_ms + cfg.defaults.grace_ms
    stamps = [T0, T0 + 1, close, close + 1, close + 2]
    messages = [Incoming(orjson.dumps(_event(f"c{i}", ts=t)), "preds", 0, i) for i, t in enumerate(stamps)]
    router = Router(cfg, ModelCatalog(cfg), join_partitions=1)
    out = router.route_many("predictions", messages, wall_ms=close + 60_000)
    blocks = [m for m in (decode_join_input(o.value) for o in out) if isinstance(m, PredictionColumns)]
    assert [b.ids for b in blocks] == [["c0", "c1"], ["c2", "c3", "c4"]]


def _through_the_pipeline(
    cfg: Config, predictions: list[dict], labels: list[dict]
) -> tuple[list, list, dict]:
    """Route one prediction batch and one label batch (then end of input) through ingest, join
    (3 partitions), merge and evaluate: the final whole-model results, the dead-letter
    records and the merged join counters."""
    from driftline.streams.catalog import ModelCatalog
    from driftline.streams.evaluation import Evaluator
    from driftline.streams.join import JoinPartition
    from driftline.streams.merge import WindowMerger

    catalog = ModelCatalog(cfg)
    router = Router(cfg, catalog, join_partitions=3)
    sources = {kind: [f"driftline.{kind}:0"] for kind in ("predictions", "ground-truth")}
    joins = [
        JoinPartition(
            p, catalog, prediction_sources=sources["predictions"], label_sources=sources["ground-truth"]
        )
        for p in range(3)
    ]
    merger = WindowMerger(catalog, Evaluator(catalog), 3)
    out = router.route("predictions", _batch(predictions), "driftline.predictions", 0, 0, wall_ms=WALL)
    body = orjson.dumps({"kind": "ground_truth", "events": labels})
    out += router.route("ground_truth", body, "driftline.ground-truth", 0, 0, wall_ms=WALL)
    for topic, kind in (("driftline.predictions", "predictions"), ("driftline.ground-truth", "ground_truth")):
        out += router.route(kind, None, topic, 0, 1, [(CONTROL_HEADER, END_OF_INPUT)])  # type: ignore[arg-type]
    dead = [o for o in out if o.topic == "driftline.dead-letter"]
    results = []
    for o in out:
        if o.topic == router.join_topic:
            jp = joins[o.partition]  # type: ignore[index]
            for message in [*jp.apply(decode_join_input(o.value)), jp.progress()]:
                results.extend(e.result for e in merger.add(message).evaluations)
    final = sorted((r for r in results if r.phase == "final" and not r.segment), key=lambda r: r.model_id)
    return final, dead, merger.counters


def test_two_models_scoring_one_request_end_to_end_through_ingest() -> None:
    """Ingest partitions by prediction_id alone, so both models' events of an id reach one join
    partition, where each label joins its own model's prediction: accuracy 1.0 for both
    models (they disagree on every request; joined across models, every outcome is wrong)."""
    preds, labels = [], []
    for i in range(50):
        for model, value in (("a", i % 2), ("b", 1 - i % 2)):
            preds.append({**_event(f"id{i}", ts=T0 + i, model=model), "prediction": value})
            labels.append(
                {"prediction_id": f"id{i}", "model_id": model, "label": value, "timestamp": T0 + 60 + i}
            )
    final, dead, counters = _through_the_pipeline(Config(), preds, labels)
    assert dead == []
    assert [(r.model_id, r.labelled_count, r.metrics["accuracy"]) for r in final] == [
        ("a", 50, 1.0),
        ("b", 50, 1.0),
    ]
    assert counters["duplicate_predictions"] == counters["duplicate_labels"] == 0
    assert counters["joined"] == 100


def _task_router() -> Router:
    """One model per task: regression, binary on 0/1, binary on strings, multiclass."""
    cfg = Config(
        models={
            "price": ModelConfig(task="regression"),
            "churn": ModelConfig(),
            "fraud": ModelConfig(positive_label="fraud", negative_label="ok"),
            "kind": ModelConfig(task="multiclass"),
        }
    )
    return Router(cfg, ModelCatalog(cfg), join_partitions=1)


def _rejections(out: list) -> list[tuple[int, str, str]]:
    """(batch index, reason, detail) of each dead-letter record."""
    found = []
    for o in out:
        if o.topic == "driftline.dead-letter":
            h = {k: v.decode() for k, v in o.headers}
            found.append(
                (int(h["driftline-batch-index"]), h["driftline-dlq-reason"], h["driftline-dlq-detail"])
            )
    return found


def _routed_ids(out: list) -> list[str]:
    return [
        pid
        for o in out
        if o.topic.endswith("join-input")
        for pid in getattr(decode_join_input(o.value), "ids", [])
    ]


def test_labels_that_do_not_fit_their_models_task_are_dead_lettered_and_the_rest_kept() -> None:
    """A string for a regression model, a class a binary model does not have (a boolean, a
    fraction, a negative number, an unknown string, an int for a model of string classes) is
    ``invalid_label``, one record per label with the model, task and value; the valid labels
    of the same batch go on to the join."""
    router = _task_router()
    rows = [
        ("ok1", "churn", 1),
        ("s", "price", "high"),
        ("ok2", "churn", "0"),
        ("u", "churn", "maybe"),
        ("t", "churn", True),
        ("f", "churn", 3.75),
        ("n", "churn", -1),
        ("ok3", "price", 2.5),
        ("ok4", "price", 3),
        ("c", "fraud", "chargeback"),
        ("i", "fraud", 1),
        ("ok5", "fraud", "ok"),
        ("ok6", "kind", "cat"),
        ("ok7", "kind", 7),
        ("ok8", "churn", 1.0),  # JSON has one number 1, however it is spelled
        ("b", "price", False),
        ("h", "kind", 0.5),
    ]
    labels = [{"prediction_id": pid, "model_id": m, "label": v, "timestamp": T0} for pid, m, v in rows]
    body = orjson.dumps({"kind": "ground_truth", "events": labels})
    out = router.route("ground_truth", body, "labels", 0, 3, wall_ms=WALL)
    assert _rejections(out) == [
        (1, "invalid_label", "label \"high\" does not fit regression model 'price': it must be a number"),
        (3, "invalid_label", "label \"maybe\" does not fit binary model 'churn': its classes are 0 and 1"),
        (
            4,
            "invalid_label",
            "label true does not fit binary model 'churn': a boolean is not a class; its classes are 0 and 1",
        ),
        (5, "invalid_label", "label 3.75 does not fit binary model 'churn': its classes are 0 and 1"),
        (6, "invalid_label", "label -1 does not fit binary model 'churn': its classes are 0 and 1"),
        (
            9,
            "invalid_label",
            'label "chargeback" does not fit binary model \'fraud\': its classes are "ok" and "fraud"',
        ),
        (
            10,
            "invalid_label",
            'label 1 does not fit binary model \'fraud\': its classes are "ok" and "fraud"',
        ),
        (
            15,
            "invalid_label",
            "label false does not fit regression model 'price': it must be a number, not a boolean",
        ),
        (
            16,
            "invalid_label",
            "label 0.5 does not fit multiclass model 'kind': a class is a string or an integer",
        ),
    ]
    assert _routed_ids(out) == [f"ok{i}" for i in range(1, 9)]
    assert router.invalid == {("labels", "invalid_label"): 9}


def test_a_model_whose_predictions_change_type_is_dead_lettered_as_task_mismatch() -> None:
    """A binary model that starts sending probabilities as its prediction, a regression model
    sending strings, a multiclass model sending fractions or booleans: ``task_mismatch``, per
    event, and the stream goes on with the valid ones."""
    router = _task_router()

    def batch(rows: list[tuple[str, str, object]]) -> bytes:
        return _batch([{**_event(pid, model=m), "prediction": v} for pid, m, v in rows])

    first = router.route(
        "predictions", batch([("a", "churn", 1), ("b", "churn", 0)]), "preds", 0, 0, wall_ms=WALL
    )
    assert _rejections(first) == [] and _routed_ids(first) == ["a", "b"]
    rows = [
        ("c", "churn", 0.83),
        ("d", "churn", 1),
        ("e", "price", "12.5"),
        ("f", "kind", True),
        ("g", "price", 4),
    ]
    out = router.route("predictions", batch(rows), "preds", 0, 1, wall_ms=WALL)
    assert _rejections(out) == [
        (0, "task_mismatch", "prediction 0.83 does not fit binary model 'churn': its classes are 0 and 1"),
        (
            2,
            "task_mismatch",
            "prediction \"12.5\" does not fit regression model 'price': it must be a number",
        ),
        (
            3,
            "task_mismatch",
            "prediction true does not fit multiclass model 'kind': a class is a string or an integer",
        ),
    ]
    assert _routed_ids(out) == ["d", "g"]
    assert router.invalid == {("preds", "task_mismatch"): 3}


def test_scores_without_the_positive_class_are_warned_about_once_per_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ROC AUC, log loss and Brier need the positive class's probability; when a binary
    prediction's ``scores`` do not name it they leave that prediction out, so say so, once."""
    router = _task_router()
    scored = {"prediction": 1, "scores": {"yes": 0.8, "no": 0.2}}
    with caplog.at_level("WARNING", logger="driftline.streams.ingest"):
        for offset in range(2):
            rows = [{**_event(f"p{offset}{i}", model=m), **scored} for i, m in enumerate(["churn", "churn"])]
            router.route("predictions", _batch(rows), "preds", 0, offset, wall_ms=WALL)
        fine = [{**_event("q", model="fraud"), "prediction": "ok", "scores": {"fraud": 0.1, "ok": 0.9}}]
        fine.append({**_event("r", model="churn"), "prediction": 1, "score": 0.8, "scores": {"yes": 0.8}})
        router.route("predictions", _batch(fine), "preds", 0, 2, wall_ms=WALL)
    assert [r.getMessage() for r in caplog.records] == [
        'binary model \'churn\': scores name ["no", "yes"] but not the positive class 1 (positive_label), '
        "so ROC AUC, log loss and Brier score leave such predictions out"
    ]


def test_a_binary_model_of_string_classes_matches_scikit_learn() -> None:
    """Classes "fraud" and "ok", positive "fraud": accuracy, precision and recall of both
    classes, ROC AUC, log loss and Brier score equal scikit-learn's on the valid events, and
    the labels that are not one of the two classes are left out, not scored."""
    from sklearn import metrics as skm

    cfg = Config(models={"fraud": ModelConfig(positive_label="fraud", negative_label="ok")})
    rng = np.random.default_rng(7)
    n = 300
    p = (rng.integers(0, 200, n) + 0.5) / 200  # bin centres: the ROC AUC histogram is then exact
    y_true = np.where(rng.random(n) < p, "fraud", "ok")
    y_pred = np.where(p >= 0.5, "fraud", "ok")
    preds, labels = [], []
    for i in range(n):
        pid = f"t{i}"
        scores = {"fraud": float(p[i]), "ok": 1 - float(p[i])}
        preds.append(
            {**_event(pid, ts=T0 + i, model="fraud"), "prediction": str(y_pred[i]), "scores": scores}
        )
        labels.append(
            {"prediction_id": pid, "model_id": "fraud", "label": str(y_true[i]), "timestamp": T0 + n}
        )
    for i, bad in enumerate(["Fraud", True, 1, "ok "]):  # not a class: dead-lettered, never scored
        labels[i * 50]["label"] = bad
    valid = np.array([i % 50 != 0 or i >= 200 for i in range(n)])
    final, dead, _ = _through_the_pipeline(cfg, preds, labels)
    assert [dict(o.headers)["driftline-dlq-reason"] for o in dead] == [b"invalid_label"] * 4
    (result,) = final
    m, yt, yp, pv = result.metrics, y_true[valid], y_pred[valid], p[valid]
    assert (result.prediction_count, result.labelled_count) == (n, n - 4)
    assert m["accuracy"] == skm.accuracy_score(yt, yp)
    for cls in ("fraud", "ok"):
        assert m[f"precision.{cls}"] == skm.precision_score(yt, yp, pos_label=cls)
        assert m[f"recall.{cls}"] == skm.recall_score(yt, yp, pos_label=cls)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(yt == "fraud", pv), abs=1e-12)
    assert m["roc_auc_error_bound"] > 0  # ties share a bin, as they tie in scikit-learn
    assert m["log_loss"] == pytest.approx(skm.log_loss(yt == "fraud", pv), rel=1e-12)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(yt == "fraud", pv), rel=1e-12)


@pytest.mark.parametrize(
    ("task", "classes"),
    [
        ("binary", ("0", "1")),
        ("binary", ("ok", "fraud")),
        ("binary", ("1", "0")),
        ("multiclass", None),
        ("regression", None),
    ],
)
def test_the_batch_check_of_task_fit_agrees_with_the_check_of_each_value(
    task: str, classes: tuple | None
) -> None:
    """A batch passes TaskFit.fits_all (the fast path) exactly when every value passes misfit."""
    import random

    from driftline.streams.ingest import TaskFit

    fit = TaskFit(task, classes)
    pool: list[object] = [0, 1, 2, -1, 0.0, 1.0, 3.75, True, False, "0", "1", "ok", "fraud", "x", "1.0"]
    rng = random.Random(3)
    for _ in range(2000):
        values = rng.choices(pool, k=rng.randint(1, 4))
        assert fit.fits_all(values) == all(fit.misfit(v) is None for v in values), values
