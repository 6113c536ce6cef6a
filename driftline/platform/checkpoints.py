"""Checkpoints of stream state in the SQL store: a partition's snapshot with the offset it covers.

The join and merge agents ack (and so let Faust commit) a message only after a checkpoint that
includes its effects has been written, and write a checkpoint only after the producer has
delivered everything those messages emitted. So after a crash the committed offset is never
past the checkpoint, the restored state plus the log from there reproduces the uninterrupted
run, and nothing emitted before the checkpoint is missing downstream.
"""

from __future__ import annotations

import time

from driftline.platform.store.db import check_schema, make_engine, session_factory
from driftline.platform.store.repository import load_checkpoint, save_checkpoint

__all__ = ["CheckpointStore"]


class CheckpointStore:
    """Named (payload, next offset) pairs, one row each."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        check_schema(self._engine)
        self._sessions = session_factory(self._engine)

    def load(self, name: str) -> tuple[bytes, int] | None:
        with self._sessions() as session:
            checkpoint = load_checkpoint(session, name)
        if checkpoint is None:
            return None
        return checkpoint.payload, int(checkpoint.offsets["next_offset"])

    def save(self, name: str, payload: bytes, next_offset: int) -> None:
        with self._sessions() as session, session.begin():
            save_checkpoint(session, name, payload, {"next_offset": next_offset}, int(time.time() * 1000))

    def close(self) -> None:
        self._engine.dispose()
