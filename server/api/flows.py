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
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request, Response
from pydantic import BaseModel, Field

from flowbuilder.errors import GraphFileError
from flowbuilder.graph import graph_from_data
from flowbuilder.store import Flow, FlowVersion, NotFound, Store
from flowbuilder.validate import Plan, check

router = APIRouter(prefix="/api/v1", tags=["flows"])


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


def _graph_or_422(graph: dict[str, Any]) -> None:
    try:
        graph_from_data(graph)
    except GraphFileError as exc:
        raise HTTPException(
            422, [{"loc": ["body", "graph"], "msg": exc.message, "type": "graph_file"}]
        ) from None


@router.get("/flows")
async def list_flows(request: Request, published: bool | None = None) -> list[dict[str, Any]]:
    """Every flow (or only published / unpublished ones), most recently updated first."""
    flows = await asyncio.to_thread(_store(request).list_flows, published=published)
    return [flow_summary(f) for f in flows]


@router.post("/flows", status_code=201)
async def create_flow(request: Request, body: FlowCreate) -> dict[str, Any]:
    """Save a new flow (version 1, unpublished)."""
    _graph_or_422(body.graph)
    flow = await asyncio.to_thread(_store(request).create_flow, body.name, body.graph)
    return flow_summary(flow)


@router.get("/flows/{flow_id}")
async def get_flow(request: Request, flow_id: str) -> dict[str, Any]:
    """A flow with its current graph and its signature (or its problems)."""
    flow = _get(_store(request), flow_id)
    checked = _checked(request, flow.graph)
    return {**flow_summary(flow), "graph": flow.graph, **checked}


@router.put("/flows/{flow_id}")
async def save_flow(request: Request, flow_id: str, body: FlowSave) -> dict[str, Any]:
    """Save a graph: a new version when it differs from the current one."""
    _changed(request, flow_id)
    _graph_or_422(body.graph)
    try:
        flow = await asyncio.to_thread(_store(request).save_flow, flow_id, body.graph, body.name)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    _changed(request, flow_id)
    return flow_summary(flow)


@router.patch("/flows/{flow_id}")
async def patch_flow(request: Request, flow_id: str, body: FlowPatch) -> dict[str, Any]:
    """Rename and/or publish or unpublish a flow."""
    _changed(request, flow_id)
    store = _store(request)
    flow = _get(store, flow_id)
    if body.name is not None:
        flow = store.rename_flow(flow_id, body.name)
    if body.published is not None:
        flow = store.set_published(flow_id, body.published)
    return flow_summary(flow)


@router.delete("/flows/{flow_id}", status_code=204)
async def delete_flow(request: Request, flow_id: str) -> Response:
    """Delete a flow and its versions (its runs are kept)."""
    _changed(request, flow_id)
    try:
        _store(request).delete_flow(flow_id)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    return Response(status_code=204)


@router.post("/flows/{flow_id}/publish")
async def publish(request: Request, flow_id: str) -> dict[str, Any]:
    """Serve the flow as an endpoint (it appears in /openapi.json and /docs)."""
    _changed(request, flow_id)
    try:
        return flow_summary(_store(request).set_published(flow_id, True))
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None


@router.post("/flows/{flow_id}/unpublish")
async def unpublish(request: Request, flow_id: str) -> dict[str, Any]:
    """Stop serving the flow: its run routes answer 404."""
    _changed(request, flow_id)
    try:
        return flow_summary(_store(request).set_published(flow_id, False))
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None


def _version(v: FlowVersion, graph: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"version": v.version, "created_at": v.created_at.isoformat()}
    if graph:
        data["graph"] = v.graph
    return data


@router.get("/flows/{flow_id}/versions")
async def list_versions(request: Request, flow_id: str) -> list[dict[str, Any]]:
    """A flow's versions, newest first (without their graphs)."""
    try:
        versions = _store(request).list_versions(flow_id)
    except NotFound:
        raise HTTPException(404, f"no flow {flow_id}") from None
    return [_version(v, False) for v in versions]


@router.get("/flows/{flow_id}/versions/{version}")
async def get_version(request: Request, flow_id: str, version: int) -> dict[str, Any]:
    """One version of a flow, with its graph."""
    try:
        return _version(_store(request).get_version(flow_id, version), True)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/flows/{flow_id}/versions/{version}/restore")
async def restore_version(request: Request, flow_id: str, version: int) -> dict[str, Any]:
    """Make an old version current again (as a new version; history is kept)."""
    _changed(request, flow_id)
    try:
        return flow_summary(_store(request).restore_version(flow_id, version))
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/flows/{flow_id}/validate")
async def validate_flow(
    request: Request, flow_id: str, graph: dict[str, Any] | None = Body(None, embed=True)
) -> dict[str, Any]:
    """Check the saved graph (or ``{"graph": …}`` in the body) without running it."""
    flow = _get(_store(request), flow_id)
    return _checked(request, graph if graph is not None else flow.graph)
