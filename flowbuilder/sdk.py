"""The public API for node packs: everything a node author imports from flowbuilder.

Node packs — the built-in ones in ``nodes/`` included — import the engine only from
here; ``make lint`` checks it (import-linter, ``[tool.importlinter]`` in pyproject.toml).
What is not in ``__all__`` is the engine's own and may change in any release.

:data:`SDK_VERSION` is a semantic version of this module's names and of the run
context's services (``ctx.models``, ``ctx.providers``, ``ctx.knowledge``, ``ctx.files``,
``ctx.artifacts``): the major number changes when a name is removed or changes in a way
that breaks a pack, the minor number when names or parameters are added, the patch
number for fixes. A pack can refuse to load on an SDK it was not written for::

    from flowbuilder.sdk import SDK_VERSION
    assert SDK_VERSION.split(".")[0] == "1"

A node, the way the built-in packs write them::

    from pydantic import BaseModel
    from flowbuilder.sdk import Node, NodeMeta, Param, Port, Registry, RunContext

    class Shout(Node):
        meta = NodeMeta(type="demo/shout", version="1.0.0", category="Text")

        class Inputs(BaseModel):
            text: str = Port(description="what to shout")

        class Outputs(BaseModel):
            text: str

        async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
            return self.Outputs(text=inputs.text.upper())

    def register(registry: Registry) -> None:
        registry.register(Shout)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flowbuilder.context import RunContext
from flowbuilder.errors import FlowbuilderError, NodeError, RetryableError, RunCancelled
from flowbuilder.files import FileAccessError, NodeFiles, fingerprint_path
from flowbuilder.limits import lone_surrogate
from flowbuilder.models import LoadedModel
from flowbuilder.node import Node, NodeMeta, Param, Port, file_fingerprint
from flowbuilder.providers import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    EmbeddingResult,
    EmbedRequest,
    StructuredResult,
    Usage,
    is_local,
    is_remote,
    split_model_id,
)
from flowbuilder.registry import Registry
from flowbuilder.services.artifacts import ArtifactService
from flowbuilder.services.knowledge import KnowledgeService
from flowbuilder.services.models import ModelService, fingerprint_model
from flowbuilder.services.providers import ProviderService
from flowbuilder.settings import Settings
from flowbuilder.types import (
    ArtifactRef,
    AudioRef,
    DatasetRef,
    DocumentRef,
    ImageRef,
    JSONValue,
    ModelRef,
    to_jsonable,
)

if TYPE_CHECKING:  # imported on first use, see __getattr__
    from flowbuilder.bundled import BUNDLED, BundledModel
    from flowbuilder.knowledge import (
        Chunk,
        Document,
        DocumentRecord,
        KnowledgeBase,
        KnowledgeBases,
        KnowledgeError,
        content_hash,
    )
    from flowbuilder.providers.credentials import Credential
    from flowbuilder.providers.local import (
        MODEL_NAME,
        LocalModelSpec,
        on_llama_thread,
        store_candidates,
    )

_LAZY = {
    **dict.fromkeys(("BUNDLED", "BundledModel"), "flowbuilder.bundled"),
    **dict.fromkeys(
        (
            "Chunk",
            "Document",
            "DocumentRecord",
            "KnowledgeBase",
            "KnowledgeBases",
            "KnowledgeError",
            "content_hash",
        ),
        "flowbuilder.knowledge",
    ),
    "Credential": "flowbuilder.providers.credentials",
    **dict.fromkeys(
        ("MODEL_NAME", "LocalModelSpec", "on_llama_thread", "store_candidates"),
        "flowbuilder.providers.local",
    ),
}
"""Names from the engine's larger modules, imported when a pack first asks for one, so
that a pack of core nodes loads none of those modules."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowbuilder.sdk' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


SDK_VERSION = "1.0.0"
"""The version of this API (semantic versioning; see the module docstring)."""

__all__ = [
    "BUNDLED",
    "MODEL_NAME",
    "SDK_VERSION",
    "ArtifactRef",
    "ArtifactService",
    "AudioRef",
    "BundledModel",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "Chunk",
    "ContextTooLong",
    "Credential",
    "DatasetRef",
    "Document",
    "DocumentRecord",
    "DocumentRef",
    "EmbedRequest",
    "EmbeddingResult",
    "FileAccessError",
    "FlowbuilderError",
    "ImageRef",
    "JSONValue",
    "KnowledgeBase",
    "KnowledgeBases",
    "KnowledgeError",
    "KnowledgeService",
    "LoadedModel",
    "LocalModelSpec",
    "ModelRef",
    "ModelService",
    "Node",
    "NodeError",
    "NodeFiles",
    "NodeMeta",
    "Param",
    "Port",
    "ProviderService",
    "Registry",
    "RetryableError",
    "RunCancelled",
    "RunContext",
    "Settings",
    "StructuredResult",
    "Usage",
    "content_hash",
    "file_fingerprint",
    "fingerprint_model",
    "fingerprint_path",
    "is_local",
    "is_remote",
    "lone_surrogate",
    "on_llama_thread",
    "split_model_id",
    "store_candidates",
    "to_jsonable",
]
