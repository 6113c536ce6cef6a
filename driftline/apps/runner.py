"""Running a driftline worker in this process, until told to stop.

``driftline worker`` runs until SIGINT/SIGTERM; ``replay`` and ``demo`` run the very same
worker and stop it once their bounded input is fully processed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import faust

from driftline.platform.broker import free_loopback_port
from driftline.platform.checkpoints import CheckpointStore
from driftline.platform.kafka import admin_client, ensure_topics, topic_ids
from driftline.platform.store.db import upgrade
from driftline.streams.app import DriftlineApp

__all__ = ["create_topics", "run_worker", "scratch_checkpoints", "web_port"]

log = logging.getLogger(__name__)

GC_GEN0_THRESHOLD = 50_000


def create_topics(app: DriftlineApp, timeout: float = 30.0) -> None:
    """Create every topic up front with its explicit partition count (Faust does not create
    source topics, and brokers that auto-create would pick their own count), then read their
    ids: checkpoints record them, and the watchdog tells by them that the broker lost its data."""
    partitions = app.topics.partitions(app.config)
    ensure_topics(app.settings, partitions, timeout=timeout)
    try:
        app.topic_ids = topic_ids(admin_client(app.settings), partitions, timeout=timeout)
    except Exception as exc:  # KafkaException: a broker without DescribeTopicPartitions / ids
        log.warning(
            "could not read the topic ids (%s): checkpoints will not record them, and neither a "
            "worker nor its restart can tell a broker that lost its data from one that did not",
            exc,
        )


def run_worker(app: DriftlineApp, *, stop: threading.Event | None = None, loglevel: str = "WARNING") -> None:
    """Run the Faust worker until SIGINT/SIGTERM or until ``stop`` is set."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(
        app.faust,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
        loop=asyncio.get_event_loop(),
    )
    # Faust's start-up spinner writes cursor escape codes even when stdout is a pipe, and on a
    # terminal it scribbles over the demo's live table: progress is shown by the callers.
    worker.spinner = None
    stopping: list[asyncio.Future[None]] = []
    if stop is not None:

        @app.faust.timer(interval=0.2)
        async def _stop_when_done() -> None:
            if stop.is_set() and not stopping:
                stopping.append(asyncio.ensure_future(worker.stop()))

    # A worker allocates many short-lived objects per message while holding long-lived state
    # (in-flight predictions, open windows). With Python's default gen-0 threshold (700) full
    # collections walk that state again and again: measured, ~25 % of a busy worker's time.
    # Rarer young collections keep cycles bounded; freezing moves start-up objects out of reach.
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def scratch_checkpoints(directory: str) -> CheckpointStore:
    """A checkpoint store in a fresh SQLite file, for bounded runs (replay, demo)."""
    url = f"sqlite:///{directory}/checkpoints.sqlite"
    upgrade(url)
    return CheckpointStore(url)


def web_port() -> int:
    """A free loopback port for Faust's web server, which binds even when disabled."""
    return free_loopback_port()
