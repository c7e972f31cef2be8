"""The pages' websocket checks its session at every event, not only at its handshake.

NiceGUI carries a page's events (clicks, edits, JavaScript answers) over one socket.io
connection (``core.sio``, handlers registered in ``nicegui/nicegui.py``). The HTTP
handshake passes :class:`~server.api.auth.AuthMiddleware` like any request; after that,
each incoming event runs :meth:`~server.api.auth.Gate.scope_ok` on the connection's own
ASGI scope (its session, or its Bearer header) before NiceGUI's handler. When the
session no longer holds — its key was revoked, the token changed — the event is dropped
and the page is sent to ``/login``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from server.api.auth import Gate

GUARDED = ("connect", "handshake", "event", "javascript_response", "ack", "log")


def guard_socket(sio: Any, gate_of: Callable[[], Gate]) -> None:
    """Wrap the default namespace's handlers of ``sio`` (a ``socketio.AsyncServer``) so
    that each checks the connection's credential first. Idempotent."""
    handlers: dict[str, Any] = sio.handlers.get("/", {})
    for name in GUARDED:
        handler = handlers.get(name)
        if handler is not None and not getattr(handler, "fb_guarded", False):
            handlers[name] = _guarded(sio, name, handler, gate_of)


def _guarded(sio: Any, name: str, handler: Any, gate_of: Callable[[], Gate]) -> Any:
    import socketio

    async def guarded(sid: str, *args: Any) -> Any:
        gate = gate_of()
        if gate.required:
            environ = args[0] if name == "connect" else sio.get_environ(sid)
            scope = (environ or {}).get("asgi.scope") or {}
            if not gate.scope_ok(scope):
                if name == "connect":
                    raise socketio.exceptions.ConnectionRefusedError("a session is required")
                await sio.emit("open", {"path": _login(args), "new_tab": False}, to=sid)
                return False if name == "handshake" else None
        result = handler(sid, *args)
        return await result if inspect.isawaitable(result) else result

    guarded.fb_guarded = True  # type: ignore[attr-defined]
    return guarded


def _login(args: tuple[Any, ...]) -> str:
    """``/login?next=`` the page the event came from (NiceGUI's events name their client)."""
    from nicegui import Client

    msg = args[0] if args else None
    client = Client.instances.get(msg.get("client_id", "")) if isinstance(msg, dict) else None
    page = client.request.url.path if client is not None and client.request is not None else "/"
    return "/login?next=" + quote(page, safe="")


def client_allowed(client: Any) -> bool:
    """Whether a page's client still holds a valid credential: what an action that makes
    keys (Settings → Create key) checks again before it acts."""
    from nicegui import app

    gate: Gate = app.state.fb_gate
    environ = getattr(client, "environ", None) or {}
    scope = environ.get("asgi.scope")
    if scope is None and getattr(client, "request", None) is not None:
        scope = client.request.scope
    return gate.scope_ok(scope or {})
