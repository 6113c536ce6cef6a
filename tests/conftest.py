"""Shared fixtures: one embedded broker per test session, isolated names per test, and the
local Slack and PagerDuty fakes the alerting tests deliver to."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from fakes.pagerduty import FakePagerDuty
from fakes.slack import FakeSlack

from driftline.platform.broker import EmbeddedBroker
from driftline.platform.kafka import KafkaSettings, confluent_config


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A tansu broker started once per session (it boots in ~10 ms but clients reconnecting
    after restarts would slow every test); SIGKILLed at the end."""
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield running


@pytest.fixture()
def kafka_settings(broker: EmbeddedBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap_servers, client_id="driftline-tests")


@pytest.fixture()
def unique_prefix() -> str:
    """A topic/group prefix per test: on this broker a group that emptied by graceful
    leaves never admits a new member, and topics outlive the test that made them."""
    return f"t{uuid.uuid4().hex[:8]}."


def consume_all(
    settings: KafkaSettings, topic: str, *, idle_s: float = 2.0, max_s: float = 20.0
) -> list[Message]:
    """Every message of ``topic`` from the beginning, read until nothing arrives for
    ``idle_s`` (bounded by ``max_s``).

    "Until idle", never "until the high watermark": the embedded broker reports the high
    watermark short. Partitions are assigned directly (no group join), so this is fast.
    """
    consumer = Consumer(
        confluent_config(
            settings,
            group_id=f"consume-all-{uuid.uuid4().hex}",
            enable_auto_commit=False,
            enable_partition_eof=False,
        )
    )
    try:
        # Unfiltered metadata: asking for one topic by name makes this broker auto-create it.
        topics = consumer.list_topics(timeout=10).topics
        if topic not in topics:
            raise AssertionError(f"topic {topic} does not exist")
        metadata = topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)])
        messages: list[Message] = []
        deadline = time.monotonic() + max_s
        last_seen = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_seen < idle_s:
            batch = consumer.consume(num_messages=1000, timeout=0.2)
            for message in batch:
                if message.error() is not None:
                    raise AssertionError(f"consume error on {topic}: {message.error()}")
                messages.append(message)
            if batch:
                last_seen = time.monotonic()
        return messages
    finally:
        consumer.close()


def run_until(
    run: Callable[[threading.Event], object],
    done: Callable[[], bool],
    *,
    timeout: float = 30.0,
    what: Callable[[], str] = lambda: "",
) -> None:
    """Call ``run(stop)`` on a thread until ``done()`` holds (at most ``timeout`` s), then set
    ``stop`` and join. A consumer loop checks ``stop`` only between messages or batches, so the
    one that made ``done()`` true is fully processed (and committed). Whatever ``run`` raised is
    raised here; a ``done()`` that never held fails the test, with ``what()`` in the message."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not done() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    if failure:
        raise failure[0]
    assert done(), f"did not reach the expected state in {timeout} s {what()}"


def committed_offsets(settings: KafkaSettings, group: str, topics: Sequence[str]) -> dict[str, int]:
    """``group``'s committed offset on partition 0 of each topic (``OFFSET_INVALID``: none),
    read by a consumer that never joins the group."""
    inspector = Consumer(confluent_config(settings, group_id=group, enable_auto_commit=False))
    try:
        parts = inspector.committed([TopicPartition(t, 0) for t in topics], timeout=10)
        return {tp.topic: int(tp.offset) for tp in parts}
    finally:
        inspector.close()


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy from the environment must not intercept loopback test traffic
    with httpx.Client(trust_env=False) as c:
        yield c


@pytest.fixture()
def slack() -> Iterator[FakeSlack]:
    """A local server that behaves like a Slack incoming webhook (tests/fakes/slack.py)."""
    with FakeSlack() as fake:
        yield fake


@pytest.fixture()
def pagerduty() -> Iterator[FakePagerDuty]:
    """A local server that behaves like PagerDuty's Events API v2 (tests/fakes/pagerduty.py)."""
    with FakePagerDuty() as fake:
        yield fake
