"""Fine-tuning overhead of the Fine-tune (SFT) node over TRL called directly.

    .venv/bin/python bench/training.py [--steps 6] [--batch 4] [--max-length 256] [--rounds 1]

LoRA SFT of the bundled SmolLM2 (r=8, alpha=16, all linear layers, lr 2e-4) on the seed
tasks (``../shared/fixtures/sft/seed_tasks.jsonl``), the same settings both ways, in this
one process:

- raw: ``trl.SFTTrainer`` on the unpacked model, the rows written by hand as
  conversational prompt/completion records, a callback that only records step times;
- node: the ``training/sft`` node run by the engine (Load Dataset → Fine-tune), which
  also streams progress events, checks for cancellation and saves the merged model.

Seconds per step leave out the first (warm-up) step: ``(t_last - t_first) / (steps - 1)``
over step end times. Each round runs raw then node; the table shows every round and the
median ratio node / raw (target ≤ 1.10). The node's whole wall time (loading, dataset
mapping, merge and save included) is shown beside it for information.

Then, if ``bench/quantize.py`` exists, it is run too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED_TASKS = ROOT.parent / "shared" / "fixtures" / "sft" / "seed_tasks.jsonl"


def per_step(ends: list[float]) -> float:
    """Seconds per step over step end times, leaving out the first step."""
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def raw_trl(base: Path, args: argparse.Namespace, workdir: Path) -> float:
    """Seconds per step of TRL's SFTTrainer called directly with the node's settings.

    The arguments, LoRA configuration and records come from the same functions the node
    uses (``common_args``, ``_lora_config``, ``sft_records``), so the two runs differ only
    by what the node adds around TRL: the engine, progress events and cancellation checks.
    """
    import datasets
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from nodes.training.models import load_causal_lm
    from nodes.training.tune import _lora_config, _quiet, _set_seed, common_args, sft_records

    inputs = SimpleNamespace(
        epochs=1.0,
        max_steps=args.steps,
        learning_rate=2e-4,
        batch_size=args.batch,
        max_length=args.max_length,
        seed=0,
        lora_rank=8,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules="all-linear",
    )
    rows = []
    for line in SEED_TASKS.read_text().splitlines():
        task = json.loads(line)
        for inst in task["instances"]:
            rows.append(
                {
                    "instruction": task["instruction"],
                    "input": inst["input"],
                    "output": inst["output"],
                }
            )
    _set_seed(0)
    model, tokenizer = load_causal_lm(base)
    ends: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())

    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**common_args(inputs, workdir)),
        train_dataset=datasets.Dataset.from_list(sft_records(rows)),
        processing_class=tokenizer,
        peft_config=_lora_config(inputs),
        callbacks=[Timer()],
    )
    _quiet(trainer)
    trainer.train()
    return per_step(ends)


def node_run(engine: Any, args: argparse.Namespace, name: str) -> tuple[float, float]:
    """``(seconds per step, whole wall seconds)`` of the SFT node in the engine."""
    from flowbuilder.builder import GraphBuilder

    b = GraphBuilder(engine.registry)
    data = b.add("training/load_dataset", path=str(SEED_TASKS))
    sft = b.add(
        "training/sft",
        max_steps=args.steps,
        batch_size=args.batch,
        max_length=args.max_length,
        learning_rate=2e-4,
        lora_rank=8,
        lora_alpha=16,
        lora_dropout=0.05,
        seed=0,
        name=name,
    )
    out = b.add("core/output", name="s")
    b.link(data, "dataset", sft, "dataset")
    b.link(sft, "seconds_per_step", out, "value")
    t0 = time.perf_counter()
    result = asyncio.run(engine.run(b.build(), {}, use_cache=False))
    wall = time.perf_counter() - t0
    if result.status != "finished":
        raise SystemExit(f"node run failed: {result.error}")
    return float(result.outputs["s"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per run (first is warm-up)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--skip-quantize", action="store_true")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3 (one warm-up step plus two timed)")

    import torch

    from flowbuilder.engine import Engine
    from flowbuilder.registry import default_registry
    from flowbuilder.settings import Settings

    with tempfile.TemporaryDirectory(prefix="fb-bench-train-") as tmp:
        home = Path(tmp) / "home"
        (home / "cache").mkdir(parents=True)
        shared = ROOT / ".pytest_cache" / "flowbuilder-train" / "hf"
        shared.mkdir(parents=True, exist_ok=True)
        (home / "cache" / "hf").symlink_to(shared, target_is_directory=True)
        os.environ["FLOWBUILDER_HOME"] = str(home)
        os.environ["FLOWBUILDER_FILE_ROOTS"] = str(SEED_TASKS.parent)
        engine = Engine(default_registry(), Settings.from_env())

        from nodes.training.models import resolve_base

        ctx = SimpleNamespace(settings=engine.settings, progress=lambda *a, **k: None)
        base = resolve_base(ctx, "local:smollm2")  # type: ignore[arg-type]

        print(f"torch threads: {torch.get_num_threads()}; cores: {os.cpu_count()}")
        print(
            f"LoRA SFT of SmolLM2 on seed tasks: {args.steps} steps "
            f"(first is warm-up), batch {args.batch}, max length {args.max_length}"
        )
        print(
            f"{'round':<7}{'raw TRL s/step':>16}{'node s/step':>14}{'ratio':>8}{'node wall s':>13}"
        )
        ratios = []
        for r in range(args.rounds):
            raw = raw_trl(base, args, Path(tmp) / f"raw{r}")
            node, wall = node_run(engine, args, f"bench-sft-{r}")
            ratios.append(node / raw)
            print(f"{r + 1:<7}{raw:>16.2f}{node:>14.2f}{node / raw:>8.3f}{wall:>13.1f}")
        ratio = statistics.median(ratios)
        print(f"node / raw TRL seconds per step (median): {ratio:.3f}  (target <= 1.10)")

    quantize = ROOT / "bench" / "quantize.py"
    if quantize.exists() and not args.skip_quantize:
        print(f"\n--- {quantize.relative_to(ROOT)} ---", flush=True)
        sys.argv = [str(quantize)]
        runpy.run_path(str(quantize), run_name="__main__")


if __name__ == "__main__":
    main()
