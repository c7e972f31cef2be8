"""Post-training quantization and pruning nodes, and perplexity through llama.cpp.

Quantize turns a model (the bundled SmolLM2 by default, or a fine-tuned model from the
store) into a smaller one — a GGUF file for llama.cpp/Ollama, a torchao int8 model, or an
fp16/bf16 cast — and Prune zeroes the smallest weights. Both save their result in the
model store (``local:<name>``) and report perplexity before and after on the same text,
flagging a rise over a limit (5% by default): quantization that silently ruins a model is
the failure these nodes exist to prevent.

Perplexity is computed the same way on both backends — the same tokens (the model's
Hugging Face tokenizer, no BOS added), the same non-overlapping windows, the same
formula: :func:`nodes.training.models.perplexity` for transformers models and
:func:`gguf_perplexity` here for GGUF files run by llama.cpp.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.sdk import Node, NodeError, NodeMeta, Param, Port, RunContext, on_llama_thread
from nodes.training.gguf_export import (
    check_exportable,
    llama_quantize,
    read_config,
    write_gguf,
)
from nodes.training.models import (
    _strip_prefix,
    check_name,
    dir_size,
    load_causal_lm,
    model_id,
    perplexity,
    perplexity_windows,
    resolve_base,
    save_file_to_store,
    save_to_store,
    short_hash,
)

EVAL_TEXT = Path(__file__).resolve().parents[2] / "examples" / "pep8_excerpt.txt"
"""The default evaluation text: the first ~8 KB (≈2k SmolLM2 tokens) of PEP 8 (public
domain), shipped in ``examples/``."""

Method = Literal[
    "gguf-q8_0",
    "gguf-q4_k_m",
    "gguf-q5_k_m",
    "gguf-f16",
    "int8-weight-only",
    "int8-dynamic",
    "fp16",
    "bf16",
]
GGUF_METHODS = {
    "gguf-q8_0": "q8_0",
    "gguf-f16": "f16",
    "gguf-q4_k_m": "q4_k_m",
    "gguf-q5_k_m": "q5_k_m",
}


# ---- resolving models and texts ------------------------------------------------------------


def eval_text(text: str | None) -> str:
    """The evaluation text: ``text`` if given and not blank, else the shipped PEP 8
    excerpt (:data:`EVAL_TEXT`)."""
    if text is not None and text.strip():
        return text
    return EVAL_TEXT.read_text(encoding="utf-8")


def default_name(model: str, what: str, *parts: Any) -> str:
    """``<base>-<what>-<hash>``: the store name of a derived model, stable for the same
    model id and settings (``parts``)."""
    base = _strip_prefix(model.strip()).rstrip("/\\")
    base = Path(base).name.removesuffix(".gguf") or "model"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:60] or "model"
    return f"{base}-{what}-{short_hash(model.strip(), what, *parts)}"


# ---- perplexity through llama.cpp -----------------------------------------------------------


def gguf_perplexity(
    path: Path,
    tokenizer: Any,
    text: str,
    *,
    max_tokens: int = 2048,
    window: int = 512,
    threads: int | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """Perplexity of a GGUF model run by llama.cpp, computed exactly like
    :func:`nodes.training.models.perplexity` so the two figures compare.

    The text is tokenized with the Hugging Face ``tokenizer`` (no special tokens — no BOS),
    cut to ``max_tokens``, split into non-overlapping windows of ``window`` tokens; each
    window is evaluated from an empty KV cache (``Llama.reset``) with logits for every
    position (``logits_all=True``), and its first token is not predicted (on llama.cpp's
    own thread, :func:`flowbuilder.sdk.on_llama_thread`). Perplexity is
    ``exp`` of the mean negative log-likelihood per predicted token (log-softmax in float64).

    Returns:
        ``(perplexity, predicted_tokens)``.

    Raises:
        NodeError: the file cannot be loaded by llama.cpp, or the text has fewer than two
            tokens.
    """
    import numpy as np
    from llama_cpp import Llama

    ids = tokenizer(text, add_special_tokens=False).input_ids[:max_tokens]
    if len(ids) < 2:
        raise NodeError("perplexity needs a text of at least two tokens")

    def run() -> tuple[float, int]:
        try:
            llm = Llama(
                model_path=str(path),
                n_ctx=window,
                n_batch=window,
                n_ubatch=window,
                logits_all=True,
                n_threads=threads or os.cpu_count() or 2,
                verbose=False,
            )
        except ValueError as exc:
            raise NodeError(f"llama.cpp cannot load {path.name}: {exc}") from None
        nll = 0.0
        count = 0
        try:
            for chunk in perplexity_windows(ids, window, check_cancelled):
                llm.reset()
                llm.eval(chunk)
                logits = np.asarray(llm.scores[: len(chunk) - 1], dtype=np.float64)
                peak = logits.max(axis=1)
                log_norm = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
                targets = logits[np.arange(len(chunk) - 1), chunk[1:]]
                nll += float((log_norm - targets).sum())
                count += len(chunk) - 1
        finally:
            llm.close()
        return math.exp(nll / count), count

    return on_llama_thread(run)


# ---- shared node pieces ---------------------------------------------------------------------


class _Eval(BaseModel):
    """The evaluation settings both nodes share (documented on the node fields)."""

    text: str
    max_tokens: int
    window: int


def _change(before: float, after: float) -> float:
    return (after / before - 1.0) * 100.0


def _warning(what: str, before: float, after: float, limit: float) -> str:
    change = _change(before, after)
    if change <= limit:
        return ""
    return (
        f"perplexity rose {change:.1f}% ({before:.3f} → {after:.3f}) with {what}, over the "
        f"{limit:g}% limit: the result may be damaged — check its answers, or use a milder "
        "setting"
    )


def _hf_perplexity(
    ctx: RunContext, model: Any, tokenizer: Any, settings: _Eval
) -> tuple[float, int]:
    return perplexity(
        model,
        tokenizer,
        settings.text,
        max_tokens=settings.max_tokens,
        window=settings.window,
        check_cancelled=ctx.check_cancelled,
    )


EVAL_TOKENS_HELP = "most tokens of the evaluation text scored for perplexity"
WINDOW_HELP = "tokens per perplexity window (non-overlapping windows, scored separately)"
TEXT_HELP = (
    "evaluation text for perplexity before/after (empty: the first ~8 KB of PEP 8 that "
    "ships in examples/pep8_excerpt.txt)"
)
LIMIT_HELP = "perplexity rise, in percent, above which the result is flagged"
NAME_HELP = "name in the model store (empty: <model>-<method>-<hash of the settings>)"


# ---- Quantize -------------------------------------------------------------------------------


class Quantize(Node):
    """Post-training quantization: make a model smaller (and, on the GGUF path, faster),
    and measure what it cost.

    Methods and their trade-offs (figures for SmolLM2-135M on this project's 2-core CPU):

    - ``gguf-q8_0`` — GGUF for llama.cpp / Ollama, 8-bit blocks (8.5 bits per weight):
      3.7× smaller than fp32, perplexity within 0.1%, decodes several times faster than
      fp32 transformers. The recommended CPU path; llama-architecture models only.
    - ``gguf-q4_k_m`` / ``gguf-q5_k_m`` — llama.cpp's k-quants (its own quantizer, run on
      the f16 file): the smallest files, at a perplexity cost (Q4 more than Q5). K-quant
      rows must be multiples of 256 values; other tensors fall back to other types, so
      small models shrink less and suffer more: on SmolLM2 (576 columns) Q4_K_M is
      5.1× smaller at +6.7% perplexity, Q5_K_M 4.8× at +7.7% (both flagged) — meant for
      larger models; check small ones.
    - ``gguf-f16`` — GGUF in half precision: 2× smaller, no measurable loss (+0.001%).
    - ``int8-weight-only`` — torchao ``Int8WeightOnlyConfig`` (per-channel int8 weights,
      fp32 activations) on the Linear layers: ~2.4× smaller, perplexity within ~0.2%,
      but not faster than fp32 on CPUs without int8 kernels. Stays a transformers model
      (for training/evaluation; needs torchao to load).
    - ``int8-dynamic`` — torchao ``Int8DynamicActivationInt8WeightConfig`` (int8 weights
      and per-token int8 activations): same size as weight-only, larger perplexity rise
      (+3–5% here), since small models are sensitive to activation quantization.
    - ``fp16`` / ``bf16`` — casts of every weight: 2× smaller; bf16 keeps fp32's range
      (no loss here), fp16 its precision (overflow risk on some models).

    Every run scores perplexity before (the fp32 model) and after (the saved result,
    reloaded) on the same tokens and windows, transformers or llama.cpp alike, and flags
    a rise over ``max_increase`` percent in ``warning`` and the report.

    Outputs: ``model`` — id of the result in the model store (``local:<name>``; a GGUF is
    saved as ``<name>.gguf`` and chats in the LLM node); ``report`` — {method, model,
    source, size_bytes_before, size_bytes_after, size_ratio, perplexity_before,
    perplexity_after, perplexity_change_pct, eval_tokens, warning, seconds};
    ``warning`` — empty unless perplexity rose too much.

    Raises NodeError for a remote or unknown model, a GGUF method on a model that is not
    llama-architecture, or an invalid name.
    """

    meta = NodeMeta(
        type="training/quantize",
        version="1.0.0",
        category="Training",
        title="Quantize",
        heavy=True,
    )

    class Inputs(BaseModel):
        model: str = Param(
            "local:smollm2",
            description="model to quantize: local:smollm2, local:<name> from the store, "
            "or a Hugging Face model directory",
            widget="model",
            min_length=1,
        )
        method: Method = Param("gguf-q8_0", description="quantization method (see the node help)")
        text: str | None = Port(None, description=TEXT_HELP)
        eval_tokens: int = Param(1024, description=EVAL_TOKENS_HELP, ge=16, le=16384)
        window: int = Param(512, description=WINDOW_HELP, ge=16, le=4096)
        max_increase: float = Param(5.0, description=LIMIT_HELP, ge=0, le=1000)
        name: str = Param("", description=NAME_HELP)

    class Outputs(BaseModel):
        model: str
        report: dict[str, Any]
        warning: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        name = inputs.name.strip() or default_name(
            inputs.model, inputs.method, inputs.text, inputs.eval_tokens, inputs.window
        )
        check_name(name)
        settings = _Eval(
            text=eval_text(inputs.text), max_tokens=inputs.eval_tokens, window=inputs.window
        )
        report = await ctx.to_thread(
            _quantize, ctx, inputs.model, inputs.method, name, settings, inputs.max_increase
        )
        if report["warning"]:
            ctx.progress(1.0, f"warning: {report['warning']}")
        return self.Outputs(model=report["model"], report=report, warning=report["warning"])


def _quantize(
    ctx: RunContext, model: str, method: str, name: str, settings: _Eval, limit: float
) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    source = resolve_base(ctx, model)
    if method in GGUF_METHODS:
        check_exportable(read_config(source))
    ctx.progress(0.02, "loading the model")
    base, tokenizer = load_causal_lm(source)
    ctx.progress(0.05, "perplexity before")
    before, count = _hf_perplexity(ctx, base, tokenizer, settings)
    del base
    ctx.progress(0.3, f"perplexity before: {before:.3f}", metrics={"perplexity_before": before})

    def tensor_progress(fraction: float, message: str) -> None:
        ctx.progress(0.3 + 0.3 * fraction, message)

    if method in GGUF_METHODS:
        out_type = GGUF_METHODS[method]
        if out_type in ("q8_0", "f16"):

            def write_file(tmp: Path) -> None:
                write_gguf(
                    source,
                    tmp,
                    out_type=out_type,
                    name=name,
                    progress=tensor_progress,
                    check_cancelled=ctx.check_cancelled,
                )

            target = save_file_to_store(ctx, f"{name}.gguf", write_file)
        else:
            cache = ctx.settings.home / "cache"
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp_dir:
                f16 = Path(tmp_dir) / "f16.gguf"
                write_gguf(
                    source,
                    f16,
                    out_type="f16",
                    name=name,
                    progress=tensor_progress,
                    check_cancelled=ctx.check_cancelled,
                )
                ctx.progress(0.6, f"llama.cpp quantizer: {out_type}")
                target = save_file_to_store(
                    ctx,
                    f"{name}.gguf",
                    lambda tmp: llama_quantize(f16, tmp, out_type, threads=os.cpu_count() or 2),
                )
        ctx.progress(0.7, "perplexity after (llama.cpp)")
        after, _ = gguf_perplexity(
            target,
            tokenizer,
            settings.text,
            max_tokens=settings.max_tokens,
            window=settings.window,
            check_cancelled=ctx.check_cancelled,
        )
    else:
        ctx.progress(0.3, f"quantizing: {method}")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(method)

        def write(tmp: Path) -> None:
            quantized = _load_quantized(source, method)
            ctx.check_cancelled()
            quantized.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

        target = save_to_store(ctx, name, write)
        ctx.progress(0.7, "perplexity after (reloaded)")
        reloaded, _ = load_causal_lm(target, dtype=dtype)
        after, _ = _hf_perplexity(ctx, reloaded, tokenizer, settings)
        del reloaded
    warning = _warning(method, before, after, limit)
    size_before = dir_size(source)
    size_after = dir_size(target)
    return {
        "method": method,
        "model": model_id(name),
        "source": model,
        "size_bytes_before": size_before,
        "size_bytes_after": size_after,
        "size_ratio": round(size_before / size_after, 3),
        "perplexity_before": before,
        "perplexity_after": after,
        "perplexity_change_pct": round(_change(before, after), 3),
        "eval_tokens": count,
        "window": settings.window,
        "max_increase_pct": limit,
        "warning": warning,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _load_quantized(source: Path, method: str) -> Any:
    """Load ``source`` quantized with ``method`` (a non-GGUF method), ready to save.

    torchao methods go through transformers' ``TorchAoConfig`` so the saved config
    records the quantization and ``from_pretrained`` restores it.
    """
    import torch
    from transformers import AutoModelForCausalLM, TorchAoConfig

    if method in ("fp16", "bf16"):
        dtype = torch.float16 if method == "fp16" else torch.bfloat16
        model, _ = load_causal_lm(source, dtype=dtype)
        return model
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    config = (
        Int8WeightOnlyConfig()
        if method == "int8-weight-only"
        else Int8DynamicActivationInt8WeightConfig()
    )
    try:
        return AutoModelForCausalLM.from_pretrained(
            source,
            local_files_only=True,
            dtype=torch.float32,
            quantization_config=TorchAoConfig(config),
        )
    except (OSError, ValueError) as exc:
        raise NodeError(f"torchao cannot quantize {source}: {exc}") from None


# ---- Prune ----------------------------------------------------------------------------------


class Prune(Node):
    """Magnitude pruning with ``torch.nn.utils.prune``: zero the smallest weights of every
    Linear layer (the LM head and embeddings are left alone unless ``include_lm_head``).

    - ``unstructured`` — ``l1_unstructured``: in each layer, the fraction ``sparsity`` of
      weights with the smallest absolute value become zero. Mild at 10–30% on small
      models; a sparse format or kernel is needed for any size or speed gain.
    - ``structured`` — ``ln_structured`` (L1 norm, ``n=1``, ``dim=0``): whole rows (output
      features) with the smallest L1 norm become zero; harsher on quality, but the
      pattern a dense kernel can exploit once the rows are removed.

    The pruning is made permanent (``prune.remove``) and the model saved (fp32, same size:
    zeros are still stored). Reports the sparsity reached — counted as the share of exact
    zeros in the pruned layers' weights, and over all parameters — and perplexity before
    and after on the same text, flagging a rise over ``max_increase`` percent.

    Outputs: ``model`` (``local:<name>``), ``report`` ({method, model, source,
    target_sparsity, sparsity, overall_sparsity, layers, perplexity_before,
    perplexity_after, perplexity_change_pct, eval_tokens, warning, seconds}),
    ``sparsity`` (0–1, in the pruned layers), ``warning`` (empty if none).

    Raises NodeError for a remote or unknown model, or an invalid name.
    """

    meta = NodeMeta(
        type="training/prune", version="1.0.0", category="Training", title="Prune", heavy=True
    )

    class Inputs(BaseModel):
        model: str = Param(
            "local:smollm2",
            description="model to prune: local:smollm2, local:<name> from the store, or a "
            "Hugging Face model directory",
            widget="model",
            min_length=1,
        )
        method: Literal["unstructured", "structured"] = Param(
            "unstructured",
            description="unstructured: smallest single weights; structured: whole rows",
        )
        sparsity: float = Param(
            0.2, description="fraction of each layer's weights to zero (0–0.95)", ge=0, le=0.95
        )
        include_lm_head: bool = Param(
            False, description="also prune the output (LM head) layer, if not tied"
        )
        text: str | None = Port(None, description=TEXT_HELP)
        eval_tokens: int = Param(1024, description=EVAL_TOKENS_HELP, ge=16, le=16384)
        window: int = Param(512, description=WINDOW_HELP, ge=16, le=4096)
        max_increase: float = Param(5.0, description=LIMIT_HELP, ge=0, le=1000)
        name: str = Param("", description=NAME_HELP)

    class Outputs(BaseModel):
        model: str
        report: dict[str, Any]
        sparsity: float
        warning: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        what = f"prune-{inputs.method[:6]}{round(inputs.sparsity * 100)}"
        name = inputs.name.strip() or default_name(
            inputs.model,
            what,
            inputs.sparsity,
            inputs.include_lm_head,
            inputs.text,
            inputs.eval_tokens,
            inputs.window,
        )
        check_name(name)
        settings = _Eval(
            text=eval_text(inputs.text), max_tokens=inputs.eval_tokens, window=inputs.window
        )
        report = await ctx.to_thread(_prune, ctx, inputs, name, settings)
        if report["warning"]:
            ctx.progress(1.0, f"warning: {report['warning']}")
        return self.Outputs(
            model=report["model"],
            report=report,
            sparsity=report["sparsity"],
            warning=report["warning"],
        )


def prunable_layers(model: Any, *, include_lm_head: bool = False) -> list[tuple[str, Any]]:
    """The ``(name, module)`` pairs of the model's ``nn.Linear`` layers to prune: all of
    them except the output layer (``get_output_embeddings()``), which is kept unless
    ``include_lm_head`` and it does not share its weight with the input embeddings."""
    from torch import nn

    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if module is head:
            tied = embed is not None and module.weight is embed.weight
            if not include_lm_head or tied:
                continue
        layers.append((name, module))
    return layers


def _prune(ctx: RunContext, inputs: Prune.Inputs, name: str, settings: _Eval) -> dict[str, Any]:
    import torch
    from torch.nn.utils import prune

    started = time.perf_counter()
    source = resolve_base(ctx, inputs.model)
    ctx.progress(0.02, "loading the model")
    model, tokenizer = load_causal_lm(source)
    ctx.progress(0.05, "perplexity before")
    before, count = _hf_perplexity(ctx, model, tokenizer, settings)
    ctx.progress(0.4, f"perplexity before: {before:.3f}", metrics={"perplexity_before": before})

    layers = prunable_layers(model, include_lm_head=inputs.include_lm_head)
    if not layers:
        raise NodeError(f"model '{inputs.model}' has no Linear layers to prune")
    for index, (_, module) in enumerate(layers):
        ctx.check_cancelled()
        if inputs.method == "unstructured":
            prune.l1_unstructured(module, name="weight", amount=inputs.sparsity)
        else:
            prune.ln_structured(module, name="weight", amount=inputs.sparsity, n=1, dim=0)
        prune.remove(module, "weight")
        ctx.progress(0.4 + 0.1 * (index + 1) / len(layers), f"pruned {index + 1}/{len(layers)}")
    with torch.no_grad():
        zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
        total = sum(m.weight.numel() for _, m in layers)
        all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
        all_params = sum(p.numel() for p in model.parameters())
    sparsity = zeros / total

    ctx.progress(0.5, f"sparsity {sparsity:.3f}; saving")

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    target = save_to_store(ctx, name, write)
    ctx.progress(0.6, "perplexity after")
    after, _ = _hf_perplexity(ctx, model, tokenizer, settings)
    what = f"{inputs.method} pruning at {inputs.sparsity:.0%}"
    warning = _warning(what, before, after, inputs.max_increase)
    return {
        "method": inputs.method,
        "model": model_id(name),
        "source": inputs.model,
        "target_sparsity": inputs.sparsity,
        "sparsity": round(sparsity, 6),
        "overall_sparsity": round(all_zeros / all_params, 6),
        "layers": len(layers),
        "size_bytes": dir_size(target),
        "perplexity_before": before,
        "perplexity_after": after,
        "perplexity_change_pct": round(_change(before, after), 3),
        "eval_tokens": count,
        "window": settings.window,
        "max_increase_pct": inputs.max_increase,
        "warning": warning,
        "seconds": round(time.perf_counter() - started, 2),
    }


NODES: tuple[type[Node], ...] = (Quantize, Prune)
