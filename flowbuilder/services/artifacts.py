"""``ctx.artifacts``: the artifact store as a node sees it.

Heavy values (audio, images, documents, datasets) travel between nodes as small
references (:class:`~flowbuilder.types.ArtifactRef` and its kinds) to content-addressed
files in the store (:mod:`flowbuilder.artifacts`). A node stores bytes or an open file
and reads the file of a reference; it cannot copy in a path or copy a file out, which
would pass around the file-access policy — files a node reads or writes by path go
through ``ctx.files``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from flowbuilder.artifacts import ArtifactStore
    from flowbuilder.types import ArtifactRef


class ArtifactService:
    """Artifacts for one node execution (``ctx.artifacts``)."""

    __slots__ = ("_store",)

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def put_bytes(self, data: bytes, *, name: str, kind: str | None = None) -> ArtifactRef:
        """Store ``data`` under its SHA-256 and return its reference; ``kind`` (``audio``,
        ``image``, ``document``, ``dataset``, ``model``) defaults to a guess from
        ``name``'s suffix, and picks the reference's class (``ImageRef``, …)."""
        return self._store.put_bytes(data, name=name, kind=kind)

    def put_stream(self, fh: BinaryIO, *, name: str, kind: str | None = None) -> ArtifactRef:
        """Store an open binary file (read to its end, e.g. from ``ctx.files.open_read``),
        as :meth:`put_bytes`.

        Raises:
            OSError: reading ``fh`` failed.
        """
        return self._store.put_stream(fh, name=name, kind=kind)

    def path(self, ref: ArtifactRef) -> Path:
        """The stored file of a reference (read it; never write to it).

        Raises:
            NodeError: no artifact with this id is in the store.
        """
        return self._store.path(ref)

    def info(self, artifact_id: str) -> ArtifactRef | None:
        """The reference recorded when the content was first stored, or None if unknown
        (``artifact_id``: a SHA-256 hex digest)."""
        return self._store.info(artifact_id)
