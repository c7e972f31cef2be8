"""The file-access policy: the one place that decides which files a node may read or write.

Every node parameter that names a path (Load/Save File, Load/Save Image, Load documents,
Ingest, a knowledge base ``location``, a local model path, a dataset path) goes through a
:class:`FileAccess`, which nodes reach as ``ctx.files`` (a :class:`NodeFiles`).

- **Roots.** Nodes may use files under the workspace ``FLOWBUILDER_HOME/files`` (made on
  first use, with a copy of the example data files in ``examples/``), the folders named in
  ``FLOWBUILDER_FILE_ROOTS`` (``os.pathsep``-separated; ``FLOWBUILDER_ALLOWED_ROOTS`` is
  the old name) and those added on the Settings page or with ``flowbuilder roots add``
  (kept in ``FLOWBUILDER_HOME/file_roots.json``, see :mod:`flowbuilder.file_roots`). The
  server's working directory is not a root unless named. A relative path resolves in the
  workspace; ``~`` is the server user's home.
- **Never reachable**, whatever the roots say (even ``/``): inside ``FLOWBUILDER_HOME``,
  everything but the workspace (secret key and store, database, ``providers.json``,
  storage secret, …); the artifact store (artifacts are reached by id), the model store
  (models by ``local:<name>``), the knowledge store (an empty ``location``) and the
  run store's SQLite file, wherever they are.
- **Never writable**: the Python installation (``sys.prefix``, ``sys.base_prefix``,
  site-packages, every folder on ``sys.path``) and flowbuilder's own package folders;
  below a root, hidden names (``.bashrc``, ``.ssh/``, ``.git/``: what shells, git and ssh
  act on; a hidden folder named as a root itself is usable); and an existing executable
  file is never replaced.
- **Resolution.** A path is resolved once (symbolic links followed) and the real path is
  checked. Files are then opened by walking from the root one folder at a time with
  ``O_NOFOLLOW``, so a link swapped in after the check is refused, not followed. Writes go
  to a temporary file in the target's folder, renamed into place; an existing file is
  replaced only with ``overwrite``.

A refusal is a :class:`FileAccessError` that names the node, the field, why, and the
folders nodes may use.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import site
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from flowbuilder import nofollow
from flowbuilder.errors import NodeError
from flowbuilder.file_roots import stored_roots
from flowbuilder.settings import Settings

WORKSPACE = "files"
"""The workspace folder's name inside ``FLOWBUILDER_HOME``."""
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
"""Example flows and their data; the data files are copied into ``<workspace>/examples``."""
HOW_TO_ADD = "FLOWBUILDER_FILE_ROOTS or the Settings page adds folders"

_WINDOWS = re.compile(r"^(?:[A-Za-z]:|\\\\)")


class FileAccessError(NodeError):
    """A path the file-access policy refuses; the message names the node, the field, the
    reason and the folders nodes may use."""


def _say(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _hidden_below(path: Path, root: Path) -> bool:
    """Whether a name of ``path`` below ``root`` starts with ``.`` (``root`` holds it)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


@functools.cache
def code_folders() -> tuple[Path, ...]:
    """Folders Python loads code from (real paths): never written by a node."""
    places: set[str] = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    places.update(site.getsitepackages())
    places.add(site.getusersitepackages())
    places.update(p for p in sys.path if p)  # "" is the current folder at import time
    for package in ("flowbuilder", "nodes", "server"):
        spec = importlib.util.find_spec(package)
        if spec is not None:
            places.update(spec.submodule_search_locations or [])
    places.add(str(EXAMPLES.parent / "static"))  # the canvas's JavaScript, served as is
    return tuple(sorted({_real(p) for p in places}))


def _sqlite_file(url: str | None, home: Path) -> Path | None:
    """The SQLite file of the run store's URL (None: another database)."""
    if not url:
        return home / "flowbuilder.db"
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return None
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    return Path(db.removeprefix("file:").split("?")[0]).expanduser()


class FileAccess:
    """The policy for one data directory (see the module docstring).

    Cheap to make; the stored roots are read again on every check, so a folder added on
    the Settings page applies to the next node that runs.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = _real(settings.home)
        stores: list[tuple[Path, str]] = [
            (settings.artifacts_root, "inside the artifact store (nodes reach artifacts by id)"),
            (settings.home / "models", "inside the model store (name a model local:<name>)"),
            (settings.home / "knowledge", "inside the knowledge store (leave 'location' empty)"),
        ]
        uri = settings.knowledge_uri
        if uri and "://" not in uri:
            stores.append((Path(uri).expanduser(), "inside the knowledge store"))
        self._stores = [(_real(p), why) for p, why in stores]
        db = _sqlite_file(settings.database_url, settings.home)
        ends = ("", "-wal", "-shm", "-journal")
        self._db_files = {_real(f"{db}{end}") for end in ends} if db else set()

    # ---- where nodes may go -------------------------------------------------------------

    @property
    def workspace(self) -> Path:
        """``FLOWBUILDER_HOME/files`` (real path), made with the example data on first use."""
        path = self.settings.home / WORKSPACE
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            _copy_example_data(path / "examples")
        return _real(path)

    @property
    def roots(self) -> tuple[Path, ...]:
        """The folders nodes may use, real paths: the workspace first, then the named ones."""
        named = (*self.settings.file_roots, *stored_roots(self.settings.home))
        return tuple(dict.fromkeys([self.workspace, *(_real(p) for p in named)]))

    def refusal(self, real: Path, *, write: bool = False) -> str | None:
        """Why ``real`` (a resolved path) is out of reach, or None when it may be used."""
        if real in self._db_files:
            return "the run store's database"
        for store, why in self._stores:
            if _within(real, store):
                return why
        workspace = self.workspace
        if _within(real, self.home) and not _within(real, workspace):
            return "inside the data directory"
        roots = [root for root in self.roots if _within(real, root)]
        if not roots:
            return "outside every folder nodes may use"
        if write and any(_within(real, code) for code in code_folders()):
            return "in a folder Python loads code from, which nodes never write"
        if write and all(_hidden_below(real, root) for root in roots):
            return (
                "a hidden file or folder (a name starting with '.', where shells, git, ssh "
                "and other tools keep what they run), which nodes never write"
            )
        return None

    def resolve(self, raw: str, *, where: str = "", write: bool = False) -> Path:
        """The real path of a path a user gave (relative: in the workspace), checked.

        ``where`` ("node 3 (Load File), field 'path'") starts any error message.

        Raises:
            FileAccessError: the path is refused (see :meth:`refusal`), empty, or written
                the Windows way.
        """
        text = str(raw)
        if not text.strip() or "\0" in text:
            raise self._error(raw, where, "not a usable path (empty, or with a NUL character)")
        if os.sep == "/" and (_WINDOWS.match(text) or "\\" in text):
            raise self._error(raw, where, "a Windows path; write it with '/' separators")
        path = Path(os.path.expanduser(text))
        real = _real(path if path.is_absolute() else self.workspace / path)
        reason = self.refusal(real, write=write)
        if reason is not None:
            raise self._error(raw, where, reason, real)
        return real

    def _error(
        self, raw: str, where: str, reason: str, real: Path | None = None
    ) -> FileAccessError:
        shown = f"'{raw}'"
        if real is not None and str(real) != raw:
            shown += f" (that is {real})"
        roots = ", ".join(str(r) for r in self.roots)
        return FileAccessError(
            _say(where, f"{shown} is {reason}; nodes may use files under: {roots} ({HOW_TO_ADD})")
        )

    # ---- reading ------------------------------------------------------------------------

    def open_read(self, raw: str, *, where: str = "") -> BinaryIO:
        """Open a regular file for reading (binary), refusing links swapped in meanwhile.

        Raises:
            FileAccessError: the path is refused, or changed into a link while opening.
            NodeError: no such file, or not a regular file (a folder, a device, a pipe).
        """
        real = self.resolve(raw, where=where)
        parent = self._open_dir(real.parent, where=where, raw=raw)
        try:
            return nofollow.open_regular(parent, real.name)
        except FileNotFoundError:
            looked = f" (looked for {real})" if str(real) != raw else ""
            raise NodeError(_say(where, f"file not found: '{raw}'{looked}")) from None
        except nofollow.NotRegularFile:
            raise NodeError(_say(where, f"'{raw}' is not a regular file")) from None
        except OSError as exc:
            raise self._swapped(exc, raw, where) from None
        finally:
            os.close(parent)

    def read_bytes(self, raw: str, *, where: str = "") -> bytes:
        """The bytes of a file (see :meth:`open_read` for the errors)."""
        with self.open_read(raw, where=where) as fh:
            return fh.read()

    def folder(
        self, raw: str, *, where: str = "", write: bool = False, create: bool = False
    ) -> Path:
        """A folder's real path, checked for reading (or writing); ``create`` makes it
        (and its parents), one level at a time without following links.

        Raises:
            FileAccessError: the path is refused.
        """
        real = self.resolve(raw, where=where, write=write)
        if create:
            os.close(self._open_dir(real, where=where, raw=raw, create=True))
        return real

    # ---- writing ------------------------------------------------------------------------

    def write(
        self,
        raw: str,
        fill: Callable[[BinaryIO], object],
        *,
        where: str = "",
        overwrite: bool = False,
    ) -> Path:
        """Write a file atomically: ``fill(fh)`` writes a temporary file in the target's
        folder, which is then renamed into place (readers see the old file or the new
        one, never half). Missing folders are made. Returns the real path written.

        Raises:
            FileAccessError: the path is refused, or names an executable file.
            NodeError: the file exists and ``overwrite`` is off, or it is a folder.
        """
        real = self.resolve(raw, where=where, write=True)
        parent = self._open_dir(real.parent, where=where, raw=raw, create=True)
        try:
            nofollow.write_at(parent, real.name, fill, overwrite=overwrite)
        except FileExistsError:
            raise NodeError(_say(where, f"'{raw}' exists and 'overwrite' is off")) from None
        except nofollow.ExecutableFile:
            raise self._error(
                raw, where, "an executable file, which nodes never replace", real
            ) from None
        except IsADirectoryError:
            raise NodeError(_say(where, f"'{raw}' is a folder")) from None
        except OSError as exc:  # a name too long, a full disk, a read-only file system
            why = exc.strerror or str(exc)
            raise NodeError(_say(where, f"cannot write '{raw}': {why}")) from None
        finally:
            os.close(parent)
        return real

    def write_bytes(
        self, raw: str, data: bytes, *, where: str = "", overwrite: bool = False
    ) -> Path:
        """:meth:`write` with ``data``."""
        return self.write(raw, lambda fh: fh.write(data), where=where, overwrite=overwrite)

    def save_upload(self, name: str, data: bytes) -> str:
        """Keep an uploaded file in the workspace's ``uploads/`` folder and return its path
        relative to the workspace (what a node's path parameter takes). A name already
        used by other content gets the content's hash added (``memo-1a2b3c4d.ogg``)."""
        base = Path(name.replace("\\", "/")).name.lstrip(".").strip() or "upload"
        stem, suffix = os.path.splitext(base)
        hashed = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}{suffix}"
        for candidate in (base, hashed):
            rel = f"uploads/{candidate}"
            if not os.path.lexists(self.workspace / rel):
                with contextlib.suppress(NodeError):  # taken meanwhile: try the next name
                    self.write_bytes(rel, data)
                    return rel
            with contextlib.suppress(NodeError):
                if self.read_bytes(rel) == data:
                    return rel
        self.write_bytes(f"uploads/{hashed}", data, overwrite=True)
        return f"uploads/{hashed}"

    # ---- knowledge bases ----------------------------------------------------------------

    def knowledge_location(self, raw: str, *, where: str = "") -> str:
        """A knowledge base ``location``: empty (the knowledge store), the configured
        ``FLOWBUILDER_KNOWLEDGE_URI`` itself, or a folder under a root (made if missing).

        Raises:
            FileAccessError: any other URI, or a refused folder.
        """
        text = raw.strip()
        if not text or text == self.settings.knowledge_uri:
            return text
        if "://" in text:
            raise self._error(
                raw, where, "a URI other than the configured FLOWBUILDER_KNOWLEDGE_URI"
            )
        return str(self.folder(text, where=where, write=True, create=True))

    # ---- walking without links ----------------------------------------------------------

    def _open_dir(self, real: Path, *, where: str, raw: str, create: bool = False) -> int:
        """A descriptor of the folder ``real`` (checked before), opened from the deepest
        root that holds it without following links (:func:`flowbuilder.nofollow.open_dir`)."""
        holding = [r for r in self.roots if _within(real, r)]
        if not holding:  # only a root itself can get here (``real`` is a root's parent)
            raise self._error(raw, where, "outside every folder nodes may use", real)
        root = max(holding, key=lambda r: len(r.parts))
        try:
            return nofollow.open_dir(root, real.relative_to(root).parts, create=create)
        except FileNotFoundError:
            raise NodeError(_say(where, f"'{raw}' is not there: no folder {real}")) from None
        except OSError as exc:
            raise self._swapped(exc, raw, where) from None

    def _swapped(self, exc: OSError, raw: str, where: str) -> NodeError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            return self._error(raw, where, "a path that changed into a link while being opened")
        return NodeError(_say(where, f"cannot open '{raw}': {exc.strerror}"))

    def for_node(self, node_id: str, title: str) -> NodeFiles:
        """The policy as one node sees it (errors name the node)."""
        return NodeFiles(self, f"node {node_id} ({title})")


def _copy_example_data(target: Path) -> None:
    """Copy the example data files (not the .json graphs) so the examples run as shipped."""
    if not EXAMPLES.is_dir():
        return
    target.mkdir(exist_ok=True)
    for src in sorted(EXAMPLES.iterdir()):
        if src.is_file() and src.suffix != ".json" and not (target / src.name).exists():
            tmp = target / f".{src.name}.{secrets.token_hex(4)}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, target / src.name)


class NodeFiles:
    """``ctx.files``: the file-access policy for one node execution.

    Each method takes the raw path from a parameter and the parameter's name (``field``),
    and raises :class:`FileAccessError` naming both when the path is refused. Relative
    paths resolve in the workspace.
    """

    def __init__(self, access: FileAccess, node: str) -> None:
        self.access = access
        self._node = node

    def _where(self, field: str) -> str:
        return f"{self._node}, field '{field}'"

    @property
    def workspace(self) -> Path:
        return self.access.workspace

    def read_path(self, raw: str, *, field: str) -> Path:
        """A checked real path to hand a library that opens it by name (a model folder,
        a dataset file); prefer :meth:`open_read` for files read here."""
        return self.access.resolve(raw, where=self._where(field))

    def open_read(self, raw: str, *, field: str) -> BinaryIO:
        """A regular file opened for reading (see :meth:`FileAccess.open_read`)."""
        return self.access.open_read(raw, where=self._where(field))

    def read_bytes(self, raw: str, *, field: str) -> bytes:
        return self.access.read_bytes(raw, where=self._where(field))

    def folder(self, raw: str, *, field: str, write: bool = False, create: bool = False) -> Path:
        return self.access.folder(raw, where=self._where(field), write=write, create=create)

    def write(
        self, raw: str, fill: Callable[[BinaryIO], object], *, field: str, overwrite: bool
    ) -> Path:
        """Write atomically (see :meth:`FileAccess.write`); returns the real path."""
        return self.access.write(raw, fill, where=self._where(field), overwrite=overwrite)

    def write_bytes(self, raw: str, data: bytes, *, field: str, overwrite: bool) -> Path:
        return self.access.write_bytes(raw, data, where=self._where(field), overwrite=overwrite)

    def knowledge_location(self, raw: str, *, field: str = "location") -> str:
        """See :meth:`FileAccess.knowledge_location`."""
        return self.access.knowledge_location(raw, where=self._where(field))

    def path_check(self, field: str) -> Callable[[str], Path]:
        """``read_path`` for one field, as a function (for model resolvers)."""
        return functools.partial(self.read_path, field=field)


# ---- cache fingerprints ----------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[FileAccess | None] = contextvars.ContextVar(
    "flowbuilder_files", default=None
)


@contextlib.contextmanager
def active(access: FileAccess) -> Iterator[None]:
    """Make ``access`` the policy :func:`fingerprint_path` uses (the scheduler does, while
    it computes cache keys)."""
    token = _ACTIVE.set(access)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_policy() -> FileAccess | None:
    """The policy made active by :func:`active`, if any."""
    return _ACTIVE.get()


def fingerprint_path(raw: object) -> Path | None:
    """The real path a node parameter names under the active policy, or None (no policy
    active, or the path is refused) — for ``Node.fingerprint`` hooks."""
    access = _ACTIVE.get()
    if access is None or not raw:
        return None
    try:
        return access.resolve(str(raw))
    except NodeError:
        return None
