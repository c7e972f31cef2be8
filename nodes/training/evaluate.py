"""Evaluate and Compare: measure a language model, then set several measurements side by
side.

**Evaluate** measures one model (a model id, as every training node passes them):

- perplexity on a text, or on a dataset's rows (instruction and chat rows are rendered
  with the tokenizer's chat template), and the validation loss ``ln(perplexity)``;
- decode speed: tokens/s while generating ``decode_tokens`` tokens greedily, timed from
  the first new token to the last (the prompt's processing is reported apart, as the time
  to first token) — the split llama.cpp's ``llama-bench`` makes between prompt processing
  and text generation;
- load time (s) and size on disk (bytes);
- task metrics on instruction rows: exact match and contains, from greedy answers.

GGUF files run on llama.cpp (llama-cpp-python, as the local LLM node does); Hugging Face
directories run on transformers. Both backends score the *same token ids*, cut into the
same windows — :func:`nodes.training.models.perplexity` on transformers,
:func:`nodes.training.quantize.gguf_perplexity` on llama.cpp. The Hugging Face tokenizer
makes the ids for both (llama.cpp's own tokenizer merges some whitespace runs
differently, which would change the windows), so a GGUF and its unpacked twin get
perplexities that differ only by their weights' arithmetic. Decode speed and task
answers also run on token ids made by that tokenizer (with its chat template).

**Compare** takes two or more Evaluate reports and makes a Markdown table, JSON rows and
a bar chart of size, speed and perplexity relative to a baseline — the before/after
figures of a quantization or fine-tuning run.
"""

from __future__ import annotations

import io
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.sdk import (
    DatasetRef,
    FileAccessError,
    ImageRef,
    JSONValue,
    ModelService,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    fingerprint_model,
    on_llama_thread,
)
from nodes.training.datasets import read_rows, shape_of
from nodes.training.models import (
    dir_size,
    hf_dir,
    load_causal_lm,
    perplexity,
    perplexity_windows,
)

Backend = Literal["auto", "llama.cpp", "transformers"]
TaskMetrics = Literal["none", "exact_match", "contains", "both"]

DECODE_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a "
    "bottle. Describe the sea, the weather and every room of the lighthouse."
)
"""The prompt decode speed is measured on (chat-templated); any prompt would do, one that
asks for a long answer keeps the model away from stopping early."""

FLAG_RISE_PCT = 5.0
"""Compare flags a model whose perplexity rose more than this (percent) over the
baseline — the threshold issue 8 sets for "quantization that silently ruins a model"."""


# ---- resolving a model id --------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What Evaluate loads: ``path`` (a ``.gguf`` file or a Hugging Face directory) on
    ``backend``; ``gguf`` is the GGUF file the model came from, if any (its tokenizer
    is read from it when the path is not a directory)."""

    backend: str
    path: Path
    gguf: Path | None


def _local_name(model: str) -> str:
    model = model.strip()
    for prefix in ("local:", "bundled:"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    head = model.split("/")[0]
    if ":" in head and not re.match(r"^[A-Za-z]:\\", model):
        raise NodeError(
            f"model: Evaluate measures local models, not '{model}' from provider "
            f"'{head.split(':', 1)[0]}'; use local:smollm2, local:<name> or a path"
        )
    return model


def resolve_target(ctx: RunContext, model: str, backend: str) -> Target:
    """Find the model and the backend that runs it.

    ``auto`` runs a GGUF file on llama.cpp and a Hugging Face directory on transformers;
    ``transformers`` on a GGUF file uses its unpacked fp32 twin
    (:func:`nodes.training.models.hf_dir`).

    Raises:
        NodeError: unknown model, an embedding model, or llama.cpp asked for a Hugging
            Face directory.
    """
    if not model.strip():
        raise NodeError("model: give a model id (local:smollm2, local:<name>) or a path")
    name = _local_name(model)
    try:
        spec = ctx.models.resolve(name)
    except FileAccessError:
        raise
    except NodeError as exc:
        raise NodeError(f"model: {exc}") from None
    if spec.kind == "sentence-transformers":
        raise NodeError(f"model: '{model}' is an embedding model; Evaluate measures chat models")
    if spec.kind == "gguf":
        if backend == "transformers":
            unpacked = hf_dir(ctx, [spec.path])
            assert unpacked is not None  # spec.path is a .gguf file
            return Target("transformers", unpacked, spec.path)
        return Target("llama.cpp", spec.path, spec.path)
    if backend == "llama.cpp":
        raise NodeError(
            f"model: '{model}' is a Hugging Face directory; llama.cpp needs a GGUF file "
            "(export one with the Quantize node's gguf methods) or choose backend "
            "'transformers'"
        )
    return Target("transformers", spec.path, None)


# ---- evaluation text and task rows -------------------------------------------------------


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, prompt: bool = False) -> str:
    """Messages as the text the model sees: the tokenizer's chat template, or a plain
    ``role: content`` transcript when it has none. ``prompt`` adds the opening of the
    assistant's turn (where an answer goes)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        return str(text)
    body = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return body + ("assistant:" if prompt else "")


def instruction_prompt(row: dict[str, Any]) -> str:
    """The user turn of an instruction row: the instruction, then its input (if any)
    after a blank line."""
    instruction = str(row.get("instruction", "")).strip()
    extra = str(row.get("input", "") or "").strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


def row_text(tokenizer: Any, row: dict[str, Any], number: int) -> str:
    """One normalised dataset row as evaluation text.

    instruction → chat template over (user: instruction + input, assistant: output);
    chat → chat template over its messages; preference → prompt + chosen answer;
    text → the text.

    Raises:
        NodeError: the row has no known shape or a field is not text (naming the row).
    """
    try:
        shape = shape_of(row)
    except NodeError as exc:
        raise NodeError(f"dataset row {number}: {exc}") from None
    try:
        if shape == "instruction":
            messages = [
                {"role": "user", "content": instruction_prompt(row)},
                {"role": "assistant", "content": str(row["output"])},
            ]
            return render_chat(tokenizer, messages)
        if shape == "chat":
            messages = row["messages"]
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
            ):
                raise NodeError("'messages' must be a list of {role, content} objects")
            return render_chat(tokenizer, messages)
        if shape == "preference":
            return f"{row['prompt']} {row['chosen']}".strip()
        text = row["text"]
        if not isinstance(text, str):
            raise NodeError("'text' must be a string")
        return text
    except KeyError as exc:
        raise NodeError(f"dataset row {number} ({shape}): missing field {exc}") from None
    except NodeError as exc:
        raise NodeError(f"dataset row {number} ({shape}): {exc}") from None


def task_items(rows: list[dict[str, Any]]) -> list[tuple[list[dict[str, str]], str]]:
    """``(prompt messages, reference answer)`` pairs for task metrics: instruction rows
    (user: instruction + input; reference: output) and chat rows that end with an
    assistant turn (prompt: the turns before it; reference: its content)."""
    items = []
    for row in rows:
        if "instruction" in row and "output" in row:
            items.append(
                ([{"role": "user", "content": instruction_prompt(row)}], str(row["output"]))
            )
        elif isinstance(row.get("messages"), list) and len(row["messages"]) >= 2:
            *before, last = row["messages"]
            if isinstance(last, dict) and last.get("role") == "assistant":
                items.append((before, str(last.get("content", ""))))
    return items


def normalise_answer(text: str) -> str:
    """Text for answer matching: case-folded, whitespace runs made single spaces, and
    surrounding whitespace and final punctuation removed (SQuAD-style normalisation,
    without dropping articles)."""
    text = " ".join(text.casefold().split())
    return text.strip().rstrip(".!?").strip()


def exact_match(answer: str, reference: str) -> bool:
    """The normalised answer equals the normalised reference."""
    return normalise_answer(answer) == normalise_answer(reference)


def contains(answer: str, reference: str) -> bool:
    """The normalised reference occurs in the normalised answer (an empty reference
    never counts)."""
    ref = normalise_answer(reference)
    return bool(ref) and ref in normalise_answer(answer)


# ---- backends --------------------------------------------------------------------------


class Runner:
    """One loaded model on one backend, with the operations Evaluate needs. Blocking."""

    backend = ""

    def perplexity(
        self, tokenizer: Any, text: str, max_tokens: int, window: int, check: Callable[[], None]
    ) -> tuple[float, int]:
        """``(perplexity, predicted tokens)`` on the first ``max_tokens`` tokens of
        ``text`` in non-overlapping windows; ``check`` is called before each window."""
        raise NotImplementedError

    def generate(
        self,
        ids: list[int],
        n: int,
        *,
        stop_at_eos: bool,
        on_token: Callable[[], None] | None = None,
    ) -> list[int]:
        """Up to ``n`` new token ids after the prompt ``ids``, greedily; ``on_token`` is
        called as each new token is produced (for timing)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def window_count(n_tokens: int, window: int) -> int:
    """How many windows :func:`nodes.training.models.perplexity` scores for ``n_tokens``
    (:func:`nodes.training.models.perplexity_windows`)."""
    return sum(1 for _ in perplexity_windows(range(n_tokens), window))


class TransformersRunner(Runner):
    """A Hugging Face causal LM on transformers, loaded in the dtype its config names
    (so an fp16 or bf16 model is measured in that dtype); perplexity by
    :func:`nodes.training.models.perplexity`."""

    backend = "transformers"

    def __init__(self, path: Path) -> None:
        self.model, self.tokenizer = load_causal_lm(path, dtype="auto")
        self.model.eval()

    def perplexity(
        self, tokenizer: Any, text: str, max_tokens: int, window: int, check: Callable[[], None]
    ) -> tuple[float, int]:
        return perplexity(
            self.model,
            tokenizer,
            text,
            max_tokens=max_tokens,
            window=window,
            check_cancelled=check,
        )

    def generate(
        self,
        ids: list[int],
        n: int,
        *,
        stop_at_eos: bool,
        on_token: Callable[[], None] | None = None,
    ) -> list[int]:
        import torch

        pad = self.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {
            "max_new_tokens": n,
            "do_sample": False,
            "pad_token_id": pad if pad is not None else self.tokenizer.eos_token_id,
        }
        if not stop_at_eos:
            kwargs["min_new_tokens"] = n
        if on_token is not None:
            kwargs["streamer"] = _TokenClock(on_token)
        with torch.inference_mode():
            tensor = torch.tensor([ids])
            out = self.model.generate(
                input_ids=tensor, attention_mask=torch.ones_like(tensor), **kwargs
            )
        return [int(t) for t in out[0, len(ids) :]]


class _TokenClock:
    """A transformers generation streamer that only reports each new token: ``put`` gets
    the prompt first, then every generated token (``transformers.generation.streamers``'s
    ``BaseStreamer`` protocol)."""

    def __init__(self, on_token: Callable[[], None]) -> None:
        self.on_token = on_token
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if self.prompt_seen:
            self.on_token()
        self.prompt_seen = True

    def end(self) -> None:
        pass


@dataclass
class DecodeTiming:
    """One timed greedy generation: ``tokens`` new tokens, ``ttft_s`` seconds from the
    call to the first new token (the prompt's processing), ``tokens_per_s`` the decode
    rate from the first new token to the last (``(tokens - 1) / seconds``; ``None`` for
    fewer than two tokens)."""

    tokens: int
    ttft_s: float
    tokens_per_s: float | None


def timed_generate(runner: Runner, ids: list[int], n: int) -> DecodeTiming:
    """Generate ``n`` tokens greedily after ``ids`` (not stopping at end-of-sequence) and
    time the prompt and the decode apart, as ``llama-bench`` reports prompt processing
    and text generation apart."""
    stamps: list[float] = []
    start = time.perf_counter()
    new = runner.generate(
        ids, n, stop_at_eos=False, on_token=lambda: stamps.append(time.perf_counter())
    )
    if not stamps:
        return DecodeTiming(len(new), time.perf_counter() - start, None)
    last = stamps[min(len(new), len(stamps)) - 1]
    rate = (len(new) - 1) / (last - stamps[0]) if len(new) > 1 and last > stamps[0] else None
    return DecodeTiming(len(new), stamps[0] - start, rate)


class LlamaCppRunner(Runner):
    """A GGUF model on llama.cpp (llama-cpp-python), loaded as the local LLM node loads
    it (:meth:`flowbuilder.sdk.ModelService.open_gguf`: context 2048, flash attention, one
    thread per core unless ``threads``). Perplexity by
    :func:`nodes.training.quantize.gguf_perplexity`, which opens its own instance with
    the logits of every position."""

    backend = "llama.cpp"

    def __init__(self, models: ModelService, path: Path, eos: int | None, threads: int = 0):
        self.path = path
        self.eos = eos
        self.threads = threads or os.cpu_count() or 2
        try:
            self.llm = models.open_gguf(path, self.threads)
        except NodeError as exc:
            raise NodeError(f"model: {exc}") from None

    def perplexity(
        self, tokenizer: Any, text: str, max_tokens: int, window: int, check: Callable[[], None]
    ) -> tuple[float, int]:
        from nodes.training.quantize import gguf_perplexity

        return gguf_perplexity(
            self.path,
            tokenizer,
            text,
            max_tokens=max_tokens,
            window=window,
            threads=self.threads,
            check_cancelled=check,
        )

    def generate(
        self,
        ids: list[int],
        n: int,
        *,
        stop_at_eos: bool,
        on_token: Callable[[], None] | None = None,
    ) -> list[int]:
        return on_llama_thread(self._generate, ids, n, stop_at_eos, on_token)

    def _generate(
        self, ids: list[int], n: int, stop_at_eos: bool, on_token: Callable[[], None] | None
    ) -> list[int]:
        # llama.cpp's generate() runs on past the end-of-sequence token; greedy (top-k 1)
        self.llm.reset()
        out: list[int] = []
        for token in self.llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if on_token is not None:
                on_token()
            if stop_at_eos and token == self.eos:
                break
            out.append(int(token))
            if len(out) >= n:
                break
        return out

    def close(self) -> None:
        self.llm.close()


def gguf_tokenizer(ctx: RunContext, gguf: Path) -> Any:
    """The Hugging Face tokenizer stored in a GGUF file (transformers reads it from the
    file's metadata), kept in the model cache: the first read takes seconds."""
    stat = gguf.stat()
    key = f"tokenizer:{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"

    def load() -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, KeyError) as exc:
            raise NodeError(f"model: cannot read the tokenizer of {gguf.name}: {exc}") from None

    return ctx.models.get(key, load, 20).model


# ---- the Evaluate node -------------------------------------------------------------------


def default_label(model: str) -> str:
    """A short display name for a model id: its last path part without ``.gguf``."""
    name = _local_name(model).rstrip("/\\")
    return re.split(r"[/\\]", name)[-1].removesuffix(".gguf") or name


class Evaluate(Node):
    """Measure a language model: perplexity (and validation loss), decode tokens/s, load
    time, size on disk, and exact-match / contains task metrics.

    Inputs: model — a model id (local:smollm2, local:<name> from the model store, a
    .gguf file or a Hugging Face directory); text — perplexity is measured on it; dataset
    — normalised rows (instruction/chat rows rendered with the chat template): perplexity
    on them when no text is connected, and task metrics from greedy answers to
    instruction rows (input = instruction + input, reference = output).
    Outputs: report (JSON: label, model, backend, size_bytes, size_mb, load_s, perplexity,
    tokens_scored, val_loss = ln perplexity, tokens_per_s (decode rate from the first new
    token to the last, best of decode_repeats runs of decode_tokens greedy tokens after a
    warm-up), ttft_s (time to the first token: the prompt's processing, best run),
    prompt_tokens, exact_match,
    contains as fractions, task_rows, answers) and a one-line summary.
    GGUF runs on llama.cpp, directories on transformers; both score the same windows of
    the same token ids, so a GGUF and its unpacked twin get comparable perplexities.
    Raises NodeError for an unknown model, no text and no dataset, a text under two
    tokens, or task metrics without instruction or chat rows.
    """

    meta = NodeMeta(
        type="training/evaluate",
        version="1.0.0",
        category="Training",
        title="Evaluate",
        heavy=True,
    )

    class Inputs(BaseModel):
        model: str = Param(
            "local:smollm2",
            description="model id: local:smollm2, local:<name> in the model store, a .gguf "
            "file or a Hugging Face model directory",
            widget="model",
            model_task="chat",
            min_length=1,
        )
        text: str | None = Port(None, description="text to measure perplexity on")
        dataset: DatasetRef | None = Port(
            None, description="normalised rows: perplexity (without text) and task metrics"
        )
        label: str = Param("", description="display name in reports (empty: the model name)")
        backend: Backend = Param(
            "auto",
            description="auto: llama.cpp for GGUF, transformers for directories; "
            "transformers on a GGUF uses its unpacked fp32 twin",
        )
        max_tokens: int = Param(
            1024, description="perplexity token budget (the first N tokens)", ge=2, le=65536
        )
        window: int = Param(
            512, description="tokens per perplexity window (non-overlapping)", ge=2, le=2048
        )
        max_rows: int = Param(20, description="dataset rows used at most", ge=1, le=100000)
        metrics: TaskMetrics = Param(
            "none", description="task metrics from greedy answers to instruction rows"
        )
        max_new_tokens: int = Param(
            32, description="tokens generated per answer for task metrics", ge=1, le=1024
        )
        decode_tokens: int = Param(
            64,
            description="tokens generated to measure decode speed (0 skips it; the rate is "
            "timed from the first new token to the last)",
            ge=0,
            le=1024,
        )
        decode_repeats: int = Param(
            1,
            description="decode runs; tokens/s is the best of them (steadier on a busy machine)",
            ge=1,
            le=10,
        )
        threads: int = Param(
            0,
            description="llama.cpp threads (0: one per core, as the LLM node); fewer can be "
            "faster on a busy machine",
            ge=0,
            le=256,
        )

    class Outputs(BaseModel):
        report: dict[str, Any]
        summary: str

    @classmethod
    def fingerprint(cls, params: dict[str, Any]) -> str | None:
        """The model file's size and modification time, so a model saved again under the
        same name is measured again."""
        try:
            spec = fingerprint_model(_local_name(str(params.get("model", ""))))
            if spec is None:
                return None
            stat = spec.path.stat()
        except (NodeError, OSError):
            return None
        return f"{spec.path}:{stat.st_mtime_ns}:{dir_size(spec.path)}"

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        if inputs.text is None and inputs.dataset is None:
            raise NodeError("nothing to measure: connect a text or a dataset")
        if inputs.metrics != "none" and inputs.dataset is None:
            raise NodeError(
                f"metrics '{inputs.metrics}' need a dataset with instruction rows: "
                "connect one, or set metrics to 'none'"
            )
        rows: list[dict[str, Any]] = []
        if inputs.dataset is not None:
            rows = read_rows(ctx, inputs.dataset)[: inputs.max_rows]
            if not rows:
                raise NodeError(f"dataset {inputs.dataset.name or ''} has no rows")
        for number, row in enumerate(rows, 1):
            try:
                shape_of(row)
            except NodeError as exc:
                raise NodeError(f"dataset row {number}: {exc}") from None
        items = task_items(rows) if inputs.metrics != "none" else []
        if inputs.metrics != "none" and not items:
            raise NodeError(
                f"metrics '{inputs.metrics}' need instruction rows (or chat rows ending in "
                "an assistant turn); the dataset has none"
            )
        target = await ctx.to_thread(resolve_target, ctx, inputs.model, inputs.backend)
        report = await ctx.to_thread(measure, ctx, inputs, target, rows, items)
        return self.Outputs(report=report, summary=summary_line(report))


def measure(
    ctx: RunContext,
    inputs: Evaluate.Inputs,
    target: Target,
    rows: list[dict[str, Any]],
    items: list[tuple[list[dict[str, str]], str]],
) -> dict[str, Any]:
    """Evaluate's work (blocking): load, score, decode, answer. See :class:`Evaluate`."""
    ctx.progress(0.0, f"loading {target.path.name} on {target.backend}")
    runner: Runner
    start = time.perf_counter()
    if target.backend == "llama.cpp":
        assert target.gguf is not None
        tokenizer = gguf_tokenizer(ctx, target.gguf)
        start = time.perf_counter()
        runner = LlamaCppRunner(ctx.models, target.path, tokenizer.eos_token_id, inputs.threads)
    else:
        runner = TransformersRunner(target.path)
        tokenizer = runner.tokenizer  # type: ignore[attr-defined]
    load_s = time.perf_counter() - start
    if isinstance(runner, LlamaCppRunner):
        threads = runner.threads
    else:
        import torch

        threads = torch.get_num_threads()
    try:
        if inputs.text is not None:
            text, source = inputs.text, "text"
        else:
            text = "\n".join(row_text(tokenizer, row, n) for n, row in enumerate(rows, 1))
            source = "dataset"
        n_tokens = len(tokenizer(text, add_special_tokens=False).input_ids[: inputs.max_tokens])
        if n_tokens < 2:
            raise NodeError(f"the {source} has {n_tokens} token(s); perplexity needs two")
        total = window_count(n_tokens, inputs.window)
        done = 0

        def window_done() -> None:
            nonlocal done
            ctx.progress(0.05 + 0.55 * done / total, f"perplexity: window {done + 1}/{total}")
            done += 1

        ppl, scored = runner.perplexity(
            tokenizer, text, inputs.max_tokens, inputs.window, window_done
        )
        ctx.progress(0.6, f"perplexity {ppl:.3f} on {scored} tokens", metrics={"perplexity": ppl})

        tokens_per_s = ttft_s = prompt_tokens = None
        if inputs.decode_tokens:
            prompt = render_chat(
                tokenizer, [{"role": "user", "content": DECODE_PROMPT}], prompt=True
            )
            prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
            prompt_tokens = len(prompt_ids)
            runner.generate(prompt_ids, 2, stop_at_eos=False)  # warm-up
            ctx.check_cancelled()
            timings = []
            for _ in range(inputs.decode_repeats):
                ctx.check_cancelled()
                timings.append(timed_generate(runner, prompt_ids, inputs.decode_tokens))
            rates = [t.tokens_per_s for t in timings if t.tokens_per_s is not None]
            tokens_per_s = max(rates) if rates else None
            ttft_s = min(t.ttft_s for t in timings)
            ctx.progress(
                0.7,
                f"decode {tokens_per_s or 0:.1f} tokens/s, first token {ttft_s * 1000:.0f} ms",
                metrics={"tokens_per_s": tokens_per_s or 0.0, "ttft_s": ttft_s},
            )

        answers = []
        for n, (messages, reference) in enumerate(items):
            ctx.progress(0.7 + 0.3 * n / len(items), f"answering row {n + 1}/{len(items)}")
            prompt_ids = tokenizer(
                render_chat(tokenizer, messages, prompt=True), add_special_tokens=False
            ).input_ids
            out = runner.generate(prompt_ids, inputs.max_new_tokens, stop_at_eos=True)
            answer = tokenizer.decode(out, skip_special_tokens=True).strip()
            answers.append(
                {
                    "prompt": messages[-1]["content"] if messages else "",
                    "reference": reference,
                    "answer": answer,
                    "exact_match": exact_match(answer, reference),
                    "contains": contains(answer, reference),
                }
            )
    finally:
        runner.close()
    size = dir_size(target.path)
    report: dict[str, Any] = {
        "label": inputs.label or default_label(inputs.model),
        "model": inputs.model,
        "backend": target.backend,
        "path": str(target.path),
        "size_bytes": size,
        "size_mb": round(size / 1e6, 2),
        "load_s": round(load_s, 3),
        "perplexity": ppl,
        "val_loss": math.log(ppl),
        "tokens_scored": scored,
        "window": inputs.window,
        "text_source": source,
        "tokens_per_s": tokens_per_s,
        "ttft_s": ttft_s,
        "prompt_tokens": prompt_tokens,
        "decode_tokens": inputs.decode_tokens,
        "decode_repeats": inputs.decode_repeats,
        "threads": threads,
        "exact_match": None,
        "contains": None,
        "task_rows": len(answers),
        "answers": answers[:50],
    }
    if answers:
        if inputs.metrics in ("exact_match", "both"):
            report["exact_match"] = sum(a["exact_match"] for a in answers) / len(answers)
        if inputs.metrics in ("contains", "both"):
            report["contains"] = sum(a["contains"] for a in answers) / len(answers)
    ctx.progress(1.0, summary_line(report))
    return report


def summary_line(report: dict[str, Any]) -> str:
    """One line a person reads: label, perplexity, speed, size, load time, task metrics."""
    parts = [
        f"{report['label']} ({report['backend']}): perplexity {report['perplexity']:.3f} "
        f"on {report['tokens_scored']} tokens"
    ]
    if report.get("tokens_per_s") is not None:
        parts.append(f"{report['tokens_per_s']:.1f} tokens/s")
    if report.get("ttft_s") is not None:
        parts.append(f"first token {report['ttft_s'] * 1000:.0f} ms")
    parts.append(f"{report['size_bytes'] / 1e6:.1f} MB")
    parts.append(f"load {report['load_s']:.2f} s")
    for key, name in (("exact_match", "exact match"), ("contains", "contains")):
        if report.get(key) is not None:
            parts.append(f"{name} {report[key] * 100:.0f}% of {report['task_rows']}")
    return ", ".join(parts)


# ---- the Compare node --------------------------------------------------------------------


def _num(report: dict[str, Any], key: str, where: str) -> float | None:
    value = report.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise NodeError(f"{where}: '{key}' must be a number, not {value!r}")
    return float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare_rows(reports: list[tuple[str, dict[str, Any]]], baseline: str) -> list[dict[str, Any]]:
    """One row per report with figures relative to the baseline report.

    ``reports`` are ``(where, report)`` pairs (``where`` names the input, for errors);
    ``baseline`` is an index (``"0"`` = the first) or a label; empty means the first.
    Each row: label, model, backend, size_mb, size_x (baseline size / size: times
    smaller), tokens_per_s, speedup_x (tokens/s / baseline tokens/s), perplexity,
    ppl_change_pct (percent change from the baseline), exact_match, contains (fractions),
    baseline (bool) and flags (list of warnings: perplexity up more than 5%).

    Raises:
        NodeError: fewer than two reports, a report that is not an Evaluate report, or a
            baseline that names none of them.
    """
    if len(reports) < 2:
        raise NodeError(f"Compare needs two or more reports; it got {len(reports)}")
    parsed: list[dict[str, Any]] = []
    for where, report in reports:
        if not isinstance(report, dict) or not any(
            k in report for k in ("perplexity", "size_bytes", "tokens_per_s")
        ):
            raise NodeError(
                f"{where}: not an Evaluate report (a JSON object with perplexity, "
                "size_bytes, tokens_per_s); connect an Evaluate node's 'report'"
            )
        size = _num(report, "size_bytes", where)
        parsed.append(
            {
                "label": str(report.get("label") or report.get("model") or where),
                "model": str(report.get("model", "")),
                "backend": str(report.get("backend", "")),
                "size_mb": size / 1e6 if size is not None else None,
                "tokens_per_s": _num(report, "tokens_per_s", where),
                "perplexity": _num(report, "perplexity", where),
                "exact_match": _num(report, "exact_match", where),
                "contains": _num(report, "contains", where),
            }
        )
    labels = [p["label"] for p in parsed]
    key = baseline.strip()
    if not key:
        base_index = 0
    elif key.lstrip("-").isdigit():
        base_index = int(key)
        if not -len(parsed) <= base_index < len(parsed):
            raise NodeError(
                f"baseline: index {base_index} is out of range for {len(parsed)} reports "
                f"(0 to {len(parsed) - 1})"
            )
        base_index %= len(parsed)
    elif key in labels:
        base_index = labels.index(key)
    else:
        raise NodeError(f"baseline: no report is labelled '{key}' (labels: {', '.join(labels)})")
    base = parsed[base_index]
    rows = []
    for index, p in enumerate(parsed):
        ppl_ratio = _ratio(p["perplexity"], base["perplexity"])
        change = (ppl_ratio - 1) * 100 if ppl_ratio is not None else None
        flags = []
        if change is not None and change > FLAG_RISE_PCT:
            flags.append(f"perplexity +{change:.1f}% (over {FLAG_RISE_PCT:g}%)")
        rows.append(
            {
                **p,
                "baseline": index == base_index,
                "size_x": _ratio(base["size_mb"], p["size_mb"]),
                "speedup_x": _ratio(p["tokens_per_s"], base["tokens_per_s"]),
                "ppl_change_pct": change,
                "flags": flags,
            }
        )
    return rows


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`compare_rows` as a Markdown table (columns for exact match and
    contains only when some row has them), with the baseline marked."""
    has_em = any(r["exact_match"] is not None for r in rows)
    has_ct = any(r["contains"] is not None for r in rows)
    head = [
        "model",
        "backend",
        "size MB",
        "size ×",
        "tokens/s",
        "speed-up ×",
        "perplexity",
        "Δ ppl",
    ]
    head += ["exact match"] * has_em + ["contains"] * has_ct + ["flag"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [
            r["label"] + (" (baseline)" if r["baseline"] else ""),
            r["backend"] or "—",
            _fmt(r["size_mb"], ".1f"),
            _fmt(r["size_x"], ".2f", "×"),
            _fmt(r["tokens_per_s"], ".1f"),
            _fmt(r["speedup_x"], ".2f", "×"),
            _fmt(r["perplexity"], ".3f"),
            _fmt(r["ppl_change_pct"], "+.1f", "%"),
        ]
        if has_em:
            cells.append(
                _fmt(r["exact_match"] * 100 if r["exact_match"] is not None else None, ".0f", "%")
            )
        if has_ct:
            cells.append(
                _fmt(r["contains"] * 100 if r["contains"] is not None else None, ".0f", "%")
            )
        cells.append("⚠ " + "; ".join(r["flags"]) if r["flags"] else "")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _size_note(row: dict[str, Any]) -> str:
    ratio = row["size_x"]
    if ratio is None:
        return "—"
    return f"{ratio:.2f}× smaller" if ratio >= 1 else f"{1 / ratio:.2f}× larger"


def bar_chart(rows: list[dict[str, Any]]) -> bytes:
    """A PNG with three bar panels — size (MB), decode tokens/s, perplexity — one bar per
    model, the baseline's bar dark, each bar annotated with its ratio to the baseline
    (× for size and speed, % change for perplexity). Drawn with matplotlib's Agg
    backend (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [
        ("size (MB)", "size_mb", _size_note),
        ("decode tokens/s", "tokens_per_s", lambda r: _fmt(r["speedup_x"], ".2f", "×")),
        ("perplexity", "perplexity", lambda r: _fmt(r["ppl_change_pct"], "+.1f", "%")),
    ]
    labels = [r["label"] for r in rows]
    fig = Figure(figsize=(4.0 * len(panels), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, key, note) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        colours = [
            "#37474f"
            if r["baseline"]
            else ("#e57373" if r["flags"] and key == "perplexity" else "#64b5f6")
            for r in rows
        ]
        bars = ax.bar(range(len(rows)), values, color=colours)
        for bar, row in zip(bars, rows, strict=True):
            text = "baseline" if row["baseline"] else note(row)
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(y=0.15)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


class Compare(Node):
    """Set two or more Evaluate reports side by side: a Markdown table, JSON rows and a
    bar chart, each model relative to a baseline.

    Connect reports to a, b, c, … (in the order they should appear) and/or a list of
    reports to 'reports' (appended after a–f). The table gives size (MB) and how many
    times smaller, decode tokens/s and the speed-up, perplexity and its change in
    percent, exact match / contains where measured, and a flag where perplexity rose
    more than 5% over the baseline. Raises NodeError for fewer than two reports, an input
    that is not a report, or an unknown baseline.
    """

    meta = NodeMeta(type="training/compare", version="1.0.0", category="Training", title="Compare")

    class Inputs(BaseModel):
        a: dict[str, Any] | None = Port(None, description="an Evaluate report (first row)")
        b: dict[str, Any] | None = Port(None, description="an Evaluate report")
        c: dict[str, Any] | None = Port(None, description="an Evaluate report")
        d: dict[str, Any] | None = Port(None, description="an Evaluate report")
        e: dict[str, Any] | None = Port(None, description="an Evaluate report")
        f: dict[str, Any] | None = Port(None, description="an Evaluate report")
        reports: JSONValue = Port(
            None, description="a list of more reports (JSON array), after a–f"
        )
        baseline: str = Param(
            "", description="the report others are compared with: index (0 = first) or label"
        )

    class Outputs(BaseModel):
        table: str
        rows: list[dict[str, Any]]
        chart: ImageRef

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        given: list[tuple[str, Any]] = [
            (f"input '{name}'", getattr(inputs, name))
            for name in ("a", "b", "c", "d", "e", "f")
            if getattr(inputs, name) is not None
        ]
        more = inputs.reports if inputs.reports is not None else []
        if not isinstance(more, list):
            raise NodeError(
                f"input 'reports' must be a list of reports, not {type(more).__name__}; "
                "connect a single report to a–f"
            )
        given += [(f"reports[{i}]", r) for i, r in enumerate(more)]
        rows = compare_rows(given, inputs.baseline)
        png = await ctx.to_thread(bar_chart, rows)
        chart = ctx.artifacts.put_bytes(png, name="compare.png", kind="image")
        assert isinstance(chart, ImageRef)
        return self.Outputs(table=markdown_table(rows), rows=rows, chart=chart)


NODES: tuple[type[Node], ...] = (Evaluate, Compare)
