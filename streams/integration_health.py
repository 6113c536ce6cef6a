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
  labelled, so their coverage says nothing about production's); and the window's label-lag
  quantile (``health.lag_quantile``, a metric of the result) against a share of the horizon.

Wired in the merger (``streams/merge.py``): every ``MergeOutput`` it closes is shown to its
:class:`HealthMonitor`, whose verdicts :class:`HealthAlerts` turns into alert events through the
evaluator's :class:`~driftline.alerting.lifecycle.AlertTracker` (so the same dedup keys, the same
event ids on a replay, the same outbox). Schema changes come from ingest as
:class:`~driftline.streams.messages.HealthFinding` messages on the model's merge partition.
The monitor's state travels in the merger's checkpoint.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from driftline.alerting.lifecycle import AlertTracker, dedup_key
from driftline.alerting.rules import Rule
from driftline.detectors.integration import HealthEvent, LabelWatch, SilenceWatch, VolumeWatch
from driftline.detectors.vocabulary import HEALTH_ALERTS
from driftline.platform.config import HealthConfig
from driftline.schemas import AlertEvent, alert_event
from driftline.schemas.results import WindowResult
from driftline.schemas.windows import last_provisional_start, parse_segment_key, segment_key

__all__ = ["HealthAlerts", "HealthMonitor", "HealthPolicy", "ModelHealth", "Verdict", "alert_of"]

#: the thresholds live with the rest of a model's configuration (``health:``), checked there
HealthPolicy = HealthConfig

#: health event kind -> the alert it raises (detectors/vocabulary.py)
_ALERT_OF = {kind: alert for alert, kinds in HEALTH_ALERTS.items() for kind in kinds}


def alert_of(kind: str) -> str:
    """The alert (``HEALTH_ALERTS`` name) a health event kind belongs to."""
    return _ALERT_OF[kind]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One health check of one key at one window: ``event`` when it found a problem (or, for
    ``predictions_resumed``, its end); None when it was judged and found nothing, which
    resolves a firing alert. ``value``, ``comparison`` and ``threshold`` are what a person
    reads in the alert ("prediction_count 12 < 69")."""

    model_id: str
    model_version: str
    alert: str
    key: str
    window_start_ms: int
    event: HealthEvent | None
    metric: str
    value: float | None
    comparison: str
    threshold: float


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
            relearn=policy.volume_relearn,
        )
        self.horizon_ms = horizon_ms
        self._labels: dict[str, LabelWatch] = {}
        self._coverage: dict[str, list[float]] = {}
        self._last: int | None = None

    def provisional(self, window_start_ms: int, counts: Mapping[str, int]) -> list[HealthEvent]:
        """Silence and volume, once per window: a window seen before (its provisional result,
        then its final one) or older than the newest seen decides nothing again."""
        return [v[1] for v in self.judge_counts(window_start_ms, counts) if v[1] is not None]

    def judge_counts(
        self, window_start_ms: int, counts: Mapping[str, int]
    ) -> list[tuple[str, HealthEvent | None, float | None, float, str]]:
        """(key, event or None, value, threshold, comparison) of silence and volume for one
        window: events, and a None for each key whose volume was judged and in its band."""
        if self._last is not None and window_start_ms <= self._last:
            return []
        self._last = window_start_ms
        p = self.policy
        keys = sorted(set(counts) | self.volume.keys())
        bands = {k: self.volume.band(k) for k in keys}
        out: list[tuple[str, HealthEvent | None, float | None, float, str]] = []
        for e in self.silence.update(window_start_ms, counts):
            silent = float(e.detail.get("windows", e.detail.get("silent_windows", 0)))
            value = silent if e.kind == "no_predictions" else 0.0
            out.append((e.key, e, value, float(p.silence_windows), ">="))
        flagged = set()
        for e in self.volume.update(window_start_ms, counts):
            flagged.add(e.key)
            low = e.kind == "volume_low"
            edge = e.detail["low"] if low else e.detail["high"]
            out.append((e.key, e, float(e.detail["count"]), float(edge), "<" if low else ">"))
        for k in keys:
            band = bands[k]
            if band is not None and k not in flagged:
                out.append((k, None, float(counts.get(k, 0)), band[0], "<"))
        return out

    @property
    def last_window(self) -> int | None:
        """The newest window whose counts were judged."""
        return self._last

    def final(
        self, window_start_ms: int, key: str, predictions: int, labelled: int, lag_ms: float | None = None
    ) -> list[HealthEvent]:
        found = self.judge_labels(window_start_ms, key, predictions, labelled, lag_ms)
        return [e for _, e, *_ in found if e is not None]

    def judge_labels(
        self, window_start_ms: int, key: str, predictions: int, labelled: int, lag_ms: float | None = None
    ) -> list[tuple[str, HealthEvent | None, str, float | None, float, str]]:
        """(alert, event or None, metric, value, threshold, comparison) of a final window's
        labels: coverage, and ``lag_ms`` (the window's ``lag_quantile`` of label lag; None
        when no label joined) once ``lag_min_labelled`` labels joined."""
        if predictions <= 0:
            return []
        past = self._coverage.setdefault(key, [])
        p = self.policy
        expected = statistics.median(past) if len(past) >= p.coverage_min_history else None
        watch = self._labels.get(key)
        if watch is None:
            watch = self._labels[key] = self._label_watch()
        watch.expected_coverage = expected
        lag_judged = lag_ms is not None and labelled >= p.lag_min_labelled
        events = watch.update(window_start_ms, key, predictions, labelled, lag_ms if lag_judged else None)
        past.append(labelled / predictions)
        del past[: -p.volume_history]
        coverage = labelled / predictions
        kinds = {e.kind: e for e in events}
        out: list[tuple[str, HealthEvent | None, str, float | None, float, str]] = []
        if expected is not None:
            low = kinds.get("label_coverage_low")
            floor = expected - p.coverage_tolerance
            if low is not None:
                floor = min(floor, low.detail["min_labelled"] / predictions)
            out.append(("label-coverage-low", low, "label_coverage", coverage, floor, "<"))
        if watch.trend_judged(key):
            falling = kinds.get("label_coverage_falling")
            start = falling.detail["from"] if falling is not None else coverage
            floor = start - p.min_drop
            out.append(("label-coverage-falling", falling, "label_coverage", coverage, floor, "<="))
        if lag_judged:
            high = kinds.get("label_lag_high")
            out.append(("label-lag-high", high, p.lag_metric, lag_ms, watch.lag_threshold_ms, ">"))
        return out

    def _label_watch(self) -> LabelWatch:
        p = self.policy
        return LabelWatch(
            self.horizon_ms,
            alpha=p.coverage_alpha,
            lag_share=p.lag_share,
            trend_windows=p.trend_windows,
            min_drop=p.min_drop,
            tolerance=p.coverage_tolerance,
        )

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
        self.volume = VolumeWatch.from_dict(d["volume"], relearn=self.policy.volume_relearn)
        self._coverage = {str(k): [float(c) for c in v] for k, v in d["coverage"].items()}
        self._last = None if d["last"] is None else int(d["last"])
        self._labels = {}
        for key, state in d["labels"].items():
            watch = self._label_watch()
            watch.restore(state)
            self._labels[str(key)] = watch


def _lookup(value: Mapping[str, Any] | Callable[[str], Any]) -> Callable[[str], Any]:
    if callable(value):
        return value
    mapping = dict(value)
    return mapping.__getitem__


class HealthMonitor:
    """Health events of every model a merge partition owns, keyed by (model, version).

    ``window_ms``, ``horizon_ms`` and ``policy`` give each model's (a mapping or a function of
    the model id; one policy may serve all)."""

    def __init__(
        self,
        window_ms: Mapping[str, int] | Callable[[str], int],
        horizon_ms: Mapping[str, int] | Callable[[str], int],
        policy: HealthPolicy | Callable[[str], HealthPolicy],
    ) -> None:
        self._window_ms = _lookup(window_ms)
        self._horizon_ms = _lookup(horizon_ms)
        self.policy: Callable[[str], HealthPolicy] = (
            (lambda _model: policy) if isinstance(policy, HealthConfig) else policy
        )
        self._models: dict[tuple[str, str], ModelHealth] = {}

    def window_ms(self, model_id: str) -> int:
        return int(self._window_ms(model_id))

    def _model(self, model_id: str, version: str) -> ModelHealth:
        key = (model_id, version)
        if key not in self._models:
            self._models[key] = ModelHealth(
                self._window_ms(model_id), self._horizon_ms(model_id), self.policy(model_id)
            )
        return self._models[key]

    def observe(self, results: Sequence[WindowResult]) -> list[tuple[str, str, HealthEvent]]:
        """(model, version, event) for the windows these results close, in window order."""
        return [(v.model_id, v.model_version, v.event) for v in self.judge(results) if v.event is not None]

    def judge(self, results: Sequence[WindowResult], *, cut_after: int | None = None) -> list[Verdict]:
        """Every check these results decide, in window order. Windows ending after
        ``cut_after`` (the event time the input had reached when a bounded input ended) are
        not judged on their counts: the input stopped inside them, so they are short by
        construction, not silent or low."""
        counts: dict[tuple[str, str, int], dict[str, int]] = {}
        out: list[Verdict] = []
        for r in results:
            key = segment_key(r.segment)
            health = self._model(r.model_id, r.model_version)
            if cut_after is None or r.window_end_ms <= cut_after:
                # a window can go straight to final (its horizon passed with its grace): its
                # counts are complete either way, and a window counted once is not counted again
                counts.setdefault((r.model_id, r.model_version, r.window_start_ms), {})[key] = (
                    r.prediction_count
                )
            if r.phase == "final":
                lag = r.metrics.get(health.policy.lag_metric)
                for alert, e, metric, value, edge, cmp in health.judge_labels(
                    r.window_start_ms, key, r.prediction_count, r.labelled_count, lag
                ):
                    out.append(
                        Verdict(
                            r.model_id, r.model_version, alert, key, r.window_start_ms, e,
                            metric, value, cmp, edge,
                        )
                    )
        for (model_id, version, start), window in sorted(counts.items(), key=lambda kv: (kv[0][2], kv[0])):
            out += self._verdicts(model_id, version, start, window)
        return sorted(out, key=lambda v: (v.window_start_ms, v.model_id, v.model_version))

    def _verdicts(self, model_id: str, version: str, start: int, counts: Mapping[str, int]) -> list[Verdict]:
        out = []
        for key, e, value, edge, cmp in self._model(model_id, version).judge_counts(start, counts):
            kind = e.kind if e is not None else "volume_low"
            metric = "health.silent_windows" if alert_of(kind) == "no-predictions" else "prediction_count"
            at = e.window_start_ms if e is not None else start
            out.append(Verdict(model_id, version, alert_of(kind), key, at, e, metric, value, cmp, edge))
        return out

    def advance(self, watermark: int, grace_ms: Callable[[str], int]) -> list[Verdict]:
        """Windows complete at ``watermark`` in which a model received nothing: no result
        closes them, so without this a model that stopped would be noticed only when it
        sends again. Only each model's newest version is advanced: the versions a rollout
        replaced are not an outage."""
        newest: dict[str, int] = {}
        for (model_id, _), h in self._models.items():
            if h.last_window is not None:
                newest[model_id] = max(newest.get(model_id, h.last_window), h.last_window)
        out: list[Verdict] = []
        for (model_id, version), h in sorted(self._models.items()):
            last = h.last_window
            if last is None or last < newest[model_id]:
                continue
            start = last_provisional_start(watermark, self.window_ms(model_id), grace_ms(model_id))
            if start > last:
                out += self._verdicts(model_id, version, start, {})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"models": [[m, v, h.to_dict()] for (m, v), h in sorted(self._models.items())]}

    def restore(self, d: Mapping[str, Any]) -> None:
        self._models = {}
        for model_id, version, state in d["models"]:
            health = self._model(model_id, version)
            health.restore(state)


#: lifecycle bookkeeping an alert of a 0/1 breach carries, replaced by the numbers behind it
_INTERNAL = ("value", "threshold", "clear_threshold", "baseline", "samples")


class HealthAlerts:
    """Health verdicts as alert events, through an :class:`AlertTracker` (the evaluator's,
    so health alerts share its checkpoint, dedup keys and deterministic event ids).

    Each alert of ``HEALTH_ALERTS`` is one rule per (model, version, slice); a schema change
    is one per (model, version, kind, feature), named ``schema-change/<kind>/<feature>``. The
    lifecycle is fed 1 when a check finds the problem and 0 when it is judged and finds none,
    with ``for_windows`` and ``clear_windows`` of 1: the watches already hold the patience
    (N silent windows, a learnt band), so an alert fires on the window its check names."""

    def __init__(self, policy: Callable[[str], HealthPolicy], *, source: str) -> None:
        self.policy = policy
        self.source = source

    def alerts(
        self, tracker: AlertTracker, verdicts: Sequence[Verdict], window_ms: Callable[[str], int]
    ) -> list[AlertEvent]:
        out: list[AlertEvent] = []
        for v in verdicts:
            p = self.policy(v.model_id)
            if not p.enabled(v.alert):
                continue
            fire = v.event is not None and v.event.kind != "predictions_resumed"
            evidence: dict[str, Any] = {"window_start_ms": v.window_start_ms}
            if v.event is not None:
                evidence |= {"health_event": v.event.kind, **v.event.detail}
                if v.event.position is not None:
                    evidence["position"] = v.event.position
            out += self._observe(
                tracker, p, v.model_id, v.model_version, v.alert, parse_segment_key(v.key), v.window_start_ms,
                window_ms(v.model_id), fire, evidence, v.metric, v.value, v.comparison, v.threshold,
            )
        return out

    def schema_change(
        self,
        tracker: AlertTracker,
        model_id: str,
        model_version: str,
        event: HealthEvent,
        window_ms: int,
    ) -> list[AlertEvent]:
        """A schema change ingest found: fires once per (model, version, kind, feature); a
        repeat (another ingest partition, a restart) is a window of a firing alert, so silent."""
        p = self.policy(model_id)
        if not p.enabled("schema-change"):
            return []
        evidence = {
            "window_start_ms": event.window_start_ms,
            "health_event": event.kind,
            "feature": event.key,
            **event.detail,
            "position": event.position,
        }
        count = float(event.detail.get("events", 1))
        return self._observe(
            tracker, p, model_id, model_version, f"schema-change/{event.kind}/{event.key}", {},
            event.window_start_ms, window_ms, True, evidence, "schema_change", count, ">=", 1.0,
        )

    def _observe(
        self,
        tracker: AlertTracker,
        p: HealthPolicy,
        model_id: str,
        model_version: str,
        rule_name: str,
        segment: dict[str, str],
        start: int,
        window_ms: int,
        fire: bool,
        evidence: dict[str, Any],
        metric: str,
        value: float | None,
        comparison: str,
        threshold: float,
    ) -> list[AlertEvent]:
        if not fire and tracker.status(dedup_key(model_id, model_version, segment, rule_name)) == "ok":
            return []  # nothing to resolve: no lifecycle state for every quiet slice and check
        severity: Any = p.severity  # checked against SEVERITIES by HealthConfig
        rule = Rule(name=rule_name, metric=metric, comparison=">=", threshold=1.0, severity=severity)
        found = tracker.observe(
            rule,
            model_id=model_id,
            model_version=model_version,
            segment=segment,
            window_start_ms=start,
            window_end_ms=start + window_ms,
            value=1.0 if fire else 0.0,
            samples=0,
            evidence=evidence,
        )
        events = []
        for data in found:
            # the lifecycle judged the 0/1 breach; the alert shows the number behind it
            shown = {k: v for k, v in data.evidence.items() if k not in _INTERNAL}
            shown |= {"threshold": threshold, "clear_threshold": threshold}
            shown_cmp: Any = comparison  # one of the rules' comparisons, set by the verdict
            data = msgspec.structs.replace(
                data, observed=value, threshold=threshold, comparison=shown_cmp, evidence=shown
            )
            events.append(alert_event(data, source=self.source))
        return events
