"""Who may talk to the server: a key, the server's token or a session, on every page,
route and websocket — also on localhost.

- ``Authorization: Bearer <credential>``: an API key (``flowbuilder keys create``) or the
  server's token (:mod:`server.api.token`). No credential or an unknown one answers 401,
  a revoked key 403.
- A browser session: opening any page with ``?token=…`` (the URL printed at start), or
  signing in at ``/login`` with a key or the token, stores *which* credential made the
  session (the key's id, or a fingerprint of the token) in the signed session cookie.
  Every HTTP request, and every websocket event (:mod:`server.api.socket_guard`),
  checks it again: a revoked key or a changed token ends the session there. Pages
  without one redirect to ``/login``, API routes answer 401.
- ``--no-auth`` (``FLOWBUILDER_NO_AUTH=1``) drops the credential, only on a loopback
  bind and never with ``FLOWBUILDER_REQUIRE_AUTH=1``; the checks of
  :mod:`server.api.origin` (Host allow-list, Origin/Sec-Fetch-Site, JSON bodies) stay.

Keys are never logged nor kept in sessions: the store keeps their SHA-256, sessions the
key's id. A Bearer key costs the one store lookup it always did; a session bound to a key
costs one lookup by primary key; the token costs none.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from flowbuilder.settings import Settings, SettingsError
from flowbuilder.store import ApiKey, Store
from server.api.framing import deny_framing
from server.api.origin import (
    STATE_CHANGING,
    HostRule,
    body_refusal,
    cross_site,
    is_loopback,
    safe_next,
)
from server.api.token import fingerprint

SESSION_KEY = "fb_auth"
HTTP_METHODS = frozenset({"get", "put", "post", "patch", "delete"})
API_PREFIXES = ("/api/", "/v1/", "/_nicegui")
API_PATHS = frozenset({"/api", "/v1", "/openapi.json"})


class AuthSettingError(SettingsError):
    """An auth setting that cannot be used (``--no-auth`` beyond loopback, or together
    with ``FLOWBUILDER_REQUIRE_AUTH=1``)."""


def auth_required(settings: Settings, host: str, no_auth: bool = False) -> bool:
    """Whether a server binding ``host`` needs a credential: always, unless ``no_auth``
    (``--no-auth``) or ``settings.no_auth`` (``FLOWBUILDER_NO_AUTH=1``) opts out.

    Raises:
        AuthSettingError: the opt-out with a bind beyond loopback, or with
            ``FLOWBUILDER_REQUIRE_AUTH=1``.
    """
    if not (no_auth or settings.no_auth):
        return True
    if settings.require_auth:
        raise AuthSettingError(
            "--no-auth (FLOWBUILDER_NO_AUTH) is refused: FLOWBUILDER_REQUIRE_AUTH=1 is set"
        )
    if not is_loopback(host):
        raise AuthSettingError(
            f"--no-auth (FLOWBUILDER_NO_AUTH) is allowed only on a loopback address "
            f"(127.0.0.1, ::1, localhost), not --host {host}: drop it and use the printed "
            "token or an API key, or bind --host 127.0.0.1"
        )
    return False


class KeyBook(Protocol):
    """Where API keys are looked up (the store, or none)."""

    def verify(self, key: str) -> ApiKey | None: ...

    def by_id(self, key_id: str) -> ApiKey | None: ...


@dataclass
class StoreKeys:
    """API keys in a store; ``store_of`` gives the store, or None when there is none
    (then no key is valid)."""

    store_of: Callable[[], Store | None]

    def verify(self, key: str) -> ApiKey | None:
        store = self.store_of()
        return store.verify_api_key(key) if store is not None else None

    def by_id(self, key_id: str) -> ApiKey | None:
        store = self.store_of()
        return store.get_api_key(key_id) if store is not None else None


@dataclass(frozen=True)
class Gate:
    """The rules of one app: its Host names, whether a credential is required, the token,
    where keys are looked up, and which paths are open, upload or NiceGUI transport.

    ``login_path`` is where pages without a session are sent (None: they answer 401).
    """

    hosts: HostRule
    required: bool = True
    token: str | None = None
    keys: KeyBook | None = None
    login_path: str | None = "/login"
    open_paths: frozenset[str] = frozenset({"/login", "/favicon.ico"})
    uploads: tuple[re.Pattern[str], ...] = ()
    transport_prefix: str | None = None
    _fp: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fp", fingerprint(self.token) if self.token else "")

    def is_token(self, presented: str) -> bool:
        """Whether ``presented`` is the server's token (constant-time)."""
        return bool(self.token) and hmac.compare_digest(
            presented.encode(), (self.token or "").encode()
        )

    def check_bearer(self, presented: str) -> tuple[int, str] | None:
        """None when ``presented`` is the token or a valid key, else (status, reason)."""
        if self.is_token(presented):
            return None
        record = self.keys.verify(presented) if self.keys is not None else None
        if record is None:
            return 401, "unknown API key: send 'Authorization: Bearer <key or token>'"
        if record.revoked_at is not None:
            return 403, f"API key {record.prefix}… was revoked"
        return None

    def session_ok(self, session: Any) -> bool:
        """Whether a session's binding still holds (its key is not revoked, its token is
        the current one)."""
        bound = session.get(SESSION_KEY) if isinstance(session, MutableMapping) else None
        if not isinstance(bound, dict):
            return False
        if bound.get("kind") == "token":
            fp = bound.get("fp")
            return bool(self._fp) and isinstance(fp, str) and hmac.compare_digest(fp, self._fp)
        if bound.get("kind") == "key" and isinstance(bound.get("id"), str):
            record = self.keys.by_id(bound["id"]) if self.keys is not None else None
            return record is not None and record.revoked_at is None
        return False

    def scope_ok(self, scope: Scope) -> bool:
        """Whether a request (or a websocket's handshake) carries a valid credential."""
        if not self.required:
            return True
        presented = bearer(scope.get("headers", []))
        if presented is not None:
            return self.check_bearer(presented) is None
        return self.session_ok(scope.get("session"))

    def sign_in(self, session: MutableMapping[str, Any], presented: str) -> bool:
        """Bind ``session`` to ``presented`` (the token or a valid key); False when it is
        neither. The session's former contents are dropped (no session fixation)."""
        presented = presented.strip()
        if self.is_token(presented):
            bound: dict[str, str] = {"kind": "token", "fp": self._fp}
        else:
            record = self.keys.verify(presented) if self.keys is not None else None
            if record is None or record.revoked_at is not None:
                return False
            bound = {"kind": "key", "id": record.id}
        session.clear()
        session[SESSION_KEY] = bound
        return True


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The credential of an ``Authorization: Bearer …`` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class AuthMiddleware:
    """ASGI middleware applying a :class:`Gate` (read from ``state.fb_gate`` at each
    request, so the server can set it when it knows its bind address).

    In order: the Host allow-list (400), for state-changing requests the Origin rule
    when no Bearer key is sent (403) and the body type (415), then the credential
    (401/403, or a redirect to the login for pages). HTML answers refuse to be framed
    (:mod:`server.api.framing`).
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if kind == "http":
            send = deny_framing(send)
        gate: Gate = self.state.fb_gate
        host = _header(scope, b"host")
        if host is None or not gate.hosts.allows(host):
            await _refuse(scope, send, 400, f"host not allowed: {host!r} does not name this server")
            return
        path: str = scope["path"]
        presented = bearer(scope["headers"])
        transport = bool(gate.transport_prefix) and path.startswith(gate.transport_prefix or "")
        if kind == "websocket" or transport or scope["method"] in STATE_CHANGING:
            if presented is None:
                why = cross_site(_header(scope, b"origin"), _header(scope, b"sec-fetch-site"), host)
                if why is not None:
                    await _refuse(scope, send, 403, f"cross-site request refused: {why}")
                    return
            if kind == "http" and not transport and scope["method"] in STATE_CHANGING:
                length = _header(scope, b"content-length")
                has_body = (length not in (None, "0")) or _header(
                    scope, b"transfer-encoding"
                ) is not None
                why = body_refusal(path, _header(scope, b"content-type"), has_body, gate.uploads)
                if why is not None:
                    await _refuse(scope, send, 415, why)
                    return
        if not gate.required or path in gate.open_paths:
            await self.app(scope, receive, send)
            return
        if presented is not None:
            refused = gate.check_bearer(presented)
            if refused is not None:
                await _refuse(scope, send, *refused)
                return
            await self.app(scope, receive, send)
            return
        session = scope.get("session")
        # the path as sent (percent-encoded), for the redirects below
        sent = (scope.get("raw_path") or path.encode()).decode("latin-1")
        if (
            kind == "http"
            and scope["method"] == "GET"
            and b"token=" in scope["query_string"]
            and isinstance(session, MutableMapping)
        ):  # a tokenised URL: sign the browser in, and drop the token from the address
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            offered = [v for k, v in query if k == "token"]
            if offered and gate.is_token(offered[-1]) and gate.sign_in(session, offered[-1]):
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                await _redirect(send, safe_next(sent + ("?" + rest if rest else "")))
                return
        if gate.session_ok(session):
            await self.app(scope, receive, send)
            return
        if isinstance(session, MutableMapping) and SESSION_KEY in session:
            del session[SESSION_KEY]  # revoked key or changed token: the session ends
        if kind == "http" and gate.login_path and not _is_api(path):
            query_string = scope["query_string"].decode("latin-1")
            target = sent + ("?" + query_string if query_string else "")
            await _redirect(send, f"{gate.login_path}?next={quote(target, safe='')}")
            return
        await _refuse(
            scope,
            send,
            401,
            "a key or a session is required: send 'Authorization: Bearer <key or token>' "
            "or open the URL printed at start",
        )


def _is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in API_PATHS


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
    if scope["type"] == "websocket":  # before accept: the handshake answers 403
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    if scope.get("path", "").startswith("/v1/"):  # the OpenAI facade: OpenAI's error shape
        from server.api.openai_errors import error_body

        body = json.dumps(error_body(status, detail)).encode()
    else:
        body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def gate_openapi(gate: Gate, schema: dict[str, Any], covers: Callable[[str], bool]) -> None:
    """Document the gate in an OpenAPI document, on the operations whose path ``covers``
    accepts: the Bearer scheme (``components.securitySchemes.bearer``, ``type: http``,
    ``scheme: bearer``) and its 401/403 answers when a credential is required; the 415
    of a state-changing operation's body; the 403 of a cross-site request."""
    if gate.required:
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key (flowbuilder keys create) or the server's token",
        }
    for path, operations in schema.get("paths", {}).items():
        if not covers(path):
            continue
        for method, operation in operations.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            answers = operation.setdefault("responses", {})
            if gate.required:
                operation["security"] = [{"bearer": []}]
                answers.setdefault("401", {"description": "no key, token or session"})
            if gate.required or method.upper() in STATE_CHANGING:
                answers.setdefault(
                    "403", {"description": "a revoked key, or a request from another site"}
                )
            if method.upper() in STATE_CHANGING:
                answers.setdefault(
                    "415", {"description": "a body that is not JSON (multipart: uploads only)"}
                )
