"""Load File and Save File: the only core nodes that touch the file system.

Both go through the file-access policy (``ctx.files``, :mod:`flowbuilder.files`): relative
paths are in the workspace ``FLOWBUILDER_HOME/files``, and nothing outside the folders
nodes may use, or inside the data directory, can be read or written — so a shared graph
file cannot reach anywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.sdk import (
    ArtifactRef,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    file_fingerprint,
)

FileKind = Literal["text", "audio", "image", "document", "dataset", "file"]


class LoadFile(Node):
    """Load a file by path into the flow: text, audio, image, document or dataset.

    Outputs the file as an artifact (typed by 'kind') and, for kind 'text', its content
    as text (UTF-8). Raises FileAccessError for a path the file-access policy refuses.
    """

    meta = NodeMeta(type="core/load_file", version="2.0.0", category="Files", title="Load File")

    class Inputs(BaseModel):
        path: str = Param(
            description="file path (relative paths are in the workspace, FLOWBUILDER_HOME/files)",
            widget="file",
            min_length=1,
        )
        kind: FileKind = Param("text", description="what the file holds")

    class Outputs(BaseModel):
        file: ArtifactRef
        text: str

    @classmethod
    def resolve_types(cls, params: dict[str, Any]) -> dict[str, str]:
        kind = str(params.get("kind", "text"))
        return {"file": "document" if kind == "text" else kind}

    @classmethod
    def fingerprint(cls, params: dict[str, Any]) -> str | None:
        return file_fingerprint(params.get("path"))

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        kind = "document" if inputs.kind == "text" else inputs.kind

        def load() -> ArtifactRef:
            with ctx.files.open_read(inputs.path, field="path") as fh:
                return ctx.artifacts.put_stream(fh, name=Path(inputs.path).name, kind=kind)

        ref = await ctx.to_thread(load)
        text = ""
        if inputs.kind == "text":
            try:
                text = ctx.artifacts.path(ref).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise NodeError(
                    f"{inputs.path} is not UTF-8 text ({exc.reason} at byte "
                    f"{exc.start}); choose another kind"
                ) from None
        return self.Outputs(file=ref, text=text)


class SaveFile(Node):
    """Write a value to a file: text as UTF-8, an artifact as its bytes, anything else as JSON.

    Relative paths are in the workspace (FLOWBUILDER_HOME/files). The file is written
    atomically (never half-written); an existing file is replaced only if 'overwrite'.
    Outputs the path written. Raises FileAccessError for a path the file-access policy
    refuses.
    """

    meta = NodeMeta(
        type="core/save_file",
        version="2.0.0",
        category="Files",
        title="Save File",
        deterministic=False,
    )

    class Inputs(BaseModel):
        value: Any = Port(description="what to write")
        path: str = Param(
            description="file path (relative paths are in the workspace, FLOWBUILDER_HOME/files)",
            min_length=1,
        )
        overwrite: bool = Param(False, description="replace an existing file")

    class Outputs(BaseModel):
        path: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        value = inputs.value
        if isinstance(value, ArtifactRef):
            data = ctx.artifacts.path(value).read_bytes()
        elif isinstance(value, str):
            data = value.encode("utf-8")
        else:
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            data = (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        path = await ctx.to_thread(
            ctx.files.write_bytes, inputs.path, data, field="path", overwrite=inputs.overwrite
        )
        return self.Outputs(path=str(path))
