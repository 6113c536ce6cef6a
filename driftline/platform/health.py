"""Is a worker getting anywhere? Progress per assigned partition, judged against the broker.

A worker whose broker restarted empty stays alive and busy-looking: its client reconnects,
rejoins the group, finds its topics gone and waits for ever, logging offset-commit errors, and
no supervisor restarts a process that has not exited. What tells it apart from a worker that is
merely idle is the broker's side: its topics vanished or were recreated (new topic ids), or a
partition has data waiting that the worker has not taken for a configurable time.

:class:`ProgressTracker` is fed by the stream agents (one dict write per message) and read by a
probe on another thread; :func:`judge` turns what it recorded, and what the broker said
(:class:`Probe`), into a :class:`Verdict`, on an injected clock. The worker's watchdog
(``driftline.apps.watchdog``) acts on fatal verdicts; :class:`HealthServer` serves the verdict
as ``GET /healthz`` for probes and supervisors. Nothing here talks to Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from driftline.platform.jsonhttp import JsonHandler, JsonServer

__all__ = ["HealthServer", "PartitionProgress", "Probe", "ProgressTracker", "Verdict", "judge"]

log = logging.getLogger(__name__)

Partition = tuple[str, int]


@dataclass(slots=True)
class PartitionProgress:
    """One assigned partition: when it last got anywhere, and where it is."""

    #: clock time of assignment, or of the last message processed
    since: float
    #: next offset after the last message processed (None before the first)
    position: int | None = None
    #: the log end first seen while the position was unknown: data beyond it is new data
    baseline: int | None = None


class ProgressTracker:
    """Thread-safe record of the partitions a worker holds and how far it got in each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._partitions: dict[Partition, PartitionProgress] = {}

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """The current assignment: new partitions start their clock now, revoked ones go."""
        now = self.clock()
        current = set(partitions)
        with self._lock:
            for tp in list(self._partitions):
                if tp not in current:
                    del self._partitions[tp]
            for tp in current:
                self._partitions.setdefault(tp, PartitionProgress(since=now))

    def advanced(self, topic: str, partition: int, next_offset: int) -> None:
        """A message of ``topic:partition`` was processed (the hot path: once per message)."""
        now = self.clock()
        with self._lock:
            progress = self._partitions.get((topic, partition))
            if progress is None:
                self._partitions[(topic, partition)] = PartitionProgress(now, next_offset)
            else:
                progress.since, progress.position = now, next_offset

    def note_log_ends(self, log_ends: Mapping[Partition, int]) -> None:
        """Remember the first log end seen for partitions with no position yet."""
        with self._lock:
            for tp, progress in self._partitions.items():
                if progress.position is None and progress.baseline is None and tp in log_ends:
                    progress.baseline = log_ends[tp]

    def snapshot(self) -> dict[Partition, PartitionProgress]:
        with self._lock:
            return {
                tp: PartitionProgress(p.since, p.position, p.baseline) for tp, p in self._partitions.items()
            }


@dataclass(frozen=True, slots=True)
class Probe:
    """What the broker answered at clock time ``at``; ``error`` set when it did not answer."""

    at: float
    #: topic name -> id, for the worker's topics that exist ("" from a broker without ids)
    topic_ids: Mapping[str, str] = field(default_factory=dict)
    log_ends: Mapping[Partition, int] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """``healthy`` or not, why not, and whether waiting can help: a ``fatal`` verdict means only
    a restart recovers (the watchdog exits), a merely unhealthy one fails health probes."""

    healthy: bool
    reasons: tuple[str, ...] = ()
    fatal: bool = False
    partitions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The JSON body of ``GET /healthz``."""
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "reasons": list(self.reasons),
            "partitions": {name: dict(p) for name, p in sorted(self.partitions.items())},
        }


def judge(
    progress: Mapping[Partition, PartitionProgress],
    probe: Probe | None,
    expected_ids: Mapping[str, str],
    *,
    now: float,
    stall_after: float,
    unreachable_since: float | None = None,
    started: float = 0.0,
) -> Verdict:
    """The verdict on a worker at ``now``.

    Fatal: one of the topics the worker started with is gone or has a new id (the broker lost
    its data: the worker's offsets and checkpoints belong to logs that no longer exist); an
    assigned partition has had data waiting beyond its position and made no progress for
    ``stall_after`` seconds; the broker has not answered for ``stall_after`` seconds.
    Unhealthy, not fatal: no probe for ``stall_after`` seconds (the probe itself is stuck).
    """
    reasons: list[str] = []
    fatal = False
    if probe is not None and not probe.error:
        missing = sorted(name for name in expected_ids if name not in probe.topic_ids)
        if missing:
            everything = (
                " (all of them: the broker restarted empty?)" if len(missing) == len(expected_ids) > 1 else ""
            )
            noun = "topic" if len(missing) == 1 else "topics"
            verb = "no longer exists" if len(missing) == 1 else "no longer exist"
            reasons.append(f"{noun} {', '.join(missing)} {verb} on the broker{everything}")
            fatal = True
        for name, expected in sorted(expected_ids.items()):
            if name in missing:
                continue
            if expected and probe.topic_ids[name] and probe.topic_ids[name] != expected:
                reasons.append(
                    f"topic {name} was recreated (topic id {expected} is now {probe.topic_ids[name]})"
                )
                fatal = True
    if unreachable_since is not None and now - unreachable_since >= stall_after:
        error = f": {probe.error}" if probe is not None and probe.error else ""
        reasons.append(f"the broker has not answered for {now - unreachable_since:.0f} s{error}")
        fatal = True
    last_probe = probe.at if probe is not None else started
    if now - last_probe >= stall_after and unreachable_since is None:
        reasons.append(f"no broker probe for {now - last_probe:.0f} s")
    partitions: dict[str, dict[str, Any]] = {}
    log_ends = probe.log_ends if probe is not None else {}
    for (topic, partition), p in sorted(progress.items()):
        log_end = log_ends.get((topic, partition))
        reference = p.position if p.position is not None else p.baseline
        waiting = log_end is not None and reference is not None and log_end > reference
        idle = max(0.0, now - p.since)
        stalled = waiting and idle >= stall_after
        partitions[f"{topic}:{partition}"] = {
            "position": p.position,
            "log_end": log_end,
            "seconds_since_progress": round(idle, 3),
            "stalled": stalled,
        }
        if stalled:
            reasons.append(
                f"partition {topic}:{partition} made no progress for {idle:.0f} s with data waiting "
                f"(position {reference}, log end {log_end})"
            )
            fatal = True
    return Verdict(not reasons, tuple(reasons), fatal, partitions)


class HealthServer(JsonServer):
    """``GET /healthz``: 200 with ``{"status": "ok"}`` or 503 with the reasons; nothing else.
    ``check`` is called per request, so the answer is as fresh as the last probe."""

    thread_name = "driftline-health"

    def __init__(self, address: tuple[str, int], check: Callable[[], Verdict]) -> None:
        self.check = check
        super().__init__(address, _Handler)


class _Handler(JsonHandler):
    server: HealthServer
    server_version = "driftline-health"
    label = "health server"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/healthz":
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found", "endpoints": ["/healthz"]})
            return
        try:
            verdict = self.server.check()
        except Exception:  # a broken check must read as unhealthy, not as a dropped connection
            log.exception("health check failed")
            verdict = Verdict(False, ("the health check itself failed (see the worker's log)",))
        status = HTTPStatus.OK if verdict.healthy else HTTPStatus.SERVICE_UNAVAILABLE
        self.send_json(status, verdict.document())
