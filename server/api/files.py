"""``POST /api/v1/files``: an uploaded file kept in the workspace, for nodes that take a
path (the canvas's file drop and its file widgets use it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from flowbuilder.artifacts import guess_kind
from flowbuilder.files import FileAccess

router = APIRouter(prefix="/api/v1", tags=["files"])


@router.post("/files", status_code=201)
async def upload_to_workspace(request: Request, file: UploadFile) -> dict[str, Any]:
    """Keep the file in the workspace (``FLOWBUILDER_HOME/files/uploads/``). Answers its
    ``path`` relative to the workspace (what Load File's ``path`` takes), ``name``,
    ``kind`` and ``mime`` (guessed from the name) and ``size`` in bytes."""
    data = await file.read()
    access = FileAccess(request.app.state.fb.engine.settings)
    path = await run_in_threadpool(access.save_upload, file.filename or "upload", data)
    kind, mime = guess_kind(path)
    return {"path": path, "name": Path(path).name, "kind": kind, "mime": mime, "size": len(data)}
