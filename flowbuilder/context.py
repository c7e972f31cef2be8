"""The run context: the only way a node reaches services.

One :class:`RunContext` is made per node execution. It gives the node the artifact
store, settings, narrow services (``ctx.models``, ``ctx.providers``, ``ctx.knowledge``,
``ctx.files``: see :mod:`flowbuilder.services`), progress reporting, cancellation checks
and a way to run blocking work in a worker thread. The raw parts the services are made of
(the model cache, the provider registry) are not the node's to touch. Progress and
cancellation checks are safe to call from worker threads (e.g. inside a token or segment
loop).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flowbuilder import events
from flowbuilder.errors import RunCancelled
from flowbuilder.files import FileAccess, NodeFiles
from flowbuilder.services.artifacts import ArtifactService
from flowbuilder.services.knowledge import KnowledgeService
from flowbuilder.services.models import ModelService
from flowbuilder.services.providers import ProviderService

if TYPE_CHECKING:
    from flowbuilder.artifacts import ArtifactStore
    from flowbuilder.models import ModelCache
    from flowbuilder.providers import PathCheck, ProviderRegistry
    from flowbuilder.settings import Settings

T = TypeVar("T")


class RunContext:
    """Services for one node execution.

    Attributes:
        run_id, node_id, node_type: what is running.
        artifacts: the artifact store as a node sees it
            (:class:`~flowbuilder.services.artifacts.ArtifactService`).
        models: local models by id (:class:`~flowbuilder.services.models.ModelService`).
        providers: chat, embeddings and media APIs by model id
            (:class:`~flowbuilder.services.providers.ProviderService`).
        knowledge: knowledge bases (:class:`~flowbuilder.services.knowledge.KnowledgeService`).
        settings: the :class:`~flowbuilder.settings.Settings`.
        files: the file-access policy for this node (:class:`~flowbuilder.files.NodeFiles`):
            every path a parameter names goes through it.
        log: a logger named after the node type.
        started_at: when the node's execution began (``time.time()`` seconds, at its
            first attempt: one context serves every retry); a remote call's deadline
            across retries counts from it.
    """

    __slots__ = (
        "_artifacts",
        "_bus",
        "_cancel",
        "_files",
        "_knowledge",
        "_loop",
        "_model_cache",
        "_models",
        "_provider_registry",
        "_providers",
        "_stopped",
        "_thread",
        "log",
        "node_id",
        "node_title",
        "node_type",
        "run_id",
        "settings",
        "started_at",
    )

    def __init__(
        self,
        *,
        run_id: str,
        node_id: str,
        node_type: str,
        artifacts: ArtifactStore,
        models: ModelCache,
        settings: Settings,
        providers: ProviderRegistry,
        bus: events.EventBus,
        cancel: threading.Event,
        loop: asyncio.AbstractEventLoop,
        started_at: float | None = None,
        node_title: str = "",
        files: FileAccess | None = None,
    ) -> None:
        self.run_id, self.node_id, self.node_type = run_id, node_id, node_type
        self.started_at = time.time() if started_at is None else started_at
        self.node_title = node_title or node_type
        self._files: NodeFiles | FileAccess | None = files
        self.settings = settings
        self._artifacts = ArtifactService(artifacts)
        self._model_cache, self._provider_registry = models, providers
        self._models: ModelService | None = None
        self._providers: ProviderService | None = None
        self._knowledge: KnowledgeService | None = None
        self._bus, self._cancel, self._loop = bus, cancel, loop
        self._stopped = False  # set by stop(); a plain flag, read from worker threads
        self._thread = threading.get_ident()
        self.log = logging.getLogger(f"flowbuilder.node.{node_type}")

    def progress(
        self,
        fraction: float | None = None,
        message: str = "",
        delta: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Report progress: ``fraction`` in [0, 1] or None, a short message, streamed text,
        and ``metrics`` — numbers a chart can plot, e.g. ``{"step": 12, "loss": 1.93}``.

        Safe from any thread. Also a cancellation point: raises
        :class:`~flowbuilder.errors.RunCancelled` when the run was cancelled or the node
        timed out, so loops that report progress stop promptly.
        """
        self.check_cancelled()
        if fraction is not None:
            fraction = min(1.0, max(0.0, fraction))
        fields: dict[str, Any] = {
            "node_id": self.node_id,
            "fraction": fraction,
            "message": message,
            "delta": delta,
            "metrics": metrics,
        }
        if threading.get_ident() == self._thread:
            self._bus.emit(events.NodeProgress, **fields)
        else:
            self._loop.call_soon_threadsafe(lambda: self._bus.emit(events.NodeProgress, **fields))

    @property
    def cancelled(self) -> bool:
        return self._stopped or self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`~flowbuilder.errors.RunCancelled` if the work should stop."""
        if self.cancelled:
            raise RunCancelled(
                f"node {self.node_id} stopped: the run was cancelled or the node timed out"
            )

    def stop(self) -> None:
        """Ask this node's worker threads to stop (used on timeout and cancellation)."""
        self._stopped = True

    @property
    def files(self) -> NodeFiles:
        """The file-access policy, made on first use (its errors name this node)."""
        files = self._files
        if not isinstance(files, NodeFiles):
            files = (files or FileAccess(self.settings)).for_node(self.node_id, self.node_title)
            self._files = files
        return files

    @property
    def artifacts(self) -> ArtifactService:
        """Store bytes or an open file as an artifact; read the file of a reference."""
        return self._artifacts

    @property
    def models(self) -> ModelService:
        """Local models by id, through this node's file-access policy."""
        if self._models is None:
            self._models = ModelService(self._model_cache, self.settings, lambda: self.files)
        return self._models

    @property
    def providers(self) -> ProviderService:
        """Chat, embeddings and media APIs by model id."""
        if self._providers is None:
            self._providers = ProviderService(self._provider_registry, _ProviderView(self))
        return self._providers

    @property
    def knowledge(self) -> KnowledgeService:
        """The knowledge bases this node may open, write and search."""
        if self._knowledge is None:
            self._knowledge = KnowledgeService(self.settings, lambda: self.files)
        return self._knowledge

    async def to_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work in a worker thread and await its result."""
        return await asyncio.to_thread(fn, *args, **kwargs)


class _ProviderView:
    """What a provider sees of a :class:`RunContext`
    (:class:`~flowbuilder.providers.call.ProviderContext`)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    @property
    def settings(self) -> Settings:
        return self._ctx.settings

    @property
    def started_at(self) -> float:
        return self._ctx.started_at

    @property
    def log(self) -> logging.Logger:
        return self._ctx.log

    @property
    def model_cache(self) -> ModelCache:
        return self._ctx._model_cache

    def check_cancelled(self) -> None:
        self._ctx.check_cancelled()

    def path_check(self, field: str) -> PathCheck:
        return self._ctx.files.path_check(field)

    async def to_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._ctx.to_thread(fn, *args, **kwargs)
