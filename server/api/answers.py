"""The error answers of the API's routes, as OpenAPI ``responses`` entries.

FastAPI documents 422 itself on every route that takes parameters or a body; the other
statuses a route of ``/api/v1`` gives are declared with :func:`errors` (``{"detail": …}``
answers; the OpenAI facade declares its own, in OpenAI's shape), so a client, and
schemathesis, find every status and content type the API answers in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any


def error_answer(description: str) -> dict[str, Any]:
    """An OpenAPI response: JSON ``{"detail": …}`` with this description."""
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {}},
                    "required": ["detail"],
                }
            }
        },
    }


ERRORS: dict[int, str] = {
    400: "the body could not be parsed (malformed multipart or form data)",
    404: "no such flow, run, version or artifact (or the flow is not published)",
    409: "the flow has problems, or the run is not in a state that allows this",
    413: "the body is larger than FLOWBUILDER_MAX_BODY_MB (uploads: FLOWBUILDER_MAX_UPLOAD_MB)",
    422: "a parameter or the body is invalid or beyond a limit (the detail names it)",
    500: "the run failed (the detail names the node and its error)",
    504: "the run took longer than ?timeout= and was cancelled",
}
"""What each error status means, wherever a route gives it."""


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for these statuses, each ``{"detail": …}`` JSON."""
    return {code: error_answer(ERRORS[code]) for code in codes}


FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file's bytes, with its own media type",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""The ``responses`` entry of a route that answers a stored file of any type."""
