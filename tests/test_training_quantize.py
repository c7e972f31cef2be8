"""The Quantize and Prune nodes on the real bundled SmolLM2-135M.

Each node run scores perplexity on 512 tokens of the shipped PEP 8 excerpt (two windows
of 256). The test recomputes the figures itself — transformers on the fp32 model and on
the saved result, llama.cpp on the saved GGUF file — with its own loops, so the
report is checked against an independent computation, not against the node's helpers.

The bundled model unpacked to fp32 (~30 s to build) is shared with the other training
tests through ``.pytest_cache/flowbuilder-train/hf``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.events import NodeProgress
from flowbuilder.registry import default_registry
from flowbuilder.settings import Settings
from nodes.training.models import load_causal_lm, resolve_base

pytestmark = pytest.mark.slow

TEXT = (REPO / "examples" / "pep8_excerpt.txt").read_text(encoding="utf-8")
EVAL = {"eval_tokens": 512, "window": 256}


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine on a fresh data directory whose ``cache/hf`` is the shared unpacked
    SmolLM2."""
    home = tmp_path_factory.mktemp("quantize-home")
    shared_hf = REPO / ".pytest_cache" / "flowbuilder-train" / "hf"
    shared_hf.mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir()
    (home / "cache" / "hf").symlink_to(shared_hf, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWBUILDER_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        roots = (tmp_path_factory.getbasetemp(),)  # the tests' own model folders
        yield Engine(default_registry(), Settings.from_env(home=home, file_roots=roots))


@pytest.fixture(scope="module")
def base_dir(qengine: Engine) -> Path:
    """The bundled SmolLM2 as an fp32 Hugging Face directory."""
    ctx = SimpleNamespace(settings=qengine.settings, progress=lambda *a, **k: None)
    return resolve_base(ctx, "local:smollm2")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fp32(base_dir: Path) -> tuple[Any, Any, list[int], float]:
    """The fp32 model, its tokenizer, the evaluation ids and its perplexity on them."""
    model, tokenizer = load_causal_lm(base_dir)
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids[: EVAL["eval_tokens"]]
    return model, tokenizer, ids, hf_ppl(model, ids)


def windows(ids: list[int]) -> list[list[int]]:
    step = EVAL["window"]
    return [ids[i : i + step] for i in range(0, len(ids), step) if len(ids[i : i + step]) > 1]


def hf_ppl(model: Any, ids: list[int]) -> float:
    """Perplexity with transformers: mean token NLL via the model's own loss."""
    import torch

    total = 0.0
    count = 0
    with torch.inference_mode():
        for chunk in windows(ids):
            x = torch.tensor([chunk])
            loss = model(x, labels=x).loss.float().item()  # mean over len-1 predictions
            total += loss * (len(chunk) - 1)
            count += len(chunk) - 1
    return math.exp(total / count)


def llama_ppl(path: Path, ids: list[int]) -> float:
    """Perplexity with llama.cpp's low-level API on the same windows (on llama.cpp's own
    thread, as the project runs it: see ``on_llama_thread``)."""
    from flowbuilder.providers.local import on_llama_thread

    return on_llama_thread(_llama_ppl, path, ids)


def _llama_ppl(path: Path, ids: list[int]) -> float:
    import numpy as np
    import torch
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, n_batch=256, logits_all=True, verbose=False)
    total = 0.0
    count = 0
    for chunk in windows(ids):
        llm.reset()
        llm.eval(chunk)
        logits = torch.from_numpy(np.array(llm.scores[: len(chunk)], dtype=np.float32))
        total += torch.nn.functional.cross_entropy(
            logits[:-1], torch.tensor(chunk[1:]), reduction="sum"
        ).item()
        count += len(chunk) - 1
    llm.close()
    return math.exp(total / count)


def run_node(
    engine: Engine, type_id: str, *, ports: dict[str, str] | None = None, **params: Any
) -> tuple[Any, dict[str, Any] | None, list[NodeProgress]]:
    """Run one node, its ``ports`` fed text by graph inputs; return (result, the node's
    outputs or None, its progress events)."""
    b = GraphBuilder(engine.registry)
    node = b.add(type_id, **params)
    for port in ports or {}:
        src = b.add("core/input", name=port, type="text")
        b.link(src, "value", node, port)
    seen: list[Any] = []
    result = asyncio.run(
        engine.run(
            b.build(), ports or {}, listeners=[seen.append], use_cache=False, keep_outputs=True
        )
    )
    progress = [e for e in seen if isinstance(e, NodeProgress)]
    return result, (result.node_outputs or {}).get(str(node)), progress


def store(engine: Engine) -> Path:
    return engine.settings.home / "models"


# ---- GGUF -----------------------------------------------------------------------------------


def test_gguf_q8_0_smaller_faithful_and_chats(
    qengine: Engine, base_dir: Path, fp32: tuple[Any, Any, list[int], float]
) -> None:
    result, out, _ = run_node(qengine, "training/quantize", method="gguf-q8_0", **EVAL)
    assert result.status == "finished", result.error
    assert out is not None
    name = out["model"].removeprefix("local:")
    gguf = store(qengine) / f"{name}.gguf"
    assert gguf.is_file()
    report = out["report"]

    # size: ≥ 3.5× smaller than the fp32 safetensors weights
    fp32_bytes = (base_dir / "model.safetensors").stat().st_size
    assert fp32_bytes / gguf.stat().st_size >= 3.5, (fp32_bytes, gguf.stat().st_size)
    assert report["size_bytes_after"] == gguf.stat().st_size

    # the report's perplexities match an independent computation, and q8_0 is within 1%
    _, _, ids, before = fp32
    after = llama_ppl(gguf, ids)
    assert report["eval_tokens"] == len(ids) - 2  # two windows, first token of each unscored
    assert report["perplexity_before"] == pytest.approx(before, rel=1e-4)
    assert report["perplexity_after"] == pytest.approx(after, rel=1e-4)
    assert abs(after / before - 1) < 0.01, (before, after)
    assert out["warning"] == "" and report["warning"] == ""

    # the file chats in the local LLM node (llama.cpp), by its store id
    result, chat, _ = run_node(
        qengine,
        "llm/chat",
        model=out["model"],
        ports={"prompt": "Write one sentence about the Python programming language."},
        temperature=0,
        max_tokens=32,
    )
    assert result.status == "finished", result.error
    assert chat is not None
    assert chat["usage"]["completion_tokens"] > 0
    assert len(chat["text"].split()) >= 3, chat["text"]
    assert sum(c.isalpha() for c in chat["text"]) > len(chat["text"]) / 2, chat["text"]


# ---- torchao int8 ---------------------------------------------------------------------------


def test_int8_weight_only_halves_size_and_keeps_perplexity(
    qengine: Engine, base_dir: Path, fp32: tuple[Any, Any, list[int], float]
) -> None:
    from transformers import AutoModelForCausalLM

    result, out, _ = run_node(qengine, "training/quantize", method="int8-weight-only", **EVAL)
    assert result.status == "finished", result.error
    assert out is not None
    report = out["report"]
    saved = store(qengine) / out["model"].removeprefix("local:")
    weights = sum(p.stat().st_size for p in saved.glob("*.safetensors"))
    weights += sum(p.stat().st_size for p in saved.glob("*.bin"))
    fp32_bytes = (base_dir / "model.safetensors").stat().st_size
    assert fp32_bytes / weights >= 2.0, (fp32_bytes, weights)

    # reload the saved model independently: still int8, same perplexity as reported
    model = AutoModelForCausalLM.from_pretrained(saved, local_files_only=True)
    assert "Int8" in type(model.model.layers[0].mlp.up_proj.weight).__name__
    _, _, ids, before = fp32
    after = hf_ppl(model, ids)
    assert report["perplexity_before"] == pytest.approx(before, rel=1e-4)
    assert report["perplexity_after"] == pytest.approx(after, rel=1e-4)
    assert abs(after / before - 1) < 0.01, (before, after)
    assert report["size_ratio"] >= 2.0


# ---- Prune and the warning ------------------------------------------------------------------


def test_prune_reaches_sparsity_and_flags_a_rise(
    qengine: Engine, fp32: tuple[Any, Any, list[int], float]
) -> None:
    import torch

    result, out, progress = run_node(
        qengine, "training/prune", method="unstructured", sparsity=0.5, **EVAL
    )
    assert result.status == "finished", result.error
    assert out is not None
    report = out["report"]
    assert abs(out["sparsity"] - 0.5) <= 0.01
    # the saved model has those zeros (counted here, on the reloaded weights)
    model, _ = load_causal_lm(store(qengine) / out["model"].removeprefix("local:"))
    linear = [
        m.weight
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings()
    ]
    zeros = sum(int((w == 0).sum()) for w in linear) / sum(w.numel() for w in linear)
    assert zeros == pytest.approx(out["sparsity"], abs=1e-4)
    # embeddings (tied to the LM head) are left alone
    assert torch.equal(model.model.embed_tokens.weight, fp32[0].model.embed_tokens.weight)

    # half the weights gone: perplexity rises far over 5%, and the node says so
    assert report["perplexity_change_pct"] > 5
    assert out["warning"] and "over the 5% limit" in out["warning"]
    assert report["warning"] == out["warning"]
    assert any(p.message.startswith("warning: perplexity rose") for p in progress)


def test_structured_prune_zeroes_whole_rows(qengine: Engine) -> None:
    result, out, _ = run_node(
        qengine,
        "training/prune",
        method="structured",
        sparsity=0.1,
        eval_tokens=64,
        window=64,
    )
    assert result.status == "finished", result.error
    assert out is not None
    assert abs(out["sparsity"] - 0.1) <= 0.01
    model, _ = load_causal_lm(store(qengine) / out["model"].removeprefix("local:"))
    weight = model.model.layers[0].mlp.down_proj.weight  # 576 rows of 1536
    zero_rows = int((weight == 0).all(dim=1).sum())
    assert zero_rows == round(0.1 * weight.shape[0])


# ---- bad input ------------------------------------------------------------------------------


def test_remote_model_is_refused(qengine: Engine) -> None:
    result, _, _ = run_node(qengine, "training/quantize", model="openai:gpt-4o-mini")
    assert result.status == "failed"
    error = result.error or ""
    assert "needs a local model" in error and "openai:gpt-4o-mini" in error


def test_gguf_needs_a_llama_model(qengine: Engine, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tiny = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300)).save_pretrained(
        tiny
    )
    result, _, _ = run_node(qengine, "training/quantize", model=str(tiny), method="gguf-q8_0")
    assert result.status == "failed"
    error = result.error or ""
    assert "llama-architecture" in error and "'gpt2'" in error
    assert not list(store(qengine).glob("tiny-gpt2*"))


def test_bad_name_is_refused(qengine: Engine) -> None:
    result, _, _ = run_node(qengine, "training/quantize", method="fp16", name="../escape")
    assert result.status == "failed"
    assert "'name' must be" in (result.error or "")
