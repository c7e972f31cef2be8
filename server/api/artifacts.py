"""Artifact upload and download: ``POST /api/v1/artifacts``, ``GET /api/v1/artifacts/{id}``.

Artifacts are served inert, since anyone who can run a flow or upload a file chooses
their bytes and their name: ``Content-Disposition: attachment`` (a download) unless the
recorded media type is on :data:`INLINE_TYPES` (raster images, audio, PDF — not SVG,
which can hold script), ``X-Content-Type-Options: nosniff`` (the browser never takes
the bytes for another type) and a Content-Security-Policy that loads nothing and
sandboxes the document (:data:`CSP`; PDFs get :data:`PDF_CSP`, without ``sandbox``,
which Chrome's PDF viewer refuses to run in). Answers carry the artifact's id and URL,
never where the server keeps the file.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse

from flowbuilder.artifacts import ArtifactStore, guess_kind
from flowbuilder.types import ArtifactRef
from server.api.answers import FILE, errors

router = APIRouter(prefix="/api/v1", tags=["artifacts"])

INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "audio/mpeg",
        "audio/ogg",
        "audio/opus",
        "audio/wav",
        "audio/x-wav",
        "audio/flac",
        "audio/x-flac",
        "audio/aac",
        "audio/mp4",
        "audio/webm",
        "application/pdf",
    }
)
"""Media types shown in the browser (``inline``); every other artifact is a download."""
CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
PDF_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def store_upload(
    store: ArtifactStore, source: BinaryIO, name: str, kind: str | None
) -> ArtifactRef:
    """An uploaded file (a form's spooled file) stored as an artifact, copied in chunks
    rather than read into memory whole. Blocking: call it in a worker thread."""
    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        shutil.copyfileobj(source, tmp)
    try:
        return store.put_file(tmp.name, kind=kind, name=name)
    finally:
        Path(tmp.name).unlink(missing_ok=True)


@router.post("/artifacts", status_code=201, responses=errors(400, 413))
async def upload(request: Request, file: UploadFile) -> dict[str, Any]:
    """Store an uploaded file; returns its reference (``kind``, ``id``, ``name``,
    ``mime``, ``size``) plus ``url`` (where to download it). Flow inputs of a file type
    take the ``id``."""
    services = request.app.state.fb
    name = Path(file.filename or "upload").name
    kind, _ = guess_kind(name)
    # copying and hashing up to FLOWBUILDER_MAX_UPLOAD_MB: in a worker thread
    ref = await asyncio.to_thread(store_upload, services.engine.artifacts, file.file, name, kind)
    return {
        **ref.model_dump(mode="json"),
        "url": f"/api/v1/artifacts/{ref.id}",
    }


@router.get("/artifacts/{artifact_id}", responses={**FILE, **errors(404)})
async def download(request: Request, artifact_id: str) -> FileResponse:
    """The artifact's bytes, with its recorded media type and file name; a download
    unless an image, audio or PDF type (see the module docstring)."""
    store = request.app.state.fb.engine.artifacts
    ref = store.info(artifact_id)
    if ref is None:
        raise HTTPException(404, f"no artifact {artifact_id}")
    mime = (ref.mime or "application/octet-stream").split(";")[0].strip().lower()
    inline = mime in INLINE_TYPES
    return FileResponse(
        store.path(ref),
        media_type=ref.mime or "application/octet-stream",
        filename=ref.name or ref.id,
        content_disposition_type="inline" if inline else "attachment",
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": PDF_CSP if mime == "application/pdf" else CSP,
        },
    )


@router.get("/nodes", tags=["nodes"])
async def nodes(request: Request) -> list[dict[str, Any]]:
    """The node catalogue (see ``flowbuilder nodes --json``)."""
    catalogue: list[dict[str, Any]] = request.app.state.fb.engine.registry.catalogue()
    return catalogue
