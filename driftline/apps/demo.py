"""``driftline demo``: the whole system in one process, in under a minute.

An embedded broker; a simulated serving app sending a fraud model's predictions and delayed
labels through the producer helper, eight minutes of event time compressed into the run's
traffic phase (about 13 times faster than the clock); a covariate drift injected at 40 % of
the traffic and a concept drift (accuracy collapses) at 65 %; the ordinary worker; a console
alert sink reading the ``alerts`` topic; the trainer helper reading ``retraining-requests``;
the history sink filling the SQL store as it would beside a live worker. Nothing here is a
demo-only code path. Progress shows from the first second (:mod:`driftline.apps.demo_view`:
a live table on a terminal, plain lines in a pipe).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from driftline.apps.demo_view import DemoCounts, DemoView
from driftline.apps.replay import collect_results, end_inputs
from driftline.apps.runner import create_topics, run_worker, web_port
from driftline.apps.simulate import simulate
from driftline.platform.broker import EmbeddedBroker
from driftline.platform.checkpoints import CheckpointStore
from driftline.platform.config import Config, ModelConfig
from driftline.platform.kafka import confluent_config, record_headers
from driftline.platform.text import printable
from driftline.schemas import RetrainingRequest, decode_alert, ms_to_rfc3339, rfc3339_to_ms
from driftline.schemas.cloudevents import Headers
from driftline.streams.app import DriftlineApp
from driftline.streams.catalog import ModelCatalog, build_profiles
from driftline.streams.evaluation import Evaluation
from driftline.streams.producer import DriftlineProducer
from driftline.streams.trainer import RetrainingConsumer

__all__ = ["run_demo"]

MODEL = "fraud-detector"
#: event time the traffic covers: sixteen windows, whatever ``--duration`` (the data, and so
#: what is detected, do not depend on how fast the run is; only event time is compressed)
EVENT_SPAN_S = 480.0
#: wall seconds of a run that are not traffic: start-up, the last windows closing, the summary
OVERHEAD_S = 14.0
WINDOW_S = 30
FEATURE_DRIFT_AT = 0.40
CONCEPT_DRIFT_AT = 0.65


def _say(text: str) -> None:
    print(text, flush=True)


class _Console:
    """What the person watching sees: windows as they close, alerts and requests as emitted.

    An alert or request read twice (the topics are at-least-once) is listed and counted once,
    by its CloudEvents id, so the summary's counts are the lengths of its lists."""

    def __init__(self, t0: int, drift_ms: int, concept_ms: int, view: DemoView | None = None) -> None:
        self.t0, self.drift_ms, self.concept_ms = t0, drift_ms, concept_ms
        view = view or DemoView(DemoCounts())  # not entered: plain lines on stdout
        self.view, self.counts = view, view.counts
        self.alerts: list[Any] = []
        self.requests: list[RetrainingRequest] = []
        self.windows = 0
        self.lock = threading.Lock()
        self._seen: set[str] = set()

    def _first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        return True

    def clock(self, ms: int) -> str:
        return ms_to_rfc3339(ms)[11:19]

    def on_evaluation(self, evaluation: Evaluation) -> None:
        r = evaluation.result
        if r.segment:
            return
        with self.lock:
            with self.counts.lock:
                if r.phase == "final":
                    self.counts.closed.add(r.window_start_ms)
            if r.phase == "final":
                self.windows += 1
                acc = r.metrics.get("accuracy")
                drifted = [printable(d.feature) for d in r.drift if d.drifted and d.kind == "feature"]
                self.view.say(
                    f"  window {self.clock(r.window_start_ms)}-{self.clock(r.window_end_ms)}  "
                    f"predictions {r.prediction_count:5d}  labelled {r.label_coverage or 0:4.0%}  "
                    f"accuracy {acc if acc is not None else float('nan'):.3f}  "
                    f"drift: {', '.join(drifted) if drifted else '-'}"
                )

    def on_alert(self, payload: bytes, headers: Headers = None) -> None:
        alert = decode_alert(payload, headers)  # structured or binary, as the headers say
        with self.lock:
            if not self._first_time(alert.id):
                return
            self.alerts.append(alert)
            d = alert.data
            with self.counts.lock:
                if d.status == "firing":
                    self.counts.alerts_firing += 1
                else:
                    self.counts.alerts_resolved += 1
            seg = _segment_text(d.segment)
            status = "FIRING  " if d.status == "firing" else "RESOLVED"
            observed = "n/a" if d.observed is None else f"{d.observed:.3f}"
            self.view.say(
                f"  >> ALERT {status} {d.severity:<8} {printable(d.rule)} [{seg}] "
                f"window {self.clock(rfc3339_to_ms(d.window.start))}"
                f"  observed {observed} vs threshold {d.threshold:.3f}"
            )

    def on_request(self, request: RetrainingRequest) -> None:
        with self.lock:
            if not self._first_time(request.id):
                return
            self.requests.append(request)
            with self.counts.lock:
                self.counts.requests += 1
            d = request.data
            self.view.say(
                f"  >> RETRAINING REQUESTED for {printable(d.model_id)} {printable(d.model_version)} "
                f"({printable(d.reason)}); "
                f"train on {d.suggested_training_range.start[:19]} .. {d.suggested_training_range.end[:19]}"
            )


def _segment_text(segment: dict[str, str]) -> str:
    """``k=v,…`` escaped (:func:`printable`): names from the stream are shown, never obeyed."""
    return printable(",".join(f"{k}={v}" for k, v in segment.items())) or "all"


def _serve(
    app: DriftlineApp, traffic: Any, duration_s: float, stop: threading.Event, counts: DemoCounts
) -> None:
    """The serving app: predictions and labels sent as their event time comes, then the end."""
    preds = traffic.predictions
    labels = sorted(traffic.labels, key=lambda r: r["timestamp"])
    t0 = preds[0]["timestamp"]
    span = preds[-1]["timestamp"] - t0
    speed = span / 1000.0 / duration_s
    start = time.monotonic()
    pi = li = 0
    with DriftlineProducer(app.settings, topic_prefix=app.config.topics.prefix, linger_ms=50) as producer:
        while (pi < len(preds) or li < len(labels)) and not stop.is_set():
            now_ms = t0 + (time.monotonic() - start) * speed * 1000.0
            while pi < len(preds) and preds[pi]["timestamp"] <= now_ms:
                producer.send_prediction(preds[pi])
                pi += 1
            while li < len(labels) and labels[li]["timestamp"] <= now_ms:
                producer.send_ground_truth(labels[li])
                li += 1
            with counts.lock:
                counts.predictions_sent, counts.labels_sent = pi, li
                counts.event_time_ms = int(now_ms)
            time.sleep(0.05)
        producer.flush()
    ender = Producer(confluent_config(app.settings))
    end_inputs(app, ender)
    ender.flush(10)


def _tail_alerts(app: DriftlineApp, console: _Console, stop: threading.Event) -> None:
    """The console alert sink: a plain consumer of the alerts topic."""
    consumer = Consumer(confluent_config(app.settings, group_id=f"demo-console-{uuid.uuid4().hex}"))
    consumer.assign([TopicPartition(app.topics.alerts, p, 0) for p in range(app.config.topics.alerts)])
    try:
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            payload = msg.value()
            if payload is not None:  # a record without a value (a tombstone) holds no alert
                console.on_alert(payload, record_headers(msg))
    finally:
        consumer.close()


def _demo_config(broker: str) -> Config:
    model = ModelConfig(window_ms=WINDOW_S * 1000, grace_ms=5_000, label_horizon_ms=20_000)
    return Config(
        app_id=f"driftline-demo-{uuid.uuid4().hex[:6]}",
        bootstrap_servers=broker,
        defaults=model,
        models={MODEL: replace(model, reference="simulated training data")},
    )


def _history_sink(app: DriftlineApp, store_url: str) -> tuple[Any, Any]:
    """The ordinary history sink on this run's output topics, and its sessions."""
    from driftline.platform.store.db import make_engine, session_factory
    from driftline.streams.sink import HistorySink

    sessions = session_factory(make_engine(store_url))
    quick = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    return HistorySink(app.config, sessions, settings=app.settings, consumer_config=quick), sessions


def _drain_history(
    sink: Any, thread: threading.Thread, stop: threading.Event, expected: tuple[int, ...]
) -> None:
    """Stop the history sink once it has stored what the demo read (``(windows, alerts,
    requests)``), or after a bounded wait: a short demo, never a hanging one."""
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        s = sink.stats
        if all(got >= want for got, want in zip((s.windows, s.alerts, s.requests), expected, strict=True)):
            break
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=10)


def _status_table(sessions: Any) -> str:
    """What ``driftline status`` shows for the recorded history."""
    from driftline.apps.status import collect_status, render_table

    with sessions() as session:
        return str(render_table(collect_status(session)))


def run_demo(*, duration_s: float = 50.0, seed: int = 7, store_url: str | None = None) -> int:
    traffic_s = max(10.0, duration_s - OVERHEAD_S)
    event_span_s = EVENT_SPAN_S
    speedup = event_span_s / traffic_s
    rate = 60.0
    n = int(event_span_s * rate)
    # the traffic ends about now, so the windows, alerts and lag read like a live system's
    start_ms = (int(time.time() * 1000) - int(event_span_s * 1000)) // (WINDOW_S * 1000) * (WINDOW_S * 1000)
    traffic = simulate(
        n,
        start_ms=start_ms,
        model_id=MODEL,
        events_per_s=rate,
        label_delay_ms=8_000,
        feature_drift_at=FEATURE_DRIFT_AT,
        concept_drift_at=CONCEPT_DRIFT_AT,
        seed=seed,
    )
    training = simulate(6000, model_id=MODEL, events_per_s=rate, seed=seed + 1, id_prefix="train-")
    rows = [dict(p, label=y["label"]) for p, y in zip(training.predictions, training.labels, strict=True)]
    t0 = traffic.predictions[0]["timestamp"]
    drift_ms = t0 + int(FEATURE_DRIFT_AT * n / rate * 1000)
    concept_ms = t0 + int(CONCEPT_DRIFT_AT * n / rate * 1000)

    store_url = store_url or "sqlite:///driftline-demo.sqlite"
    _fresh_store(store_url)
    _say("driftline demo: starting an embedded Kafka-compatible broker (tansu) on 127.0.0.1 ...")
    with EmbeddedBroker() as broker:
        config = _demo_config(broker.bootstrap_servers)
        catalog = ModelCatalog(
            config, build_profiles(rows, MODEL, config.model(MODEL)), sources={MODEL: "simulated reference"}
        )
        counts = DemoCounts(predictions_total=n, first_window_ms=t0, window_ms=WINDOW_S * 1000)
        view = DemoView(counts)
        console = _Console(t0, drift_ms, concept_ms, view)
        app = DriftlineApp(
            config,
            catalog,
            web_port=web_port(),
            idle_after_s=3.0,
            session_timeout_s=6,
            on_evaluation=console.on_evaluation,
            checkpoints=CheckpointStore(store_url),
        )
        create_topics(app)
        _say(
            f"model {MODEL!r}: {n} predictions over {event_span_s / 60:.0f} minutes of event time "
            f"(x{speedup:.0f} speed), windows of {WINDOW_S}s.\n"
            f"injected: feature drift (x1 +1.5 sd) from {console.clock(drift_ms)}, "
            f"concept drift (accuracy collapses) from {console.clock(concept_ms)}.\n"
        )
        stop = threading.Event()
        done = threading.Event()
        history_stop = threading.Event()
        sink: dict[str, Any] = {"results": [], "counters": {}, "complete": False}
        trainer = RetrainingConsumer(
            app.settings,
            group_id=f"{config.app_id}-trainer",
            handler=console.on_request,
            topic_prefix=config.topics.prefix,
            consumer_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        )
        history, sessions = _history_sink(app, store_url)
        history_thread = threading.Thread(target=history.run, args=(history_stop,), daemon=True)
        threads = [
            threading.Thread(target=_serve, args=(app, traffic, traffic_s, stop, counts), daemon=True),
            threading.Thread(target=_tail_alerts, args=(app, console, stop), daemon=True),
            threading.Thread(target=trainer.run, kwargs={"stop_event": stop}, daemon=True),
            threading.Thread(
                target=collect_results,
                args=(app, done, sink, time.monotonic() + duration_s + 120),
                daemon=True,
            ),
        ]
        with view:
            history_thread.start()
            for thread in threads:
                thread.start()
            run_worker(app, stop=done)
            time.sleep(1.0)  # let the console sink and the trainer print what is on their topics
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            trainer.close()
            with console.lock:
                expected = (len(sink["results"]), len(console.alerts), len(console.requests))
            _drain_history(history, history_thread, history_stop, expected)
        history.close()
        code = _summary(console, sink, drift_ms, concept_ms)
        _say(f"\nhistory recorded in {store_url} (driftline status --store-url {store_url}):")
        _say(_status_table(sessions))
        return code


def _fresh_store(url: str) -> None:
    """A new, migrated store for this run (a previous demo's file is replaced)."""
    from sqlalchemy.engine import make_url

    from driftline.platform.store.db import upgrade

    database = make_url(url).database
    if url.startswith("sqlite") and database and database != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            Path(database + suffix).unlink(missing_ok=True)
    upgrade(url)


def _summary(console: _Console, sink: dict[str, Any], drift_ms: int, concept_ms: int) -> int:
    firing = [a for a in console.alerts if a.data.status == "firing"]
    # an alert of a window that ended before the change saw stationary data only; the window
    # the change falls in already holds drifted events (the drift CUSUM can fire right there)
    early = [a for a in firing if rfc3339_to_ms(a.data.window.end) <= drift_ms]
    counters = sink.get("counters", {})
    _say("\nsummary")
    _say(f"  windows evaluated (whole model): {console.windows}")
    _say(
        f"  events: {counters.get('predictions', 0)} predictions, {counters.get('labels', 0)} labels, "
        f"{counters.get('joined', 0)} joined, {counters.get('late_predictions', 0)} late"
    )
    _say(f"  alerts fired: {len(firing)} ({len(early)} before the injected change)")
    for alert in firing:  # every one counted is listed
        d = alert.data
        seg = _segment_text(d.segment)
        _say(f"    {printable(d.rule):<15} [{seg}] at window {console.clock(rfc3339_to_ms(d.window.start))}")
    _say(f"  retraining requests: {len(console.requests)}")
    for request in console.requests:
        d = request.data
        _say(f"    {printable(d.model_id)} {printable(d.model_version)} ({printable(d.reason)})")
    ok = bool(firing) and not early and bool(console.requests) and sink.get("complete", False)
    _say(
        "  result: "
        + ("drift and accuracy drop detected after the change, no alert before it" if ok else "UNEXPECTED")
    )
    return 0 if ok else 1
