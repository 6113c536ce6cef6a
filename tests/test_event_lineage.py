"""Lineage from prediction events: the optional ``registry`` field reaches the v2 request.

Events win field by field over the model's ``registry`` configuration, which fills what they
omit. Within a window (and over a request's range) the latest event that sent a registry wins;
at one event time the greatest value in (uri, name, alias, run_id) order, absent first. That is
a max, so the result cannot depend on how the events were split over join partitions.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from replaying import replay_events

from driftline.apps.simulate import simulate
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import (
    PredictionEvent,
    Reason,
    Registry,
    decode_predictions,
    decode_retraining_request,
    rfc3339_to_ms,
)
from driftline.schemas.events import SCHEMA_VERSION
from driftline.streams.catalog import ModelCatalog
from driftline.streams.columns import PredictionBlock
from driftline.streams.join import JoinPartition
from driftline.streams.messages import decode_join_input, encode_internal
from driftline.streams.positions import InputPositions

T0, W = 1_767_225_600_000, 10_000


def _event(registry: object) -> bytes:
    return json.dumps(
        {"prediction_id": "a", "model_id": "m", "timestamp": T0, "prediction": 1, "registry": registry}
    ).encode()


@pytest.mark.parametrize(
    ("registry", "reason", "where"),
    [
        ({"uri": "sqlite:///a b.db"}, Reason.INVALID_VALUE, "$.registry.uri"),
        ({"alias": ""}, Reason.INVALID_VALUE, "$.registry.alias"),
        ({"name": "fraud\nforged"}, Reason.INVALID_VALUE, "$.registry.name"),
        ({"run_id": "r" * 129}, Reason.INVALID_VALUE, "$.registry.run_id"),
        ({"run_id": 7}, Reason.WRONG_TYPE, "$.registry.run_id"),
        ("fraud", Reason.WRONG_TYPE, "$.registry"),
    ],
)
def test_a_bad_registry_dead_letters_the_event_with_a_reason(
    registry: object, reason: Reason, where: str
) -> None:
    decoded = decode_predictions(_event(registry))
    assert decoded.events == []
    [rejected] = decoded.rejected
    assert rejected.reason == reason and where in rejected.detail


def test_a_good_registry_decodes_and_absent_costs_nothing_on_the_block() -> None:
    [event] = decode_predictions(
        _event({"uri": "sqlite:///mlflow.db", "name": "fraud", "alias": "champion", "run_id": "abc"})
    ).events
    assert event.registry == Registry(uri="sqlite:///mlflow.db", name="fraud", alias="champion", run_id="abc")
    plain = PredictionEvent(prediction_id="b", model_id="m", timestamp=T0, prediction=1)
    block = PredictionBlock.from_events([plain, plain], lambda _: "1")
    assert block.registry is None and block.registries is None
    assert block.to_wire("p:0", 0, 0).registries is None
    empty = PredictionEvent(prediction_id="c", model_id="m", timestamp=T0, prediction=1, registry=Registry())
    assert PredictionBlock.from_events([plain, empty], lambda _: "1").registries is None  # {} says nothing
    assert SCHEMA_VERSION == "1.0"  # an optional field: a minor addition, no new major


def _catalog() -> ModelCatalog:
    return ModelCatalog(Config(defaults=ModelConfig(window_ms=W, grace_ms=1_000, label_horizon_ms=2_000)))


def test_conflicting_registries_in_one_window_resolve_alike_whatever_the_split() -> None:
    """One window's events name three run ids; the latest event time (two events at it, one
    with an alias) and the greatest of those wins, for every split over two join partitions
    and every order, across a checkpoint, after the partials travel the wire and merge."""
    a = Registry(name="fraud", run_id="run-a")
    b = Registry(name="fraud", run_id="run-b")
    c = Registry(name="fraud", alias="champion", run_id="run-a")
    rows = [("p1", 5, a), ("p2", 9, b), ("p3", 9, c), ("p4", 2, None), ("p5", 9, None), ("p6", W + 1, b)]
    expected = {
        T0: (T0 + 9, (None, "fraud", "champion", "run-a")),
        T0 + W: (T0 + W + 1, (None, "fraud", None, "run-b")),
    }
    catalog = _catalog()
    found = set()
    for split in itertools.product((0, 1), repeat=len(rows)):
        for order in (rows, rows[::-1]):
            joins = [JoinPartition(p, catalog, prediction_sources=["p:0"], label_sources=[]) for p in (0, 1)]
            for (pid, dt, reg), part in zip(order, split if order is rows else split[::-1], strict=True):
                event = PredictionEvent(
                    prediction_id=pid, model_id="m", timestamp=T0 + dt, prediction=1, registry=reg
                )
                wire = PredictionBlock.from_events([event], catalog.positive_label).to_wire("p:0", 0, 0)
                joins[part].add_prediction_block(
                    PredictionBlock.from_wire(decode_join_input(encode_internal(wire))),  # type: ignore[arg-type]
                )
            restored = []
            for p, jp in enumerate(joins):  # the lineage kept so far survives a checkpoint
                restored.append(JoinPartition(p, catalog, prediction_sources=["p:0"], label_sources=[]))
                restored[-1].restore(jp.snapshot())
            partials = [
                p for jp in restored for p in jp.end_source("p:0") if p.phase == "final" and p.segment == ""
            ]
            merged = {
                start: InputPositions.merged(
                    InputPositions.from_wire(p.positions) for p in partials if p.window_start == start
                ).lineage
                for start in {p.window_start for p in partials}
            }
            found.add(tuple(sorted(merged.items())))
    assert found == {tuple(sorted(expected.items()))}


def test_a_stream_whose_events_carry_lineage_gives_a_v2_request_with_those_values(tmp_path: Path) -> None:
    """Events name the registered model and a run (each event one of two runs at random);
    the configuration names another model, the registry URI and the alias. The request has
    the events' name, the run of the latest event before its window's end (computed here from
    the input), and the configuration's URI and alias for what the events left out. One event
    with a bad registry is dead-lettered."""
    traffic = simulate(14_400, events_per_s=30.0, concept_drift_at=4 / 8, label_share=0.8, seed=9)
    g = np.random.default_rng(16)
    for p in traffic.predictions:
        p["registry"] = {"name": "fraud-detector", "run_id": str(g.choice(["run-a", "run-b"]))}
    bad = dict(traffic.predictions[0], prediction_id="bad", registry={"run_id": ""})
    config = {
        "topics": {"predictions": 2, "ground_truth": 2},
        "defaults": {
            "window": "60s",
            "grace": "10s",
            "label_horizon": "30s",
            "registry": {"uri": "sqlite:///mlflow.db", "name": "fraud", "alias": "champion"},
        },
    }
    report = replay_events(tmp_path, [*traffic.predictions, bad], traffic.labels, config)

    assert report["dead_letter"]["by_reason"] == {"invalid_value": 1}
    assert report["retraining_requests"]
    for event in report["retraining_requests"]:
        data = decode_retraining_request(json.dumps(event).encode()).data
        end = rfc3339_to_ms(data.window.end)
        latest = max(
            (p["timestamp"], p["registry"]["run_id"]) for p in traffic.predictions if p["timestamp"] < end
        )
        assert data.lineage is not None
        assert (data.lineage.registry_uri, data.lineage.registered_model, data.lineage.version) == (
            "sqlite:///mlflow.db",
            "fraud-detector",
            "v1",
        )
        assert (data.lineage.alias, data.lineage.run_id) == ("champion", latest[1])
        assert data.parameters["registered_model"] == "fraud-detector"
        assert data.parameters["run_id"] == latest[1]
