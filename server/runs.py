"""Runs started by the server (canvas or API): the run queue, execution, fan-out of
events, cancellation — on one server or several sharing one database.

A :class:`RunManager` lives as long as the server. ``start`` checks the graph and inputs
and records the run in the store. When this server has room (fewer than ``max_runs``
runs executing) it executes the run at once as a task on its event loop; otherwise the
run waits in the database (status ``queued``, no owner, with a payload: the graph and
bound inputs) until a server sharing the database — this one or another — claims it
(:meth:`~flowbuilder.store.Store.claim_runs`). Canvas runs always start at once: the
page follows them live.

Every event goes to the store's recorder and to each local subscriber's queue, so the
canvas and Server-Sent Event streams see the same events in the same order.
:meth:`RunManager.follow` follows any run: live when it executes here, else by polling
the events table until the run's end.

A background task (:meth:`RunManager.start_background`) polls every ``poll_s`` seconds:
it writes the heartbeat of the runs executing here, cancels those whose cancellation
another server requested (``cancel_requested``), claims queued runs while there is room,
and takes over the runs of servers whose heartbeat is older than ``stale_s``
(:meth:`~flowbuilder.store.Store.recover_runs`): a claimed run that never started goes
back to the queue, a started one ends ``interrupted`` with its finished nodes kept.

Settings (environment):

- ``FLOWBUILDER_MAX_RUNS`` — runs one server executes at once (default 8); more wait.
- ``FLOWBUILDER_SERVER_ID`` — this server's id in ``runs.owner`` (default
  ``<hostname>:<port>``, so a restarted server recognises its own runs at once).
- ``FLOWBUILDER_QUEUE_POLL_S`` — the poll interval (default 0.5 s): how soon a cancel
  request from another server or a queued run is noticed.
- ``FLOWBUILDER_RUN_STALE_S`` — a heartbeat older than this (default 10 s) means the
  server died; its runs are taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from flowbuilder import events
from flowbuilder.engine import Engine
from flowbuilder.errors import FlowbuilderError
from flowbuilder.graph import Graph, graph_from_data
from flowbuilder.scheduler import CancelToken, RunResult
from flowbuilder.store import FINAL_RUN_STATUSES, RUN_STALE_S, Run, Store
from flowbuilder.types import REF_CLASSES, to_jsonable
from flowbuilder.validate import Plan

log = logging.getLogger(__name__)

END_EVENTS = (events.RunFinished, events.RunFailed, events.RunCancelled)
DEFAULT_MAX_RUNS = 8
DEFAULT_POLL_S = 0.5
KEEPALIVE_S = 15.0


class SettingError(FlowbuilderError):
    """An environment setting of the run queue with a value that is not a number > 0."""


def _env_number(name: str, default: float, *, integer: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SettingError(f"{name}={raw!r}: expected {kind} greater than 0") from None
    if value <= 0:
        raise SettingError(f"{name}={raw!r}: expected a number greater than 0")
    return value


def default_server_id(port: int | None = None) -> str:
    """``FLOWBUILDER_SERVER_ID``, else ``<hostname>:<port>`` (``<hostname>:pid<pid>``
    without a port). Two live servers must never share an id."""
    found = os.environ.get("FLOWBUILDER_SERVER_ID", "").strip()
    if found:
        return found
    return f"{socket.gethostname()}:{port if port is not None else f'pid{os.getpid()}'}"


@dataclass
class ActiveRun:
    """A run started through :meth:`RunManager.start`, or one this process executes.

    ``task`` resolves to the run's :class:`RunResult` wherever it executes: the
    execution itself when it runs here, else a waiter that follows the queued run's
    record. ``history`` and ``subscribers`` are filled only while it executes here.
    ``recorded`` turns False when its final record could not be saved (an answer must
    then not acknowledge it as finished).
    """

    run_id: str
    plan: Plan
    cancel: CancelToken = field(default_factory=CancelToken)
    history: list[Any] = field(default_factory=list)
    subscribers: set[asyncio.Queue[Any]] = field(default_factory=set)
    task: asyncio.Task[RunResult] | None = None
    result: RunResult | None = None
    queued: bool = False
    recorded: bool = True


class RunManager:
    """Starts runs (at once or through the database queue) and lets callers follow and
    cancel them, wherever they execute.

    Args:
        engine: executes runs (its scheduler) and compiles queued graphs.
        store: the run store; shared by every server on the same database.
        owner: this server's id (:func:`default_server_id`).
        max_runs: runs executed here at once (``FLOWBUILDER_MAX_RUNS``, default 8).
        poll_s: seconds between queue polls (``FLOWBUILDER_QUEUE_POLL_S``, default 0.5).
        stale_s: seconds after which another server's heartbeat is stale
            (``FLOWBUILDER_RUN_STALE_S``, default 10).

    Raises:
        SettingError: an environment setting is not a positive number.
    """

    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        owner: str | None = None,
        max_runs: int | None = None,
        poll_s: float | None = None,
        stale_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.owner = owner or default_server_id()
        self.max_runs = int(
            max_runs or _env_number("FLOWBUILDER_MAX_RUNS", DEFAULT_MAX_RUNS, integer=True)
        )
        self.poll_s = poll_s or _env_number("FLOWBUILDER_QUEUE_POLL_S", DEFAULT_POLL_S)
        self.stale_s = stale_s or _env_number("FLOWBUILDER_RUN_STALE_S", RUN_STALE_S)
        self.active: dict[str, ActiveRun] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    # ---- starting -----------------------------------------------------------------------

    def start(
        self,
        graph: Graph | Plan,
        inputs: dict[str, Any] | None = None,
        *,
        flow_id: str | None = None,
        flow_version: int | None = None,
        source: str = "canvas",
        keep_outputs: bool = False,
    ) -> ActiveRun:
        """Check and start a run; returns at once. It executes here now when this server
        has room (always for ``source="canvas"``), else it waits queued in the database.
        Must be called on the server's event loop.

        Raises:
            GraphInvalid: the graph has problems (nothing is recorded or run).
            InputError: an input is missing or of the wrong type.
        """
        self.start_background()
        plan = graph if isinstance(graph, Plan) else self.engine.compile(graph)
        bound = self.engine.bind_inputs(plan, inputs or {})
        run_id = uuid.uuid4().hex
        here = source == "canvas" or len(self.active) < self.max_runs
        payload = {
            "graph": plan.graph.to_dict(),
            "inputs": {
                i.name: to_jsonable(bound[i.node_id]) for i in plan.inputs if i.node_id in bound
            },
            "keep_outputs": keep_outputs,
        }
        self.store.create_run(
            run_id,
            flow_id=flow_id,
            flow_version=flow_version,
            source=source,
            inputs=to_jsonable(inputs or {}),
            owner=self.owner if here else None,
            payload=payload,
        )
        if here:
            return self._execute(run_id, plan, bound, keep_outputs)
        run = ActiveRun(run_id, plan, queued=True)
        run.task = asyncio.get_running_loop().create_task(self._await_end(run_id, plan))
        return run

    def _execute(
        self, run_id: str, plan: Plan, bound: dict[str, Any], keep_outputs: bool
    ) -> ActiveRun:
        """Execute a run (recorded, owned by this server) as a task on the event loop."""
        run = ActiveRun(run_id, plan)
        self.active[run_id] = run
        recorder = self.store.recorder(run_id)

        def fan_out(event: Any) -> None:
            try:
                recorder(event)
            except Exception:  # the run goes on; its record may lag
                log.exception("could not record %s of run %s", event.type, run_id)
            run.history.append(event)
            for queue in list(run.subscribers):
                queue.put_nowait(event)

        async def execute() -> RunResult:
            try:
                result = await self.engine.scheduler.execute(
                    plan,
                    bound,
                    run_id=run_id,
                    listeners=[fan_out],
                    cancel=run.cancel,
                    keep_outputs=keep_outputs,
                )
                run.result = result
                try:
                    # full outputs; in the same step as the run leaves ``active``, so a
                    # reader never sees the end event live and the record not yet saved
                    self.store.save_result(result)
                except Exception:
                    run.recorded = False
                    log.exception("could not save the result of run %s", run_id)
                return result
            finally:
                self.active.pop(run_id, None)
                if self._wake is not None:
                    self._wake.set()  # room for a queued run

        run.task = asyncio.get_running_loop().create_task(execute())
        return run

    def _start_claimed(self, record: Run) -> None:
        """Execute a run claimed from the queue; a graph or inputs that no longer check
        here (a node pack missing on this server, say) fail the run with the reason."""
        payload = record.payload or {}
        try:
            plan = self.engine.compile(graph_from_data(payload.get("graph")))
            bound = self.engine.bind_inputs(plan, dict(payload.get("inputs") or {}))
        except Exception as exc:  # failed here, it would fail on every server: end it
            if isinstance(exc, FlowbuilderError):
                log.warning("queued run %s cannot start on %s: %s", record.id, self.owner, exc)
            else:
                log.exception("queued run %s cannot start on %s", record.id, self.owner)
            failed = RunResult(record.id, "failed", error=f"cannot start the run: {exc}")
            try:
                self.store.save_result(failed)
            except Exception:
                log.exception("could not record the failure of run %s", record.id)
            return
        self._execute(record.id, plan, bound, bool(payload.get("keep_outputs")))

    # ---- waiting and following ----------------------------------------------------------

    async def _await_end(self, run_id: str, plan: Plan) -> RunResult:
        """The result of a run wherever it executes: its task when it executes here, else
        its record once it has ended (polled every ``poll_s``)."""
        while True:
            local = self.active.get(run_id)
            if local is not None and local.task is not None:
                return await asyncio.shield(local.task)
            record = await asyncio.to_thread(self.store.get_run, run_id)
            if record.status in FINAL_RUN_STATUSES:
                nodes = await asyncio.to_thread(self.store.node_runs, run_id)
                return _result_from_record(record, nodes, plan)
            await asyncio.sleep(self.poll_s)

    async def wait(self, run_id: str, plan: Plan) -> RunResult:
        """The run's result once it has ended, wherever it executes.

        Raises:
            NotFound: no such run.
        """
        return await self._await_end(run_id, plan)

    def subscribe(self, run_id: str) -> asyncio.Queue[Any] | None:
        """A queue that receives the run's events from the first one on; None if the run
        is not executing in this process (use :meth:`follow`, which reads the store)."""
        run = self.active.get(run_id)
        if run is None:
            return None
        return self._subscribe(run)

    def _subscribe(self, run: ActiveRun) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for event in run.history:
            queue.put_nowait(event)
        run.subscribers.add(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue[Any]) -> None:
        run = self.active.get(run_id)
        if run is not None:
            run.subscribers.discard(queue)

    async def follow(
        self,
        run_id: str,
        after: int = 0,
        *,
        handle: ActiveRun | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> AsyncIterator[Any]:
        """The run's events with ``seq`` > ``after``, in order, until its end event.

        Live (streamed tokens included) while the run executes here, or when ``handle``
        is the run this process executed; else from the store's events table, polled
        every ``poll_s`` seconds (no streamed tokens; follows a run queued or executing
        on another server, and switches to live if this server claims it). Ends after
        the run's end event, or when the run's record is final without one (a run taken
        over as ``interrupted``). Yields None as a keep-alive after ``keepalive_s``
        seconds without events.

        Raises:
            NotFound: no such run.
        """
        while True:
            local = self.active.get(run_id)
            if local is None and handle is not None and handle.history:
                local = handle  # executed here and already ended: replay what it did
            if local is not None:
                queue = self._subscribe(local)
                try:
                    while True:
                        try:
                            event = await asyncio.wait_for(queue.get(), keepalive_s)
                        except TimeoutError:
                            yield None
                            continue
                        if event.seq > after:
                            after = event.seq
                            yield event
                        if isinstance(event, END_EVENTS):
                            return
                finally:
                    local.subscribers.discard(queue)
            # not executing here: from the database until it ends (or starts here)
            quiet_since = time.monotonic()
            while run_id not in self.active:
                batch = await asyncio.to_thread(self.store.events_after, run_id, after)
                for event in batch:
                    after = event.seq
                    yield event
                    if isinstance(event, END_EVENTS):
                        return
                if batch:
                    quiet_since = time.monotonic()
                    continue
                record = await asyncio.to_thread(self.store.get_run, run_id)
                if record.status in FINAL_RUN_STATUSES:
                    for event in await asyncio.to_thread(self.store.events_after, run_id, after):
                        yield event  # written between the two reads
                    return
                if time.monotonic() - quiet_since >= keepalive_s:
                    quiet_since = time.monotonic()
                    yield None
                await asyncio.sleep(self.poll_s)

    # ---- cancelling ---------------------------------------------------------------------

    def cancel(self, run_id: str) -> bool:
        """Cancel a run executing in this process; False if it does not execute here
        (see :meth:`request_cancel`)."""
        run = self.active.get(run_id)
        if run is None:
            return False
        run.cancel.cancel()
        return True

    async def request_cancel(self, run_id: str) -> tuple[bool, str]:
        """Cancel a run wherever it is: here at once; queued, at once in the database;
        on another server, by a request its owner acts on within about ``poll_s``.

        Returns ``(accepted, status)``: False with the final status when it already ended.

        Raises:
            NotFound: no such run.
        """
        if self.cancel(run_id):
            return True, "running"
        accepted, record = await asyncio.to_thread(self.store.request_cancel, run_id)
        if accepted and self.cancel(run_id):  # claimed here meanwhile
            return True, "running"
        return accepted, record.status

    # ---- the background queue task --------------------------------------------------------

    def start_background(self) -> None:
        """Start the queue task on the running event loop (idempotent): heartbeats,
        cancel requests, claims and take-overs every ``poll_s`` seconds."""
        if self._loop_task is not None and not self._loop_task.done():
            return
        self._wake = asyncio.Event()
        self._loop_task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop_background(self) -> None:
        """Stop the queue task (runs executing here are not stopped)."""
        task, self._loop_task = self._loop_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll_forever(self) -> None:
        beat_every = self.stale_s / 5
        reap_every = max(self.poll_s, self.stale_s / 4)
        last_beat = last_reap = 0.0
        failing = False
        assert self._wake is not None
        while True:
            try:
                now = time.monotonic()
                beat, reap = now - last_beat >= beat_every, now - last_reap >= reap_every
                await self.poll_once(beat=beat, reap=reap)
                last_beat = now if beat else last_beat
                last_reap = now if reap else last_reap
                if failing:
                    log.info("the run queue is reachable again")
                    failing = False
            except Exception:
                if not failing:  # once per outage, not every poll
                    log.exception("the run queue poll failed; retrying every %s s", self.poll_s)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def poll_once(self, *, beat: bool = True, reap: bool = True) -> list[str]:
        """One poll of the queue: heartbeat (when ``beat``) and cancel requests of the
        runs executing here, take-overs of dead servers' runs (when ``reap``), and claims
        while there is room. Returns the ids of the runs claimed and started."""
        ids = list(self.active)
        cancel, lost = await asyncio.to_thread(self.store.heartbeat, self.owner, ids, beat=beat)
        for run_id in cancel:
            self.cancel(run_id)
        for run_id in lost:
            if self.cancel(run_id):
                log.warning("run %s was taken over by another server; stopped here", run_id)
        if reap:
            requeued, interrupted = await asyncio.to_thread(
                self.store.recover_runs, self.owner, self.stale_s
            )
            if requeued or interrupted:
                log.warning(
                    "took over runs of a server that stopped: %d requeued, %d interrupted",
                    len(requeued),
                    len(interrupted),
                )
        room = self.max_runs - len(self.active)
        claimed = await asyncio.to_thread(self.store.claim_runs, self.owner, room)
        for record in claimed:
            self._start_claimed(record)
        return [r.id for r in claimed]


def _result_from_record(record: Run, nodes: list[Any], plan: Plan) -> RunResult:
    """A :class:`RunResult` rebuilt from a run's record (a run that executed elsewhere):
    outputs of artifact types become artifact references again. ``status`` may be
    ``interrupted``."""
    outputs = dict(record.outputs or {})
    for spec in plan.outputs:
        value = outputs.get(spec.name)
        if spec.type in REF_CLASSES and isinstance(value, dict):
            with contextlib.suppress(ValueError):  # not a reference: returned as it is
                outputs[spec.name] = REF_CLASSES[spec.type].model_validate(value)
    return RunResult(
        run_id=record.id,
        status=record.status,
        outputs=outputs,
        error=record.error,
        failed_node=record.failed_node,
        node_status={n.node_id: n.status for n in nodes},
        node_errors={n.node_id: n.error for n in nodes if n.error},
        elapsed_s=record.elapsed_s or 0.0,
    )


__all__ = ["END_EVENTS", "ActiveRun", "RunManager", "SettingError", "default_server_id"]
