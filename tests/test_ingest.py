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
    cfg = Config(**config)
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


def test_two_models_scoring_one_request_end_to_end_through_ingest() -> None:
    """Ingest partitions by prediction_id alone, so both models' events of an id reach one join
    partition, where each label joins its own model's prediction: accuracy 1.0 for both
    models (they disagree on every request; joined across models, every outcome is wrong)."""
    from driftline.streams.catalog import ModelCatalog
    from driftline.streams.evaluation import Evaluator
    from driftline.streams.join import JoinPartition
    from driftline.streams.merge import WindowMerger

    cfg = Config()
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
    preds, labels = [], []
    for i in range(50):
        for model, value in (("a", i % 2), ("b", 1 - i % 2)):
            preds.append({**_event(f"id{i}", ts=T0 + i, model=model), "prediction": value})
            labels.append(
                {"prediction_id": f"id{i}", "model_id": model, "label": value, "timestamp": T0 + 60 + i}
            )
    out = router.route("predictions", _batch(preds), "driftline.predictions", 0, 0, wall_ms=WALL)
    body = orjson.dumps({"kind": "ground_truth", "events": labels})
    out += router.route("ground_truth", body, "driftline.ground-truth", 0, 0, wall_ms=WALL)
    for topic, kind in (("driftline.predictions", "predictions"), ("driftline.ground-truth", "ground_truth")):
        out += router.route(kind, None, topic, 0, 1, [(CONTROL_HEADER, END_OF_INPUT)])  # type: ignore[arg-type]
    assert [o for o in out if o.topic == "driftline.dead-letter"] == []
    results = []
    for o in out:
        jp = joins[o.partition]  # type: ignore[index]
        for message in [*jp.apply(decode_join_input(o.value)), jp.progress()]:
            results.extend(e.result for e in merger.add(message).evaluations)
    final = sorted((r for r in results if r.phase == "final" and not r.segment), key=lambda r: r.model_id)
    assert [(r.model_id, r.labelled_count, r.metrics["accuracy"]) for r in final] == [
        ("a", 50, 1.0),
        ("b", 50, 1.0),
    ]
    assert merger.counters["duplicate_predictions"] == merger.counters["duplicate_labels"] == 0
    assert merger.counters["joined"] == 100
