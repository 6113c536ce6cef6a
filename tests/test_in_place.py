"""Joining co-partitioned input where it is read (issue 15, item 3), without a broker.

The router keeps what a source sends to the join partition it is paired with (rows, ticks,
end of input) instead of returning it for ``internal.join-input``, so each (source, join
partition) has exactly one path; and joining what it keeps at once, while the hop's messages
arrive late, gives the final partials and counters the hop alone gives (docs/architecture.md,
"Joining co-partitioned input where it is read"). The worker's side (live assignment,
handoff, checkpoint-then-ack of the input) is exercised under kill -9 by
tests/test_crash_recovery.py, which also checks that rows were joined in place there.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import orjson

from driftline.apps.simulate import simulate
from driftline.detectors.hashing import partition_for
from driftline.platform.config import Config, ModelConfig
from driftline.streams.catalog import ModelCatalog
from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT, Incoming, InPlace, Kind, Router
from driftline.streams.join import JoinPartition
from driftline.streams.messages import (
    EndOfInput,
    JoinInput,
    LabelColumns,
    Partial,
    PredictionColumns,
    Tick,
    decode_join_input,
)

N = 2  # input and join partitions alike
PREDICTIONS, LABELS = "driftline.predictions", "driftline.ground-truth"
KINDS: dict[str, Kind] = {PREDICTIONS: "predictions", LABELS: "ground_truth"}


def _sources() -> dict[str, list[Incoming]]:
    """Each input partition's messages: half of the events on their join partition (the
    producer helper's partitioning), half on a random one (another partitioner), in batches
    of up to 4, each partition in its own order with disorder inside the grace."""
    traffic = simulate(3000, events_per_s=40, label_delay_ms=3_000, seed=15)
    rng = random.Random(15)
    logs: dict[str, list[dict]] = {f"{t}:{p}": [] for t in KINDS for p in range(N)}
    for topic, events in ((PREDICTIONS, traffic.predictions), (LABELS, traffic.labels)):
        homes = partition_for([e["prediction_id"] for e in events], N).tolist()
        for event, home in zip(events, homes, strict=True):
            p = home if rng.random() < 0.5 else rng.randrange(N)
            logs[f"{topic}:{p}"].append(event)
    out: dict[str, list[Incoming]] = {}
    for source, events in logs.items():
        events.sort(key=lambda e: e["timestamp"] + rng.randrange(2_000))  # disorder < grace
        topic, _, partition = source.rpartition(":")
        messages, offset, i = [], 0, 0
        while i < len(events):
            size = rng.randint(1, 4)
            body = {"kind": KINDS[topic], "events": events[i : i + size]}
            messages.append(Incoming(orjson.dumps(body), topic, int(partition), offset))
            i, offset = i + size, offset + 1
        messages.append(Incoming(None, topic, int(partition), offset, ((CONTROL_HEADER, END_OF_INPUT),)))
        out[source] = messages
    return out


def _config() -> Config:
    return Config(defaults=ModelConfig(window_ms=30_000, grace_ms=5_000, label_horizon_ms=15_000))


def _joins(cfg: Config, catalog: ModelCatalog) -> list[JoinPartition]:
    preds = [f"{PREDICTIONS}:{p}" for p in range(N)]
    labels = [f"{LABELS}:{p}" for p in range(N)]
    return [JoinPartition(p, catalog, prediction_sources=preds, label_sources=labels) for p in range(N)]


def _run(in_place: bool, delay: int) -> tuple[list[Any], dict[str, int], dict[tuple[str, int], int]]:
    """Route every source's messages in rounds (one take of 1-3 messages per source a round),
    joining what is kept in place at once and delivering the join topic's records ``delay``
    rounds later. Returns the final partials, the summed counters, and per (source, join
    partition) how many records reached the join by the hop."""
    cfg = _config()
    catalog = ModelCatalog(cfg)
    router = Router(cfg, catalog, N)
    joins = _joins(cfg, catalog)
    sources = {s: deque(m) for s, m in _sources().items()}
    homes = {s: int(s.rpartition(":")[2]) for s in sources} if in_place else {}
    rng = random.Random(7)
    wall = 1_767_225_600_000 + 86_400_000
    in_flight: deque[list[tuple[int, JoinInput]]] = deque()
    partials: list[Partial] = []
    hopped: dict[tuple[str, int], int] = {}

    def apply(batch: list[tuple[int, JoinInput]]) -> None:
        for p, message in batch:
            partials.extend(joins[p].apply(message))

    while any(sources.values()):
        for queue in sources.values():
            take = [queue.popleft() for _ in range(min(len(queue), rng.randint(1, 3)))]
            if not take:
                continue
            local = InPlace(homes) if in_place else None
            out = router.route_many(KINDS[take[0].topic], take, wall_ms=wall, local=local)
            hop = []
            for o in out:
                if o.topic == router.join_topic:
                    assert o.partition is not None
                    message = decode_join_input(o.value or b"")
                    key = (getattr(message, "source", ""), o.partition)
                    hopped[key] = hopped.get(key, 0) + 1
                    hop.append((o.partition, message))
            if local is not None:
                apply(local.messages)
            in_flight.append(hop)
            if len(in_flight) > delay:
                apply(in_flight.popleft())
    while in_flight:
        apply(in_flight.popleft())
    assert all(j.ended for j in joins)
    counters: dict[str, int] = {}
    for j in joins:
        for name, value in j.counters.items():
            counters[name] = counters.get(name, 0) + value
    finals = sorted(
        (
            (
                p.join_partition,
                p.model_id,
                p.segment,
                p.window_start,
                orjson.dumps(p.aggregate, option=orjson.OPT_SORT_KEYS),
            )
            for p in partials
            if p.phase == "final"
        ),
    )
    return finals, counters, hopped


def test_each_source_reaches_its_own_join_partition_in_place_and_only_there() -> None:
    """Rows, ticks and end of input of ``predictions:p`` for join partition p are kept for
    in place, none of them goes through the join topic; what it sends to the other partition
    still does."""
    cfg = _config()
    router = Router(cfg, ModelCatalog(cfg), N)
    kept: list[tuple[int, JoinInput]] = []
    hop: list[tuple[int, JoinInput]] = []
    for source, messages in _sources().items():
        home = int(source.rpartition(":")[2])
        local = InPlace({source: home})
        for m in messages:
            out = router.route_many(KINDS[m.topic], [m], wall_ms=1_767_225_600_000 + 86_400_000, local=local)
            hop += [
                (o.partition or 0, decode_join_input(o.value or b""))
                for o in out
                if o.topic == router.join_topic
            ]
        kept += local.messages
        assert all(p == home and getattr(msg, "source", "") == source for p, msg in local.messages)
    assert not [(p, m) for p, m in hop if getattr(m, "source", "") == f"{PREDICTIONS}:{p}"]
    assert not [(p, m) for p, m in hop if getattr(m, "source", "") == f"{LABELS}:{p}"]
    kinds = {type(m) for _, m in kept}
    assert {PredictionColumns, LabelColumns, Tick, EndOfInput} <= kinds
    assert {PredictionColumns, LabelColumns, Tick, EndOfInput} <= {type(m) for _, m in hop}


def test_joining_in_place_gives_what_the_hop_gives() -> None:
    """The same source logs, all through the hop, and with each source's own partition joined
    in place while the hop's records come several rounds late: every final partial and counter
    is equal (but ``early_labels``, which records how the topics interleaved), and a share of
    the rows did skip the hop."""
    hop_finals, hop_counters, hop_paths = _run(in_place=False, delay=0)
    finals, counters, paths = _run(in_place=True, delay=5)
    assert len(hop_finals) > 20
    assert finals == hop_finals
    hop_counters.pop("early_labels")
    counters.pop("early_labels")
    assert counters == hop_counters
    assert hop_counters["joined"] > 2000
    for p in range(N):  # in place: nothing of a source through the hop to its own partition
        assert (f"{PREDICTIONS}:{p}", p) in hop_paths and (f"{PREDICTIONS}:{p}", p) not in paths
        assert (f"{LABELS}:{p}", p) in hop_paths and (f"{LABELS}:{p}", p) not in paths
        assert (f"{PREDICTIONS}:{p}", 1 - p) in paths


def test_a_final_partial_replaces_a_provisional_one_whatever_its_seq() -> None:
    """After a restore, a join partition that joins in place replays at join-input offsets
    below those it had reached (in-place rows move none), so a window's final partial may come
    with a lower ``seq`` than the provisional one the merger holds: it must still replace it,
    and a provisional one must never replace a final one."""
    from driftline.detectors.aggregates import WindowAggregate
    from driftline.streams.evaluation import Evaluator
    from driftline.streams.merge import WindowMerger

    cfg = _config()
    catalog = ModelCatalog(cfg)
    catalog.admit("m")
    merger = WindowMerger(catalog, Evaluator(catalog), 1)
    aggregate = WindowAggregate(catalog.spec("m")).to_dict()

    def partial(phase: str, seq: int) -> Partial:
        return Partial(0, "m", "v1", "", 0, 30_000, phase, aggregate, seq=seq)  # type: ignore[arg-type]

    merger.add(partial("provisional", 10))
    merger.add(partial("final", 5))
    merger.add(partial("provisional", 12))
    held = merger._partials[("m", "v1", "", 0)][0]
    assert (held.phase, held.seq) == ("final", 5)


def test_join_in_place_is_a_boolean_setting() -> None:
    import pytest

    from driftline.platform.config import config_from_mapping

    assert config_from_mapping({}).join_in_place is True
    assert config_from_mapping({"join_in_place": False}).join_in_place is False
    with pytest.raises(ValueError, match="join_in_place"):
        config_from_mapping({"join_in_place": "no"})
