"""Models for post-training: resolving a base model to a Hugging Face directory, loading
it with transformers, saving results into the model store, and perplexity.

Model ports carry a *model id*, the same string the LLM node's ``model`` parameter takes
(``local:smollm2``, ``local:<name>``, or a path). Training and quantize nodes save what
they make under ``FLOWBUILDER_HOME/models/<name>`` (a Hugging Face directory) or
``<name>.gguf``, so it appears in the model catalogue (``flowbuilder models``, the LLM
node's picker) as ``local:<name>`` and in every worker that shares the data directory.

The bundled SmolLM2 is a 4-bit GGUF file. transformers can read it (``gguf_file=``) and
unpacks the weights to fp32, which takes ~17 s on a 2-core CPU, so the unpacked model is
saved once under ``FLOWBUILDER_HOME/cache/hf/`` and reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flowbuilder.sdk import BUNDLED, MODEL_NAME, NodeError, RunContext, store_candidates

NAME_PATTERN = MODEL_NAME


def models_dir(ctx: RunContext) -> Path:
    """The model store: ``FLOWBUILDER_HOME/models``."""
    return ctx.settings.home / "models"


def model_id(name: str) -> str:
    """The id a saved model is used by: ``local:<name>``."""
    return f"local:{name}"


def check_name(name: str, field: str = "name") -> str:
    """Return ``name`` if it is a valid model name (letters, digits, ``._-``).

    Raises:
        NodeError: the name is empty, too long, or has other characters.
    """
    if not NAME_PATTERN.match(name):
        raise NodeError(
            f"'{field}' must be 1–100 letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit), not {name!r}"
        )
    return name


def short_hash(*parts: Any) -> str:
    """Eight hex characters of SHA-256 over the parts' ``repr``: a stable name suffix."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:8]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _strip_prefix(model: str) -> str:
    for prefix in ("local:", "bundled:"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    if ":" in model.split("/")[0]:  # provider:model
        provider = model.split(":", 1)[0]
        raise NodeError(
            f"post-training needs a local model, not '{model}' from provider '{provider}': "
            "use local:smollm2, local:<name> from the model store, or a model directory"
        )
    return model


def resolve_base(ctx: RunContext, model: str, field: str = "model") -> Path:
    """A Hugging Face model directory (with ``config.json``) for a model id.

    Accepts ``local:smollm2`` (the bundled GGUF, unpacked to fp32 once and cached),
    ``local:<name>`` for a directory or a ``<name>.gguf`` file in the model store, or a
    path to a model directory or a ``.gguf`` file (GGUF files are unpacked once), checked
    by the file-access policy as the node's parameter ``field``.

    Raises:
        NodeError: a remote model id, an unknown name, or a path that is not a model
            directory.
        FileAccessError: the policy refuses the path.
    """
    name = _strip_prefix(model.strip())
    bundled = BUNDLED.get(name)
    if bundled is not None:
        if bundled.kind != "gguf":
            raise NodeError(f"bundled model '{name}' is not a language model")
        return unpacked_gguf(ctx, bundled.path())
    candidates = store_candidates(name, models_dir(ctx))
    if not any(p.exists() for p in candidates):
        candidates = [ctx.files.read_path(name, field=field)]
    found = hf_dir(ctx, candidates)
    if found is not None:
        return found
    raise NodeError(
        f"model '{model}' is not a Hugging Face model directory (with config.json), a .gguf "
        f"file, a bundled model, or a model in {models_dir(ctx)}; `flowbuilder models` "
        "lists the local models"
    )


def hf_dir(ctx: RunContext, candidates: list[Path]) -> Path | None:
    """The first candidate that is a Hugging Face directory, or a ``.gguf`` file unpacked
    into one (see :func:`unpacked_gguf`); None if none is. The candidates are trusted:
    store paths, or paths the file-access policy passed."""
    for path in candidates:
        if path.is_dir() and (path / "config.json").is_file():
            return path
        if path.is_file() and path.suffix.lower() == ".gguf":
            return unpacked_gguf(ctx, path)
    return None


def unpacked_gguf(ctx: RunContext, gguf: Path) -> Path:
    """A Hugging Face directory with the GGUF file's weights unpacked to fp32.

    Built once per file (keyed by name, size and modification time) under
    ``FLOWBUILDER_HOME/cache/hf/`` and reused; safe when two processes ask at once (a
    file lock), and never left half-written (built in a temporary directory, renamed).
    """
    stat = gguf.stat()
    key = short_hash(gguf.name, stat.st_size, int(stat.st_mtime))
    target = ctx.settings.home / "cache" / "hf" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    with _file_lock(target.with_name(target.name + ".lock")):
        if (target / "config.json").is_file():
            return target
        ctx.progress(None, f"unpacking {gguf.name} for transformers (once)")

        def write(tmp: Path) -> None:
            model, tokenizer = load_gguf_with_transformers(gguf)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

        _write_dir_atomically(target, write)
    return target


def load_gguf_with_transformers(gguf: Path) -> tuple[Any, Any]:
    """Load a GGUF file into a transformers model (fp32) and its tokenizer.

    transformers marks such a model as quantized and then refuses ``save_pretrained``
    and training; the weights are already unpacked to fp32, so the marks are cleared.

    Raises:
        NodeError: transformers cannot read the file (architecture not supported).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError) as exc:
        raise NodeError(f"transformers cannot read {gguf.name}: {exc}") from None
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False  # type: ignore[assignment]
    return model, tokenizer


def load_causal_lm(path: Path, *, dtype: Any = None) -> tuple[Any, Any]:
    """Load a causal language model and its tokenizer from a Hugging Face directory.

    ``dtype`` is a ``torch.dtype`` (default fp32). The tokenizer gets a pad token (its
    end-of-sequence token) if it has none.

    Raises:
        NodeError: the directory cannot be loaded.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=dtype or torch.float32
        )
    except (OSError, ValueError) as exc:
        raise NodeError(f"cannot load the model directory {path}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def save_to_store(ctx: RunContext, name: str, write: Callable[[Path], None]) -> Path:
    """Save a model directory as ``FLOWBUILDER_HOME/models/<name>`` without ever leaving
    half a model under that name.

    ``write(tmp)`` fills a temporary directory next to the target; only when it returns
    is the directory renamed into place (replacing an older model of that name). If it
    raises — including :class:`~flowbuilder.errors.RunCancelled` — the temporary
    directory is removed and nothing changes.

    Returns:
        The final directory.
    """
    check_name(name)
    target = models_dir(ctx) / name
    _write_dir_atomically(target, write)
    return target


def save_file_to_store(ctx: RunContext, name: str, write: Callable[[Path], None]) -> Path:
    """Like :func:`save_to_store` for a single file ``FLOWBUILDER_HOME/models/<name>``
    (e.g. ``model-q8_0.gguf``): ``write(tmp_path)`` writes it, then it is renamed."""
    check_name(name)
    target = models_dir(ctx) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _write_dir_atomically(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        tmp.mkdir()
        write(tmp)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def dir_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def perplexity_windows(
    ids: Any, window: int, check_cancelled: Callable[[], None] | None = None
) -> Iterator[Any]:
    """The windows perplexity is scored on: ``ids`` (any sliceable sequence: a list, a
    range, a 1-D tensor) cut into non-overlapping slices of
    ``window`` tokens, a last slice of one token (which predicts nothing) left out;
    ``check_cancelled`` is called before each. Both backends (:func:`perplexity` on
    transformers, ``gguf_perplexity`` on llama.cpp) and the Evaluate node's progress count
    use it, so they agree on the windows."""
    for start in range(0, len(ids), window):
        if check_cancelled is not None:
            check_cancelled()
        chunk = ids[start : start + window]
        if len(chunk) < 2:
            return
        yield chunk


def perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    max_tokens: int = 2048,
    window: int = 512,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """Perplexity of a transformers causal LM on ``text``: ``exp`` of the mean negative
    log-likelihood per predicted token.

    The first ``max_tokens`` tokens are cut into non-overlapping windows of ``window``
    tokens; each window is scored on its own (its first token is not predicted), the
    "fixed-length model" evaluation described in the Hugging Face Transformers guide
    "Perplexity of fixed-length models" (stride = window). Any backend that scores the same
    windows the same way gets the same figure (see the Evaluate node's llama.cpp path).

    Returns:
        ``(perplexity, predicted_tokens)``.

    Raises:
        NodeError: the text has fewer than two tokens.
    """
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    ids = ids[:max_tokens]
    if len(ids) < 2:
        raise NodeError("perplexity needs a text of at least two tokens")
    nll = 0.0
    count = 0
    model.eval()
    with torch.inference_mode():
        for chunk in perplexity_windows(ids, window, check_cancelled):
            logits = model(chunk.unsqueeze(0)).logits[0, :-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            nll -= logprobs.gather(1, chunk[1:].unsqueeze(1)).sum().item()
            count += len(chunk) - 1
    return math.exp(nll / count), count
