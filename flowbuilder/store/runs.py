"""Runs, their node runs and their events (``runs``, ``node_runs``, ``run_events``).

A run is recorded in one of two ways:

- **as it happens**, by a :class:`RunRecorder` (:meth:`Runs.recorder`): an event
  listener that applies each event to the run's rows and keeps the event for replay,
  then :meth:`RunRecorder.save_result` stores the run's full outputs and every node's
  final status;
- **once, at its end** (:meth:`Runs.add_finished_runs`): whole records of runs that
  already ended, many in one transaction (a group commit: when it returns, every one of
  them is committed — a run acknowledged after it is a run the store has).

Typical use::

    runs = Runs(db)                    # or the facade: Store() has the same methods
    runs.create_run(run_id, flow_id=flow.id, source="canvas", inputs={"audio": "memo.ogg"})
    recorder = runs.recorder(run_id)
    result = await engine.run(graph, inputs, run_id=run_id, listeners=[recorder])
    recorder.save_result(result)       # full outputs (events carry summaries only)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import col, select

from flowbuilder import events
from flowbuilder.store.db import Database, require
from flowbuilder.store.errors import AlreadyExists
from flowbuilder.store.tables import (
    LIVE_NODE_STATUSES,
    LIVE_RUN_STATUSES,
    NODE_RUNS,
    RUN_EVENTS,
    RUNS,
    Flow,
    NodeRun,
    Run,
    RunEvent,
)
from flowbuilder.store.values import at, now, plain, summary

if TYPE_CHECKING:
    from flowbuilder.scheduler import RunResult

PROGRESS_INTERVAL_S = 0.25
"""The recorder keeps at most one ``node_progress`` event per node per this many seconds
(plus the first and the one reaching fraction 1.0); the stream itself is not throttled."""

FinishedRun = tuple[dict[str, Any], list[dict[str, Any]]]
"""A run that ended, for :meth:`Runs.add_finished_runs`: the columns of its ``runs`` row
and those of its ``node_runs`` rows."""


class Runs:
    """The runs in ``db``, their node runs and events. Every method is one transaction
    and returns detached records."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        :meth:`~flowbuilder.store.queue.RunQueue.claim_runs`.

        Raises:
            NotFound: ``flow_id`` names no flow.
            AlreadyExists: a run with this id exists.
        """
        t = now()
        run = Run(
            id=run_id,
            flow_id=flow_id,
            flow_version=flow_version,
            source=source,
            status="queued",
            inputs=plain(inputs or {}),
            created_at=t,
            owner=owner,
            heartbeat_at=t if owner is not None else None,
            payload=plain(payload) if payload is not None else None,
        )
        with self.db.write() as s:
            if s.get(Run, run_id) is not None:
                raise AlreadyExists("run", run_id)
            if flow_id is not None:
                flow = require(s, Flow, flow_id, "flow")
                if flow_version is None:
                    run.flow_version = flow.version
            s.add(run)
        return run

    def get_run(self, run_id: str) -> Run:
        """Raises: NotFound."""
        with self.db.read() as s:
            return require(s, Run, run_id, "run")

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
        with self.db.read() as s:
            return list(s.exec(query.offset(offset).limit(limit)).all())

    def count_runs(self, flow_id: str | None = None, *, status: str | None = None) -> int:
        """How many runs :meth:`list_runs` would page through."""
        query = select(sa.func.count()).select_from(Run)
        if flow_id is not None:
            query = query.where(col(Run.flow_id) == flow_id)
        if status is not None:
            query = query.where(col(Run.status) == status)
        with self.db.read() as s:
            return int(s.exec(query).one())

    def delete_run(self, run_id: str) -> None:
        """Delete a run with its node runs and events.

        Raises:
            NotFound: no such run.
        """
        with self.db.write() as s:
            run = require(s, Run, run_id, "run")
            s.exec(sa.delete(RunEvent).where(col(RunEvent.run_id) == run_id))
            s.exec(sa.delete(NodeRun).where(col(NodeRun.run_id) == run_id))
            s.delete(run)

    def node_runs(self, run_id: str) -> list[NodeRun]:
        """A run's node runs, in the order they started (unstarted ones last).

        Raises:
            NotFound: no such run.
        """
        with self.db.read() as s:
            require(s, Run, run_id, "run")
            query = (
                select(NodeRun)
                .where(col(NodeRun.run_id) == run_id)
                .order_by(col(NodeRun.started_at).is_(None), col(NodeRun.started_at))
            )
            return list(s.exec(query).all())

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
        with self.db.read() as s:
            require(s, Run, run_id, "run")
            rows = s.exec(query).all()
        return [events.EVENT_ADAPTER.validate_python(r.data) for r in rows]

    def recorder(self, run_id: str) -> RunRecorder:
        """An event listener that records a run as it happens: pass it to
        ``Engine.run(..., run_id=run_id, listeners=[recorder])``, then give it the run's
        result (:meth:`RunRecorder.save_result`).

        Raises:
            NotFound: no such run (call :meth:`create_run` first).
        """
        self.get_run(run_id)
        return RunRecorder(self.db, run_id)

    def save_result(self, result: RunResult) -> Run:
        """Store a finished run's result (see :meth:`RunRecorder.save_result`).

        Raises:
            NotFound: no run with ``result.run_id``.
        """
        return RunRecorder(self.db, result.run_id).save_result(result)

    def add_finished_runs(self, runs: list[FinishedRun]) -> None:
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
        with self.db.write_engine.begin() as conn:
            conn.execute(sa.insert(RUNS), [r for r, _ in runs])
            if nodes:
                conn.execute(sa.insert(NODE_RUNS), nodes)


class RunRecorder:
    """Records one run in the store: its events as they come, then its result.

    Called synchronously for each event (on the run's event loop thread): updates
    ``runs`` / ``node_runs`` and appends the event to ``run_events``, each in one
    transaction. ``node_progress`` events carrying streamed tokens (``delta``) are kept
    without the tokens, and at most one progress event per node per
    :data:`PROGRESS_INTERVAL_S` is kept. A database error is raised to the event bus,
    which logs it and goes on with the run. Events of other runs are ignored.

    Args:
        db: the store's database.
        run_id: the run, created already (:meth:`Runs.create_run`).
    """

    def __init__(self, db: Database, run_id: str) -> None:
        self.db, self.run_id = db, run_id
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
            self._apply(event, keep)

    def save_result(self, result: RunResult) -> Run:
        """Store the run's :class:`~flowbuilder.scheduler.RunResult`: its full outputs
        (events carry summaries: long text cut, long lists shortened), its status and
        every node's final status — including nodes cancelled mid-run, which emit no
        event — and, when the run kept them (``keep_outputs``), each node's outputs
        summary. A run taken over meanwhile (``interrupted``) keeps that status.

        Raises:
            ValueError: ``result`` is another run's.
            NotFound: the run does not exist (any more).
        """
        if result.run_id != self.run_id:
            raise ValueError(
                f"the result of run '{result.run_id}' given to the recorder of run '{self.run_id}'"
            )
        t = now()
        with self.db.write() as s:
            run = require(s, Run, self.run_id, "run")
            if run.status != "interrupted":  # taken over meanwhile: it stays interrupted
                run.status = result.status
            run.payload = None
            run.outputs = plain(result.outputs)
            run.error, run.failed_node = result.error, result.failed_node
            run.elapsed_s = result.elapsed_s
            run.started_at = run.started_at or t - timedelta(seconds=result.elapsed_s)
            run.finished_at = run.finished_at or t
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
                    nr.outputs = summary(result.node_outputs[node_id])
                if nr.finished_at is None and status not in LIVE_NODE_STATUSES:
                    nr.finished_at = t
                s.add(nr)
            return run

    def _keep_progress(self, event: events.NodeProgress) -> bool:
        if event.delta is not None and event.fraction is None and not event.message:
            return False  # tokens only
        if event.metrics:
            return True  # a point of a training curve: replayed runs redraw it whole
        t = time.monotonic()
        last = self._last_progress.get(event.node_id)
        final = event.fraction is not None and event.fraction >= 1.0
        if last is not None and t - last < PROGRESS_INTERVAL_S and not final:
            return False
        self._last_progress[event.node_id] = t
        return True

    def _apply(self, event: Any, keep: bool) -> None:
        """Apply one event to ``runs`` / ``node_runs`` and, when ``keep``, append it to
        ``run_events`` — in one transaction. Core statements, not the ORM: this runs for
        every event, on the run's event loop thread."""
        run_id, etype, t = self.run_id, event.type, at(event.t)
        with self.db.write_engine.begin() as conn:
            if keep:
                data = plain(event.model_dump(mode="json"))
                conn.execute(
                    sa.insert(RUN_EVENTS).values(
                        run_id=run_id, seq=event.seq, type=etype, data=data
                    )
                )
            if etype.startswith("run_"):
                where = RUNS.c.id == run_id
                row = conn.execute(sa.select(RUNS).where(where)).mappings().first()
                if row is not None:
                    conn.execute(sa.update(RUNS).where(where).values(_run_changes(row, event, t)))
                if etype == "run_cancelled":
                    conn.execute(
                        sa.update(NODE_RUNS)
                        .where(
                            NODE_RUNS.c.run_id == run_id,
                            NODE_RUNS.c.status.in_(LIVE_NODE_STATUSES),
                        )
                        .values(status="cancelled", error="cancelled", finished_at=t)
                    )
            elif etype != "node_progress":
                where = (NODE_RUNS.c.run_id == run_id) & (NODE_RUNS.c.node_id == event.node_id)
                row = conn.execute(sa.select(NODE_RUNS).where(where)).mappings().first()
                changes = _node_changes(row or {}, event, t)
                if row is None:
                    fresh = {"status": "queued", "cached": False, "attempts": 0, **changes}
                    conn.execute(
                        sa.insert(NODE_RUNS).values(run_id=run_id, node_id=event.node_id, **fresh)
                    )
                else:
                    conn.execute(sa.update(NODE_RUNS).where(where).values(changes))


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
        changes["outputs"] = plain(event.outputs)
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
        changes.update(finished_at=t, elapsed_s=0.0, outputs=summary(getattr(event, "outputs", {})))
    elif etype in ("node_finished", "node_failed"):
        changes.update(finished_at=t, elapsed_s=event.elapsed_s)
        changes["started_at"] = started or t - timedelta(seconds=event.elapsed_s)
        if etype == "node_finished":
            changes.update(status="done", outputs=summary(getattr(event, "outputs", {})))
        else:
            changes.update(status="failed", error=event.error)
    elif etype == "node_skipped":
        changes.update(status="skipped", error=event.reason, finished_at=t)
    return changes


__all__ = ["PROGRESS_INTERVAL_S", "FinishedRun", "RunRecorder", "Runs"]
