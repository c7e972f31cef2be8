"""Alembic environment of the run store.

:meth:`flowbuilder.store.db.Database.migrate` passes an open connection in
``config.attributes["connection"]``. Run from the ``alembic`` command line instead, the
URL is ``-x url=...``, else ``FLOWBUILDER_DATABASE_URL``, else the default SQLite file.

``render_as_batch`` makes ``ALTER``s work on SQLite (Alembic copies and renames the
table there), so future migrations run on both backends.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

from flowbuilder.store import tables  # noqa: F401  (defines the tables on SQLModel.metadata)
from flowbuilder.store.db import default_url, make_engine

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or default_url()


def run_migrations_offline() -> None:
    """Write the SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url(), foreign_keys=False, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            context.configure(
                connection=conn, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
