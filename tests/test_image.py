"""Image nodes with real components: a real diffusers Stable Diffusion pipeline built
from small configurations (random weights, a CLIP BPE tokenizer trained here), saved to
a folder and loaded by the node as a user's model directory; the OpenAI Images API and
a vision chat request answered by real local servers; Pillow for the utility nodes.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from servers import LocalServer

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.graph import load_graph
from flowbuilder.models import ModelCache
from flowbuilder.providers.config import ProviderConfig
from flowbuilder.registry import default_registry
from flowbuilder.scheduler import RunResult
from flowbuilder.settings import Settings
from flowbuilder.validate import compile_graph

pytest_plugins = ["servers", "servers_media"]

REPO = Path(__file__).resolve().parent.parent
CORPUS = (
    "a photo of an astronaut riding a horse on the moon, a watercolour of a lighthouse "
    "at dusk, an oil painting of a red fox in the snow, a cat wearing a hat"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table (Radford et al. 2019)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def train_clip_bpe(text: str, folder: Path, merges: int = 80) -> Any:
    """Train a byte-level BPE in CLIP's format (words end in ``</w>``) on ``text`` and
    load it with transformers' CLIPTokenizer from the written vocab.json/merges.txt."""
    from transformers import CLIPTokenizer

    b2u = _bytes_to_unicode()
    vocab = list(b2u.values())
    vocab += [c + "</w>" for c in vocab]
    words: collections.Counter[tuple[str, ...]] = collections.Counter()
    for raw in text.lower().replace(",", " ").split():
        chars = tuple(b2u[b] for b in raw.encode())
        words[(*chars[:-1], chars[-1] + "</w>")] += 1
    learned: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = pairs.most_common(1)[0][0]
        learned.append(best)
        vocab.append("".join(best))
        merged: collections.Counter[tuple[str, ...]] = collections.Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in learned) + "\n"
    )
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Stable Diffusion 1.x-style pipeline directory (model_index.json, unet, vae,
    text_encoder, tokenizer, scheduler) with random weights and 64×64 output."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("sd")
    tokenizer = train_clip_bpe(CORPUS, root / "bpe")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = root / "tiny-sd"
    pipe.save_pretrained(path)  # type: ignore[attr-defined]
    return path


@pytest.fixture(scope="session")
def image_engine(tmp_path_factory: pytest.TempPathFactory, shared_models: ModelCache) -> Engine:
    home = tmp_path_factory.mktemp("image-home")
    settings = Settings.from_env(home=home, file_roots=(home.parent.resolve(),))
    engine = Engine(default_registry(), settings)
    engine.models = engine.scheduler.models = shared_models
    return engine


def run(engine: Engine, builder: GraphBuilder) -> tuple[RunResult, list[Any]]:
    seen: list[Any] = []
    result = asyncio.run(
        engine.run(builder.build(), listeners=[seen.append], use_cache=False, keep_outputs=True)
    )
    return result, seen


def generate(engine: Engine, prompt: str, **params: Any) -> tuple[RunResult, list[Any]]:
    """Text → Generate Image (node 2)."""
    b = GraphBuilder(engine.registry)
    text = b.add("core/text", text=prompt)
    gen = b.add("image/generate", **params)
    b.link(text, "text", gen, "prompt")
    return run(engine, b)


def pixels(engine: Engine, ref: Any) -> Image.Image:
    return Image.open(engine.artifacts.path(ref))


# ---- local diffusers ---------------------------------------------------------------------------


@pytest.mark.slow
def test_local_diffusers_directory(image_engine: Engine, tiny_sd: Path) -> None:
    """The model directory loads offline, 2 steps give a 64×64 PNG, the same seed gives
    the same image, another seed another one; progress counts steps."""
    params = {"model": f"local:{tiny_sd}", "steps": 2, "guidance": 5.0, "seed": 3}
    first, seen = generate(image_engine, "an astronaut riding a horse", **params)
    assert first.status == "finished", first.error
    out = first.node_outputs["2"]
    img = pixels(image_engine, out["image"])
    assert img.format == "PNG" and img.size == (64, 64)
    assert out["image"].kind == "image" and out["images"] == [out["image"]] and out["seed"] == 3
    steps = [e.message for e in seen if e.type == "node_progress" and e.node_id == "2"]
    assert steps[-1] == "step 2 / 2"
    again, _ = generate(image_engine, "an astronaut riding a horse", **params)
    assert again.node_outputs["2"]["image"].id == out["image"].id
    other, _ = generate(image_engine, "an astronaut riding a horse", **{**params, "seed": 4})
    assert other.node_outputs["2"]["image"].id != out["image"].id
    loaded = image_engine.models.keys()  # a ModelCache, not a dict
    assert len([k for k in loaded if k.startswith("diffusers:")]) == 1


@pytest.mark.slow
def test_local_count_size_negative_prompt(image_engine: Engine, tiny_sd: Path) -> None:
    result, _ = generate(
        image_engine,
        "a lighthouse at dusk",
        model=str(tiny_sd),
        steps=2,
        width=48,
        height=32,
        count=2,
        negative_prompt="blurry",
    )
    assert result.status == "finished", result.error
    images = result.node_outputs["2"]["images"]
    assert len(images) == 2 and images[0].id != images[1].id
    assert all(pixels(image_engine, r).size == (48, 32) for r in images)


@pytest.mark.slow
def test_local_errors(image_engine: Engine, tiny_sd: Path, tmp_path: Path) -> None:
    result, _ = generate(image_engine, "a fox", model=str(tmp_path / "nothing-here"))
    assert result.status == "failed"
    assert "is not a diffusers model directory (one holding model_index.json" in (
        result.error or ""
    )
    result, _ = generate(image_engine, "a fox", model=str(tiny_sd), width=60, height=64)
    assert result.status == "failed" and "multiples of 8 (got 60)" in (result.error or "")
    result, _ = generate(image_engine, "   ", model=str(tiny_sd))
    assert result.status == "failed" and "the prompt is empty" in (result.error or "")


# ---- OpenAI Images API (real local server) -------------------------------------------------------


@pytest.fixture
def media_engine(image_engine: Engine, media_server: LocalServer) -> Engine:
    ProviderConfig(image_engine.settings.home).add("testmedia", f"{media_server.url}/v1")
    return image_engine


def test_openai_gpt_image_1(media_engine: Engine, media_server: LocalServer) -> None:
    result, _ = generate(media_engine, "a red fox in the snow", model="testmedia:gpt-image-1")
    assert result.status == "finished", result.error
    img = pixels(media_engine, result.node_outputs["2"]["image"])
    assert img.format == "PNG" and img.size == (1024, 1024)
    (seen,) = media_server.state.requests("/v1/images/generations")
    assert seen.body == {"prompt": "a red fox in the snow", "n": 1, "model": "gpt-image-1"}


def test_openai_dall_e_3_size_and_refusals(media_engine: Engine, media_server: LocalServer) -> None:
    result, _ = generate(
        media_engine, "a cat wearing a hat", model="testmedia:dall-e-3", width=1792, height=1024
    )
    assert result.status == "finished", result.error
    assert pixels(media_engine, result.node_outputs["2"]["image"]).size == (1792, 1024)
    assert media_server.state.requests("/v1/images/generations")[0].body["response_format"] == (
        "b64_json"
    )
    result, _ = generate(media_engine, "a cat", model="testmedia:dall-e-3", width=64, height=64)
    assert result.status == "failed"
    assert "refused the request for model 'dall-e-3'" in (result.error or "")
    assert "Invalid value: '64x64'" in (result.error or "")


# ---- utility nodes and image to text ---------------------------------------------------------


@pytest.fixture
def photo(image_engine: Engine) -> Path:
    path = image_engine.settings.home.parent / "photo.jpg"
    img = Image.new("RGB", (200, 100), "navy")
    img.paste(Image.new("RGB", (50, 50), "yellow"), (120, 30))
    img.save(path, format="JPEG")
    return path


def test_load_resize_save(image_engine: Engine, photo: Path) -> None:
    b = GraphBuilder(image_engine.registry)
    load = b.add("image/load", path=str(photo))
    fit = b.add("image/resize", mode="fit", width=100, height=100)
    fill = b.add("image/resize", mode="fill", width=64, height=64)
    crop = b.add("image/resize", mode="crop", width=50, height=50, left=120, top=30)
    save = b.add("image/save", path="crop.webp")
    for node in (fit, fill, crop):
        b.link(load, "image", node, "image")
    b.link(crop, "image", save, "image")
    result, _ = run(image_engine, b)
    assert result.status == "finished", result.error
    outs = result.node_outputs
    assert (outs["1"]["width"], outs["1"]["height"]) == (200, 100)
    assert (outs["2"]["width"], outs["2"]["height"]) == (100, 50)
    assert pixels(image_engine, outs["3"]["image"]).size == (64, 64)
    cropped = pixels(image_engine, outs["4"]["image"]).convert("RGB")
    assert cropped.size == (50, 50)
    r, g, bl = cropped.getpixel((25, 25))  # type: ignore[misc]
    assert r > 200 and g > 200 and bl < 80  # the yellow square
    saved = Path(outs["5"]["path"])
    assert saved == image_engine.settings.home / "files" / "crop.webp"  # in the workspace
    assert Image.open(saved).format == "WEBP"


def test_image_errors(image_engine: Engine, photo: Path, tmp_path: Path) -> None:
    b = GraphBuilder(image_engine.registry)
    load = b.add("image/load", path=str(photo))
    crop = b.add("image/resize", mode="crop", width=50, height=50, left=180, top=0)
    b.link(load, "image", crop, "image")
    result, _ = run(image_engine, b)
    assert result.status == "failed"
    assert "the crop box (180, 0) – (230, 50) goes past the image's 200×100 pixels" in (
        result.error or ""
    )
    text = image_engine.settings.home.parent / "notes.png"
    text.write_text("not a picture")
    b = GraphBuilder(image_engine.registry)
    b.add("image/load", path=str(text))
    result, _ = run(image_engine, b)
    assert result.status == "failed"
    assert "cannot read 'notes.png' as an image" in (result.error or "")
    b = GraphBuilder(image_engine.registry)
    b.add("image/load", path="/etc/hostname")
    result, _ = run(image_engine, b)
    assert result.status == "failed"
    assert "field 'path': '/etc/hostname' is outside every folder" in (result.error or "")


@pytest.mark.slow
def test_image_to_text_sends_the_image(
    image_engine: Engine, photo: Path, openai_server: LocalServer
) -> None:
    """The image reaches an OpenAI-format server as an image_url data part beside the
    prompt (the server's SmolLM2 cannot see it, but answers the text)."""
    ProviderConfig(image_engine.settings.home).add("testoai", f"{openai_server.url}/v1")
    b = GraphBuilder(image_engine.registry)
    load = b.add("image/load", path=str(photo))
    describe = b.add(
        "image/to_text", model="testoai:smollm2", prompt="What colour is it?", max_tokens=8
    )
    b.link(load, "image", describe, "image")
    result, _ = run(image_engine, b)
    assert result.status == "finished", result.error
    assert result.node_outputs["2"]["text"]
    (seen,) = openai_server.state.requests("/v1/chat/completions")
    (message,) = seen.body["messages"]
    text_part, image_part = message["content"]
    assert text_part == {"type": "text", "text": "What colour is it?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (200, 100)

    b = GraphBuilder(image_engine.registry)
    load = b.add("image/load", path=str(photo))
    describe = b.add("image/to_text", model="local:smollm2")
    b.link(load, "image", describe, "image")
    result, _ = run(image_engine, b)
    assert result.status == "failed" and "cannot take images here" in (result.error or "")


def test_examples_validate(image_engine: Engine) -> None:
    for name in ("illustrate.json", "meeting_notes.json"):
        compile_graph(load_graph(REPO / "examples" / name), image_engine.registry)
