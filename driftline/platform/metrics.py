"""Prometheus metrics of driftline (prometheus-client), named as Prometheus recommends.

Why this shape:

- Names end in ``_total`` for counters and carry base units (``_seconds``); ratios are
  plain 0..1 gauges. ``promtool check metrics`` passes on the exposition (tested).
- Label values are bounded: topics, reasons (a fixed set of codes), phases, statuses,
  severities, receiver kinds, model ids (bounded by ``max_models``) and, for per-feature
  series, only the features a model *declares* (its ``feature_types`` or its reference
  profile, see :func:`tracked_features`). Never prediction ids, never segment values (the
  per-segment history lives in ``window-results`` and the SQL store), never a feature name
  that only appeared in traffic: a producer sending random keys must not be able to blow up
  the time-series database.
- The pipeline keeps cumulative counters of its own (late, duplicate, joined ... in
  ``JoinPartition.counters``, summed by ``WindowMerger.counters``); :func:`observe_progress`
  turns those into Prometheus counters by adding only the increase since the last call, so
  calling it on every progress message is harmless and cheap.
- Window gauges show the newest evaluated window of the whole model (segment ``{}``):
  label-free values (volume, drift) from either phase, labelled ones (accuracy, coverage)
  from the final phase only, so a dashboard never shows a window judged on its first few
  labels, and an older window finalising late never overwrites a newer one.
- Event-time lag is computed at scrape time from the last watermark seen, so a stalled
  stream shows a growing lag instead of a frozen one.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from driftline.platform.config import Config, ModelConfig
    from driftline.streams.catalog import ModelCatalog
    from driftline.streams.evaluation import Evaluation

__all__ = [
    "ALERTS_EMITTED",
    "EVENTS_CONSUMED",
    "EVENTS_INVALID",
    "NOTIFICATION_OUTCOMES",
    "RETRAINING_REQUESTS",
    "WINDOWS_EVALUATED",
    "configure",
    "exported_metric_names",
    "observe_evaluation",
    "observe_notification",
    "observe_progress",
    "scrape_messages_consumed",
    "start_metrics_server",
    "tracked_features",
]

# -- stream input (fed by streams/app.py directly) -------------------------------------------
EVENTS_CONSUMED = Counter(
    "driftline_messages_consumed_total", "Input messages consumed (a batch counts once)", ["topic"]
)
EVENTS_INVALID = Counter(
    "driftline_events_invalid_total", "Events sent to the dead-letter topic, by reason", ["topic", "reason"]
)
WINDOWS_EVALUATED = Counter("driftline_windows_evaluated_total", "Window slices evaluated", ["phase"])
ALERTS_EMITTED = Counter("driftline_alerts_emitted_total", "Alert events emitted", ["status", "severity"])
RETRAINING_REQUESTS = Counter("driftline_retraining_requests_total", "Retraining requests emitted")

# -- join progress (fed by observe_progress) ----------------------------------------------------
EVENTS_ACCEPTED = Counter(
    "driftline_events_accepted_total",
    "Events accepted into windows (after dead-letter, duplicate and late checks), by topic",
    ["topic"],
)
EVENTS_LATE = Counter(
    "driftline_events_late_total",
    "Events that arrived after their window's grace: counted, not used",
    ["topic"],
)
EVENTS_AHEAD = Counter(
    "driftline_events_ahead_of_stream_total",
    "Events stamped more than max_event_time_jump ahead of their partition's event time "
    "(a wrong producer clock): processed, and ignored by the watermark",
    ["topic"],
)
EVENTS_DUPLICATE = Counter(
    "driftline_events_duplicate_total", "Exact re-deliveries of an event, counted and ignored", ["topic"]
)
JOIN_ROWS_IN_PLACE = Counter(
    "driftline_join_rows_in_place_total",
    "Rows joined where they were read (input partition and its join partition on one worker), "
    "without the hop through internal.join-input",
    ["topic"],
)
JOIN_OUTCOMES = Counter(
    "driftline_join_outcomes_total",
    "Join outcomes: joined pairs, labels early, predictions expired unlabelled, labels unmatched",
    ["outcome"],
)
EVENT_TIME_LAG = Gauge(
    "driftline_event_time_lag_seconds",
    "Wall clock minus the event-time watermark the model's windows close on (computed at scrape)",
    ["model"],
)
WATERMARK = Gauge(
    "driftline_watermark_timestamp_seconds",
    "Event-time watermark of the model's windows (Unix time)",
    ["model"],
)

# -- window results (fed by observe_evaluation) -----------------------------------------------
WINDOW_ACCURACY = Gauge("driftline_window_accuracy", "Accuracy of the newest final window", ["model"])
WINDOW_METRIC = Gauge(
    "driftline_window_metric",
    "Performance metrics of the newest final window (accuracy, f1_macro, roc_auc, rmse, ...)",
    ["model", "metric"],
)
WINDOW_LABEL_COVERAGE = Gauge(
    "driftline_window_label_coverage",
    "Share of the newest final window's predictions that got a label",
    ["model"],
)
WINDOW_LABELLED = Gauge(
    "driftline_window_labelled", "Labelled predictions in the newest final window", ["model"]
)
WINDOW_PREDICTIONS = Gauge("driftline_window_predictions", "Predictions in the newest window", ["model"])
WINDOW_DATASET_DRIFT = Gauge(
    "driftline_window_dataset_drift", "1 if the newest window drifted as a whole, else 0", ["model"]
)
WINDOW_DRIFT_SHARE = Gauge(
    "driftline_window_drift_share", "Share of tested features that drifted in the newest window", ["model"]
)
WINDOW_END = Gauge(
    "driftline_window_end_timestamp_seconds",
    "End (event time, Unix time) of the newest window evaluated, by phase",
    ["model", "phase"],
)
FEATURE_DRIFT_STATISTIC = Gauge(
    "driftline_feature_drift_statistic",
    "Drift test statistic of a declared feature in the newest window",
    ["model", "feature", "test"],
)
FEATURE_DRIFT_P_VALUE = Gauge(
    "driftline_feature_drift_p_value",
    "Drift test p-value of a declared feature in the newest window (absent for distances)",
    ["model", "feature", "test"],
)
FEATURE_DRIFTED = Gauge(
    "driftline_feature_drifted",
    "1 if a declared feature drifted in the newest window, else 0",
    ["model", "feature"],
)
FEATURE_MISSING_RATE = Gauge(
    "driftline_feature_missing_rate",
    "Share of the newest window's events missing a declared feature",
    ["model", "feature"],
)
OUTPUT_DRIFT_STATISTIC = Gauge(
    "driftline_output_drift_statistic",
    "Drift test statistic of the predictions or labels in the newest window",
    ["model", "kind", "test"],
)
ALERT_DELAY = Histogram(
    "driftline_alert_delay_seconds",
    "Wall clock from a window's end (event time) to an alert about it; includes grace or label horizon",
    ["phase"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)

# -- notifications (fed by observe_notification, from the notifier) -------------------------
#: what a delivery attempt can come to; anything else is a programming error
NOTIFICATION_OUTCOMES = ("delivered", "retry", "failed", "deduplicated", "rate_limited", "dead", "superseded")
NOTIFICATIONS = Counter(
    "driftline_notifications_total",
    "Notification delivery attempts, by receiver kind and outcome",
    ["receiver", "outcome"],
)
NOTIFICATION_DELIVERY = Histogram(
    "driftline_notification_delivery_seconds",
    "Time from an alert's creation to its successful delivery, retries included",
    ["receiver"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

#: join counters -> (Prometheus counter, label value or logical topic)
_PROGRESS: dict[str, tuple[Counter, str]] = {
    "predictions": (EVENTS_ACCEPTED, "predictions"),
    "labels": (EVENTS_ACCEPTED, "ground-truth"),
    "late_predictions": (EVENTS_LATE, "predictions"),
    "duplicate_predictions": (EVENTS_DUPLICATE, "predictions"),
    "duplicate_labels": (EVENTS_DUPLICATE, "ground-truth"),
    "joined": (JOIN_OUTCOMES, "joined"),
    "early_labels": (JOIN_OUTCOMES, "early_label"),
    "expired_unlabelled": (JOIN_OUTCOMES, "expired_unlabelled"),
    "unmatched_labels": (JOIN_OUTCOMES, "unmatched_label"),
    "ahead_of_stream": (EVENTS_AHEAD, "predictions"),
}
_TOPIC_COUNTERS = {EVENTS_ACCEPTED, EVENTS_LATE, EVENTS_DUPLICATE, EVENTS_AHEAD}
#: performance metric keys that are counts, not scores (exported elsewhere or not at all)
_NOT_A_SCORE = {"n", "n_positive"}
_MIN_REAL_WATERMARK = -(2**61)  # below: no event seen yet (MIN_WATERMARK is -2**62)


class _State:
    """What the observers remember between calls; guarded so agents on several threads agree."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.topic_prefix = "driftline."
        self.features: Callable[[str], frozenset[str]] = lambda model_id: frozenset()
        self.progress_seen: dict[str, int] = {}
        self.watermark_ms: dict[str, int] = {}
        self.newest: dict[tuple[str, str], int] = {}  # (model, "label_free"|"labelled") -> window start
        self.feature_series: dict[str, set[tuple[str, str]]] = {}  # model -> {(feature, test)}


_state = _State()
_clock: Callable[[], float] = time.time


def tracked_features(model_config: ModelConfig, reference_features: Iterable[str] = ()) -> frozenset[str]:
    """The features of a model that get per-feature series: declared in its config's
    ``feature_types`` or present in its reference profile. Bounded by what an operator wrote
    or trained on, never by what traffic sends."""
    return frozenset(model_config.feature_types) | frozenset(reference_features)


def configure(config: Config, catalog: ModelCatalog | None = None) -> None:
    """Tell the observers the topic prefix and which features each model declares.

    Call once per worker before the agents start. Without it, topics are labelled with the
    default prefix and no per-feature series are exported."""

    def features(model_id: str) -> frozenset[str]:
        cfg = catalog.model(model_id) if catalog is not None else config.model(model_id)
        profile = catalog.profile(model_id) if catalog is not None else None
        return tracked_features(cfg, getattr(profile, "features", None) or ())

    cache: dict[str, frozenset[str]] = {}

    def cached(model_id: str) -> frozenset[str]:
        found = cache.get(model_id)
        if found is None:
            found = cache[model_id] = features(model_id)
        return found

    with _state.lock:
        _state.topic_prefix = config.topics.prefix
        _state.features = cached


def observe_progress(counters: Mapping[str, int], watermark_ms: int, model_ids: Iterable[str]) -> None:
    """Feed the join's cumulative counters and the event-time watermark.

    ``counters`` must be a global cumulative view (``WindowMerger.counters``: summed over all
    join partitions); every merge partition holds such a view, possibly a little behind the
    others, so the counter follows the largest value seen and never goes back."""
    with _state.lock:
        prefix = _state.topic_prefix
        for name, value in counters.items():
            target = _PROGRESS.get(name)
            if target is None:
                continue
            increase = int(value) - _state.progress_seen.get(name, 0)
            if increase <= 0:
                continue
            _state.progress_seen[name] = int(value)
            counter, label = target
            counter.labels(prefix + label if counter in _TOPIC_COUNTERS else label).inc(increase)
        if watermark_ms <= _MIN_REAL_WATERMARK:
            return
        for model_id in model_ids:
            if watermark_ms <= _state.watermark_ms.get(model_id, _MIN_REAL_WATERMARK):
                continue
            first = model_id not in _state.watermark_ms
            _state.watermark_ms[model_id] = watermark_ms
            WATERMARK.labels(model_id).set(watermark_ms / 1000.0)
            if first:
                EVENT_TIME_LAG.labels(model_id).set_function(_lag_of(model_id))


def _lag_of(model_id: str) -> Callable[[], float]:
    watermarks = _state.watermark_ms

    def lag() -> float:
        watermark = watermarks.get(model_id)
        return math.nan if watermark is None else _clock() - watermark / 1000.0

    return lag


def _gauge_value(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _newer(model_id: str, group: str, start_ms: int) -> bool:
    key = (model_id, group)
    if start_ms < _state.newest.get(key, start_ms):
        return False
    _state.newest[key] = start_ms
    return True


def observe_evaluation(evaluation: Evaluation) -> None:
    """Feed one evaluated window slice: window gauges, drift gauges, alert delay.

    Per-segment slices only feed the alert-delay histogram (their alerts are real alerts);
    their numbers stay out of the gauges to keep series per model, not per segment value."""
    r = evaluation.result
    now = _clock()
    for alert in evaluation.alerts:
        if alert.data.status == "firing":
            ALERT_DELAY.labels(r.phase).observe(max(0.0, now - r.window_end_ms / 1000.0))
    if r.segment:
        return
    model = r.model_id
    with _state.lock:
        if _newer(model, f"end:{r.phase}", r.window_start_ms):
            WINDOW_END.labels(model, r.phase).set(r.window_end_ms / 1000.0)
        if _newer(model, "label_free", r.window_start_ms):
            _observe_label_free(evaluation, model)
        if r.phase == "final" and _newer(model, "labelled", r.window_start_ms):
            WINDOW_ACCURACY.labels(model).set(_gauge_value(r.metrics.get("accuracy")))
            WINDOW_LABEL_COVERAGE.labels(model).set(_gauge_value(r.label_coverage))
            WINDOW_LABELLED.labels(model).set(r.labelled_count)
            for name, value in r.metrics.items():
                if "." not in name and name not in _NOT_A_SCORE:
                    WINDOW_METRIC.labels(model, name).set(_gauge_value(value))


def _observe_label_free(evaluation: Evaluation, model: str) -> None:
    r = evaluation.result
    WINDOW_PREDICTIONS.labels(model).set(r.prediction_count)
    WINDOW_DATASET_DRIFT.labels(model).set(math.nan if r.dataset_drift is None else float(r.dataset_drift))
    WINDOW_DRIFT_SHARE.labels(model).set(_gauge_value(r.drift_share))
    declared = _state.features(model)
    seen: set[tuple[str, str]] = set()
    for d in r.drift:
        if d.kind != "feature":
            OUTPUT_DRIFT_STATISTIC.labels(model, d.kind, d.test).set(_gauge_value(d.statistic))
            continue
        if d.feature not in declared:
            continue
        seen.add((d.feature, d.test))
        FEATURE_DRIFT_STATISTIC.labels(model, d.feature, d.test).set(_gauge_value(d.statistic))
        if d.p_value is not None:
            FEATURE_DRIFT_P_VALUE.labels(model, d.feature, d.test).set(d.p_value)
        FEATURE_DRIFTED.labels(model, d.feature).set(1.0 if d.drifted else 0.0)
    # a feature's test can change (sample size picks it): drop the old test's series
    for feature, test in _state.feature_series.get(model, set()) - seen:
        for gauge in (FEATURE_DRIFT_STATISTIC, FEATURE_DRIFT_P_VALUE):
            with contextlib.suppress(KeyError):
                gauge.remove(model, feature, test)
    _state.feature_series[model] = seen
    for feature, quality in r.data_quality.items():
        if feature in declared:
            FEATURE_MISSING_RATE.labels(model, feature).set(quality.missing_rate)


def notification_outcome(delivered: bool, retry: bool) -> str:
    """Map a notifier ``Outcome`` to the outcome label."""
    if delivered:
        return "delivered"
    return "retry" if retry else "failed"


def observe_notification(receiver: str, outcome: str, delivery_seconds: float | None = None) -> None:
    """Count one delivery attempt; on success pass the time since the alert was created.

    ``receiver`` is the receiver *kind* (slack, pagerduty, webhook, alertmanager, kafka),
    never a URL or a subscription name."""
    if outcome not in NOTIFICATION_OUTCOMES:
        raise ValueError(f"notification outcome must be one of {NOTIFICATION_OUTCOMES}, not {outcome!r}")
    NOTIFICATIONS.labels(receiver, outcome).inc()
    if delivery_seconds is not None and outcome == "delivered":
        NOTIFICATION_DELIVERY.labels(receiver).observe(max(0.0, delivery_seconds))


def start_metrics_server(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on a daemon thread; returns ``(server, thread)`` so tests can stop it.
    Port 0 picks a free port (``server.server_port``)."""
    return start_http_server(port, addr=host, registry=registry)


def scrape_messages_consumed(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> float:
    """A running worker's input messages consumed (``driftline_messages_consumed_total`` over
    topics), read from its ``/metrics`` endpoint: how benchmarks and tests see from outside that
    a worker started, or did its share. Raises ``OSError`` while nothing serves there."""
    return scrape_total(port, "driftline_messages_consumed_total", host, timeout)


def scrape_total(port: int, name: str, host: str = "127.0.0.1", timeout: float = 5.0) -> float:
    """A running worker's series ``name`` summed over its labels, from its ``/metrics``."""
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def exported_metric_names(registry: CollectorRegistry = REGISTRY) -> frozenset[str]:
    """Every series name a scrape can show for driftline's metrics, suffixes included
    (``_total``, ``_bucket``, ``_sum``, ``_count``, ``_created``). Used to check that
    dashboards and alerting rules only query metrics that exist."""
    names: set[str] = set()
    for family in registry.collect():
        if not family.name.startswith("driftline_"):
            continue
        if family.type == "counter":
            names.update(family.name + s for s in ("_total", "_created"))
        elif family.type in ("histogram", "summary"):
            names.update(family.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        else:
            names.add(family.name)
    return frozenset(names)
