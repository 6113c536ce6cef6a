"""Engines, sessions and schema migrations for the store.

The store URL often carries a password (``postgresql+psycopg://user:secret@host/db``), so every
message this module produces names the database through :func:`safe_url`, never the raw string.

Migrations ship inside the package (``driftline/platform/store/migrations``) and run through Alembic's
API with ``script_location`` pointing there, so an installed driftline can upgrade a database
without a checkout or an ``alembic.ini``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    """The database is not at the revision this code expects; the operator must migrate it."""


def safe_url(url: str | URL) -> str:
    """The URL with its password masked: the only spelling of a URL fit for logs and errors."""
    return make_url(url).render_as_string(hide_password=True)


def _json_dumps(value: Any) -> str:
    # JSON has no NaN or Infinity and PostgreSQL rejects them, while metrics and drift
    # statistics can legitimately be non-finite: orjson writes them as null on every backend.
    # It also accepts numpy scalars and arrays, which detectors hand out.
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine tuned per backend.

    SQLite gets WAL (readers such as the CLI do not block the worker's writes), enforced foreign
    keys (off by default in SQLite) and ``check_same_thread=False`` (the worker hands connections
    between threads; the pool serialises their use). An in-memory SQLite URL gets one shared
    connection, or every session would see its own empty database. PostgreSQL gets
    ``pool_pre_ping`` so a server restart costs one reconnect instead of one failed write.
    """
    parsed = make_url(url)
    options: dict[str, Any] = {"json_serializer": _json_dumps}
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            options["poolclass"] = StaticPool
    else:
        options["pool_pre_ping"] = True
    options.update(kwargs)
    engine = create_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose rows stay readable after commit: callers return them past the transaction."""
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(engine: Engine) -> Config:
    # The engine goes through ``attributes``, not ``sqlalchemy.url``: configparser would choke on
    # a '%' in an URL-encoded password, and the URL would sit in a config object that gets logged.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


@contextmanager
def _engine(target: str | URL | Engine) -> Iterator[Engine]:
    """Use the caller's engine as is (an in-memory SQLite database lives only as long as its
    engine), or make a short-lived one from a URL and dispose of it."""
    if isinstance(target, Engine):
        yield target
        return
    engine = make_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (``head`` by default); a no-op when already there."""
    with _engine(target) as engine:
        command.upgrade(_alembic_config(engine), revision)


def downgrade(target: str | URL | Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` drops every driftline table)."""
    with _engine(target) as engine:
        command.downgrade(_alembic_config(engine), revision)


def head_revision() -> str:
    """The revision this code's models correspond to."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:  # only possible with an empty versions folder: a packaging error
        raise RuntimeError("driftline store migrations are missing from the installation")
    return head


def current_revision(target: str | URL | Engine) -> str | None:
    """The database's revision, or None for a database that was never migrated."""
    with _engine(target) as engine, engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema(target: str | URL | Engine) -> None:
    """Refuse to run against a database that is not at head.

    Called at worker start-up: writing with new code to an old schema fails later and
    confusingly (a missing column mid-stream), and migrating implicitly from every worker at
    once would race. One explicit ``driftline db upgrade`` is the operator's decision.
    """
    current = current_revision(target)
    head = head_revision()
    url = target.url if isinstance(target, Engine) else target
    if current != head:
        found = "no driftline schema" if current is None else f"revision {current}"
        raise SchemaOutOfDate(
            f"store {safe_url(url)} has {found}, this driftline needs revision {head}: "
            "run `driftline db upgrade` (with the same store URL) before starting workers"
        )
