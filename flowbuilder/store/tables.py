"""The store's SQLModel tables (keep ``flowbuilder/migrations/versions`` in step).

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
  inputs; cleared when the run ends). See :mod:`flowbuilder.store.queue`.
- ``node_runs``: (run_id, node_id) → node_type, status (see :data:`NODE_STATUSES`),
  started_at, finished_at, elapsed_s, error (or the reason a node was skipped or
  cancelled), cached, attempts, outputs (a small summary, when known).
- ``run_events``: (run_id, seq) → type, data: the run's event stream (see
  :mod:`flowbuilder.events`) minus streamed tokens, so a Server-Sent Events client can
  resume after ``Last-Event-ID``.
- ``api_keys``: id, name, prefix (the first 8 characters, shown to users), key_hash
  (SHA-256 hex of the key; the key itself is never stored), created_at, revoked_at,
  last_used_at.

Every time is a timezone-aware UTC datetime (:class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

RUN_STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
"""A run's status: ``queued`` and ``running`` are live, the others final."""
LIVE_RUN_STATUSES = ("queued", "running")
FINAL_RUN_STATUSES = tuple(s for s in RUN_STATUSES if s not in LIVE_RUN_STATUSES)
NODE_STATUSES = ("queued", "running", "done", "cached", "failed", "skipped", "cancelled")
"""A node run's status (``done`` ran, ``cached`` was served from the cache)."""
LIVE_NODE_STATUSES = ("queued", "running")


# ---- column types ---------------------------------------------------------------------


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamp with time zone``; SQLite keeps no zone, so values are
    stored as naive UTC and given ``tzinfo=UTC`` back when read.

    Raises:
        ValueError: a naive datetime is stored.
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


# ---- tables -----------------------------------------------------------------------------

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


RUNS = SQLModel.metadata.tables["runs"]
NODE_RUNS = SQLModel.metadata.tables["node_runs"]
RUN_EVENTS = SQLModel.metadata.tables["run_events"]
"""The Core tables, for statements that run for every event (no ORM objects)."""
