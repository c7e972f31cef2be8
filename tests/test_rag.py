"""Knowledge bases, loaders, splitter and the RAG nodes (fast: small inputs).

The store tests use deterministic synthetic vectors; the node tests embed a handful of
chunks with the bundled all-MiniLM-L6-v2.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.knowledge import (
    Chunk,
    Document,
    KnowledgeBases,
    KnowledgeError,
    build_filter,
    content_hash,
)
from flowbuilder.registry import Registry
from flowbuilder.settings import Settings
from nodes.rag.documents import (
    find_documents,
    html_to_text,
    load_document,
    sections,
    split_document,
)

DIM = 8


def vec(text: str) -> list[float]:
    """A deterministic unit vector for a text (same text, same vector)."""
    raw = hashlib.sha256(text.encode()).digest()[:DIM]
    v = [b - 127.5 for b in raw]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def doc(source: str, text: str) -> Document:
    return Document(
        source=source,
        name=Path(source).name,
        title=Path(source).stem,
        format="md",
        text=text,
        content_hash=content_hash(text.encode()),
    )


def item(d: Document) -> tuple[Document, list[Chunk], list[list[float]]]:
    chunks = split_document(d, size=60, overlap=0)
    return d, chunks, [vec(c.text) for c in chunks]


@pytest.fixture
def kbs(tmp_path: Path) -> KnowledgeBases:
    return KnowledgeBases.at(tmp_path / "kb")


# ---- loading and splitting --------------------------------------------------------------


def test_split_offsets_headings_and_overlap() -> None:
    text = (
        "Intro line.\n\n# Setup\n\nInstall it. " + "Words go here. " * 30 + "\n\n## Linux\n\n"
        "Use apt.\n\n# Usage\n\nRun it."
    )
    d = doc("/x/guide.md", text)
    chunks = split_document(d, size=120, overlap=30)
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert len(c.text) <= 120
    headings = [c.heading for c in chunks]
    assert headings[0] == ""
    assert "Setup" in headings and "Setup > Linux" in headings and "Usage" in headings
    setup = [c for c in chunks if c.heading == "Setup"]
    assert len(setup) > 2
    assert any(a.end > b.start for a, b in itertools.pairwise(setup))  # overlap
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_rst_sections_and_title(tmp_path: Path) -> None:
    text = (
        "PEP: 9\nTitle: A Sample\n\n========\nOverview\n========\n\nFirst.\n\n"
        "Details\n-------\n\nSecond part.\n\nMore\n----\n\nThird.\n"
    )
    path = tmp_path / "sample.rst"
    path.write_text(text)
    d = load_document(path)
    assert d.title == "A Sample" and d.format == "rst"
    heads = [s.heading for s in sections(d.text, "rst")]
    assert heads == ["", "Overview", "Overview > Details", "Overview > More"]
    chunks = split_document(d, size=200, overlap=0)
    assert [c.heading for c in chunks if "Third" in c.text] == ["Overview > More"]


def test_split_by_tokens(registry: Registry) -> None:
    from nodes.rag.nodes import _length_fn

    count = _length_fn("tokens", "local:all-minilm-l6-v2")
    d = doc("/x/a.txt", "tokenisation " * 400)
    chunks = split_document(d, size=64, overlap=8, length=count)
    assert len(chunks) > 5
    assert all(count(c.text) <= 64 for c in chunks)


def test_html_and_pdf_loading(tmp_path: Path) -> None:
    text, title = html_to_text(
        "<html><head><title>Doc</title><style>p{}</style></head><body><h1>Top</h1>"
        "<p>Hello &amp; welcome.</p><script>var x;</script></body></html>"
    )
    assert title == "Doc" and "Hello & welcome." in text and "var x" not in text
    assert "# Top" in text

    from pypdf import PdfWriter

    pdf = tmp_path / "blank.pdf"
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Title": "Blank"})
    with pdf.open("wb") as fh:
        writer.write(fh)
    d = load_document(pdf)
    assert d.format == "pdf" and d.title == "Blank" and d.text == ""


def test_find_documents_skips_hidden_and_unknown(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "b.bin").write_bytes(b"\0")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.md").write_text("# C")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.txt").write_text("d")
    assert [p.name for p in find_documents(tmp_path)] == ["a.md", "d.txt"]
    assert [p.name for p in find_documents(tmp_path, pattern="*.md")] == ["a.md"]


# ---- the store ---------------------------------------------------------------------------


def test_create_list_delete(kbs: KnowledgeBases) -> None:
    kbs.create("docs", "test:hash", DIM)
    with pytest.raises(KnowledgeError, match="already exists"):
        kbs.create("docs", "test:hash", DIM)
    with pytest.raises(KnowledgeError, match="not a valid knowledge base name"):
        kbs.create("bad name!", "test:hash", DIM)
    assert [i.name for i in kbs.list()] == ["docs"]
    kbs.delete("docs")
    assert kbs.list() == []
    with pytest.raises(KnowledgeError, match="no knowledge base named 'docs'"):
        kbs.open("docs")


def test_incremental_write(kbs: KnowledgeBases) -> None:
    kb = kbs.create("docs", "test:hash", DIM)
    a = doc("/d/a.md", "# A\n\n" + "alpha text. " * 20)
    b = doc("/d/b.md", "# B\n\n" + "beta text. " * 20)
    written = kb.write_documents([item(a), item(b)])
    assert written == kb.info().chunks > 2
    before = kb.store.chunk_keys()

    # unchanged: nothing written, nothing touched
    version = kb.store.chunks.version  # type: ignore[attr-defined]
    assert kb.write_documents([item(a), item(b)]) == 0
    assert kb.store.chunks.version == version  # type: ignore[attr-defined]

    # changed: exactly its chunks replaced
    a2 = doc("/d/a.md", "# A\n\nshorter alpha.")
    assert kb.write_documents([item(a2)]) == 1
    keys = kb.store.chunk_keys()
    assert ("/d/a.md", a2.content_hash) in keys and ("/d/a.md", a.content_hash) not in keys
    assert {k for k in keys if k[0] == "/d/b.md"} == {k for k in before if k[0] == "/d/b.md"}
    assert kb.documents()["/d/a.md"].chunks == 1
    hits = kb.search(vec("# A\n\nshorter alpha."), 3)
    assert hits[0].text == "# A\n\nshorter alpha." and hits[0].score == pytest.approx(1.0, abs=1e-4)

    # deleted: removed with its chunks
    assert kb.remove_documents(["/d/b.md", "/d/missing.md"]) == 1
    assert {k[0] for k in kb.store.chunk_keys()} == {"/d/a.md"}
    assert kb.info().documents == 1 and kb.info().last_ingest_at is not None


def test_interrupted_write_leaves_kb_consistent(kbs: KnowledgeBases) -> None:
    kb = kbs.create("docs", "test:hash", DIM)
    a = doc("/d/a.md", "# A\n\nthe old text of a.")
    kb.write_documents([item(a)])
    # a crash after a changed file's chunks went in but before its manifest row flipped,
    # and a crash in the middle of a new file: chunks without a manifest row
    a2 = doc("/d/a.md", "# A\n\nthe new text of a.")
    c = doc("/d/c.md", "# C\n\nhalf written c.")
    for d in (a2, c):
        _d, chunks, vectors = item(d)
        kb.store.add_chunks(
            [ch.model_copy(update={"id": f"x{i}"}) for i, ch in enumerate(chunks)], vectors
        )
    reopened = kbs.open("docs")
    hits = reopened.search(vec("half written c."), 5)
    assert all(h.source == "/d/a.md" and "old" in h.text for h in hits)
    assert reopened.documents()["/d/a.md"].content_hash == a.content_hash
    # the next writer drops the orphans, and the re-ingest writes the new version
    assert reopened.write_documents([item(a2)]) == 1
    assert reopened.store.chunk_keys() == {("/d/a.md", a2.content_hash)}


def test_wrong_model_and_dimension_refused(kbs: KnowledgeBases) -> None:
    kb = kbs.create("docs", "local:all-minilm-l6-v2", DIM)
    with pytest.raises(KnowledgeError, match="vectors of 'openai:text-embedding-3-small'"):
        kb.check_model("openai:text-embedding-3-small")
    d = doc("/d/a.md", "text")
    with pytest.raises(KnowledgeError, match="8-dimensional"):
        kb.write_documents([(d, split_document(d), [[0.1] * 3])])
    with pytest.raises(KnowledgeError, match="8-dimensional"):
        kb.search([0.1] * 3)


def test_filters_threshold_and_mmr(kbs: KnowledgeBases) -> None:
    kb = kbs.create("docs", "test:hash", 2)
    d1, d2 = doc("/d/one.md", "one"), doc("/d/two.md", "two")
    c1 = split_document(d1)[0]
    c2 = split_document(d2)[0]
    near = [1.0, 0.0]
    kb.write_documents(
        [
            (d1, [c1, c1.model_copy(update={"index": 1})], [near, near]),
            (d2, [c2], [[0.8, 0.6]]),
        ]
    )
    assert [h.name for h in kb.search(near, 2)] == ["one.md", "one.md"]
    assert [h.name for h in kb.search(near, 2, mmr=True, mmr_lambda=0.3)] == ["one.md", "two.md"]
    assert [h.name for h in kb.search(near, 5, filters={"name": "two*"})] == ["two.md"]
    assert [h.name for h in kb.search(near, 5, filters={"name": ["two.md"]})] == ["two.md"]
    assert len(kb.search(near, 5, threshold=0.9)) == 2
    with pytest.raises(KnowledgeError, match="cannot filter on 'colour'"):
        build_filter({"colour": "red"})
    assert build_filter({"title": "it's"}) == "(`title` = 'it''s')"


# ---- the nodes (real embedding model) ---------------------------------------------------


def _run(engine: Engine, builder: GraphBuilder, outputs: dict[str, tuple[int, str]]) -> Any:
    for name, (node, port) in outputs.items():
        sink = builder.add("core/output", name=name)
        builder.link(node, port, sink, "value")
    result = asyncio.run(engine.run(builder.build(), {}))
    assert result.status == "finished", result.error
    return result.outputs


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "cats.md").write_text(
        "# Cats\n\nCats purr and sleep most of the day.\n\n## Food\n\nCats eat fish."
    )
    (folder / "rockets.txt").write_text("Rockets burn fuel to reach orbit around the Earth.")
    return folder


def test_pipeline_nodes_and_ingest(
    registry: Registry, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setenv("FLOWBUILDER_FILE_ROOTS", str(tmp_path))
    engine = Engine(registry, Settings.from_env())

    # Load → Split → Embed → Write
    b = GraphBuilder(registry)
    load = b.add("rag/load_documents", path=str(folder))
    split = b.add("rag/split", chunk_size=200, chunk_overlap=20)
    embed = b.add("rag/embed")
    write = b.add("rag/write", knowledge_base="pets")
    b.link(load, "documents", split, "documents")
    b.link(split, "chunks", embed, "chunks")
    b.link(embed, "chunks", write, "chunks")
    out = _run(engine, b, {"n": (write, "chunks_written")})
    assert out["n"] == 3

    # Retrieve → Format context
    b = GraphBuilder(registry)
    q = b.add("core/text", text="What do cats eat?")
    r = b.add("rag/retrieve", knowledge_base="pets", top_k=2)
    f = b.add("rag/format_context")
    b.link(q, "text", r, "query")
    b.link(r, "chunks", f, "chunks")
    out = _run(engine, b, {"context": (f, "context"), "sources": (f, "sources")})
    assert out["context"].startswith("[1] (cats.md — Cats > Food)\n## Food\n\nCats eat fish.")
    assert out["sources"][0]["heading"] == "Cats > Food" and out["sources"][0]["score"] > 0.5

    # Ingest into another knowledge base: progress, then incremental re-ingest
    def ingest(**params: Any) -> dict[str, int]:
        b = GraphBuilder(registry)
        node = b.add("rag/ingest", path=str(folder), knowledge_base="pets2", **params)
        return dict(_run(engine, b, {"s": (node, "summary")})["s"])

    first = ingest()
    assert first == {"files": 2, "added": 2, "updated": 0, "unchanged": 0, "removed": 0} | {
        "chunks": 3
    }
    assert ingest()["chunks"] == 0
    (folder / "rockets.txt").write_text("Rockets need oxygen and fuel.")
    (folder / "cats.md").unlink()
    again = ingest(prune=True)
    assert (again["updated"], again["removed"], again["chunks"]) == (1, 1, 1)
    kb = KnowledgeBases.from_settings(engine.settings).open("pets2")
    assert [d.name for d in kb.documents().values()] == ["rockets.txt"]


def test_nodes_report_user_errors(registry: Registry, home: Path, tmp_path: Path) -> None:
    engine = Engine(registry, Settings.from_env())
    b = GraphBuilder(registry)
    q = b.add("core/text", text="hello")
    r = b.add("rag/retrieve", knowledge_base="nothing")
    b.link(q, "text", r, "query")
    sink = b.add("core/output", name="c")
    b.link(r, "chunks", sink, "value")
    result = asyncio.run(engine.run(b.build(), {}))
    assert result.status == "failed"
    assert "no knowledge base named 'nothing'" in (result.error or "")

    b = GraphBuilder(registry)
    node = b.add("rag/load_documents", path="/etc")
    sink = b.add("core/output", name="d")
    b.link(node, "documents", sink, "value")
    result = asyncio.run(engine.run(b.build(), {}))
    assert "field 'path': '/etc' is outside every folder nodes may use" in (result.error or "")


def test_cli_kb(home: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    exe = str(Path(sys.executable).parent / "flowbuilder")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, "kb", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )

    proc = cli("ingest", "notes", str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == 2
    proc = cli("list", "--json")
    [info] = json.loads(proc.stdout)
    assert (info["name"], info["documents"], info["chunks"]) == ("notes", 2, 3)
    assert cli("delete", "notes", "--yes").returncode == 0
    bad = cli("delete", "notes", "--yes")
    assert bad.returncode == 1 and "no knowledge base named 'notes'" in bad.stderr
