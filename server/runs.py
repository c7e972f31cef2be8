"""Runs started by the server (canvas or API): execution, fan-out of events, cancellation.

A :class:`RunManager` lives as long as the server. ``start`` checks the graph and inputs,
records the run in the store, and executes it as a task on the server's event loop.
Every event goes to the store's recorder and to each subscriber's queue, so the canvas
and Server-Sent Event streams see the same events in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from flowbuilder import events
from flowbuilder.engine import Engine
from flowbuilder.graph import Graph
from flowbuilder.scheduler import CancelToken, RunResult
from flowbuilder.store import Store
from flowbuilder.types import to_jsonable
from flowbuilder.validate import Plan

log = logging.getLogger(__name__)

END_EVENTS = (events.RunFinished, events.RunFailed, events.RunCancelled)


@dataclass
class ActiveRun:
    """A run this process is executing."""

    run_id: str
    plan: Plan
    cancel: CancelToken = field(default_factory=CancelToken)
    history: list[Any] = field(default_factory=list)
    subscribers: set[asyncio.Queue[Any]] = field(default_factory=set)
    task: asyncio.Task[RunResult] | None = None
    result: RunResult | None = None


class RunManager:
    """Starts runs and lets callers follow and cancel them."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store
        self.active: dict[str, ActiveRun] = {}

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
        """Check and start a run on the running event loop; returns at once.

        Raises:
            GraphInvalid: the graph has problems (nothing is recorded or run).
            InputError: an input is missing or of the wrong type.
        """
        plan = graph if isinstance(graph, Plan) else self.engine.compile(graph)
        bound = self.engine.bind_inputs(plan, inputs or {})
        run_id = uuid.uuid4().hex
        self.store.create_run(
            run_id,
            flow_id=flow_id,
            flow_version=flow_version,
            source=source,
            inputs=to_jsonable(inputs or {}),
        )
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
                    self.store.save_result(result)  # full outputs; events carry summaries
                except Exception:
                    log.exception("could not save the result of run %s", run_id)
                return result
            finally:
                self.active.pop(run_id, None)

        run.task = asyncio.get_running_loop().create_task(execute())
        return run

    def subscribe(self, run_id: str) -> asyncio.Queue[Any] | None:
        """A queue that receives the run's events from the first one on; None if the run
        is not active in this process (read its record from the store instead)."""
        run = self.active.get(run_id)
        if run is None:
            return None
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for event in run.history:
            queue.put_nowait(event)
        run.subscribers.add(queue)
        return queue

    def unsubscribe(self, run_id: str, queue: asyncio.Queue[Any]) -> None:
        run = self.active.get(run_id)
        if run is not None:
            run.subscribers.discard(queue)

    def cancel(self, run_id: str) -> bool:
        """Cancel an active run; False if it is not running in this process."""
        run = self.active.get(run_id)
        if run is None:
            return False
        run.cancel.cancel()
        return True
