"""Knowledge-base ingest throughput and indexed query latency, each beside its baseline.

    .venv/bin/python bench/rag.py [--files N] [--chunks 100000] [--skip-ingest]

(a) Ingest: the PEP folder (``../shared/fixtures/rag/peps``, or its first ``--files``)
    through the Ingest node (load, split, embed through the provider interface, write to
    LanceDB), against sentence-transformers ``encode`` called directly on the very same
    chunk texts (batch 32, normalised, model already loaded). Reported in chunks/s and
    as the ratio node / raw encode. Target: ≥ 0.85.
(b) Query: a knowledge base of ``--chunks`` synthetic 384-d unit vectors (clustered, as
    real embeddings are: 1,000 centres plus noise), written through
    ``KnowledgeBase.write_documents`` so the store builds its ANN index itself once past
    ``INDEX_THRESHOLD``. 200 queries near stored vectors; latency p50/p99 of
    ``KnowledgeBase.search(k=10)`` and recall@10 of the indexed search against exact
    (flat) search on the same table. Targets: p50 ≤ 50 ms, recall@10 ≥ 0.95.

Everything runs on this machine, offline, in temporary directories.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.knowledge import INDEX_THRESHOLD, Chunk, Document, KnowledgeBases
from flowbuilder.registry import default_registry
from flowbuilder.settings import Settings
from nodes.rag.documents import find_documents, load_document, split_document

PEPS = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "rag" / "peps"


def bench_ingest(files: int | None) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    from flowbuilder.bundled import BUNDLED
    from flowbuilder.providers import EmbedRequest
    from flowbuilder.providers.local import LocalModels

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "peps"
        folder.mkdir()
        for path in sorted(PEPS.glob("*.rst"))[:files]:
            (folder / path.name).write_bytes(path.read_bytes())
        home = Path(tmp) / "home"
        engine = Engine(
            default_registry(),
            Settings.from_env(home=home, file_roots=(folder.resolve(),)),
        )
        # the same chunk texts the node embeds
        texts = [
            c.embedding_text()
            for p in find_documents(folder)
            for c in split_document(load_document(p))
        ]
        model = SentenceTransformer(
            str(BUNDLED["all-minilm-l6-v2"].path()), device="cpu", local_files_only=True
        )
        model.encode(texts[:64], batch_size=32)  # warm up both paths alike
        b = GraphBuilder(engine.registry)
        node = b.add("rag/ingest", path=str(folder), knowledge_base="bench")
        sink = b.add("core/output", name="summary")
        b.link(node, "summary", sink, "value")
        graph = b.build()
        # load the model into the engine's cache too, so neither side times a load
        LocalModels(engine.models).embed("all-minilm-l6-v2", EmbedRequest(texts=texts[:64]))

        start = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        raw_s = time.perf_counter() - start

        start = time.perf_counter()
        result = asyncio.run(engine.run(graph, {}, use_cache=False))
        node_s = time.perf_counter() - start
        assert result.status == "finished", result.error
        summary = result.outputs["summary"]
        assert summary["chunks"] == len(texts), (summary, len(texts))
    return {
        "files": summary["files"],
        "chunks": len(texts),
        "raw_s": raw_s,
        "node_s": node_s,
        "raw_cps": len(texts) / raw_s,
        "node_cps": len(texts) / node_s,
        "ratio": raw_s / node_s,
    }


def _clustered(n: int, dims: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    vecs = centres[picks] + rng.normal(0, 0.35 / np.sqrt(dims), (n, dims)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32)


def bench_query(n_chunks: int, dims: int = 384, queries: int = 200) -> dict[str, float]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (1000, dims)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = _clustered(n_chunks, dims, rng, centres)
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBases.at(Path(tmp) / "kb").create("synthetic", "bench:random", dims)
        per_doc, batch_docs = 100, 50
        start = time.perf_counter()
        for first in range(0, n_chunks, per_doc * batch_docs):
            items = []
            for d0 in range(first, min(first + per_doc * batch_docs, n_chunks), per_doc):
                source = f"/synthetic/doc{d0 // per_doc:05d}.txt"
                doc = Document(
                    source=source,
                    name=Path(source).name,
                    title="",
                    format="txt",
                    text="",
                    content_hash=f"{d0:064x}",
                )
                rows = range(d0, min(d0 + per_doc, n_chunks))
                chunks = [
                    Chunk(source=source, name=doc.name, text=f"chunk {i}", start=0, end=0)
                    for i in rows
                ]
                items.append((doc, chunks, data[d0 : d0 + len(chunks)].tolist()))
            kb.write_documents(items)
        write_s = time.perf_counter() - start
        info = kb.info()
        assert info.indexed, "no index was built"
        qs = data[rng.integers(0, n_chunks, queries)] + rng.normal(
            0, 0.2 / np.sqrt(dims), (queries, dims)
        ).astype(np.float32)
        kb.search(qs[0].tolist(), 10)  # open the index once
        latencies, recalls = [], []
        for q in qs:
            vector = q.tolist()
            t = time.perf_counter()
            hits = kb.search(vector, 10)
            latencies.append((time.perf_counter() - t) * 1000)
            exact = kb.search(vector, 10, exact=True)
            truth = {h.id for h in exact}
            recalls.append(len(truth & {h.id for h in hits}) / len(truth))
        exact_ms = []
        for q in qs[:50]:
            t = time.perf_counter()
            kb.search(q.tolist(), 10, exact=True)
            exact_ms.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    return {
        "chunks": info.chunks,
        "write_s": write_s,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
        "exact_p50_ms": statistics.median(exact_ms),
        "recall10": statistics.mean(recalls),
        "probes": kb.store._probes(),  # type: ignore[attr-defined]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=None, help="only the first N PEP files")
    parser.add_argument("--chunks", type=int, default=100_000, help="synthetic chunks")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-query", action="store_true")
    args = parser.parse_args()
    print(f"torch threads: {__import__('torch').get_num_threads()}; cores: {os.cpu_count()}")
    if not args.skip_ingest:
        r = bench_ingest(args.files)
        print(f"\n(a) ingest of {r['files']} PEP files, {r['chunks']} chunks")
        rows = [
            ("sentence-transformers encode", r["raw_s"], r["raw_cps"]),
            ("Ingest node (load+split+embed+write)", r["node_s"], r["node_cps"]),
        ]
        print(f"{'path':<38}{'seconds':>10}{'chunks/s':>10}")
        for label, secs, cps in rows:
            print(f"{label:<38}{secs:>10.1f}{cps:>10.1f}")
        print(f"ratio node / raw encode: {r['ratio']:.2f}  (target >= 0.85)")
    if not args.skip_query:
        q = bench_query(args.chunks)
        print(f"\n(b) query at {q['chunks']} chunks (index past {INDEX_THRESHOLD}), k=10")
        print(f"written in {q['write_s']:.1f} s; IVF_FLAT, {q['probes']} partitions probed")
        print(f"indexed  p50 {q['p50_ms']:.1f} ms   p99 {q['p99_ms']:.1f} ms  (target p50 <= 50)")
        print(f"exact    p50 {q['exact_p50_ms']:.1f} ms")
        print(f"recall@10 indexed vs exact: {q['recall10']:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
