"""The local provider: models that run in this process, offline.

Model names (after ``local:``):

- a bundled model: ``smollm2`` (SmolLM2-135M-Instruct GGUF, chat) or
  ``all-minilm-l6-v2`` (sentence embeddings);
- a path to a ``.gguf`` file — chat with llama-cpp-python (llama.cpp loads SmolLM2's
  GGUF in ~0.1 s and decodes ~100 tokens/s on 2 CPU cores; see NOTES);
- a path to a Hugging Face model directory (``config.json`` + safetensors, e.g. a
  fine-tuned output) — chat with transformers (``AutoModelForCausalLM``), or embeddings
  with sentence-transformers (a sentence-transformers directory, or any encoder with
  mean pooling);
- a name under ``FLOWBUILDER_HOME/models`` (``my-finetune`` for ``models/my-finetune/``
  or ``models/my-finetune.gguf``): the model store, reached only by such a name.

Paths come from graphs, so a node resolves them through the file-access policy
(``ctx.files``, :mod:`flowbuilder.files`): a relative path is in the workspace, and a
path outside the folders nodes may use is refused.

Loaded models stay in the process's model cache. :class:`LocalModels` does the work
without a run context (the test servers use it too); :class:`LocalProvider` is the
provider nodes reach through ``ctx.providers``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from flowbuilder.bundled import BUNDLED
from flowbuilder.errors import NodeError
from flowbuilder.providers import (
    ChatRequest,
    ChatResult,
    ContextTooLong,
    EmbeddingResult,
    EmbedRequest,
    PathCheck,
    ProgressCallback,
    TokenCallback,
    Usage,
)

if TYPE_CHECKING:
    from flowbuilder.models import LoadedModel, ModelCache
    from flowbuilder.providers.call import ProviderContext

N_CTX = 2048
EMBED_BATCH = 32

LocalKind = Literal["gguf", "hf", "sentence-transformers"]
CheckCancelled = Callable[[], None]


def _never() -> None:
    return None


@dataclass(frozen=True)
class LocalModelSpec:
    """A local model on disk: what it is and where. ``name`` is as the user wrote it."""

    name: str
    kind: LocalKind
    path: Path


def _dir_kind(path: Path) -> LocalKind | None:
    if (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file():
        return "sentence-transformers"
    if (path / "config.json").is_file():
        return "hf"
    return None


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A name in the model store: 1–100 letters, digits, ``._-``, starting with a letter or
digit (so never a path: no ``/``, no ``..``)."""


def store_candidates(name: str, models_dir: Path | None) -> list[Path]:
    """Where the model store keeps a model called ``name`` (none for a non-name)."""
    if models_dir is None or not MODEL_NAME.match(name):
        return []
    return [models_dir / name, models_dir / f"{name}.gguf"]


def resolve_local(
    model: str, models_dir: Path | None = None, paths: PathCheck | None = None
) -> LocalModelSpec:
    """Find a local model by bundled name, name in the model store ``models_dir``, or path.

    ``paths`` checks a path (the file-access policy; a node must pass it); without it a
    path is taken as given, for callers that are the user themselves.

    Raises:
        NodeError: nothing of that name; the message lists the bundled models.
        FileAccessError: ``paths`` refused the path.
    """
    name = model.removeprefix("bundled:")
    bundled = BUNDLED.get(name)
    if bundled is not None and bundled.kind in ("gguf", "sentence-transformers"):
        return LocalModelSpec(model, bundled.kind, bundled.path())  # type: ignore[arg-type]
    candidates = store_candidates(model, models_dir)
    if not any(p.exists() for p in candidates):
        candidates = [paths(model) if paths is not None else Path(model).expanduser()]
    for path in candidates:
        if path.is_file() and path.suffix.lower() == ".gguf":
            return LocalModelSpec(model, "gguf", path)
        if path.is_dir():
            kind = _dir_kind(path)
            if kind is not None:
                return LocalModelSpec(model, kind, path)
    chat = ", ".join(n for n, m in BUNDLED.items() if m.kind == "gguf")
    where = f", or a model in {models_dir}" if models_dir is not None else ""
    raise NodeError(
        f"local model '{model}' is neither a bundled model ({chat}) nor a .gguf file, "
        f"a Hugging Face model directory (with config.json){where}; `flowbuilder models` "
        "lists the local models"
    )


def gguf_path(model: str, paths: PathCheck | None = None) -> Path:
    """Resolve a local model name to a GGUF file (bundled name or path, checked by
    ``paths`` as in :func:`resolve_local`).

    Raises:
        NodeError: neither a bundled GGUF model nor an existing ``.gguf`` file.
    """
    spec = resolve_local(model, paths=paths)
    if spec.kind != "gguf":
        raise NodeError(f"local model '{model}' is not a .gguf model")
    return spec.path


def _dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- llama.cpp (GGUF) ----------------------------------------------------------------


P = ParamSpec("P")
T = TypeVar("T")

LLAMA_THREAD = "llama.cpp"
_llama_executor: ThreadPoolExecutor | None = None
_llama_lock = threading.Lock()


def _forget_llama_thread() -> None:
    """In a forked child: the parent's llama.cpp thread does not exist there."""
    global _llama_executor, _llama_lock
    _llama_executor = None
    _llama_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_llama_thread)


def on_llama_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``fn`` on the one thread of this process that makes llama.cpp calls, wait, and
    return its result (its exception is raised here). Every load, evaluation and generation
    of a GGUF model goes through it.

    Why one thread: llama.cpp's AMX kernels (the AMX build, see
    ``scripts/install-llama-cpp.sh``) configure a thread's tile registers on the thread's
    first batched product and assume they stay configured. torch (oneDNN) uses AMX for
    bf16 and int8 work too and releases the tiles when done, so llama.cpp on a thread that
    ran such torch work faults with SIGILL on its next prompt. A thread that runs only
    llama.cpp keeps them. Calls from that thread itself run directly.
    """
    global _llama_executor
    if threading.current_thread().name.startswith(LLAMA_THREAD):
        return fn(*args, **kwargs)
    with _llama_lock:
        if _llama_executor is None:
            _llama_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=LLAMA_THREAD)
        executor = _llama_executor
    return executor.submit(fn, *args, **kwargs).result()


def load_gguf(path: Path, threads: int = 0) -> Any:
    """A ``llama_cpp.Llama`` for the GGUF file at ``path`` as the LLM node runs it: a
    context of ``N_CTX`` tokens, ``threads`` threads (0: one per core) and flash
    attention, which decodes SmolLM2 q8_0 about 1.2x faster here (bench/quantize.py);
    loaded on llama.cpp's own thread (:func:`on_llama_thread`).
    Raises NodeError when llama.cpp cannot load the file."""
    return on_llama_thread(_open_gguf, path, threads)


def _open_gguf(path: Path, threads: int) -> Any:
    from llama_cpp import Llama

    try:
        return Llama(
            model_path=str(path),
            n_ctx=N_CTX,
            n_threads=threads or os.cpu_count() or 2,
            flash_attn=True,
            verbose=False,
        )
    except ValueError as exc:
        raise NodeError(f"cannot load {path.name} with llama.cpp: {exc}") from None


def _generate_gguf(
    entry: LoadedModel,
    request: ChatRequest,
    on_token: TokenCallback | None,
    check_cancelled: CheckCancelled,
    name: str,
) -> ChatResult:
    llm = entry.model
    messages = [m.model_dump() for m in request.messages]
    pieces: list[str] = []
    finish = "stop"
    response_format: dict[str, Any] | None = None
    if request.json_schema is not None:
        response_format = {"type": "json_object", "schema": request.json_schema}
    elif request.json_mode:
        response_format = {"type": "json_object"}
    with entry.lock:
        prompt_tokens = len(
            llm.tokenize("".join(m["content"] for m in messages).encode("utf-8"), add_bos=True)
        )
        if prompt_tokens + request.max_tokens > N_CTX:
            raise ContextTooLong(
                f"the prompt is about {prompt_tokens} tokens; with max_tokens "
                f"{request.max_tokens} it exceeds the context of {N_CTX} tokens of local "
                f"model '{name}': shorten the prompt or lower max_tokens",
                prompt_tokens=prompt_tokens,
                limit=N_CTX,
            )
        # Forget the previous prompt: llama.cpp reuses a matching prefix of its KV
        # cache, which changes the logits slightly, so the same seed could give a
        # different answer. Determinism is worth re-reading a short prompt.
        llm.reset()
        try:
            stream = llm.create_chat_completion(
                messages=messages,
                temperature=request.temperature,
                top_p=request.top_p,
                max_tokens=request.max_tokens,
                stop=request.stop or None,
                seed=request.seed,
                response_format=response_format,
                stream=True,
            )
        except ValueError as exc:  # llama.cpp's own context check
            raise ContextTooLong(
                f"the prompt does not fit the context of local model '{name}': {exc}",
                prompt_tokens=prompt_tokens,
                limit=N_CTX,
            ) from None
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice.get("delta", {}).get("content") or ""
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if piece:
                    pieces.append(piece)
                    if on_token is not None:
                        on_token(piece)
                check_cancelled()
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        text = "".join(pieces)
        completion = len(llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0
    return ChatResult(
        text=text,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion),
        finish_reason=finish,
        model=name,
    )


# ---- transformers (Hugging Face model directories) ------------------------------------


def _load_hf(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        archs = getattr(config, "architectures", None) or []
        if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            raise NodeError(
                f"{path.name} is not a text-generation model ({', '.join(archs)}); "
                "an encoder belongs in the Embed node"
            )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise NodeError(
            f"cannot load the model directory {path} with transformers: {exc}"
        ) from None
    model.eval()
    return model, tokenizer


def _hf_prompt(tokenizer: Any, request: ChatRequest) -> Any:
    messages = [m.model_dump() for m in request.messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    # no chat template (a base model): a plain transcript ending where the answer goes
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return tokenizer(text, return_tensors="pt")


def _generate_hf(
    entry: LoadedModel,
    request: ChatRequest,
    on_token: TokenCallback | None,
    check_cancelled: CheckCancelled,
    name: str,
) -> ChatResult:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

    model, tokenizer = entry.model

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text and on_token is not None:
                on_token(text)

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            check_cancelled()  # raises RunCancelled out of generate()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    encoded = _hf_prompt(tokenizer, request)
    input_ids = encoded["input_ids"]
    prompt_tokens = int(input_ids.shape[1])
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and prompt_tokens + request.max_tokens > limit:
        raise ContextTooLong(
            f"the prompt is {prompt_tokens} tokens; with max_tokens {request.max_tokens} it "
            f"exceeds the context of {limit} tokens of local model '{name}'",
            prompt_tokens=prompt_tokens,
            limit=limit,
        )
    sample = request.temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": request.max_tokens,
        "do_sample": sample,
        "streamer": Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
        "stopping_criteria": StoppingCriteriaList([Cancelled()]),
        "pad_token_id": tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    }
    if sample:
        kwargs.update(temperature=request.temperature, top_p=request.top_p)
    if request.stop:
        kwargs.update(stop_strings=request.stop, tokenizer=tokenizer)
    with entry.lock, torch.no_grad():
        if request.seed is not None:
            torch.manual_seed(request.seed)
        out = model.generate(
            input_ids=input_ids, attention_mask=encoded.get("attention_mask"), **kwargs
        )
    new = out[0, prompt_tokens:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    finish = "length" if len(new) >= request.max_tokens else "stop"
    for stop in request.stop:
        cut = text.find(stop)
        if cut >= 0:
            text, finish = text[:cut], "stop"
    return ChatResult(
        text=text,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(new)),
        finish_reason=finish,
        model=name,
    )


# ---- sentence-transformers (embeddings) ---------------------------------------------


def _load_st(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise NodeError(f"cannot load {path} as an embedding model: {exc}") from None


def _embed_st(
    entry: LoadedModel,
    request: EmbedRequest,
    on_progress: ProgressCallback | None,
    check_cancelled: CheckCancelled,
    name: str,
) -> EmbeddingResult:
    model = entry.model
    dimension = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 6
    if dimension is None:
        dimension = model.get_sentence_embedding_dimension
    dims = int(dimension() or 0)
    vectors: list[list[float]] = []
    tokens = 0
    total = len(request.texts)
    limit = model.max_seq_length or 512
    for start in range(0, total, EMBED_BATCH):
        check_cancelled()
        batch = request.texts[start : start + EMBED_BATCH]
        with entry.lock:
            ids = model.tokenizer(batch, add_special_tokens=True)["input_ids"]
            tokens += sum(min(len(i), limit) for i in ids)
            array = model.encode(
                batch,
                normalize_embeddings=request.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        vectors.extend(array.astype(float).tolist())
        if on_progress is not None:
            on_progress(min(start + EMBED_BATCH, total), total)
    return EmbeddingResult(
        vectors=vectors, dimensions=dims, usage=Usage(prompt_tokens=tokens), model=name
    )


# ---- the façade ------------------------------------------------------------------------


class LocalModels:
    """Loads and runs local models through a :class:`~flowbuilder.models.ModelCache`.

    Blocking: call from a worker thread. ``check_cancelled`` is called between tokens
    (or batches) and should raise to stop.
    """

    def __init__(
        self,
        models: ModelCache,
        models_dir: Path | None = None,
        paths: PathCheck | None = None,
    ) -> None:
        self.models, self.models_dir, self.paths = models, models_dir, paths

    def resolve(self, model: str) -> LocalModelSpec:
        return resolve_local(model, self.models_dir, self.paths)

    def _entry(self, spec: LocalModelSpec) -> LoadedModel:
        key = f"{spec.kind}:{spec.path.resolve()}"
        size_mb = _dir_size(spec.path) / 2**20
        if spec.kind == "gguf":
            return self.models.get(key, lambda: load_gguf(spec.path), size_mb * 2)
        if spec.kind == "hf":
            return self.models.get(key, lambda: _load_hf(spec.path), size_mb * 1.3)
        return self.models.get(key, lambda: _load_st(spec.path), size_mb * 1.5)

    def chat(
        self,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None = None,
        check_cancelled: CheckCancelled = _never,
    ) -> ChatResult:
        """Generate an answer (see :class:`~flowbuilder.providers.ChatProvider`).

        Raises:
            NodeError: unknown model, an embedding model, or a model that fails to load.
            ContextTooLong: the prompt plus ``max_tokens`` exceeds the context.
        """
        spec = self.resolve(model)
        if spec.kind == "sentence-transformers":
            raise NodeError(
                f"local model '{model}' makes embeddings, it cannot chat: use it in the "
                "Embed node, and a chat model (e.g. local:smollm2) here"
            )
        entry = self._entry(spec)
        label = spec.path.name
        if spec.kind == "gguf":
            return on_llama_thread(_generate_gguf, entry, request, on_token, check_cancelled, label)
        return _generate_hf(entry, request, on_token, check_cancelled, label)

    def count_prompt_tokens(self, model: str, request: ChatRequest) -> int:
        """The prompt tokens :meth:`chat` will report for ``request`` (before generating)."""
        spec = self.resolve(model)
        entry = self._entry(spec)
        if spec.kind == "gguf":
            text = "".join(m.content for m in request.messages).encode("utf-8")
            with entry.lock:
                return len(entry.model.tokenize(text, add_bos=True))
        if spec.kind == "hf":
            return int(_hf_prompt(entry.model[1], request)["input_ids"].shape[1])
        raise NodeError(f"local model '{model}' makes embeddings, it cannot chat")

    def embed(
        self,
        model: str,
        request: EmbedRequest,
        on_progress: ProgressCallback | None = None,
        check_cancelled: CheckCancelled = _never,
    ) -> EmbeddingResult:
        """One vector per text with a sentence-transformers model (or a HF encoder
        directory, mean-pooled).

        Raises:
            NodeError: unknown model, or a GGUF chat model.
        """
        spec = self.resolve(model)
        if spec.kind == "gguf":
            raise NodeError(
                f"local model '{model}' is a GGUF chat model; embeddings need a "
                "sentence-transformers model such as local:all-minilm-l6-v2"
            )
        spec = LocalModelSpec(spec.name, "sentence-transformers", spec.path)
        entry = self._entry(spec)
        return _embed_st(entry, request, on_progress, check_cancelled, spec.path.name)


class LocalProvider:
    """Chat and embeddings with local models (llama.cpp, transformers,
    sentence-transformers); see the module docstring for model names."""

    name = "local"

    def __init__(self, models_dir: Path | None = None) -> None:
        self.models_dir = models_dir

    async def chat(
        self,
        ctx: ProviderContext,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None = None,
    ) -> ChatResult:
        local = LocalModels(ctx.model_cache, self.models_dir, ctx.path_check("model"))
        return await ctx.to_thread(local.chat, model, request, on_token, ctx.check_cancelled)

    async def embed(
        self,
        ctx: ProviderContext,
        model: str,
        request: EmbedRequest,
        on_progress: ProgressCallback | None = None,
    ) -> EmbeddingResult:
        local = LocalModels(ctx.model_cache, self.models_dir, ctx.path_check("model"))
        return await ctx.to_thread(local.embed, model, request, on_progress, ctx.check_cancelled)


def read_hf_config(path: Path) -> dict[str, Any]:
    """A model directory's ``config.json`` (empty when missing or unreadable)."""
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
