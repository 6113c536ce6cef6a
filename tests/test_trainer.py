"""RetrainingConsumer against the embedded broker: once per request, retry, commit, dedup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_INVALID, Producer
from conftest import committed_offsets, run_until

from driftline.platform.kafka import (
    KafkaSettings,
    confluent_config,
    ensure_topics,
    quick_join_consumer_config,
)
from driftline.schemas import RetrainingRequest, RetrainingRequestData, Window, encode, retraining_request
from driftline.streams.trainer import MemoryDedupStore, RetrainingConsumer, SqliteDedupStore


def _request(key: str, model: str = "churn") -> bytes:
    data = RetrainingRequestData(
        idempotency_key=key,
        model_id=model,
        model_version="3",
        reason="accuracy-drop",
        evidence={"accuracy": 0.71},
        window=Window(start="2024-05-01T10:00:00.000Z", end="2024-05-01T10:05:00.000Z"),
        suggested_training_range=Window(start="2024-04-24T10:05:00.000Z", end="2024-05-01T10:05:00.000Z"),
        requested_at="2024-05-01T10:05:00.000Z",
    )
    request = retraining_request(data, source="/driftline/tests")
    assert request.id == key
    return encode(request)


def _publish(settings: KafkaSettings, prefix: str, values: list[bytes]) -> str:
    topic = f"{prefix}retraining-requests"
    ensure_topics(settings, {topic: 1})
    producer = Producer(confluent_config(settings))
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(10) == 0
    return topic


def _consumer(
    settings: KafkaSettings, prefix: str, handler: Callable[[RetrainingRequest], None], **kwargs: object
) -> RetrainingConsumer:
    return RetrainingConsumer(
        settings,
        group_id=f"{prefix}{kwargs.pop('group', 'trainer')}",
        handler=handler,
        topic_prefix=prefix,
        consumer_config=quick_join_consumer_config(),
        **kwargs,  # type: ignore[arg-type]
    )


def _run_until(consumer: RetrainingConsumer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    run_until(lambda stop: consumer.run(stop_event=stop), done, timeout=timeout, what=lambda: "(consumer)")


def _committed(settings: KafkaSettings, group: str, topic: str) -> int:
    return committed_offsets(settings, group, [topic])[topic]


def test_each_request_is_handled_once_and_bad_messages_are_skipped(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    topic = _publish(
        kafka_settings,
        unique_prefix,
        [_request("a"), b"{not json", b'{"id": "x", "specversion": "1.0"}', _request("b"), _request("c")],
    )
    handled: list[str] = []
    with _consumer(kafka_settings, unique_prefix, lambda r: handled.append(r.id)) as consumer:
        _run_until(consumer, lambda: consumer.stats.handled == 3)
        assert handled == ["a", "b", "c"]
        assert (consumer.stats.undecodable, consumer.stats.duplicates) == (2, 0)
    assert _committed(kafka_settings, f"{unique_prefix}trainer", topic) == 5


def test_failing_handler_is_retried_and_committed_only_after_success(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    topic = _publish(kafka_settings, unique_prefix, [_request("a"), _request("b")])
    group = f"{unique_prefix}trainer"
    calls: list[tuple[str, int]] = []  # (request id, committed offset while the handler runs)

    def flaky(request: RetrainingRequest) -> None:
        calls.append((request.id, _committed(kafka_settings, group, topic)))
        if request.id == "a" and len(calls) <= 2:
            raise RuntimeError("GPU quota exceeded")

    with _consumer(kafka_settings, unique_prefix, flaky, backoff_initial=0.05) as consumer:
        _run_until(consumer, lambda: consumer.stats.handled == 2)
        assert consumer.stats.handler_failures == 2
    assert calls == [("a", OFFSET_INVALID), ("a", OFFSET_INVALID), ("a", OFFSET_INVALID), ("b", 1)]
    assert _committed(kafka_settings, group, topic) == 2


def test_handler_failing_max_attempts_stops_without_committing(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    topic = _publish(kafka_settings, unique_prefix, [_request("a")])
    calls: list[str] = []

    def broken(request: RetrainingRequest) -> None:
        calls.append(request.id)
        raise RuntimeError("trainer misconfigured")

    consumer = _consumer(kafka_settings, unique_prefix, broken, max_attempts=3, backoff_initial=0.01)
    with consumer, pytest.raises(RuntimeError, match="misconfigured"):
        _run_until(consumer, lambda: False, timeout=30)
    assert calls == ["a", "a", "a"]
    assert _committed(kafka_settings, f"{unique_prefix}trainer", topic) == OFFSET_INVALID


def test_duplicate_idempotency_keys_are_handled_once(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    topic = _publish(kafka_settings, unique_prefix, [_request("a"), _request("a"), _request("b")])
    handled: list[str] = []
    with _consumer(kafka_settings, unique_prefix, lambda r: handled.append(r.id)) as consumer:
        _run_until(consumer, lambda: consumer.stats.handled + consumer.stats.duplicates == 3)
        assert (consumer.stats.handled, consumer.stats.duplicates) == (2, 1)
    assert handled == ["a", "b"]
    assert _committed(kafka_settings, f"{unique_prefix}trainer", topic) == 3


def test_sqlite_dedup_survives_a_new_consumer(
    kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path
) -> None:
    _publish(kafka_settings, unique_prefix, [_request("a"), _request("b")])
    db = tmp_path / "dedup.sqlite"
    handled: list[str] = []

    store = SqliteDedupStore(db)
    with _consumer(kafka_settings, unique_prefix, lambda r: handled.append(r.id), dedup_store=store) as first:
        _run_until(first, lambda: first.stats.handled == 2)
    store.close()

    # A new group re-reads the topic from the beginning; only the file remembers "a" and "b".
    store = SqliteDedupStore(db)
    with _consumer(
        kafka_settings, unique_prefix, lambda r: handled.append(r.id), dedup_store=store, group="restarted"
    ) as second:
        _run_until(second, lambda: second.stats.duplicates == 2)
        assert second.stats.handled == 0
    store.close()
    assert handled == ["a", "b"]


def test_dedupe_off_hands_every_copy_to_the_handler(
    kafka_settings: KafkaSettings, unique_prefix: str
) -> None:
    _publish(kafka_settings, unique_prefix, [_request("a"), _request("a")])
    handled: list[str] = []
    with _consumer(kafka_settings, unique_prefix, lambda r: handled.append(r.id), dedupe=False) as consumer:
        _run_until(consumer, lambda: consumer.stats.handled == 2)
    assert handled == ["a", "a"]


def test_memory_store_is_bounded_and_forgets_oldest_first() -> None:
    store = MemoryDedupStore(max_keys=2)
    for key in ("a", "b", "c"):
        store.mark(key)
    assert [store.seen(k) for k in ("a", "b", "c")] == [False, True, True]
