"""Content-addressed artifacts: heavy values (audio, images, documents, datasets, models)
live as files in the data directory; ports carry small :class:`ArtifactRef` values.

A file's id is the SHA-256 of its bytes; it is stored at ``<root>/<id[:2]>/<id>`` and
written atomically (temporary file, then rename), so a crash never leaves half a file
under a valid id.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from flowbuilder.errors import NodeError
from flowbuilder.types import REF_CLASSES, ArtifactRef

_CHUNK = 1 << 20

_KIND_BY_MIME_PREFIX = {
    "audio/": "audio",
    "video/": "audio",
    "image/": "image",
    "text/": "document",
}
_KIND_BY_SUFFIX = {
    ".pdf": "document",
    ".md": "document",
    ".rst": "document",
    ".html": "document",
    ".docx": "document",
    ".jsonl": "dataset",
    ".csv": "dataset",
    ".parquet": "dataset",
    ".gguf": "model",
    ".flac": "audio",
    ".opus": "audio",
    ".m4a": "audio",
    ".webm": "audio",
}


def guess_kind(name: str) -> tuple[str, str]:
    """Guess ``(kind, mime)`` from a file name: kind is one of the artifact kinds or 'file'."""
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    suffix = Path(name).suffix.lower()
    if suffix in _KIND_BY_SUFFIX:
        return _KIND_BY_SUFFIX[suffix], mime
    for prefix, kind in _KIND_BY_MIME_PREFIX.items():
        if mime.startswith(prefix):
            return kind, mime
    return "file", mime


class ArtifactStore:
    """Files by content hash under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _target(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put_file(
        self, path: str | os.PathLike[str], *, kind: str | None = None, name: str | None = None
    ) -> ArtifactRef:
        """Copy a file into the store and return its reference.

        ``kind`` defaults to a guess from the file name (see :func:`guess_kind`).

        Raises:
            NodeError: the file does not exist or cannot be read.
        """
        src = Path(path)
        if not src.is_file():
            raise NodeError(f"file not found: {src}")
        try:
            with src.open("rb") as fh:
                return self.put_stream(fh, name=name or src.name, kind=kind)
        except OSError as exc:
            raise NodeError(f"cannot read {src}: {exc.strerror}") from None

    def put_stream(self, fh: BinaryIO, *, name: str, kind: str | None = None) -> ArtifactRef:
        """Copy an open binary file (read to its end) into the store; its reference.

        Raises:
            OSError: reading ``fh`` failed.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming.")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            return self._commit(Path(tmp), digest.hexdigest(), size, name, kind)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_bytes(self, data: bytes, *, name: str, kind: str | None = None) -> ArtifactRef:
        """Store bytes under their hash and return the reference."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            return self._commit(Path(tmp), hashlib.sha256(data).hexdigest(), len(data), name, kind)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _commit(
        self, tmp: Path, digest: str, size: int, name: str, kind: str | None
    ) -> ArtifactRef:
        target = self._target(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        guessed, mime = guess_kind(name)
        kind = kind or guessed
        ref = REF_CLASSES.get(kind, ArtifactRef)(
            kind=kind, id=digest, name=name, mime=mime, size=size
        )
        meta = target.with_name(target.name + ".json")
        if not meta.exists():
            tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
            tmp_meta.write_text(ref.model_dump_json())
            os.replace(tmp_meta, meta)
        return ref

    def info(self, artifact_id: str) -> ArtifactRef | None:
        """The reference recorded when the content was first stored, or None if unknown.

        ``artifact_id`` must be a SHA-256 hex digest; anything else gives None.
        """
        if len(artifact_id) != 64 or any(c not in "0123456789abcdef" for c in artifact_id):
            return None
        target = self._target(artifact_id)
        if not target.is_file():
            return None
        try:
            data = target.with_name(target.name + ".json").read_text()
        except OSError:
            return ArtifactRef(id=artifact_id, size=target.stat().st_size)
        kind = ArtifactRef.model_validate_json(data).kind
        return REF_CLASSES.get(kind, ArtifactRef).model_validate_json(data)

    def path(self, ref: ArtifactRef) -> Path:
        """The stored file for a reference.

        Raises:
            NodeError: no artifact with this id is in the store.
        """
        target = self._target(ref.id)
        if not target.is_file():
            # the store's folder is not named: this message reaches HTTP answers
            raise NodeError(
                f"artifact {ref.id[:12]}… ({ref.name or ref.kind}) is not in the artifact "
                "store; upload it again (POST /api/v1/artifacts) or re-run the node that made it"
            )
        return target

    def export(self, ref: ArtifactRef, dest: Path) -> Path:
        """Copy an artifact out of the store to ``dest`` (a directory or a file path)."""
        out = dest / (ref.name or ref.id) if dest.is_dir() else dest
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(self.path(ref), tmp)
        os.replace(tmp, out)
        return out
