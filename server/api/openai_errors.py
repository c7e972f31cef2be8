"""Errors of the OpenAI-compatible facade, in OpenAI's shape, on every failure path.

OpenAI's error body is ``{"error": {"message", "type", "param", "code"}}``; the official
SDKs pick their exception from the status (400 ``BadRequestError``, 401
``AuthenticationError``, 404 ``NotFoundError``, 422 ``UnprocessableEntityError``, 429
``RateLimitError``, 5xx ``InternalServerError``) and show ``message``. :class:`OpenAIRoute`
is the facade's route class: whatever a route raises — a :class:`FacadeError`, FastAPI's
request validation (422), an ``HTTPException`` of a shared helper, an unexpected
exception (500, logged) — is answered in that shape. A streamed answer that fails after
its first byte ends with :func:`stream_error` and ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

log = logging.getLogger(__name__)

TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}
"""OpenAI's error ``type`` by status; other 4xx are ``invalid_request_error``, 5xx
``server_error``."""

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
"""The JSON Schema of an error body (for the facade's OpenAPI operations)."""


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An error body in OpenAI's shape for an HTTP ``status``."""
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a facade route answers."""
    content = {"application/json": {"schema": ERROR_SCHEMA}}
    return {s: {"description": "an error, in OpenAI's shape", "content": content} for s in statuses}


class FacadeError(Exception):
    """A request the facade refuses, in OpenAI's error shape.

    Args:
        status: the HTTP status (400, 404, 409, 422, 500, 504, …).
        message: what is wrong, and where.
        param: the request field at fault, if one is.
        code: a stable machine-readable code (``model_not_found``, ``timeout``, …).
    """

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code or None)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def stream_error(error: FacadeError) -> str:
    """The Server-Sent Events that end a failed streamed answer: the error, then
    ``[DONE]`` (what OpenAI's SDK reads as an ``APIError`` with that message)."""
    return f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n"


def _from_validation(exc: RequestValidationError) -> FacadeError:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query")]
    return FacadeError(422, f"invalid request: {first.get('msg')}", param=".".join(loc) or None)


def _from_http(exc: HTTPException) -> FacadeError:
    detail = exc.detail
    if isinstance(detail, dict):
        message = str(detail.get("error") or detail.get("message") or detail)
    else:
        message = str(detail)
    return FacadeError(exc.status_code, message)


class OpenAIRoute(APIRoute):
    """A route whose every error is answered in OpenAI's shape (see the module
    docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except FacadeError as exc:
                return exc.response()
            except RequestValidationError as exc:
                return _from_validation(exc).response()
            except HTTPException as exc:
                return _from_http(exc).response()
            except Exception:
                log.exception("the OpenAI facade failed on %s", request.url.path)
                return FacadeError(500, "internal error; see the server's log").response()

        return route


__all__ = [
    "ERROR_SCHEMA",
    "FacadeError",
    "OpenAIRoute",
    "error_body",
    "error_responses",
    "stream_error",
]
