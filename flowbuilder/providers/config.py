"""Provider settings: base URLs, named OpenAI-compatible endpoints, timeouts.

Kept in ``FLOWBUILDER_HOME/providers.json`` (plain JSON, written atomically with mode 0600;
it holds the *names* of secrets, never their values)::

    {"version": 1,
     "endpoints": {
       "ollama": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:11434/v1"},
       "openai": {"kind": "openai", "base_url": null, "api_key_secret": "OPENAI_API_KEY"}}}

Each endpoint becomes a provider named like the endpoint, so ``ollama:llama3.2`` calls
model ``llama3.2`` at the ``ollama`` base URL. The built-in endpoints (:data:`BUILTIN`)
exist without a file; an entry with the same name overrides one (e.g. a proxy base URL
for ``openai``), and removing it restores the built-in.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowbuilder.errors import FlowbuilderError
from flowbuilder.graph import write_atomic

CONFIG_FILE = "providers.json"
WHERE = f"FLOWBUILDER_HOME/{CONFIG_FILE}"
ENDPOINT_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")
RESERVED = ("local", "bundled")

EndpointKind = Literal["openai", "openai_compatible", "anthropic"]


class ProviderConfigError(FlowbuilderError):
    """providers.json cannot be read, or an endpoint setting is invalid."""


class Endpoint(BaseModel):
    """One remote provider: which wire format, where, with which credential.

    ``api_key_secret`` names a secret (store, then environment variable of that name);
    None means the endpoint needs no key (a local Ollama or vLLM). Timeouts are in
    seconds: ``connect_timeout_s`` to open a connection, ``timeout_s`` for the whole
    wait between bytes of an answer.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: EndpointKind
    base_url: str | None = None
    api_key_secret: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)

    @property
    def label(self) -> str:
        """How messages name this provider: ``OpenAI``, ``Anthropic``, ``'ollama'
        (http://…)``."""
        if self.name == "openai" and self.kind == "openai" and self.base_url is None:
            return "OpenAI"
        if self.name == "anthropic" and self.kind == "anthropic" and self.base_url is None:
            return "Anthropic"
        return f"'{self.name}' ({self.base_url or 'default URL'})"


BUILTIN: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint(name="openai", kind="openai", api_key_secret="OPENAI_API_KEY"),
        Endpoint(name="anthropic", kind="anthropic", api_key_secret="ANTHROPIC_API_KEY"),
        Endpoint(name="ollama", kind="openai_compatible", base_url="http://127.0.0.1:11434/v1"),
    )
}
"""Endpoints that exist without configuration. Other common servers: LM Studio
``http://127.0.0.1:1234/v1``, vLLM ``http://127.0.0.1:8000/v1``, llama.cpp server
``http://127.0.0.1:8080/v1`` (add them with ``flowbuilder providers add-endpoint``)."""

SUGGESTED_MODELS: dict[EndpointKind, list[str]] = {
    "openai": ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "o4-mini"],
    "anthropic": ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"],
    "openai_compatible": [],
}
"""Model names offered as suggestions in pickers (free text is always allowed)."""

SUGGESTED_EMBEDDING_MODELS: dict[EndpointKind, list[str]] = {
    "openai": ["text-embedding-3-small", "text-embedding-3-large"],
    "anthropic": [],
    "openai_compatible": [],
}


def check_endpoint_name(name: str) -> None:
    """Raise :class:`ProviderConfigError` unless ``name`` can prefix a model id."""
    if not ENDPOINT_NAME.match(name) or name in RESERVED:
        raise ProviderConfigError(
            f"'{name}' cannot name an endpoint: use 2-32 lower-case letters, digits, '_' or "
            f"'-', starting with a letter (and not {', '.join(RESERVED)})"
        )


def check_base_url(url: str) -> None:
    if not re.match(r"^https?://[^\s/]+", url):
        raise ProviderConfigError(
            f"'{url}' is not a base URL: write it like http://127.0.0.1:11434/v1"
        )


def _check_written_by_us(st: os.stat_result) -> None:
    """Refuse a providers.json that another user owns or may write: its endpoints decide
    where API keys are sent, so only a file flowbuilder wrote (mode 0600) is trusted."""
    if st.st_uid != os.geteuid():
        raise ProviderConfigError(
            f"{WHERE} belongs to another user (uid {st.st_uid}); endpoint definitions are "
            "read only from a file this user wrote (`flowbuilder providers add-endpoint`)"
        )
    if st.st_mode & 0o022:
        raise ProviderConfigError(
            f"{WHERE} may be written by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"check its endpoints, then `chmod 600` it"
        )


class ProviderConfig:
    """Reads and writes ``providers.json`` under ``home``; re-reads it when it changes.

    Only the CLI (``flowbuilder providers``) and the Settings page write it, with mode
    0600; a file another user owns or may write is refused. Messages name it
    ``FLOWBUILDER_HOME/providers.json``, never by its full path.

    Raises:
        ProviderConfigError: the file is not valid JSON, holds invalid endpoints, or is
            owned or writable by another user.
    """

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / CONFIG_FILE
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._stored: dict[str, Endpoint] = {}

    def _read(self) -> dict[str, Endpoint]:
        with self._lock:
            try:
                st = self.path.stat()
                stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp == self._stamp:
                return self._stored
            stored: dict[str, Endpoint] = {}
            if stamp is not None:
                _check_written_by_us(st)
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                    for name, raw in (data.get("endpoints") or {}).items():
                        stored[name] = Endpoint.model_validate({**raw, "name": name})
                except (OSError, ValueError, AttributeError) as exc:
                    msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                    raise ProviderConfigError(f"cannot read {WHERE}: {msg}") from None
            self._stored, self._stamp = stored, stamp
            return stored

    def stored(self) -> dict[str, Endpoint]:
        """Endpoints written in the file (overrides and additions), by name."""
        return dict(self._read())

    def endpoints(self) -> dict[str, Endpoint]:
        """Every endpoint in effect: built-ins, overridden or extended by the file."""
        return {**BUILTIN, **self._read()}

    def get(self, name: str) -> Endpoint | None:
        return self.endpoints().get(name)

    def _write(self, stored: dict[str, Endpoint]) -> None:
        data = {
            "version": 1,
            "endpoints": {
                n: e.model_dump(exclude={"name"}, exclude_defaults=True) | {"kind": e.kind}
                for n, e in sorted(stored.items())
            },
        }
        write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"), mode=0o600)

    def add(
        self,
        name: str,
        base_url: str | None,
        *,
        kind: EndpointKind | None = None,
        api_key_secret: str | None = None,
        timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
    ) -> Endpoint:
        """Add or replace endpoint ``name``; returns it.

        ``kind`` defaults to the built-in's kind for ``openai``/``anthropic`` and to
        ``openai_compatible`` otherwise. Raises :class:`ProviderConfigError` for a bad
        name, URL or timeout.
        """
        check_endpoint_name(name)
        if base_url is not None:
            check_base_url(base_url)
        builtin = BUILTIN.get(name)
        kind = kind or (builtin.kind if builtin else "openai_compatible")
        if api_key_secret is None and builtin is not None:
            api_key_secret = builtin.api_key_secret
        if api_key_secret is not None:
            from flowbuilder.secrets import SecretError, check_name

            try:
                check_name(api_key_secret)
            except SecretError as exc:
                raise ProviderConfigError(str(exc)) from None
        fields: dict[str, object] = {
            "name": name,
            "kind": kind,
            "base_url": base_url.rstrip("/") if base_url else None,
            "api_key_secret": api_key_secret,
        }
        if timeout_s is not None:
            fields["timeout_s"] = timeout_s
        if connect_timeout_s is not None:
            fields["connect_timeout_s"] = connect_timeout_s
        try:
            endpoint = Endpoint.model_validate(fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ProviderConfigError(f"endpoint '{name}': {err['loc'][0]}: {err['msg']}") from None
        if kind == "openai_compatible" and endpoint.base_url is None:
            raise ProviderConfigError(f"endpoint '{name}' needs a base URL")
        stored = self.stored()
        stored[name] = endpoint
        self._write(stored)
        return endpoint

    def remove(self, name: str) -> bool:
        """Remove a stored endpoint (a built-in one comes back with its defaults).

        Returns False when the file has no endpoint of that name.
        """
        stored = self.stored()
        if name not in stored:
            return False
        del stored[name]
        self._write(stored)
        return True
