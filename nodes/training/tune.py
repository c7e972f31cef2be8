"""Fine-tune (SFT) and Preference tuning (DPO) nodes, on TRL's trainers.

Both run on the CPU by default with the bundled SmolLM2 (``local:smollm2``, unpacked once
from its GGUF file), with LoRA adapters (PEFT) or full fine-tuning. Each training step
reports ``{"step", "loss", "eta_s", "epoch"}`` as progress metrics (the canvas draws a
live loss curve from them) and is a cancellation point: a cancelled run stops before the
next step starts and saves nothing. Only when training has finished is the result saved
into the model store (:func:`nodes.training.models.save_to_store`, atomic), as
``local:<name>`` — a merged Hugging Face model the LLM node loads with transformers —
and, for LoRA, the adapter alone as ``<name>-lora``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from flowbuilder.sdk import DatasetRef, Node, NodeError, NodeMeta, Param, Port, RunContext
from nodes.training.datasets import hh_to_messages, rows_of_shape
from nodes.training.models import (
    check_name,
    load_causal_lm,
    model_id,
    resolve_base,
    save_to_store,
    short_hash,
)

T = TypeVar("T")

LORA_HELP = (
    "LoRA trains small low-rank adapters next to frozen weights (Hu et al. 2021, "
    "arXiv:2106.09685): fast, little memory, the result is merged into a full model; "
    "full fine-tuning updates every weight (slower, more memory, easier to overfit)"
)


# ---- shared plumbing --------------------------------------------------------------------


async def run_blocking(ctx: RunContext, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread; if the node is cancelled meanwhile, tell the thread to
    stop (``ctx.stop()``) and wait for it, so the run ends only once training has stopped
    and cleaned up after itself (no temporary directories, no half-saved model)."""
    task = asyncio.ensure_future(ctx.to_thread(fn))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        ctx.stop()
        with contextlib.suppress(BaseException):
            await task
        raise


def base_name(model: str) -> str:
    """A short name for a model id, for default output names: ``local:smollm2`` →
    ``smollm2``, ``/x/my-model`` → ``my-model``."""
    name = model.strip().rstrip("/").split(":", 1)[-1]
    name = Path(name).name or "model"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem if name.endswith(".gguf") else name)
    return name.strip("-._")[:60] or "model"


def output_name(name: str, model: str, what: str, *parts: Any) -> str:
    """``name`` if given (checked), else ``<base>-<what>-<hash of parts>``."""
    if name:
        return check_name(name)
    return f"{base_name(model)}-{what}-{short_hash(model, *parts)}"


class TrainingStats:
    """What the progress callback saw: loss per logged step, step end times (seconds,
    ``time.perf_counter``) and the step reached."""

    def __init__(self) -> None:
        self.curve: list[dict[str, float]] = []
        self.step_ends: list[float] = []
        self.step = 0
        self.max_steps = 0
        self.logs: list[dict[str, float]] = []
        self.start: float | None = None

    def seconds_per_step(self) -> float:
        """Mean seconds per optimizer step, leaving out the first (warm-up) step when
        there are more."""
        ends = self.step_ends
        if len(ends) >= 2:
            return (ends[-1] - ends[0]) / (len(ends) - 1)
        if len(ends) >= 1 and self.start is not None:
            return (ends[-1] - self.start) / len(ends)
        return 0.0


def progress_callback(ctx: RunContext, stats: TrainingStats, label: str) -> Any:
    """A transformers ``TrainerCallback`` that streams progress and stops on cancellation.

    Before every step it calls ``ctx.check_cancelled()``, which raises
    :class:`~flowbuilder.errors.RunCancelled` out of ``trainer.train()``: at most the step
    in flight when the run was cancelled completes. Every logged loss is reported as
    ``ctx.progress(step / max_steps, message, metrics={"step", "loss", "eta_s", "epoch"})``.
    """
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stats.start = time.perf_counter()
            stats.max_steps = state.max_steps
            ctx.progress(0.0, f"{label}: {state.max_steps} steps")

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._stop_if_cancelled(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            stats.step_ends.append(time.perf_counter())
            stats.step = state.global_step
            self._stop_if_cancelled(state.global_step)

        def _stop_if_cancelled(self, step: int) -> None:
            if ctx.cancelled:
                ctx.log.info("%s cancelled: stopped after step %d", label, step)
                ctx.check_cancelled()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            stats.logs.append({k: v for k, v in logs.items() if isinstance(v, int | float)})
            if "loss" not in logs or "train_runtime" in logs:
                return
            step = state.global_step
            loss = float(logs["loss"])
            stats.curve.append({"step": step, "loss": loss})
            per_step = stats.seconds_per_step()
            eta = max(0, stats.max_steps - step) * per_step
            epoch = float(state.epoch or 0.0)
            ctx.progress(
                step / max(1, stats.max_steps),
                f"{label}: step {step}/{stats.max_steps}, loss {loss:.4f}",
                metrics={"step": step, "loss": loss, "eta_s": round(eta, 1), "epoch": epoch},
            )

    return _Callback()


def _set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so the same inputs train the same model on the CPU."""
    from transformers import set_seed

    set_seed(seed)


def _lora_config(inputs: Any) -> Any:
    from peft import LoraConfig

    targets: str | list[str] = "all-linear"
    if inputs.target_modules.strip() and inputs.target_modules.strip() != "all-linear":
        targets = [t.strip() for t in inputs.target_modules.split(",") if t.strip()]
    return LoraConfig(
        r=inputs.lora_rank,
        lora_alpha=inputs.lora_alpha,
        lora_dropout=inputs.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def _train_and_save(
    ctx: RunContext,
    trainer: Any,
    stats: TrainingStats,
    name: str,
    tokenizer: Any,
    *,
    lora: bool,
    measure: Callable[[], Any] | None,
    what: str,
) -> tuple[Any, Any, float, str, str]:
    """Train, measuring before and after with ``measure`` (when given), then save.

    Returns ``(before, after, final training loss, model id, adapter directory)``. Nothing
    is saved when the run is cancelled (RunCancelled propagates) or training diverged.

    Raises:
        NodeError: the final loss is not finite.
    """
    before = after = None
    if measure is not None:
        ctx.progress(None, f"{what} before training")
        before = measure()
    ctx.check_cancelled()
    output = trainer.train()
    ctx.check_cancelled()
    if measure is not None:
        ctx.progress(None, f"{what} after training")
        after = measure()
    final = stats.curve[-1]["loss"] if stats.curve else float(output.training_loss)
    if not math.isfinite(final):
        raise NodeError(f"training diverged (loss {final}); lower the learning rate and try again")
    ctx.check_cancelled()
    ctx.progress(None, f"saving {name}")
    model_ref, adapter = _save_results(ctx, name, trainer.model, tokenizer, lora)
    return before, after, final, model_ref, adapter


def common_args(inputs: Any, workdir: Path) -> dict[str, Any]:
    """Training arguments both trainers share: CPU-friendly, no saving, no reporting."""
    import torch

    return {
        "output_dir": str(workdir),
        "num_train_epochs": inputs.epochs,
        "max_steps": inputs.max_steps if inputs.max_steps > 0 else -1,
        "learning_rate": inputs.learning_rate,
        "per_device_train_batch_size": inputs.batch_size,
        "per_device_eval_batch_size": inputs.batch_size,
        "gradient_accumulation_steps": 1,
        "max_length": inputs.max_length,
        "seed": inputs.seed,
        "data_seed": inputs.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
    }


def _quiet(trainer: Any) -> None:
    """Drop the callback that prints every log line to stdout (progress events carry it)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _workdir(ctx: RunContext, name: str) -> Path:
    root = ctx.settings.home / "cache" / "train"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}.", dir=root))


def _save_results(
    ctx: RunContext, name: str, trained: Any, tokenizer: Any, lora: bool
) -> tuple[str, str]:
    """Save the adapter (LoRA) and the merged model; returns ``(model id, adapter path)``."""
    adapter = ""
    if lora:
        path = save_to_store(ctx, f"{name}-lora", lambda d: trained.save_pretrained(d))
        adapter = str(path)
        merged = trained.merge_and_unload()
    else:
        merged = trained

    def write(d: Path) -> None:
        merged.save_pretrained(d)
        tokenizer.save_pretrained(d)

    save_to_store(ctx, name, write)
    return model_id(name), adapter


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---- SFT --------------------------------------------------------------------------------


def sft_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalised rows → TRL's conversational prompt–completion records (or ``text``).

    Instruction rows become ``prompt=[user: instruction (+ blank line + input)]`` and
    ``completion=[assistant: output]``; chat rows are cut before their last assistant
    message (everything after it is dropped). TRL applies the tokenizer's chat template
    and, for prompt–completion data, computes the loss on the completion only.

    Raises:
        NodeError: rows of mixed shapes, or a chat row whose last assistant turn is empty.
    """
    if all("text" in r and "instruction" not in r and "messages" not in r for r in rows):
        return [{"text": r["text"]} for r in rows]
    records = []
    for number, row in enumerate(rows, 1):
        if "instruction" in row:
            user = row["instruction"]
            if row.get("input"):
                user = f"{user}\n\n{row['input']}"
            records.append(
                {
                    "prompt": [{"role": "user", "content": user}],
                    "completion": [{"role": "assistant", "content": row["output"]}],
                }
            )
        elif "messages" in row:
            messages = row["messages"]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            records.append({"prompt": messages[:last], "completion": [messages[last]]})
        else:
            raise NodeError(
                f"row {number}: a text row among instruction/chat rows; "
                "a fine-tuning dataset must be all text rows or all instruction/chat rows"
            )
    return records


class FineTune(Node):
    """Supervised fine-tuning (SFT) of a causal language model with TRL's SFTTrainer,
    with LoRA adapters or full fine-tuning, on the CPU.

    Inputs: a model id (default the bundled SmolLM2), an instruction/chat/text dataset and
    optionally a validation dataset. The tokenizer's chat template is applied; the loss
    is on the answers only. Streams step/loss/ETA; cancellable between steps (nothing is
    saved then). Outputs the merged model's id (``local:<name>``, in the model catalogue
    and the LLM node's picker), the LoRA adapter's directory, the final training loss,
    validation loss before and after, steps, seconds per step and the loss curve.
    """

    meta = NodeMeta(
        type="training/sft",
        version="1.0.0",
        category="Training",
        title="Fine-tune (SFT)",
        heavy=True,
    )

    class Inputs(BaseModel):
        dataset: DatasetRef = Port(description="instruction, chat or text rows to learn")
        validation: DatasetRef | None = Port(
            None, description="rows for validation loss before and after"
        )
        model: str = Param(
            "local:smollm2",
            description="base model: local:smollm2, local:<name> or a Hugging Face directory",
            widget="model",
            model_task="chat",
            min_length=1,
        )
        method: Literal["lora", "full"] = Param("lora", description=LORA_HELP)
        lora_rank: int = Param(8, description="LoRA rank r", ge=1, le=256)
        lora_alpha: int = Param(16, description="LoRA scaling alpha (update × alpha/r)", ge=1)
        lora_dropout: float = Param(0.05, description="dropout on the LoRA path", ge=0, le=0.9)
        target_modules: str = Param(
            "all-linear",
            description="layers that get adapters: all-linear, or names like q_proj,v_proj",
        )
        epochs: float = Param(1.0, description="passes over the dataset", ge=0.01)
        max_steps: int = Param(0, description="stop after this many steps (0: use epochs)", ge=0)
        learning_rate: float = Param(2e-4, description="peak learning rate", ge=1e-8)
        batch_size: int = Param(4, description="rows per step", ge=1, le=256)
        max_length: int = Param(256, description="tokens per row (longer rows are cut)", ge=16)
        seed: int = Param(0, description="seed (same seed, same model)")
        name: str = Param("", description="output model name (empty: derived from the inputs)")

    class Outputs(BaseModel):
        model: str
        adapter: str
        train_loss: float
        validation_loss_before: float | None
        validation_loss_after: float | None
        steps: int
        seconds_per_step: float
        loss_curve: list[dict[str, float]]

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        shapes = ("instruction", "chat", "text")
        rows = rows_of_shape(ctx, inputs.dataset, shapes, "Fine-tune")
        val_rows = (
            rows_of_shape(ctx, inputs.validation, shapes, "Fine-tune (validation)")
            if inputs.validation is not None
            else []
        )
        params = inputs.model_dump(exclude={"dataset", "validation", "name"})
        name = output_name(
            inputs.name,
            inputs.model,
            "sft",
            params,
            inputs.dataset.id,
            inputs.validation.id if inputs.validation else None,
        )
        result = await run_blocking(ctx, lambda: train_sft(ctx, inputs, rows, val_rows, name))
        return self.Outputs(**result)


def train_sft(
    ctx: RunContext,
    inputs: FineTune.Inputs,
    rows: list[dict[str, Any]],
    val_rows: list[dict[str, Any]],
    name: str,
) -> dict[str, Any]:
    """The SFT node's work, in a worker thread; returns the node's outputs as a dict.

    Raises:
        RunCancelled: the run was cancelled (nothing saved).
        NodeError: the model has no chat template for instruction/chat rows, or training
            diverged (loss not finite).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    base = resolve_base(ctx, inputs.model)
    ctx.progress(None, f"loading {inputs.model}")
    _set_seed(inputs.seed)
    model, tokenizer = load_causal_lm(base)
    records = sft_records(rows)
    conversational = "prompt" in records[0]
    if conversational and not tokenizer.chat_template:
        raise NodeError(
            f"{inputs.model} has no chat template, so instruction/chat rows cannot be "
            "formatted; use a chat model or text rows"
        )
    train_ds = datasets.Dataset.from_list(records)
    val_ds = datasets.Dataset.from_list(sft_records(val_rows)) if val_rows else None
    stats = TrainingStats()
    workdir = _workdir(ctx, name)
    try:
        args = SFTConfig(**common_args(inputs, workdir))
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            processing_class=tokenizer,
            peft_config=_lora_config(inputs) if inputs.method == "lora" else None,
            callbacks=[progress_callback(ctx, stats, "fine-tune")],
        )
        _quiet(trainer)

        def validation_loss() -> float | None:
            return _finite(trainer.evaluate().get("eval_loss"))

        before, after, final, model_ref, adapter = _train_and_save(
            ctx,
            trainer,
            stats,
            name,
            tokenizer,
            lora=inputs.method == "lora",
            measure=validation_loss if val_ds is not None else None,
            what="validation loss",
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "model": model_ref,
        "adapter": adapter,
        "train_loss": final,
        "validation_loss_before": before,
        "validation_loss_after": after,
        "steps": int(trainer.state.global_step),
        "seconds_per_step": round(stats.seconds_per_step(), 4),
        "loss_curve": stats.curve,
    }


# ---- DPO --------------------------------------------------------------------------------


def dpo_records(
    rows: list[dict[str, Any]], tokenizer: Any, max_prompt_tokens: int
) -> list[dict[str, Any]]:
    """Preference rows → TRL's conversational preference records.

    The prompt (an Anthropic HH dialogue or plain text) becomes chat messages; its
    earliest turns are dropped while it is longer than ``max_prompt_tokens`` (so the
    answers, which carry the preference, are not cut off). ``chosen``/``rejected`` become
    one assistant message each.
    """
    records = []
    for row in rows:
        messages = hh_to_messages(row["prompt"])
        while len(messages) > 1:
            ids = tokenizer.apply_chat_template(messages, tokenize=True)
            if isinstance(ids, dict):
                ids = ids["input_ids"]
            if len(ids) <= max_prompt_tokens:
                break
            messages = messages[1:]
            while len(messages) > 1 and messages[0]["role"] != "user":
                messages = messages[1:]
        records.append(
            {
                "prompt": messages,
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}],
            }
        )
    return records


class PreferenceTune(Node):
    """Preference tuning with Direct Preference Optimization (DPO, Rafailov et al. 2023,
    arXiv:2305.18290) using TRL's DPOTrainer, with LoRA or full fine-tuning, on the CPU.

    Inputs: a model id and a preference dataset (prompt, chosen, rejected; Anthropic HH
    dialogues are turned into chat messages). 'beta' sets how far the policy may move from
    the reference model: 'same' is the base model itself (with LoRA, the model with its
    adapters switched off), or give another model id. Streams step/loss/ETA; cancellable
    between steps. Outputs the merged model, the adapter, losses, and the chosen-over-
    rejected reward margin (beta × log-ratio difference, as TRL logs it) and reward
    accuracy on the training pairs, before and after.
    """

    meta = NodeMeta(
        type="training/dpo",
        version="1.0.0",
        category="Training",
        title="Preference tuning (DPO)",
        heavy=True,
    )

    class Inputs(BaseModel):
        dataset: DatasetRef = Port(description="preference rows: prompt, chosen, rejected")
        model: str = Param(
            "local:smollm2",
            description="model to tune: local:smollm2, local:<name> or a Hugging Face directory",
            widget="model",
            model_task="chat",
            min_length=1,
        )
        reference: str = Param(
            "same",
            description="reference model: 'same' (the model before tuning) or a model id",
            min_length=1,
        )
        beta: float = Param(
            0.1, description="DPO beta: strength of the pull to the reference", ge=1e-4
        )
        method: Literal["lora", "full"] = Param("lora", description=LORA_HELP)
        lora_rank: int = Param(8, description="LoRA rank r", ge=1, le=256)
        lora_alpha: int = Param(16, description="LoRA scaling alpha (update × alpha/r)", ge=1)
        lora_dropout: float = Param(0.0, description="dropout on the LoRA path", ge=0, le=0.9)
        target_modules: str = Param(
            "all-linear",
            description="layers that get adapters: all-linear, or names like q_proj,v_proj",
        )
        epochs: float = Param(1.0, description="passes over the dataset", ge=0.01)
        max_steps: int = Param(0, description="stop after this many steps (0: use epochs)", ge=0)
        learning_rate: float = Param(5e-5, description="peak learning rate", ge=1e-8)
        batch_size: int = Param(2, description="pairs per step", ge=1, le=256)
        max_length: int = Param(512, description="tokens per prompt + answer", ge=32)
        margin_rows: int = Param(
            64, description="training pairs scored for the margin before/after (0: none)", ge=0
        )
        seed: int = Param(0, description="seed (same seed, same model)")
        name: str = Param("", description="output model name (empty: derived from the inputs)")

    class Outputs(BaseModel):
        model: str
        adapter: str
        train_loss: float
        reward_margin_before: float | None
        reward_margin_after: float | None
        reward_accuracy_before: float | None
        reward_accuracy_after: float | None
        steps: int
        seconds_per_step: float
        loss_curve: list[dict[str, float]]

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        rows = rows_of_shape(ctx, inputs.dataset, ("preference",), "Preference tuning")
        params = inputs.model_dump(exclude={"dataset", "name"})
        name = output_name(inputs.name, inputs.model, "dpo", params, inputs.dataset.id)
        result = await run_blocking(ctx, lambda: train_dpo(ctx, inputs, rows, name))
        return self.Outputs(**result)


def train_dpo(
    ctx: RunContext, inputs: PreferenceTune.Inputs, rows: list[dict[str, Any]], name: str
) -> dict[str, Any]:
    """The DPO node's work, in a worker thread; returns the node's outputs as a dict.

    Raises:
        RunCancelled: the run was cancelled (nothing saved).
        NodeError: the model has no chat template, or training diverged.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    from trl import DPOConfig, DPOTrainer

    datasets.disable_progress_bars()
    base = resolve_base(ctx, inputs.model)
    ctx.progress(None, f"loading {inputs.model}")
    _set_seed(inputs.seed)
    model, tokenizer = load_causal_lm(base)
    if not tokenizer.chat_template:
        raise NodeError(f"{inputs.model} has no chat template for the preference dialogues")
    ref_model = None
    if inputs.reference.strip() != "same":
        ref_model, _ = load_causal_lm(resolve_base(ctx, inputs.reference, "reference"))
    records = dpo_records(rows, tokenizer, inputs.max_length // 2)
    train_ds = datasets.Dataset.from_list(records)
    margin_ds = (
        datasets.Dataset.from_list(records[: inputs.margin_rows]) if inputs.margin_rows else None
    )
    stats = TrainingStats()
    workdir = _workdir(ctx, name)
    try:
        args = DPOConfig(
            **common_args(inputs, workdir),
            beta=inputs.beta,
            precompute_ref_log_probs=False,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=margin_ds,
            processing_class=tokenizer,
            peft_config=_lora_config(inputs) if inputs.method == "lora" else None,
            callbacks=[progress_callback(ctx, stats, "preference tuning")],
        )
        _quiet(trainer)
        measured = _train_and_save(
            ctx,
            trainer,
            stats,
            name,
            tokenizer,
            lora=inputs.method == "lora",
            measure=trainer.evaluate if margin_ds is not None else None,
            what="reward margin",
        )
        before, after, final, model_ref, adapter = measured
        before, after = before or {}, after or {}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "model": model_ref,
        "adapter": adapter,
        "train_loss": final,
        "reward_margin_before": _finite(before.get("eval_rewards/margins")),
        "reward_margin_after": _finite(after.get("eval_rewards/margins")),
        "reward_accuracy_before": _finite(before.get("eval_rewards/accuracies")),
        "reward_accuracy_after": _finite(after.get("eval_rewards/accuracies")),
        "steps": int(trainer.state.global_step),
        "seconds_per_step": round(stats.seconds_per_step(), 4),
        "loss_curve": stats.curve,
    }


NODES: tuple[type[Node], ...] = (FineTune, PreferenceTune)
