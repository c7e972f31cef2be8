"""Load File and Save File: the only core nodes that touch the file system.

Both refuse paths outside the allowed roots (the current directory, the data directory,
and ``FLOWBUILDER_ALLOWED_ROOTS``), so a shared graph file cannot read or write
anywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.context import RunContext
from flowbuilder.errors import NodeError
from flowbuilder.graph import write_atomic
from flowbuilder.node import Node, NodeMeta, Param, Port, file_fingerprint
from flowbuilder.types import ArtifactRef

FileKind = Literal["text", "audio", "image", "document", "dataset", "file"]


class LoadFile(Node):
    """Load a file by path into the flow: text, audio, image, document or dataset.

    Outputs the file as an artifact (typed by 'kind') and, for kind 'text', its content
    as text (UTF-8). Paths outside the allowed folders are refused.
    """

    meta = NodeMeta(type="core/load_file", version="1.0.0", category="Files", title="Load File")

    class Inputs(BaseModel):
        path: str = Param(
            description="file path (relative to the current folder)", widget="file", min_length=1
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
        path = ctx.allowed_path(inputs.path, Path.cwd())
        kind = "document" if inputs.kind == "text" else inputs.kind
        ref = await ctx.to_thread(ctx.artifacts.put_file, path, kind=kind)
        text = ""
        if inputs.kind == "text":
            try:
                text = ctx.artifacts.path(ref).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise NodeError(
                    f"{path} is not UTF-8 text ({exc.reason} at byte "
                    f"{exc.start}); choose another kind"
                ) from None
        return self.Outputs(file=ref, text=text)


class SaveFile(Node):
    """Write a value to a file: text as UTF-8, an artifact as its bytes, anything else as JSON.

    Relative paths go under the data directory's 'outputs' folder. The file is written
    atomically (never half-written); an existing file is replaced only if 'overwrite'.
    """

    meta = NodeMeta(
        type="core/save_file",
        version="1.0.0",
        category="Files",
        title="Save File",
        deterministic=False,
    )

    class Inputs(BaseModel):
        value: Any = Port(description="what to write")
        path: str = Param(
            description="file path; relative paths go under FLOWBUILDER_HOME/outputs", min_length=1
        )
        overwrite: bool = Param(True, description="replace an existing file")

    class Outputs(BaseModel):
        path: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        path = ctx.allowed_path(inputs.path, ctx.settings.home / "outputs")
        if path.exists() and not inputs.overwrite:
            raise NodeError(f"{path} exists and 'overwrite' is off")
        value = inputs.value
        if isinstance(value, ArtifactRef):
            data = ctx.artifacts.path(value).read_bytes()
        elif isinstance(value, str):
            data = value.encode("utf-8")
        else:
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            data = (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        await ctx.to_thread(write_atomic, path, data)
        return self.Outputs(path=str(path))
