"""The store's database: where it is, its engine, its transactions and its migrations.

SQLite by default (``FLOWBUILDER_HOME/flowbuilder.db``, created with mode 0600 and so its
``-wal``/``-shm`` files, see :func:`flowbuilder.datadir.private_sqlite`) or PostgreSQL when
``FLOWBUILDER_DATABASE_URL`` (read through :class:`~flowbuilder.settings.Settings`) or the
``url`` argument names one, e.g. ``postgresql+psycopg://user:password@host:5432/flowbuilder``.

On SQLite every connection uses WAL mode, a busy timeout and ``BEGIN IMMEDIATE`` for
writes, so writers from several threads or processes wait for each other instead of
failing with "database is locked". The schema is managed by Alembic
(``flowbuilder/migrations``, see :meth:`Database.migrate`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel

from flowbuilder.datadir import private_sqlite
from flowbuilder.settings import Settings
from flowbuilder.store.errors import NotFound

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long an SQLite connection waits for another writer's lock before failing."""
MIGRATIONS = Path(__file__).parent.parent / "migrations"
"""Alembic's script location (``flowbuilder/migrations``)."""
_PG_MIGRATION_LOCK = 0x666C6F77  # "flow": the advisory lock key held while migrating
_MIGRATE_LOCK = threading.Lock()

M = TypeVar("M", bound=SQLModel)


def default_url() -> str:
    """``FLOWBUILDER_DATABASE_URL``, else SQLite in the data directory (created)."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings.database_url
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'flowbuilder.db'}"


def make_engine(url: str | sa.URL, *, foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """An SQLAlchemy engine configured as the store needs it (``kwargs`` go to
    :func:`sqlalchemy.create_engine`).

    On SQLite every connection gets WAL mode, a busy timeout and ``foreign_keys``; the
    driver's own transaction handling is replaced by explicit ``BEGIN`` (or ``BEGIN
    IMMEDIATE`` on connections with the ``flowbuilder_write`` execution option), so a
    write transaction takes the write lock up front and waits for it instead of failing
    when it later tries to upgrade a read lock. A database file is created private (mode
    0600) before SQLite opens it.
    """
    url = sa.make_url(url)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)  # survive a database server restart
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        if db and db != ":memory:" and not db.startswith("file:"):
            private_sqlite(Path(db).expanduser())  # mode 0600, and so its -wal and -shm

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see "begin")
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
                cur.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            finally:
                cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            write = conn.get_execution_options().get("flowbuilder_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def alembic_config(connection: sa.Connection | None = None) -> Any:
    """Alembic's configuration of the store (no ``alembic.ini``): the script location
    and, when given, the open ``connection`` that ``env.py`` migrates."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def require(
    s: Session, model: type[M], key: Any, kind: str, name: str | None = None, *, lock: bool = False
) -> M:
    """The ``model`` record with primary key ``key`` in session ``s``; with ``lock``, its
    row stays locked until the transaction ends (``SELECT … FOR UPDATE`` on PostgreSQL).

    Raises:
        NotFound: no such record, named ``kind`` and ``name`` (default: ``key``).
    """
    found = s.get(model, key, with_for_update=True if lock else None)
    if found is None:
        raise NotFound(kind, str(key) if name is None else name)
    return found


class Database:
    """One database and its connection pool, shared by the store's parts.

    Args:
        url: an SQLAlchemy URL (``sqlite:///path.db``,
            ``postgresql+psycopg://user:password@host/db``); default :func:`default_url`.

    :meth:`read` and :meth:`write` give a new session in one transaction at each call, so
    one database serves every thread; the records a session loads stay usable after it
    ends (``expire_on_commit=False``).
    """

    def __init__(self, url: str | sa.URL | None = None) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self.write_engine = self.engine.execution_options(flowbuilder_write=True)
        """The same pool; its transactions take the write lock up front (SQLite)."""

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session in one read transaction."""
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction: committed when the block ends, rolled back
        when it raises, so no half-written record is ever seen."""
        with Session(self.write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    def migrate(self) -> None:
        """Run ``alembic upgrade head``: create or update the tables; a no-op when current.

        All migrations run in one transaction that holds the database's write lock
        (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so processes starting
        together migrate once, one after the other. On SQLite foreign keys are off while
        migrating (Alembic's batch mode recreates tables to alter them, which would
        otherwise cascade deletes).
        """
        from alembic import command

        engine = make_engine(self.url, foreign_keys=False, poolclass=NullPool)
        writer = engine.execution_options(flowbuilder_write=True)
        try:
            # Alembic's context and op are module globals: one migration per process at once.
            with _MIGRATE_LOCK, writer.connect() as conn, conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                command.upgrade(alembic_config(conn), "head")
        finally:
            engine.dispose()


__all__ = [
    "MIGRATIONS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Database",
    "alembic_config",
    "default_url",
    "make_engine",
    "require",
]
