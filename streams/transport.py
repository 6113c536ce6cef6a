"""Faust's aiokafka transport with a short fetch long-poll, registered as ``driftline://``.

Why this exists: Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed.
aiokafka sends one fetch per broker for the partitions that have nothing buffered, and a
broker may hold that fetch for the whole wait when *those* partitions stay empty. A driftline
worker consumes its own output (``internal.join-input`` and ``internal.window-partials``), so
data it has just produced, on partitions that were not in the pending fetch, waited up to
1.5 s for the long-poll to end: measured here, a third of a 100k-event run's wall time was
such stalls. A short wait bounds the stall; the cost is one empty fetch per wait when idle.

The transport is found through Faust's documented ``faust.transports`` entry point (see
pyproject.toml), so nothing in Faust is patched.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["FETCH_MAX_WAIT_MS", "PRODUCER_MAX_BATCH_BYTES", "Transport"]

#: the longest a fetch waits for data on partitions that have none
FETCH_MAX_WAIT_MS = 50
#: the producer's batch per partition (Faust's ``producer_max_batch_size``, default 16 KB):
#: aiokafka sends one request per broker at a time with at most one batch per partition
PRODUCER_MAX_BATCH_BYTES = 1024 * 1024


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher; not a constructor
        # argument Faust lets through
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
