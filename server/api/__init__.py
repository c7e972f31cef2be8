"""REST API routes under /api/v1 (FastAPI, on the same app as the pages), the
OpenAI-compatible facade under /v1, auth (keys, token, sessions; :mod:`server.api.auth`),
the login, request limits (:mod:`server.api.limits`), and the per-flow OpenAPI schema.

:func:`install` adds all of it to the app once (``server.app.setup`` calls it).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from flowbuilder.settings import Settings
from server.api.auth import Gate, StoreKeys, bearer, gate_openapi
from server.api.origin import HostRule

log = logging.getLogger(__name__)


def install(app: FastAPI) -> None:
    """Include the routers, the auth middleware and the per-flow OpenAPI document.

    Until the server sets ``app.state.fb_gate`` for its bind address
    (:func:`main_gate`), the gate is closed: a key from the store, loopback hosts only.
    """
    if getattr(app.state, "fb_api_installed", False):
        return
    app.state.fb_api_installed = True
    from nicegui import core

    from server.api import auth, flows, login, openai_compat, runs
    from server.api.artifacts import router as artifacts_router
    from server.api.socket_guard import guard_socket

    app.state.fb_gate = main_gate(app, app.state.fb.engine.settings, "127.0.0.1", required=True)
    routers = (flows.router, runs.router, openai_compat.router)
    for router in (*routers, login.router):
        app.include_router(router)
    app.add_middleware(auth.AuthMiddleware, state=app.state)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]

    async def openapi_json(request: Request) -> JSONResponse:
        # built (and the published flows compiled) in a worker thread, not on the loop;
        # added before FastAPI's own /openapi.json route, so it is the one that answers
        return JSONResponse(await asyncio.to_thread(app.openapi))

    app.add_route("/openapi.json", openapi_json, include_in_schema=False)
    guard_socket(core.sio, lambda: app.state.fb_gate)  # every websocket event, too
    core.sio.eio.cors_allowed_origins = []  # no CORS headers on the pages' socket
    app.on_startup(tune_gc)  # type: ignore[attr-defined]  # NiceGUI's App

    # The same routes on a lean app of their own: API requests skip the page stack's
    # middleware (gzip, NiceGUI's cache-control and prefix redirects, sessions), which
    # costs several times the work of a trivial run.
    lean = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    lean.state = app.state
    for router in (artifacts_router, *routers):
        lean.include_router(router)
    lean.add_middleware(auth.AuthMiddleware, state=app.state)
    build_full = app.build_middleware_stack
    from server.api.limits import BodyLimit

    def build_stack() -> ASGIApp:
        gate_inside_sessions(app)
        # outermost: request bodies are bounded on every path, pages and API alike
        return BodyLimit(FastLane(build_full(), lean), lambda: app.state.fb.engine.settings)

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]


def gate_inside_sessions(app: FastAPI) -> None:
    """Put the auth middleware right inside the session middleware (it reads the session
    cookie) and before everything else of the page stack.

    NiceGUI adds its session and request-tracking middleware when the server starts,
    outermost; request tracking makes a user storage for every new session id, so a
    refused anonymous request would still leave one in memory (about 1 kB each, without
    bound). Called when the middleware stack is built, after NiceGUI's additions.
    """
    from starlette.middleware.sessions import SessionMiddleware

    from server.api.auth import AuthMiddleware

    stack = app.user_middleware  # outermost first
    gate = next((m for m in stack if m.cls is AuthMiddleware), None)
    if gate is None:
        return
    stack.remove(gate)
    session = next((i for i, m in enumerate(stack) if m.cls is SessionMiddleware), -1)
    stack.insert(session + 1, gate)


UPLOADS = (
    re.compile(r"/api/v1/artifacts"),
    re.compile(r"/api/v1/flows/[^/]+/runs?"),
)


def main_gate(
    app: FastAPI, settings: Settings, host: str, *, required: bool, token: str | None = None
) -> Gate:
    """The server's gate: Host names for the bind address ``host`` and
    ``FLOWBUILDER_ALLOWED_HOSTS``, whether a credential is ``required``, the server's
    ``token`` (None: keys only) and the keys of ``app``'s store."""
    return Gate(
        hosts=HostRule.for_bind(host, settings.allowed_hosts),
        required=required,
        token=token,
        keys=StoreKeys(lambda: app.state.fb.store),
        uploads=UPLOADS,
        transport_prefix="/_nicegui",
    )


GC_THRESHOLDS = (50_000, 20, 20)
"""The garbage collector's thresholds in a server (Python's defaults: 700, 10, 10)."""


def tune_gc() -> None:
    """Make the garbage collector's pauses short and rare in a server (at startup).

    A collection runs on whichever thread allocates and holds the GIL throughout, so no
    worker thread shields the event loop from it. Objects that live as long as the
    server (modules, routes, node classes) are frozen out of its view, and collections
    wait for 50,000 new objects instead of 700: parsing a 6,000-node graph made 551
    collections with pauses up to 0.2 s; with these thresholds 7, none over 10 ms.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class FastLane:
    """Sends ``/api`` and ``/v1`` requests to the lean API app, all else to the pages'
    full stack. A browser's own API calls without a Bearer key (artifact previews in
    the canvas) take the full stack, where its session is.
    """

    def __init__(self, full: ASGIApp, lean: ASGIApp) -> None:
        self.full, self.lean = full, lean

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(("/api/", "/v1/")):
            from nicegui import app

            if not app.state.fb_gate.required or bearer(scope["headers"]):
                await self.lean(scope, receive, send)
                return
        await self.full(scope, receive, send)


def openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: the app's routes plus one operation per published flow.

    Rebuilt whenever the set of published flows or their versions change (checked on
    each request for /openapi.json, with one query that reads no graph). Blocking: the
    ``/openapi.json`` route calls it in a worker thread.
    """
    from server.api.schema import PlanCache, flow_openapi

    fb = app.state.fb
    cache: PlanCache = getattr(app.state, "fb_plans", None) or PlanCache(fb.engine, fb.store)
    app.state.fb_plans = cache
    key = tuple(cache.published())  # (id, version, name); the graphs are not read
    cached = getattr(app.state, "fb_openapi", None)
    if cached is not None and cached[0] == key:
        schema: dict[str, Any] = cached[1]
        return schema
    base = get_openapi(
        title="flowbuilder",
        version="1",
        description="Flows as HTTP endpoints. Each published flow is listed under "
        "'published flows' with its own request and response schema.",
        routes=app.routes,
    )
    compiled = []
    for flow_id, _, name in key:
        try:
            compiled.append(cache.get(flow_id))
        except Exception as exc:  # a published flow with problems is left out, not fatal
            log.warning("flow %s (%s) is not in the API schema: %s", flow_id, name, exc)
    schema = flow_openapi(base, compiled)
    gate_openapi(app.state.fb_gate, schema, lambda path: path.startswith(("/api/", "/v1/")))
    app.state.fb_openapi = (key, schema)
    app.openapi_schema = schema
    return schema
