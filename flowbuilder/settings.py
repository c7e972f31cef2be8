"""Settings read from the environment, in one place.

``FLOWBUILDER_HOME`` (default ``~/.flowbuilder``) is the data directory: artifacts,
models, the run store. ``FLOWBUILDER_ALLOWED_ROOTS`` (``os.pathsep``-separated) lists the
directories that file-reading nodes may read besides the current directory and the data
directory. ``FLOWBUILDER_MODEL_MEMORY_MB`` bounds the memory of models kept loaded
between runs (default 4096 MB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    allowed_roots: tuple[Path, ...] = field(default_factory=tuple)
    model_memory_mb: int = 4096
    heavy_concurrency: int = 1

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        home = Path(os.environ.get("FLOWBUILDER_HOME") or Path.home() / ".flowbuilder")
        extra = [
            Path(p) for p in os.environ.get("FLOWBUILDER_ALLOWED_ROOTS", "").split(os.pathsep) if p
        ]
        roots = tuple(p.resolve() for p in (Path.cwd(), home, *extra))
        values: dict[str, object] = {
            "home": home,
            "allowed_roots": roots,
            "model_memory_mb": int(os.environ.get("FLOWBUILDER_MODEL_MEMORY_MB", "4096")),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def is_allowed(self, path: Path) -> bool:
        """Whether ``path`` (resolved, links followed) lies under an allowed root."""
        real = path.resolve()
        return any(real.is_relative_to(root) for root in self.allowed_roots)
