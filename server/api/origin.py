"""Where a request comes from, and what its body is: the checks that hold with or without
a key (``--no-auth`` keeps them).

- **Host allow-list** (against DNS rebinding): the ``Host`` header must name this server —
  a loopback name (``127.0.0.1``, ``localhost``, ``::1``; any port), the address it binds
  when that is a specific one, or a name in ``FLOWBUILDER_ALLOWED_HOSTS`` (``*`` there
  turns the check off).
- **Origin / Sec-Fetch-Site** (against CSRF and cross-site websockets): a state-changing
  request or a websocket handshake that carries no Bearer key must not come from another
  origin. Browsers always send one of these headers on such requests; a client that sends
  neither is not a browser acting for someone else.
- **JSON bodies**: a state-changing request's body is ``application/json`` (or
  ``…+json``); ``multipart/form-data`` only on upload routes. ``text/plain`` and
  ``application/x-www-form-urlencoded`` — what a cross-site ``<form>`` can send — answer
  415.
- **Same-site redirects**: :func:`safe_next` keeps ``/login?next=`` and the ``?token=``
  redirect on this site.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``localhost``,
    127.0.0.0/8, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The lower-case name of a ``Host`` header (``[::1]:8080`` → ``::1``), or None when
    it is not a host name with an optional numeric port."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end], value[end + 1 :]
        if end < 0 or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
        if not port.isdigit():
            return None
    else:
        name = value  # no port, or a bare IPv6 address
    name = name.rstrip(".")
    return name or None


@dataclass(frozen=True)
class HostRule:
    """The names a ``Host`` header may carry (any port)."""

    names: frozenset[str]
    any_host: bool = False

    @classmethod
    def for_bind(cls, bind: str, extra: Iterable[str] = ()) -> HostRule:
        """Loopback names, ``bind`` when it is a specific address, and ``extra``
        (``FLOWBUILDER_ALLOWED_HOSTS``; ``*`` allows any host)."""
        names = set(LOOPBACK_NAMES)
        if bind.strip() not in WILDCARD_BINDS:
            names.add(bind.strip().strip("[]").lower())
        wanted = {e.strip().lower() for e in extra if e.strip()}
        names |= {n for n in (host_name(e) for e in wanted - {"*"}) if n}
        return cls(frozenset(names), "*" in wanted)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header is for this server."""
        if header is None:
            return False
        name = host_name(header)
        return name is not None and (self.any_host or name in self.names)


def _netloc(value: str, scheme: str) -> str:
    value = value.lower()
    default = DEFAULT_PORTS.get(scheme)
    if default and value.endswith(f":{default}"):
        value = value[: -len(default) - 1]
    return value


def same_origin(origin: str, host: str) -> bool:
    """Whether an ``Origin`` header names the server the ``Host`` header names."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _netloc(parts.netloc, parts.scheme) == _netloc(host.strip(), parts.scheme)


def cross_site(origin: str | None, fetch_site: str | None, host: str) -> str | None:
    """Why a browser's request comes from another site or origin, or None when it does
    not (``Sec-Fetch-Site`` is ``same-origin``/``none`` and ``Origin`` is this server)."""
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site.strip()!r}"
    if origin is not None and not same_origin(origin, host):
        return f"Origin {origin.strip()!r} is not this server"
    return None


def body_refusal(
    path: str, content_type: str | None, has_body: bool, uploads: Iterable[re.Pattern[str]]
) -> str | None:
    """Why a state-changing request's body is refused (answer 415), or None.

    JSON (``application/json``, ``…+json``) is taken everywhere, ``multipart/form-data``
    only on a path that matches one of ``uploads``, no body at all everywhere.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media:
        return "send the body as application/json" if has_body else None
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return None
    if media == "multipart/form-data":
        if any(p.fullmatch(path) for p in uploads):
            return None
        return f"{path} takes application/json (multipart/form-data only where files are uploaded)"
    return f"{media} bodies are not accepted: send application/json"


def safe_next(value: str | None) -> str:
    """``value`` when it is a path on this site (``/flow/abc?x=1``), else ``/``.

    Refused: anything not starting with one ``/``; ``//host`` and ``/\\host`` (which
    browsers read as another host), also percent-encoded (``/%2F%2Fhost``); spaces and
    control characters (browsers drop them, joining what was apart); a scheme or a host.
    """
    if not value or not value.startswith("/"):
        return "/"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "/"
    probe = value
    for _ in range(4):  # a few rounds of percent-decoding: /%2F%2Fhost, /%255Chost, …
        if "\\" in probe or probe.startswith("//"):
            return "/"
        probe = unquote(probe)
    parts = urlsplit(value)
    return "/" if parts.scheme or parts.netloc else value
