"""Checkpoints of stream state in the SQL store: a partition's snapshot with the offset it covers.

The join and merge agents ack (and so let Faust commit) a message only after a checkpoint that
includes its effects has been written, and write a checkpoint only after the producer has
delivered everything those messages emitted. So after a crash the committed offset is never
past the checkpoint, the restored state plus the log from there reproduces the uninterrupted
run, and nothing emitted before the checkpoint is missing downstream.

Offsets only mean something in the log they were read from. Each checkpoint therefore records
the ids of the topics its state was built from (``topic_ids``); a broker that lost its data
serves new logs under the old names, with new ids and offsets from 0 again, and a checkpoint
from the old ones must be discarded (loudly), not restored: restoring it would skip the new
log's first offsets as "already applied" (:meth:`Checkpoint.stale_for`).

A checkpoint is a chain: a base (the whole state) and the deltas written after it (what changed
since the write before), each write one transaction. A kill at any point therefore leaves
base + the deltas that committed, whose last ``next_offset`` is the one their content reaches.
The chain is compacted into a new base once its deltas outweigh the base or number
``max_deltas``, so a restore reads at most about twice the state. Writes go through one
thread of their own (:meth:`CheckpointStore.write`), so a commit does not stall the event loop;
the agents still ack only after it returned.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from driftline.platform.store.db import check_schema, make_engine, session_factory
from driftline.platform.store.repository import append_checkpoint_delta, load_checkpoint, save_checkpoint

__all__ = ["MAX_DELTAS", "Checkpoint", "CheckpointStore"]

#: deltas a chain may grow to before the next write is a base
MAX_DELTAS = 32


@dataclass(frozen=True, slots=True)
class Checkpoint:
    payload: bytes
    next_offset: int
    #: topic name -> id of the topics the state was built from (empty: written before ids were
    #: recorded, or by a broker without topic ids)
    topic_ids: Mapping[str, str] = field(default_factory=dict)
    #: the chain's deltas after the base ``payload``, in order (``restore(payload, deltas)``)
    deltas: Sequence[bytes] = ()

    def stale_for(self, current: Mapping[str, str]) -> list[str]:
        """The topics whose id differs between this checkpoint and ``current`` (both known)."""
        return sorted(
            name
            for name, recorded in self.topic_ids.items()
            if recorded and current.get(name) and current[name] != recorded
        )


@dataclass(slots=True)
class _Chain:
    """Where this store's last write or load of a name left its chain."""

    chain: str
    seq: int
    base_bytes: int
    delta_bytes: int = 0


class CheckpointStore:
    """Named checkpoint chains (a base and its deltas) with the offset they cover."""

    def __init__(self, url: str, *, max_deltas: int = MAX_DELTAS) -> None:
        if max_deltas < 0:
            raise ValueError(f"max_deltas must be at least 0, got {max_deltas}")
        self._engine = make_engine(url)
        check_schema(self._engine)
        self._sessions = session_factory(self._engine)
        self.max_deltas = max_deltas
        self._chains: dict[str, _Chain] = {}
        #: one thread: writes of one worker commit in the order they were asked for
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoints")

    def load(self, name: str) -> Checkpoint | None:
        with self._sessions() as session:
            row = load_checkpoint(session, name)
        if row is None:
            self._chains.pop(name, None)
            return None
        if row.chain is None:  # written before chains (or by save without one): a base next
            self._chains.pop(name, None)
        else:
            self._chains[name] = _Chain(
                row.chain, len(row.deltas), len(row.payload), sum(map(len, row.deltas))
            )
        ids = row.offsets.get("topic_ids") or {}
        return Checkpoint(
            row.payload,
            int(row.offsets["next_offset"]),
            {str(k): str(v) for k, v in ids.items()},
            row.deltas,
        )

    def wants_base(self, name: str) -> bool:
        """Whether the next write of ``name`` must be a whole state: nothing of it written or
        loaded here, or its chain has grown past its bound (deltas outweigh the base, or
        ``max_deltas`` of them)."""
        at = self._chains.get(name)
        return at is None or at.seq >= self.max_deltas or at.delta_bytes > at.base_bytes

    def save(
        self, name: str, payload: bytes, next_offset: int, topic_ids: Mapping[str, str] | None = None
    ) -> None:
        """Write a base (the whole state): a new chain, the old one's deltas gone with it."""
        chain = uuid.uuid4().hex
        self._chains.pop(name, None)
        with self._sessions() as session, session.begin():
            save_checkpoint(session, name, payload, _offsets(next_offset, topic_ids), _now_ms(), chain)
        self._chains[name] = _Chain(chain, 0, len(payload))

    def save_delta(
        self, name: str, payload: bytes, next_offset: int, topic_ids: Mapping[str, str] | None = None
    ) -> bool:
        """Append a delta to the chain this store last wrote or loaded; False (nothing written)
        when that chain is no longer the stored one: write a base then."""
        at = self._chains.pop(name, None)  # back only once written: a failed write means a base next
        if at is None:
            return False
        with self._sessions() as session, session.begin():
            done = append_checkpoint_delta(
                session, name, at.chain, at.seq + 1, payload, _offsets(next_offset, topic_ids), _now_ms()
            )
        if done:
            self._chains[name] = _Chain(at.chain, at.seq + 1, at.base_bytes, at.delta_bytes + len(payload))
        return done

    async def write(
        self,
        name: str,
        payload: bytes,
        next_offset: int,
        topic_ids: Mapping[str, str] | None = None,
        *,
        delta: bool,
    ) -> bool:
        """:meth:`save_delta` (``delta``) or :meth:`save` on the writer thread, awaited: the
        commit waits on the disk or the server without holding the event loop. True when
        written (a base always is)."""
        loop = asyncio.get_running_loop()
        if delta:
            return await loop.run_in_executor(
                self._writer, self.save_delta, name, payload, next_offset, topic_ids
            )
        await loop.run_in_executor(self._writer, self.save, name, payload, next_offset, topic_ids)
        return True

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._engine.dispose()


def _offsets(next_offset: int, topic_ids: Mapping[str, str] | None) -> dict[str, object]:
    offsets: dict[str, object] = {"next_offset": next_offset}
    if topic_ids:
        offsets["topic_ids"] = dict(topic_ids)
    return offsets


def _now_ms() -> int:
    return int(time.time() * 1000)
