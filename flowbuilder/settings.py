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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXECUTORS = ("local", "ray")


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
    # ---- file-access policy (flowbuilder.files) ----
    file_roots: tuple[Path, ...] = field(default_factory=tuple)
    knowledge_uri: str = ""
    database_url: str | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise SettingsError(
                f"unknown executor '{self.executor}' (FLOWBUILDER_EXECUTOR): "
                f"use one of {', '.join(EXECUTORS)}"
            )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from the environment; keyword arguments override single fields.

        Raises:
            SettingsError: ``FLOWBUILDER_EXECUTOR`` (or ``executor=``) is not a known
                executor.
        """
        home = Path(os.environ.get("FLOWBUILDER_HOME") or Path.home() / ".flowbuilder")
        artifacts = os.environ.get("FLOWBUILDER_ARTIFACTS_DIR")
        values: dict[str, object] = {
            "home": home,
            "model_memory_mb": int(os.environ.get("FLOWBUILDER_MODEL_MEMORY_MB", "4096")),
            "executor": (os.environ.get("FLOWBUILDER_EXECUTOR") or "local").strip().lower(),
            "ray_address": os.environ.get("FLOWBUILDER_RAY_ADDRESS") or None,
            "artifacts_dir": Path(artifacts) if artifacts else None,
            # ---- file-access policy (flowbuilder.files) ----
            "file_roots": _paths("FLOWBUILDER_FILE_ROOTS", "FLOWBUILDER_ALLOWED_ROOTS"),
            "knowledge_uri": os.environ.get("FLOWBUILDER_KNOWLEDGE_URI", "").strip(),
            "database_url": os.environ.get("FLOWBUILDER_DATABASE_URL") or None,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

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
