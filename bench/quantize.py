"""Post-training quantization of SmolLM2, every method side by side in one run.

    .venv/bin/python bench/quantize.py [--tokens 1024] [--decode 64] [--threads 0]
                                       [--methods gguf-q8_0,int8-weight-only,...]
                                       [--home DIR]

One graph, run by the engine: the bundled SmolLM2 unpacked to fp32 (the baseline,
transformers), then for each method a Quantize node (``training/quantize``) feeding an
Evaluate node (``training/evaluate``), all on the same text (the PEP 8 excerpt shipped in
``examples/``), and a Compare node (``training/compare``) making the table. The bundled
4-bit GGUF (Q4_1) is evaluated too, for reference. Heavy nodes run one at a time (the
engine's per-device limit), so no two measurements overlap. The table comes from a
Compare node fed the list of reports (its ``reports`` port) in a second, tiny graph.

Figures per model: size on disk (MB) and size reduction (fp32 size / size), decode
tokens/s (``--decode`` tokens generated greedily after a warm-up, timed from the first new
token to the last, best of three runs; GGUF on llama.cpp as the LLM node runs it, others
on transformers) and speed-up over fp32, time to first token (the prompt's processing),
perplexity on the first ``--tokens`` tokens (512-token windows, the same token ids on both
backends) and its change from fp32, load time. The Quantize node's own
perplexity before/after (its report) is shown beside Evaluate's, as a cross-check.

Issue 8's targets are checked at the end: GGUF q8_0 ≥ 3.5× smaller than fp32, decode
≥ 5× the fp32 transformers speed, perplexity within 1%; int8 weight-only ≥ 2× smaller,
perplexity within 1%.

``--threads N`` gives llama.cpp and torch the same number of threads; on a machine busy
with other work, ``--threads 1`` avoids both libraries' thread-barrier stalls and gives
steadier (if lower) figures.

``--home`` keeps the data directory (and the ~30 s fp32 unpacking of SmolLM2) between
runs; by default a temporary directory is used and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flowbuilder import events  # noqa: E402
from flowbuilder.builder import GraphBuilder  # noqa: E402
from flowbuilder.engine import Engine  # noqa: E402
from flowbuilder.registry import default_registry  # noqa: E402
from flowbuilder.settings import Settings  # noqa: E402
from nodes.training.evaluate import DECODE_PROMPT  # noqa: E402

METHODS = (
    "gguf-q8_0",
    "gguf-q4_k_m",
    "int8-weight-only",
    "int8-dynamic",
    "fp16",
    "bf16",
)
TEXT = ROOT / "examples" / "pep8_excerpt.txt"


def build(engine: Engine, methods: list[str], tokens: int, decode: int, threads: int) -> Any:
    """The measuring graph: outputs ``report_<i>`` (Evaluate reports: fp32, bundled
    GGUF, then one per method) and ``quantize_<i>`` (Quantize reports, per method)."""
    b = GraphBuilder(engine.registry, name="quantization benchmark")
    text = b.add("core/text", text=TEXT.read_text(encoding="utf-8"))
    measure = {
        "max_tokens": tokens,
        "window": 512,
        "decode_tokens": decode,
        "decode_repeats": 3,
        "threads": threads,
    }
    evaluations = [
        b.add(
            "training/evaluate",
            model="local:smollm2",
            backend="transformers",
            label="fp32",
            **measure,
        ),
        b.add("training/evaluate", model="local:smollm2", label="bundled Q4_1 GGUF", **measure),
    ]
    quantizers = {}
    for method in methods:
        q = b.add(
            "training/quantize",
            model="local:smollm2",
            method=method,
            eval_tokens=tokens,
            window=512,
        )
        b.link(text, "text", q, "text")
        ev = b.add("training/evaluate", label=method, **measure)
        b.link(q, "model", ev, "model")
        quantizers[method] = q
        evaluations.append(ev)
    for ev in evaluations:
        b.link(text, "text", ev, "text")
    outputs = {f"report_{i}": (ev, "report") for i, ev in enumerate(evaluations)}
    outputs |= {f"quantize_{i}": (q, "report") for i, q in enumerate(quantizers.values())}
    for name, (node, port) in outputs.items():
        sink = b.add("core/output", name=name)
        b.link(node, port, sink, "value")
    return b.build()


def llm_node_rate(engine: Engine, model: str, tokens: int, runs: int = 3) -> float | None:
    """Decode tokens/s of the LLM node itself (``llm/chat``, greedy) on a GGUF ``model``:
    llama.cpp streams a progress event per token (fewer only when a character spans
    tokens); the node's token count over the time from the first event to the last, best
    of ``runs`` runs after a warm-up; None when it never streams two tokens. (Transformers
    streams whole words, so this does not time it.)
    """
    b = GraphBuilder(engine.registry, name="LLM node decode")
    prompt = b.add("core/text", text=DECODE_PROMPT)
    llm = b.add("llm/chat", model=model, temperature=0.0, max_tokens=tokens)
    b.link(prompt, "text", llm, "prompt")
    sink = b.add("core/output", name="usage")
    b.link(llm, "usage", sink, "value")
    graph = b.build()
    best = None
    stamps: list[float] = []

    def listen(event: Any) -> None:
        if isinstance(event, events.NodeProgress) and event.delta:
            stamps.append(time.perf_counter())

    for run in range(runs + 1):
        stamps.clear()
        result = asyncio.run(engine.run(graph, {}, listeners=[listen], use_cache=False))
        if result.status != "finished":
            raise SystemExit(f"the LLM node on {model} failed: {result.error}")
        produced = result.outputs["usage"]["completion_tokens"]
        if run and len(stamps) > 1 and produced > 1:
            rate = (produced - 1) / (stamps[-1] - stamps[0])
            best = rate if best is None else max(best, rate)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="perplexity tokens")
    parser.add_argument("--decode", type=int, default=64, help="tokens generated for tokens/s")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads for llama.cpp and torch alike (0: one per core)",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--home", type=Path, default=None, help="data directory to keep")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        engine = Engine(default_registry(), Settings.from_env(home=home))
        graph = build(engine, methods, args.tokens, args.decode, args.threads)
        print(
            f"SmolLM2-135M, {len(methods)} methods; perplexity on {args.tokens} tokens of "
            f"PEP 8, {args.decode} decode tokens (best of 3); {os.cpu_count()} CPUs, "
            f"threads {args.threads or 'one per core'}; home {home}",
            flush=True,
        )
        started = time.perf_counter()

        def show(event: Any) -> None:
            if isinstance(event, events.NodeFinished):
                print(
                    f"  [{time.perf_counter() - started:6.0f} s] node {event.node_id} "
                    f"({event.node_type}) done",
                    flush=True,
                )

        result = asyncio.run(engine.run(graph, {}, listeners=[show], use_cache=False))
        if result.status != "finished":
            raise SystemExit(f"the benchmark graph failed: {result.error}")
        measured = result.outputs
        reports = [measured[f"report_{i}"] for i in range(len(methods) + 2)]
        # the table: a Compare node fed the list of reports
        b = GraphBuilder(engine.registry)
        given = b.add("core/input", name="reports", type="json")
        compare = b.add("training/compare", baseline="fp32")
        b.link(given, "value", compare, "reports")
        for port in ("table", "rows"):
            sink = b.add("core/output", name=port)
            b.link(compare, port, sink, "value")
        table = asyncio.run(engine.run(b.build(), {"reports": reports}))
        if table.status != "finished":
            raise SystemExit(f"the Compare graph failed: {table.error}")
        # the LLM node itself on the q8_0 GGUF
        in_node = None
        if "gguf-q8_0" in methods and args.decode > 1:
            q8_model = measured[f"quantize_{methods.index('gguf-q8_0')}"]["model"]
            in_node = llm_node_rate(engine, q8_model, args.decode)
    print(f"\nwall time {result.elapsed_s:.0f} s\n")
    print(table.outputs["table"])
    rows = {r["label"]: r for r in table.outputs["rows"]}
    print("load time (s): " + ", ".join(f"{r['label']} {r['load_s']:.2f}" for r in reports))
    print(
        "time to first token (ms): "
        + ", ".join(f"{r['label']} {r['ttft_s'] * 1000:.0f}" for r in reports if r.get("ttft_s"))
    )

    print("\nQuantize node's own check (perplexity before → after on the same text):")
    for i, method in enumerate(methods):
        q = measured[f"quantize_{i}"]
        ev = rows[method]
        print(
            f"  {method:18s} {q['perplexity_before']:8.3f} → {q['perplexity_after']:8.3f} "
            f"({q['perplexity_change_pct']:+.2f}%)   Evaluate: {ev['perplexity']:.3f}"
            f"{'   ' + q['warning'] if q['warning'] else ''}"
        )

    if in_node:
        print(
            f"\nLLM node (llm/chat, greedy) on GGUF q8_0: {in_node:.1f} tokens/s "
            "(streamed tokens timed first to last, best of 3)"
        )

    print("\nIssue 8 targets:")
    checks = []
    if "gguf-q8_0" in rows:
        q8 = rows["gguf-q8_0"]
        checks += [
            ("GGUF q8_0 ≥ 3.5× smaller than fp32", q8["size_x"], 3.5, "≥"),
            ("GGUF q8_0 decode ≥ 5× fp32 transformers", q8["speedup_x"], 5.0, "≥"),
            ("GGUF q8_0 perplexity within 1%", abs(q8["ppl_change_pct"]), 1.0, "≤"),
        ]
    if in_node and rows["fp32"]["tokens_per_s"]:
        checks.append(
            (
                "GGUF q8_0 decode in the LLM node ≥ 5× fp32 transformers",
                in_node / rows["fp32"]["tokens_per_s"],
                5.0,
                "≥",
            )
        )
    if "int8-weight-only" in rows:
        w8 = rows["int8-weight-only"]
        checks += [
            ("int8 weight-only ≥ 2× smaller", w8["size_x"], 2.0, "≥"),
            ("int8 weight-only perplexity within 1%", abs(w8["ppl_change_pct"]), 1.0, "≤"),
        ]
    for name, value, limit, op in checks:
        ok = value >= limit if op == "≥" else value <= limit
        print(f"  {'PASS' if ok else 'MISS'}  {name}: {value:.2f} ({op} {limit:g})")


if __name__ == "__main__":
    main()
