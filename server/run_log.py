"""Group commit of the records of runs recorded once, at their end (the API's fast path).

An answer that carries a run id is sent only once the run's record is committed, so a
server killed at any moment loses no run it acknowledged. Committing each run on its
own would cost one transaction per request; instead :meth:`RunLog.record` queues the
record and waits, and one writer commits everything queued so far in one transaction
(:meth:`~flowbuilder.store.Store.add_finished_runs`) — the records of every run that
ended while the previous commit was in flight go together in the next one. Under load a
commit carries many runs; alone, a run waits for its own commit only.

The commit runs on the event loop's thread, as the store's recorder of every other run
does: in one process, one thread writes, so a commit never waits for the write lock of
another thread of the same server (on SQLite that wait starved the fast path when runs
of both kinds came in at once).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from flowbuilder.errors import FlowbuilderError
from flowbuilder.store import Store

log = logging.getLogger(__name__)

Record = tuple[dict[str, Any], list[dict[str, Any]]]
"""A run's ``runs`` row and its ``node_runs`` rows (see ``Store.add_finished_runs``)."""


class NotRecorded(FlowbuilderError):
    """A run's record could not be committed: the run must not be acknowledged."""


class RunLog:
    """Commits finished runs' records in groups; :meth:`record` returns once committed.

    Args:
        store: where the records go.

    Must be used on one event loop (the server's).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: list[tuple[Record, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, run: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
        """Queue one run's record and wait until it is committed.

        Raises:
            NotRecorded: the transaction carrying it failed (the message says why).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append(((run, nodes), done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        # shielded: a caller that goes away does not take the commit with it
        await asyncio.shield(done)

    async def _drain(self) -> None:
        """Commit what is queued, again and again, until nothing is left."""
        while self._queue:
            await asyncio.sleep(0)  # let the runs ending in this same moment join
            batch, self._queue = self._queue, []
            try:
                # on the loop's own thread, like the recorder of every other run: one
                # writer thread per process, so they never wait on each other's lock
                self.store.add_finished_runs([r for r, _ in batch])
            except Exception as exc:
                log.exception("could not record %d API run(s)", len(batch))
                error = NotRecorded(f"the run's record could not be saved ({exc})")
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


def run_log(state: Any) -> RunLog:
    """The app's run log (``app.state.fb_run_log``), made on first use."""
    found: RunLog | None = getattr(state, "fb_run_log", None)
    if found is None:
        found = state.fb_run_log = RunLog(state.fb.store)
    return found


__all__ = ["NotRecorded", "Record", "RunLog", "run_log"]
