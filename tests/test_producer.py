"""DriftlineProducer against the embedded broker: batching, linger, keys, failures."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import KafkaError
from conftest import consume_all

from driftline.detectors.hashing import partition_for
from driftline.platform.kafka import KafkaSettings, ensure_topics
from driftline.schemas import GroundTruthEvent, PredictionEvent, decode_ground_truth, decode_predictions
from driftline.streams.producer import DeliveryError, DeliveryFailure, DriftlineProducer

T0 = 1_700_000_000_000


def _prediction(i: int, model: str = "churn", n_features: int = 2) -> PredictionEvent:
    features: dict[str, float | int | str | bool | None] = {f"f{j}": i * 0.5 + j for j in range(n_features)}
    return PredictionEvent(
        prediction_id=f"p{i}",
        model_id=model,
        model_version="v1",
        timestamp=T0 + i,
        features=features,
        prediction=i % 2,
        score=(i % 100) / 100,
    )


def _topics(settings: KafkaSettings, prefix: str, partitions: int = 3) -> None:
    ensure_topics(settings, {f"{prefix}predictions": partitions, f"{prefix}ground-truth": partitions})


def test_1200_events_become_exactly_three_ordered_batches(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    _topics(kafka_settings, unique_prefix)
    sent = [_prediction(i) for i in range(1200)]
    # A long linger: only size may cut batches, the final 200 go out on flush.
    with DriftlineProducer(
        kafka_settings,
        topic_prefix=unique_prefix,
        batch_max_events=500,
        linger_ms=60_000,
        partitioning="model",
    ) as producer:
        for event in sent:
            producer.send_prediction(event)
        assert producer.pending_events == 200
    assert producer.errors == ()

    messages = consume_all(kafka_settings, f"{unique_prefix}predictions")
    assert len(messages) == 3
    assert {m.partition() for m in messages} == {messages[0].partition()}  # one key, one partition
    messages.sort(key=lambda m: m.offset())
    assert [m.key() for m in messages] == [b"churn"] * 3
    envelopes = [json.loads(m.value()) for m in messages]
    assert [(e["schema_version"], e["kind"], len(e["events"])) for e in envelopes] == [
        ("1.0", "predictions", 500),
        ("1.0", "predictions", 500),
        ("1.0", "predictions", 200),
    ]
    received = [event for m in messages for event in decode_predictions(m.value()).events]
    assert received == sent


def test_default_batches_are_co_partitioned_with_the_join(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    """Every batch holds only ids that hash to the partition it is on, with the join's hash, so
    the ingest stage forwards it to one join partition whole."""
    _topics(kafka_settings, unique_prefix, partitions=3)
    sent = [_prediction(i) for i in range(900)]
    with DriftlineProducer(
        kafka_settings, topic_prefix=unique_prefix, batch_max_events=100, linger_ms=60_000
    ) as producer:
        for event in sent:
            producer.send_prediction(event)
    messages = consume_all(kafka_settings, f"{unique_prefix}predictions")
    received = []
    for m in messages:
        events = decode_predictions(m.value()).events
        ids = [e.prediction_id for e in events]
        assert partition_for(ids, 3).tolist() == [m.partition()] * len(ids)
        assert m.key() == b"churn" and len(ids) <= 100
        received.extend(events)
    assert {m.partition() for m in messages} == {0, 1, 2}
    assert sorted(received, key=lambda e: e.prediction_id) == sorted(sent, key=lambda e: e.prediction_id)


def test_batches_are_per_model_and_per_kind(kafka_settings: KafkaSettings, unique_prefix: str) -> None:
    _topics(kafka_settings, unique_prefix)
    labels = [
        {"prediction_id": f"p{i}", "model_id": "churn", "label": i % 2, "timestamp": T0 + 10 + i}
        for i in range(3)
    ]
    with DriftlineProducer(
        kafka_settings, topic_prefix=unique_prefix, linger_ms=60_000, partitioning="model"
    ) as producer:
        producer.send_prediction(_prediction(1, "a"))
        producer.send_prediction(_prediction(2, "b"))
        producer.send_prediction(_prediction(3, "a"))
        for label in labels:
            producer.send_ground_truth(label)

    by_key = {
        m.key(): decode_predictions(m.value())
        for m in consume_all(kafka_settings, f"{unique_prefix}predictions")
    }
    assert {k: [e.prediction_id for e in d.events] for k, d in by_key.items()} == {
        b"a": ["p1", "p3"],
        b"b": ["p2"],
    }
    truth = consume_all(kafka_settings, f"{unique_prefix}ground-truth")
    assert len(truth) == 1 and truth[0].key() == b"churn"
    assert decode_ground_truth(truth[0].value()).events == [GroundTruthEvent(**label) for label in labels]


def test_single_event_mode_keys_by_prediction_id(kafka_settings: KafkaSettings, unique_prefix: str) -> None:
    _topics(kafka_settings, unique_prefix, partitions=1)
    sent = [_prediction(i) for i in range(3)]
    with DriftlineProducer(kafka_settings, topic_prefix=unique_prefix, batch_max_events=1) as producer:
        for event in sent:
            producer.send_prediction(event)
    messages = sorted(consume_all(kafka_settings, f"{unique_prefix}predictions"), key=lambda m: m.offset())
    assert [m.key() for m in messages] == [b"p0", b"p1", b"p2"]
    assert ["events" in json.loads(m.value()) for m in messages] == [False] * 3
    decoded = [decode_predictions(m.value()) for m in messages]
    assert [d.batch for d in decoded] == [False] * 3
    assert [d.events[0] for d in decoded] == sent


def test_linger_sends_a_lone_event_without_flush(kafka_settings: KafkaSettings, unique_prefix: str) -> None:
    _topics(kafka_settings, unique_prefix, partitions=1)
    producer = DriftlineProducer(kafka_settings, topic_prefix=unique_prefix, linger_ms=50)
    try:
        started = time.monotonic()
        producer.send_prediction(_prediction(7))
        # The call returned without sending; the linger thread must send within ~50 ms.
        deadline = started + 5
        while producer.pending_events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert producer.pending_events == 0
        assert time.monotonic() - started < 2
        messages = consume_all(kafka_settings, f"{unique_prefix}predictions", idle_s=1.0)
        assert [decode_predictions(m.value()).events for m in messages] == [[_prediction(7)]]
    finally:
        producer.close()


def test_invalid_mapping_raises_at_the_call_site(kafka_settings: KafkaSettings, unique_prefix: str) -> None:
    with DriftlineProducer(kafka_settings, topic_prefix=unique_prefix) as producer:
        with pytest.raises(ValueError, match="prediction_id"):
            producer.send_prediction({"model_id": "m", "timestamp": T0, "prediction": 1})
        with pytest.raises(ValueError, match="timestamp"):
            producer.send_ground_truth({"prediction_id": "p", "model_id": "m", "label": 1, "timestamp": 5})
        with pytest.raises(TypeError):
            producer.send_prediction(_ground_truth_struct())  # type: ignore[arg-type]
        assert producer.pending_events == 0


def _ground_truth_struct() -> GroundTruthEvent:
    return GroundTruthEvent(prediction_id="p", model_id="m", label=1, timestamp=T0)


def test_oversized_event_is_reported_and_flush_raises(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    _topics(kafka_settings, unique_prefix, partitions=1)
    seen: list[DeliveryFailure] = []
    producer = DriftlineProducer(
        kafka_settings,
        topic_prefix=unique_prefix,
        batch_max_events=1,
        on_error=seen.append,
        producer_config={"message.max.bytes": 1000},
    )
    producer.send_prediction(_prediction(1, n_features=100))  # ~1.9 kB on its own
    producer.send_prediction(_prediction(2))  # small: delivered
    with pytest.raises(DeliveryError) as raised:
        producer.flush(10)
    assert [(f.topic, f.key, f.events, f.code) for f in raised.value.failures] == [
        (f"{unique_prefix}predictions", b"p1", 1, KafkaError.MSG_SIZE_TOO_LARGE)
    ]
    assert seen == list(raised.value.failures) == list(producer.errors)
    producer.flush(10)  # already reported: a second flush does not raise again
    producer.close()
    messages = consume_all(kafka_settings, f"{unique_prefix}predictions", idle_s=1.0)
    assert [m.key() for m in messages] == [b"p2"]


def test_too_large_batch_is_split_not_lost(kafka_settings: KafkaSettings, unique_prefix: str) -> None:
    _topics(kafka_settings, unique_prefix, partitions=1)
    sent = [_prediction(i, n_features=3) for i in range(12)]  # ~170 B each, ~2 kB together
    with DriftlineProducer(
        kafka_settings,
        topic_prefix=unique_prefix,
        linger_ms=60_000,
        producer_config={"message.max.bytes": 1000},
    ) as producer:
        for event in sent:
            producer.send_prediction(event)
    assert producer.errors == ()
    messages = sorted(consume_all(kafka_settings, f"{unique_prefix}predictions"), key=lambda m: m.offset())
    assert len(messages) > 1
    assert all(len(m.value()) <= 1000 for m in messages)
    assert [e for m in messages for e in decode_predictions(m.value()).events] == sent
