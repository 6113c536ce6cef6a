"""Evaluation batched per close (issue 15) gives what one slice at a time gives, bit for bit.

A watermark advance closes one window of many model versions at once; ``evaluate_close``
computes their references, then one ``compare_many`` (every whole-window KS p-value of the
close in one vectorised scipy call), then the stateful rest per window. The oracle is the
per-slice path (``prepare`` then ``judge`` of each window's slices) and, for the p-values,
``drift.ks_binned`` on each test alone (scipy's ``kstwo``/``kstwobign`` one call per test).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import msgspec
import numpy as np
from scipy import stats

from driftline.detectors import drift
from driftline.detectors.comparison import compare, compare_many
from driftline.streams.evaluation import ClosedSlice, Evaluation, Evaluator, Pending, _policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import detection as bench  # the benchmark's simulated model with a profile reference, shared on purpose

VERSIONS = ("v1", "v2", "v3")  # slices of different versions are different slices: one batch


@lru_cache(maxsize=2)
def _closes(seed: int) -> tuple[object, list[list[ClosedSlice]]]:
    """Four closes, each one window of every version (whole model and four segments), the
    third drifted; every window closes provisional, then final in the next close."""
    g = np.random.default_rng(seed)
    cat = bench.catalog(g, True)
    shift = {"x_normal": 0.6 * bench.SIGMA["x_normal"]}
    windows = [
        {v: bench.window_slices(cat, g, True, shift if w == 2 else None) for v in VERSIONS} for w in range(4)
    ]
    closes = []
    for c in range(5):
        close = []
        for w, phase in ((c - 1, "final"), (c, "provisional")):
            if not 0 <= w < len(windows):
                continue
            start = w * bench.WINDOW_MS
            for v in VERSIONS:
                for key in sorted(windows[w][v], key=lambda k: (k != "", k)):
                    close.append(ClosedSlice(bench.MODEL, v, key, start, start + bench.WINDOW_MS,
                                             windows[w][v][key], phase, phase == "provisional"))  # type: ignore[arg-type]
        closes.append(close)
    return cat, closes


def _one_at_a_time(ev: Evaluator, close: list[ClosedSlice]) -> list[Evaluation]:
    out: list[Evaluation] = []
    group: list[Pending] = []
    for s in [*close, None]:
        if group and (s is None or (group[0].start, group[0].model_version) != (s.start, s.model_version)):
            out += [ev.judge(p, [q for q in group if q.segment]) for p in group]
            group = []
        if s is not None:
            group.append(ev.prepare(s.model_id, s.model_version, s.segment, s.start, s.end, s.agg, s.phase,
                                    judge_label_free=s.judge_label_free))
    return out


def _encoded(evaluations: list[Evaluation]) -> list[bytes]:
    return [msgspec.json.encode([e.result, e.values, e.alerts, e.requests]) for e in evaluations]


def test_a_batched_close_gives_the_results_and_alerts_of_one_slice_at_a_time() -> None:
    cat, closes = _closes(3)
    batched, single = Evaluator(cat), Evaluator(cat)  # type: ignore[arg-type]
    fired = 0
    for close in closes:
        got = batched.evaluate_close(close)
        want = _one_at_a_time(single, close)
        assert _encoded(got) == _encoded(want)
        fired += sum(a.data.status == "firing" for e in got for a in e.alerts)
    assert fired  # the drifted window alerts, so alerts and evidence were compared too
    assert msgspec.json.encode(batched.snapshot()) == msgspec.json.encode(single.snapshot())


def test_a_batch_never_holds_two_windows_of_one_slice(monkeypatch) -> None:
    """Slices of the same (model, version, segment) go to separate batches: a later window's
    reference may be learnt from an earlier one (bootstrapping)."""
    cat, closes = _closes(3)
    ev = Evaluator(cat)  # type: ignore[arg-type]
    seen: list[list[tuple[str, str, str]]] = []
    evaluate_batch = ev._evaluate_batch

    def spy(windows):
        seen.append([s.key for w in windows for s in w])
        return evaluate_batch(windows)

    monkeypatch.setattr(ev, "_evaluate_batch", spy)
    ev.evaluate_close(closes[2])  # window 1 final and window 2 provisional: same slices twice
    assert len(seen) == 2 and all(len(keys) == len(set(keys)) == 15 for keys in seen)


def test_batched_ks_p_values_are_each_tests_own() -> None:
    cat, closes = _closes(3)
    close = closes[3]
    ev = Evaluator(cat)  # type: ignore[arg-type]
    refs = [ev.reference(s.model_id, s.model_version, s.segment) for s in close]
    pol = _policy(cat.model(bench.MODEL))  # type: ignore[attr-defined]
    many = compare_many([(s.agg, r, pol) for s, r in zip(close, refs, strict=True)])
    checked = 0
    for s, ref, found in zip(close, refs, many, strict=True):
        assert msgspec.json.encode(found.drift) == msgspec.json.encode(compare(s.agg, ref, pol).drift)
        for d in found.drift:
            if d.test == "ks" and d.kind == "feature":
                window = s.agg.numeric[d.feature].grid_counts
                alone = drift.ks_binned(ref.numeric_grid_counts[d.feature], window)
                assert d.raw_p_value == alone.p_value and d.statistic == alone.statistic
                checked += 1
    assert checked >= len(close)  # every slice had at least one whole-window KS test


def test_vectorised_ks_p_values_equal_the_scalar_ones() -> None:
    g = np.random.default_rng(0)
    n1 = g.integers(1, 5000, 2000).astype(float)
    n2 = g.integers(1, 5000, 2000).astype(float)
    d = g.random(2000) ** 3
    d[:10] = 0.0
    d[10:20] = 1.0
    got = drift.ks_p_values(d, n1, n2)
    en = n1 * n2 / (n1 + n2)
    want = [
        float(np.clip(stats.kstwo.sf(x, round(e)), 0, 1)) if e <= 500
        else float(np.clip(stats.kstwobign.sf((np.sqrt(e) + 0.12 + 0.11 / np.sqrt(e)) * x), 0, 1))
        for x, e in zip(d.tolist(), en.tolist(), strict=True)
    ]
    assert got.tolist() == want
