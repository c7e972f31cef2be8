"""Flows over HTTP: CRUD, versions, restore, publish, validate (under ``/api/v1``).

- ``GET /flows`` (``?published=true``), ``POST /flows`` {name, graph} → 201
- ``GET /flows/{id}`` (with its graph and signature), ``PUT /flows/{id}`` {graph, name?}
  (a new version when the graph changed), ``PATCH /flows/{id}`` {name?, published?},
  ``DELETE /flows/{id}`` → 204
- ``POST /flows/{id}/publish``, ``POST /flows/{id}/unpublish``
- ``GET /flows/{id}/versions``, ``GET /flows/{id}/versions/{n}``,
  ``POST /flows/{id}/versions/{n}/restore``
- ``POST /flows/{id}/validate`` — every problem of the saved graph (or of a graph in the
  body), each naming its node, plus the flow's signature when there are none.

A graph in a body is refused with 422 when it breaks a limit (nodes, links, nesting,
string length, lone surrogates; see :mod:`server.api.limits`), so every stored flow can
be read back. Parsing and checking a graph, and the store, run in worker threads, never
on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Path, Request, Response
from pydantic import BaseModel, Field

from flowbuilder.errors import GraphFileError
from flowbuilder.graph import graph_from_data
from flowbuilder.limits import LimitExceeded, check_graph_size
from flowbuilder.store import Flow, FlowVersion, NotFound, Store
from flowbuilder.validate import Plan, check
from server.api.answers import errors
from server.api.limits import MAX_SQL_INT, LimitedRoute, limits_of, unprocessable

router = APIRouter(prefix="/api/v1", tags=["flows"], route_class=LimitedRoute)
VERSION = Path(ge=1, le=MAX_SQL_INT, description="a version number of the flow")


class FlowCreate(BaseModel):
    """A new flow: a name and a graph file's JSON (LiteGraph serialisation)."""

    name: str = Field(min_length=1, max_length=200)
    graph: dict[str, Any]


class FlowSave(BaseModel):
    """A save: the new graph and, optionally, a new name."""

    graph: dict[str, Any]
    name: str | None = Field(None, min_length=1, max_length=200)


class FlowPatch(BaseModel):
    """Rename and/or publish (serve as an endpoint) a flow."""

    name: str | None = Field(None, min_length=1, max_length=200)
    published: bool | None = None


def _store(request: Request) -> Store:
    store: Store = request.app.state.fb.store
    return store


def _changed(request: Request, flow_id: str) -> None:
    """Let the run routes and the API schema see a flow's change at once."""
    cache = getattr(request.app.state, "fb_plans", None)
    if cache is not None:
        cache.invalidate(flow_id)


def signature(plan: Plan) -> dict[str, Any]:
    """A flow's inputs and outputs as JSON (name, type, required, default, description)."""
    return {
        "inputs": [
            {
                "name": i.name,
                "type": i.type,
                "required": i.required,
                "default": i.default,
                "description": i.description,
            }
            for i in plan.inputs
        ],
        "outputs": [
            {"name": o.name, "type": o.type, "description": o.description} for o in plan.outputs
        ],
    }


def flow_summary(flow: Flow) -> dict[str, Any]:
    return {
        "id": flow.id,
        "name": flow.name,
        "version": flow.version,
        "published": flow.published,
        "created_at": flow.created_at.isoformat(),
        "updated_at": flow.updated_at.isoformat(),
        "run_url": f"/api/v1/flows/{flow.id}/run",
    }


def _checked(request: Request, graph: dict[str, Any]) -> dict[str, Any]:
    """``{"valid", "issues", "inputs", "outputs"}`` for a graph's JSON."""
    try:
        parsed = graph_from_data(graph)
    except GraphFileError as exc:
        return {
            "valid": False,
            "issues": [{"code": "bad_file", "message": exc.message, "node_id": None}],
            "inputs": [],
            "outputs": [],
        }
    issues, plan = check(parsed, request.app.state.fb.engine.registry)
    if plan is None:
        return {
            "valid": False,
            "issues": [i.to_dict() for i in issues],
            "inputs": [],
            "outputs": [],
        }
    return {"valid": True, "issues": [], **signature(plan)}


def _get(store: Store, flow_id: str) -> Flow:
    try:
        return store.get_flow(flow_id)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None


def _graph_or_422(request: Request, graph: dict[str, Any]) -> None:
    """Refuse a graph in a body that breaks a limit (422 naming it) or is not a graph
    file (422 with the parser's message)."""
    try:
        check_graph_size(graph, limits_of(request), ("body", "graph"))
        graph_from_data(graph)
    except LimitExceeded as exc:
        raise unprocessable(exc) from None
    except GraphFileError as exc:
        raise HTTPException(
            422, [{"loc": ["body", "graph"], "msg": exc.message, "type": "graph_file"}]
        ) from None


@router.get("/flows")
async def list_flows(request: Request, published: bool | None = None) -> list[dict[str, Any]]:
    """Every flow (or only published / unpublished ones), most recently updated first."""
    flows = await asyncio.to_thread(_store(request).list_flows, published=published)
    return [flow_summary(f) for f in flows]


@router.post("/flows", status_code=201, responses=errors(413))
async def create_flow(request: Request, body: FlowCreate) -> dict[str, Any]:
    """Save a new flow (version 1, unpublished)."""
    await asyncio.to_thread(_graph_or_422, request, body.graph)
    flow = await asyncio.to_thread(_store(request).create_flow, body.name, body.graph)
    return flow_summary(flow)


@router.get("/flows/{flow_id}", responses=errors(404))
async def get_flow(request: Request, flow_id: str) -> dict[str, Any]:
    """A flow with its current graph and its signature (or its problems)."""

    def read() -> dict[str, Any]:
        flow = _get(_store(request), flow_id)
        return {**flow_summary(flow), "graph": flow.graph, **_checked(request, flow.graph)}

    return await asyncio.to_thread(read)


@router.put("/flows/{flow_id}", responses=errors(404, 413))
async def save_flow(request: Request, flow_id: str, body: FlowSave) -> dict[str, Any]:
    """Save a graph: a new version when it differs from the current one."""
    _changed(request, flow_id)
    await asyncio.to_thread(_graph_or_422, request, body.graph)
    try:
        flow = await asyncio.to_thread(_store(request).save_flow, flow_id, body.graph, body.name)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    _changed(request, flow_id)
    return flow_summary(flow)


@router.patch("/flows/{flow_id}", responses=errors(404, 413))
async def patch_flow(request: Request, flow_id: str, body: FlowPatch) -> dict[str, Any]:
    """Rename and/or publish or unpublish a flow."""
    _changed(request, flow_id)
    store = _store(request)

    def patch() -> Flow:
        flow = _get(store, flow_id)
        if body.name is not None:
            flow = store.rename_flow(flow_id, body.name)
        if body.published is not None:
            flow = store.set_published(flow_id, body.published)
        return flow

    try:
        return flow_summary(await asyncio.to_thread(patch))
    except NotFound:  # deleted between the read and the change
        raise HTTPException(404, f"no flow {flow_id}") from None


@router.delete("/flows/{flow_id}", status_code=204, responses=errors(404))
async def delete_flow(request: Request, flow_id: str) -> Response:
    """Delete a flow and its versions (its runs are kept)."""
    _changed(request, flow_id)
    try:
        await asyncio.to_thread(_store(request).delete_flow, flow_id)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    return Response(status_code=204)


async def _set_published(request: Request, flow_id: str, published: bool) -> dict[str, Any]:
    _changed(request, flow_id)
    try:
        flow = await asyncio.to_thread(_store(request).set_published, flow_id, published)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    return flow_summary(flow)


@router.post("/flows/{flow_id}/publish", responses=errors(404))
async def publish(request: Request, flow_id: str) -> dict[str, Any]:
    """Serve the flow as an endpoint (it appears in /openapi.json and /docs)."""
    return await _set_published(request, flow_id, True)


@router.post("/flows/{flow_id}/unpublish", responses=errors(404))
async def unpublish(request: Request, flow_id: str) -> dict[str, Any]:
    """Stop serving the flow: its run routes answer 404."""
    return await _set_published(request, flow_id, False)


def _version(v: FlowVersion, graph: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"version": v.version, "created_at": v.created_at.isoformat()}
    if graph:
        data["graph"] = v.graph
    return data


@router.get("/flows/{flow_id}/versions", responses=errors(404))
async def list_versions(request: Request, flow_id: str) -> list[dict[str, Any]]:
    """A flow's versions, newest first (without their graphs)."""
    try:
        versions = await asyncio.to_thread(_store(request).list_versions, flow_id)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    return [_version(v, False) for v in versions]


@router.get("/flows/{flow_id}/versions/{version}", responses=errors(404))
async def get_version(request: Request, flow_id: str, version: int = VERSION) -> dict[str, Any]:
    """One version of a flow, with its graph."""
    try:
        found = await asyncio.to_thread(_store(request).get_version, flow_id, version)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return _version(found, True)


@router.post("/flows/{flow_id}/versions/{version}/restore", responses=errors(404))
async def restore_version(request: Request, flow_id: str, version: int = VERSION) -> dict[str, Any]:
    """Make an old version current again (as a new version; history is kept)."""
    _changed(request, flow_id)
    try:
        flow = await asyncio.to_thread(_store(request).restore_version, flow_id, version)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return flow_summary(flow)


@router.post("/flows/{flow_id}/validate", responses=errors(404, 413))
async def validate_flow(
    request: Request, flow_id: str, graph: dict[str, Any] | None = Body(None, embed=True)
) -> dict[str, Any]:
    """Check the saved graph (or ``{"graph": …}`` in the body) without running it; a
    graph in the body beyond the graph limits answers 422."""

    def validate() -> dict[str, Any]:
        flow = _get(_store(request), flow_id)
        if graph is None:
            return _checked(request, flow.graph)
        try:
            check_graph_size(graph, limits_of(request), ("body", "graph"))
        except LimitExceeded as exc:
            raise unprocessable(exc) from None
        return _checked(request, graph)

    return await asyncio.to_thread(validate)
