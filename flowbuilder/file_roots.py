"""Folders the user added for nodes on the Settings page or with ``flowbuilder roots``.

They are kept in ``FLOWBUILDER_HOME/file_roots.json`` (``{"version": 1, "roots": [...]}``,
absolute real paths). The file is inside the data directory, which no node can reach, so
only the Settings page and the CLI change it. The policy itself is
:mod:`flowbuilder.files`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from flowbuilder.errors import FlowbuilderError
from flowbuilder.graph import write_atomic
from flowbuilder.settings import Settings

ROOTS_FILE = "file_roots.json"

log = logging.getLogger(__name__)


class RootsError(FlowbuilderError):
    """A folder that cannot be added as a root (the message says why)."""


def stored_roots(home: Path) -> list[Path]:
    """The added folders, in the order they were added. A file that cannot be read
    adds none (and is logged): fewer roots is the safe side."""
    path = Path(home) / ROOTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        roots = data["roots"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return []
    return [Path(p) for p in roots if isinstance(p, str) and os.path.isabs(p)]


def _save(home: Path, roots: list[Path]) -> None:
    data = {"version": 1, "roots": [str(p) for p in roots]}
    write_atomic(Path(home) / ROOTS_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def add_root(home: Path, folder: str) -> Path:
    """Add ``folder`` (absolute; ``~`` expands) as a root; returns its real path.

    Raises:
        RootsError: not absolute, not an existing folder, or inside the data directory
            (whose only folder for nodes is the workspace, a root already).
    """
    path = Path(folder.strip()).expanduser()
    if not path.is_absolute():
        raise RootsError(f"'{folder}' is not an absolute path: give the whole path")
    real = Path(os.path.realpath(path))
    if not real.is_dir():
        raise RootsError(f"'{folder}' is not an existing folder")
    data_dir = Path(os.path.realpath(home))
    if real == data_dir or real.is_relative_to(data_dir):
        raise RootsError(
            f"'{folder}' is inside the data directory {data_dir}, which nodes never reach "
            f"(its workspace {data_dir / 'files'} is always a root)"
        )
    roots = stored_roots(home)
    if real not in roots:
        _save(home, [*roots, real])
    return real


def remove_root(home: Path, folder: str) -> bool:
    """Remove an added root (as listed, or any path to it); whether one was removed."""
    roots = stored_roots(home)
    real = Path(os.path.realpath(Path(folder.strip()).expanduser()))
    kept = [p for p in roots if p not in (Path(folder.strip()), real)]
    if len(kept) == len(roots):
        return False
    _save(home, kept)
    return True


def listed_roots(settings: Settings) -> list[tuple[Path, str]]:
    """Every root with where it comes from: ``workspace``, ``FLOWBUILDER_FILE_ROOTS``
    (the environment; its old name included) or ``added`` (this file) — for the
    Settings page and ``flowbuilder roots``."""
    rows = [(settings.home / "files", "workspace")]
    rows += [(p, "FLOWBUILDER_FILE_ROOTS") for p in settings.file_roots]
    rows += [(p, "added") for p in stored_roots(settings.home)]
    return rows
