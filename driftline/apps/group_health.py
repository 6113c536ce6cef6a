"""``driftline status --serve --stall-after S``: the workers' progress as seen from the broker.

The status server reads the store; a store that is fine says nothing about workers that stopped
getting anywhere (the history keeps its last rows). This check asks the broker what a
supervisor needs: are the workers' topics there, and does the workers' consumer group (its id
is the ``app_id``) commit offsets on partitions that have data waiting? A partition whose
committed offset is behind its log end and has not moved for ``stall_after`` seconds makes
``/healthz`` answer 503, with the partition and the offsets in the reasons. The judging is
:func:`driftline.platform.health.judge`, the one the worker's own watchdog uses, with committed
offsets in place of the worker's positions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from driftline.platform.config import Config
from driftline.platform.health import Probe, ProgressTracker, Verdict, judge
from driftline.platform.kafka import (
    KafkaSettings,
    TopicNames,
    admin_client,
    log_end_offsets,
    topic_ids,
)

__all__ = ["GroupHealth"]

log = logging.getLogger(__name__)


class GroupHealth:
    """Judges a consumer group's commit progress on the worker's input topics, per request."""

    def __init__(
        self,
        config: Config,
        settings: KafkaSettings,
        *,
        stall_after: float,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        topics = TopicNames.from_config(config)
        counts = topics.partitions(config)
        consumed = (topics.predictions, topics.ground_truth, topics.join, topics.partials)
        self.group = config.app_id
        self.names = sorted(counts)
        self.partitions = [(name, p) for name in consumed for p in range(counts[name])]
        self.stall_after = stall_after
        self.timeout = timeout
        self.progress = ProgressTracker(clock)
        self.progress.assigned(self.partitions)
        self.started = clock()
        self._committed: dict[tuple[str, int], int] = {}
        self._unreachable_since: float | None = None
        self._lock = threading.Lock()  # the status server answers on several threads
        self._admin = admin_client(settings)

    def _committed_offsets(self) -> dict[tuple[str, int], int]:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        request = ConsumerGroupTopicPartitions(self.group, [TopicPartition(t, p) for t, p in self.partitions])
        futures = self._admin.list_consumer_group_offsets([request], request_timeout=self.timeout)
        result = futures[self.group].result(timeout=self.timeout)
        # no commit yet (OFFSET_INVALID, negative): nothing consumed, so waiting data counts from 0
        return {(tp.topic, tp.partition): max(int(tp.offset), 0) for tp in result.topic_partitions}

    def check(self) -> Verdict:
        with self._lock:
            now = self.progress.clock()
            try:
                ids = topic_ids(self._admin, self.names, timeout=self.timeout)
                present = [tp for tp in self.partitions if tp[0] in ids]
                ends = log_end_offsets(self._admin, present, timeout=self.timeout)
                committed = self._committed_offsets()
            except Exception as exc:  # KafkaException, timeouts: the broker did not answer
                probe = Probe(now, error=str(exc) or type(exc).__name__)
                if self._unreachable_since is None:
                    self._unreachable_since = now
            else:
                probe = Probe(now, ids, ends)
                self._unreachable_since = None
                for tp, offset in committed.items():
                    if self._committed.get(tp) != offset:  # a commit moved: progress
                        self._committed[tp] = offset
                        self.progress.advanced(*tp, offset)
            # presence only, not ids: topics the workers recreated are healthy once they progress
            verdict = judge(
                self.progress.snapshot(),
                probe,
                dict.fromkeys(self.names, ""),
                now=now,
                stall_after=self.stall_after,
                unreachable_since=self._unreachable_since,
                started=self.started,
            )
            if self._unreachable_since is not None and not verdict.reasons:
                reason = f"the broker does not answer: {probe.error}"
                verdict = Verdict(False, (reason,), False, verdict.partitions)
            return verdict
