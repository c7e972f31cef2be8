"""RAG nodes: load documents, split, embed, write to a knowledge base, retrieve, cite.

A knowledge base (:mod:`flowbuilder.knowledge`) is named by a parameter, so a flow
that answers questions (Retrieve → Format context → LLM) and the flow or command that
fills it (Ingest, or Load → Split → Embed → Write) share it by name.
"""

from __future__ import annotations

from flowbuilder.sdk import Registry
from nodes.rag.nodes import (
    EmbedChunks,
    FormatContext,
    Ingest,
    LoadDocuments,
    Retrieve,
    Split,
    WriteKnowledge,
)

NODES = (LoadDocuments, Split, EmbedChunks, WriteKnowledge, Retrieve, FormatContext, Ingest)


def register(registry: Registry) -> None:
    """Add the RAG nodes to ``registry``."""
    for cls in NODES:
        registry.register(cls)
