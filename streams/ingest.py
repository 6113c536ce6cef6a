"""Ingest: validate input messages and repartition valid events by ``prediction_id``.

Producers may key and partition however they like (batches keyed by model, kcat with
``consistent_random``, Java clients with murmur2); the join is still correct because this
stage re-routes every event to ``join-input`` partition ``xxh64(prediction_id) % N``, as Kafka
Streams does with its repartition topics. Predictions and labels of one id always meet in one
partition, and that partition's log orders them.

Bad input never stops the stream: each rejected event (a whole message, or one member of a
batch) becomes a dead-letter record that keeps the original bytes and says why in headers.

This module is pure: it turns one input message into a list of :class:`Outgoing` records and
leaves sending them to the agent.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from driftline.catalog import ModelCatalog
from driftline.config import Config
from driftline.detectors.hashing import partition_for
from driftline.schemas import (
    GroundTruthEvent,
    PredictionEvent,
    Rejection,
    decode_ground_truth,
    decode_predictions,
    encode,
)
from driftline.streams.join import MIN_WATERMARK, closing_epoch, window_shapes
from driftline.streams.messages import EndOfInput, LabelBatch, PredictionBatch, Tick, encode_internal

__all__ = [
    "CONTROL_HEADER",
    "END_OF_INPUT",
    "Headers",
    "Outgoing",
    "Router",
    "dead_letter_headers",
    "source_name",
]

Kind = Literal["predictions", "ground_truth"]
Headers = tuple[tuple[str, bytes], ...]

#: a header-only control message on an input topic: ``driftline-control: end-of-input`` ends
#: that partition for a bounded replay (every window then closes and becomes final)
CONTROL_HEADER = "driftline-control"
END_OF_INPUT = b"end-of-input"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce: to an explicit partition when ``partition`` is set."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: Headers = ()


def source_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def dead_letter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int, index: int | None
) -> Headers:
    """The dead-letter convention (docs/contracts.md): why, and where the bytes came from."""
    headers: list[tuple[str, bytes]] = [
        ("driftline-dlq-reason", reason.encode()),
        ("driftline-dlq-detail", detail.encode()[:1000]),
        ("driftline-source-topic", topic.encode()),
        ("driftline-source-partition", str(partition).encode()),
        ("driftline-source-offset", str(offset).encode()),
    ]
    if index is not None:
        headers.append(("driftline-batch-index", str(index).encode()))
    return tuple(headers)


class Router:
    """Validates, dead-letters and repartitions input messages; tracks per-source event time."""

    def __init__(self, config: Config, catalog: ModelCatalog, join_partitions: int) -> None:
        self.config = config
        self.catalog = catalog
        self.join_partitions = join_partitions
        self.join_topic = config.topics.name("internal.join-input")
        self.dead_letter_topic = config.topics.name("dead-letter")
        self.consumed: dict[str, int] = defaultdict(int)
        self.invalid: dict[tuple[str, str], int] = defaultdict(int)
        self._wm: dict[str, int] = {}
        self._ticked: dict[str, tuple[tuple[int, int], ...]] = {}
        self._shapes = window_shapes(config)
        self._last_seen: dict[str, float] = {}
        self._idle: set[str] = set()

    # -- messages ------------------------------------------------------------------------
    def route(
        self,
        kind: Kind,
        value: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        headers: Iterable[tuple[str, bytes]] | None = None,
        *,
        now: float = 0.0,
        wall_ms: float | None = None,
    ) -> list[Outgoing]:
        """Everything one input message turns into, in the order it must be produced."""
        source = source_name(topic, partition)
        self._last_seen[source] = now
        if headers and any(k == CONTROL_HEADER and v == END_OF_INPUT for k, v in headers):
            self._idle.discard(source)
            body = encode_internal(EndOfInput(source))
            return [Outgoing(self.join_topic, body, partition=p) for p in range(self.join_partitions)]
        data = value or b""
        self.consumed[topic] += 1
        limit = self.config.max_message_bytes
        decoded = (
            decode_predictions(data, max_bytes=limit)
            if kind == "predictions"
            else decode_ground_truth(data, max_bytes=limit)
        )
        out = [self._dead_letter(r, topic, partition, offset) for r in decoded.rejected]
        events: list = []
        horizon = (time.time() * 1000 if wall_ms is None else wall_ms) + self.config.max_future_skew_ms
        for index, event in enumerate(decoded.events):
            if event.timestamp > horizon:
                rejection = Rejection(
                    reason="too_far_ahead",
                    detail=f"timestamp is more than {self.config.max_future_skew_ms} ms ahead of the clock",
                    index=index if decoded.batch else None,
                    raw=data if not decoded.batch else encode(event),
                )
                out.append(self._dead_letter(rejection, topic, partition, offset))
            elif self.catalog.admit(event.model_id):
                events.append(event)
            else:
                raw = data if not decoded.batch else encode(event)
                rejection = Rejection(
                    reason="unknown_model",
                    detail=f"model {event.model_id!r} is not configured and unknown models are not admitted",
                    index=index if decoded.batch else None,
                    raw=raw,
                )
                out.append(self._dead_letter(rejection, topic, partition, offset))
        if events:
            out.extend(self._forward(kind, source, offset, events))
        elif source in self._idle:  # a sign of life that carried no valid event
            self._idle.discard(source)
            out.extend(self._ticks(source, set(), force=True))
        return out

    def _dead_letter(self, rejection: Rejection, topic: str, partition: int, offset: int) -> Outgoing:
        self.invalid[(topic, rejection.reason)] += 1
        headers = dead_letter_headers(
            rejection.reason, rejection.detail, topic, partition, offset, rejection.index
        )
        return Outgoing(self.dead_letter_topic, rejection.raw, headers=headers)

    def _forward(
        self,
        kind: Kind,
        source: str,
        offset: int,
        events: Sequence[PredictionEvent] | Sequence[GroundTruthEvent],
    ) -> list[Outgoing]:
        newest = max(e.timestamp for e in events)
        wm = self._wm[source] = max(self._wm.get(source, MIN_WATERMARK), newest)
        targets = partition_for([e.prediction_id for e in events], self.join_partitions)
        out: list[Outgoing] = []
        order = np.argsort(targets, kind="stable")
        bounds = np.flatnonzero(np.diff(targets[order])) + 1
        touched: set[int] = set()
        for chunk in np.split(order, bounds):
            jp = int(targets[chunk[0]])
            touched.add(jp)
            members = [events[i] for i in chunk.tolist()]
            message = (
                PredictionBatch(source=source, offset=offset, watermark=wm, events=members)
                if kind == "predictions"
                else LabelBatch(source=source, offset=offset, watermark=wm, events=members)
            )
            out.append(Outgoing(self.join_topic, encode_internal(message), partition=jp))
        was_idle = source in self._idle
        self._idle.discard(source)
        out.extend(self._ticks(source, touched, force=was_idle))
        return out

    def _ticks(
        self, source: str, skip: set[int], *, force: bool = False, idle: bool = False
    ) -> list[Outgoing]:
        """Tell the partitions this message skipped how far the source has got: when its event
        time crosses a boundary where some window closes (:func:`closing_epoch`; nothing
        between two boundaries can change a result), or at once after the source was idle."""
        wm = self._wm.get(source, MIN_WATERMARK)
        epoch = closing_epoch(self._shapes, wm, wm)
        if not force and epoch == self._ticked.get(source):
            return []
        self._ticked[source] = epoch
        body = encode_internal(Tick(source=source, watermark=wm, idle=idle))
        return [
            Outgoing(self.join_topic, body, partition=p) for p in range(self.join_partitions) if p not in skip
        ]

    # -- idleness ------------------------------------------------------------------------
    def idle_ticks(
        self, assigned: Iterable[tuple[str, int]], now: float, idle_after_s: float
    ) -> list[Outgoing]:
        """Mark assigned sources that sent nothing for ``idle_after_s`` as idle, so one quiet
        partition does not hold every window open. Called from a wall-clock timer: this is
        the one place where wall time enters, and it only ever *releases* windows."""
        out: list[Outgoing] = []
        for topic, partition in assigned:
            source = source_name(topic, partition)
            last = self._last_seen.setdefault(source, now)
            if source in self._idle or now - last < idle_after_s:
                continue
            self._idle.add(source)
            out.extend(self._ticks(source, set(), force=True, idle=True))
        return out
