"""The run store: saved flows and their versions, runs and their events, API keys.

SQLModel tables on SQLite by default (``FLOWBUILDER_HOME/flowbuilder.db``) or on
PostgreSQL when ``FLOWBUILDER_DATABASE_URL`` (or the ``url`` argument) names one, e.g.
``postgresql+psycopg://user:password@host:5432/flowbuilder``. The schema is managed by
Alembic (``flowbuilder/migrations``); :class:`Store` brings it up to date when opened.

Tables:

- ``flows``: id (12 hex digits), name, graph (the graph file as JSON), created_at,
  updated_at, published, version (the current version number, 1, 2, …).
- ``flow_versions``: (flow_id, version) → graph, created_at. Every save that changes the
  graph adds one; restoring an old version adds a new one equal to it.
- ``runs``: id (the scheduler's ``run_id``), flow_id and flow_version (null for a graph
  run from a file; flow_id becomes null when the flow is deleted), source (``canvas``, ``api``,
  ``cli``, …), status (see :data:`RUN_STATUSES`), inputs, outputs, error, failed_node,
  created_at, started_at, finished_at, elapsed_s; and for the run queue shared by several
  servers: owner (the id of the server executing it; null while it waits), heartbeat_at
  (when the owner last said it is alive), cancel_requested (set by any server, acted on by
  the owner) and payload (what another server needs to start it: the graph and bound
  inputs; cleared when the run ends). See :meth:`Store.claim_runs`.
- ``node_runs``: (run_id, node_id) → node_type, status (see :data:`NODE_STATUSES`),
  started_at, finished_at, elapsed_s, error (or the reason a node was skipped or
  cancelled), cached, attempts, outputs (a small summary, when known).
- ``run_events``: (run_id, seq) → type, data: the run's event stream (see
  :mod:`flowbuilder.events`) minus streamed tokens, so a Server-Sent Events client can
  resume after ``Last-Event-ID``.
- ``api_keys``: id, name, prefix (the first 8 characters, shown to users), key_hash
  (SHA-256 hex of the key; the key itself is never stored), created_at, revoked_at,
  last_used_at.

Every method is synchronous, thread-safe (one engine per store, one session and one
transaction per call) and returns detached records. On SQLite the store uses WAL mode, a
busy timeout and ``BEGIN IMMEDIATE`` for writes, so writers from several threads or
processes wait for each other instead of failing with "database is locked".

Typical use::

    store = Store()
    flow = store.create_flow("Voice memo", graph.to_dict())
    store.create_run(run_id, flow_id=flow.id, source="canvas", inputs={"audio": "memo.ogg"})
    result = await engine.run(graph, inputs, run_id=run_id,
                              listeners=[store.recorder(run_id)])
    store.save_result(result)          # full outputs (events carry summaries only)
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Field, Session, SQLModel, col, select

from flowbuilder import events
from flowbuilder.datadir import private_sqlite
from flowbuilder.errors import FlowbuilderError
from flowbuilder.graph import Graph
from flowbuilder.settings import Settings
from flowbuilder.types import summarise, to_jsonable

if TYPE_CHECKING:
    from flowbuilder.scheduler import RunResult

RUN_STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
"""A run's status: ``queued`` and ``running`` are live, the others final."""
LIVE_RUN_STATUSES = ("queued", "running")
NODE_STATUSES = ("queued", "running", "done", "cached", "failed", "skipped", "cancelled")
"""A node run's status (``done`` ran, ``cached`` was served from the cache)."""

API_KEY_PREFIX = "fb_"
"""Every API key starts with this, so leaked keys are easy to recognise and scan for."""
LAST_USED_RESOLUTION_S = 60.0
"""``api_keys.last_used_at`` is written at most once a minute per key (one write per
request would make every API call a database write)."""
PROGRESS_INTERVAL_S = 0.25
"""The recorder keeps at most one ``node_progress`` event per node per this many seconds
(plus the first and the one reaching fraction 1.0); the stream itself is not throttled."""
SQLITE_BUSY_TIMEOUT_MS = 30_000
_PG_MIGRATION_LOCK = 0x666C6F77  # "flow": the advisory lock key held while migrating
_MIGRATE_LOCK = threading.Lock()

INTERRUPTED_ERROR = "interrupted: the process running it stopped before the run finished"
RUN_STALE_S = 10.0
"""A live run whose owner's heartbeat is older than this many seconds is taken over
(see :meth:`Store.recover_runs`)."""
FINAL_RUN_STATUSES = tuple(s for s in RUN_STATUSES if s not in LIVE_RUN_STATUSES)


# ---- errors -------------------------------------------------------------------------


class NotFound(FlowbuilderError):
    """A flow, flow version, run or API key that does not exist.

    ``kind`` is ``flow``, ``flow version``, ``run`` or ``API key``; ``key`` the id asked for.
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"{kind} '{key}' not found")


class AlreadyExists(FlowbuilderError):
    """A record with this id exists already (e.g. a second run with the same run_id)."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"{kind} '{key}' already exists")


# ---- column types ---------------------------------------------------------------------


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamp with time zone``; SQLite keeps no zone, so values are
    stored as naive UTC and given ``tzinfo=UTC`` back when read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store aware (UTC) datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable))


def _json(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.JSON(), nullable=nullable))


# ---- tables (keep flowbuilder/migrations/versions in step) ------------------------------

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names, so that later migrations can drop or alter them (on SQLite too)."""
SQLModel.metadata.naming_convention = NAMING_CONVENTION


class Flow(SQLModel, table=True):
    """A saved flow: its current graph and version number."""

    __tablename__ = "flows"

    id: str = Field(primary_key=True)
    name: str
    graph: dict[str, Any] = _json(nullable=False)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = Field(
        default=None, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True)
    )
    published: bool = False
    version: int = 1


class FlowVersion(SQLModel, table=True):
    """One saved version of a flow's graph."""

    __tablename__ = "flow_versions"

    flow_id: str = Field(foreign_key="flows.id", ondelete="CASCADE", primary_key=True)
    version: int = Field(primary_key=True)
    graph: dict[str, Any] = _json(nullable=False)
    created_at: datetime = _ts(nullable=False)


class Run(SQLModel, table=True):
    """One run of a graph, from any source."""

    __tablename__ = "runs"
    __table_args__ = (
        sa.Index("ix_runs_created_at", "created_at"),
        sa.Index("ix_runs_flow_id_created_at", "flow_id", "created_at"),
        sa.Index("ix_runs_status", "status"),
    )

    id: str = Field(primary_key=True)
    flow_id: str | None = Field(default=None, foreign_key="flows.id", ondelete="SET NULL")
    flow_version: int | None = None
    source: str
    status: str = "queued"
    inputs: dict[str, Any] = _json(nullable=False)
    outputs: dict[str, Any] | None = _json()
    error: str | None = Field(default=None, sa_type=sa.Text())
    failed_node: str | None = None
    created_at: datetime = _ts(nullable=False)
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    elapsed_s: float | None = None
    owner: str | None = None
    heartbeat_at: datetime | None = _ts()
    cancel_requested: bool = Field(
        default=False,
        sa_column=sa.Column(sa.Boolean(), nullable=False, default=False, server_default=sa.false()),
    )
    payload: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(sa.JSON(none_as_null=True), nullable=True)
    )  # None is SQL NULL (not JSON null): "payload IS NULL" finds runs without one


class NodeRun(SQLModel, table=True):
    """What one node did in one run."""

    __tablename__ = "node_runs"

    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE", primary_key=True)
    node_id: str = Field(primary_key=True)
    node_type: str
    status: str = "queued"
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    elapsed_s: float | None = None
    error: str | None = Field(default=None, sa_type=sa.Text())
    cached: bool = False
    attempts: int = 0
    outputs: dict[str, Any] | None = _json()


class RunEvent(SQLModel, table=True):
    """One recorded event of a run; ``data`` is the event's JSON form."""

    __tablename__ = "run_events"

    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE", primary_key=True)
    seq: int = Field(primary_key=True)
    type: str
    data: dict[str, Any] = _json(nullable=False)


class ApiKey(SQLModel, table=True):
    """An API key's record. The key itself is never stored, only its SHA-256."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True)
    name: str
    prefix: str
    key_hash: str = Field(unique=True)
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = _ts()
    last_used_at: datetime | None = _ts()

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


# ---- helpers ------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data: artifact refs and other models as dicts
    (:func:`~flowbuilder.types.to_jsonable`), non-finite floats, bytes and other objects
    as strings (PostgreSQL's ``json`` refuses NaN)."""
    value = to_jsonable(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return summarise(repr(value))


def _summary(outputs: dict[str, Any]) -> dict[str, Any]:
    """A node's outputs, small: long text cut, long lists shortened (see ``summarise``)."""
    return {str(k): _plain(summarise(v)) for k, v in outputs.items()}


def _graph_data(graph: dict[str, Any] | Graph) -> dict[str, Any]:
    if isinstance(graph, Graph):
        return graph.to_dict()
    if not isinstance(graph, dict):
        raise TypeError(f"a graph is a dict or a Graph, not {type(graph).__name__}")
    # a JSON round trip: a private copy of plain JSON data, and non-JSON values fail here
    data: dict[str, Any] = json.loads(json.dumps(graph))
    return data


def default_url() -> str:
    """``FLOWBUILDER_DATABASE_URL``, else SQLite in the data directory (created)."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings.database_url
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'flowbuilder.db'}"


def make_engine(url: str | sa.URL, *, foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """An SQLAlchemy engine configured as the store needs it.

    On SQLite every connection gets WAL mode, a busy timeout and ``foreign_keys``; the
    driver's own transaction handling is replaced by explicit ``BEGIN`` (or ``BEGIN
    IMMEDIATE`` on connections with the ``flowbuilder_write`` execution option), so a
    write transaction takes the write lock up front and waits for it instead of failing
    when it later tries to upgrade a read lock.
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


def _alembic_config(connection: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


# ---- the store ----------------------------------------------------------------------


class Store:
    """Flows, versions, runs, events and API keys in one database.

    Args:
        url: an SQLAlchemy URL (``sqlite:///path.db``,
            ``postgresql+psycopg://user:password@host/db``); default :func:`default_url`.
        migrate: bring the schema up to date now (see :meth:`migrate`).

    Use one store per process (it holds a connection pool); :meth:`close` releases it.
    """

    def __init__(self, url: str | sa.URL | None = None, *, migrate: bool = True) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self._write_engine = self.engine.execution_options(flowbuilder_write=True)
        if migrate:
            self.migrate()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                command.upgrade(_alembic_config(conn), "head")
        finally:
            engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back when
        it raises, so no half-written record is ever seen."""
        with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    # ---- flows ------------------------------------------------------------------------

    def create_flow(self, name: str, graph: dict[str, Any] | Graph) -> Flow:
        """Save a new flow (version 1) and return it.

        Raises:
            TypeError: ``graph`` is not JSON data.
        """
        data, now = _graph_data(graph), _now()
        flow = Flow(id=_new_id(), name=name, graph=data, created_at=now, updated_at=now)
        with self._write() as s:
            s.add(flow)
            s.add(FlowVersion(flow_id=flow.id, version=1, graph=data, created_at=now))
        return flow

    def list_flows(self, *, published: bool | None = None) -> list[Flow]:
        """Every flow (or only published / unpublished ones), most recently updated first."""
        query = select(Flow).order_by(col(Flow.updated_at).desc(), col(Flow.id))
        if published is not None:
            query = query.where(col(Flow.published) == published)
        with self._read() as s:
            return list(s.exec(query).all())

    def get_flow(self, flow_id: str) -> Flow:
        """Raises: NotFound."""
        with self._read() as s:
            flow = s.get(Flow, flow_id)
            if flow is None:
                raise NotFound("flow", flow_id)
            return flow

    def _locked_flow(self, s: Session, flow_id: str) -> Flow:
        flow = s.exec(select(Flow).where(col(Flow.id) == flow_id).with_for_update()).first()
        if flow is None:
            raise NotFound("flow", flow_id)
        return flow

    def _set_graph(self, s: Session, flow: Flow, data: dict[str, Any], now: datetime) -> bool:
        if data == flow.graph:
            return False
        flow.version += 1
        flow.graph = data
        flow.updated_at = now
        s.add(flow)
        s.add(FlowVersion(flow_id=flow.id, version=flow.version, graph=data, created_at=now))
        return True

    def save_flow(
        self, flow_id: str, graph: dict[str, Any] | Graph, name: str | None = None
    ) -> Flow:
        """Save a flow's graph (and optionally its name); return the flow.

        A new version is made only when the graph differs from the current one (compared
        as JSON data, so key order does not count).

        Raises:
            NotFound: no such flow.
        """
        data, now = _graph_data(graph), _now()
        with self._write() as s:
            flow = self._locked_flow(s, flow_id)
            self._set_graph(s, flow, data, now)
            if name is not None and name != flow.name:
                flow.name, flow.updated_at = name, now
                s.add(flow)
            return flow

    def rename_flow(self, flow_id: str, name: str) -> Flow:
        """Raises: NotFound."""
        with self._write() as s:
            flow = self._locked_flow(s, flow_id)
            if name != flow.name:
                flow.name, flow.updated_at = name, _now()
                s.add(flow)
            return flow

    def duplicate_flow(self, flow_id: str, name: str | None = None) -> Flow:
        """A new, unpublished flow (version 1) with the same graph; named
        "<name> (copy)" unless ``name`` is given.

        Raises:
            NotFound: no such flow.
        """
        now = _now()
        with self._write() as s:
            src = s.get(Flow, flow_id)
            if src is None:
                raise NotFound("flow", flow_id)
            data = _graph_data(src.graph)
            flow = Flow(
                id=_new_id(),
                name=name if name is not None else f"{src.name} (copy)",
                graph=data,
                created_at=now,
                updated_at=now,
            )
            s.add(flow)
            s.add(FlowVersion(flow_id=flow.id, version=1, graph=data, created_at=now))
            return flow

    def delete_flow(self, flow_id: str) -> None:
        """Delete a flow and its versions. Its runs are kept, with ``flow_id`` set to null.

        Raises:
            NotFound: no such flow.
        """
        with self._write() as s:
            flow = self._locked_flow(s, flow_id)
            s.exec(sa.update(Run).where(col(Run.flow_id) == flow_id).values(flow_id=None))
            s.exec(sa.delete(FlowVersion).where(col(FlowVersion.flow_id) == flow_id))
            s.delete(flow)

    def set_published(self, flow_id: str, published: bool) -> Flow:
        """Publish a flow (serve it as an HTTP endpoint) or take it back.

        Raises:
            NotFound: no such flow.
        """
        with self._write() as s:
            flow = self._locked_flow(s, flow_id)
            if flow.published != published:
                flow.published, flow.updated_at = published, _now()
                s.add(flow)
            return flow

    def list_versions(self, flow_id: str) -> list[FlowVersion]:
        """A flow's versions, newest first.

        Raises:
            NotFound: no such flow.
        """
        with self._read() as s:
            if s.get(Flow, flow_id) is None:
                raise NotFound("flow", flow_id)
            query = (
                select(FlowVersion)
                .where(col(FlowVersion.flow_id) == flow_id)
                .order_by(col(FlowVersion.version).desc())
            )
            return list(s.exec(query).all())

    def get_version(self, flow_id: str, version: int) -> FlowVersion:
        """Raises: NotFound (naming the flow version, e.g. ``flow version 'ab12…@3'``)."""
        with self._read() as s:
            found = s.get(FlowVersion, (flow_id, version))
            if found is None:
                raise NotFound("flow version", f"{flow_id}@{version}")
            return found

    def restore_version(self, flow_id: str, version: int) -> Flow:
        """Make an old version current again, as a new version with the same graph
        (history is never rewritten). Restoring a graph equal to the current one changes
        nothing, as with :meth:`save_flow`.

        Raises:
            NotFound: no such flow or version.
        """
        with self._write() as s:
            flow = self._locked_flow(s, flow_id)
            old = s.get(FlowVersion, (flow_id, version))
            if old is None:
                raise NotFound("flow version", f"{flow_id}@{version}")
            self._set_graph(s, flow, _graph_data(old.graph), _now())
            return flow

    # ---- runs -------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        flow_id: str | None = None,
        flow_version: int | None = None,
        source: str,
        inputs: dict[str, Any] | None = None,
        owner: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Run:
        """Record a queued run. ``flow_version`` defaults to the flow's current version.
        ``inputs`` are stored as plain JSON (artifact refs as dicts).

        ``owner`` is the id of the server that executes the run at once (its heartbeat
        starts now); without one, a run with a ``payload`` (plain JSON: whatever a server
        needs to start it, see ``server.runs``) waits in the queue for
        :meth:`claim_runs`.

        Raises:
            NotFound: ``flow_id`` names no flow.
            AlreadyExists: a run with this id exists.
        """
        now = _now()
        run = Run(
            id=run_id,
            flow_id=flow_id,
            flow_version=flow_version,
            source=source,
            status="queued",
            inputs=_plain(inputs or {}),
            created_at=now,
            owner=owner,
            heartbeat_at=now if owner is not None else None,
            payload=_plain(payload) if payload is not None else None,
        )
        with self._write() as s:
            if s.get(Run, run_id) is not None:
                raise AlreadyExists("run", run_id)
            if flow_id is not None:
                flow = s.get(Flow, flow_id)
                if flow is None:
                    raise NotFound("flow", flow_id)
                if flow_version is None:
                    run.flow_version = flow.version
            s.add(run)
        return run

    def get_run(self, run_id: str) -> Run:
        """Raises: NotFound."""
        with self._read() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound("run", run_id)
            return run

    def list_runs(
        self,
        flow_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
    ) -> list[Run]:
        """Runs, newest first, optionally of one flow and/or with one status."""
        query = select(Run).order_by(col(Run.created_at).desc(), col(Run.id).desc())
        if flow_id is not None:
            query = query.where(col(Run.flow_id) == flow_id)
        if status is not None:
            query = query.where(col(Run.status) == status)
        with self._read() as s:
            return list(s.exec(query.offset(offset).limit(limit)).all())

    def count_runs(self, flow_id: str | None = None, *, status: str | None = None) -> int:
        """How many runs :meth:`list_runs` would page through."""
        query = select(sa.func.count()).select_from(Run)
        if flow_id is not None:
            query = query.where(col(Run.flow_id) == flow_id)
        if status is not None:
            query = query.where(col(Run.status) == status)
        with self._read() as s:
            return int(s.exec(query).one())

    def delete_run(self, run_id: str) -> None:
        """Delete a run with its node runs and events.

        Raises:
            NotFound: no such run.
        """
        with self._write() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound("run", run_id)
            s.exec(sa.delete(RunEvent).where(col(RunEvent.run_id) == run_id))
            s.exec(sa.delete(NodeRun).where(col(NodeRun.run_id) == run_id))
            s.delete(run)

    def node_runs(self, run_id: str) -> list[NodeRun]:
        """A run's node runs, in the order they started (unstarted ones last).

        Raises:
            NotFound: no such run.
        """
        with self._read() as s:
            if s.get(Run, run_id) is None:
                raise NotFound("run", run_id)
            query = (
                select(NodeRun)
                .where(col(NodeRun.run_id) == run_id)
                .order_by(col(NodeRun.started_at).is_(None), col(NodeRun.started_at))
            )
            return list(s.exec(query).all())

    def recorder(self, run_id: str) -> RunRecorder:
        """An event listener that records a run as it happens: pass it to
        ``Engine.run(..., run_id=run_id, listeners=[store.recorder(run_id)])``.

        Raises:
            NotFound: no such run (call :meth:`create_run` first).
        """
        self.get_run(run_id)
        return RunRecorder(self, run_id)

    def save_result(self, result: RunResult) -> Run:
        """Store a finished run's :class:`~flowbuilder.scheduler.RunResult`: its full
        outputs (events carry summaries: long text cut, long lists shortened), its status
        and every node's final status — including nodes cancelled mid-run, which emit no
        event — and, when the run kept them (``keep_outputs``), each node's outputs
        summary.

        Raises:
            NotFound: no run with ``result.run_id``.
        """
        now = _now()
        with self._write() as s:
            run = s.get(Run, result.run_id)
            if run is None:
                raise NotFound("run", result.run_id)
            if run.status != "interrupted":  # taken over meanwhile: it stays interrupted
                run.status = result.status
            run.payload = None
            run.outputs = _plain(result.outputs)
            run.error, run.failed_node = result.error, result.failed_node
            run.elapsed_s = result.elapsed_s
            run.started_at = run.started_at or now - timedelta(seconds=result.elapsed_s)
            run.finished_at = run.finished_at or now
            s.add(run)
            existing = {
                nr.node_id: nr
                for nr in s.exec(select(NodeRun).where(col(NodeRun.run_id) == run.id)).all()
            }
            for node_id, status in result.node_status.items():
                nr = existing.get(node_id) or NodeRun(run_id=run.id, node_id=node_id, node_type="")
                nr.status = status
                nr.cached = nr.cached or status == "cached"
                if node_id in result.node_errors:
                    nr.error = result.node_errors[node_id]
                if status == "cancelled" and nr.error is None:
                    nr.error = "cancelled"
                if node_id in result.node_outputs:
                    nr.outputs = _summary(result.node_outputs[node_id])
                if nr.finished_at is None and status not in ("queued", "running"):
                    nr.finished_at = now
                s.add(nr)
            return run

    def add_finished_runs(self, runs: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        """Insert whole records of runs that already ended, all in one transaction
        (a group commit: when this returns, every one of them is committed).

        ``runs`` holds ``(run, node_runs)`` pairs: ``run`` the columns of a ``runs`` row
        (``id``, ``status``, ``inputs``, ``outputs``, timestamps, …), ``node_runs`` the
        columns of its ``node_runs`` rows. Used for runs recorded only once, at their end
        (the API's fast path); every other run is recorded as it goes by
        :meth:`recorder`.

        Raises:
            sqlalchemy.exc.IntegrityError: a run id exists already (nothing is inserted).
        """
        if not runs:
            return
        nodes = [n for _, ns in runs for n in ns]
        with self._write_engine.begin() as conn:
            conn.execute(sa.insert(_RUNS), [r for r, _ in runs])
            if nodes:
                conn.execute(sa.insert(_NODE_RUNS), nodes)

    def events_after(
        self, run_id: str, seq: int = 0, *, limit: int | None = None
    ) -> list[events.Event]:
        """A run's recorded events with ``seq`` greater than ``seq``, in order (for a
        Server-Sent Events stream resumed from ``Last-Event-ID``). Sequence numbers have
        gaps where streamed tokens and frequent progress events were not kept.

        Raises:
            NotFound: no such run.
        """
        query = (
            select(RunEvent)
            .where(col(RunEvent.run_id) == run_id, col(RunEvent.seq) > seq)
            .order_by(col(RunEvent.seq))
        )
        if limit is not None:
            query = query.limit(limit)
        with self._read() as s:
            if s.get(Run, run_id) is None:
                raise NotFound("run", run_id)
            rows = s.exec(query).all()
        return [events.EVENT_ADAPTER.validate_python(r.data) for r in rows]

    def mark_interrupted(self) -> list[str]:
        """Every run still ``queued`` or ``running`` was left by a process that died; mark
        it ``interrupted`` and return the run ids. Finished node runs and recorded outputs
        are kept; nodes left running become ``cancelled``.

        Every live run in the database is marked, so call this only where no other live
        process writes runs to the same database; a server calls :meth:`recover_runs`.
        """
        now = _now()
        with self._write() as s:
            runs = s.exec(
                select(Run).where(col(Run.status).in_(LIVE_RUN_STATUSES)).with_for_update()
            ).all()
            _interrupt(s, list(runs), now)
            return [r.id for r in runs]

    # ---- the run queue (several servers on one database) ----------------------------------

    def claim_runs(self, owner: str, limit: int) -> list[Run]:
        """Take up to ``limit`` waiting runs (``queued``, no owner, a payload, no cancel
        request), oldest first, for the server ``owner``: each gets ``owner`` and a fresh
        heartbeat, in one transaction. Atomic across processes: PostgreSQL locks the rows
        with ``SELECT … FOR UPDATE SKIP LOCKED`` (two servers claiming at once take
        different runs), SQLite's ``BEGIN IMMEDIATE`` lets one writer in at a time.

        Returns the claimed runs (with their payloads); ``[]`` when none wait.
        """
        if limit <= 0:
            return []
        waiting = (
            col(Run.status) == "queued",
            col(Run.owner).is_(None),
            col(Run.payload).is_not(None),
            col(Run.cancel_requested).is_(False),
        )
        with self._read() as s:  # cheap check first: no write lock while the queue is empty
            if s.exec(select(Run.id).where(*waiting).limit(1)).first() is None:
                return []
        now = _now()
        query = (
            select(Run)
            .where(*waiting)
            .order_by(col(Run.created_at), col(Run.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._write() as s:
            runs = list(s.exec(query).all())
            for run in runs:
                run.owner, run.heartbeat_at = owner, now
                s.add(run)
            return runs

    def heartbeat(
        self, owner: str, run_ids: list[str], *, beat: bool = True
    ) -> tuple[list[str], list[str]]:
        """The server ``owner`` says it still executes ``run_ids``: their ``heartbeat_at``
        becomes now (when ``beat``; else nothing is written). Returns ``(cancel, lost)``:
        the runs whose cancellation another server requested, and the runs that are no
        longer this server's (taken over after a stale heartbeat, or deleted), which it
        should stop.
        """
        if not run_ids:
            return [], []
        mine = (col(Run.id).in_(run_ids), col(Run.owner) == owner)
        query = select(Run.id, Run.owner, Run.status, Run.cancel_requested).where(
            col(Run.id).in_(run_ids)
        )
        if beat:
            with self._write() as s:
                s.exec(
                    sa.update(Run)
                    .where(*mine, col(Run.status).in_(LIVE_RUN_STATUSES))
                    .values(heartbeat_at=_now())
                )
                rows = s.exec(query).all()
        else:
            with self._read() as s:
                rows = s.exec(query).all()
        found = {r[0]: r for r in rows}
        cancel = [i for i, r in found.items() if r[3] and r[1] == owner]
        lost = [
            i
            for i in run_ids
            if i not in found or found[i][1] != owner or found[i][2] == "interrupted"
        ]
        return cancel, lost

    def request_cancel(self, run_id: str) -> tuple[bool, Run]:
        """Ask for a run to be cancelled, from any server. A run still waiting in the
        queue (no owner) is cancelled here and now (and a ``run_cancelled`` event
        recorded); a run that a server executes gets ``cancel_requested``, which its
        owner sees at its next heartbeat and acts on.

        Returns ``(accepted, run)``: ``accepted`` is False when the run had already ended
        (``run.status`` says how).

        Raises:
            NotFound: no such run.
        """
        now = _now()
        with self._write() as s:
            run = s.exec(select(Run).where(col(Run.id) == run_id).with_for_update()).first()
            if run is None:
                raise NotFound("run", run_id)
            if run.status not in LIVE_RUN_STATUSES:
                return False, run
            run.cancel_requested = True
            if run.owner is None:
                run.status, run.finished_at, run.payload = "cancelled", now, None
                run.elapsed_s = 0.0
                last = s.exec(
                    select(sa.func.max(RunEvent.seq)).where(col(RunEvent.run_id) == run_id)
                ).one()
                event = events.RunCancelled(
                    run_id=run_id, seq=int(last or 0) + 1, t=now.timestamp(), elapsed_s=0.0
                )
                s.add(
                    RunEvent(
                        run_id=run_id,
                        seq=event.seq,
                        type=event.type,
                        data=_plain(event.model_dump(mode="json")),
                    )
                )
            s.add(run)
            return True, run

    def recover_runs(
        self, owner: str, stale_after_s: float = RUN_STALE_S, *, startup: bool = False
    ) -> tuple[list[str], list[str]]:
        """Take over the runs of servers that died: a live run whose owner's heartbeat is
        older than ``stale_after_s`` seconds (or, when ``startup``, whose owner is
        ``owner`` itself — a previous process with this server id — or that has neither
        owner nor payload, as runs recorded before the queue existed).

        A run that was claimed but never started goes back to the queue (owner cleared),
        so another server runs it; one that started is marked ``interrupted``: finished
        node runs and their outputs are kept, nodes left running become ``cancelled``.
        Safe to call from every server at once (rows are locked; each run is taken over
        once).

        Returns ``(requeued, interrupted)`` run ids.
        """
        now = _now()
        stale = sa.or_(
            col(Run.heartbeat_at).is_(None),
            col(Run.heartbeat_at) < now - timedelta(seconds=stale_after_s),
        )
        dead = sa.and_(col(Run.owner).is_not(None), stale)
        if startup:
            dead = sa.or_(
                dead,
                col(Run.owner) == owner,
                sa.and_(col(Run.owner).is_(None), col(Run.payload).is_(None)),
            )
        where = (col(Run.status).in_(LIVE_RUN_STATUSES), dead)
        with self._read() as s:
            if s.exec(select(Run.id).where(*where).limit(1)).first() is None:
                return [], []
        with self._write() as s:
            runs = list(s.exec(select(Run).where(*where).with_for_update(skip_locked=True)).all())
            requeue = [
                r
                for r in runs
                if r.status == "queued"
                and r.started_at is None
                and r.payload is not None
                and not r.cancel_requested
            ]
            for run in requeue:
                run.owner, run.heartbeat_at = None, None
                s.add(run)
            requeued = {r.id for r in requeue}
            gone = [r for r in runs if r.id not in requeued]
            _interrupt(s, gone, now)
            return [r.id for r in requeue], [r.id for r in gone]

    def _record(self, run_id: str, event: Any, keep: bool) -> None:
        """Apply one event to ``runs`` / ``node_runs`` and, when ``keep``, append it to
        ``run_events`` — in one transaction. Core statements, not the ORM: this runs for
        every event, on the run's event loop thread."""
        etype: str = event.type
        t = _at(event.t)
        with self._write_engine.begin() as conn:
            if keep:
                data = _plain(event.model_dump(mode="json"))
                conn.execute(
                    sa.insert(_RUN_EVENTS).values(
                        run_id=run_id, seq=event.seq, type=etype, data=data
                    )
                )
            if etype.startswith("run_"):
                where = _RUNS.c.id == run_id
                row = conn.execute(sa.select(_RUNS).where(where)).mappings().first()
                if row is not None:
                    conn.execute(sa.update(_RUNS).where(where).values(_run_changes(row, event, t)))
                if etype == "run_cancelled":
                    conn.execute(
                        sa.update(_NODE_RUNS)
                        .where(
                            _NODE_RUNS.c.run_id == run_id,
                            _NODE_RUNS.c.status.in_(("queued", "running")),
                        )
                        .values(status="cancelled", error="cancelled", finished_at=t)
                    )
            elif etype != "node_progress":
                where = (_NODE_RUNS.c.run_id == run_id) & (_NODE_RUNS.c.node_id == event.node_id)
                row = conn.execute(sa.select(_NODE_RUNS).where(where)).mappings().first()
                changes = _node_changes(row or {}, event, t)
                if row is None:
                    fresh = {"status": "queued", "cached": False, "attempts": 0, **changes}
                    conn.execute(
                        sa.insert(_NODE_RUNS).values(run_id=run_id, node_id=event.node_id, **fresh)
                    )
                else:
                    conn.execute(sa.update(_NODE_RUNS).where(where).values(changes))

    # ---- API keys ---------------------------------------------------------------------

    def create_api_key(self, name: str) -> tuple[str, ApiKey]:
        """Make a new API key; return ``(key, record)``. The key (``fb_`` + 43 URL-safe
        characters, 256 random bits) is shown once: only its SHA-256 is stored."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=_new_id(), name=name, prefix=key[:8], key_hash=_hash_key(key), created_at=_now()
        )
        with self._write() as s:
            s.add(record)
        return key, record

    def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, newest first."""
        query = select(ApiKey).order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
        with self._read() as s:
            return list(s.exec(query).all())

    def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: the first revocation time is kept).

        Raises:
            NotFound: no such key.
        """
        with self._write() as s:
            record = s.get(ApiKey, key_id)
            if record is None:
                raise NotFound("API key", key_id)
            if record.revoked_at is None:
                record.revoked_at = _now()
                s.add(record)
            return record

    def get_api_key(self, key_id: str) -> ApiKey | None:
        """The record of the key with this id (revoked ones too), or None: one lookup by
        primary key, what a session bound to a key checks at each request."""
        with self._read() as s:
            return s.get(ApiKey, key_id)

    def verify_api_key(self, key: str) -> ApiKey | None:
        """The record of ``key``, or None when no such key was ever made (answer 401).

        A revoked key returns its record with ``revoked_at`` set (answer 403). Using a
        valid key updates ``last_used_at`` (at most once a minute).
        """
        if not key.startswith(API_KEY_PREFIX):
            return None
        digest = _hash_key(key)
        query = select(ApiKey).where(col(ApiKey.key_hash) == digest)
        with self._read() as s:
            record = s.exec(query).first()
        if record is None or record.revoked_at is not None:
            return record
        now = _now()
        last = record.last_used_at
        if last is None or (now - last).total_seconds() >= LAST_USED_RESOLUTION_S:
            with self._write() as s:
                s.exec(
                    sa.update(ApiKey).where(col(ApiKey.id) == record.id).values(last_used_at=now)
                )
            record.last_used_at = now
        return record


_RUNS = SQLModel.metadata.tables["runs"]
_NODE_RUNS = SQLModel.metadata.tables["node_runs"]
_RUN_EVENTS = SQLModel.metadata.tables["run_events"]


def _interrupt(s: Session, runs: list[Run], now: datetime) -> None:
    """Mark ``runs`` (locked, live) ``interrupted`` in session ``s``: nodes left queued
    or running become ``cancelled``; finished node runs are kept as they are."""
    if not runs:
        return
    for run in runs:
        run.status = "interrupted"
        run.error = run.error or INTERRUPTED_ERROR
        run.finished_at = now
        run.payload = None
        if run.started_at is not None and run.elapsed_s is None:
            run.elapsed_s = (now - run.started_at).total_seconds()
        s.add(run)
    s.exec(
        sa.update(NodeRun)
        .where(
            col(NodeRun.run_id).in_([r.id for r in runs]),
            col(NodeRun.status).in_(("queued", "running")),
        )
        .values(status="cancelled", error=INTERRUPTED_ERROR, finished_at=now)
    )


def _run_changes(row: Mapping[Any, Any], event: Any, t: datetime) -> dict[str, Any]:
    """The columns of a ``runs`` row that a run-level event changes."""
    etype = event.type
    if etype == "run_started":
        changes: dict[str, Any] = {"started_at": row["started_at"] or t}
        if row["status"] in LIVE_RUN_STATUSES:
            changes["status"] = "running"
        return changes
    changes = {
        # a run taken over by another server stays interrupted
        "status": "interrupted" if row["status"] == "interrupted" else etype.removeprefix("run_"),
        "finished_at": t,
        "elapsed_s": event.elapsed_s,
        "started_at": row["started_at"] or t - timedelta(seconds=event.elapsed_s),
    }
    if etype == "run_finished":
        changes["outputs"] = _plain(event.outputs)
    elif etype == "run_failed":
        changes["error"], changes["failed_node"] = event.error, event.node_id
    return changes


def _node_changes(row: Mapping[Any, Any], event: Any, t: datetime) -> dict[str, Any]:
    """The columns of a ``node_runs`` row (``{}`` when new) that a node event changes."""
    etype = event.type
    started = row.get("started_at")
    changes: dict[str, Any] = {"node_type": event.node_type or row.get("node_type", "")}
    if etype == "node_started":
        changes.update(status="running", started_at=started or t, attempts=event.attempt)
    elif etype == "node_cached":
        changes.update(status="cached", cached=True, started_at=started or t)
        changes.update(
            finished_at=t, elapsed_s=0.0, outputs=_summary(getattr(event, "outputs", {}))
        )
    elif etype in ("node_finished", "node_failed"):
        changes.update(finished_at=t, elapsed_s=event.elapsed_s)
        changes["started_at"] = started or t - timedelta(seconds=event.elapsed_s)
        if etype == "node_finished":
            changes.update(status="done", outputs=_summary(getattr(event, "outputs", {})))
        else:
            changes.update(status="failed", error=event.error)
    elif etype == "node_skipped":
        changes.update(status="skipped", error=event.reason, finished_at=t)
    return changes


class RunRecorder:
    """Records one run's events in the store (see :meth:`Store.recorder`).

    Called synchronously for each event (on the run's event loop thread): updates
    ``runs`` / ``node_runs`` and appends the event to ``run_events``, each in one
    transaction. ``node_progress`` events carrying streamed tokens (``delta``) are kept
    without the tokens, and at most one progress event per node per
    :data:`PROGRESS_INTERVAL_S` is kept. A database error is raised to the event bus,
    which logs it and goes on with the run.
    """

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._last_progress: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: BaseModel) -> None:
        if getattr(event, "run_id", self.run_id) != self.run_id:
            return
        keep = True
        if isinstance(event, events.NodeProgress):
            keep = self._keep_progress(event)
            if not keep:
                return
            if event.delta is not None:
                event = event.model_copy(update={"delta": None})
        with self._lock:
            self.store._record(self.run_id, event, keep)

    def _keep_progress(self, event: events.NodeProgress) -> bool:
        if event.delta is not None and event.fraction is None and not event.message:
            return False  # tokens only
        if event.metrics:
            return True  # a point of a training curve: replayed runs redraw it whole
        now = time.monotonic()
        last = self._last_progress.get(event.node_id)
        final = event.fraction is not None and event.fraction >= 1.0
        if last is not None and now - last < PROGRESS_INTERVAL_S and not final:
            return False
        self._last_progress[event.node_id] = now
        return True
