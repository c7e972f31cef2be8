"""Credentials: a secret store encrypted at rest, with scopes, and redaction.

Nodes name a credential (``credential="OPENAI_API_KEY"``); the value never enters a
graph file. Each stored secret has a *scope*: the endpoints (provider names such as
``openai``, ``vllm``) it may be sent to, or None for a secret stored without one (every
secret stored before scopes existed). Which secret an endpoint may receive is decided in
:mod:`flowbuilder.providers.credentials`; this module only keeps names, values and
scopes. :meth:`SecretStore.resolve` looks a name up in the store, then in the
environment variable of the same name (the provider's own default variable, such as
``OPENAI_API_KEY``, works without storing anything).

The store is ``FLOWBUILDER_HOME/secrets.enc``: one Fernet token (AES-128-CBC with
HMAC-SHA256, from the ``cryptography`` package) holding the JSON object
``{"version": 2, "secrets": {name: value}, "scopes": {name: [endpoint, ...]}}``, written
atomically with mode 0600. Files without ``version`` and ``scopes`` (written before
scopes existed) are read as unscoped secrets; a secret missing from ``scopes`` is
unscoped. The key is ``FLOWBUILDER_SECRET_KEY`` when set (a Fernet key, or any
passphrase, which is stretched with scrypt), else the key file
``FLOWBUILDER_HOME/secret.key``, created with mode 0600 on first use.

Every value the process has seen (stored, or read from the environment for a
credential) is remembered so that :func:`redact` can take it out of any text: error
messages, events, logs. :func:`install_log_redaction` makes every log record pass
through it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowbuilder.errors import FlowbuilderError
from flowbuilder.graph import write_atomic

KEY_ENV = "FLOWBUILDER_SECRET_KEY"
STORE_FILE = "secrets.enc"
KEY_FILE = "secret.key"
STORE_VERSION = 2
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
REDACTED = "[redacted]"
MIN_REDACT_LEN = 4
"""Shorter values are not redacted: replacing every 'abc' in a log would hide more than
it protects (and a 3-character secret protects nothing)."""

# Environment variables that hold credentials even when no node has named them yet.
WELL_KNOWN_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", KEY_ENV)


class SecretError(FlowbuilderError):
    """The secret store cannot be read or written, or a name or value is invalid."""


# ---- redaction ---------------------------------------------------------------------

_known: set[str] = set()
_known_lock = threading.Lock()
_env_names: set[str] = set(WELL_KNOWN_ENV)
_ordered: tuple[str, ...] = ()


def remember_secret(value: str) -> None:
    """Add ``value`` to the values :func:`redact` removes (values under 4 characters are
    ignored)."""
    global _ordered
    if len(value) < MIN_REDACT_LEN or value in _known:
        return
    with _known_lock:
        _known.add(value)
        # longest first, so a secret that contains another is replaced whole
        _ordered = tuple(sorted(_known, key=len, reverse=True))


def remember_env_name(name: str) -> None:
    """Also redact the value of environment variable ``name`` whenever it is set."""
    _env_names.add(name)


def redact(text: str) -> str:
    """``text`` with every known secret value replaced by ``[redacted]``.

    Known values: everything read from or written to a :class:`SecretStore` in this
    process, and the values of credential environment variables (``OPENAI_API_KEY``,
    ``ANTHROPIC_API_KEY``, ``FLOWBUILDER_SECRET_KEY`` and any other name a node used).
    Cheap when there is nothing to redact: one substring test per known value.
    """
    for name in tuple(_env_names):
        value = os.environ.get(name)
        if value and value not in _known:
            remember_secret(value)
    for value in _ordered:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """:func:`redact` applied to every string inside a JSON-like value (dicts, lists)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that takes secret values out of a record's message and traceback.

    Attach it to a handler (``handler.addFilter(RedactingFilter())``); or call
    :func:`install_log_redaction` once to cover every record of the process.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    if not _ordered and not any(os.environ.get(n) for n in _env_names):
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_installed = False


def install_log_redaction() -> None:
    """Redact every log record this process creates, whatever handler receives it.

    Wraps the logging record factory (idempotent), so handlers added later (pytest's
    ``caplog``, a server's access log) see redacted messages too.
    """
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


# ---- keys --------------------------------------------------------------------------


def generate_key() -> str:
    """A new random Fernet key (URL-safe base64 of 32 bytes), e.g. for
    ``FLOWBUILDER_SECRET_KEY``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


@functools.lru_cache(maxsize=8)
def _key_from_text(text: str) -> bytes:
    """A Fernet key given as such, or one derived from a passphrase with scrypt
    (n=2**15, r=8, p=1; RFC 7914's interactive-use parameters)."""
    raw = text.strip().encode("utf-8")
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32 and len(raw) == 44:
            return raw
    except ValueError:
        pass
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kdf = Scrypt(salt=b"flowbuilder-secret-store-v1", length=32, n=2**15, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(raw))


# ---- the store ---------------------------------------------------------------------


Scope = tuple[str, ...] | None
"""The endpoints a secret may be sent to (sorted), or None: stored without a scope."""


@dataclass(frozen=True)
class _Contents:
    values: dict[str, str] = field(default_factory=dict)
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)


class SecretStore:
    """Named secrets and their scopes in ``home/secrets.enc``, encrypted with Fernet.

    Safe to share between threads; the file is re-read when another process changed
    it, and writes take a lock file so two processes never lose each other's update.
    Messages name the files as ``FLOWBUILDER_HOME/...``, never by their full path (they
    can reach an HTTP answer through a failed run).

    Raises:
        SecretError: from every method, when the file cannot be decrypted with the key
            (a different ``FLOWBUILDER_SECRET_KEY`` or key file) or cannot be written.
    """

    def __init__(self, home: Path, *, key: str | None = None) -> None:
        self.home = Path(home)
        self.path = self.home / STORE_FILE
        self.key_path = self.home / KEY_FILE
        self._key_text = key
        self._lock = threading.RLock()
        self._cache: _Contents | None = None
        self._stamp: tuple[int, int] | None = None

    # -- key

    def _fernet(self, create: bool) -> Any:
        from cryptography.fernet import Fernet

        text = self._key_text if self._key_text is not None else os.environ.get(KEY_ENV)
        if text:
            return Fernet(_key_from_text(text))
        try:
            return Fernet(self.key_path.read_bytes().strip())
        except FileNotFoundError:
            if not create:
                return None
        except ValueError:
            raise SecretError(
                f"the key file FLOWBUILDER_HOME/{KEY_FILE} is damaged (not a Fernet key); "
                f"restore it or set {KEY_ENV}"
            ) from None
        return Fernet(self._create_key_file())

    def _create_key_file(self) -> bytes:
        self.home.mkdir(parents=True, exist_ok=True)
        key = generate_key().encode("ascii")
        try:
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return self.key_path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
        return key

    # -- reading

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _load(self) -> _Contents:
        """The decrypted values and scopes (cached until the file changes)."""
        with self._lock:
            stamp = self._file_stamp()
            if self._cache is not None and stamp == self._stamp:
                return self._cache
            contents = _Contents()
            if stamp is not None:
                contents = self._decrypt(self.path.read_bytes())
            for value in contents.values.values():
                remember_secret(value)
            self._cache, self._stamp = contents, stamp
            return contents

    def _decrypt(self, token: bytes) -> _Contents:
        from cryptography.fernet import InvalidToken

        fernet = self._fernet(create=False)
        where = f"FLOWBUILDER_HOME/{STORE_FILE}"
        source = f"${KEY_ENV}" if (self._key_text or os.environ.get(KEY_ENV)) else KEY_FILE
        if fernet is None:
            raise SecretError(
                f"cannot read {where}: its key file FLOWBUILDER_HOME/{KEY_FILE} is missing; "
                f"restore it or set {KEY_ENV} to the key the store was written with"
            )
        try:
            data = json.loads(fernet.decrypt(token.strip()))
        except InvalidToken:
            raise SecretError(
                f"cannot decrypt {where}: {source} is not the key it was written with"
            ) from None
        secrets = data.get("secrets") if isinstance(data, dict) else None
        if not isinstance(secrets, dict):
            raise SecretError(f"{where} does not hold a secret store")
        values = {str(k): str(v) for k, v in secrets.items()}
        raw_scopes = data.get("scopes") or {}
        scopes = {
            str(k): tuple(sorted({str(e) for e in v}))
            for k, v in (raw_scopes.items() if isinstance(raw_scopes, dict) else ())
            if str(k) in values and isinstance(v, list)
        }
        return _Contents(values, scopes)

    def names(self) -> list[str]:
        """The stored secret names, sorted (never their values)."""
        return sorted(self._load().values)

    def scopes(self) -> dict[str, Scope]:
        """Every stored secret's scope by name, sorted by name (never their values)."""
        contents = self._load()
        return {n: contents.scopes.get(n) for n in sorted(contents.values)}

    def scope(self, name: str) -> Scope:
        """The endpoints stored secret ``name`` may be sent to; None when it has no scope
        (or is not stored)."""
        return self._load().scopes.get(name)

    def get(self, name: str) -> str | None:
        """The stored value of ``name``, or None (the environment is not consulted)."""
        return self._load().values.get(name)

    def resolve(self, name: str) -> tuple[str, str] | None:
        """The value for credential ``name`` and where it came from.

        Looks in the store, then in the environment variable ``name``. Returns
        ``(value, "store" | "env")`` or None. The value is remembered for redaction.
        This says nothing about where the value may be sent: callers that send it go
        through :func:`flowbuilder.providers.credentials.api_key`.
        """
        value = self.get(name)
        if value is not None:
            return value, "store"
        remember_env_name(name)
        env = os.environ.get(name)
        if env:
            remember_secret(env)
            return env, "env"
        return None

    # -- writing

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.home / ".secrets.lock", "a") as fh:
            os.chmod(fh.fileno(), 0o600)
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX: the thread lock only
                pass
            yield

    def _save(self, contents: _Contents) -> None:
        fernet = self._fernet(create=True)
        data = {
            "version": STORE_VERSION,
            "secrets": contents.values,
            "scopes": {n: list(s) for n, s in contents.scopes.items() if n in contents.values},
        }
        token = fernet.encrypt(json.dumps(data, sort_keys=True).encode("utf-8"))
        try:
            write_atomic(self.path, token + b"\n", mode=0o600)
        except OSError as exc:
            raise SecretError(
                f"cannot write FLOWBUILDER_HOME/{STORE_FILE}: {exc.strerror}"
            ) from None
        self._cache, self._stamp = contents, self._file_stamp()

    def set(self, name: str, value: str, *, scope: Iterable[str] | None = None) -> None:
        """Store ``value`` under ``name`` (replacing an old value).

        ``scope`` names the endpoints it may be sent to (see :meth:`set_scope`); None
        keeps the scope an existing secret has (a new one then has none).

        Raises:
            SecretError: an invalid name (letters, digits, ``_ . -``; not starting with a
                digit), an empty value, or an invalid endpoint name in ``scope``.
        """
        check_name(name)
        if not value:
            raise SecretError(f"secret '{name}' needs a value (it is empty)")
        checked = check_scope(scope) if scope is not None else None
        remember_secret(value)
        with self._write_lock():
            self._cache = None
            contents = self._load()
            values = {**contents.values, name: value}
            scopes = dict(contents.scopes)
            if checked is not None:
                scopes[name] = checked
            self._save(_Contents(values, scopes))

    def set_scope(self, name: str, scope: Iterable[str] | None) -> None:
        """Let stored secret ``name`` be sent only to the endpoints in ``scope`` (names
        of providers, e.g. ``["openai", "vllm"]``); None removes its scope (see
        :mod:`flowbuilder.providers.credentials` for what an unscoped secret may do).

        Raises:
            SecretError: no stored secret has that name, or an endpoint name is invalid.
        """
        checked = check_scope(scope) if scope is not None else None
        with self._write_lock():
            self._cache = None
            contents = self._load()
            if name not in contents.values:
                raise SecretError(
                    f"no stored secret named '{name}': store it first with "
                    f"`flowbuilder secrets set {name}`"
                )
            scopes = {n: s for n, s in contents.scopes.items() if n != name}
            if checked is not None:
                scopes[name] = checked
            self._save(_Contents(dict(contents.values), scopes))

    def delete(self, name: str) -> bool:
        """Remove ``name`` (and its scope); returns False when there was no such secret."""
        with self._write_lock():
            self._cache = None
            contents = self._load()
            if name not in contents.values:
                return False
            values = {n: v for n, v in contents.values.items() if n != name}
            scopes = {n: s for n, s in contents.scopes.items() if n != name}
            self._save(_Contents(values, scopes))
            return True


def check_name(name: str) -> None:
    """Raise :class:`SecretError` unless ``name`` is a valid secret name."""
    if not NAME_PATTERN.match(name):
        raise SecretError(
            f"'{name}' is not a valid secret name: use letters, digits, '_', '.' or '-', "
            "starting with a letter or '_' (at most 128 characters)"
        )


def check_scope(scope: Iterable[str]) -> tuple[str, ...]:
    """``scope`` as a sorted tuple of distinct endpoint names (blank entries dropped).

    Raises:
        SecretError: an entry cannot name an endpoint, or none is left.
    """
    from flowbuilder.providers.config import ProviderConfigError, check_endpoint_name

    names = sorted({s.strip() for s in scope if s.strip()})
    if not names:
        raise SecretError(
            "a scope names at least one endpoint (e.g. openai,vllm); to let a secret go "
            "only where an endpoint names it as its key, remove its scope instead"
        )
    for name in names:
        try:
            check_endpoint_name(name)
        except ProviderConfigError as exc:
            raise SecretError(f"scope: {exc}") from None
    return tuple(names)


def parse_scope(text: str) -> tuple[str, ...]:
    """A comma-separated list of endpoints (``"openai, vllm"``) as a checked scope.

    Raises:
        SecretError: as :func:`check_scope`.
    """
    return check_scope(text.split(","))
