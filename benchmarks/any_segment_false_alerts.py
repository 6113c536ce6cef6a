"""False alerts per model per 30 days of the default ``accuracy-drop`` judged on each segment
slice (its default scope) against the same rule with ``scope: any_segment``, on stationary
streams with two segment dimensions (channel: 3 values, region: 2; 5 segment values).

    .venv/bin/python benchmarks/any_segment_false_alerts.py [--labels 2000] [--reference 20000] [--models 20]

Each model draws its reference (accuracy 0.9, labels split evenly over the 6 channel x region
cells) once, then 8640 five-minute windows of binomial draws per cell; a segment's numbers are
the sums over its cells, so the two dimensions overlap as real segments do. The per-slice rule
goes through ``AlertTracker.observe`` per segment slice (the whole model's own series is left
out: it is the same under both scopes), the any_segment one through ``judge_any_segment`` and
``AlertTracker.observe_verdict``, as ``streams/evaluation.py`` calls them. Counts are firing
events. The reference's sampling error is shared by every window of a model, so the count
varies a lot from one model to the next: report means over many models.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from driftline.alerting.any_segment import SegmentInput, judge_any_segment
from driftline.alerting.lifecycle import AlertTracker
from driftline.alerting.rules import DEFAULT_RULES

WINDOW_MS = 300_000
MONTH = 8640
CELLS = [(c, r) for c in ("web", "ios", "android") for r in ("eu", "us")]
SEGMENTS = [f"channel={c}" for c in ("web", "ios", "android")] + [f"region={r}" for r in ("eu", "us")]


def _members(segment: str) -> list[int]:
    dim, value = segment.split("=")
    return [i for i, (c, r) in enumerate(CELLS) if (c if dim == "channel" else r) == value]


def month(
    seed: int, labels: int, reference: int, accuracy: float = 0.9, family: int = 1
) -> tuple[int, int, int]:
    """(per-slice firing events over the 5 segment series, any_segment firing events, the whole
    model's own firing events) in one stationary model-month; ``family`` is the Bonferroni
    family the per-slice rule is run with (``streams/evaluation.py`` passes the model's slice
    count: 6 here)."""
    rule = next(r for r in DEFAULT_RULES if r.name == "accuracy-drop")
    anyr = dataclasses.replace(rule, scope="any_segment")
    rng = np.random.default_rng(seed)
    members = [_members(s) for s in SEGMENTS]
    ref_per, per = reference // len(CELLS), labels // len(CELLS)
    ref_right = rng.binomial(ref_per, accuracy, size=len(CELLS))
    refs = [(ref_right[m].sum() / (len(m) * ref_per), len(m) * ref_per) for m in members]
    right = rng.binomial(per, accuracy, size=(MONTH, len(CELLS)))
    each, anyt, whole = AlertTracker(), AlertTracker(), AlertTracker()
    n_each = n_any = n_whole = 0
    ref_all = (ref_right.sum() / (len(CELLS) * ref_per), len(CELLS) * ref_per)
    for w in range(MONTH):
        end = (w + 1) * WINDOW_MS
        inputs = [
            SegmentInput(s, right[w, m].sum() / (len(m) * per), len(m) * per, b, bn)
            for s, m, (b, bn) in zip(SEGMENTS, members, refs, strict=True)
        ]
        for i in inputs:
            fired = each.observe(
                rule, model_id="m", model_version="1", segment={"segment": i.segment},
                window_start_ms=end - WINDOW_MS, window_end_ms=end, value=i.value, samples=i.samples,
                baseline=i.baseline, baseline_samples=i.baseline_samples, family=family,
            )
            n_each += sum(a.status == "firing" for a in fired)
        fired = whole.observe(
            rule, model_id="m", model_version="1", segment={}, window_start_ms=end - WINDOW_MS,
            window_end_ms=end, value=right[w].sum() / labels, samples=per * len(CELLS),
            baseline=ref_all[0], baseline_samples=ref_all[1], family=family,
        )
        n_whole += sum(a.status == "firing" for a in fired)
        v = judge_any_segment(anyr, inputs)
        assert v is not None
        fired = anyt.observe_verdict(
            anyr, model_id="m", model_version="1", segment={}, window_start_ms=end - WINDOW_MS,
            window_end_ms=end, breached=v.breached, cleared=v.cleared, value=v.worst.observed,
            threshold=v.worst.threshold, clear_threshold=v.worst.clear_threshold,
            baseline=v.worst.baseline, samples=v.worst.samples,
        )
        n_any += sum(a.status == "firing" for a in fired)
    return n_each, n_any, n_whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=2000, help="labels per window (whole model)")
    parser.add_argument("--reference", type=int, default=20000, help="labels in the reference")
    parser.add_argument("--models", type=int, default=20)
    args = parser.parse_args()
    print(f"labels/window {args.labels}, reference {args.reference}, {args.models} stationary model-months;")
    print("false alerts per model per 30 days (mean over model-months):")
    print("| rule | whole model | 5 segment slices | all 6 series |")
    print("|---|---:|---:|---:|")
    runs = ((1, "every_slice, uncorrected (before)"), (1 + len(SEGMENTS), "every_slice, alpha / 6 (default)"))
    for family, label in runs:
        counts = [month(seed, args.labels, args.reference, family=family) for seed in range(args.models)]
        each, anys, whole = (float(np.mean([c[i] for c in counts])) for i in range(3))
        print(f"| {label} | {whole:.2f} | {each:.2f} | {whole + each:.2f} |")
    both = whole + anys
    print(f"| any_segment (segments) + whole model at alpha / 6 | {whole:.2f} | {anys:.2f} | {both:.2f} |")


if __name__ == "__main__":
    main()
