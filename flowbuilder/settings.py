"""Settings read from the environment, in one place.

``FLOWBUILDER_HOME`` (default ``~/.flowbuilder``) is the data directory: artifacts,
models, the run store. ``FLOWBUILDER_MODEL_MEMORY_MB`` bounds the memory of models kept
loaded between runs (default 4096 MB).

File access (:mod:`flowbuilder.files`): ``FLOWBUILDER_FILE_ROOTS`` (``os.pathsep``-separated;
``FLOWBUILDER_ALLOWED_ROOTS`` is read too, its old name) names folders nodes may use
besides the workspace ``FLOWBUILDER_HOME/files``. The policy also needs to know where the
stores are, to keep nodes out of them: ``FLOWBUILDER_KNOWLEDGE_URI`` (the knowledge bases;
default ``FLOWBUILDER_HOME/knowledge``) and ``FLOWBUILDER_DATABASE_URL`` (the run store;
default SQLite in the data directory).

Scale-out: ``FLOWBUILDER_EXECUTOR`` picks where nodes run, ``local`` (default: in this
process, blocking work in threads) or ``ray`` (each node a Ray task, see
:mod:`flowbuilder.executors.ray`). ``FLOWBUILDER_RAY_ADDRESS`` is the cluster to join
(``auto``, ``ray://host:10001``, ``host:6379``); unset, a local Ray cluster is started
with one CPU per core. ``FLOWBUILDER_ARTIFACTS_DIR`` moves the artifact store (default
``$FLOWBUILDER_HOME/artifacts``); on a cluster it must be a directory every worker
reaches at the same path (a shared file system).

Auth (who may talk to the server, see :mod:`server.api.auth`): ``FLOWBUILDER_TOKEN`` is
the server's token (unset or empty: one is made on first start and kept in
``$FLOWBUILDER_HOME/token``); ``FLOWBUILDER_NO_AUTH=1`` is ``--no-auth`` (loopback binds
only); ``FLOWBUILDER_REQUIRE_AUTH=1`` forbids ``--no-auth``; ``FLOWBUILDER_ALLOWED_HOSTS``
(comma-separated) adds names the ``Host`` header may carry besides the loopback names.

Remote calls: ``FLOWBUILDER_REMOTE_DEADLINE_S`` (default 120 s) bounds
a remote provider call across all its retries, counted from the node's first attempt.

Bounded work: every request and every Template render has limits (see the block of
fields marked "bounded work" below and the README's Settings table). A request body is
at most ``FLOWBUILDER_MAX_BODY_MB`` (``FLOWBUILDER_MAX_UPLOAD_MB`` for multipart
uploads); JSON in a body nests at most ``FLOWBUILDER_MAX_JSON_DEPTH`` levels and holds
strings of at most ``FLOWBUILDER_MAX_STRING_CHARS`` characters; a graph has at most
``FLOWBUILDER_MAX_GRAPH_NODES`` nodes and ``FLOWBUILDER_MAX_GRAPH_LINKS`` links. A
Template render takes at most ``FLOWBUILDER_TEMPLATE_TIMEOUT_S`` seconds, writes at most
``FLOWBUILDER_TEMPLATE_MAX_CHARS`` characters and, when it renders in a worker process,
uses at most ``FLOWBUILDER_TEMPLATE_MEMORY_MB`` of memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXECUTORS = ("local", "ray")

LIMITS = {
    "max_body_mb": "FLOWBUILDER_MAX_BODY_MB",
    "max_upload_mb": "FLOWBUILDER_MAX_UPLOAD_MB",
    "max_json_depth": "FLOWBUILDER_MAX_JSON_DEPTH",
    "max_string_chars": "FLOWBUILDER_MAX_STRING_CHARS",
    "max_graph_nodes": "FLOWBUILDER_MAX_GRAPH_NODES",
    "max_graph_links": "FLOWBUILDER_MAX_GRAPH_LINKS",
    "template_timeout_s": "FLOWBUILDER_TEMPLATE_TIMEOUT_S",
    "template_max_chars": "FLOWBUILDER_TEMPLATE_MAX_CHARS",
    "template_memory_mb": "FLOWBUILDER_TEMPLATE_MEMORY_MB",
}
"""The bounded-work fields and the environment variable each is read from."""


class SettingsError(ValueError):
    """A setting has a value flowbuilder cannot use (the message says which and why)."""


@dataclass(frozen=True)
class Settings:
    home: Path
    model_memory_mb: int = 4096
    heavy_concurrency: int = 1
    executor: str = "local"
    ray_address: str | None = None
    artifacts_dir: Path | None = None
    # File access (flowbuilder.files) and the stores' locations.
    file_roots: tuple[Path, ...] = field(default_factory=tuple)
    knowledge_uri: str = ""
    database_url: str | None = None
    # Auth: the server's token, the --no-auth opt-out, the Host allow-list.
    token: str | None = None
    no_auth: bool = False
    require_auth: bool = False
    allowed_hosts: tuple[str, ...] = ()
    # Remote calls: one deadline across a remote node's retries.
    remote_deadline_s: float = 120.0
    # ---- bounded work: request, graph and Template limits (the limits part) ----------
    max_body_mb: float = 10.0
    max_upload_mb: float = 512.0
    max_json_depth: int = 64
    max_string_chars: int = 1_000_000
    max_graph_nodes: int = 2_000
    max_graph_links: int = 10_000
    template_timeout_s: float = 5.0
    template_max_chars: int = 1_000_000
    template_memory_mb: int = 512

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise SettingsError(
                f"unknown executor '{self.executor}' (FLOWBUILDER_EXECUTOR): "
                f"use one of {', '.join(EXECUTORS)}"
            )
        if not self.remote_deadline_s > 0:
            raise SettingsError(
                f"FLOWBUILDER_REMOTE_DEADLINE_S={self.remote_deadline_s!r}: expected seconds > 0"
            )
        for name in LIMITS:
            if not getattr(self, name) > 0:
                raise SettingsError(
                    f"{LIMITS[name]}={getattr(self, name)!r}: expected a number greater than 0"
                )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment; keyword arguments override single fields.

        Raises:
            SettingsError: ``FLOWBUILDER_EXECUTOR`` (or ``executor=``) is not a known
                executor; ``FLOWBUILDER_REMOTE_DEADLINE_S`` is not a number of seconds > 0;
                a limit (``FLOWBUILDER_MAX_BODY_MB``, …) is not a number greater than 0.
        """
        home = Path(os.environ.get("FLOWBUILDER_HOME") or Path.home() / ".flowbuilder")
        artifacts = os.environ.get("FLOWBUILDER_ARTIFACTS_DIR")
        values: dict[str, object] = {
            "home": home,
            "model_memory_mb": int(os.environ.get("FLOWBUILDER_MODEL_MEMORY_MB", "4096")),
            "executor": (os.environ.get("FLOWBUILDER_EXECUTOR") or "local").strip().lower(),
            "ray_address": os.environ.get("FLOWBUILDER_RAY_ADDRESS") or None,
            "artifacts_dir": Path(artifacts) if artifacts else None,
            # File access (flowbuilder.files) and the stores' locations.
            "file_roots": _paths("FLOWBUILDER_FILE_ROOTS", "FLOWBUILDER_ALLOWED_ROOTS"),
            "knowledge_uri": os.environ.get("FLOWBUILDER_KNOWLEDGE_URI", "").strip(),
            "database_url": os.environ.get("FLOWBUILDER_DATABASE_URL") or None,
            # auth
            "token": os.environ.get("FLOWBUILDER_TOKEN", "").strip() or None,
            "no_auth": _flag("FLOWBUILDER_NO_AUTH"),
            "require_auth": _flag("FLOWBUILDER_REQUIRE_AUTH"),
            "allowed_hosts": tuple(
                h.strip().lower()
                for h in os.environ.get("FLOWBUILDER_ALLOWED_HOSTS", "").split(",")
                if h.strip()
            ),
            "remote_deadline_s": _seconds("FLOWBUILDER_REMOTE_DEADLINE_S", 120.0),
        }
        for name, env in LIMITS.items():
            raw = os.environ.get(env, "").strip()
            if raw:
                values[name] = _limit(env, raw, type(getattr(cls, name)))
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def token_file(self) -> Path:
        """Where the server keeps the token it made (``home/token``, mode 0600)."""
        return self.home / "token"

    @property
    def artifacts_root(self) -> Path:
        """Where the artifact store keeps its files (``artifacts_dir`` or ``home/artifacts``)."""
        return self.artifacts_dir if self.artifacts_dir is not None else self.home / "artifacts"


def _paths(*names: str) -> tuple[Path, ...]:
    """The ``os.pathsep``-separated folders in the variables ``names`` (``~`` expanded),
    in order, each once."""
    found = [
        Path(p.strip()).expanduser()
        for name in names
        for p in os.environ.get(name, "").split(os.pathsep)
        if p.strip()
    ]
    return tuple(dict.fromkeys(found))


def _flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _seconds(name: str, default: float) -> float:
    """A number of seconds from the environment variable ``name`` (``default`` if unset).

    Raises:
        SettingsError: the value is not a number.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds > 0") from None


def _limit(env: str, raw: str, kind: type) -> float | int:
    """A limit's value from its environment text (``kind`` int or float).

    Raises:
        SettingsError: naming the variable, when the text is not such a number.
    """
    try:
        return int(raw) if kind is int else float(raw)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{env}={raw!r}: expected {expected} greater than 0") from None
