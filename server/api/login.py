"""``/login``: sign a browser in with an API key or the server's token.

``GET /login?next=/path`` is a small HTML form (no websocket: it works before there is a
session); a signed-in browser is sent straight to ``next``. The form posts JSON to
``POST /login`` (``{"key": …, "next": …}``), which binds the session to the credential
(see :class:`~server.api.auth.Gate`) and answers the page to go to. ``next`` is always
passed through :func:`~server.api.origin.safe_next`: only paths on this site.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from server.api.auth import Gate
from server.api.origin import safe_next

router = APIRouter(include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · flowbuilder</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ background: #121212; color: #eee; font: 15px system-ui, sans-serif;
       display: grid; place-items: center; min-height: 100vh; margin: 0; }}
form {{ background: #1d1d1d; padding: 24px; border-radius: 8px; width: 360px; }}
h1 {{ font-size: 20px; margin: 0 0 8px; }} p {{ color: #aaa; }}
input {{ width: 100%; box-sizing: border-box; padding: 8px; margin: 8px 0;
        background: #2a2a2a; color: #eee; border: 1px solid #444; border-radius: 4px; }}
button {{ padding: 8px 16px; background: #1976d2; color: white; border: 0; border-radius: 4px; }}
#error {{ color: #f44336; min-height: 1em; }}
</style></head>
<body><form id="login">
<h1>flowbuilder</h1>
<p>Paste an API key (<code>flowbuilder keys create</code>) or the server's token
(printed at start, kept in the data directory's <code>token</code> file).</p>
<input id="key" type="password" autocomplete="off" autofocus aria-label="API key or token"
       data-testid="login-key">
<button type="submit" data-testid="login-submit">Sign in</button>
<p id="error" role="alert"></p>
</form>
<script nonce="{nonce}">
document.getElementById("login").addEventListener("submit", async (e) => {{
  e.preventDefault();
  const next = new URLSearchParams(location.search).get("next") || "/";
  const r = await fetch("/login", {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{key: document.getElementById("key").value, next}})}});
  if (r.ok) {{ location.assign((await r.json()).next); return; }}
  document.getElementById("error").textContent = "That key or token is unknown or revoked.";
}});
</script></body></html>
"""


class SignIn(BaseModel):
    key: str = Field(max_length=512, description="an API key or the server's token")
    next: str = Field("/", max_length=2048, description="the page to go to (on this site)")


def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.fb_gate
    return gate


@router.get("/login", response_model=None)
def login_page(request: Request, next: str = "/") -> Response:
    """The sign-in form; a browser whose session still holds goes to ``next``."""
    gate = _gate(request)
    session = request.scope.get("session")
    if not gate.required or gate.session_ok(session):
        return RedirectResponse(safe_next(next), status_code=303)
    nonce = secrets.token_urlsafe(16)
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(PAGE.format(nonce=nonce), headers=headers)


@router.post("/login", response_model=None)
def sign_in(request: Request, body: SignIn) -> Any:
    """Bind the browser's session to a key or the token; answers ``{"next": path}``
    (401 when the credential is unknown or revoked)."""
    gate = _gate(request)
    target = {"next": safe_next(body.next)}
    if not gate.required:
        return target
    session = request.scope.get("session")
    if session is None or not gate.sign_in(session, body.key):
        return JSONResponse({"detail": "unknown or revoked key or token"}, status_code=401)
    return target
