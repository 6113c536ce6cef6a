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
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from driftline.platform.store.db import check_schema, make_engine, session_factory
from driftline.platform.store.repository import load_checkpoint, save_checkpoint

__all__ = ["Checkpoint", "CheckpointStore"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    payload: bytes
    next_offset: int
    #: topic name -> id of the topics the state was built from (empty: written before ids were
    #: recorded, or by a broker without topic ids)
    topic_ids: Mapping[str, str] = field(default_factory=dict)

    def stale_for(self, current: Mapping[str, str]) -> list[str]:
        """The topics whose id differs between this checkpoint and ``current`` (both known)."""
        return sorted(
            name
            for name, recorded in self.topic_ids.items()
            if recorded and current.get(name) and current[name] != recorded
        )


class CheckpointStore:
    """Named (payload, next offset) pairs, one row each."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        check_schema(self._engine)
        self._sessions = session_factory(self._engine)

    def load(self, name: str) -> Checkpoint | None:
        with self._sessions() as session:
            row = load_checkpoint(session, name)
        if row is None:
            return None
        ids = row.offsets.get("topic_ids") or {}
        return Checkpoint(
            row.payload, int(row.offsets["next_offset"]), {str(k): str(v) for k, v in ids.items()}
        )

    def save(
        self, name: str, payload: bytes, next_offset: int, topic_ids: Mapping[str, str] | None = None
    ) -> None:
        offsets: dict[str, object] = {"next_offset": next_offset}
        if topic_ids:
            offsets["topic_ids"] = dict(topic_ids)
        with self._sessions() as session, session.begin():
            save_checkpoint(session, name, payload, offsets, int(time.time() * 1000))

    def close(self) -> None:
        self._engine.dispose()
