"""The worker's watchdog: recover from a lost broker by exiting loudly, so a supervisor restarts it.

A worker cannot resume in place after its broker lost its data: the topics it consumes are
gone or are new logs under old names, its consumer group's offsets went with them, and its
checkpoints point into logs that no longer exist. A restart does it right: the worker creates
its topics again at start-up and discards checkpoints taken from other topic ids (see
``DriftlineApp._restore``). So the watchdog probes the broker every few seconds from its own
thread (independent of the stream's event loop, which may be what is stuck), judges progress
with :func:`driftline.platform.health.judge`, and on a fatal verdict logs one ERROR line that
says what happened and what to do, then ends the process with :data:`EXIT_STALLED`.
``driftline worker --health-port`` serves the same verdict as ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from driftline.platform.health import Probe, ProgressTracker, Verdict, judge
from driftline.platform.kafka import KafkaSettings, admin_client, log_end_offsets, topic_ids

__all__ = ["EXIT_STALLED", "Watchdog", "exit_stalled"]

log = logging.getLogger(__name__)

#: ``driftline worker`` exit status when the watchdog gives up (documented in docs/operations.md)
EXIT_STALLED = 3


def exit_stalled(verdict: Verdict) -> None:
    """The worker's fatal action: one ERROR line, then exit at once with :data:`EXIT_STALLED`.

    ``os._exit``, not a graceful stop: the event loop may be the stuck part, and nothing is lost
    (state is in the checkpoints, offsets are committed only behind them: the same situation
    as ``kill -9``, which ``tests/test_crash_recovery.py`` shows loses nothing)."""
    log.error(
        "worker stopping with exit status %d: %s. If the broker restarted empty or the topics "
        "were deleted, the restarted worker recreates its topics and starts over from empty "
        "state; run it under a supervisor that restarts it (restart: unless-stopped, a "
        "Kubernetes Deployment). See docs/operations.md, 'A worker that loses its broker'.",
        EXIT_STALLED,
        "; ".join(verdict.reasons),
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_STALLED)


class Watchdog:
    """Probes the broker for the worker's topics and assigned partitions every ``interval``
    seconds; calls ``on_fatal`` once with the first fatal verdict."""

    def __init__(
        self,
        settings: KafkaSettings,
        progress: ProgressTracker,
        expected_ids: Mapping[str, str],
        *,
        stall_after: float,
        on_fatal: Callable[[Verdict], None] = exit_stalled,
        interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.expected_ids = dict(expected_ids)
        self.stall_after = stall_after
        self.on_fatal = on_fatal
        # every second (one describe and one list-offsets request): the sooner a lost broker is
        # seen, the fewer messages of new logs a worker with old state can take for old ones
        self.interval = interval if interval is not None else max(0.2, min(1.0, stall_after / 5))
        self.started = progress.clock()
        self._probe: Probe | None = None
        self._unreachable_since: float | None = None
        self._stop = threading.Event()
        self._fired = False
        self._checking = threading.Lock()  # the probing thread and assignment checks
        self._admin = admin_client(settings)

    def probe(self) -> Probe:
        """Ask the broker once (bounded by the interval) and remember the answer."""
        now = self.progress.clock()
        timeout = max(1.0, self.interval)
        try:
            ids = topic_ids(self._admin, self.expected_ids, timeout=timeout)
            assigned = [tp for tp in self.progress.snapshot() if tp[0] in ids]
            ends = log_end_offsets(self._admin, assigned, timeout=timeout)
        except Exception as exc:  # KafkaException, timeouts: the broker did not answer
            probe = Probe(now, error=str(exc) or type(exc).__name__)
            if self._unreachable_since is None:
                self._unreachable_since = now
        else:
            probe = Probe(now, ids, ends)
            self._unreachable_since = None
            self.progress.note_log_ends(ends)
        self._probe = probe
        return probe

    def verdict(self) -> Verdict:
        return judge(
            self.progress.snapshot(),
            self._probe,
            self.expected_ids,
            now=self.progress.clock(),
            stall_after=self.stall_after,
            unreachable_since=self._unreachable_since,
            started=self.started,
        )

    def check(self) -> Verdict:
        """One probe and its verdict; a first fatal verdict goes to ``on_fatal``."""
        with self._checking:
            self.probe()
            verdict = self.verdict()
            fire = verdict.fatal and not self._fired
            self._fired = self._fired or fire
        if fire:
            self.on_fatal(verdict)
        return verdict

    def attach(self, faust_app: Any) -> None:
        """Check also on every partition assignment, before the new partitions are fetched
        (Faust sends the signal while they are still paused): after a broker lost its data and
        another worker recreated the topics, the rejoined group hands this worker partitions of
        new logs, and its state, built from the old ones, must not see a single message of them."""

        async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
            await asyncio.to_thread(self.check)

        faust_app.on_partitions_assigned.connect(on_assigned)

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watchdog must outlive its own bugs; the verdict goes stale
                log.exception("watchdog check failed")

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="driftline-watchdog", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
