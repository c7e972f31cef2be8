"""Knowledge bases: named, persistent stores of embedded chunks for retrieval (RAG).

A knowledge base holds chunks of documents with their embedding vectors, a manifest of
the documents it holds (one row per source file: content hash, title, chunk count) and
the embedding model that made its vectors. It refuses vectors of another model or
dimension, so a query is always compared with vectors of the same model.

Storage is a :class:`VectorStore` behind a :class:`StoreBackend`; the default backend is
LanceDB (:class:`LanceBackend`), in ``FLOWBUILDER_HOME/knowledge`` or at any LanceDB URI
(``FLOWBUILDER_KNOWLEDGE_URI``: a directory, ``s3://bucket/prefix``, ``gs://…``).
One LanceDB database holds every knowledge base: a registry table ``knowledge_bases``
and, per base, tables ``<name>__chunks`` and ``<name>__documents``.

Consistency without transactions across tables: a document's chunks are written first
and its manifest row last, one commit each. A chunk whose ``(source, content_hash)`` has
no manifest row is an orphan of an interrupted write: readers skip it and the next
writer deletes it (:meth:`KnowledgeBase.repair`). A changed file's new chunks go in,
then its manifest row flips to the new hash, then the old chunks are deleted — at every
point a reader sees exactly one version of each document.

Past :data:`INDEX_THRESHOLD` chunks an approximate nearest-neighbour index (IVF_FLAT,
cosine) is built automatically; below it, search is exact (a flat scan of a few
thousand vectors takes milliseconds).

    kbs = KnowledgeBases.from_settings(settings)
    kb = kbs.create("peps", model="local:all-minilm-l6-v2", dimensions=384)
    kb.write_documents([(doc, chunks, vectors)])
    hits = kb.search(query_vector, k=5)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from flowbuilder.errors import NodeError

if TYPE_CHECKING:
    from flowbuilder.engine import Engine
    from flowbuilder.settings import Settings

INDEX_THRESHOLD = 50_000
"""Chunks past which an ANN index is built (a flat cosine scan of 100k × 384 vectors
takes ~185 ms on 2 cores, see NOTES; below 50k it stays under ~90 ms)."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
FILTER_FIELDS = ("source", "name", "title", "heading", "content_hash")
"""Chunk fields a metadata filter may name."""


class KnowledgeError(NodeError):
    """A problem a user can fix: unknown knowledge base, wrong model, bad filter, …"""


class Document(BaseModel):
    """A loaded document: its text and where it came from.

    ``source`` is the absolute path (the document's key in a knowledge base), ``name``
    the file name, ``title`` the first heading (or a ``Title:`` header, or the file
    stem), ``format`` one of txt, md, rst, html, pdf, and ``content_hash`` the SHA-256 of
    the file's bytes.
    """

    source: str
    name: str
    title: str
    format: str
    text: str
    content_hash: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunk(BaseModel):
    """A piece of a document, the unit that is embedded and retrieved.

    ``start``/``end`` are character offsets into the document's text
    (``text == document.text[start:end]``); ``heading`` is the section path
    ("Code Lay-out > Maximum Line Length"), empty before the first heading; ``index``
    is the chunk's position in its document. ``vector`` is filled in by Embed;
    ``score`` by Retrieve (cosine similarity, higher is closer).
    """

    id: str = ""
    source: str
    name: str
    title: str = ""
    heading: str = ""
    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    index: int = Field(0, ge=0)
    content_hash: str = ""
    vector: list[float] | None = None
    model: str = ""
    score: float | None = None

    def embedding_text(self) -> str:
        """The text to embed: title and heading first, so a passage deep in a section
        still carries what it is about."""
        head = " — ".join(p for p in (self.title, self.heading) if p)
        return f"{head}\n{self.text}" if head else self.text


class DocumentRecord(BaseModel):
    """A knowledge base's manifest row for one document."""

    source: str
    name: str
    title: str
    content_hash: str
    chunks: int
    ingested_at: float


class KnowledgeBaseInfo(BaseModel):
    """What ``kb list`` and the knowledge page show about one knowledge base."""

    name: str
    model: str
    dimensions: int
    created_at: float
    last_ingest_at: float | None = None
    documents: int = 0
    chunks: int = 0
    indexed: bool = False
    uri: str = ""


def content_hash(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 hex characters."""
    return hashlib.sha256(data).hexdigest()


def chunk_id(source: str, digest: str, index: int) -> str:
    """A stable id for the ``index``-th chunk of a document version."""
    return hashlib.sha1(f"{source}\0{digest}\0{index}".encode()).hexdigest()[:24]


def _check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or "") or "__" in name:
        raise KnowledgeError(
            f"'{name}' is not a valid knowledge base name: use letters, digits, '_', '-' "
            "and '.', up to 63 characters, starting with a letter or digit (no '__')"
        )
    return name


# ---- the storage interface --------------------------------------------------------------


@dataclass
class StoredChunk:
    """A chunk row as a store returns it from a search; ``distance`` is cosine distance."""

    chunk: Chunk
    distance: float
    vector: list[float]


class VectorStore(ABC):
    """The storage of one knowledge base: chunk rows with vectors, and the manifest.

    A backend implements these; :class:`KnowledgeBase` adds the rules (model checks,
    write order, orphan repair, MMR) on top, so every backend behaves the same.
    """

    @abstractmethod
    def add_chunks(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        """Append chunk rows (one commit)."""

    @abstractmethod
    def delete_chunks(self, where: str) -> None:
        """Delete the chunk rows matching a filter (SQL over chunk fields)."""

    @abstractmethod
    def count_chunks(self) -> int: ...

    @abstractmethod
    def chunk_keys(self) -> set[tuple[str, str]]:
        """Every distinct ``(source, content_hash)`` among the chunk rows."""

    @abstractmethod
    def put_records(self, records: Sequence[DocumentRecord]) -> None:
        """Insert or replace manifest rows by ``source`` (one commit)."""

    @abstractmethod
    def delete_records(self, sources: Sequence[str]) -> None: ...

    @abstractmethod
    def records(self) -> list[DocumentRecord]: ...

    def manifest_total(self) -> int:
        """How many chunks the manifest rows account for (equal to :meth:`count_chunks`
        unless a write was interrupted or is under way)."""
        return sum(r.chunks for r in self.records())

    @abstractmethod
    def search(
        self, vector: Sequence[float], k: int, where: str | None, *, exact: bool = False
    ) -> list[StoredChunk]:
        """The ``k`` nearest chunks by cosine distance, optionally filtered."""

    @abstractmethod
    def maintain(self, threshold: int) -> None:
        """Build (or bring up to date) the ANN index once past ``threshold`` chunks."""

    @abstractmethod
    def indexed(self) -> bool: ...


class StoreBackend(ABC):
    """A place that holds named knowledge bases (e.g. one LanceDB database)."""

    uri: str

    @abstractmethod
    def list_meta(self) -> list[dict[str, Any]]:
        """Registry rows: name, model, dimensions, created_at, last_ingest_at."""

    @abstractmethod
    def put_meta(self, meta: dict[str, Any]) -> None: ...

    @abstractmethod
    def drop(self, name: str) -> None:
        """Delete a knowledge base's tables and registry row."""

    @abstractmethod
    def open_store(self, name: str, dimensions: int, *, create: bool) -> VectorStore: ...


# ---- LanceDB ---------------------------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceStore(VectorStore):
    """One knowledge base in LanceDB: tables ``<name>__chunks`` and ``<name>__documents``."""

    def __init__(self, db: Any, name: str, dimensions: int, *, create: bool) -> None:
        import pyarrow as pa

        self.dimensions = dimensions
        self._pa = pa
        chunk_schema = pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("source", pa.string()),
                pa.field("name", pa.string()),
                pa.field("title", pa.string()),
                pa.field("heading", pa.string()),
                pa.field("text", pa.string()),
                pa.field("start", pa.int64()),
                pa.field("end", pa.int64()),
                pa.field("index", pa.int64()),
                pa.field("content_hash", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), dimensions)),
            ]
        )
        doc_schema = pa.schema(
            [
                pa.field("source", pa.string()),
                pa.field("name", pa.string()),
                pa.field("title", pa.string()),
                pa.field("content_hash", pa.string()),
                pa.field("chunks", pa.int64()),
                pa.field("ingested_at", pa.float64()),
            ]
        )
        self._chunk_schema, self._doc_schema = chunk_schema, doc_schema
        self._nprobes: int | None = None
        self._total: tuple[int, int] | None = None
        if create:
            self.chunks = db.create_table(f"{name}__chunks", schema=chunk_schema, exist_ok=True)
            self.docs = db.create_table(f"{name}__documents", schema=doc_schema, exist_ok=True)
        else:
            self.chunks = db.open_table(f"{name}__chunks")
            self.docs = db.open_table(f"{name}__documents")

    def add_chunks(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        if not chunks:
            return
        pa = self._pa
        columns: dict[str, Any] = {
            f: [getattr(c, f) for c in chunks]
            for f in (
                "id",
                "source",
                "name",
                "title",
                "heading",
                "text",
                "start",
                "end",
                "index",
                "content_hash",
            )
        }
        flat = pa.array(
            [float(x) for v in vectors for x in v], type=pa.float32()
        )  # one contiguous buffer
        columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, self.dimensions)
        self.chunks.add(pa.table(columns, schema=self._chunk_schema))

    def delete_chunks(self, where: str) -> None:
        self.chunks.delete(where)

    def count_chunks(self) -> int:
        return int(self.chunks.count_rows())

    def chunk_keys(self) -> set[tuple[str, str]]:
        table = self.chunks.search().select(["source", "content_hash"]).limit(None).to_arrow()
        return set(zip(table["source"].to_pylist(), table["content_hash"].to_pylist(), strict=True))

    def put_records(self, records: Sequence[DocumentRecord]) -> None:
        if not records:
            return
        table = self._pa.Table.from_pylist([r.model_dump() for r in records], self._doc_schema)
        (
            self.docs.merge_insert("source")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(table)
        )

    def delete_records(self, sources: Sequence[str]) -> None:
        for start in range(0, len(sources), 500):
            part = sources[start : start + 500]
            self.docs.delete(f"source IN ({', '.join(_quote(s) for s in part)})")

    def manifest_total(self) -> int:
        import pyarrow.compute as pc

        version = self.docs.version
        if self._total is None or self._total[0] != version:
            column = self.docs.to_arrow()["chunks"]
            self._total = (version, int(pc.sum(column).as_py() or 0))
        return self._total[1]

    def records(self) -> list[DocumentRecord]:
        rows = self.docs.to_arrow().to_pylist()
        return [DocumentRecord.model_validate(r) for r in rows]

    def search(
        self, vector: Sequence[float], k: int, where: str | None, *, exact: bool = False
    ) -> list[StoredChunk]:
        query = self.chunks.search(list(vector)).distance_type("cosine").limit(k)
        if where:
            query = query.where(where, prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        else:
            probes = self._probes()
            if probes:
                query = query.nprobes(probes)
        rows = query.to_arrow().to_pylist()
        out = []
        for row in rows:
            distance = float(row.pop("_distance"))
            vec = row.pop("vector")
            out.append(StoredChunk(Chunk.model_validate(row), distance, list(vec)))
        return out

    def _probes(self) -> int:
        """IVF partitions to probe: ~10% of the ~sqrt(rows) partitions (at least 20), so
        a query reads about a tenth of the vectors; bench/rag.py measures the recall@10
        this gives at 100k chunks. 0 (no index) means a flat search."""
        if self._nprobes is None:
            self._nprobes = (
                max(20, int(math.sqrt(self.count_chunks())) // 10) if self.indexed() else 0
            )
        return self._nprobes

    def indexed(self) -> bool:
        return any(i.columns == ["vector"] for i in self.chunks.list_indices())

    def maintain(self, threshold: int) -> None:
        count = self.count_chunks()
        if count < threshold:
            return
        indices = self.chunks.list_indices()
        if not indices:
            self.chunks.create_index(
                metric="cosine",
                index_type="IVF_FLAT",
                num_partitions=max(1, int(math.sqrt(count))),
                vector_column_name="vector",
            )
        else:
            stats = self.chunks.index_stats(indices[0].name)
            unindexed = int(getattr(stats, "num_unindexed_rows", 0) or 0)
            if unindexed > count // 10:
                # a full rebuild: lance's incremental update adds a delta segment with
                # few partitions, which later queries scan nearly flat
                self.chunks.optimize()  # compacts the small fragments of many writes
                self.chunks.create_index(
                    metric="cosine",
                    index_type="IVF_FLAT",
                    num_partitions=max(1, int(math.sqrt(count))),
                    vector_column_name="vector",
                    replace=True,
                )
        self._nprobes = None


class LanceBackend(StoreBackend):
    """Knowledge bases in one LanceDB database at ``uri`` (a directory or object store)."""

    REGISTRY = "knowledge_bases"

    def __init__(self, uri: str) -> None:
        import lancedb
        import pyarrow as pa

        self.uri = uri
        if "://" not in uri:
            Path(uri).mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(uri)
        self._schema = pa.schema(
            [
                pa.field("name", pa.string()),
                pa.field("model", pa.string()),
                pa.field("dimensions", pa.int64()),
                pa.field("created_at", pa.float64()),
                pa.field("last_ingest_at", pa.float64()),
            ]
        )
        self._pa = pa

    def _registry(self) -> Any:
        return self.db.create_table(self.REGISTRY, schema=self._schema, exist_ok=True)

    def list_meta(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._registry().to_arrow().to_pylist()
        return sorted(rows, key=lambda r: r["name"])

    def put_meta(self, meta: dict[str, Any]) -> None:
        table = self._pa.Table.from_pylist([meta], self._schema)
        (
            self._registry()
            .merge_insert("name")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(table)
        )

    def drop(self, name: str) -> None:
        for suffix in ("__chunks", "__documents"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.db.drop_table(f"{name}{suffix}")
        self._registry().delete(f"name = {_quote(name)}")

    def open_store(self, name: str, dimensions: int, *, create: bool) -> VectorStore:
        return LanceStore(self.db, name, dimensions, create=create)


# ---- knowledge bases -------------------------------------------------------------------


def _mmr(query: list[float], candidates: list[StoredChunk], k: int, lam: float) -> list[int]:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998): pick ``k`` candidates
    trading similarity to the query (weight ``lam``) against similarity to those already
    picked. Returns indices into ``candidates``."""
    import numpy as np

    vecs = np.asarray([c.vector for c in candidates], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
    q = np.asarray(query, dtype=np.float32)
    q /= np.linalg.norm(q) + 1e-12
    relevance = vecs @ q
    chosen: list[int] = []
    best_sim = np.full(len(candidates), -np.inf, dtype=np.float32)
    while len(chosen) < min(k, len(candidates)):
        redundancy = np.where(np.isinf(best_sim), 0.0, best_sim)
        scores = lam * relevance - (1 - lam) * redundancy
        scores[chosen] = -np.inf
        pick = int(np.argmax(scores))
        chosen.append(pick)
        best_sim = np.maximum(best_sim, vecs @ vecs[pick])
    return chosen


def build_filter(filters: dict[str, Any] | None) -> str | None:
    """A store filter from ``{"field": value}`` pairs (all must hold).

    A value is a string (equality; ``*`` and ``?`` are wildcards) or a list of strings
    (any of them). Fields: source, name, title, heading, content_hash.

    Raises:
        KnowledgeError: an unknown field or a value that is not text.
    """
    if not filters:
        return None
    clauses = []
    for field, value in filters.items():
        if field not in FILTER_FIELDS:
            raise KnowledgeError(
                f"cannot filter on '{field}': filters may name {', '.join(FILTER_FIELDS)}"
            )
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            raise KnowledgeError(
                f"filter '{field}' needs text or a list of texts, not {json.dumps(value)}"
            )
        parts = []
        for v in values:
            if "*" in v or "?" in v:
                pattern = v.replace("%", r"\%").replace("_", r"\_")
                pattern = pattern.replace("*", "%").replace("?", "_")
                parts.append(f"`{field}` LIKE {_quote(pattern)}")
            else:
                parts.append(f"`{field}` = {_quote(v)}")
        clauses.append("(" + " OR ".join(parts) + ")")
    return " AND ".join(clauses)


class KnowledgeBase:
    """One knowledge base: its model, documents and chunks.

    Writers (:meth:`write_documents`, :meth:`remove_documents`) first drop orphan
    chunks left by an interrupted write. One writer at a time per knowledge base.
    """

    def __init__(self, backend: StoreBackend, meta: dict[str, Any], store: VectorStore) -> None:
        self.backend, self.meta, self.store = backend, meta, store

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def model(self) -> str:
        return str(self.meta["model"])

    @property
    def dimensions(self) -> int:
        return int(self.meta["dimensions"])

    def info(self) -> KnowledgeBaseInfo:
        records = self.store.records()
        return KnowledgeBaseInfo(
            name=self.name,
            model=self.model,
            dimensions=self.dimensions,
            created_at=self.meta["created_at"],
            last_ingest_at=self.meta.get("last_ingest_at"),
            documents=len(records),
            chunks=self.store.count_chunks(),
            indexed=self.store.indexed(),
            uri=self.backend.uri,
        )

    def documents(self) -> dict[str, DocumentRecord]:
        """Manifest rows by source."""
        return {r.source: r for r in self.store.records()}

    def check_model(self, model: str, dimensions: int | None = None) -> None:
        """Refuse vectors of another model or dimension.

        Raises:
            KnowledgeError: naming both models.
        """
        if model and model != self.model:
            raise KnowledgeError(
                f"knowledge base '{self.name}' holds vectors of '{self.model}'; vectors of "
                f"'{model}' cannot be mixed in (compare only like with like): embed with "
                f"'{self.model}', or create another knowledge base for '{model}'"
            )
        if dimensions is not None and dimensions != self.dimensions:
            raise KnowledgeError(
                f"knowledge base '{self.name}' holds {self.dimensions}-dimensional vectors "
                f"of '{self.model}'; these have {dimensions} dimensions"
            )

    def repair(self) -> int:
        """Delete orphan chunks (no manifest row for their source and hash) and chunks of
        superseded versions; returns how many document versions were dropped."""
        records = {(r.source, r.content_hash) for r in self.store.records()}
        total = sum(r.chunks for r in self.store.records())
        if self.store.count_chunks() == total:
            return 0
        orphans = self.store.chunk_keys() - records
        for source, digest in orphans:
            self.store.delete_chunks(
                f"source = {_quote(source)} AND content_hash = {_quote(digest)}"
            )
        return len(orphans)

    def write_documents(
        self, items: Sequence[tuple[Document, Sequence[Chunk], Sequence[Sequence[float]]]]
    ) -> int:
        """Upsert documents with their chunks and vectors; returns chunks written.

        A document whose content hash matches its manifest row is skipped. Chunks go in
        first, the manifest rows last; then the chunks of replaced versions are deleted.

        Raises:
            KnowledgeError: vectors of the wrong dimension, or chunks and vectors of
                different lengths.
        """
        self.repair()
        current = self.documents()
        fresh = [
            (doc, chunks, vectors)
            for doc, chunks, vectors in items
            if doc.source not in current or current[doc.source].content_hash != doc.content_hash
        ]
        if not fresh:
            return 0
        all_chunks: list[Chunk] = []
        all_vectors: list[Sequence[float]] = []
        now = time.time()
        records = []
        for doc, chunks, vectors in fresh:
            if len(chunks) != len(vectors):
                raise KnowledgeError(f"{doc.name}: {len(chunks)} chunks but {len(vectors)} vectors")
            for vector in vectors:
                if len(vector) != self.dimensions:
                    self.check_model("", len(vector))
            for i, chunk in enumerate(chunks):
                update = {"content_hash": doc.content_hash, "index": i}
                if not chunk.id:
                    update["id"] = chunk_id(doc.source, doc.content_hash, i)
                all_chunks.append(chunk.model_copy(update=update))
            all_vectors.extend(vectors)
            records.append(
                DocumentRecord(
                    source=doc.source,
                    name=doc.name,
                    title=doc.title,
                    content_hash=doc.content_hash,
                    chunks=len(chunks),
                    ingested_at=now,
                )
            )
        self.store.add_chunks(all_chunks, all_vectors)
        self.store.put_records(records)
        for doc, _chunks, _vectors in fresh:
            old = current.get(doc.source)
            if old is not None:
                self.store.delete_chunks(
                    f"source = {_quote(doc.source)} AND content_hash = {_quote(old.content_hash)}"
                )
        self.store.maintain(INDEX_THRESHOLD)
        self.touch()
        return len(all_chunks)

    def remove_documents(self, sources: Iterable[str]) -> int:
        """Remove documents (by source) and their chunks; returns how many were held."""
        self.repair()
        current = self.documents()
        present = [s for s in sources if s in current]
        if not present:
            return 0
        self.store.delete_records(present)  # manifest first: their chunks become orphans
        for start in range(0, len(present), 200):
            part = present[start : start + 200]
            self.store.delete_chunks(f"source IN ({', '.join(_quote(s) for s in part)})")
        self.touch()
        return len(present)

    def touch(self) -> None:
        """Record an ingest now."""
        self.meta = {**self.meta, "last_ingest_at": time.time()}
        self.backend.put_meta(self.meta)

    def search(
        self,
        vector: Sequence[float],
        k: int = 5,
        *,
        filters: dict[str, Any] | None = None,
        threshold: float | None = None,
        mmr: bool = False,
        mmr_lambda: float = 0.5,
        exact: bool = False,
    ) -> list[Chunk]:
        """The ``k`` chunks closest to ``vector`` (cosine), best first, with ``score``.

        ``threshold`` drops chunks whose cosine similarity is below it; ``mmr`` re-ranks
        ``4k`` candidates for diversity (``mmr_lambda`` 1 = relevance only).

        Raises:
            KnowledgeError: a query vector of the wrong dimension, or a bad filter.
        """
        self.check_model("", len(vector))
        where = build_filter(filters)
        consistent = self.store.count_chunks() == self.store.manifest_total()
        fetch = max(k * 4, 20) if mmr else k
        if not consistent:
            fetch *= 2  # some rows may be orphans of an interrupted write
        rows = self.store.search(vector, fetch, where, exact=exact)
        if not consistent:
            live = {(r.source, r.content_hash) for r in self.store.records()}
            rows = [r for r in rows if (r.chunk.source, r.chunk.content_hash) in live]
        if threshold is not None:
            rows = [r for r in rows if 1.0 - r.distance >= threshold]
        if mmr and rows:
            rows = [rows[i] for i in _mmr(list(vector), rows, k, mmr_lambda)]
        return [
            r.chunk.model_copy(update={"score": round(1.0 - r.distance, 6), "model": self.model})
            for r in rows[:k]
        ]


class KnowledgeBases:
    """The named knowledge bases in one place (a :class:`StoreBackend`)."""

    def __init__(self, backend: StoreBackend) -> None:
        self.backend = backend

    @classmethod
    def at(cls, uri: str | os.PathLike[str]) -> KnowledgeBases:
        """Knowledge bases in the LanceDB database at ``uri``."""
        return cls(LanceBackend(str(uri)))

    @classmethod
    def from_settings(cls, settings: Settings, uri: str = "") -> KnowledgeBases:
        """``uri``, else ``FLOWBUILDER_KNOWLEDGE_URI``, else ``FLOWBUILDER_HOME/knowledge``."""
        location = uri or settings.knowledge_uri
        return cls.at(location or settings.home / "knowledge")

    def _meta(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.backend.list_meta() if m["name"] == name), None)

    def names(self) -> list[str]:
        return [m["name"] for m in self.backend.list_meta()]

    def list(self) -> list[KnowledgeBaseInfo]:
        """Every knowledge base with its counts, by name."""
        return [self.open(m["name"]).info() for m in self.backend.list_meta()]

    def exists(self, name: str) -> bool:
        return self._meta(name) is not None

    def create(self, name: str, model: str, dimensions: int) -> KnowledgeBase:
        """Create an empty knowledge base for vectors of ``model``.

        Raises:
            KnowledgeError: a bad name, or one already taken.
        """
        _check_name(name)
        if self.exists(name):
            raise KnowledgeError(f"a knowledge base named '{name}' already exists")
        if dimensions < 1:
            raise KnowledgeError(f"dimensions must be at least 1, not {dimensions}")
        meta = {
            "name": name,
            "model": model,
            "dimensions": int(dimensions),
            "created_at": time.time(),
            "last_ingest_at": None,
        }
        store = self.backend.open_store(name, dimensions, create=True)
        self.backend.put_meta(meta)
        return KnowledgeBase(self.backend, meta, store)

    def open(self, name: str) -> KnowledgeBase:
        """Raises: KnowledgeError naming the knowledge bases there are."""
        meta = self._meta(name)
        if meta is None:
            known = ", ".join(self.names()) or "none yet"
            raise KnowledgeError(
                f"no knowledge base named '{name}' (there are: {known}); create it with "
                f"`flowbuilder kb create {name}` or ingest into it with "
                f"`flowbuilder kb ingest {name} FOLDER`"
            )
        store = self.backend.open_store(name, int(meta["dimensions"]), create=True)
        return KnowledgeBase(self.backend, meta, store)

    def delete(self, name: str) -> None:
        """Raises: KnowledgeError when there is no such knowledge base."""
        self.open(name)
        self.backend.drop(name)


async def embedding_dimensions(engine: Engine, model: str) -> int:
    """The dimension of ``model``'s vectors, found by embedding one word with it.

    Raises:
        NodeError: an unknown model or provider, or one without embeddings.
    """
    from flowbuilder.providers import CallContext, EmbedRequest

    caller = CallContext(
        engine.settings, engine.models, node_id="knowledge", title="knowledge/probe"
    )
    provider, name = engine.providers.resolve_embedder(model)
    result = await provider.embed(caller, name, EmbedRequest(texts=["probe"]))
    return result.dimensions or len(result.vectors[0])


def format_time(ts: float | None) -> str:
    """A timestamp as local ``YYYY-MM-DD HH:MM``, or "never"."""
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M")
