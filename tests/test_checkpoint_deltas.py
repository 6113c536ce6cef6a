"""Delta checkpoints: a chain (base + deltas) restores to exactly what the whole state restores to.

Seeded random runs of the join and the merger (two models, segments, duplicates, early and late
labels, ids that expire and come again, windows closing in both phases, idle sources), with a
checkpoint at random points: each one whole or a delta at random (so across compactions), and
after each the chain so far restored into a fresh state must give the live state's whole
snapshot byte for byte. Now and then the run goes on from the restored copy (a worker that took
the partition over), so tracking after a restore is covered too. A kill -9 in the middle of
a chain is in ``test_a_chain_killed_mid_write_restores_to_what_it_covers``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from driftline.detectors.hashing import partition_for
from driftline.platform.checkpoints import CheckpointStore
from driftline.platform.config import Config, ModelConfig
from driftline.platform.store.db import upgrade
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.streams.catalog import ModelCatalog
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.messages import Partial, Progress

T0 = 1_767_225_600_000
SOURCES = {"p": ["preds:0", "preds:1"], "l": ["labels:0"]}


def _catalog() -> ModelCatalog:
    defaults = ModelConfig(window_ms=10_000, grace_ms=2_000, label_horizon_ms=6_000)
    return ModelCatalog(Config(defaults=defaults))


def _join(catalog: ModelCatalog, partition: int = 0) -> JoinPartition:
    return JoinPartition(partition, catalog, prediction_sources=SOURCES["p"], label_sources=SOURCES["l"])


def _ops(seed: int, steps: int) -> list[tuple]:
    """A random log: prediction and label batches at source offsets, progress and idle ticks.
    Ids come from a small pool, so duplicates, early labels and ids reused after they expired
    all happen; event times scatter around a moving clock, so some predictions are late."""
    rng = random.Random(seed)
    clock = {s: T0 for s in SOURCES["p"] + SOURCES["l"]}
    offsets = dict.fromkeys(clock, 0)
    recent: set[tuple[str, str]] = set()
    out: list[tuple] = []
    for _ in range(steps):
        r = rng.random()
        kind = "p" if r < 0.45 else "l" if r < 0.8 else "t"
        source = rng.choice(SOURCES["p"] if kind == "p" else SOURCES["l"] if kind == "l" else list(clock))
        clock[source] += rng.randint(0, 1_500)
        now = clock[source]
        if kind == "t":
            out.append(("t", source, now, rng.random() < 0.2))
            continue
        events: list[PredictionEvent | GroundTruthEvent] = []
        if kind == "l" and recent and rng.random() < 0.5:  # the labels of recent predictions
            for model, pid in rng.sample(sorted(recent), min(len(recent), rng.randint(1, 8))):
                ts = now + rng.randint(-2_000, 500)
                events.append(_label(pid, model, rng.randint(0, 1), ts))
            recent.clear()
            offsets[source] += 1
            out.append((kind, source, offsets[source], events, now))
            continue
        for _ in range(rng.randint(1, 12)):
            pid, model = f"id{rng.randrange(120)}", rng.choice(["m", "n"])
            if kind == "p":
                recent.add((model, pid))
            ts = now + rng.randint(-4_000, 500)
            if kind == "p":
                events.append(PredictionEvent(
                    prediction_id=pid, model_id=model, timestamp=ts, prediction=rng.randint(0, 1),
                    score=rng.random(), features={"x": rng.gauss(0, 1), "c": rng.choice("abc")},
                    segments={"region": rng.choice(["eu", "us", "ap"]), "device": rng.choice("ab")},
                ))
            else:
                events.append(_label(pid, model, rng.randint(0, 1), ts))
        offsets[source] += 1
        out.append((kind, source, offsets[source], events, now))
    return out


def _label(pid: str, model: str, label: int, ts: int) -> GroundTruthEvent:
    return GroundTruthEvent(prediction_id=pid, model_id=model, label=label, timestamp=ts)


def _apply(jp: JoinPartition, op: tuple) -> list[Partial]:
    if op[0] == "t":
        return jp.source_progress(op[1], op[2], idle=op[3])
    kind, source, offset, events, now = op
    if jp.accept(source, offset):
        if kind == "p":
            jp.add_predictions(events, at=(source, offset))
        else:
            jp.add_labels(events, at=(source, offset))
    return jp.source_progress(source, now)


class _Chain:
    """A checkpoint chain kept in memory, written the way the agents write it."""

    def __init__(self, rng: random.Random, max_deltas: int) -> None:
        self.rng, self.max_deltas = rng, max_deltas
        self.base: bytes | None = None
        self.deltas: list[bytes] = []
        self.bases = 0

    def write(self, state: JoinPartition | WindowMerger) -> None:
        whole = not state.tracking or len(self.deltas) >= self.max_deltas or self.rng.random() < 0.1
        data = state.checkpoint(whole=whole)
        if whole:
            self.base, self.deltas, self.bases = data, [], self.bases + 1
        else:
            self.deltas.append(data)


@pytest.mark.parametrize("seed", range(6))
def test_join_chain_restores_byte_for_byte_like_the_whole_state(seed: int) -> None:
    catalog = _catalog()
    rng = random.Random(1000 + seed)
    live, chain = _join(catalog), _Chain(rng, max_deltas=6)
    checked = deltas_seen = 0
    for i, op in enumerate(_ops(seed, 400)):
        _apply(live, op)
        live.next_offset = i + 1
        if rng.random() < 0.3:
            chain.write(live)
            assert chain.base is not None
            copy = _join(catalog)
            copy.restore(chain.base, chain.deltas)
            assert copy.snapshot() == live.snapshot(), f"seed {seed}, op {i}, {len(chain.deltas)} deltas"
            checked, deltas_seen = checked + 1, deltas_seen + len(chain.deltas)
            if rng.random() < 0.1:  # another worker takes over from the chain and goes on
                live = copy
    assert checked > 50 and chain.bases > 3 and deltas_seen > 100  # compactions and long chains
    assert live.counters["expired_unlabelled"] and live.counters["early_labels"]
    assert live.counters["duplicate_predictions"] and live.counters["late_predictions"]


@pytest.mark.parametrize("seed", range(3))
def test_merge_chain_restores_byte_for_byte_like_the_whole_state(seed: int) -> None:
    catalog = _catalog()
    rng = random.Random(2000 + seed)
    joins = [_join(catalog, p) for p in range(2)]
    merger = WindowMerger(catalog, Evaluator(catalog), len(joins))
    chain = _Chain(rng, max_deltas=5)
    checked = evaluations = 0
    for i, op in enumerate(_ops(seed, 300)):
        for p, jp in enumerate(joins):
            if op[0] == "t":
                sub = op
            else:
                mine = partition_for([e.prediction_id for e in op[3]], len(joins)).tolist()
                sub = (*op[:3], [e for e, t in zip(op[3], mine, strict=True) if t == p], op[4])
            for message in [*_apply(jp, sub), jp.progress()]:
                wire = msgspec.msgpack.decode(msgspec.msgpack.encode(message), type=Partial | Progress)
                evaluations += len(merger.add(wire).evaluations)
        merger.next_offset = i + 1
        if rng.random() < 0.3:
            chain.write(merger)
            assert chain.base is not None
            copy = WindowMerger(catalog, Evaluator(catalog), len(joins))
            copy.restore(chain.base, chain.deltas)
            assert copy.snapshot() == merger.snapshot(), f"seed {seed}, op {i}"
            checked += 1
            if rng.random() < 0.1:
                merger = copy
    assert checked > 40 and chain.bases > 3 and evaluations > 20


def test_a_delta_holds_what_changed_not_the_whole_state() -> None:
    """With many open windows, a delta after a few events is a small fraction of the state."""
    catalog = _catalog()
    live = _join(catalog)
    ops = _ops(7, 300)
    for op in ops[:250]:
        _apply(live, op)
    whole = live.checkpoint(whole=True)
    _apply(live, ops[250])
    delta = live.checkpoint(whole=False)
    assert len(delta) < len(whole) / 4


#: the writer the kill test runs in a subprocess: the seeded join run, a checkpoint after every
#: operation through a CheckpointStore on SQLite, until killed
_WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
from test_checkpoint_deltas import _apply, _catalog, _join, _ops
from driftline.platform.checkpoints import CheckpointStore
store = CheckpointStore(sys.argv[1], max_deltas=4)
jp = _join(_catalog())
for i, op in enumerate(_ops(int(sys.argv[2]), 100_000)):
    _apply(jp, op)
    jp.next_offset = i + 1
    whole = not jp.tracking or store.wants_base("j")
    data = jp.checkpoint(whole=whole)
    if whole:
        store.save("j", data, jp.next_offset)
    elif not store.save_delta("j", data, jp.next_offset):
        raise SystemExit("chain lost")
    if i == 30:
        print("ready", flush=True)
"""


@pytest.mark.parametrize("seed", [3, 4])
def test_a_chain_killed_mid_write_restores_to_what_it_covers(tmp_path: Path, seed: int) -> None:
    """kill -9 of a writer at a random moment (between or inside its transactions): the stored
    chain restores to exactly the state after the operation its ``next_offset`` names."""
    url = f"sqlite:///{tmp_path}/store.sqlite"
    upgrade(url)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, str(seed), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == b"ready"
    time.sleep(random.Random(seed).uniform(0.2, 1.5))
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    store = CheckpointStore(url)
    try:
        got = store.load("j")
    finally:
        store.close()
    assert got is not None and got.next_offset > 30
    restored = _join(_catalog())
    restored.restore(got.payload, got.deltas)
    reference = _join(_catalog())
    for i, op in enumerate(_ops(seed, got.next_offset)):
        _apply(reference, op)
        reference.next_offset = i + 1
    assert restored.next_offset == got.next_offset
    assert restored.snapshot() == reference.snapshot()


def _pipeline(ops: list[tuple], catalog: ModelCatalog) -> tuple[list[JoinPartition], WindowMerger]:
    """Two join partitions and their merger through ``ops`` (how the files below were made)."""
    joins = [_join(catalog, p) for p in range(2)]
    merger = WindowMerger(catalog, Evaluator(catalog), 2)
    for i, op in enumerate(ops):
        for p, jp in enumerate(joins):
            if op[0] == "t":
                sub = op
            else:
                mine = partition_for([e.prediction_id for e in op[3]], 2).tolist()
                sub = (*op[:3], [e for e, t in zip(op[3], mine, strict=True) if t == p], op[4])
            for message in [*_apply(jp, sub), jp.progress()]:
                wire = msgspec.msgpack.decode(msgspec.msgpack.encode(message), type=Partial | Progress)
                merger.add(wire)
            jp.next_offset = i + 1
        merger.next_offset = i + 1
    return joins, merger


def test_whole_snapshots_the_previous_version_wrote_restore_and_take_deltas() -> None:
    """``join-checkpoint-v3.msgpack`` and ``merge-checkpoint-v1.msgpack`` were written by the
    version before delta checkpoints (whole snapshots only) after ``_pipeline(_ops(11, 150))``:
    they restore to the state this version reaches on the same log, and a chain can grow on them."""
    catalog = _catalog()
    ops = _ops(11, 170)
    joins, merger = _pipeline(ops[:150], catalog)
    data = Path(__file__).parent / "data"
    old_join, old_merge = (data / "join-checkpoint-v3.msgpack").read_bytes(), (
        data / "merge-checkpoint-v1.msgpack").read_bytes()
    jp = _join(catalog, 0)
    jp.restore(old_join)
    mg = WindowMerger(catalog, Evaluator(catalog), 2)
    mg.restore(old_merge)
    assert jp.snapshot() == joins[0].snapshot()
    assert mg.snapshot() == merger.snapshot()
    for i, op in enumerate(ops[150:], 150):  # on from the restored join, then a delta onto the old base
        _apply(jp, op)
        jp.next_offset = i + 1
    again = _join(catalog, 0)
    again.restore(old_join, [jp.checkpoint(whole=False)])
    assert again.snapshot() == jp.snapshot() and again.next_offset == 170
