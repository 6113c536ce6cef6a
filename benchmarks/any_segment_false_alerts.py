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


def month(seed: int, labels: int, reference: int, accuracy: float = 0.9) -> tuple[int, int]:
    """(per-slice firing events, any_segment firing events) in one stationary model-month."""
    rule = next(r for r in DEFAULT_RULES if r.name == "accuracy-drop")
    anyr = dataclasses.replace(rule, scope="any_segment")
    rng = np.random.default_rng(seed)
    members = [_members(s) for s in SEGMENTS]
    ref_per, per = reference // len(CELLS), labels // len(CELLS)
    ref_right = rng.binomial(ref_per, accuracy, size=len(CELLS))
    refs = [(ref_right[m].sum() / (len(m) * ref_per), len(m) * ref_per) for m in members]
    right = rng.binomial(per, accuracy, size=(MONTH, len(CELLS)))
    each, anyt = AlertTracker(), AlertTracker()
    n_each = n_any = 0
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
                baseline=i.baseline, baseline_samples=i.baseline_samples,
            )
            n_each += sum(a.status == "firing" for a in fired)
        v = judge_any_segment(anyr, inputs)
        assert v is not None
        fired = anyt.observe_verdict(
            anyr, model_id="m", model_version="1", segment={}, window_start_ms=end - WINDOW_MS,
            window_end_ms=end, breached=v.breached, cleared=v.cleared, value=v.worst.observed,
            threshold=v.worst.threshold, clear_threshold=v.worst.clear_threshold,
            baseline=v.worst.baseline, samples=v.worst.samples,
        )
        n_any += sum(a.status == "firing" for a in fired)
    return n_each, n_any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=2000, help="labels per window (whole model)")
    parser.add_argument("--reference", type=int, default=20000, help="labels in the reference")
    parser.add_argument("--models", type=int, default=20)
    args = parser.parse_args()
    counts = [month(seed, args.labels, args.reference) for seed in range(args.models)]
    each = np.mean([c[0] for c in counts])
    anys = np.mean([c[1] for c in counts])
    print(
        f"labels/window {args.labels}, reference {args.reference}, {args.models} model-months: "
        f"per segment slice (5 series) {each:.2f}, any_segment {anys:.2f} false alerts per model per 30 days"
    )


if __name__ == "__main__":
    main()
