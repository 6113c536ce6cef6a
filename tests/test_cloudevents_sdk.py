"""Our alerts and retraining requests, read by the official CloudEvents Python SDK (issue 19).

The SDK is the oracle: what its Kafka binding (``cloudevents.core.bindings.kafka``) cannot
read, no CloudEvents router or function platform downstream can be expected to read either.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import Producer
from conftest import consume_all
from fakes.webhook import FakeWebhook
from sqlalchemy import select
from workers import ACCURACY_LOW_RULE, ingest_batch, running_worker, write_worker_config

from driftline.alerting.notifier_service import NotifierService
from driftline.alerting.subscriptions import subscriptions_from_config
from driftline.apps import demo as demo_module
from driftline.apps import replay as replay_module
from driftline.platform.config import load_config
from driftline.platform.kafka import KafkaSettings, confluent_config, ensure_topics
from driftline.platform.store import make_engine, session_factory, upgrade
from driftline.platform.store.models import AlertTransition, RetrainingRequestRow
from driftline.schemas import (
    ALERT_FIRING,
    ALERT_RESOLVED,
    RETRAINING_REQUESTED,
    AlertData,
    AlertEvent,
    RetrainingRequest,
    RetrainingRequestData,
    Window,
    alert_event,
    content_mode,
    decode_alert,
    decode_retraining_request,
    encode,
    kafka_record,
    retraining_request,
)
from driftline.streams.sink import HistorySink
from driftline.streams.trainer import RetrainingConsumer

WINDOW = Window(start="2026-11-24T21:00:00.000Z", end="2026-11-24T21:05:00.000Z")


def alert(status: str) -> Any:
    return alert_event(
        AlertData(
            dedup_key="churn/v3/accuracy",
            status=status,  # type: ignore[arg-type]
            rule="accuracy-drop",
            metric="accuracy",
            severity="critical",
            model_id="churn",
            model_version="v3",
            segment={},
            window=WINDOW,
            observed=0.71,
            threshold=0.8,
            comparison="<",
            starts_at=WINDOW.end,
            ends_at=WINDOW.end if status == "resolved" else None,
        )
    )


def request() -> Any:
    return retraining_request(
        RetrainingRequestData(
            idempotency_key="churn-v3-2026-11-24T21:05:00.000Z",
            model_id="churn",
            model_version="v3",
            reason="accuracy-drop",
            evidence={"accuracy": 0.71},
            window=WINDOW,
            suggested_training_range=WINDOW,
            requested_at=WINDOW.end,
        )
    )


EVENTS = {"firing": alert("firing"), "resolved": alert("resolved"), "retraining": request()}


def assert_same_event(parsed: Any, event: Any) -> None:
    """The SDK's event carries exactly our attributes and our data."""
    attributes = dict(parsed.get_attributes())
    attributes.pop("partitionkey", None)  # the SDK's name for the Kafka message key
    expected = msgspec.to_builtins(event)
    data = expected.pop("data")
    assert attributes.pop("time") == datetime.fromisoformat(expected.pop("time"))
    assert attributes == expected
    assert parsed.get_data() == data


def sdk_message(value: bytes, headers: Any, key: bytes | None = b"churn") -> ce_kafka.KafkaMessage:
    """A Kafka message as the SDK's binding takes it (headers as a mapping of bytes)."""
    return ce_kafka.KafkaMessage(headers=dict(headers or []), key=key, value=value)


def decoder(event: Any) -> Any:
    return decode_retraining_request if isinstance(event, RetrainingRequest) else decode_alert


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_the_sdk_reads_every_envelope_in_structured_mode(name: str) -> None:
    event = EVENTS[name]
    value, headers = kafka_record(event, "structured")
    assert dict(headers) == {"content-type": b"application/cloudevents+json; charset=UTF-8"}
    assert_same_event(ce_kafka.from_structured(sdk_message(value, headers), JSONFormat()), event)
    assert_same_event(ce_kafka.from_kafka(sdk_message(value, headers), JSONFormat()), event)
    assert "dataschema" not in value.decode()  # unset optional attributes are absent
    assert value == encode(event)  # structured mode is the envelope as it always was


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_the_sdk_reads_every_envelope_in_binary_mode(name: str) -> None:
    event = EVENTS[name]
    value, headers = kafka_record(event, "binary")
    assert dict(headers)["content-type"] == b"application/json"
    assert {k for k, _ in headers} == {
        "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "content-type"
    }
    assert msgspec.json.decode(value) == msgspec.to_builtins(event.data)
    assert_same_event(ce_kafka.from_binary(sdk_message(value, headers), JSONFormat()), event)
    assert_same_event(ce_kafka.from_kafka(sdk_message(value, headers), JSONFormat()), event)


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize("name", sorted(EVENTS))
def test_driftline_decodes_both_modes_to_the_same_event(name: str, mode: str) -> None:
    event = EVENTS[name]
    value, headers = kafka_record(event, mode)  # type: ignore[arg-type]
    assert content_mode(headers) == mode
    assert decoder(event)(value, headers) == event
    assert decoder(event)(value, dict(headers)) == event  # headers as a mapping, too
    assert decoder(event)(value, [(k.encode(), v) for k, v in headers]) == event  # byte names


def test_a_message_without_cloudevents_headers_is_structured() -> None:
    # how events were written before binary mode, and how a plain producer writes them
    event = EVENTS["firing"]
    assert content_mode(None) == content_mode([]) == "structured"
    assert decode_alert(encode(event), []) == decode_alert(encode(event), None) == event
    # the binding's rule: a cloudevents content-type wins over stray ce_ headers
    mixed = [("content-type", b"application/cloudevents+json"), ("ce_specversion", b"1.0")]
    assert content_mode(mixed) == "structured"
    assert content_mode([("CE_SPECVERSION", b"1.0"), ("Content-Type", b"application/json")]) == "binary"


def test_binary_mode_refuses_what_structured_mode_refuses() -> None:
    event = EVENTS["firing"]
    value, headers = kafka_record(event, "binary")
    good = dict(headers)
    broken: list[tuple[bytes, dict[str, bytes | None]]] = [
        (value, {k: v for k, v in good.items() if k != "ce_id"}),  # a required attribute missing
        (value, {**good, "ce_type": b"io.driftline.alert.resolved"}),  # disagrees with data.status
        (value, {**good, "ce_specversion": b"0.3"}),
        (value, {**good, "ce_time": b"2026-11-24T21:05:00Z"}),  # not millisecond precision
        (value, {**good, "ce_subject": b"\xff"}),  # not UTF-8
        (value, {**good, "content-type": b"text/plain"}),
        (b"{not json", good),
        (b"", good),
        (encode(event), good),  # a whole envelope where the data belongs
    ]
    for bad_value, bad_headers in broken:
        with pytest.raises(msgspec.ValidationError):
            decode_alert(bad_value, bad_headers)
    # extension attributes and empty headers are ignored, as unknown fields are in structured mode
    assert decode_alert(value, {**good, "ce_partitionkey": b"x", "ce_dataschema": None}) == event


# --------------------------------------------------------------------------- a real worker run

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a multiple of the window
WINDOW_MS = 10_000
ACCURACY = [0.9, 0.3, 0.95]  # window 1 fires (and asks for retraining), window 2 resolves
N_PER_WINDOW = 40


def _traffic() -> tuple[bytes, bytes]:
    predictions, labels = [], []
    for w, accuracy in enumerate(ACCURACY):
        for i in range(N_PER_WINDOW):
            ts = T0 + w * WINDOW_MS + i * 200
            pid = f"w{w}-{i:03d}"
            predictions.append(
                {"prediction_id": pid, "model_id": "m1", "model_version": "v1", "timestamp": ts,
                 "features": {"x": float(i)}, "prediction": 1}
            )  # fmt: skip
            label = int(i < round(accuracy * N_PER_WINDOW))  # the first ones are right
            labels.append({"prediction_id": pid, "model_id": "m1", "label": label, "timestamp": ts + 100})
    return (
        ingest_batch("predictions", predictions),
        ingest_batch("ground_truth", labels),
    )


def _tail(partition: int) -> tuple[bytes, bytes]:
    """Event time moves on in one input partition, so every window above becomes final: three
    events, since a partition's event time ignores its two newest stamps (watermark_outliers)."""
    later = T0 + 10 * WINDOW_MS
    pids = [f"tail-{partition}-{i}" for i in range(3)]
    predictions = [
        {"prediction_id": pid, "model_id": "m1", "model_version": "v1", "timestamp": later,
         "features": {"x": 0.0}, "prediction": 1}
        for pid in pids
    ]  # fmt: skip
    labels = [{"prediction_id": pid, "model_id": "m1", "label": 1, "timestamp": later} for pid in pids]
    return (
        ingest_batch("predictions", predictions),
        ingest_batch("ground_truth", labels),
    )


def _worker_output(tmp_path: Path, settings: KafkaSettings, prefix: str, mode: str) -> Path:
    """Run ``driftline worker`` with both output topics in ``mode`` until it has written the
    firing, the resolved alert and the retraining request; returns its configuration."""
    config = write_worker_config(
        # the tail jumps event time: its silent windows would add a no-predictions alert
        tmp_path, settings, prefix,
        defaults={"rules": [dict(ACCURACY_LOW_RULE)], "health": {"disable": ["no-predictions"]}},
        cloudevents={"alerts": mode, "retraining_requests": mode},
    )  # fmt: skip
    ensure_topics(settings, {f"{prefix}predictions": 2, f"{prefix}ground-truth": 2})
    with running_worker(config, tmp_path / "worker.log") as worker:
        producer = Producer(confluent_config(settings))
        predictions, labels = _traffic()
        producer.produce(f"{prefix}predictions", predictions, partition=0)
        producer.produce(f"{prefix}ground-truth", labels, partition=0)
        for partition in range(2):
            prediction, label = _tail(partition)
            producer.produce(f"{prefix}predictions", prediction, partition=partition)
            producer.produce(f"{prefix}ground-truth", label, partition=partition)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            if _count(settings, f"{prefix}alerts") >= 2 and _count(settings, f"{prefix}retraining-requests"):
                break
            time.sleep(1.0)
        else:
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:])
    return config


def _count(settings: KafkaSettings, topic: str) -> int:
    try:
        return len(consume_all(settings, topic, idle_s=0.3, max_s=5))
    except AssertionError:  # not created yet
        return 0


QUICK = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_a_worker_run_is_read_by_the_sdk_and_by_every_driftline_consumer(
    mode: str, tmp_path: Path, kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    p = unique_prefix
    config_path = _worker_output(tmp_path, kafka_settings, p, mode)
    config = load_config(config_path, environ={})
    alert_messages = consume_all(kafka_settings, f"{p}alerts")
    request_messages = consume_all(kafka_settings, f"{p}retraining-requests")

    # 1. The official SDK reads every message, with the reader for the mode and by detection.
    sdk_read = ce_kafka.from_binary if mode == "binary" else ce_kafka.from_structured
    expected: dict[str, Any] = {}
    for m in alert_messages + request_messages:
        headers = dict(m.headers() or [])
        assert ("ce_specversion" in headers) == (mode == "binary")
        message = ce_kafka.KafkaMessage(headers=headers, key=m.key(), value=m.value())
        parsed = sdk_read(message, JSONFormat())
        auto = ce_kafka.from_kafka(message, JSONFormat())
        assert auto.get_attributes() == parsed.get_attributes() and auto.get_data() == parsed.get_data()
        attributes = dict(parsed.get_attributes())
        assert attributes.pop("partitionkey").encode() == m.key()  # the key of structured mode
        attributes["time"] = attributes["time"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
        expected[attributes["id"]] = {**attributes, "data": parsed.get_data()}
    types = sorted(e["type"] for e in expected.values())
    assert types == [ALERT_FIRING, ALERT_RESOLVED, RETRAINING_REQUESTED]
    for event in expected.values():
        key = event["data"].get("dedup_key", event["data"]["model_id"])
        assert key in {m.key().decode() for m in alert_messages + request_messages}

    def as_sdk_saw_it(event: Any) -> dict[str, Any]:
        builtins = msgspec.to_builtins(event)
        assert builtins == expected[builtins["id"]], "driftline and the SDK read different events"
        return builtins

    # 2. replay's report and the demo's console tail
    report_alerts = replay_module._unique(alert_messages, decode_alert)
    report_requests = replay_module._unique(request_messages, decode_retraining_request)
    assert [a["id"] for a in report_alerts + report_requests] == [
        as_sdk_saw_it(e)["id"] for e in map(_decoded, alert_messages + request_messages)
    ]
    assert {a["id"]: a for a in report_alerts + report_requests} == expected
    console = demo_module._Console(T0, T0, T0)
    for m in alert_messages:
        console.on_alert(m.value(), m.headers())
    assert [as_sdk_saw_it(a)["type"] for a in console.alerts] == [ALERT_FIRING, ALERT_RESOLVED]

    # 3. the history sink, the trainer helper and the notifier, as consumer groups of their own
    history_url = f"sqlite:///{tmp_path}/history.sqlite"
    upgrade(history_url)
    sessions = session_factory(make_engine(history_url))
    trained: list[Any] = []
    with (
        HistorySink(config, sessions, settings=kafka_settings, consumer_config=QUICK) as sink,
        RetrainingConsumer(
            kafka_settings, group_id=f"{p}trainer", handler=trained.append, topic_prefix=p,
            consumer_config=QUICK,
        ) as trainer,
        FakeWebhook() as webhook,
    ):
        notifier = NotifierService(
            kafka_settings,
            f"{p}alerts",
            config.store_url,
            subscriptions_from_config(
                [{"name": "hook", "kind": "webhook", "settings": {"url": webhook.base_url, "batch": False}}],
                allow_literal_secrets=True,
            ),
            group_id=f"{p}notifier",
            consumer_config=QUICK,
            http_client_factory=lambda: httpx.Client(trust_env=False, follow_redirects=False, timeout=5),
        )
        stop = threading.Event()
        threads = [
            threading.Thread(target=sink.run, kwargs={"idle_timeout": 2.0}),
            threading.Thread(target=trainer.run, kwargs={"stop_event": stop}),
            threading.Thread(target=notifier.run, args=(stop,)),
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 40
        while (len(webhook.requests) < 2 or not trained) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(30)
        delivered = [msgspec.json.decode(r.body, type=AlertEvent) for r in webhook.requests]
    assert sorted(as_sdk_saw_it(a)["type"] for a in delivered) == [ALERT_FIRING, ALERT_RESOLVED]
    assert [as_sdk_saw_it(r)["type"] for r in trained] == [RETRAINING_REQUESTED]
    assert (sink.stats.alerts, sink.stats.requests, sink.stats.undecodable) == (2, 1, 0)
    with sessions() as session:
        stored = [msgspec.convert(t.event, AlertEvent) for t in session.scalars(select(AlertTransition))]
        rows = session.scalars(select(RetrainingRequestRow))
        stored_requests = [msgspec.convert(r.event, RetrainingRequest) for r in rows]
    assert sorted(as_sdk_saw_it(a)["type"] for a in stored) == [ALERT_FIRING, ALERT_RESOLVED]
    assert [as_sdk_saw_it(r)["type"] for r in stored_requests] == [RETRAINING_REQUESTED]


def _decoded(m: Any) -> Any:
    if m.topic().endswith("alerts"):
        return decode_alert(m.value(), m.headers())
    return decode_retraining_request(m.value(), m.headers())
