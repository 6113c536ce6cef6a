"""The notifier process: the ``alerts`` topic in, the outbox in between, destinations out.

One thread, one loop, two halves:

- **ingest**: poll the topic, and for each batch record every alert and queue it for its
  subscriptions in ONE store transaction, *then* commit the Kafka offsets (manual commits).
  A crash between the two re-reads the batch; the outbox's UNIQUE (event_id, subscription)
  turns the second enqueue into a no-op. Nothing is lost, nothing is queued twice.
- **deliver**: one :meth:`Delivery.run_once` round with a time budget, so the consumer keeps
  polling (and its group membership alive) whatever the destinations do.

A single thread also suits SQLite, which has one writer: ingest and delivery never contend.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import msgspec
from sqlalchemy.orm import Session

from driftline.alerting.delivery import Delivery
from driftline.alerting.notifiers.base import Notifier
from driftline.alerting.outbox import RetryPolicy, ingest
from driftline.alerting.subscriptions import Subscription, make_notifier
from driftline.platform import metrics
from driftline.platform.kafka import KafkaSettings, confluent_config, record_headers
from driftline.platform.store import check_schema, make_engine, safe_url, session_factory
from driftline.schemas import AlertEvent, decode_alert

logger = logging.getLogger(__name__)


def default_http_client() -> httpx.Client:
    """The client every notification goes through; redirects off (a 3xx means a wrong URL)."""
    return httpx.Client(follow_redirects=False, timeout=10.0)


class NotifierService:
    """Consume alerts, keep the outbox, deliver. ``run(stop_event)`` returns when it is set.

    Secrets are resolved when the service is made (``make_notifier``), so a missing routing key
    fails at start-up, naming the variable or file, rather than at the first alert.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        alerts_topic: str,
        store_url: str,
        subscriptions: Sequence[Subscription],
        *,
        group_id: str,
        clock: Callable[[], float] = time.time,
        http_client_factory: Callable[[], httpx.Client] = default_http_client,
        policy: RetryPolicy | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        notifiers: Mapping[str, Notifier] | None = None,
        poll_s: float = 0.2,
        delivery_budget_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.alerts_topic = alerts_topic
        self.store_url = store_url
        self.subscriptions = list(subscriptions)
        self.group_id = group_id
        self._clock = clock
        self._http_client_factory = http_client_factory
        self._policy = policy or RetryPolicy()
        self._consumer_config = dict(consumer_config or {})
        self._notifiers = (
            dict(notifiers)
            if notifiers is not None
            else {s.name: make_notifier(s) for s in self.subscriptions}
        )
        self._poll_s = poll_s
        self._budget_s = delivery_budget_s

    def record(self, session: Session, events: Sequence[AlertEvent], now_ms: int) -> None:
        """The ingest half for one polled batch, in the caller's transaction: each alert is
        recorded and queued per subscription; one already queued (the batch was read again
        after a crash before its offsets were committed) is counted as ``deduplicated``."""
        for event in events:
            _, repeated = ingest(session, event, self.subscriptions, now_ms)
            for sub in repeated:
                metrics.observe_notification(sub.kind, "deduplicated")

    def run(self, stop_event: threading.Event) -> None:
        """Serve until ``stop_event`` is set; refuses to start on an out-of-date schema."""
        from confluent_kafka import Consumer, KafkaError

        engine = make_engine(self.store_url)
        check_schema(engine)
        sessions = session_factory(engine)
        consumer = Consumer(
            confluent_config(
                self.settings,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                enable_partition_eof=False,
                **self._consumer_config,
            )
        )
        consumer.subscribe([self.alerts_topic])
        client = self._http_client_factory()
        delivery = Delivery(
            sessions,
            self.subscriptions,
            self._notifiers,
            client,
            policy=self._policy,
            clock=self._clock,
            rng=random.Random(),
        )
        logger.info(
            "notifier: %d subscription(s), topic %s, store %s",
            len(self.subscriptions),
            self.alerts_topic,
            safe_url(self.store_url),
        )
        try:
            while not stop_event.is_set():
                messages = consumer.consume(num_messages=200, timeout=self._poll_s)
                events = []
                consumed = False
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            logger.warning("alerts topic: %s", error)
                        continue
                    consumed = True
                    try:
                        # either CloudEvents content mode: the headers say which
                        events.append(decode_alert(message.value() or b"", record_headers(message)))
                    except msgspec.ValidationError as exc:
                        # Poison input must not block the partition; the producer's DLQ owns it.
                        logger.error("skipping an undecodable alert at offset %s: %s", message.offset(), exc)
                if consumed:
                    now_ms = int(self._clock() * 1000)
                    with sessions.begin() as session:
                        self.record(session, events, now_ms)
                    consumer.commit(asynchronous=False)
                delivery.run_once(budget_s=self._budget_s)
        finally:
            consumer.close()
            client.close()
            engine.dispose()
