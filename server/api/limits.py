"""Request limits on the HTTP API: body size, JSON shape, bounded numbers.

- :class:`BodyLimit` (ASGI middleware, outermost on the app) refuses a body larger than
  ``FLOWBUILDER_MAX_BODY_MB`` — ``FLOWBUILDER_MAX_UPLOAD_MB`` for ``multipart/form-data``
  uploads — with 413: by its ``Content-Length`` before the app runs, else by counting
  the bytes as the app reads them (so no oversized body is ever buffered). Starlette has
  a body limit of its own (``RequestBodyLimitMiddleware``), but its answer cannot name
  the limit, and it picks one limit per route rather than by the kind of body.
- :class:`LimitedRoute` (the API routers' route class) decodes JSON bodies with
  :func:`read_json`: too deep, too long a string, a lone surrogate, ``NaN``: 422 naming
  the place and the limit (see :mod:`flowbuilder.limits`). Large bodies are decoded in a
  worker thread, never on the event loop.
- ``MAX_*`` are the bounds of the numbers routes take in queries, paths and headers
  (``Query(le=MAX_TIMEOUT_S)``, …), so a huge one answers 422, never 500.
- A limit's 422 has FastAPI's validation shape (``{"detail": [{"loc", "msg", "type"}]}``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowbuilder.limits import LimitExceeded, Limits, parse_json
from flowbuilder.settings import Settings

MAX_TIMEOUT_S = 86_400.0
"""The longest ``?timeout=`` a run takes: a day, in seconds."""
MAX_SQL_INT = 2**31 - 1
"""The largest id, version, offset or event number: a 32-bit SQL ``INTEGER``."""
INLINE_JSON_BYTES = 64 * 1024
"""JSON bodies up to this size are decoded in the request; larger ones in a thread."""


# ---- body size ------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """413: the body is larger than its limit (the detail names it and its setting)."""

    def __init__(self, limit: BodyBound) -> None:
        super().__init__(413, limit.message)


class BodyBound:
    """One body limit: bytes, and the sentence that refuses a larger body."""

    def __init__(self, megabytes: float, setting: str, what: str) -> None:
        self.bytes = int(megabytes * 1024 * 1024)
        self.message = f"the {what} is larger than the limit of {megabytes:g} MB ({setting})"


class BodyLimit:
    """ASGI middleware bounding request bodies (see the module docstring).

    ``settings`` gives the limits; it is called once, on the first request (the app's
    services exist by then).
    """

    def __init__(self, app: ASGIApp, settings: Callable[[], Settings]) -> None:
        self.app, self._settings = app, settings
        self._bounds: tuple[BodyBound, BodyBound] | None = None

    def bounds(self) -> tuple[BodyBound, BodyBound]:
        """(the limit of a body, the limit of a multipart upload)."""
        if self._bounds is None:
            s = self._settings()
            self._bounds = (
                BodyBound(s.max_body_mb, "FLOWBUILDER_MAX_BODY_MB", "request body"),
                BodyBound(s.max_upload_mb, "FLOWBUILDER_MAX_UPLOAD_MB", "upload"),
            )
        return self._bounds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, upload = self.bounds()
        length: int | None = None
        bound = body
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"content-type" and value[:19].lower() == b"multipart/form-data":
                bound = upload
        if length is not None and length > bound.bytes:
            await _refuse(send, bound)  # before reading any of it
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bound.bytes:
                    raise BodyTooLarge(bound)  # the app's exception handler answers 413
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send, bound: BodyBound) -> None:
    body = json.dumps({"detail": bound.message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---- JSON shape -----------------------------------------------------------------------


def limits_of(request: Request) -> Limits:
    """The app's JSON and graph limits (from its engine's settings; made once)."""
    state = request.app.state
    found: Limits | None = getattr(state, "fb_limits", None)
    if found is None:
        found = state.fb_limits = Limits.from_settings(state.fb.engine.settings)
    return found


def unprocessable(exc: LimitExceeded, *, kind: str = "limit_exceeded") -> HTTPException:
    """422 in FastAPI's validation shape, at the refused value's place."""
    return HTTPException(422, [{"loc": list(exc.loc), "msg": exc.reason, "type": kind}])


async def read_json(request: Request) -> Any:
    """The request body as checked JSON (see :func:`flowbuilder.limits.parse_json`);
    decoded in a worker thread when larger than :data:`INLINE_JSON_BYTES`.

    Raises:
        json.JSONDecodeError: the body is not JSON.
        HTTPException: 422 naming the place and the limit.
    """
    body = await request.body()
    limits = limits_of(request)
    try:
        if len(body) > INLINE_JSON_BYTES:
            return await asyncio.to_thread(parse_json, body, limits, ("body",))
        return parse_json(body, limits, ("body",))
    except LimitExceeded as exc:
        raise unprocessable(exc) from None


class LimitedRequest(Request):
    """A request whose :meth:`json` is :func:`read_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await read_json(self)
        return self._json


class LimitedRoute(APIRoute):
    """An API route whose JSON body is decoded with limits (see :class:`LimitedRequest`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            return await handler(LimitedRequest(request.scope, request.receive))

        return limited
