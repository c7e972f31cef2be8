"""No page of the app is shown inside another page's frame (against clickjacking).

A page on another port of the same host is the same site, so the browser sends the
session cookie along with its frames: framed and disguised, the Settings page would be
the victim's, one click from minting or revoking a key. Every HTML answer (the pages,
the login, the API docs) says ``X-Frame-Options: DENY`` and, in its
Content-Security-Policy, ``frame-ancestors 'none'``; other answers (JSON, artifacts:
images and PDFs that the browser's own viewers frame) are left as they are.
:class:`~server.api.auth.AuthMiddleware` applies it to every HTTP answer.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Send

FRAME_ANCESTORS = "frame-ancestors 'none'"


def deny_framing(send: Send) -> Send:
    """``send`` with the framing headers added to an HTML answer's start."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            if headers.get("content-type", "").startswith("text/html"):
                headers.setdefault("X-Frame-Options", "DENY")
                csp = headers.get("content-security-policy")
                if csp is None:
                    headers["Content-Security-Policy"] = FRAME_ANCESTORS
                elif "frame-ancestors" not in csp:
                    headers["Content-Security-Policy"] = f"{csp.rstrip('; ')}; {FRAME_ANCESTORS}"
        await send(message)

    return wrapped
