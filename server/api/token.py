"""The server's token, the way Jupyter does it: one secret per data directory that opens
the app in a browser (``http://127.0.0.1:8080/?token=…``) and works as a Bearer key.

``FLOWBUILDER_TOKEN`` sets it; otherwise it is made on first start (256 random bits,
URL-safe) and kept in ``$FLOWBUILDER_HOME/token`` (mode 0600), so a restart keeps the
URL that was printed. Deleting the file (or changing ``FLOWBUILDER_TOKEN``) rotates it:
sessions made with the old token end at their next request.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from flowbuilder.settings import Settings


def server_token(settings: Settings) -> str:
    """``settings.token``, else the token kept in ``settings.token_file`` (made, 0600,
    when missing or empty)."""
    return settings.token or kept_secret(settings.token_file)


def session_secret(home: Path) -> str:
    """The secret that signs session cookies: ``home/storage_secret`` (made, 0600)."""
    return kept_secret(home / "storage_secret")


def kept_secret(path: Path) -> str:
    """The secret kept in ``path``; a new one (256 random bits, URL-safe) is written
    there with mode 0600 when the file is missing or empty."""
    if path.is_file():
        kept = path.read_text().strip()
        if kept:
            return kept
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    try:
        os.link(tmp, path)  # appears whole, or not at all when another process was first
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        tmp.unlink()
    return value


def fingerprint(token: str) -> str:
    """A short digest of ``token`` (SHA-256, 16 hex digits): what a session made with the
    token keeps, to notice when the token changed."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def token_urls(host: str, port: int, token: str, path: str = "/") -> list[str]:
    """The URLs to print at start: on ``127.0.0.1``, and on ``host`` when it is another
    specific address (a wildcard bind such as ``0.0.0.0`` prints only the first)."""
    urls = [f"http://127.0.0.1:{port}{path}?token={token}"]
    if host not in ("127.0.0.1", "localhost", "0.0.0.0", "::", ""):
        shown = f"[{host}]" if ":" in host else host
        urls.append(f"http://{shown}:{port}{path}?token={token}")
    return urls
