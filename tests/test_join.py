"""The join partition and the merger, without a broker: exact counts and partition independence."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.hashing import partition_for
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.schemas.windows import MAX_WATERMARK, closing_epoch, due_phase_at, window_shapes
from driftline.streams.catalog import ModelCatalog
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import COUNTERS, JoinPartition
from driftline.streams.merge import WindowMerger
from driftline.streams.messages import Partial, Progress

T0 = 1_767_225_600_000
W = 10_000  # window
P_SRC, L_SRC = "preds:0", "labels:0"


def _config(**model) -> Config:
    defaults = {"window_ms": W, "grace_ms": 2_000, "label_horizon_ms": 5_000, **model}
    return Config(defaults=ModelConfig(**defaults))


def _join(config: Config, partition: int = 0, **sources) -> JoinPartition:
    return JoinPartition(
        partition,
        ModelCatalog(config),
        prediction_sources=sources.get("prediction_sources", [P_SRC]),
        label_sources=sources.get("label_sources", [L_SRC]),
    )


def _pred(pid: str, ts: int, prediction: int = 1, **features) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=pid, model_id="m", timestamp=ts, features=features or {"x": 1.0}, prediction=prediction
    )


def _label(pid: str, ts: int, label: int = 1) -> GroundTruthEvent:
    return GroundTruthEvent(prediction_id=pid, model_id="m", label=label, timestamp=ts)


def test_early_labels_wait_duplicates_are_ignored_and_windows_close_in_two_phases() -> None:
    jp = _join(_config())
    jp.add_labels([_label("a", T0 + 100, 1)])  # before its prediction
    jp.add_predictions([_pred("a", T0 + 50, 1), _pred("b", T0 + 60, 0), _pred("a", T0 + 50, 1)])
    jp.add_labels([_label("b", T0 + 200, 1), _label("b", T0 + 300, 0)])  # a duplicate label
    assert (
        jp.counters["early_labels"],
        jp.counters["duplicate_predictions"],
        jp.counters["duplicate_labels"],
    ) == (
        1,
        1,
        1,
    )
    # prediction time passes end + grace: the provisional partial, labels still open
    partials = jp.source_progress(P_SRC, T0 + W + 2_000)
    assert [(p.phase, p.window_start) for p in partials] == [("provisional", T0)]
    agg = WindowAggregate.from_dict(partials[0].aggregate, jp.catalog.spec("m"))
    assert (agg.n_predictions, agg.n_labelled) == (2, 2)
    assert agg.confusion is not None and agg.confusion.labels == ["0", "1"]
    assert agg.confusion.matrix.tolist() == [[0, 0], [1, 1]]  # rows = label: b was 1, predicted 0


def test_provisional_then_final() -> None:
    jp = _join(_config())
    jp.add_predictions([_pred("a", T0 + 50, 1), _pred("b", T0 + 60, 0)])
    jp.add_labels([_label("a", T0 + 100, 1)])
    out = jp.source_progress(P_SRC, T0 + W + 2_000)
    assert [(p.phase, p.segment) for p in out] == [("provisional", "")]
    # label time lags: the window must not become final yet
    out = jp.source_progress(P_SRC, T0 + W + 9_000)
    assert out == []
    assert jp.final_watermark < T0 + W + 5_000
    jp.add_labels([_label("b", T0 + 200, 0)])
    out = jp.source_progress(L_SRC, T0 + W + 6_000)
    assert [p.phase for p in out] == ["final"]
    agg = WindowAggregate.from_dict(out[0].aggregate, jp.catalog.spec("m"))
    assert (agg.n_predictions, agg.n_labelled) == (2, 2)
    assert agg.confusion is not None and agg.confusion.matrix.tolist() == [[1, 0], [0, 1]]


def test_late_expired_and_unmatched_are_counted() -> None:
    jp = _join(_config(), label_sources=[])
    jp.add_predictions([_pred("a", T0 + 50)])
    jp.add_labels([_label("ghost", T0 + 100)])
    jp.source_progress(P_SRC, T0 + W + 2_000)  # window 0 past grace
    jp.add_predictions([_pred("late", T0 + 500)])
    assert jp.counters["late_predictions"] == 1
    jp.source_progress(P_SRC, T0 + 3 * W)
    assert (jp.counters["expired_unlabelled"], jp.counters["unmatched_labels"]) == (1, 1)
    assert jp.pending == 0


def test_watermark_is_the_minimum_over_sources_and_idle_sources_release_it() -> None:
    jp = _join(_config(), prediction_sources=["p:0", "p:1"], label_sources=[])
    jp.add_predictions([_pred("a", T0 + 50)])
    assert jp.source_progress("p:0", T0 + 5 * W) == []
    assert jp.watermark < T0  # p:1 has said nothing yet
    out = jp.source_progress("p:1", T0, idle=True)
    assert [p.phase for p in out] == ["final"]
    assert jp.watermark == T0 + 5 * W


def test_end_of_input_finalises_everything() -> None:
    jp = _join(_config())
    jp.add_predictions([_pred("a", T0 + 50)])
    jp.end_source(P_SRC)
    out = jp.end_source(L_SRC)
    assert [p.phase for p in out] == ["final"]
    assert jp.ended and jp.watermark == MAX_WATERMARK


def _stream(n: int, seed: int) -> tuple[list[PredictionEvent], list[GroundTruthEvent]]:
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    for i in range(n):
        ts = T0 + int(i * 37)
        p = float(rng.random())
        preds.append(
            PredictionEvent(
                prediction_id=f"id{i}",
                model_id="m",
                timestamp=ts,
                features={"x": float(rng.normal()), "c": ["a", "b", "c"][i % 3]},
                prediction=int(p >= 0.5),
                score=p,
                segments={"region": ["eu", "us"][i % 2]},
            )
        )
        labels.append(_label(f"id{i}", ts + int(rng.integers(0, 3000)), int(rng.random() < p)))
    return preds, labels


def _run(n_partitions: int, preds, labels, *, restart_at: int | None = None, resend: bool = False,
         profiles: dict | None = None) -> list:
    """Route like the ingest stage, join per partition, merge, evaluate: the window results.

    ``restart_at``: after that chunk, every join partition is rebuilt from its snapshot (a
    worker restart); ``resend``: every batch is delivered twice (an ingest re-send);
    ``profiles``: reference profiles (the windows then count numeric features on their grids)."""
    config = _config()
    catalog = ModelCatalog(config, profiles)
    joins = [
        JoinPartition(p, catalog, prediction_sources=[P_SRC], label_sources=[L_SRC])
        for p in range(n_partitions)
    ]
    merger = WindowMerger(catalog, Evaluator(catalog), n_partitions)
    results = []
    for n_chunk, chunk in enumerate(range(0, len(preds), 250)):
        if n_chunk == restart_at:
            snapshots = [jp.snapshot() for jp in joins]
            joins = [
                JoinPartition(p, catalog, prediction_sources=[P_SRC], label_sources=[L_SRC])
                for p in range(n_partitions)
            ]
            for jp, snap in zip(joins, snapshots, strict=True):
                jp.restore(snap)
            merger_snapshot = merger.snapshot()
            merger = WindowMerger(catalog, Evaluator(catalog), n_partitions)
            merger.restore(merger_snapshot)
        for kind, events in (("p", preds[chunk : chunk + 250]), ("l", labels[chunk : chunk + 250])):
            targets = partition_for([e.prediction_id for e in events], n_partitions)
            wm = max(e.timestamp for e in events)
            for p, jp in enumerate(joins):
                members = [e for e, t in zip(events, targets.tolist(), strict=True) if t == p]
                for _ in range(2 if resend else 1):
                    if not jp.accept(P_SRC if kind == "p" else L_SRC, n_chunk):
                        continue
                    if kind == "p":
                        jp.add_predictions(members)
                        out = jp.source_progress(P_SRC, wm)
                    else:
                        jp.add_labels(members)
                        out = jp.source_progress(L_SRC, wm)
                    for message in [*out, jp.progress()]:
                        # through the wire format, as between workers
                        wire = msgspec.msgpack.decode(
                            msgspec.msgpack.encode(message), type=Partial | Progress
                        )
                        results.extend(e.result for e in merger.add(wire).evaluations)
    for jp in joins:
        for source in (P_SRC, L_SRC):
            for message in [*jp.end_source(source), jp.progress()]:
                results.extend(e.result for e in merger.add(message).evaluations)
    return results


def _gridded_profiles() -> dict:
    from driftline.streams.catalog import build_profiles

    ref_preds, ref_labels = _stream(2000, seed=99)
    label_of = {lab.prediction_id: lab.label for lab in ref_labels}
    rows = [{"prediction_id": p.prediction_id, "features": p.features, "prediction": p.prediction,
             "label": label_of[p.prediction_id], "segments": p.segments} for p in ref_preds]
    return build_profiles(rows, "m", ModelConfig())


@pytest.mark.parametrize("restart_at", [None, 5])
def test_whole_window_drift_tests_do_not_depend_on_partitions_or_restarts(restart_at: int | None) -> None:
    """With a reference profile every numeric value is counted on its grid in each partition;
    the merged counts, the KS on them and the summaries are identical for 1 and 3 partitions,
    and across a restart from snapshots."""
    preds, labels = _stream(3000, seed=2)
    profiles = _gridded_profiles()
    one = _run(1, preds, labels, profiles=profiles)
    many = _run(3, preds, labels, profiles=profiles, restart_at=restart_at)
    key = lambda r: (r.phase, r.window_start_ms, sorted(r.segment.items()))  # noqa: E731
    assert [msgspec.to_builtins(r) for r in sorted(one, key=key)] == [
        msgspec.to_builtins(r) for r in sorted(many, key=key)
    ]
    checked = 0
    for r in one:
        x = next(d for d in r.drift if d.feature == "x")
        members = [p for p in preds if r.window_start_ms <= p.timestamp < r.window_end_ms
                   and all(p.segments.get(k) == v for k, v in r.segment.items())]
        assert x.window_summary is not None and x.window_summary.count == len(members)
        assert x.window_summary.shares and x.distance_name == "wasserstein_normed"  # the grid path
        checked += 1
    assert checked > 5


@pytest.mark.parametrize("n_partitions", [2, 5])
def test_results_do_not_depend_on_the_number_of_partitions(n_partitions: int) -> None:
    preds, labels = _stream(3000, seed=1)
    one = _run(1, preds, labels)
    many = _run(n_partitions, preds, labels)
    assert len(one) > 0
    key = lambda r: (r.phase, r.window_start_ms, sorted(r.segment.items()))  # noqa: E731
    assert [msgspec.to_builtins(r) for r in sorted(one, key=key)] == [
        msgspec.to_builtins(r) for r in sorted(many, key=key)
    ]
    final = [r for r in one if r.phase == "final" and not r.segment]
    # the independent count: accuracy of each window from the raw events
    by_id = {lab.prediction_id: lab.label for lab in labels}
    for r in final:
        members = [p for p in preds if r.window_start_ms <= p.timestamp < r.window_end_ms]
        correct = sum(p.prediction == by_id[p.prediction_id] for p in members)
        assert r.prediction_count == len(members)
        assert r.metrics["accuracy"] == correct / len(members)
        # CBPE-style estimate from the scores alone is reported beside it
        expected = np.mean([max(p.score, 1 - p.score) for p in members])
        assert r.metrics["estimated_accuracy"] == pytest.approx(expected, rel=1e-12)


def _canonical(results: list) -> list:
    key = lambda r: (r.phase, r.window_start_ms, sorted(r.segment.items()))  # noqa: E731
    return [msgspec.to_builtins(r) for r in sorted(results, key=key)]


def test_a_restored_snapshot_continues_exactly_and_resent_batches_are_skipped() -> None:
    preds, labels = _stream(3000, seed=2)
    uninterrupted = _canonical(_run(3, preds, labels))
    assert _canonical(_run(3, preds, labels, restart_at=5)) == uninterrupted
    assert _canonical(_run(3, preds, labels, resend=True)) == uninterrupted


def test_snapshot_round_trip_is_exact() -> None:
    jp = _join(_config())
    preds, labels = _stream(500, seed=3)
    jp.add_predictions(preds[:400])
    jp.add_labels(labels[:200])
    jp.source_progress(P_SRC, preds[399].timestamp)
    jp.accept(P_SRC, 7)
    jp.next_offset = 42
    copy = _join(_config())
    copy.restore(jp.snapshot())
    assert copy.snapshot() == jp.snapshot()
    assert (copy.next_offset, copy.pending, copy.counters) == (42, jp.pending, jp.counters)
    assert not copy.accept(P_SRC, 7) and copy.accept(P_SRC, 8)


def test_older_re_emissions_never_replace_newer_partials_or_counters() -> None:
    """After a restore, a join partition replays its log and re-emits older partials and
    progress; the merger must keep the newer ones (found by the kill -9 test)."""
    config = _config()
    catalog = ModelCatalog(config)
    merger = WindowMerger(catalog, Evaluator(catalog), 1)
    jp = _join(config)
    jp.add_predictions([_pred("a", T0 + 50)])
    jp.next_offset = 5
    (provisional,) = jp.source_progress(P_SRC, T0 + W + 2_000)
    old_progress = jp.progress()
    jp.add_labels([_label("a", T0 + 60)])
    jp.next_offset = 9
    (final,) = jp.source_progress(L_SRC, T0 + W + 9_000) + jp.source_progress(P_SRC, T0 + W + 9_000)
    assert (provisional.seq, final.seq, final.phase) == (5, 9, "final")
    new_progress = jp.progress()
    # the final partial arrives, then the stale provisional one, then progress new and old
    results = []
    for message in (final, provisional, old_progress, new_progress, provisional, old_progress):
        results.extend(e.result for e in merger.add(message).evaluations)
    assert merger.counters["labels"] == 1  # not the stale 0
    (result,) = [r for r in results if r.phase == "final"]
    assert (result.prediction_count, result.labelled_count) == (1, 1)  # from the final partial


def test_a_flush_waits_for_more_events_the_more_slices_are_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush costs per slice it touches, so the join holds back FLUSH_PER_SLICE events per
    open slice (at least FLUSH_EVENTS, at most FLUSH_EVENTS_MAX) before folding."""
    monkeypatch.setattr("driftline.streams.join.FLUSH_EVENTS", 100)
    monkeypatch.setattr("driftline.streams.join.FLUSH_PER_SLICE", 50)
    monkeypatch.setattr("driftline.streams.join.FLUSH_EVENTS_MAX", 1_000)
    jp = _join(_config())
    preds = [
        PredictionEvent(prediction_id=f"id{i}", model_id=f"m{i % 12}", timestamp=T0 + i,
                        features={"x": 1.0}, prediction=1)
        for i in range(1_200)
    ]
    jp.add_predictions(preds[:12])  # 12 models, one slice each: 600 events make a flush due
    assert len(jp._slices) == 12 and jp._flush_at() == 600
    jp.add_predictions(preds[12:590])
    assert jp._pending_count == 590  # not folded at FLUSH_EVENTS
    jp.add_predictions(preds[590:600])
    assert jp._pending_count == 0
    monkeypatch.setattr("driftline.streams.join.FLUSH_PER_SLICE", 10_000)
    assert jp._flush_at() == 1_000  # the memory bound


@pytest.mark.parametrize("flush_events", [1, 50, 10**9])
def test_when_joined_events_are_folded_never_changes_a_partial(
    flush_events: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join folds events into the sketches in large batches (JoinPartition.flush), every
    slice of every window key at once; folding after every message, every 50 events or only
    when windows close gives the same bytes."""

    def partials(threshold: int) -> list[bytes]:
        monkeypatch.setattr("driftline.streams.join.FLUSH_EVENTS", threshold)
        monkeypatch.setattr("driftline.streams.join.FLUSH_PER_SLICE", 0)  # exactly threshold
        jp = _join(_config())
        preds, labels = _stream(900, seed=11)
        out: list[Partial] = []
        for i in range(0, 900, 60):
            jp.add_predictions(preds[i : i + 60])
            jp.add_labels(labels[max(0, i - 90) : i - 30] if i >= 90 else [])
            out += jp.source_progress(P_SRC, preds[i + 59].timestamp)
            out += jp.source_progress(L_SRC, labels[max(0, i - 31)].timestamp)
        jp.add_labels(labels[810:])
        out += jp.end_source(P_SRC) + jp.end_source(L_SRC)
        return [msgspec.msgpack.encode(p) for p in out]

    reference = partials(1)
    assert len(reference) > 20
    assert partials(flush_events) == reference


def test_watermark_messages_are_sent_only_when_a_window_boundary_is_crossed() -> None:
    """Ticks and Progress carry nothing a merger or join can act on between two boundaries
    (closing_epoch): one per boundary crossed, not one per message."""
    shapes = window_shapes(_config().model_configs())  # window 10 s, grace 2 s, horizon 5 s
    epochs = {closing_epoch(shapes, T0 + ms, T0 + ms) for ms in range(0, 30_000, 500)}
    # boundaries at k*W + 2 s (provisional) and k*W + 5 s (final): two per window
    assert len(epochs) == 6 + 1
    assert closing_epoch(shapes, T0 + W + 1_999, T0) != closing_epoch(shapes, T0 + W + 2_000, T0)
    assert closing_epoch(shapes, T0 + W + 2_000, T0) == closing_epoch(shapes, T0 + W + 4_999, T0)


def _two_models_scoring_each_request(n: int = 50) -> tuple[list[PredictionEvent], list[GroundTruthEvent]]:
    """Models ``a`` and ``b`` both score requests id0..id{n-1} (one ``prediction_id`` each) and
    disagree on every one; each model's label is its own prediction, so both are always right.
    Joined across models, every outcome would be wrong."""
    preds, labels = [], []
    for i in range(n):
        for model, value in (("a", i % 2), ("b", 1 - i % 2)):
            ts = T0 + 10 * i
            preds.append(
                PredictionEvent(
                    prediction_id=f"id{i}",
                    model_id=model,
                    timestamp=ts,
                    features={"x": 1.0},
                    prediction=value,
                )
            )
            labels.append(
                GroundTruthEvent(prediction_id=f"id{i}", model_id=model, label=value, timestamp=ts + 5)
            )
    return preds, labels


def _evaluate(preds, labels, *, n_partitions: int, mixed: bool, early: int = 0) -> tuple[list, list]:
    """Join per partition (labels of the first ``early`` ids of model b before any prediction),
    merge and evaluate: the final whole-model results and the join partitions."""
    config = _config()
    catalog = ModelCatalog(config)
    joins = [
        JoinPartition(p, catalog, prediction_sources=[P_SRC], label_sources=[L_SRC])
        for p in range(n_partitions)
    ]
    merger = WindowMerger(catalog, Evaluator(catalog), n_partitions)
    first = [e for e in labels if e.model_id == "b" and int(e.prediction_id[2:]) < early]
    rest = [e for e in labels if e not in first]

    def blocks(events: list) -> list[list]:  # both models in one block, or one block per model
        return [events] if mixed else [[e for e in events if e.model_id == m] for m in ("a", "b")]

    log = (
        [("l", b) for b in blocks(first) if b]
        + [("p", b) for b in blocks(preds)]
        + [("l", b) for b in blocks(rest)]
    )
    results = []
    for kind, events in log:
        targets = partition_for([e.prediction_id for e in events], n_partitions).tolist()
        for p, jp in enumerate(joins):
            members = [e for e, t in zip(events, targets, strict=True) if t == p]
            (jp.add_predictions if kind == "p" else jp.add_labels)(members)
    for jp in joins:
        for source in (P_SRC, L_SRC):
            for message in [*jp.end_source(source), jp.progress()]:
                results.extend(e.result for e in merger.add(message).evaluations)
    final = sorted((r for r in results if r.phase == "final" and not r.segment), key=lambda r: r.model_id)
    return final, joins


@pytest.mark.parametrize("mixed", [False, True], ids=["one-model-blocks", "mixed-blocks"])
def test_two_models_scoring_one_request_each_join_their_own_labels(mixed: bool) -> None:
    """The join identity is (model_id, prediction_id): the second model's prediction of an id
    is not a duplicate, and each label joins its own model's prediction, early or not."""
    preds, labels = _two_models_scoring_each_request(50)
    final, joins = _evaluate(preds, labels, n_partitions=3, mixed=mixed, early=10)
    assert [(r.model_id, r.prediction_count, r.labelled_count) for r in final] == [
        ("a", 50, 50),
        ("b", 50, 50),
    ]
    assert [r.metrics["accuracy"] for r in final] == [1.0, 1.0]
    counters = {k: sum(jp.counters[k] for jp in joins) for k in COUNTERS}
    assert counters == {
        **dict.fromkeys(COUNTERS, 0),
        "predictions": 100,
        "labels": 100,
        "joined": 100,
        "early_labels": 10,
    }
    assert sum(jp.pending for jp in joins) == 0


def test_a_checkpoint_keyed_by_prediction_id_alone_restores_into_the_model_keyed_join() -> None:
    """``tests/data/join-checkpoint-v2.msgpack`` was written by the join before it was keyed by
    model (d9d8f55, checkpoint version 2) from this log, on the ``_config()`` windows:

        labels      e1/a@10=1                                   (early: no prediction yet)
        predictions p1/a@20=1 p2/a@30=0 p3/a@40=1 q1/b@50=0     (x = dt, score 0.9 or 0.1)
        labels      p1/a@60=1 p2/a@70=0
        accepted preds:0 up to offset 3, labels:0 up to 2; watermarks 50 and 70; next_offset 5

    Restored, then fed the rest of a log in which model b also scores p1 and labels come for
    both models, it must end exactly where the model-keyed join fed the whole log from the
    start ends: entries move under their window's model, and the early label, whose model the
    old format did not keep, still joins its prediction."""
    from pathlib import Path

    def pred(pid: str, model: str, dt: int, value: int) -> PredictionEvent:
        return PredictionEvent(
            prediction_id=pid,
            model_id=model,
            timestamp=T0 + dt,
            features={"x": float(dt)},
            prediction=value,
            score=0.9 if value else 0.1,
        )

    def label(pid: str, model: str, dt: int, value: int) -> GroundTruthEvent:
        return GroundTruthEvent(prediction_id=pid, model_id=model, label=value, timestamp=T0 + dt)

    before = [
        ("l", [label("e1", "a", 10, 1)]),
        (
            "p",
            [pred("p1", "a", 20, 1), pred("p2", "a", 30, 0), pred("p3", "a", 40, 1), pred("q1", "b", 50, 0)],
        ),
        ("l", [label("p1", "a", 60, 1), label("p2", "a", 70, 0)]),
    ]
    after = [
        # p1 of model b is new; p1 of model a again is a duplicate
        ("p", [pred("e1", "a", 80, 1), pred("p1", "b", 90, 0), pred("p1", "a", 95, 1)]),
        (
            "l",
            [
                label("p1", "b", 100, 1),
                label("p3", "a", 110, 0),
                label("q1", "b", 120, 0),
                label("p2", "a", 130, 0),
            ],
        ),
    ]

    def feed(jp: JoinPartition, log: list) -> list[Partial]:
        for kind, events in log:
            (jp.add_predictions if kind == "p" else jp.add_labels)(events)
        return jp.end_source(P_SRC) + jp.end_source(L_SRC)

    restored = _join(_config())
    restored.restore((Path(__file__).parent / "data" / "join-checkpoint-v2.msgpack").read_bytes())
    assert restored.next_offset == 5 and restored.pending == 5
    assert not restored.accept(P_SRC, 3) and restored.accept(P_SRC, 4)
    again = _join(_config())  # the upgraded state round-trips, the model-less early label too
    again.restore(restored.snapshot())
    assert again.snapshot() == restored.snapshot()
    fresh = _join(_config())
    fresh.next_offset = 5  # outputs carry it as seq
    got, expected = feed(restored, after), feed(fresh, before + after)

    def without_calibrated(partials: list[Partial]) -> list[bytes]:
        # a v2 checkpoint predates the calibrated-score sketch: its windows' predictions from
        # before the restore are in every other part, not in that one (estimates then fall back
        # to the exact expected confusion, without intervals); likewise the label-lag histogram
        # and the labels joined before the restore; the rest must be identical
        return [msgspec.msgpack.encode(msgspec.structs.replace(
            p, aggregate={k: v for k, v in p.aggregate.items() if k not in ("calibrated", "label_lag")}))
            for p in partials]

    assert without_calibrated(got) == without_calibrated(expected)
    assert restored.counters == fresh.counters
    assert (restored.counters["joined"], restored.counters["duplicate_predictions"]) == (6, 1)
    assert (restored.counters["duplicate_labels"], restored.counters["unmatched_labels"]) == (1, 0)
    finals = {
        p.model_id: WindowAggregate.from_dict(p.aggregate, restored.catalog.spec(p.model_id))
        for p in got
        if p.phase == "final"
    }
    assert {m: (a.n_predictions, a.n_labelled) for m, a in finals.items()} == {"a": (4, 4), "b": (2, 2)}
    # p1 and p2 of model a joined before the checkpoint: only the lags after it are counted
    lags = {m: a.label_lag.n if a.label_lag else 0 for m, a in finals.items()}
    assert lags == {"a": 2, "b": 2}


@pytest.mark.parametrize("seed", range(6))
def test_slices_close_from_their_index_exactly_as_a_scan_of_every_slice_would(seed: int) -> None:
    """``_advance`` pops only the slices and window keys due (heaps by closing time) instead of
    scanning every open slice per message. Oracle: the scan it replaced, run on the open slices
    before each step: the same partials in the same order, across two window shapes, segment
    values, watermarks that move in uneven steps (often by nothing), and a restore mid-stream."""
    rng = np.random.default_rng(seed)
    config = Config(
        defaults=ModelConfig(window_ms=W, grace_ms=2_000, label_horizon_ms=5_000),
        models={"slow": ModelConfig(window_ms=3 * W, grace_ms=7_000, label_horizon_ms=20_000)},
    )
    jp = _join(config)
    clock = T0
    pid = closed = 0
    for step in range(60):
        preds, labels = [], []
        for _ in range(int(rng.integers(0, 8))):
            model = ["m", "slow"][int(rng.integers(0, 2))]
            ts = clock + int(rng.integers(-3_000, 3_000))
            preds.append(PredictionEvent(
                prediction_id=f"id{pid}", model_id=model, timestamp=ts, features={"x": float(rng.normal())},
                prediction=int(rng.integers(0, 2)), segments={"region": ["eu", "us", "ap"][pid % 3]},
            ))
            labels.append(
                GroundTruthEvent(prediction_id=f"id{pid}", model_id=model, label=1, timestamp=ts + 500)
            )
            pid += 1
        jp.add_predictions(preds)
        jp.add_labels(labels[: len(labels) // 2])
        clock += int(rng.choice([0, 0, 700, 2_500, 9_000]))
        if step == 30:
            restored = _join(config)
            restored.restore(jp.snapshot())
            jp = restored
        pred_wm, label_wm = clock, clock - int(rng.integers(0, 6_000))
        for source, watermark in ((P_SRC, pred_wm), (L_SRC, label_wm)):
            before = {k: (st.close_at, st.final_at, st.provisional_sent) for k, st in jp._slices.items()}
            out = jp.source_progress(source, watermark)
            wm, fwm = jp.watermark, jp.final_watermark
            expected = []
            for skey in sorted(before, key=lambda k: (k[3], k)):
                close_at, final_time, sent = before[skey]
                phase = due_phase_at(close_at, final_time, wm, fwm, provisional_done=sent)
                if phase is not None:
                    expected.append((skey, phase))
            got = [((p.model_id, p.model_version, p.segment, p.window_start), p.phase) for p in out]
            assert got == expected
            closed += len(got)
    assert closed > 20
    assert jp.end_source(P_SRC) + jp.end_source(L_SRC)
    assert not jp._slices and not jp._wkeys


@pytest.mark.parametrize("ahead_first", [False, True])
def test_lateness_is_decided_by_the_events_own_source_whatever_the_others_sent_between(
    ahead_first: bool,
) -> None:
    """Two input partitions, one join partition, the same two logs in two interleavings.
    p:0 reaches 20 s, then sends an event of the first window (closed at 12 s by p:0's own
    event time). Judged by the minimum over sources, it was on time when p:1 had said nothing
    yet and late when p:1 had reached 20 s first: the outcome depended on how two topics
    interleave, which a join that reads part of its input in place (issue 15) changes. By
    its own source's event time it is late in both, and everything else is identical too.
    Oracle: the other interleaving, and the count of the one event past its grace."""
    import orjson

    from driftline.streams.ingest import Incoming, Router
    from driftline.streams.messages import decode_join_input

    config = _config()
    catalog = ModelCatalog(config)
    jp = JoinPartition(0, catalog, prediction_sources=["p:0", "p:1"], label_sources=[])
    router = Router(config, catalog, join_partitions=1)
    offsets = {"p:0": 0, "p:1": 0}
    out: list[Partial] = []

    def send(source: str, *stamps: int) -> None:
        topic, partition = source.split(":")
        events = [
            msgspec.to_builtins(_pred(f"{source}-{offsets[source]}-{i}", t)) for i, t in enumerate(stamps)
        ]
        body = orjson.dumps({"kind": "predictions", "events": events})
        message = Incoming(body, topic, int(partition), offsets[source], ())
        offsets[source] += 1
        for record in router.route_many("predictions", [message], wall_ms=T0 + 10 * W):
            out.extend(jp.apply(decode_join_input(record.value)))

    p1 = [(T0 + 100, T0 + 200, T0 + 300), (T0 + 2 * W, T0 + 2 * W + 1, T0 + 2 * W + 2)]
    if ahead_first:
        for stamps in p1:
            send("p:1", *stamps)
    send("p:0", T0 + 10, T0 + 20, T0 + 30)
    send("p:0", T0 + 2 * W, T0 + 2 * W + 1, T0 + 2 * W + 2)
    send("p:0", T0 + 50)  # window [0, 10 s): past its grace on p:0
    if not ahead_first:
        for stamps in p1:
            send("p:1", *stamps)
    for source in ("p:0", "p:1"):
        out.extend(jp.end_source(source))
    assert jp.counters["late_predictions"] == 1
    assert jp.counters["predictions"] == 12
    finals = sorted(
        (p.window_start, WindowAggregate.from_dict(p.aggregate, catalog.spec("m")).n_predictions)
        for p in out
        if p.phase == "final" and p.segment == ""
    )
    assert finals == [(T0, 6), (T0 + 2 * W, 6)]


@pytest.mark.parametrize("label_first", [False, True])
def test_an_early_label_waits_for_a_prediction_that_is_not_late_whatever_the_interleaving(
    label_first: bool,
) -> None:
    """A label stamped with its prediction's time, early in a window; its prediction comes on
    p:1 after p:1 has reached 5.5 s (out of order, within the grace: not late). A label
    horizon after the label is 5.1 s, so when the label came first and waited only that long
    it had expired as ``unmatched`` before its prediction arrived; when the prediction came
    first they joined. Waiting until the grace of the label's window has passed too makes
    both interleavings join. Oracle: the other interleaving, and the one pair that exists."""
    import orjson

    from driftline.streams.ingest import Incoming, Router
    from driftline.streams.messages import decode_join_input

    config = _config()  # 10 s windows, 2 s grace, 5 s label horizon
    catalog = ModelCatalog(config)
    jp = JoinPartition(0, catalog, prediction_sources=["p:0", "p:1"], label_sources=["l:0"])
    router = Router(config, catalog, join_partitions=1)
    offsets = {"p:0": 0, "p:1": 0, "l:0": 0}

    def send(source: str, events: list) -> None:
        topic, partition = source.split(":")
        kind = "ground_truth" if topic == "l" else "predictions"
        body = orjson.dumps({"kind": kind, "events": [msgspec.to_builtins(e) for e in events]})
        message = Incoming(body, topic, int(partition), offsets[source], ())
        offsets[source] += 1
        for record in router.route_many(kind, [message], wall_ms=T0 + 10 * W):
            jp.apply(decode_join_input(record.value))

    def ahead(source: str, ts: int) -> list:
        return [_pred(f"{source}-{i}", ts + i) for i in range(3)]

    label = [_label("x", T0 + 100)]
    if label_first:
        send("l:0", label)
    send("p:0", ahead("p:0", T0 + 6_000))
    send("p:1", ahead("p:1", T0 + 5_500))
    send("p:1", [_pred("x", T0 + 100)])
    if not label_first:
        send("l:0", label)
    for source in ("p:0", "p:1", "l:0"):
        jp.end_source(source)
    assert jp.counters["late_predictions"] == 0
    assert (jp.counters["joined"], jp.counters["unmatched_labels"]) == (1, 0)
    assert jp.counters["expired_unlabelled"] == 6


def _routed_logs(seed: int) -> dict[tuple[str, int], list[bytes]]:
    """Three prediction and two label partitions with disorder inside each (mostly within the
    grace, a few events far behind), labels stamped after their predictions on unrelated
    partitions, routed by ingest to two join partitions: per (source, join partition), the
    join-input records in the order that source's messages produce them."""
    import itertools

    import orjson

    from driftline.streams.ingest import CONTROL_HEADER, END_OF_INPUT, Incoming, Router

    rng = np.random.default_rng(seed)
    config = _config()
    router = Router(config, ModelCatalog(config), join_partitions=2)
    n = 800
    times = T0 + np.arange(n) * 60 + rng.integers(-1_500, 1_500, n)
    times[rng.random(n) < 0.03] -= 15_000  # far behind their partition: late there
    logs: dict[str, list[list]] = {f"p:{i}": [] for i in range(3)} | {f"l:{i}": [] for i in range(2)}
    for i, ts in enumerate(times.tolist()):
        prediction = _pred(f"id{i}", ts, int(rng.random() < 0.5), x=float(rng.random()))
        logs[f"p:{rng.integers(3)}"].append(prediction)
        if rng.random() < 0.8:
            logs[f"l:{rng.integers(2)}"].append(_label(f"id{i}", ts + int(rng.integers(0, 4_000)), i % 2))
    out: dict[tuple[str, int], list[bytes]] = {}
    for source, events in logs.items():
        topic, partition = source.split(":")
        kind = "ground_truth" if topic == "l" else "predictions"
        cuts = sorted(set(rng.integers(0, len(events), len(events) // 8).tolist()) | {0, len(events)})
        messages = [
            Incoming(
                orjson.dumps({"kind": kind, "events": [msgspec.to_builtins(e) for e in events[a:b]]}),
                topic, int(partition), offset, (),
            )
            for offset, (a, b) in enumerate(itertools.pairwise(cuts))
        ]
        end = Incoming(None, topic, int(partition), len(messages), ((CONTROL_HEADER, END_OF_INPUT),))
        for message in [*messages, end]:
            for record in router.route_many(kind, [message], wall_ms=T0 + 10 * n * 60):
                if record.topic == router.join_topic:
                    assert record.partition is not None and record.value is not None
                    out.setdefault((source, record.partition), []).append(record.value)
    return out


def _join_in_order(logs: dict[tuple[str, int], list[bytes]], order: list[tuple[str, int]]) -> tuple:
    """The final partials and counters of both join partitions fed ``logs`` in ``order`` (one
    record of that (source, join partition) log per entry)."""
    from driftline.streams.messages import decode_join_input

    config = _config()
    catalog = ModelCatalog(config)
    parts = [
        JoinPartition(j, catalog, prediction_sources=[f"p:{i}" for i in range(3)],
                      label_sources=[f"l:{i}" for i in range(2)])
        for j in range(2)
    ]
    finals: list = []
    cursor = dict.fromkeys(logs, 0)
    for key in order:
        record = logs[key][cursor[key]]
        cursor[key] += 1
        for partial in parts[key[1]].apply(decode_join_input(record)):
            if partial.phase == "final":
                finals.append(msgspec.to_builtins(partial))
    assert all(cursor[k] == len(v) for k, v in logs.items()) and all(p.ended for p in parts)
    counters = [{k: v for k, v in p.counters.items() if k != "early_labels"} for p in parts]
    return sorted(finals, key=lambda p: (p["join_partition"], p["window_start"], p["segment"])), counters


@pytest.mark.parametrize("seed", range(12))
def test_windows_do_not_depend_on_how_the_sources_interleave_at_the_join(seed: int) -> None:
    """The argument of docs/architecture.md ("Lateness by a source's own event time"), run:
    each (source, join partition) log in its order, the logs merged at random (what the hop
    and the ingest interleaving, or a join that reads part of its input in place, can do),
    against the same logs fed one source after another. Every final partial and every counter
    but ``early_labels`` must be equal, late predictions included. Oracle: the sequential
    order; 12 seeded data sets, each with its own random merge."""
    logs = _routed_logs(seed)
    sequential = [key for key, records in logs.items() for _ in records]
    rng = np.random.default_rng(1_000 + seed)
    merged = [key for key in rng.permutation(np.array(sequential, dtype=object)).tolist()]
    # a random permutation of the multiset of keys is a random merge that keeps each log's order
    expected = _join_in_order(logs, [tuple(k) for k in sequential])
    got = _join_in_order(logs, [tuple(k) for k in merged])
    assert sum(c["late_predictions"] for c in expected[1]) > 0, "the data must have late events"
    assert sum(c["joined"] for c in expected[1]) > 500
    assert got == expected
