"""Faust's aiokafka transport with a short fetch long-poll, registered as ``driftline://``.

Why this exists: Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed.
aiokafka sends one fetch per broker for the partitions that have nothing buffered, and a
broker may hold that fetch for the whole wait when *those* partitions stay empty. A driftline
worker consumes its own output (``internal.join-input`` and ``internal.window-partials``), so
data it has just produced, on partitions that were not in the pending fetch, waited up to
1.5 s for the long-poll to end: measured here, a third of a 100k-event run's wall time was
such stalls. A short wait bounds the stall; the cost is one empty fetch per wait when idle.

The embedded broker (tansu) answers a fetch only when its wait ends, even when data arrives
meanwhile, so every consumed hop (input -> ingest, join input -> join, partials -> merge) costs
on average half the wait in alert latency: 10 ms rather than 50 ms took the window close ->
alert p50 from 104-107 ms to 82-98 ms (benchmarks/latency.py). A real Kafka broker answers as
soon as data arrives, so there the wait only bounds the stall above.

The producer side is Faust's own setting (``producer_max_batch_size``, set in streams/app.py
from ``PRODUCER_MAX_BATCH_BYTES``): aiokafka keeps one produce request in flight per broker
with at most one batch per partition, so the batch size decides how much of what was produced
during a round trip the next request can carry.

The transport is found through Faust's documented ``faust.transports`` entry point (see
pyproject.toml), so nothing in Faust is patched.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from driftline.platform.config import DEFAULT_FETCH_WAIT_MS

__all__ = ["FETCH_MAX_WAIT_MS", "PRODUCER_MAX_BATCH_BYTES", "Transport", "set_fetch_wait"]

#: the longest a fetch waits for data on partitions that have none, unless the app was given
#: its own (``fetch_wait`` in the config, through ``set_fetch_wait``)
FETCH_MAX_WAIT_MS = DEFAULT_FETCH_WAIT_MS
#: the producer's batch per partition (Faust's ``producer_max_batch_size``, default 16 KB):
#: aiokafka sends one request per broker at a time with at most one batch per partition
PRODUCER_MAX_BATCH_BYTES = 1024 * 1024


#: where a Faust app carries its fetch wait: Faust's settings take no keys of ours, and the
#: transport is built by Faust from the broker URL, so the app object is what both can reach
_FETCH_WAIT_ATTRIBUTE = "driftline_fetch_max_wait_ms"


def set_fetch_wait(app: faust.App, milliseconds: int) -> None:
    """Give ``app``'s consumer a fetch wait other than ``FETCH_MAX_WAIT_MS`` (before it starts)."""
    setattr(app, _FETCH_WAIT_ATTRIBUTE, milliseconds)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher; not a constructor
        # argument Faust lets through
        consumer._fetch_max_wait_ms = getattr(self.app, _FETCH_WAIT_ATTRIBUTE, FETCH_MAX_WAIT_MS)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
