"""File I/O below a trusted folder that never follows a symbolic link.

The file-access policy (:mod:`flowbuilder.files`) checks a resolved path, then does its
I/O here: each component below the root is opened relative to its parent's descriptor
with ``O_NOFOLLOW``, so a link swapped in after the check makes the call fail (``ELOOP``
or ``ENOTDIR``) instead of leading elsewhere. Writes are atomic: a temporary file in the
target's folder, flushed to disk, then renamed over the target — or hard-linked to it
when an existing file must not be replaced, which fails if the name appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
EXEC_BITS = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


class NotRegularFile(OSError):
    """The name is a folder, a device, a pipe or a socket, not a regular file."""


class ExecutableFile(OSError):
    """The name is an executable file (a mode with an ``x`` bit): never replaced."""


def open_dir(root: Path, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of the folder ``root/parts…``; ``create`` makes missing folders.

    Raises:
        FileNotFoundError: ``root`` or (without ``create``) a component is missing.
        OSError: a component is a link or no folder (``ELOOP``/``ENOTDIR``).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                nxt = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(dir_fd: int, name: str) -> BinaryIO:
    """The regular file ``name`` in the folder ``dir_fd``, open for reading (binary).

    Opening does not block on a pipe; anything but a regular file is refused.

    Raises:
        FileNotFoundError: no such file.
        NotRegularFile: not a regular file.
        OSError: ``name`` is a link (``ELOOP``).
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(f"{name} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def write_at(
    dir_fd: int, name: str, fill: Callable[[BinaryIO], object], *, overwrite: bool
) -> None:
    """Write ``name`` in the folder ``dir_fd`` atomically: ``fill(fh)`` writes a
    temporary file beside it, which replaces ``name`` only when ``fill`` returned. A
    replaced file keeps its mode, which is never executable; a failure leaves no
    temporary file.

    Raises:
        FileExistsError: ``name`` exists and ``overwrite`` is off.
        IsADirectoryError: ``name`` is a folder.
        ExecutableFile: ``name`` is an executable file, to be replaced.
        OSError: whatever ``fill`` or the disk raised.
    """
    try:
        old: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        old = None
    if old is not None and stat.S_ISDIR(old.st_mode):
        raise IsADirectoryError(name)
    if old is not None and not overwrite:
        raise FileExistsError(name)
    if old is not None and stat.S_ISREG(old.st_mode) and old.st_mode & EXEC_BITS:
        raise ExecutableFile(name)
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            if old is not None and stat.S_ISREG(old.st_mode):
                os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode))
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
