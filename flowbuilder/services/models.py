"""``ctx.models``: the local models a node uses, found through the file-access policy and
kept loaded between runs.

A model id names a bundled model (``smollm2``, ``all-minilm-l6-v2``), a model in the
model store (``FLOWBUILDER_HOME/models/<name>`` or ``<name>.gguf``, reached only by such a
name) or a path, which the node's file-access policy checks (:mod:`flowbuilder.files`).
Loaded models stay in the process's :class:`~flowbuilder.models.ModelCache` (least
recently used dropped past ``FLOWBUILDER_MODEL_MEMORY_MB``); each carries a lock, since
llama.cpp and CTranslate2 models must not be used from two threads at once. GGUF models
load and run on llama.cpp's own thread
(:func:`~flowbuilder.providers.local.on_llama_thread`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowbuilder.errors import NodeError
from flowbuilder.models import LoadedModel, ModelCache

if TYPE_CHECKING:
    from flowbuilder.files import NodeFiles
    from flowbuilder.providers.local import LocalModelSpec
    from flowbuilder.settings import Settings


class ModelService:
    """Local models for one node execution (``ctx.models``)."""

    def __init__(self, cache: ModelCache, settings: Settings, files: Callable[[], NodeFiles]):
        self._cache, self._settings, self._files = cache, settings, files

    @property
    def store_dir(self) -> Path:
        """The model store, ``FLOWBUILDER_HOME/models``: where nodes save the models they
        make, under a name (see :data:`~flowbuilder.providers.local.MODEL_NAME`)."""
        return self._settings.home / "models"

    def resolve(self, model: str, *, field: str = "model") -> LocalModelSpec:
        """The local model ``model`` names: its kind (``gguf``, ``hf``,
        ``sentence-transformers``) and path. A bundled name or a name in the model store
        comes first; anything else is a path, checked by the file-access policy as the
        node's parameter ``field``. Blocking (looks at the disk).

        Raises:
            NodeError: nothing of that name; the message lists the bundled models.
            FileAccessError: the policy refuses the path.
        """
        from flowbuilder.providers.local import resolve_local

        return resolve_local(model, self.store_dir, self._files().path_check(field))

    def get(self, key: str, loader: Callable[[], Any], size_mb: float) -> LoadedModel:
        """The loaded model cached under ``key``, calling ``loader()`` once if it is not
        loaded; ``size_mb`` is its estimated memory. Blocking: call it from a worker
        thread (or use :meth:`load`). Hold ``.lock`` while using ``.model``.

        Raises whatever ``loader`` raises (a NodeError for a model that cannot load).
        """
        return self._cache.get(key, loader, size_mb)

    async def load(self, key: str, loader: Callable[[], Any], size_mb: float) -> LoadedModel:
        """:meth:`get` in a worker thread."""
        return await asyncio.to_thread(self._cache.get, key, loader, size_mb)

    def open_gguf(self, path: Path, threads: int = 0) -> Any:
        """A new ``llama_cpp.Llama`` for the GGUF file at ``path``, set up as the LLM node
        runs it (context 2048 tokens, flash attention, ``threads`` threads, 0: one per
        core), loaded on llama.cpp's thread; not cached: close it when done, and make
        every call on it through :func:`~flowbuilder.providers.local.on_llama_thread`.
        Blocking.

        Raises:
            NodeError: llama.cpp cannot load the file.
        """
        from flowbuilder.providers.local import load_gguf

        return load_gguf(path, threads)


def fingerprint_model(raw: object) -> LocalModelSpec | None:
    """The local model a node parameter names under the active file-access policy, or
    None (no policy active, the path refused, no such model) — for ``Node.fingerprint``
    hooks, which run without a context (see :func:`flowbuilder.files.fingerprint_path`)."""
    from flowbuilder.files import active_policy
    from flowbuilder.providers.local import resolve_local

    policy = active_policy()
    if policy is None or not raw:
        return None
    try:
        return resolve_local(str(raw), policy.settings.home / "models", policy.resolve)
    except NodeError:
        return None
