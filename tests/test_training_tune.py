"""Dataset nodes, Fine-tune (SFT) and Preference tuning (DPO) on the real bundled SmolLM2.

The dataset tests are fast. The training tests (``slow``) run a few steps each with short
rows; one fine-tuned model is shared by the tests that need one. The bundled GGUF is
unpacked for transformers once into ``.pytest_cache/flowbuilder-train/hf`` and reused by
later sessions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO

from flowbuilder import events
from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.registry import Registry, default_registry
from flowbuilder.scheduler import CancelToken
from flowbuilder.settings import Settings
from nodes.training.datasets import hh_to_messages

SEED_TASKS = FIXTURES / "sft" / "seed_tasks.jsonl"
HH = FIXTURES / "dpo" / "hh_harmless_test_300.jsonl"
# The CPU may be shared with other heavy jobs: a few training steps can then take minutes.
SLOW_TIMEOUT_S = 1800
SFT_OUTPUTS = (
    "model",
    "adapter",
    "train_loss",
    "validation_loss_before",
    "validation_loss_after",
    "steps",
    "seconds_per_step",
    "loss_curve",
)


def run_graph(
    engine: Engine,
    b: GraphBuilder,
    outputs: dict[str, tuple[int, str]],
    *,
    listeners: list[Any] | None = None,
    cancel: CancelToken | None = None,
) -> Any:
    for name, (node, port) in outputs.items():
        sink = b.add("core/output", name=name)
        b.link(node, port, sink, "value")
    return asyncio.run(engine.run(b.build(), {}, listeners=listeners, cancel=cancel))


def finished(result: Any) -> dict[str, Any]:
    assert result.status == "finished", result.error
    return dict(result.outputs)


def load(engine: Engine, path: Path, **params: Any) -> dict[str, Any]:
    b = GraphBuilder(engine.registry)
    node = b.add("training/load_dataset", path=str(path), **params)
    ports = ("dataset", "shape", "rows", "preview")
    return finished(run_graph(engine, b, {p: (node, p) for p in ports}))


def rows_of(engine: Engine, ref: Any) -> list[dict[str, Any]]:
    text = engine.artifacts.path(ref).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def data_engine(registry: Registry, home: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("FLOWBUILDER_FILE_ROOTS", f"{FIXTURES}:{home.parent}")
    return Engine(registry, Settings.from_env())


# ---- dataset nodes ----------------------------------------------------------------------


def test_seed_tasks_load_as_instruction_rows(data_engine: Engine) -> None:
    out = load(data_engine, SEED_TASKS)
    source = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()]
    assert out["shape"] == "instruction"
    assert out["rows"] == sum(len(task["instances"]) for task in source) == 175
    rows = rows_of(data_engine, out["dataset"])
    assert rows[0] == {
        "instruction": source[0]["instruction"],
        "input": source[0]["instances"][0]["input"],
        "output": source[0]["instances"][0]["output"],
    }
    assert out["preview"] == rows[:3]
    assert load(data_engine, SEED_TASKS, limit=10)["rows"] == 10


def test_hh_pairs_split_into_prompt_chosen_rejected(data_engine: Engine) -> None:
    out = load(data_engine, HH)
    assert (out["shape"], out["rows"]) == ("preference", 300)
    source = [json.loads(line) for line in HH.read_text().splitlines()]
    rows = rows_of(data_engine, out["dataset"])
    for src, row in zip(source, rows, strict=True):
        assert row["prompt"].startswith("\n\nHuman:")
        assert row["prompt"].endswith("\n\nAssistant:")
        # the prompt is shared; each answer is what follows it (one leading space dropped)
        assert src["chosen"].startswith(row["prompt"]) and src["rejected"].startswith(row["prompt"])
        assert src["chosen"][len(row["prompt"]) :].lstrip(" ") == row["chosen"]
        assert src["rejected"][len(row["prompt"]) :].lstrip(" ") == row["rejected"]
        assert "\n\nHuman:" not in row["chosen"] and row["chosen"] != row["rejected"]
        # the prompt is the longest shared prefix ending in an assistant turn
        a, b = row["chosen"], row["rejected"]
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
        assert "\n\nAssistant:" not in a[:same]
        # DPO turns the shared dialogue into alternating chat turns ending with the user
        turns = hh_to_messages(row["prompt"])
        assert turns[0]["role"] == turns[-1]["role"] == "user"
        assert all(x["role"] != y["role"] for x, y in itertools.pairwise(turns))


def test_bad_rows_are_named(data_engine: Engine, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    rows = [{"instruction": "Say hi", "output": "hi"}] * 2 + [{"instruction": "Say bye"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = GraphBuilder(data_engine.registry)
    node = b.add("training/load_dataset", path=str(bad))
    result = run_graph(data_engine, b, {"rows": (node, "rows")})
    assert result.status == "failed"
    assert "row 3: field 'output' is missing" in (result.error or "")

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": oops}\n')
    b = GraphBuilder(data_engine.registry)
    node = b.add("training/load_dataset", path=str(broken))
    result = run_graph(data_engine, b, {"rows": (node, "rows")})
    assert "broken.jsonl, line 2: not valid JSON" in (result.error or "")

    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    b = GraphBuilder(data_engine.registry)
    node = b.add("training/load_dataset", path=str(chat))
    result = run_graph(data_engine, b, {"rows": (node, "rows")})
    assert "row 1, message 1: 'role' must be one of system, user, assistant" in (result.error or "")


def test_csv_and_parquet_with_column_mapping(data_engine: Engine, tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {"question": ["2+2?", "Capital of France?"], "answer": ["4", "Paris"], "n": [1, 2]}
    )
    frame.to_csv(tmp_path / "qa.csv", index=False)
    frame.to_parquet(tmp_path / "qa.parquet")
    for name in ("qa.csv", "qa.parquet"):
        out = load(
            data_engine,
            tmp_path / name,
            shape="instruction",
            instruction_field="question",
            output_field="answer",
        )
        assert out["rows"] == 2
        assert rows_of(data_engine, out["dataset"]) == [
            {"instruction": "2+2?", "input": "", "output": "4"},
            {"instruction": "Capital of France?", "input": "", "output": "Paris"},
        ]
    prefs = pd.DataFrame({"prompt": ["Hi"], "chosen": ["Hello!"], "rejected": ["Go away."]})
    prefs.to_parquet(tmp_path / "prefs.parquet")
    out = load(data_engine, tmp_path / "prefs.parquet")
    assert out["shape"] == "preference" and out["preview"][0]["chosen"] == "Hello!"


def test_split_is_seeded_and_complete(data_engine: Engine) -> None:
    def split(seed: int) -> dict[str, Any]:
        b = GraphBuilder(data_engine.registry)
        node = b.add("training/load_dataset", path=str(SEED_TASKS))
        s = b.add("training/split", validation_fraction=0.2, seed=seed)
        b.link(node, "dataset", s, "dataset")
        ports = ("train", "validation", "train_rows", "validation_rows")
        return finished(run_graph(data_engine, b, {p: (s, p) for p in ports}))

    first, again, other = split(1), split(1), split(2)
    assert (first["train_rows"], first["validation_rows"]) == (140, 35)
    assert first["validation"] == again["validation"]
    assert first["validation"] != other["validation"]
    train = rows_of(data_engine, first["train"])
    val = rows_of(data_engine, first["validation"])
    everything = rows_of(data_engine, load(data_engine, SEED_TASKS)["dataset"])
    key = json.dumps
    assert sorted(map(key, train + val)) == sorted(map(key, everything))


# ---- training (real SmolLM2) --------------------------------------------------------------


@pytest.fixture(scope="module")
def train_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine with its own data directory whose unpacked-model cache is shared across
    sessions (``.pytest_cache/flowbuilder-train/hf``)."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("train") / "home"
    shared = REPO / ".pytest_cache" / "flowbuilder-train" / "hf"
    shared.mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "hf").symlink_to(shared, target_is_directory=True)
    mp.setenv("FLOWBUILDER_HOME", str(home))
    mp.setenv("FLOWBUILDER_FILE_ROOTS", f"{FIXTURES}:{home.parent}")
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield Engine(default_registry(), Settings.from_env())
    mp.undo()


@pytest.fixture(scope="module")
def sft_run(train_engine: Engine) -> dict[str, Any]:
    """One LoRA fine-tune on the seed tasks (5 steps, batch 2, 96 tokens), validated on a
    held-out split of 5 rows; also records the progress metrics it streamed."""
    metrics: list[dict[str, Any]] = []

    def listen(event: Any) -> None:
        if isinstance(event, events.NodeProgress) and event.metrics:
            metrics.append(dict(event.metrics))

    b = GraphBuilder(train_engine.registry)
    data = b.add("training/load_dataset", path=str(SEED_TASKS))
    split = b.add("training/split", validation_fraction=0.03, seed=0)
    sft = b.add(
        "training/sft",
        max_steps=5,
        batch_size=2,
        max_length=96,
        learning_rate=5e-4,
        name="seed-sft",
    )
    b.link(data, "dataset", split, "dataset")
    b.link(split, "train", sft, "dataset")
    b.link(split, "validation", sft, "validation")
    out = finished(
        run_graph(train_engine, b, {p: (sft, p) for p in SFT_OUTPUTS}, listeners=[listen])
    )
    return {**out, "metrics": metrics}


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
def test_sft_lowers_validation_loss(train_engine: Engine, sft_run: dict[str, Any]) -> None:
    assert sft_run["model"] == "local:seed-sft"
    assert sft_run["steps"] == 5
    assert sft_run["validation_loss_after"] < sft_run["validation_loss_before"]
    assert [p["step"] for p in sft_run["loss_curve"]] == [1, 2, 3, 4, 5]
    assert sft_run["train_loss"] == sft_run["loss_curve"][-1]["loss"]
    assert sft_run["seconds_per_step"] > 0
    # the live loss curve: one progress event per step with the agreed metrics
    steps = [m for m in sft_run["metrics"] if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5]
    assert set(steps[0]) == {"step", "loss", "eta_s", "epoch"}
    assert steps[-1]["eta_s"] == 0
    models = train_engine.settings.home / "models"
    assert (models / "seed-sft" / "config.json").is_file()
    assert (models / "seed-sft-lora" / "adapter_config.json").is_file()
    assert sft_run["adapter"] == str(models / "seed-sft-lora")
    assert not list((train_engine.settings.home / "cache" / "train").iterdir())


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
def test_merged_model_reloads_and_chats(train_engine: Engine, sft_run: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = train_engine.settings.home / "models" / "seed-sft"
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert not any("lora" in n for n, _ in model.named_parameters())
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.isfinite(model(ids).logits).all()

    b = GraphBuilder(train_engine.registry)
    prompt = b.add("core/text", text="Give me a synonym for 'happy'.")
    chat = b.add("llm/chat", model=sft_run["model"], max_tokens=8, temperature=0.0)
    b.link(prompt, "text", chat, "prompt")
    out = finished(run_graph(train_engine, b, {"text": (chat, "text"), "usage": (chat, "usage")}))
    assert out["text"].strip()
    assert 0 < out["usage"]["completion_tokens"] <= 8


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
def test_dpo_raises_reward_margin(train_engine: Engine) -> None:
    pairs = [json.loads(line) for line in HH.read_text().splitlines()]
    pairs.sort(key=lambda r: len(r["chosen"]) + len(r["rejected"]))
    small = train_engine.settings.home.parent / "hh4.jsonl"  # inside the allowed folders
    small.write_text("".join(json.dumps(r) + "\n" for r in pairs[:4]))
    b = GraphBuilder(train_engine.registry)
    data = b.add("training/load_dataset", path=str(small))
    dpo = b.add(
        "training/dpo",
        max_steps=2,
        batch_size=2,
        max_length=128,
        learning_rate=5e-4,
        margin_rows=4,
        name="hh-dpo",
    )
    b.link(data, "dataset", dpo, "dataset")
    ports = ("model", "reward_margin_before", "reward_margin_after", "reward_accuracy_after")
    out = finished(run_graph(train_engine, b, {p: (dpo, p) for p in (*ports, "steps")}))
    assert out["model"] == "local:hh-dpo" and out["steps"] == 2
    # the reference is the model before tuning, so the margin starts at zero
    assert out["reward_margin_before"] == pytest.approx(0.0, abs=1e-6)
    assert out["reward_margin_after"] > out["reward_margin_before"] + 0.05
    assert out["reward_accuracy_after"] >= 0.5
    assert (train_engine.settings.home / "models" / "hh-dpo" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT_S)
def test_cancelled_fine_tune_stops_within_a_step(
    train_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowbuilder.node.training/sft")
    token = CancelToken()
    seen: dict[str, float] = {}

    def listen(event: Any) -> None:
        if isinstance(event, events.NodeProgress) and event.metrics and "cancel" not in seen:
            seen["cancel"] = event.metrics["step"]  # the last step known done when cancelling
            token.cancel()

    b = GraphBuilder(train_engine.registry)
    data = b.add("training/load_dataset", path=str(SEED_TASKS))
    sft = b.add("training/sft", max_steps=50, batch_size=2, max_length=64, name="stopped-sft")
    b.link(data, "dataset", sft, "dataset")
    result = run_graph(train_engine, b, {"model": (sft, "model")}, listeners=[listen], cancel=token)
    assert result.status == "cancelled"
    # the run ends only once training has stopped (the node waits for its worker thread):
    # at most the step in flight when the run was cancelled completed
    stops = [r.getMessage() for r in caplog.records if "stopped after step" in r.getMessage()]
    assert len(stops) == 1, stops
    stopped_at = int(stops[0].rsplit(" ", 1)[1])
    assert seen["cancel"] <= stopped_at <= seen["cancel"] + 1
    home = train_engine.settings.home
    models = home / "models"
    assert not (models / "stopped-sft").exists()
    assert not (models / "stopped-sft-lora").exists()
    assert not list(models.glob(".*"))  # no temporary model directories either
    assert not list((home / "cache" / "train").iterdir())
