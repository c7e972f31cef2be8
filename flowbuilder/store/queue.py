"""The durable run queue that several servers share through one database.

A run made without an owner but with a ``payload`` (see
:meth:`~flowbuilder.store.runs.Runs.create_run`) waits, status ``queued``, until a
server takes it with :meth:`RunQueue.claim_runs`. The server executing a run (its
``owner``) calls :meth:`RunQueue.heartbeat` while it runs; any server may ask for a run's
cancellation (:meth:`RunQueue.request_cancel`), which the owner sees at its next heartbeat.
A run whose owner stopped beating for :data:`RUN_STALE_S` seconds is taken over by
:meth:`RunQueue.recover_runs`: back to the queue when it never started, else
``interrupted``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from flowbuilder import events
from flowbuilder.store.db import Database, require
from flowbuilder.store.tables import LIVE_NODE_STATUSES, LIVE_RUN_STATUSES, NodeRun, Run, RunEvent
from flowbuilder.store.values import now, plain

INTERRUPTED_ERROR = "interrupted: the process running it stopped before the run finished"
RUN_STALE_S = 10.0
"""A live run whose owner's heartbeat is older than this many seconds is taken over
(see :meth:`RunQueue.recover_runs`)."""


class RunQueue:
    """Claim, heartbeat, cancel and recover the runs in ``db``. Every method is one
    transaction (rows locked where two servers could race) and returns detached records."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        with self.db.read() as s:  # cheap check first: no write lock while the queue is empty
            if s.exec(select(Run.id).where(*waiting).limit(1)).first() is None:
                return []
        t = now()
        query = (
            select(Run)
            .where(*waiting)
            .order_by(col(Run.created_at), col(Run.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self.db.write() as s:
            runs = list(s.exec(query).all())
            for run in runs:
                run.owner, run.heartbeat_at = owner, t
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
            with self.db.write() as s:
                s.exec(
                    sa.update(Run)
                    .where(*mine, col(Run.status).in_(LIVE_RUN_STATUSES))
                    .values(heartbeat_at=now())
                )
                rows = s.exec(query).all()
        else:
            with self.db.read() as s:
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
        t = now()
        with self.db.write() as s:
            run = require(s, Run, run_id, "run", lock=True)
            if run.status not in LIVE_RUN_STATUSES:
                return False, run
            run.cancel_requested = True
            if run.owner is None:
                run.status, run.finished_at, run.payload = "cancelled", t, None
                run.elapsed_s = 0.0
                last = s.exec(
                    select(sa.func.max(RunEvent.seq)).where(col(RunEvent.run_id) == run_id)
                ).one()
                event = events.RunCancelled(
                    run_id=run_id, seq=int(last or 0) + 1, t=t.timestamp(), elapsed_s=0.0
                )
                s.add(
                    RunEvent(
                        run_id=run_id,
                        seq=event.seq,
                        type=event.type,
                        data=plain(event.model_dump(mode="json")),
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
        t = now()
        stale = sa.or_(
            col(Run.heartbeat_at).is_(None),
            col(Run.heartbeat_at) < t - timedelta(seconds=stale_after_s),
        )
        dead = sa.and_(col(Run.owner).is_not(None), stale)
        if startup:
            dead = sa.or_(
                dead,
                col(Run.owner) == owner,
                sa.and_(col(Run.owner).is_(None), col(Run.payload).is_(None)),
            )
        where = (col(Run.status).in_(LIVE_RUN_STATUSES), dead)
        with self.db.read() as s:
            if s.exec(select(Run.id).where(*where).limit(1)).first() is None:
                return [], []
        with self.db.write() as s:
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
            _interrupt(s, gone, t)
            return [r.id for r in requeue], [r.id for r in gone]

    def mark_interrupted(self) -> list[str]:
        """Every run still ``queued`` or ``running`` was left by a process that died; mark
        it ``interrupted`` and return the run ids. Finished node runs and recorded outputs
        are kept; nodes left running become ``cancelled``.

        Every live run in the database is marked, so call this only where no other live
        process writes runs to the same database; a server calls :meth:`recover_runs`.
        """
        t = now()
        with self.db.write() as s:
            runs = s.exec(
                select(Run).where(col(Run.status).in_(LIVE_RUN_STATUSES)).with_for_update()
            ).all()
            _interrupt(s, list(runs), t)
            return [r.id for r in runs]


def _interrupt(s: Session, runs: list[Run], t: datetime) -> None:
    """Mark ``runs`` (locked, live) ``interrupted`` in session ``s``: nodes left queued
    or running become ``cancelled``; finished node runs are kept as they are."""
    if not runs:
        return
    for run in runs:
        run.status = "interrupted"
        run.error = run.error or INTERRUPTED_ERROR
        run.finished_at = t
        run.payload = None
        if run.started_at is not None and run.elapsed_s is None:
            run.elapsed_s = (t - run.started_at).total_seconds()
        s.add(run)
    s.exec(
        sa.update(NodeRun)
        .where(
            col(NodeRun.run_id).in_([r.id for r in runs]),
            col(NodeRun.status).in_(LIVE_NODE_STATUSES),
        )
        .values(status="cancelled", error=INTERRUPTED_ERROR, finished_at=t)
    )


__all__ = ["INTERRUPTED_ERROR", "RUN_STALE_S", "RunQueue"]
