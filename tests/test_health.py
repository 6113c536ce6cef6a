"""Worker health: progress per partition judged against the broker, on an injected clock.

``judge`` is pure, so every case is a clock reading away, never a sleep. The watchdog is then
run against the real embedded broker (its topic ids and log end offsets), with the same fake
clock, and ``GET /healthz`` is read over a loopback HTTP connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from workers import SMALL_TOPICS

from driftline.apps.group_health import GroupHealth
from driftline.apps.status import make_status_server
from driftline.apps.watchdog import Watchdog
from driftline.platform.config import config_from_mapping
from driftline.platform.health import HealthServer, Probe, ProgressTracker, Verdict, judge
from driftline.platform.kafka import (
    KafkaSettings,
    TopicNames,
    admin_client,
    confluent_config,
    ensure_topics,
    topic_ids,
)
from driftline.platform.store.db import make_engine, session_factory, upgrade

STALL = 30.0
TP = ("p.predictions", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def _judge(tracker: ProgressTracker, probe: Probe | None, ids: dict[str, str], **kw: float) -> Verdict:
    return judge(tracker.snapshot(), probe, ids, now=tracker.clock(), stall_after=STALL, **kw)


def test_an_idle_partition_with_nothing_waiting_stays_healthy(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    tracker.assigned([TP])
    tracker.advanced(*TP, 10)
    clock.now += 10 * STALL
    verdict = _judge(tracker, Probe(clock.now, {"p.predictions": "id1"}, {TP: 10}), {"p.predictions": "id1"})
    assert verdict.healthy and not verdict.fatal and verdict.reasons == ()
    assert verdict.document()["partitions"]["p.predictions:0"] == {
        "position": 10,
        "log_end": 10,
        "seconds_since_progress": 10 * STALL,
        "stalled": False,
    }


def test_data_waiting_without_progress_is_fatal_exactly_at_the_bound(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    tracker.assigned([TP])
    tracker.advanced(*TP, 10)
    ids = {"p.predictions": "id1"}
    clock.now += STALL - 0.001
    assert _judge(tracker, Probe(clock.now, ids, {TP: 15}), ids).healthy
    clock.now += 0.001
    verdict = _judge(tracker, Probe(clock.now, ids, {TP: 15}), ids)
    assert not verdict.healthy and verdict.fatal
    assert verdict.reasons == (
        "partition p.predictions:0 made no progress for 30 s with data waiting (position 10, log end 15)",
    )
    tracker.advanced(*TP, 11)  # any progress resets the clock
    assert _judge(tracker, Probe(clock.now, ids, {TP: 15}), ids).healthy


def test_a_partition_never_read_counts_only_data_arriving_after_it_was_assigned(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    tracker.assigned([TP])
    tracker.note_log_ends({TP: 5})  # everything up to 5 may be committed already: unknown
    ids = {"p.predictions": ""}  # a broker without topic ids
    clock.now += 2 * STALL
    assert _judge(tracker, Probe(clock.now, ids, {TP: 5}), ids).healthy
    verdict = _judge(tracker, Probe(clock.now, ids, {TP: 8}), ids)
    assert verdict.fatal and "(position 5, log end 8)" in verdict.reasons[0]


def test_revoked_partitions_are_forgotten(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    tracker.assigned([TP, ("p.predictions", 1)])
    tracker.assigned([("p.predictions", 1)])
    assert list(tracker.snapshot()) == [("p.predictions", 1)]


def test_missing_or_recreated_topics_are_fatal_at_once(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    expected = {"a": "id-a", "b": "id-b", "c": "id-c"}
    verdict = _judge(tracker, Probe(clock.now, {"a": "id-a", "b": "new-b"}, {}), expected)
    assert verdict.fatal
    assert verdict.reasons == (
        "topic c no longer exists on the broker",
        "topic b was recreated (topic id id-b is now new-b)",
    )
    gone = _judge(tracker, Probe(clock.now, {}, {}), expected)
    assert gone.reasons == (
        "topics a, b, c no longer exist on the broker (all of them: the broker restarted empty?)",
    )
    # a broker without topic ids cannot tell recreated topics apart: not flagged
    assert _judge(tracker, Probe(clock.now, {"a": "", "b": "", "c": ""}, {}), expected).healthy


def test_an_unanswering_broker_is_fatal_after_the_bound_and_a_stuck_probe_unhealthy(clock: Clock) -> None:
    tracker = ProgressTracker(clock)
    down = Probe(clock.now, error="Local: Broker transport failure")
    since = clock.now
    clock.now += STALL - 1
    assert _judge(tracker, down, {}, unreachable_since=since).healthy
    clock.now += 1
    verdict = _judge(tracker, down, {}, unreachable_since=since)
    assert verdict.fatal
    assert verdict.reasons == ("the broker has not answered for 30 s: Local: Broker transport failure",)
    stale = _judge(tracker, Probe(since, {}, {}), {})  # the last answer is STALL old: no probe since
    assert not stale.healthy and not stale.fatal
    assert stale.reasons == ("no broker probe for 30 s",)


def test_healthz_serves_the_verdict(client: httpx.Client) -> None:
    verdicts = [Verdict(True)]
    server = HealthServer(("127.0.0.1", 0), lambda: verdicts[-1])
    server.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        ok = client.get(f"{base}/healthz")
        assert ok.status_code == 200
        assert ok.json() == {"status": "ok", "reasons": [], "partitions": {}}
        verdicts.append(Verdict(False, ("topic x no longer exists on the broker",), fatal=True))
        bad = client.get(f"{base}/healthz")
        assert bad.status_code == 503
        assert bad.json()["reasons"] == ["topic x no longer exists on the broker"]
        assert bad.json()["status"] == "unhealthy"
        assert client.get(f"{base}/metrics").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def topic(kafka_settings: KafkaSettings) -> Iterator[str]:
    name = f"health-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_settings, {name: 2})
    yield name
    admin_client(kafka_settings).delete_topics([name])


def test_the_watchdog_judges_the_real_broker_and_fires_once(
    kafka_settings: KafkaSettings, topic: str, clock: Clock
) -> None:
    tracker = ProgressTracker(clock)
    ids = topic_ids(admin_client(kafka_settings), [topic])
    assert ids[topic], "the embedded broker reports topic ids"
    fired: list[Verdict] = []
    watchdog = Watchdog(kafka_settings, tracker, ids, stall_after=STALL, on_fatal=fired.append)
    tracker.assigned([(topic, 0), (topic, 1)])
    tracker.advanced(topic, 0, 0)  # read nothing yet
    assert watchdog.check().healthy
    producer = Producer(confluent_config(kafka_settings))
    for _ in range(3):
        producer.produce(topic, b"x", partition=0)
    assert producer.flush(10) == 0
    clock.now += STALL
    verdict = watchdog.check()
    assert verdict.fatal and fired == [verdict]
    assert verdict.reasons[0].startswith(f"partition {topic}:0 made no progress for 30 s with data waiting")
    assert not verdict.partitions[f"{topic}:1"]["stalled"]
    admin = admin_client(kafka_settings)  # kept: futures fail once their client is collected
    for future in admin.delete_topics([topic]).values():
        future.result(10)
    gone = watchdog.check()
    assert f"topic {topic} no longer exists on the broker" in gone.reasons
    assert len(fired) == 1, "on_fatal is called once"


# ---- driftline status --serve --stall-after: the workers' group as the broker sees it -----------
def test_status_healthz_fails_when_the_workers_group_stops_committing(
    kafka_settings: KafkaSettings, unique_prefix: str, clock: Clock, tmp_path: Path, client: httpx.Client
) -> None:
    config = config_from_mapping(
        {
            "app_id": f"{unique_prefix}app",
            "bootstrap_servers": kafka_settings.bootstrap_servers,
            "topics": {"prefix": unique_prefix, **SMALL_TOPICS},
        }
    )
    topics = TopicNames.from_config(config)
    ensure_topics(kafka_settings, topics.partitions(config))
    group = GroupHealth(config, kafka_settings, stall_after=STALL, clock=clock)
    url = f"sqlite:///{tmp_path}/store.sqlite"
    upgrade(url)
    server = make_status_server(session_factory(make_engine(url)), port=0, workers=group.check)
    server.start()
    healthz = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    try:
        ok = client.get(healthz)
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "ok" and ok.json()["workers"]["status"] == "ok"

        producer = Producer(confluent_config(kafka_settings))
        for _ in range(3):
            producer.produce(topics.predictions, b"x", partition=0)
        assert producer.flush(10) == 0
        clock.now += STALL - 1  # data waiting, nothing committed: not yet
        assert client.get(healthz).status_code == 200
        clock.now += 1
        stalled = client.get(healthz)
        assert stalled.status_code == 503
        assert stalled.json()["status"] == "workers unhealthy"
        [reason] = stalled.json()["reasons"]
        assert reason.startswith(
            f"partition {topics.predictions}:0 made no progress for 30 s with data waiting"
        )

        # the group commits (as a worker's consumer does): healthy again at once
        committer = Consumer(
            confluent_config(kafka_settings, group_id=config.app_id, enable_auto_commit=False)
        )
        committer.commit(offsets=[TopicPartition(topics.predictions, 0, 3)], asynchronous=False)
        committer.close()
        assert client.get(healthz).status_code == 200

        admin = admin_client(kafka_settings)
        for future in admin.delete_topics([topics.predictions]).values():
            future.result(10)
        gone = client.get(healthz)
        assert gone.status_code == 503
        assert gone.json()["reasons"] == [f"topic {topics.predictions} no longer exists on the broker"]
    finally:
        server.shutdown()
        server.server_close()
