"""Generate images: local diffusers pipelines, or the OpenAI Images API.

Local models are diffusers directories with a ``model_index.json`` (Stable Diffusion
1.x/2.x, SDXL and other text-to-image pipelines ``DiffusionPipeline`` knows), loaded
with ``local_files_only=True`` — nothing is downloaded. Give one as ``local:/path``, a
bare path, or a name under ``FLOWBUILDER_HOME/models``. The device is picked
automatically (CUDA, then Apple MPS, then CPU) unless set; weights are fp16 on a GPU and
fp32 on the CPU.

Remote: ``openai:gpt-image-1``, ``openai:dall-e-3``, ``openai:dall-e-2`` or an
OpenAI-compatible endpoint with an images API, through the official ``openai`` SDK.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.sdk import (
    Credential,
    ImageRef,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    is_remote,
    store_candidates,
)

Device = Literal["auto", "cpu", "cuda", "mps"]


def pick_device(device: str) -> str:
    """``auto`` → ``cuda`` if a CUDA GPU is visible, else ``mps``, else ``cpu``.

    Raises:
        NodeError: an explicit ``cuda``/``mps`` that this machine does not have.
    """
    import torch

    have = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu": True,
    }
    if device == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if have[d])
    if not have.get(device, False):
        raise NodeError(f"device '{device}' is not available on this machine; use 'auto'")
    return device


def diffusers_dir(model: str, home: Path, paths: Callable[[str], Path] | None = None) -> Path:
    """Resolve ``local:<name>`` (a name under ``home/models``), ``local:/path`` or a bare
    path to a diffusers directory (one holding ``model_index.json``). ``paths`` checks a
    path (a node passes ``ctx.files.path_check("model")``); without it the path is taken
    as given.

    Raises:
        NodeError: no such directory.
        FileAccessError: ``paths`` refused the path.
    """
    name = model.removeprefix("local:")
    candidates = [c for c in store_candidates(name, home / "models") if c.is_dir()]
    if not candidates:
        candidates = [paths(name) if paths is not None else Path(name).expanduser()]
    for path in candidates:
        if (path / "model_index.json").is_file():
            return path
    raise NodeError(
        f"image model '{model}' is not a diffusers model directory (one holding "
        "model_index.json, e.g. a Stable Diffusion or SDXL folder saved with "
        "save_pretrained) nor a remote model such as openai:gpt-image-1"
    )


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def _load_pipeline(path: Path, device: str) -> Any:
    import torch
    from diffusers import DiffusionPipeline

    dtype = torch.float16 if device in ("cuda", "mps") else torch.float32
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    except Exception as exc:  # diffusers raises many kinds for a broken directory
        raise NodeError(
            f"cannot load the diffusers pipeline in {path} ({type(exc).__name__}: {exc})"
        ) from None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class GenerateImage(Node):
    """Generate images from a text prompt: a local diffusers model directory (Stable
    Diffusion 1.x/2.x, SDXL) or the OpenAI Images API (gpt-image-1, dall-e-3).

    Outputs: image (the first), images (all 'count' of them, PNG artifacts) and the seed
    used. Width/height 0 mean the model's native size (local: the UNet's sample size;
    OpenAI: the API's default); local sizes must be multiples of 8. The same seed, prompt
    and settings give the same image locally. Raises NodeError for a missing model
    directory, a refused prompt or size, or a missing API key.
    """

    meta = NodeMeta(
        type="image/generate",
        version="1.0.0",
        category="Image",
        title="Generate Image",
        heavy=True,
        retries=3,
    )

    class Inputs(BaseModel):
        prompt: str = Port(description="what to draw")
        negative_prompt: str = Param(
            "", description="what to avoid (local models)", widget="textarea"
        )
        model: str = Param(
            "openai:gpt-image-1",
            description="a diffusers model directory (local:/path/to/sd-model) or "
            "openai:gpt-image-1, openai:dall-e-3",
            widget="model",
            model_task="image",
            min_length=1,
        )
        width: int = Param(0, description="pixels; 0 = the model's default", ge=0, le=4096)
        height: int = Param(0, description="pixels; 0 = the model's default", ge=0, le=4096)
        steps: int = Param(30, description="denoising steps (local)", ge=1, le=200)
        guidance: float = Param(
            7.5, description="classifier-free guidance scale (local)", ge=0, le=30
        )
        seed: int = Param(0, description="noise seed (same seed, same image)", ge=0)
        count: int = Param(1, description="number of images", ge=1, le=8)
        quality: str = Param(
            "", description="OpenAI quality: low/medium/high (gpt-image-1), hd (dall-e-3)"
        )
        device: Device = Param("auto", description="where a local model runs")
        credential: Credential = Param(
            "",
            description="name of the secret holding the API key (empty: OPENAI_API_KEY)",
            widget="credential",
        )
        timeout: float | None = Param(
            None, description="seconds a remote provider may stay silent", ge=0.1, le=3600
        )

    class Outputs(BaseModel):
        image: ImageRef
        images: list[ImageRef]
        seed: int

    @classmethod
    def is_heavy(cls, inputs: Any) -> bool:
        """Local pipelines take the per-device limit; API calls run side by side."""
        return not is_remote(inputs.model)

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        if not inputs.prompt.strip():
            raise NodeError("the prompt is empty: say what to draw")
        if is_remote(inputs.model):
            pngs = await self._remote(ctx, inputs)
        else:
            pngs = await self._local(ctx, inputs)
        refs = []
        for i, data in enumerate(pngs):
            ref = ctx.artifacts.put_bytes(data, name=f"image-{inputs.seed}-{i}.png", kind="image")
            assert isinstance(ref, ImageRef)
            refs.append(ref)
        return self.Outputs(image=refs[0], images=refs, seed=inputs.seed)

    async def _local(self, ctx: RunContext, inputs: Inputs) -> list[bytes]:
        for side in (inputs.width, inputs.height):
            if side % 8:
                raise NodeError(f"width and height must be multiples of 8 (got {side})")
        path = diffusers_dir(inputs.model, ctx.settings.home, ctx.files.path_check("model"))
        device = pick_device(inputs.device)
        key = f"diffusers:{path.resolve()}:{device}"
        entry = await ctx.models.load(key, lambda: _load_pipeline(path, device), _dir_mb(path))
        return await ctx.to_thread(self._generate, ctx, entry, device, inputs)

    def _generate(self, ctx: RunContext, entry: Any, device: str, inputs: Inputs) -> list[bytes]:
        import torch

        pipe = entry.model
        steps = inputs.steps

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> Any:
            ctx.progress((step + 1) / steps, f"step {step + 1} / {steps}")
            return kwargs

        params: dict[str, Any] = {
            "prompt": inputs.prompt,
            "num_inference_steps": steps,
            "guidance_scale": inputs.guidance,
            "num_images_per_prompt": inputs.count,
            "generator": torch.Generator(device="cpu").manual_seed(inputs.seed),
            "callback_on_step_end": on_step,
        }
        if inputs.negative_prompt:
            params["negative_prompt"] = inputs.negative_prompt
        if inputs.width:
            params["width"] = inputs.width
        if inputs.height:
            params["height"] = inputs.height
        ctx.progress(0.0, f"step 0 / {steps}")
        with entry.lock:
            try:
                result = pipe(**params)
            except TypeError as exc:
                raise NodeError(
                    f"the pipeline {type(pipe).__name__} does not take these settings "
                    f"({exc}); it may not be a text-to-image pipeline"
                ) from None
        return [_png(img) for img in result.images]

    async def _remote(self, ctx: RunContext, inputs: Inputs) -> list[bytes]:
        params: dict[str, Any] = {"prompt": inputs.prompt, "n": inputs.count}
        if inputs.width or inputs.height:
            if not (inputs.width and inputs.height):
                raise NodeError("give both width and height (or neither) for an OpenAI model")
            params["size"] = f"{inputs.width}x{inputs.height}"
        if inputs.quality:
            params["quality"] = inputs.quality
        model_name = inputs.model.partition(":")[2]
        if model_name.startswith("dall-e"):
            # gpt-image-1 always answers base64; DALL·E answers URLs unless asked.
            params["response_format"] = "b64_json"
        ctx.progress(None, f"asking for {inputs.count} image(s)")
        async with ctx.providers.openai_api(
            inputs.model, inputs.credential or None, inputs.timeout, "image generation"
        ) as (client, model):
            result = await client.images.generate(model=model, **params)
        pngs = []
        for item in result.data or []:
            if not item.b64_json:
                raise NodeError(
                    f"'{inputs.model}' answered with an image URL instead of image data; "
                    "flowbuilder does not download files from the web"
                )
            pngs.append(base64.b64decode(item.b64_json))
        if not pngs:
            raise NodeError(f"'{inputs.model}' returned no image")
        return pngs
