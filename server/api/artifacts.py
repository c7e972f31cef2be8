"""Artifact upload and download: ``POST /api/v1/artifacts``, ``GET /api/v1/artifacts/{id}``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse

from flowbuilder.artifacts import guess_kind
from server.api.answers import FILE, errors

router = APIRouter(prefix="/api/v1", tags=["artifacts"])


@router.post("/artifacts", status_code=201, responses=errors(400, 413))
async def upload(request: Request, file: UploadFile) -> dict[str, Any]:
    """Store an uploaded file; returns its reference plus ``path`` (where the server keeps
    it, for nodes that take a path) and ``url`` (where to download it)."""
    services = request.app.state.fb
    name = Path(file.filename or "upload").name
    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        shutil.copyfileobj(file.file, tmp)
    try:
        kind, _ = guess_kind(name)
        ref = services.engine.artifacts.put_file(tmp.name, kind=kind, name=name)
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return {
        **ref.model_dump(mode="json"),
        "path": str(services.engine.artifacts.path(ref)),
        "url": f"/api/v1/artifacts/{ref.id}",
    }


@router.get("/artifacts/{artifact_id}", responses={**FILE, **errors(404)})
async def download(request: Request, artifact_id: str) -> FileResponse:
    """The artifact's bytes, with its recorded media type and file name."""
    store = request.app.state.fb.engine.artifacts
    ref = store.info(artifact_id)
    if ref is None:
        raise HTTPException(404, f"no artifact {artifact_id}")
    return FileResponse(
        store.path(ref),
        media_type=ref.mime,
        filename=ref.name or None,
        content_disposition_type="inline",
    )


@router.get("/nodes", tags=["nodes"])
async def nodes(request: Request) -> list[dict[str, Any]]:
    """The node catalogue (see ``flowbuilder nodes --json``)."""
    catalogue: list[dict[str, Any]] = request.app.state.fb.engine.registry.catalogue()
    return catalogue
