"""REST API routes under /api/v1 (FastAPI, on the same app as the pages), the
OpenAI-compatible facade under /v1, auth (keys, token, sessions; :mod:`server.api.auth`),
the login, and the per-flow OpenAPI schema.

:func:`install` adds all of it to the app once (``server.app.setup`` calls it).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
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
    guard_socket(core.sio, lambda: app.state.fb_gate)  # every websocket event, too
    core.sio.eio.cors_allowed_origins = []  # no CORS headers on the pages' socket

    # The same routes on a lean app of their own: API requests skip the page stack's
    # middleware (gzip, NiceGUI's cache-control and prefix redirects, sessions), which
    # costs several times the work of a trivial run.
    lean = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    lean.state = app.state
    for router in (artifacts_router, *routers):
        lean.include_router(router)
    lean.add_middleware(auth.AuthMiddleware, state=app.state)
    build_full = app.build_middleware_stack

    def build_stack() -> ASGIApp:
        return FastLane(build_full(), lean)

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]


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
    each request for /openapi.json, with one query).
    """
    from server.api.schema import flow_openapi

    fb = app.state.fb
    published = fb.store.list_flows(published=True)
    key = tuple((f.id, f.version, f.name) for f in published)
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
    from server.api.schema import PlanCache

    cache: PlanCache = getattr(app.state, "fb_plans", None) or PlanCache(fb.engine, fb.store)
    app.state.fb_plans = cache
    compiled = []
    for flow in published:
        try:
            compiled.append(cache.get(flow.id))
        except Exception as exc:  # a published flow with problems is left out, not fatal
            log.warning("flow %s (%s) is not in the API schema: %s", flow.id, flow.name, exc)
    schema = flow_openapi(base, compiled)
    gate_openapi(app.state.fb_gate, schema, lambda path: path.startswith(("/api/", "/v1/")))
    app.state.fb_openapi = (key, schema)
    app.openapi_schema = schema
    return schema
