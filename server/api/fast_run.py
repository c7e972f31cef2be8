"""The fast path of ``POST /flows/{id}/run``: runs made only of quick pure nodes.

Such a run (Input → Template → Output, say) executes inside the request, without
per-event recording; its whole record is written once, at its end, through the group
commit of :mod:`server.run_log` — and the answer goes out only after that commit, so a
run id that was answered is a run the store has. ``?timeout=`` cancels a run that takes
longer and answers 504, like the other run paths.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import HTTPException, Request

from flowbuilder.scheduler import CancelToken, RunResult
from flowbuilder.types import to_jsonable
from server.api.schema import CompiledFlow
from server.run_log import NotRecorded, run_log


def timed_out(run_id: str, timeout: float) -> HTTPException:
    """The 504 of a run cancelled by ``?timeout=`` (the same on every run path)."""
    return HTTPException(504, {"run_id": run_id, "error": timeout_message(timeout)})


def timeout_message(timeout: float) -> str:
    return f"the run took longer than {timeout:g} s (?timeout); cancelled"


def not_recorded(exc: NotRecorded) -> HTTPException:
    """The 503 of a run whose record could not be committed: no run id is acknowledged."""
    return HTTPException(503, {"error": f"{exc}; the run is not acknowledged, try again"})


async def fast_run(
    request: Request,
    flow: CompiledFlow,
    values: dict[str, Any],
    bound: dict[str, Any],
    timeout: float | None,
) -> RunResult:
    """Execute ``flow`` in the request and commit its record; the result to answer.

    Args:
        values: the checked inputs by name (recorded as the run's inputs).
        bound: the same values by Input node id (see ``Engine.bind_inputs``).
        timeout: seconds before the run is cancelled (504), or None.

    Raises:
        HTTPException: 504 when the run took longer than ``timeout`` (recorded as
            cancelled, or finished if it ended meanwhile); 503 when its record could not
            be committed.
    """
    fb = request.app.state.fb
    run_id = uuid.uuid4().hex
    created = datetime.now(UTC)
    cancel = CancelToken()
    task = asyncio.ensure_future(
        fb.engine.scheduler.execute(flow.plan, bound, run_id=run_id, use_cache=False, cancel=cancel)
    )
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        cancel.cancel()
    result: RunResult = await task
    # the wait timed out (not "more than timeout seconds passed": the event loop may fire
    # a timer a little early, and a run cancelled then answered 409)
    late = not done
    if late and result.status == "cancelled":
        result.error = timeout_message(timeout or 0)
    try:
        await run_log(request.app.state).record(*_record(flow, run_id, values, result, created))
    except NotRecorded as exc:
        raise not_recorded(exc) from None
    if late:
        raise timed_out(run_id, timeout or 0)
    return result


def _record(
    flow: CompiledFlow,
    run_id: str,
    values: dict[str, Any],
    result: RunResult,
    created: datetime,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``runs`` row and ``node_runs`` rows of a fast-path run that ended."""
    finished = datetime.now(UTC)
    started = finished - timedelta(seconds=result.elapsed_s)
    run = {
        "id": run_id,
        "flow_id": flow.flow_id,
        "flow_version": flow.version,
        "source": "api",
        "status": result.status,
        "inputs": to_jsonable(values),
        "outputs": to_jsonable(result.outputs),
        "error": result.error,
        "failed_node": result.failed_node,
        "created_at": created,
        "started_at": started,
        "finished_at": finished,
        "elapsed_s": result.elapsed_s,
    }
    nodes = [
        {
            "run_id": run_id,
            "node_id": node_id,
            "node_type": flow.plan.nodes[node_id].type,
            "status": status,
            "started_at": started,
            "finished_at": finished,
            "elapsed_s": None,
            "error": result.node_errors.get(node_id),
            "cached": status == "cached",
            "attempts": 1 if status in ("done", "failed") else 0,
            "outputs": None,
        }
        for node_id, status in result.node_status.items()
    ]
    return run, nodes
