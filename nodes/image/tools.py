"""Image utility nodes with Pillow: Load image, Save image, Resize/Crop.

Like the core file nodes, Load and Save go through the file-access policy (``ctx.files``):
relative paths are in the workspace ``FLOWBUILDER_HOME/files``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel

from flowbuilder.sdk import (
    ImageRef,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    file_fingerprint,
)

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".gif": "GIF"}


def open_image(path: Path | BinaryIO, name: str) -> Any:
    """The image in ``path`` (or an open binary file), fully decoded (a ``PIL.Image.Image``).

    Raises:
        NodeError: Pillow cannot read it as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NodeError(
            f"cannot read '{name}' as an image ({exc}); give a PNG, JPEG, WebP or GIF file"
        ) from None


def store_image(ctx: RunContext, image: Any, name: str) -> ImageRef:
    """Store a Pillow image as a PNG artifact named ``name`` (``.png`` is added)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    stem = Path(name).stem or "image"
    ref = ctx.artifacts.put_bytes(buf.getvalue(), name=f"{stem}.png", kind="image")
    assert isinstance(ref, ImageRef)
    return ref


class LoadImage(Node):
    """Load an image file (PNG, JPEG, WebP, GIF, …) into the flow.

    Outputs the image as an artifact with its width and height in pixels. Raises
    NodeError for a file that is not an image, FileAccessError for a path the file-access
    policy refuses.
    """

    meta = NodeMeta(type="image/load", version="2.0.0", category="Image", title="Load Image")

    class Inputs(BaseModel):
        path: str = Param(
            description="image file path (relative paths are in the workspace)",
            widget="file",
            min_length=1,
        )

    class Outputs(BaseModel):
        image: ImageRef
        width: int
        height: int

    @classmethod
    def fingerprint(cls, params: dict[str, Any]) -> str | None:
        return file_fingerprint(params.get("path"))

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        name = Path(inputs.path).name

        def load() -> ImageRef:
            with ctx.files.open_read(inputs.path, field="path") as fh:
                ref = ctx.artifacts.put_stream(fh, name=name, kind="image")
            assert isinstance(ref, ImageRef)
            return ref

        ref = await ctx.to_thread(load)
        img = await ctx.to_thread(open_image, ctx.artifacts.path(ref), name)
        return self.Outputs(image=ref, width=img.width, height=img.height)


class SaveImage(Node):
    """Save an image to a file; the format follows the suffix (.png, .jpg, .webp, .gif).

    Relative paths are in the workspace (FLOWBUILDER_HOME/files). Written atomically; an
    existing file is replaced only if 'overwrite'. Outputs the path written. Raises
    FileAccessError for a path the file-access policy refuses.
    """

    meta = NodeMeta(
        type="image/save",
        version="2.0.0",
        category="Image",
        title="Save Image",
        deterministic=False,
    )

    class Inputs(BaseModel):
        image: ImageRef = Port(description="the image to save")
        path: str = Param(
            "image.png",
            description="file path (relative paths are in the workspace)",
            min_length=1,
        )
        quality: int = Param(90, description="JPEG/WebP quality", ge=1, le=100)
        overwrite: bool = Param(False, description="replace an existing file")

    class Outputs(BaseModel):
        path: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        name = Path(inputs.path).name
        fmt = FORMATS.get(Path(name).suffix.lower())
        if fmt is None:
            raise NodeError(
                f"cannot tell the image format from '{name}': end it in {', '.join(FORMATS)}"
            )
        src = ctx.artifacts.path(inputs.image)
        img = await ctx.to_thread(open_image, src, inputs.image.name or "image")
        if fmt == "JPEG" and img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        buf = io.BytesIO()
        params = {"quality": inputs.quality} if fmt in ("JPEG", "WEBP") else {}
        img.save(buf, format=fmt, **params)
        path = await ctx.to_thread(
            ctx.files.write_bytes,
            inputs.path,
            buf.getvalue(),
            field="path",
            overwrite=inputs.overwrite,
        )
        return self.Outputs(path=str(path))


class ResizeImage(Node):
    """Resize or crop an image.

    Modes: 'fit' scales to fit inside width×height keeping the aspect ratio; 'fill'
    scales to cover width×height and crops the centre; 'stretch' scales to exactly
    width×height; 'crop' cuts a width×height box at (left, top) without scaling.
    A 0 width or height in 'fit' means "any". Resampling is Lanczos. Raises NodeError
    for a crop box outside the image.
    """

    meta = NodeMeta(type="image/resize", version="1.0.0", category="Image", title="Resize/Crop")

    class Inputs(BaseModel):
        image: ImageRef = Port(description="the image")
        mode: Literal["fit", "fill", "stretch", "crop"] = Param("fit", description="how")
        width: int = Param(512, description="pixels", ge=0, le=16384)
        height: int = Param(512, description="pixels", ge=0, le=16384)
        left: int = Param(0, description="crop box left edge, pixels", ge=0)
        top: int = Param(0, description="crop box top edge, pixels", ge=0)

    class Outputs(BaseModel):
        image: ImageRef
        width: int
        height: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        src = ctx.artifacts.path(inputs.image)
        name = inputs.image.name or "image"
        img = await ctx.to_thread(open_image, src, name)
        out = await ctx.to_thread(self._apply, img, inputs)
        ref = await ctx.to_thread(
            store_image, ctx, out, f"{Path(name).stem}-{out.width}x{out.height}"
        )
        return self.Outputs(image=ref, width=out.width, height=out.height)

    @staticmethod
    def _apply(img: Any, inputs: Inputs) -> Any:
        from PIL import Image, ImageOps

        lanczos = Image.Resampling.LANCZOS
        w, h = inputs.width, inputs.height
        if inputs.mode == "fit":
            if not w and not h:
                raise NodeError("'fit' needs a width or a height above 0")
            scale = min(w / img.width if w else float("inf"), h / img.height if h else float("inf"))
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            return img.resize(size, lanczos)
        if not w or not h:
            raise NodeError(f"'{inputs.mode}' needs a width and a height above 0")
        if inputs.mode == "fill":
            return ImageOps.fit(img, (w, h), method=lanczos)
        if inputs.mode == "stretch":
            return img.resize((w, h), lanczos)
        right, bottom = inputs.left + w, inputs.top + h
        if right > img.width or bottom > img.height:
            raise NodeError(
                f"the crop box ({inputs.left}, {inputs.top}) – ({right}, {bottom}) goes past "
                f"the image's {img.width}×{img.height} pixels"
            )
        return img.crop((inputs.left, inputs.top, right, bottom))
