"""The API documentation page (Swagger UI at ``/docs``) for an app whose title or
descriptions come from graph files.

FastAPI's own pages write the app's title into their HTML as it is, so a flow named
``</title><script>…`` would run as script on the server's origin — where the browser's
session is. This page shows the title as text; the OpenAPI document keeps it as data.
ReDoc is not served: by default it renders the Markdown of descriptions (a flow's
description, from a shared graph file) with raw HTML allowed.
"""

from __future__ import annotations

import html

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def add_docs_pages(app: FastAPI, title: str) -> None:
    """Serve ``/docs`` (with its OAuth2 redirect page) for ``app``, made with
    ``docs_url=None, redoc_url=None``, titled ``title`` (any text: it is escaped)."""
    shown = html.escape(title)
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{shown} - Swagger UI",
            oauth2_redirect_url=root + OAUTH2_REDIRECT,
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, oauth2_redirect, include_in_schema=False)
