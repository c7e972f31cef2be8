"""The data directory is private: mode 0700, and its own files 0600.

``FLOWBUILDER_HOME`` holds the secret key and store, the SQLite database (with its
``-wal``/``-shm``/``-journal`` files), the session-cookie secret, ``providers.json``,
tokens and session files. :func:`secure_home` makes the directory 0700 and every file
directly in it (and in :data:`PRIVATE_SUBDIRS`) 0600 — also files that an older
version or a careless ``chmod`` left readable by others; it runs when an
:class:`~flowbuilder.engine.Engine` starts (every server and CLI run). Files written
later are created private by their writers (``write_atomic(mode=0o600)``, ``os.open``
with 0600, :func:`private_sqlite`). Folders inside (artifacts, models, the workspace)
keep their modes: the directory's own 0700 already closes them to other users.

Symbolic links are left alone (never followed), and so are files owned by another user
(changing them would fail). A data directory with the sticky bit (``/tmp``, a shared
folder: a misconfiguration) keeps its own mode, and there only the files flowbuilder
knows (:data:`KNOWN_FILES`) are tightened.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
PRIVATE_SUBDIRS = ("sessions",)
"""Folders of the data directory whose files are private too (browser sessions)."""
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
KNOWN_FILES = frozenset(
    {
        "secret.key",
        "secrets.enc",
        ".secrets.lock",
        "storage_secret",
        "providers.json",
        *(f"flowbuilder.db{s}" for s in SQLITE_SUFFIXES),
    }
)


def make_private(path: Path, mode: int = FILE_MODE) -> None:
    """Give ``path`` exactly ``mode`` when it is ours and looser; links are not followed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return
    if stat.S_IMODE(st.st_mode) != mode:
        with contextlib.suppress(PermissionError):
            os.chmod(path, mode)


def secure_home(home: Path) -> None:
    """Create ``home`` if needed, and make it and its own files private (see the module
    docstring). Cheap: one ``lstat`` per entry directly in it."""
    home.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if home.stat().st_mode & stat.S_ISVTX:  # a shared folder: only our own files
        for name in KNOWN_FILES:
            make_private(home / name)
        return
    make_private(home, DIR_MODE)
    for folder in (home, *(home / d for d in PRIVATE_SUBDIRS)):
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if folder != home:
            make_private(folder, DIR_MODE)
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                make_private(Path(entry.path))


def sessions_dir(home: Path) -> Path:
    """``home/sessions``, created with mode 0700: where the web app keeps browser sessions
    (NiceGUI's per-user storage, which by default lands in ``.nicegui`` under the current
    folder, readable by all)."""
    path = home / PRIVATE_SUBDIRS[0]
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    make_private(path, DIR_MODE)
    return path


def private_sqlite(database: Path) -> None:
    """Create an SQLite database file with mode 0600 before SQLite does (SQLite gives its
    ``-wal``/``-shm``/``-journal`` files the database file's mode), and tighten an
    existing one and its companions."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for suffix in SQLITE_SUFFIXES:
        make_private(database.with_name(database.name + suffix))
