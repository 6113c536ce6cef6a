"""The join partition and the merger, without a broker: exact counts and partition independence."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from driftline.detectors.aggregates import WindowAggregate
from driftline.detectors.hashing import partition_for
from driftline.platform.config import Config, ModelConfig
from driftline.schemas import GroundTruthEvent, PredictionEvent
from driftline.schemas.windows import MAX_WATERMARK, closing_epoch, window_shapes
from driftline.streams.catalog import ModelCatalog
from driftline.streams.evaluation import Evaluator
from driftline.streams.join import JoinPartition
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


def _run(n_partitions: int, preds, labels, *, restart_at: int | None = None, resend: bool = False) -> list:
    """Route like the ingest stage, join per partition, merge, evaluate: the window results.

    ``restart_at``: after that chunk, every join partition is rebuilt from its snapshot (a
    worker restart); ``resend``: every batch is delivered twice (an ingest re-send)."""
    config = _config()
    catalog = ModelCatalog(config)
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


@pytest.mark.parametrize("merge_above", [1, 10**9])
@pytest.mark.parametrize("flush_events", [1, 50, 10**9])
def test_when_joined_events_are_folded_never_changes_a_partial(
    flush_events: int, merge_above: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join folds events into the sketches in large batches (JoinPartition.flush); folding
    after every message, every 50 events or only when windows close gives the same bytes. And
    a group folded once then merged into its slices (model, region) gives the same bytes as
    one folded into each slice (JoinPartition._fold)."""

    def partials(threshold: int, merge: int = 10**9) -> list[bytes]:
        monkeypatch.setattr("driftline.streams.join.FLUSH_EVENTS", threshold)
        monkeypatch.setattr("driftline.streams.join.MERGE_ABOVE", merge)
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
    assert partials(flush_events, merge_above) == reference


def test_watermark_messages_are_sent_only_when_a_window_boundary_is_crossed() -> None:
    """Ticks and Progress carry nothing a merger or join can act on between two boundaries
    (closing_epoch): one per boundary crossed, not one per message."""
    shapes = window_shapes(_config().model_configs())  # window 10 s, grace 2 s, horizon 5 s
    epochs = {closing_epoch(shapes, T0 + ms, T0 + ms) for ms in range(0, 30_000, 500)}
    # boundaries at k*W + 2 s (provisional) and k*W + 5 s (final): two per window
    assert len(epochs) == 6 + 1
    assert closing_epoch(shapes, T0 + W + 1_999, T0) != closing_epoch(shapes, T0 + W + 2_000, T0)
    assert closing_epoch(shapes, T0 + W + 2_000, T0) == closing_epoch(shapes, T0 + W + 4_999, T0)
