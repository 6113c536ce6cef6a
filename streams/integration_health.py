"""Integration health of each model, from the window results the merger closes: whether its
data arrives, in the volume and shape it should (not worker health: ``driftline.platform.health``).

The decisions are pure (``detectors/integration.py``); this module only feeds them what a merge
partition already has: for each closed window, one :class:`~driftline.schemas.results.WindowResult`
per slice (the whole model, ``""``, and one per segment value). ``WindowMerger._close`` returns
every slice of a window in one call, the whole model first, so the results of one
``MergeOutput`` are a complete picture of the windows they close; a window in which a model
received nothing produces no result at all, which :class:`SilenceWatch` counts from the gap.

- provisional phase (predictions complete): silence and volume, per slice key;
- final phase (label horizon passed): label coverage and its trend, per slice key, against
  the median coverage of the slice's own past final windows (reference files are usually fully
  labelled, so their coverage says nothing about production's).

Not yet called by the worker: the hook is one line where the merge agent handles a
``MergeOutput`` (``health.observe([e.result for e in out.evaluations])``), and its events need a
home in the contract (``WindowResult.health``) and in the rules; see docs/detectors.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.detectors.integration import HealthEvent, LabelWatch, SilenceWatch, VolumeWatch
from driftline.schemas.results import WindowResult
from driftline.schemas.windows import segment_key

__all__ = ["HealthMonitor", "HealthPolicy", "ModelHealth"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    silence_windows: int = 3
    volume_history: int = 48
    volume_min_history: int = 8
    volume_k: float = 4.0
    volume_alpha: float = 0.001
    coverage_alpha: float = 0.001
    coverage_min_history: int = 4
    coverage_tolerance: float = 0.02
    trend_windows: int = 4
    min_drop: float = 0.05


class ModelHealth:
    """The watches of one (model, version)."""

    def __init__(self, window_ms: int, horizon_ms: int, policy: HealthPolicy) -> None:
        self.policy = policy
        self.silence = SilenceWatch(policy.silence_windows, window_ms)
        self.volume = VolumeWatch(
            history=policy.volume_history,
            min_history=policy.volume_min_history,
            k=policy.volume_k,
            alpha=policy.volume_alpha,
        )
        self.horizon_ms = horizon_ms
        self._labels: dict[str, LabelWatch] = {}
        self._coverage: dict[str, list[float]] = {}
        self._last: int | None = None

    def provisional(self, window_start_ms: int, counts: Mapping[str, int]) -> list[HealthEvent]:
        """Silence and volume, once per window: a window seen before (its provisional result,
        then its final one) or older than the newest seen decides nothing again."""
        if self._last is not None and window_start_ms <= self._last:
            return []
        self._last = window_start_ms
        return self.silence.update(window_start_ms, counts) + self.volume.update(window_start_ms, counts)

    def final(self, window_start_ms: int, key: str, predictions: int, labelled: int) -> list[HealthEvent]:
        if predictions <= 0:
            return []
        past = self._coverage.setdefault(key, [])
        p = self.policy
        expected = statistics.median(past) if len(past) >= p.coverage_min_history else None
        watch = self._labels.get(key)
        if watch is None:
            watch = self._labels[key] = LabelWatch(
                self.horizon_ms,
                alpha=p.coverage_alpha,
                trend_windows=p.trend_windows,
                min_drop=p.min_drop,
                tolerance=p.coverage_tolerance,
            )
        watch.expected_coverage = expected
        events = watch.update(window_start_ms, key, predictions, labelled)
        past.append(labelled / predictions)
        del past[: -p.volume_history]
        return events

    def to_dict(self) -> dict[str, Any]:
        return {
            "silence": self.silence.to_dict(),
            "volume": self.volume.to_dict(),
            "labels": {k: w.to_dict() for k, w in self._labels.items()},
            "coverage": {k: list(v) for k, v in self._coverage.items()},
            "last": self._last,
        }

    def restore(self, d: Mapping[str, Any]) -> None:
        self.silence = SilenceWatch.from_dict(d["silence"])
        self.volume = VolumeWatch.from_dict(d["volume"])
        self._coverage = {str(k): [float(c) for c in v] for k, v in d["coverage"].items()}
        self._last = None if d["last"] is None else int(d["last"])
        self._labels = {}
        p = self.policy
        for key, state in d["labels"].items():
            watch = LabelWatch(
                self.horizon_ms,
                alpha=p.coverage_alpha,
                trend_windows=p.trend_windows,
                min_drop=p.min_drop,
                tolerance=p.coverage_tolerance,
            )
            watch.restore(state)
            self._labels[str(key)] = watch


class HealthMonitor:
    """Health events of every model a merge partition owns, keyed by (model, version)."""

    def __init__(
        self, window_ms: Mapping[str, int], horizon_ms: Mapping[str, int], policy: HealthPolicy
    ) -> None:
        self._window_ms = dict(window_ms)
        self._horizon_ms = dict(horizon_ms)
        self.policy = policy
        self._models: dict[tuple[str, str], ModelHealth] = {}

    def _model(self, model_id: str, version: str) -> ModelHealth:
        key = (model_id, version)
        if key not in self._models:
            self._models[key] = ModelHealth(
                self._window_ms[model_id], self._horizon_ms[model_id], self.policy
            )
        return self._models[key]

    def observe(self, results: Sequence[WindowResult]) -> list[tuple[str, str, HealthEvent]]:
        """(model, version, event) for the windows these results close, in window order."""
        counts: dict[tuple[str, str, int], dict[str, int]] = {}
        out: list[tuple[str, str, HealthEvent]] = []
        for r in results:
            key = segment_key(r.segment)
            # a window can go straight to final (its horizon passed with its grace): its counts
            # are complete either way, and a window counted once is not counted again
            counts.setdefault((r.model_id, r.model_version, r.window_start_ms), {})[key] = r.prediction_count
            if r.phase == "final":
                for e in self._model(r.model_id, r.model_version).final(
                    r.window_start_ms, key, r.prediction_count, r.labelled_count
                ):
                    out.append((r.model_id, r.model_version, e))
        for (model_id, version, start), window in sorted(counts.items(), key=lambda kv: (kv[0][2], kv[0])):
            for e in self._model(model_id, version).provisional(start, window):
                out.append((model_id, version, e))
        return sorted(out, key=lambda t: (t[2].window_start_ms, t[0], t[1]))

    def to_dict(self) -> dict[str, Any]:
        return {"models": [[m, v, h.to_dict()] for (m, v), h in sorted(self._models.items())]}

    def restore(self, d: Mapping[str, Any]) -> None:
        self._models = {}
        for model_id, version, state in d["models"]:
            health = self._model(model_id, version)
            health.restore(state)
