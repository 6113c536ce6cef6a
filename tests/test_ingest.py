"""The ingest router without a broker: dead-letter records, admission, repartitioning, ticks."""

from __future__ import annotations

import orjson

from driftline.catalog import ModelCatalog
from driftline.config import Config, ModelConfig
from driftline.detectors.hashing import partition_for
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
