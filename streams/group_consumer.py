"""The consumer-group client that the history sink and the retraining consumer both own.

Both commit offsets themselves, only after their work is durable (rows upserted, a request
handled), and a new group starts from the earliest record so nothing written before the first
start is skipped. What they share is that set-up and an idempotent, context-managed close;
what they consume and how they commit stay in their own modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from confluent_kafka import Consumer

from driftline.platform.kafka import KafkaSettings, confluent_config


class GroupConsumer:
    """Owns one confluent :class:`~confluent_kafka.Consumer` with manual commits.

    ``overrides`` are further :func:`confluent_config` keywords of the subclass;
    ``consumer_config`` (the caller's raw librdkafka properties) is applied last, so a caller
    can override anything. Subscribing is left to the subclass's ``run`` (``_subscribed``).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        consumer_config: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        config = confluent_config(
            settings, group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest", **overrides
        )
        config.update(consumer_config or {})
        self._consumer = Consumer(config)
        self._subscribed = False
        self._closed = False

    def close(self) -> None:
        """Leave the group and close the consumer (idempotent)."""
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
