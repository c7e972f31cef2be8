"""Typed per-flow schemas: request and response models built from a flow's signature.

A flow's Input nodes become the fields of its request model and its Output nodes the
fields of its response model (types from :func:`flowbuilder.types.python_type`). The
models validate request bodies (a wrong type is a 422 naming the field) and feed the
OpenAPI document, where each published flow is its own operation (see
:func:`flow_openapi`). Compiled plans are cached per flow version (:class:`PlanCache`),
so a run of an unchanged flow does not check its graph again.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import create_model as _create_model
from sqlmodel import SQLModel

from flowbuilder.engine import Engine
from flowbuilder.graph import graph_from_data
from flowbuilder.store import NotFound, Store
from flowbuilder.types import REF_CLASSES, parse_list, python_type
from flowbuilder.validate import FlowInput, FlowOutput, Plan
from server.api.answers import errors
from server.api.limits import MAX_TIMEOUT_S

_STRICT: dict[str, Any] = {
    "text": StrictStr,
    "integer": StrictInt,
    "number": StrictFloat,
    "boolean": StrictBool,
}
_FLOWS = SQLModel.metadata.tables["flows"]
FLOW_ERRORS = errors(400, 404, 409, 413, 422, 500, 504)
"""The error answers of a published flow's own run operation."""


def request_type(port_type: str) -> Any:
    """The type a request field of ``port_type`` accepts: scalars strictly (no "5" for
    an integer), artifact references as a reference object or an artifact id string."""
    inner = parse_list(port_type)
    if inner is not None:
        return list[request_type(inner)]  # type: ignore[misc]
    if port_type in _STRICT:
        return _STRICT[port_type]
    if port_type in REF_CLASSES:
        return REF_CLASSES[port_type] | str
    return python_type(port_type)


def model_name(flow_name: str, suffix: str) -> str:
    """A schema component name from a flow name: "Voice memo" → ``VoiceMemoInputs``."""
    words = re.findall(r"[A-Za-z0-9]+", flow_name)
    base = "".join(w[:1].upper() + w[1:] for w in words) or "Flow"
    if base[0].isdigit():
        base = "Flow" + base
    return base + suffix


def inputs_model(name: str, inputs: list[FlowInput]) -> type[BaseModel]:
    """A pydantic model of a flow's inputs; unknown fields are refused."""
    fields: dict[str, Any] = {}
    for spec in inputs:
        default = ... if spec.required else spec.default
        fields[spec.name] = (
            request_type(spec.type),
            Field(default, description=spec.description or f"{spec.type} input"),
        )
    return _create_model(
        model_name(name, "Inputs"), __config__=ConfigDict(extra="forbid"), **fields
    )


def outputs_model(name: str, outputs: list[FlowOutput]) -> type[BaseModel]:
    """A pydantic model of a flow's outputs, by Output node name."""
    fields: dict[str, Any] = {
        spec.name: (python_type(spec.type) | None, Field(None, description=spec.description))
        for spec in outputs
    }
    return _create_model(model_name(name, "Outputs"), **fields)


def result_model(name: str, outputs: type[BaseModel]) -> type[BaseModel]:
    """The answer of a synchronous run: run id, status, seconds and the typed outputs."""
    return _create_model(
        model_name(name, "Result"),
        run_id=(str, ...),
        status=(str, "finished"),
        elapsed_s=(float, 0.0),
        outputs=(outputs, ...),
    )


@dataclass
class CompiledFlow:
    """A flow version ready to run: its plan and request/response models."""

    flow_id: str
    name: str
    version: int
    published: bool
    plan: Plan
    inputs: type[BaseModel]
    outputs: type[BaseModel]
    trivial: bool


# Node types that do pure, quick work in the event loop: runs made only of these take the
# fast path (no per-event recording; see server/api/runs.py).
TRIVIAL_TYPES = frozenset(
    {
        "core/input",
        "core/output",
        "core/text",
        "core/number",
        "core/template",
        "core/join",
        "core/json_parse",
        "core/json_get",
    }
)


class PlanCache:
    """Compiled flows by (flow id, version). A lookup reads only the flow's version and
    published flag; the graph is read and checked once per version.

    Raises (from :meth:`get`): NotFound for an unknown flow; GraphInvalid when the
    flow's graph has problems; GraphFileError for an unreadable graph.
    """

    head_ttl_s = 1.0
    """How long a flow's (name, version, published) is trusted without reading it again:
    saves made elsewhere (the editor, another process) are seen within this time;
    changes through the API are seen at once (:meth:`invalidate`)."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine, self.store = engine, store
        self._cache: dict[tuple[str, int], CompiledFlow] = {}
        self._heads: dict[str, tuple[float, tuple[str, int, bool]]] = {}
        self._lock = threading.Lock()

    def invalidate(self, flow_id: str) -> None:
        """Forget what is known about a flow (after saving, renaming or publishing it)."""
        self._heads.pop(flow_id, None)

    def head(self, flow_id: str) -> tuple[str, int, bool]:
        """(name, version, published) of a flow, read at most every :attr:`head_ttl_s`.

        Raises: NotFound.
        """
        now = time.monotonic()
        known = self._heads.get(flow_id)
        if known is not None and now - known[0] < self.head_ttl_s:
            return known[1]
        head = self._read_head(flow_id)
        self._heads[flow_id] = (now, head)
        return head

    def _read_head(self, flow_id: str) -> tuple[str, int, bool]:
        with self.store.engine.connect() as conn:
            row = conn.execute(
                sa.select(_FLOWS.c.name, _FLOWS.c.version, _FLOWS.c.published).where(
                    _FLOWS.c.id == flow_id
                )
            ).first()
        if row is None:
            raise NotFound("flow", flow_id)
        return str(row[0]), int(row[1]), bool(row[2])

    def published(self) -> list[tuple[str, int, str]]:
        """(id, version, name) of every published flow, most recently updated first, read
        without their graphs (what the API schema's cache key needs)."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_FLOWS.c.id, _FLOWS.c.version, _FLOWS.c.name)
                .where(_FLOWS.c.published == sa.true())
                .order_by(_FLOWS.c.updated_at.desc(), _FLOWS.c.id)
            ).all()
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    def peek(self, flow_id: str) -> CompiledFlow | None:
        """The compiled flow when its head is fresh and its version compiled, else None
        (then :meth:`get` reads and compiles; it does I/O and may take a while). Never
        blocks: the event loop may call it."""
        known = self._heads.get(flow_id)
        if known is None or time.monotonic() - known[0] >= self.head_ttl_s:
            return None
        name, version, published = known[1]
        found = self._cache.get((flow_id, version))
        if found is None or found.name != name:
            return None
        found.published = published
        return found

    def get(self, flow_id: str) -> CompiledFlow:
        name, version, published = self.head(flow_id)
        found = self._cache.get((flow_id, version))
        if found is not None and found.name == name:
            found.published = published
            return found
        flow = self.store.get_flow(flow_id)
        compiled = self.compile(flow.id, flow.name, flow.version, flow.graph)
        compiled.published = flow.published
        with self._lock:
            for key in [k for k in self._cache if k[0] == flow_id]:
                del self._cache[key]
            self._cache[(flow_id, flow.version)] = compiled
        return compiled

    def compile(self, flow_id: str, name: str, version: int, graph: dict[str, Any]) -> CompiledFlow:
        """Check a graph and build its models (not cached)."""
        plan = self.engine.compile(graph_from_data(graph))
        return compiled_flow(flow_id, name, version, plan)


def compiled_flow(flow_id: str, name: str, version: int, plan: Plan) -> CompiledFlow:
    """Wrap a checked plan with its request/response models."""
    return CompiledFlow(
        flow_id=flow_id,
        name=name,
        version=version,
        published=False,
        plan=plan,
        inputs=inputs_model(name, plan.inputs),
        outputs=outputs_model(name, plan.outputs),
        trivial=all(n.type in TRIVIAL_TYPES for n in plan.nodes.values()),
    )


def _components(models: list[type[BaseModel]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON Schemas of ``models`` with ``$ref``s into ``#/components/schemas``; returns
    (a ref per model name, the component schemas)."""
    from pydantic.json_schema import models_json_schema

    keyed: list[tuple[type[BaseModel], Literal["validation"]]] = [(m, "validation") for m in models]
    refs, top = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    by_name = {m.__name__: refs[(m, "validation")] for m in models}
    return by_name, top.get("$defs", {})


def flow_openapi(base: dict[str, Any], flows: list[CompiledFlow]) -> dict[str, Any]:
    """Add one operation per published flow to an OpenAPI document.

    Each flow gets ``POST /api/v1/flows/{its id}/run`` (a concrete path, so it is listed
    beside the generic templated route) with its own request body (JSON, and multipart
    when it takes files) and its own typed response.
    """
    schema = dict(base)
    paths = dict(schema.get("paths", {}))
    components = dict(schema.get("components", {}))
    comp_schemas = dict(components.get("schemas", {}))
    used: set[str] = set()
    for flow in flows:
        inputs, outputs = flow.inputs, flow.outputs
        result = result_model(flow.name, outputs)
        # two flows with the same name get distinct component names
        if inputs.__name__ in used:
            suffix = flow.flow_id[:8]
            inputs = inputs_model(f"{flow.name} {suffix}", flow.plan.inputs)
            outputs = outputs_model(f"{flow.name} {suffix}", flow.plan.outputs)
            result = result_model(f"{flow.name} {suffix}", outputs)
        used.add(inputs.__name__)
        refs, defs = _components([inputs, result])
        comp_schemas.update(defs)
        content: dict[str, Any] = {"application/json": {"schema": refs[inputs.__name__]}}
        if any(i.type in REF_CLASSES for i in flow.plan.inputs):
            content["multipart/form-data"] = {"schema": refs[inputs.__name__]}
        slug = re.sub(r"[^a-z0-9]+", "_", flow.name.lower()).strip("_") or "flow"
        description = (flow.plan.graph.extra.get("flowbuilder", {}) or {}).get("description", "")
        paths[f"/api/v1/flows/{flow.flow_id}/run"] = {
            "post": {
                "tags": ["published flows"],
                "summary": f"Run '{flow.name}'",
                "description": description
                or f"Run the published flow '{flow.name}' (version {flow.version}).",
                "operationId": f"run_{slug}_{flow.flow_id[:8]}",
                "parameters": [
                    {
                        "name": "timeout",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": MAX_TIMEOUT_S,
                        },
                        "description": "seconds to wait before the run is cancelled",
                    },
                    {
                        "name": "stream",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean", "default": False},
                        "description": "answer with Server-Sent Events",
                    },
                ],
                "requestBody": {"required": True, "content": content},
                "responses": {
                    "200": {
                        "description": "the run finished (with ?stream=true: its events)",
                        "content": {
                            "application/json": {"schema": refs[result.__name__]},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **{str(code): a for code, a in FLOW_ERRORS.items()},
                },
            }
        }
    components["schemas"] = comp_schemas
    schema["paths"] = paths
    schema["components"] = components
    return schema
