"""The RAG node types (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.sdk import (
    BUNDLED,
    Chunk,
    Document,
    EmbedRequest,
    KnowledgeBase,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    content_hash,
    fingerprint_path,
    is_local,
)
from nodes.rag.documents import (
    LengthFn,
    find_documents,
    load_document,
    split_document,
    token_length,
)

DEFAULT_MODEL = "local:all-minilm-l6-v2"
KB_HELP = "name of the knowledge base"
LOCATION_HELP = (
    "where knowledge bases live: empty for the knowledge store (FLOWBUILDER_KNOWLEDGE_URI, "
    "else FLOWBUILDER_HOME/knowledge), or a folder nodes may use"
)
EMBED_GROUP = 256
"""Chunks embedded (and written) together during an ingest."""


def read_documents(ctx: RunContext, files: list[Path]) -> Iterator[tuple[Path, bytes]]:
    """Each found file with its bytes, read through the file-access policy (a link in the
    folder that leads out of every root is refused)."""
    for path in files:
        yield path, ctx.files.read_bytes(str(path), field="path")


async def embed_texts(
    ctx: RunContext,
    model: str,
    texts: Sequence[str],
    on_progress: Callable[[int, int], None] | None = None,
    credential: str | None = None,
) -> tuple[list[list[float]], int]:
    """Embed ``texts`` through the provider interface; returns vectors (in order) and
    their dimension. Texts are sent longest first so each batch pads little (what
    sentence-transformers' own ``encode`` does), then put back in order."""
    if not texts:
        return [], 0
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    request = EmbedRequest(
        texts=[texts[i] for i in order], normalize=True, credential=credential or None
    )
    result = await ctx.providers.embed(model, request, on_progress)
    vectors: list[list[float]] = [[] for _ in texts]
    for pos, i in enumerate(order):
        vectors[i] = result.vectors[pos]
    return vectors, result.dimensions or len(vectors[0])


def _length_fn(
    unit: str, tokenizer: str, ctx: RunContext | None = None, field: str = "tokenizer"
) -> LengthFn:
    """``len``, or a token counter with ``tokenizer``'s tokenizer (a path in it checked by
    ``ctx``'s file-access policy as the node's parameter ``field``; without ``ctx`` only a
    bundled model)."""
    if unit == "characters":
        return len
    name = tokenizer.removeprefix("local:")
    if ctx is not None:
        path = ctx.models.resolve(name, field=field).path
    elif name in BUNDLED:
        path = BUNDLED[name].path()
    else:
        raise NodeError(f"'{tokenizer}' is not a bundled model")
    file = path / "tokenizer.json" if path.is_dir() else None
    if file is None or not file.is_file():
        raise NodeError(
            f"'{tokenizer}' has no tokenizer.json to count tokens with; use a local "
            "sentence-transformers model (e.g. local:all-minilm-l6-v2) or unit 'characters'"
        )
    return token_length(file)


class LoadDocuments(Node):
    """Load a document, or every document in a folder: txt, md, rst, html, pdf.

    Outputs the documents (source path, file name, title, format, text, SHA-256 of the
    file) and how many there are. Folders are searched recursively; hidden files are
    skipped. Relative paths are in the workspace; raises FileAccessError for a path (or a
    file in the folder) the file-access policy refuses.
    """

    meta = NodeMeta(
        type="rag/load_documents", version="2.0.0", category="RAG", title="Load documents"
    )

    class Inputs(BaseModel):
        path: str = Param(description="a file or folder", widget="file", min_length=1)
        pattern: str = Param("", description="only files matching this glob (e.g. *.md)")
        recursive: bool = Param(True, description="search sub-folders too")

    class Outputs(BaseModel):
        documents: list[Document]
        count: int

    @classmethod
    def fingerprint(cls, params: dict[str, Any]) -> str | None:
        path = fingerprint_path(params.get("path"))
        if path is None:
            return None
        try:
            files = find_documents(path, recursive=bool(params.get("recursive", True)))
            return ";".join(f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in files)
        except (NodeError, OSError):
            return None

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        root = ctx.files.read_path(inputs.path, field="path")
        files = find_documents(root, recursive=inputs.recursive, pattern=inputs.pattern)
        docs = []
        for n, (path, data) in enumerate(read_documents(ctx, files), 1):
            docs.append(await ctx.to_thread(load_document, path, data))
            ctx.progress(n / len(files), f"{n}/{len(files)} files")
        return self.Outputs(documents=docs, count=len(docs))


class Split(Node):
    """Split documents into chunks, recursively, by characters or tokens, with overlap.

    Cuts at blank lines, then lines, sentences, words; with 'heading_aware' a Markdown
    or reStructuredText document is first cut at its headings. Each chunk keeps its
    source path, title, heading path and character offsets in the document.
    """

    meta = NodeMeta(type="rag/split", version="1.0.0", category="RAG", title="Split")

    class Inputs(BaseModel):
        documents: list[Document] = Port(description="documents from Load documents")
        chunk_size: int = Param(1000, description="most characters (or tokens) a chunk", ge=1)
        chunk_overlap: int = Param(100, description="shared between neighbours", ge=0)
        unit: Literal["characters", "tokens"] = Param("characters", description="what to count")
        heading_aware: bool = Param(True, description="never cross a Markdown/reST heading")
        tokenizer: str = Param(
            DEFAULT_MODEL, description="model whose tokenizer counts tokens (unit 'tokens')"
        )

    class Outputs(BaseModel):
        chunks: list[Chunk]
        count: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        length = _length_fn(inputs.unit, inputs.tokenizer, ctx, "tokenizer")
        chunks: list[Chunk] = []
        for doc in inputs.documents:
            chunks += split_document(
                doc,
                size=inputs.chunk_size,
                overlap=inputs.chunk_overlap,
                heading_aware=inputs.heading_aware,
                length=length,
            )
        return self.Outputs(chunks=chunks, count=len(chunks))


class EmbedChunks(Node):
    """Embed chunks with an embedding model: the bundled all-MiniLM-L6-v2 by default.

    Outputs the same chunks with 'vector' and 'model' set (vectors have unit length),
    and the dimension. With 'include_heading' the title and heading are embedded with
    the text, so a passage deep in a section still says what it is about.
    """

    meta = NodeMeta(
        type="rag/embed", version="1.0.0", category="RAG", title="Embed chunks", heavy=True
    )

    class Inputs(BaseModel):
        chunks: list[Chunk] = Port(description="chunks from Split")
        model: str = Param(
            DEFAULT_MODEL,
            description="embedding model (provider:model)",
            widget="model",
            model_task="embedding",
            min_length=1,
        )
        include_heading: bool = Param(True, description="embed title and heading too")
        credential: str = Param("", description="secret name for a remote provider")

    class Outputs(BaseModel):
        chunks: list[Chunk]
        dimensions: int

    @classmethod
    def is_heavy(cls, inputs: Any) -> bool:
        return is_local(inputs.model)

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        texts = [c.embedding_text() if inputs.include_heading else c.text for c in inputs.chunks]

        def on_progress(done: int, total: int) -> None:
            ctx.progress(done / total if total else 1.0, f"{done}/{total} chunks")

        vectors, dims = await embed_texts(
            ctx, inputs.model, texts, on_progress, inputs.credential or None
        )
        out = [
            c.model_copy(update={"vector": v, "model": inputs.model})
            for c, v in zip(inputs.chunks, vectors, strict=True)
        ]
        return self.Outputs(chunks=out, dimensions=dims)


def _open_or_create(
    ctx: RunContext, name: str, location: str, model: str, dims: int, create: bool
) -> KnowledgeBase:
    kbs = ctx.knowledge.bases(location)
    if kbs.exists(name):
        kb = kbs.open(name)
        kb.check_model(model, dims)
        return kb
    if not create:
        kbs.open(name)  # raises the "no such knowledge base" error
    return kbs.create(name, model, dims)


class WriteKnowledge(Node):
    """Write embedded chunks into a knowledge base (upsert by document).

    Chunks are grouped by source file; a document whose content hash is already in the
    knowledge base is skipped, a changed one has exactly its chunks replaced. Chunks
    must come from Embed with the knowledge base's model. Outputs counts.
    """

    meta = NodeMeta(
        type="rag/write",
        version="1.0.0",
        category="RAG",
        title="Write to knowledge base",
        deterministic=False,
    )

    class Inputs(BaseModel):
        chunks: list[Chunk] = Port(description="embedded chunks (from Embed chunks)")
        knowledge_base: str = Param(description=KB_HELP, min_length=1)
        create: bool = Param(True, description="create the knowledge base if it is missing")
        location: str = Param("", description=LOCATION_HELP)

    class Outputs(BaseModel):
        knowledge_base: str
        documents: int
        chunks_written: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        chunks = inputs.chunks
        if not chunks:
            return self.Outputs(knowledge_base=inputs.knowledge_base, documents=0, chunks_written=0)
        missing = [c for c in chunks if c.vector is None]
        if missing:
            raise NodeError(
                f"{len(missing)} chunk(s) have no vector (e.g. from {missing[0].name}): "
                "put an Embed chunks node before Write to knowledge base"
            )
        models = {c.model for c in chunks}
        if len(models) > 1:
            raise NodeError(f"chunks were embedded with different models: {sorted(models)}")
        model = models.pop()
        dims = len(chunks[0].vector or [])

        def write() -> tuple[int, int]:
            kb = _open_or_create(
                ctx, inputs.knowledge_base, inputs.location, model, dims, inputs.create
            )
            by_source: dict[str, list[Chunk]] = {}
            for c in chunks:
                by_source.setdefault(c.source, []).append(c)
            items = []
            for source, group in by_source.items():
                first = group[0]
                digest = first.content_hash or content_hash(
                    "\0".join(c.text for c in group).encode()
                )
                doc = Document(
                    source=source,
                    name=first.name,
                    title=first.title,
                    format="",
                    text="",
                    content_hash=digest,
                )
                items.append((doc, group, [c.vector or [] for c in group]))
            return len(items), kb.write_documents(items)

        docs, written = await ctx.to_thread(write)
        return self.Outputs(
            knowledge_base=inputs.knowledge_base, documents=docs, chunks_written=written
        )


class Retrieve(Node):
    """Find the chunks of a knowledge base closest to a query: top-k with scores.

    The query is embedded with the knowledge base's own model. 'filters' keeps chunks
    whose fields match ({"name": "pep-0008.rst"}, {"source": "*/guides/*"}, a list means
    any of); 'score_threshold' drops weak matches (cosine similarity); 'mmr' re-ranks
    for diversity (maximal marginal relevance).
    """

    meta = NodeMeta(
        type="rag/retrieve",
        version="1.0.0",
        category="RAG",
        title="Retrieve",
        deterministic=False,
    )

    class Inputs(BaseModel):
        query: str = Port(description="the question or search text")
        knowledge_base: str = Param(description=KB_HELP, min_length=1)
        top_k: int = Param(4, description="how many chunks", ge=1, le=100)
        filters: dict[str, Any] | None = Param(
            None, description="field → value (or list of values); * is a wildcard", widget="json"
        )
        score_threshold: float | None = Param(
            None, description="least cosine similarity to keep", ge=-1, le=1
        )
        mmr: bool = Param(False, description="diversify with maximal marginal relevance")
        mmr_lambda: float = Param(0.5, description="MMR: 1 = relevance only", ge=0, le=1)
        location: str = Param("", description=LOCATION_HELP)

    class Outputs(BaseModel):
        chunks: list[Chunk]
        count: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        if not inputs.query.strip():
            raise NodeError("the query is empty: connect a question")
        kb = await ctx.to_thread(ctx.knowledge.open, inputs.knowledge_base, inputs.location)
        vectors, _dims = await embed_texts(ctx, kb.model, [inputs.query])
        hits = await ctx.to_thread(
            kb.search,
            vectors[0],
            inputs.top_k,
            filters=inputs.filters,
            threshold=inputs.score_threshold,
            mmr=inputs.mmr,
            mmr_lambda=inputs.mmr_lambda,
        )
        hits = [h.model_copy(update={"vector": None}) for h in hits]
        return self.Outputs(chunks=hits, count=len(hits))


class FormatContext(Node):
    """Number retrieved chunks as passages for a prompt, with a list of citations.

    'context' reads "[1] (pep-0008.rst — Code Lay-out > Maximum Line Length)" then the
    passage; 'citations' lists each cited document once with the passage numbers
    ("[1][3] pep-0008.rst: PEP 8 – Style Guide for Python Code"); 'sources' gives the
    same as JSON ({"n", "name", "source", "title", "heading", "score"} per passage).
    """

    meta = NodeMeta(
        type="rag/format_context", version="1.0.0", category="RAG", title="Format context"
    )

    class Inputs(BaseModel):
        chunks: list[Chunk] = Port(description="chunks from Retrieve")
        max_characters: int = Param(
            6000, description="stop adding passages past this many characters", ge=100
        )

    class Outputs(BaseModel):
        context: str
        citations: str
        sources: list[dict[str, Any]]

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        passages: list[str] = []
        sources: list[dict[str, Any]] = []
        used = 0
        for n, chunk in enumerate(inputs.chunks, 1):
            where = " — ".join(p for p in (chunk.name, chunk.heading) if p)
            block = f"[{n}] ({where})\n{chunk.text.strip()}"
            if passages and used + len(block) > inputs.max_characters:
                break
            passages.append(block)
            used += len(block) + 2
            sources.append(
                {
                    "n": n,
                    "name": chunk.name,
                    "source": chunk.source,
                    "title": chunk.title,
                    "heading": chunk.heading,
                    "score": chunk.score,
                }
            )
        by_doc: dict[str, list[int]] = {}
        titles: dict[str, str] = {}
        for s in sources:
            by_doc.setdefault(s["name"], []).append(s["n"])
            titles[s["name"]] = s["title"]
        lines = []
        for name, numbers in by_doc.items():
            title = f": {titles[name]}" if titles[name] else ""
            lines.append("".join(f"[{n}]" for n in numbers) + f" {name}{title}")
        return self.Outputs(
            context="\n\n".join(passages), citations="\n".join(lines), sources=sources
        )


class Ingest(Node):
    """Load, split, embed and write a file or folder into a knowledge base, in one node.

    Incremental: a file whose content is unchanged since the last ingest is not read
    again; a changed file has exactly its chunks replaced; with 'prune', documents whose
    files are gone from the folder are removed. Progress shows files and chunks done.
    Outputs counts: files, added, updated, unchanged, removed, chunks. Relative paths are
    in the workspace; raises FileAccessError when the file-access policy refuses 'path',
    a file in it, or 'location'.
    """

    meta = NodeMeta(
        type="rag/ingest",
        version="2.0.0",
        category="RAG",
        title="Ingest",
        deterministic=False,
        heavy=True,
    )

    class Inputs(BaseModel):
        path: str = Param(description="a file or folder", widget="file", min_length=1)
        knowledge_base: str = Param(description=KB_HELP, min_length=1)
        model: str = Param(
            DEFAULT_MODEL,
            description="embedding model for a new knowledge base (an existing one keeps its own)",
            widget="model",
            model_task="embedding",
            min_length=1,
        )
        pattern: str = Param("", description="only files matching this glob (e.g. *.md)")
        chunk_size: int = Param(1000, description="most characters (or tokens) a chunk", ge=1)
        chunk_overlap: int = Param(100, description="shared between neighbours", ge=0)
        unit: Literal["characters", "tokens"] = Param("characters", description="what to count")
        heading_aware: bool = Param(True, description="never cross a Markdown/reST heading")
        prune: bool = Param(False, description="remove documents whose files are gone")
        location: str = Param("", description=LOCATION_HELP)

    class Outputs(BaseModel):
        knowledge_base: str
        summary: dict[str, int]

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        kbs = ctx.knowledge.bases(inputs.location)
        root = ctx.files.read_path(inputs.path, field="path")
        files = await ctx.to_thread(find_documents, root, pattern=inputs.pattern)
        kb: KnowledgeBase | None = None
        if await ctx.to_thread(kbs.exists, inputs.knowledge_base):
            kb = await ctx.to_thread(kbs.open, inputs.knowledge_base)
            if inputs.model not in (DEFAULT_MODEL, kb.model):
                kb.check_model(inputs.model)
        model = kb.model if kb is not None else inputs.model
        current = await ctx.to_thread(kb.documents) if kb is not None else {}
        length = _length_fn(inputs.unit, model if is_local(model) else DEFAULT_MODEL, ctx, "model")
        summary = {"files": len(files), "added": 0, "updated": 0, "unchanged": 0}
        summary.update(removed=0, chunks=0)
        pending: list[tuple[Document, list[Chunk]]] = []
        done_files = 0

        def report() -> None:
            ctx.progress(
                done_files / len(files) if files else 1.0,
                f"{done_files}/{len(files)} files, {summary['chunks']} chunks",
            )

        async def flush() -> None:
            nonlocal kb, pending, done_files
            if not pending:
                return
            texts = [c.embedding_text() for _, chunks in pending for c in chunks]
            vectors, dims = await embed_texts(ctx, model, texts)
            if kb is None:
                dims = dims or 1
                kb = await ctx.to_thread(kbs.create, inputs.knowledge_base, model, dims)
            items, pos = [], 0
            for doc, chunks in pending:
                items.append((doc, chunks, vectors[pos : pos + len(chunks)]))
                pos += len(chunks)
            summary["chunks"] += await ctx.to_thread(kb.write_documents, items)
            done_files += len(pending)
            pending = []
            report()

        group = 0
        for path in files:
            ctx.check_cancelled()
            resolved = str(path.resolve())
            data = await ctx.to_thread(ctx.files.read_bytes, str(path), field="path")
            digest = content_hash(data)
            old = current.get(resolved)
            if old is not None and old.content_hash == digest:
                summary["unchanged"] += 1
                done_files += 1
                continue
            doc = await ctx.to_thread(load_document, path, data)
            chunks = split_document(
                doc,
                size=inputs.chunk_size,
                overlap=inputs.chunk_overlap,
                heading_aware=inputs.heading_aware,
                length=length,
            )
            summary["updated" if old is not None else "added"] += 1
            pending.append((doc, chunks))
            group += len(chunks)
            if group >= EMBED_GROUP:
                await flush()
                group = 0
        await flush()
        if kb is None:  # nothing new and no knowledge base yet: create it empty
            _vecs, dims = await embed_texts(ctx, model, ["probe"])
            kb = await ctx.to_thread(kbs.create, inputs.knowledge_base, model, dims)
        if inputs.prune:
            present = {str(p.resolve()) for p in files}
            prefix = str(root.resolve())
            gone = [
                s
                for s in current
                if s not in present and (s == prefix or s.startswith(prefix.rstrip("/") + "/"))
            ]
            summary["removed"] = await ctx.to_thread(kb.remove_documents, gone)
        report()
        return self.Outputs(knowledge_base=inputs.knowledge_base, summary=summary)
