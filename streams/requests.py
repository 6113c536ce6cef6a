"""Retraining requests, version 2: what a trainer or workflow engine needs to act without glue.

The retraining policy (``alerting/retraining.py``) decides *whether* to ask and keeps the
version 1 fields; this module adds what only the evaluation knows (docs/retraining.md):

- ``training_data``: the suggested event-time range and the exact input seen in it, from an
  :class:`InputHistory` of the model version's final windows (per window the input offsets the
  join recorded, streams/positions.py, and its prediction and label counts);
- ``trigger``: the rule, the alert's dedup key, and the window's metrics with their baselines
  and drifted features with their effect sizes, and the worst segments (``worst_segments``,
  from the alert's evidence or the window's ``segments_ranked``);
- ``action`` (the rule's), ``baseline`` (the reference value a new model must beat),
  ``lineage`` (the ``registry`` the model version's events sent, field by field, else the
  model's ``registry`` configuration; see :meth:`InputHistory.lineage`) and ``parameters``: the same as flat
  strings, which Argo, Kubeflow and Airflow pass through without parsing JSON.

Everything is a function of the windows, never of the wall clock, so a replay re-emits the
same request byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from driftline.alerting.rules import Rule
from driftline.detectors.comparison import Reference
from driftline.platform.config import REGISTRY_KEYS, ModelConfig
from driftline.schemas import (
    RETRAINING_SCHEMA_VERSION,
    AlertData,
    Baseline,
    FeatureDriftEvidence,
    InputRange,
    Lineage,
    MetricEvidence,
    RetrainingRequestData,
    TrainingData,
    Trigger,
    Window,
)
from driftline.schemas.results import SegmentContribution, WindowResult
from driftline.schemas.timefmt import ms_to_rfc3339, rfc3339_to_ms
from driftline.streams.columns import RegistryRef
from driftline.streams.positions import InputPositions, split_source

__all__ = ["InputHistory", "version_two", "workflow_parameters"]


class InputHistory:
    """Per model version, the whole-model windows seen within the retraining lookback: their
    input offsets and counts. Bounded: windows ending a lookback before the newest are dropped."""

    def __init__(self, lookback_ms: int) -> None:
        self.lookback_ms = lookback_ms
        #: (model, version) -> start -> [end, positions (wire), predictions, labelled]
        self._windows: dict[tuple[str, str], dict[int, list[Any]]] = {}

    def record(
        self,
        model_id: str,
        version: str,
        start: int,
        end: int,
        positions: InputPositions,
        n: int,
        labelled: int,
    ) -> None:
        """A window's latest phase (a final one replaces its provisional record)."""
        windows = self._windows.setdefault((model_id, version), {})
        windows[start] = [end, positions.to_wire(), n, labelled]
        newest = max(w[0] for w in windows.values())
        for old in [s for s, w in windows.items() if w[0] <= newest - self.lookback_ms]:
            del windows[old]

    def covering(self, model_id: str, version: str, start: int, end: int) -> TrainingData:
        """What the history holds of [start, end): windows wholly inside it."""
        inside = sorted(
            (s, w)
            for s, w in self._windows.get((model_id, version), {}).items()
            if s >= start and w[0] <= end
        )
        positions = InputPositions.merged(InputPositions.from_wire(w[1]) for _, w in inside)
        n = sum(w[2] for _, w in inside)
        labelled = sum(w[3] for _, w in inside)
        ranges = positions.to_wire()
        return TrainingData(
            range=Window(start=ms_to_rfc3339(start), end=ms_to_rfc3339(end)),
            covered=Window(start=ms_to_rfc3339(inside[0][0]), end=ms_to_rfc3339(inside[-1][1][0]))
            if inside
            else None,
            windows=len(inside),
            predictions=_ranges(ranges["predictions"]),
            labels=_ranges(ranges["labels"]),
            prediction_count=n,
            labelled_count=labelled,
            label_coverage=labelled / n if n else None,
        )

    def lineage(self, model_id: str, version: str, start: int, end: int) -> RegistryRef | None:
        """The ``registry`` of the latest event in [start, end) that sent one (ties at one
        event time: the greatest, streams/positions.py), over the windows wholly inside it."""
        found = InputPositions.merged(
            InputPositions.from_wire(w[1])
            for s, w in self._windows.get((model_id, version), {}).items()
            if s >= start and w[0] <= end
        ).lineage
        return None if found is None else found[1]

    def to_wire(self) -> list[list[Any]]:
        return [
            [m, v, [[s, *w] for s, w in sorted(ws.items())]] for (m, v), ws in sorted(self._windows.items())
        ]

    def restore(self, data: Iterable[Sequence[Any]] | None) -> None:
        self._windows = {
            (str(m), str(v)): {int(row[0]): list(row[1:]) for row in rows} for m, v, rows in data or ()
        }


def _ranges(by_source: Mapping[str, Sequence[int]]) -> list[InputRange]:
    out = []
    for source, (first, last) in by_source.items():
        topic, partition = split_source(source)
        out.append(InputRange(topic=topic, partition=partition, first_offset=first, last_offset=last))
    return sorted(out, key=lambda r: (r.topic, r.partition))


def version_two(
    data: RetrainingRequestData,
    *,
    alert: AlertData,
    rule: Rule,
    cfg: ModelConfig,
    result: WindowResult,
    reference: Reference | None,
    reference_window: Window | None,
    history: InputHistory,
    label_free: bool,
    worst_segments: Sequence[SegmentContribution] = (),
) -> RetrainingRequestData:
    """The version 2 request for a version 1 ``data`` that ``alert`` (of ``rule``) raised;
    ``worst_segments`` are the segments to name in its trigger, worst first."""
    suggested = data.suggested_training_range
    training = history.covering(
        data.model_id, data.model_version, rfc3339_to_ms(suggested.start), rfc3339_to_ms(suggested.end)
    )
    baselines = reference.metrics if reference is not None else {}
    metrics = {}
    if not label_free:  # label-based numbers only once the window is final (see evaluation)
        metrics = {
            k: MetricEvidence(value=v, baseline=_finite(baselines.get(k)))
            for k, v in sorted(result.metrics.items())
            if "." not in k
        }
    drifted = [
        FeatureDriftEvidence(
            feature=d.feature,
            test=d.test,
            statistic=d.statistic,
            p_value=d.p_value,
            raw_p_value=getattr(d, "raw_p_value", None),  # reported by newer drift tests
            distance=getattr(d, "distance", None),
            distance_name=getattr(d, "distance_name", None),
        )
        for d in result.drift
        if d.drifted and d.kind == "feature"
    ]
    trigger = Trigger(
        rule=rule.name,
        severity=alert.severity,
        metric=alert.metric,
        dedup_keys=[alert.dedup_key],
        segment=dict(alert.segment),
        observed=alert.observed,
        threshold=alert.threshold,
        comparison=alert.comparison,
        metrics=metrics,
        drifted_features=drifted,
        worst_segments=list(worst_segments),
    )
    baseline = None
    metric = rule.metric if rule.metric in baselines else _primary(baselines)
    if reference is not None and metric is not None and _finite(baselines.get(metric)) is not None:
        baseline = Baseline(
            metric=metric,
            value=float(baselines[metric]),
            reference=reference.source,
            reference_window=reference_window,
        )
    # the events' registry wins field by field: the serving app knows what it loaded, while
    # configuration is static and goes stale when an alias moves; it fills what events omit
    seen = history.lineage(
        data.model_id, data.model_version, rfc3339_to_ms(suggested.start), rfc3339_to_ms(suggested.end)
    ) or (None, None, None, None)
    uri, name, alias, run_id = (
        value if value is not None else cfg.registry.get(key)
        for key, value in zip(REGISTRY_KEYS, seen, strict=True)
    )
    lineage = Lineage(
        registry_uri=uri, registered_model=name, version=data.model_version, alias=alias, run_id=run_id
    )
    out = msgspec.structs.replace(
        data,
        schema_version=RETRAINING_SCHEMA_VERSION,
        lineage=lineage,
        training_data=training,
        trigger=trigger,
        action=rule.action,
        baseline=baseline,
    )
    return msgspec.structs.replace(out, parameters=workflow_parameters(out))


#: the metric a baseline names when the rule's own metric has none (a drift rule)
_PRIMARY = ("accuracy", "roc_auc", "f1", "rmse", "mae")


def _primary(baselines: Mapping[str, float]) -> str | None:
    return next((m for m in _PRIMARY if _finite(baselines.get(m)) is not None), None)


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else value


def workflow_parameters(data: RetrainingRequestData) -> dict[str, str]:
    """The request as flat ``str -> str``: what Argo Workflows parameters, Kubeflow pipeline
    arguments and Airflow ``conf`` take. Absent values are left out, never ``"None"``.
    Input offsets are spelled ``topic:partition:first-last``, comma-separated."""
    p: dict[str, str] = {
        "request_id": data.idempotency_key,
        "model_id": data.model_id,
        "model_version": data.model_version,
        "action": data.action,
        "reason": data.reason,
        "window_start": data.window.start,
        "window_end": data.window.end,
        "range_start": data.suggested_training_range.start,
        "range_end": data.suggested_training_range.end,
    }
    if data.trigger is not None:
        p["severity"] = data.trigger.severity
        p["metric"] = data.trigger.metric
        if data.trigger.segment:
            p["segment"] = ",".join(f"{k}={v}" for k, v in sorted(data.trigger.segment.items()))
        if data.trigger.worst_segments:
            worst = data.trigger.worst_segments[0]
            p["worst_segment"] = f"{worst.dimension}={worst.value}"
            p["worst_segments"] = ",".join(f"{s.dimension}={s.value}" for s in data.trigger.worst_segments)
    if data.lineage is not None:
        for key in ("registry_uri", "registered_model", "alias", "run_id"):
            value = getattr(data.lineage, key)
            if value is not None:
                p[key] = value
    if data.baseline is not None:
        p["baseline_metric"] = data.baseline.metric
        p["baseline_value"] = repr(data.baseline.value)
        p["baseline_reference"] = data.baseline.reference
    t = data.training_data
    if t is not None:
        p["prediction_count"] = str(t.prediction_count)
        p["labelled_count"] = str(t.labelled_count)
        if t.label_coverage is not None:
            p["label_coverage"] = repr(t.label_coverage)
        if t.predictions:
            p["prediction_offsets"] = _spell(t.predictions)
        if t.labels:
            p["label_offsets"] = _spell(t.labels)
    return p


def _spell(ranges: Sequence[InputRange]) -> str:
    return ",".join(f"{r.topic}:{r.partition}:{r.first_offset}-{r.last_offset}" for r in ranges)
