"""One flow file as an HTTP endpoint, with no UI and no database (``flowbuilder serve-flow``).

Like Langflow's ``lfx serve``: a plain FastAPI app on uvicorn around the engine.

- ``POST /run`` — the body is the flow's inputs (typed: its schema is in ``/docs`` and
  ``/openapi.json``; a wrong type is a 422 naming the field), the answer its outputs;
  ``?timeout=`` seconds (504 after), ``?stream=true`` for Server-Sent Events.
- ``GET /`` — the flow's name and signature; ``GET /health``.
- ``POST /api/v1/artifacts``, ``GET /api/v1/artifacts/{id}`` — file inputs and outputs
  (stored under ``FLOWBUILDER_HOME/artifacts``).

The same rules as ``flowbuilder serve`` (:mod:`server.api.auth`): the server's token or an
API key (from the data directory's store, when it has one) on every path but
``/health``; ``/docs?token=…`` signs a browser in; the Host allow-list, the Origin rule
and JSON-only bodies hold also with ``--no-auth``.

Nothing is recorded: runs live only for their request.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.middleware.sessions import SessionMiddleware

from flowbuilder.engine import Engine
from flowbuilder.errors import InputError
from flowbuilder.graph import load_graph
from flowbuilder.settings import Settings
from flowbuilder.store import Store
from flowbuilder.types import REF_CLASSES, to_jsonable
from server.api.answers import errors
from server.api.auth import AuthMiddleware, Gate, StoreKeys, gate_openapi
from server.api.docs_pages import add_docs_pages
from server.api.limits import BodyLimit, LimitedRoute
from server.api.origin import HostRule
from server.api.runs import SSE_HEADERS, TIMEOUT, result_body, sse
from server.api.schema import compiled_flow, result_model
from server.api.token import session_secret
from server.runs import END_EVENTS

OPEN_PATHS = frozenset({"/health", "/favicon.ico"})
UPLOADS = (re.compile(r"/api/v1/artifacts"),)


def build_app(path: str | Path, engine: Engine | None = None) -> FastAPI:
    """A FastAPI app serving the graph file at ``path``.

    Its gate (``app.state.fb_gate``) starts closed — keys only, loopback Host names; the
    CLI sets :func:`flow_gate` for its bind address and token.

    Raises:
        GraphFileError: the file cannot be read.
        GraphInvalid: the graph has problems (every one is listed).
    """
    engine = engine or Engine()
    graph = load_graph(path)
    name = graph.name or Path(path).stem.replace("_", " ").capitalize()
    flow = compiled_flow("file", name, 1, engine.compile(graph))
    inputs_model, outputs_model = flow.inputs, flow.outputs
    result = result_model(name, outputs_model)
    app = FastAPI(
        title=f"{name} (flowbuilder)",
        description=(graph.extra.get("flowbuilder", {}) or {}).get("description", "")
        or f"The flow '{name}' from {Path(path).name}, served by flowbuilder serve-flow.",
        version="1",
        docs_url=None,  # FastAPI's pages would put the flow's name into HTML unescaped
        redoc_url=None,
    )
    add_docs_pages(app, app.title)
    app.state.fb = SimpleNamespace(engine=engine)
    app.router.route_class = LimitedRoute  # JSON bodies decoded with the request limits
    app.state.fb_gate = flow_gate(engine.settings, "127.0.0.1", required=True)
    app.add_middleware(AuthMiddleware, state=app.state)
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(engine.settings.home),
        session_cookie="flowbuilder-flow",
        same_site="lax",
    )
    app.add_middleware(BodyLimit, settings=lambda: engine.settings)  # outermost

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            gate_openapi(app.state.fb_gate, schema, lambda p: p not in OPEN_PATHS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    from server.api.artifacts import router as artifacts_router

    app.include_router(artifacts_router)

    def bind(values: dict[str, Any]) -> dict[str, Any]:
        for spec in flow.plan.inputs:
            value = values.get(spec.name)
            if spec.type in REF_CLASSES and isinstance(value, str):
                ref = engine.artifacts.info(value)
                if ref is None:
                    raise HTTPException(
                        422,
                        [
                            {
                                "loc": ["body", spec.name],
                                "msg": f"no artifact {value!r}; upload it to /api/v1/artifacts",
                                "type": "value_error",
                            }
                        ],
                    )
                values[spec.name] = ref
        try:
            bound: dict[str, Any] = engine.bind_inputs(flow.plan, values)
        except InputError as exc:
            raise HTTPException(
                422, [{"loc": ["body", exc.name], "msg": str(exc), "type": "value_error"}]
            ) from None
        return bound

    @app.get("/")
    async def describe() -> dict[str, Any]:
        """The flow's name and signature."""
        return {
            "name": name,
            "inputs": [
                {"name": i.name, "type": i.type, "required": i.required, "default": i.default}
                for i in flow.plan.inputs
            ],
            "outputs": [{"name": o.name, "type": o.type} for o in flow.plan.outputs],
            "run_url": "/run",
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def run(
        body: inputs_model = Body(...),  # type: ignore[valid-type]
        timeout: float | None = TIMEOUT,
        stream: bool = Query(False, description="answer with Server-Sent Events"),
    ) -> Response:
        given: set[str] = body.model_fields_set  # type: ignore[attr-defined]
        values = {k: getattr(body, k) for k in given}
        values = {k: to_jsonable(v) if k in _file_inputs else v for k, v in values.items()}
        bound = bind(values)
        run_id = uuid.uuid4().hex
        if stream:
            return StreamingResponse(
                _stream(engine, flow.plan, bound, run_id),
                media_type="text/event-stream",
                headers={**SSE_HEADERS, "X-Run-Id": run_id},
            )
        execution = engine.scheduler.execute(flow.plan, bound, run_id=run_id)
        try:
            res = await asyncio.wait_for(execution, timeout) if timeout else await execution
        except TimeoutError:
            raise HTTPException(
                504, {"run_id": run_id, "error": f"the run took longer than {timeout} s"}
            ) from None
        status, answer = result_body(res)
        return JSONResponse(answer, status_code=status)

    run.__annotations__["body"] = inputs_model  # a real class, not the postponed string
    _file_inputs = {i.name for i in flow.plan.inputs if i.type in REF_CLASSES}
    app.post(
        "/run",
        response_model=result,
        summary=f"Run '{name}'",
        responses={
            422: {"description": "an input is missing or has the wrong type"},
            **errors(413, 500, 504),
        },
    )(run)
    return app


def flow_gate(settings: Settings, host: str, *, required: bool, token: str | None = None) -> Gate:
    """The gate of ``serve-flow`` binding ``host``: the token, and the keys of the data
    directory's store when there is one (the store is not created for it)."""
    return Gate(
        hosts=HostRule.for_bind(host, settings.allowed_hosts),
        required=required,
        token=token,
        keys=StoreKeys(_KeyStore(settings)),
        login_path=None,
        open_paths=OPEN_PATHS,
        uploads=UPLOADS,
    )


class _KeyStore:
    """Opens the store on the first key presented, if the data directory has one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store | None = None

    def __call__(self) -> Store | None:
        if self.store is None:
            from flowbuilder.store import default_url

            url = default_url()
            if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
                return None  # no database: no key was ever made here
            self.store = Store(url, migrate=False)
        return self.store


async def _stream(
    engine: Engine, plan: Any, bound: dict[str, Any], run_id: str
) -> AsyncIterator[str]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(
        engine.scheduler.execute(plan, bound, run_id=run_id, listeners=[queue.put_nowait])
    )
    try:
        while True:
            event = await queue.get()
            yield sse(event)
            if isinstance(event, END_EVENTS):
                break
        res = await task
        data = json.dumps(
            {"run_id": run_id, "status": res.status, "outputs": to_jsonable(res.outputs)}
        )
        yield f"event: result\ndata: {data}\n\n"
    finally:
        if not task.done():
            task.cancel()
