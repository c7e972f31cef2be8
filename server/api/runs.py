"""Running published flows over HTTP, following runs, cancelling them.

Routes (under ``/api/v1``):

- ``POST /flows/{id}/run`` — synchronous: the body is the flow's inputs (JSON, or
  multipart with files; a file input also takes an artifact id), the answer its outputs.
  ``?timeout=`` seconds cancels a run that takes longer (504); ``?stream=true`` answers
  with Server-Sent Events (node events and LLM tokens), ending with a ``result`` event.
- ``POST /flows/{id}/runs`` — submit: 202 with the run id; poll ``GET /runs/{id}``.
- ``GET /runs``, ``GET /runs/{id}`` — run records (status, inputs, outputs, node runs).
- ``GET /runs/{id}/events`` — the run's events as Server-Sent Events; each has
  ``id: <seq>``, so a client reconnecting with ``Last-Event-ID`` gets only what it missed.
  The stream ends after the run's final event.
- ``POST /runs/{id}/cancel``.

Several servers may share one database (see :mod:`server.runs`): a run started on one can
wait in the queue and execute on another; every route above works on any of them.

Unpublished flows answer 404 on the run routes. Runs made only of quick pure nodes
(Input → Template → Output) take a fast path: no per-event recording, and one run record
written at the end, committed together with the runs that ended at the same moment
(:mod:`server.run_log`); their records read the same.

An answer carrying a run id (200, 202, 500, 504, …) is sent only once the run's record
is committed: a server killed at any moment loses no run it acknowledged.

Bodies are read with the request limits (:mod:`server.api.limits`): a JSON body or form
field beyond them answers 422 naming the limit; numbers in queries and headers are
bounded (a huge one answers 422).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from flowbuilder.artifacts import ArtifactStore
from flowbuilder.errors import GraphFileError, GraphInvalid, InputError
from flowbuilder.limits import LimitExceeded, check_json, parse_json
from flowbuilder.scheduler import RunResult
from flowbuilder.store import NotFound, Store
from flowbuilder.types import REF_CLASSES, ArtifactRef, to_jsonable
from server.api.answers import errors
from server.api.artifacts import store_upload
from server.api.fast_run import fast_run, not_recorded, timed_out, timeout_message
from server.api.limits import (
    MAX_SQL_INT,
    MAX_TIMEOUT_S,
    LimitedRoute,
    limits_of,
    read_json,
    unprocessable,
)
from server.api.schema import CompiledFlow, PlanCache
from server.run_log import NotRecorded
from server.runs import ActiveRun

log = logging.getLogger(__name__)
T = TypeVar("T")
router = APIRouter(prefix="/api/v1", tags=["runs"], route_class=LimitedRoute)

SSE_KEEPALIVE_S = 15.0
PRIVATE_RUN_FIELDS = {"payload"}
"""Run columns the API does not show (the queued graph and inputs: large, internal)."""
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
GENERIC_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}},
            "multipart/form-data": {"schema": {"type": "object", "additionalProperties": True}},
        }
    }
}


# ---- services -------------------------------------------------------------------------


def plans(request: Request) -> PlanCache:
    """The app's compiled-flow cache (made on first use)."""
    state = request.app.state
    cache: PlanCache | None = getattr(state, "fb_plans", None)
    if cache is None:
        fb = state.fb
        cache = state.fb_plans = PlanCache(fb.engine, fb.store)
    return cache


async def compiled(request: Request, flow_id: str, *, published: bool = True) -> CompiledFlow:
    """The flow, checked; 404 when missing (or unpublished, when ``published``), 409 when
    its graph has problems. A flow not compiled yet (or whose head is due to be read
    again) is read and checked in a worker thread, off the event loop."""
    cache = plans(request)
    try:
        found = cache.peek(flow_id)
        flow = found if found is not None else await asyncio.to_thread(cache.get, flow_id)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    except GraphInvalid as exc:
        raise HTTPException(
            409,
            {
                "message": f"flow {flow_id} has problems; fix them in the editor",
                "issues": [i.to_dict() for i in exc.issues],
            },
        ) from None
    except GraphFileError as exc:
        raise HTTPException(409, f"flow {flow_id}: {exc}") from None
    if published and not flow.published:
        raise HTTPException(404, f"flow {flow_id} is not published")
    return flow


# ---- inputs ---------------------------------------------------------------------------


def _invalid(field: str, msg: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "msg": msg, "type": kind}])


async def read_inputs(request: Request, flow: CompiledFlow) -> dict[str, Any]:
    """The request's flow inputs, validated against the flow's signature.

    JSON bodies are an object of inputs. Multipart bodies carry files for file inputs
    (stored as artifacts) and other inputs as form fields (JSON-decoded unless the input
    is text). A file input also accepts an artifact id or reference (never a server path).

    Raises:
        HTTPException: 422 naming the field (wrong type, missing, unknown, bad JSON).
    """
    content_type = request.headers.get("content-type", "")
    types = {i.name: i.type for i in flow.plan.inputs}
    values: dict[str, Any]
    if content_type.startswith("multipart/form-data") or content_type.startswith(
        "application/x-www-form-urlencoded"
    ):
        values = {}
        form = await request.form()
        limits = limits_of(request)
        for key, item in form.multi_items():
            try:
                check_json(key if isinstance(item, UploadFile) else [key, item], limits, ("body",))
            except LimitExceeded as exc:
                raise unprocessable(exc) from None
            if isinstance(item, UploadFile):
                kind = types.get(key, "file")
                name = item.filename or key
                store = request.app.state.fb.engine.artifacts
                values[key] = await asyncio.to_thread(
                    store_upload, store, item.file, name, kind if kind in REF_CLASSES else None
                )
            elif types.get(key, "text") == "text":
                values[key] = item
            else:
                try:
                    values[key] = parse_json(str(item), limits, ("body", key))
                except LimitExceeded as exc:
                    raise unprocessable(exc) from None
                except json.JSONDecodeError:
                    values[key] = item
    else:
        body = await request.body()
        if not body.strip():
            values = {}
        else:
            try:
                values = await read_json(request)
            except json.JSONDecodeError as exc:
                raise HTTPException(
                    422,
                    [
                        {
                            "loc": ["body", exc.pos],
                            "msg": f"JSON decode error: {exc.msg}",
                            "type": "json_invalid",
                        }
                    ],
                ) from None
            if not isinstance(values, dict):
                raise HTTPException(
                    422,
                    [
                        {
                            "loc": ["body"],
                            "msg": "the body is an object of the flow's inputs",
                            "type": "dict_type",
                        }
                    ],
                )
    return validate_inputs(request, flow, values)


def validate_inputs(request: Request, flow: CompiledFlow, values: dict[str, Any]) -> dict[str, Any]:
    """Check ``values`` with the flow's request model; resolve artifact ids. Raises 422."""
    try:
        model = flow.inputs.model_validate(values, strict=True)
    except ValidationError as exc:
        raise HTTPException(
            422,
            [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ],
        ) from None
    checked: dict[str, Any] = {}
    given = model.model_fields_set
    store = request.app.state.fb.engine.artifacts
    for spec in flow.plan.inputs:
        if spec.name not in given:
            continue
        value = getattr(model, spec.name)
        if spec.type in REF_CLASSES and isinstance(value, str):
            ref = store.info(value)
            if ref is None:
                raise _invalid(spec.name, f"no artifact {value!r}; upload it first")
            value = ref.model_dump()
        elif isinstance(value, BaseModel):
            value = value.model_dump()
        checked[spec.name] = value
    return checked


def bind(request: Request, flow: CompiledFlow, values: dict[str, Any]) -> dict[str, Any]:
    """Values by Input node id (see ``Engine.bind_inputs``); 422 naming the input."""
    try:
        bound: dict[str, Any] = request.app.state.fb.engine.bind_inputs(flow.plan, values)
    except InputError as exc:
        raise _invalid(exc.name, str(exc)) from None
    return bound


# ---- answers --------------------------------------------------------------------------


def with_artifact_urls(value: Any, artifacts: ArtifactStore | None = None) -> Any:
    """Plain JSON outputs where every artifact reference also carries ``url`` (where to
    download it) and, when ``artifacts`` is given, ``data`` (its bytes, base64)."""
    if isinstance(value, ArtifactRef):
        out: dict[str, Any] = {
            **value.model_dump(mode="json"),
            "url": f"/api/v1/artifacts/{value.id}",
        }
        if artifacts is not None:
            out["data"] = base64.b64encode(artifacts.path(value).read_bytes()).decode("ascii")
        return out
    if isinstance(value, dict):
        return {k: with_artifact_urls(v, artifacts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [with_artifact_urls(v, artifacts) for v in value]
    return to_jsonable(value)


def result_body(
    result: RunResult, artifacts: ArtifactStore | None = None
) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for a run result: 200 finished, 500 failed (naming the node)
    or interrupted (the server executing it stopped), 409 cancelled. Artifacts in the
    outputs come with their URL, and with their bytes as base64 when ``artifacts`` (the
    store to read them from) is given."""
    body: dict[str, Any] = {
        "run_id": result.run_id,
        "status": result.status,
        "elapsed_s": round(result.elapsed_s, 6),
        "outputs": with_artifact_urls(result.outputs, artifacts),
    }
    if result.status == "finished":
        return 200, body
    if result.status in ("failed", "interrupted"):  # interrupted: its server stopped
        body.update(error=result.error, node_id=result.failed_node)
        return 500, {"detail": body}
    return 409, {"detail": {**body, "error": "the run was cancelled"}}


def sse(event: Any) -> str:
    """One Server-Sent Event: ``id`` = the event's seq, ``event`` = its type."""
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"


async def timed(items: AsyncIterator[T], timeout: float | None) -> AsyncIterator[T]:
    """``items`` until they end; with ``timeout``, raise TimeoutError once that many
    seconds have passed (``items`` is closed either way)."""
    loop = asyncio.get_running_loop()
    end = None if timeout is None else loop.time() + timeout
    try:
        while True:
            left = None if end is None else end - loop.time()
            try:
                item = await asyncio.wait_for(anext(items), left)
            except StopAsyncIteration:
                return
            yield item
    finally:
        await items.aclose()  # type: ignore[attr-defined]


async def follow(
    request: Request,
    run_id: str,
    after: int = 0,
    *,
    active: ActiveRun | None = None,
    timeout: float | None = None,
) -> AsyncIterator[str]:
    """The run's events after ``after`` as SSE text, until its final event: live when
    the run executes here, else from the store (polled, so a run executing on another
    server sharing the database can be followed too). Given the ``active`` run it
    started, a ``result`` event with the full outputs follows.

    With ``timeout`` (seconds), a run still going by then is cancelled and the stream
    ends with an ``error`` event: ``{"run_id", "status": 504, "error"}``.
    """
    fb = request.app.state.fb
    events = fb.runs.follow(run_id, after, handle=active, keepalive_s=SSE_KEEPALIVE_S)
    try:
        async for event in timed(events, timeout):
            yield ": keep-alive\n\n" if event is None else sse(event)
    except TimeoutError:
        await fb.runs.request_cancel(run_id)
        why = {"run_id": run_id, "status": 504, "error": timeout_message(timeout or 0)}
        yield f"event: error\ndata: {json.dumps(why)}\n\n"
        return
    if active is not None and active.task is not None:
        res = await active.task
        data = json.dumps(
            {"run_id": run_id, "status": res.status, "outputs": to_jsonable(res.outputs)}
        )
        yield f"event: result\ndata: {data}\n\n"


# ---- routes ---------------------------------------------------------------------------


RUN_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the run's outputs; with ?stream=true, its events",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    **errors(400, 404, 409, 413, 500, 504),
}
TIMEOUT = Query(
    None,
    gt=0,
    le=MAX_TIMEOUT_S,
    allow_inf_nan=False,
    description=f"seconds before the run is cancelled (at most {MAX_TIMEOUT_S:g})",
)


@router.post(
    "/flows/{flow_id}/run", response_model=None, openapi_extra=GENERIC_BODY, responses=RUN_ANSWERS
)
async def run_flow(
    request: Request,
    flow_id: str,
    timeout: float | None = TIMEOUT,
    stream: bool = Query(False, description="answer with Server-Sent Events"),
    artifacts: Literal["url", "base64"] = Query(
        "url", description="file outputs as download URLs, or also inline as base64"
    ),
) -> Response:
    """Run a published flow and answer its outputs (see each flow's own operation under
    "published flows" for its typed request and response). File outputs (images, audio,
    …) carry a ``url``; with ``artifacts=base64`` also their bytes in ``data``."""
    flow = await compiled(request, flow_id)
    values = await read_inputs(request, flow)
    fb = request.app.state.fb
    inline = fb.engine.artifacts if artifacts == "base64" else None
    if flow.trivial and not stream:
        result = await fast_run(request, flow, values, _fast_bound(request, flow, values), timeout)
        status, body = result_body(result, inline)
        return JSONResponse(body, status_code=status)
    bind(request, flow, values)
    active = fb.runs.start(
        flow.plan, values, flow_id=flow.flow_id, flow_version=flow.version, source="api"
    )
    if stream:
        return StreamingResponse(
            follow(request, active.run_id, active=active, timeout=timeout),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, "X-Run-Id": active.run_id},
        )
    assert active.task is not None
    try:
        result = await asyncio.wait_for(asyncio.shield(active.task), timeout)
    except TimeoutError:
        await fb.runs.request_cancel(active.run_id)
        raise timed_out(active.run_id, timeout or 0) from None
    if not active.recorded:
        raise not_recorded(NotRecorded("the run's final record could not be saved"))
    status, body = result_body(result, inline)
    return JSONResponse(body, status_code=status)


def _fast_bound(request: Request, flow: CompiledFlow, values: dict[str, Any]) -> dict[str, Any]:
    """Inputs by Input node id for the fast path; 422 naming a missing input."""
    if any(i.type in REF_CLASSES for i in flow.plan.inputs):
        return bind(request, flow, values)
    # already checked, strictly, by the flow's request model
    missing = [i.name for i in flow.plan.inputs if i.required and i.name not in values]
    if missing:
        raise _invalid(missing[0], "a value is required")
    return {i.node_id: values[i.name] for i in flow.plan.inputs if i.name in values}


@router.post(
    "/flows/{flow_id}/runs",
    status_code=202,
    openapi_extra=GENERIC_BODY,
    responses=errors(400, 404, 409, 413),
)
async def submit_run(request: Request, flow_id: str) -> dict[str, Any]:
    """Start a run of a published flow and answer at once (202) with its id; poll
    ``GET /runs/{id}`` or follow ``GET /runs/{id}/events``. When every server is busy
    (``FLOWBUILDER_MAX_RUNS``) the run waits in the queue, status ``queued``."""
    flow = await compiled(request, flow_id)
    values = await read_inputs(request, flow)
    bind(request, flow, values)
    active = request.app.state.fb.runs.start(
        flow.plan, values, flow_id=flow.flow_id, flow_version=flow.version, source="api"
    )
    return {
        "run_id": active.run_id,
        "status": "queued",
        "url": f"/api/v1/runs/{active.run_id}",
        "events_url": f"/api/v1/runs/{active.run_id}/events",
    }


def run_record(store: Store, run_id: str, *, nodes: bool = True) -> dict[str, Any]:
    """A run as JSON: its record and, when ``nodes``, its node runs. Raises: NotFound."""
    run = store.get_run(run_id)
    data: dict[str, Any] = run.model_dump(mode="json", exclude=PRIVATE_RUN_FIELDS)
    if nodes:
        data["nodes"] = [nr.model_dump(mode="json") for nr in store.node_runs(run_id)]
    return data


@router.get("/runs")
async def list_runs(
    request: Request,
    flow_id: str | None = None,
    status: str | None = None,
    source: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_SQL_INT),
) -> list[dict[str, Any]]:
    """Runs, newest first; filter by flow, status or source (``api``, ``canvas``, ``cli``)."""
    store = request.app.state.fb.store
    runs = await asyncio.to_thread(
        store.list_runs, flow_id, limit if source is None else 500, offset, status=status
    )
    rows = [
        r.model_dump(mode="json", exclude=PRIVATE_RUN_FIELDS)
        for r in runs
        if source is None or r.source == source
    ]
    return rows[:limit]


@router.get("/runs/{run_id}", responses=errors(404))
async def get_run(request: Request, run_id: str) -> dict[str, Any]:
    """A run's record: status, inputs, outputs, error, timings, and its node runs."""
    try:
        return await asyncio.to_thread(run_record, request.app.state.fb.store, run_id)
    except NotFound:
        raise HTTPException(404, f"no run {run_id}") from None


EVENTS_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the run's events (Server-Sent Events)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **errors(404),
}


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses=EVENTS_ANSWERS,
)
async def run_events(
    request: Request,
    run_id: str,
    last_event_id: int | None = Query(None, ge=0, le=MAX_SQL_INT),
    last_event_id_header: str | None = Header(
        None,
        alias="Last-Event-ID",
        pattern=r"^[0-9]{1,10}$",
        description=f"the id of the last event received (0 to {MAX_SQL_INT}); only later "
        "ones are sent",
    ),
) -> StreamingResponse:
    """The run's events as Server-Sent Events, ending after its final event. Resume with
    the ``Last-Event-ID`` header (or ``?last_event_id=``): only later events are sent."""
    after = last_event_id or 0
    if last_event_id_header:
        after = _event_id(last_event_id_header)
    fb = request.app.state.fb
    if run_id not in fb.runs.active:
        try:
            await asyncio.to_thread(fb.store.get_run, run_id)
        except NotFound:
            raise HTTPException(404, f"no run {run_id}") from None
    return StreamingResponse(
        follow(request, run_id, after), media_type="text/event-stream", headers=SSE_HEADERS
    )


@router.post("/runs/{run_id}/cancel", status_code=202, responses=errors(404, 409))
async def cancel_run(request: Request, run_id: str) -> dict[str, Any]:
    """Cancel a run that is still going, wherever it executes (a queued run is cancelled
    at once; one on another server sharing the database within about a second); 409
    when it already ended."""
    fb = request.app.state.fb
    try:
        accepted, status = await fb.runs.request_cancel(run_id)
    except NotFound:
        raise HTTPException(404, f"no run {run_id}") from None
    if accepted:
        return {"run_id": run_id, "cancelling": True}
    raise HTTPException(409, f"run {run_id} is not running (it is {status})")


def _event_id(header: str) -> int:
    """A ``Last-Event-ID`` header's event number; 422 unless it is one (0 to
    :data:`~server.api.limits.MAX_SQL_INT`)."""
    text = header.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_SQL_INT:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["header", "Last-Event-ID"],
                    "msg": f"Last-Event-ID must be an event's id, a whole number from 0 to "
                    f"{MAX_SQL_INT}",
                    "type": "int_parsing",
                }
            ],
        )
    return int(text)
