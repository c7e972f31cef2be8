"""API keys on the HTTP API, and a login in front of the canvas, when auth is required.

Auth is required when the server binds beyond localhost (``--host 0.0.0.0``) or when
``FLOWBUILDER_REQUIRE_AUTH=1``. Then every ``/api`` and ``/v1`` request needs
``Authorization: Bearer <key>`` (keys from ``flowbuilder keys create``): no key or an
unknown one answers 401, a revoked one 403. Pages (canvas, flow library, /docs) redirect
to ``/login``, where the user pastes a key; it is kept in ``app.storage.user`` (server
side, behind a signed session cookie), and the browser's own ``/api`` calls (artifact
previews, uploads) use that session. Keys are never logged: only their SHA-256 is stored
and the key's 8-character prefix is shown.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from nicegui import app, ui
from starlette.types import ASGIApp, Receive, Scope, Send

from flowbuilder.store import ApiKey, Store

REQUIRE_AUTH_ENV = "FLOWBUILDER_REQUIRE_AUTH"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "127.0.1.1"})
API_PREFIXES = ("/api/", "/v1/")
OPEN_PREFIXES = ("/login", "/_nicegui", "/static/", "/favicon")
SESSION_KEY = "api_key"


def auth_required(host: str | None = None) -> bool:
    """Whether requests need a key: a non-local bind address or ``FLOWBUILDER_REQUIRE_AUTH=1``."""
    if os.environ.get(REQUIRE_AUTH_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return host is not None and host not in LOCAL_HOSTS


def require_for_host(host: str) -> bool:
    """Set the app's auth requirement from the address it binds; returns it."""
    app.state.fb_auth_required = auth_required(host)
    return bool(app.state.fb_auth_required)


def storage_secret(home: Path) -> str:
    """The secret that signs session cookies: ``storage_secret`` in the data directory,
    created (mode 0600) on first use."""
    path = home / "storage_secret"
    if path.is_file():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _session_key() -> str | None:
    """The key a logged-in browser session holds (None outside a session)."""
    try:
        key = app.storage.user.get(SESSION_KEY)
    except Exception:  # no session (storage secret unset or no request context)
        return None
    return key if isinstance(key, str) else None


class ApiKeyMiddleware:
    """ASGI middleware: keys on ``/api`` and ``/v1``, login redirect for pages.

    Does nothing unless ``app.state.fb_auth_required`` is true, so a local server pays
    one attribute lookup per request.
    """

    def __init__(self, asgi: ASGIApp) -> None:
        self.app = asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not getattr(app.state, "fb_auth_required", False):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        store: Store = app.state.fb.store
        if path.startswith(API_PREFIXES) or path in ("/api", "/v1"):
            key = bearer(scope.get("headers", [])) or _session_key()
            record = store.verify_api_key(key) if key else None
            if record is None:
                why = "an API key is required" if key is None else "unknown API key"
                await _json(send, 401, f"{why}: send 'Authorization: Bearer <key>'")
                return
            if record.revoked_at is not None:
                await _json(send, 403, f"API key {record.prefix}… was revoked")
                return
            await self.app(scope, receive, send)
            return
        key = _session_key()
        record = store.verify_api_key(key) if key else None
        if record is None or record.revoked_at is not None:
            target = path + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", _login_url(target).encode())],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def _login_url(target: str) -> str:
    from urllib.parse import quote

    return "/login?next=" + quote(target, safe="")


async def _json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def verify(store: Store, key: str) -> ApiKey | None:
    """A usable key's record, or None (unknown or revoked)."""
    record = store.verify_api_key(key.strip())
    return record if record is not None and record.revoked_at is None else None


@ui.page("/login")
def login_page(next: str = "/") -> Any:
    """Paste an API key to use the app (only shown when auth is required)."""
    from fastapi.responses import RedirectResponse

    target = next if next.startswith("/") and not next.startswith("//") else "/"
    if not getattr(app.state, "fb_auth_required", False):
        return RedirectResponse(target)
    ui.page_title("Sign in · flowbuilder")

    def sign_in() -> None:
        record = verify(app.state.fb.store, key.value or "")
        if record is None:
            error.text = "That key is unknown or revoked."
            return
        app.storage.user[SESSION_KEY] = key.value.strip()
        ui.navigate.to(target)

    with ui.card().classes("absolute-center w-96"):
        ui.label("flowbuilder").classes("text-xl font-bold")
        ui.label("This server needs an API key (flowbuilder keys create).")
        key = (
            ui.input("API key", password=True)
            .classes("w-full")
            .props('data-testid="login-key"')
            .on("keydown.enter", sign_in)
        )
        error = ui.label("").classes("text-negative")
        ui.button("Sign in", on_click=sign_in).props('data-testid="login-submit"')
    return None
