"""Alembic environment for the driftline store.

Run through :mod:`driftline.platform.store.db` (``driftline db upgrade``), which passes a ready engine in
``config.attributes["engine"]`` so the database URL, and any password in it, never passes
through Alembic's config or logs. Only online mode is supported: offline SQL scripts would have
to be kept portable by hand for two dialects.
"""

from __future__ import annotations

from alembic import context
from alembic.config import Config
from sqlalchemy import Engine

from driftline.platform.store.models import Base


def run_migrations(config: Config) -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        raise RuntimeError(
            "run driftline migrations through driftline.platform.store.db (driftline db upgrade)"
        )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds the table instead, so later
            # revisions written with op.batch_alter_table work on both backends.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


# Alembic executes this file with its context set up; a plain import (a doctest collector,
# a documentation tool) has no context and must not fail.
if hasattr(context, "config"):
    run_migrations(context.config)
