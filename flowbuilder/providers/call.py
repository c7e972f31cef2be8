"""What a provider sees of its caller: :class:`ProviderContext`, a small protocol.

A provider needs five things of the node that calls it: the settings (the remote
deadline), when the node started (the deadline counts from its first attempt), a logger,
cancellation (checked between tokens and batches) and, for local models, the process's
model cache and the file-access policy for a model path. A node reaches providers through
``ctx.providers`` (:class:`flowbuilder.services.providers.ProviderService`), which hands
them exactly this view of its :class:`~flowbuilder.context.RunContext`; code outside a
run (the knowledge-base probe, the CLI) gives them a :class:`CallContext`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from flowbuilder.models import ModelCache
    from flowbuilder.settings import Settings

T = TypeVar("T")

PathCheck = Callable[[str], Path]
"""Turns a path a user gave into a checked real path, or raises
:class:`~flowbuilder.files.FileAccessError` (``ctx.files.path_check(field)``)."""


class ProviderContext(Protocol):
    """The caller of a provider, as the provider sees it."""

    @property
    def settings(self) -> Settings:
        """The settings in effect (``remote_deadline_s``, ``home``)."""
        ...

    @property
    def started_at(self) -> float:
        """When the calling node's first attempt began (``time.time()`` seconds)."""
        ...

    @property
    def log(self) -> logging.Logger:
        """The caller's logger (a node's is named after its type)."""
        ...

    @property
    def model_cache(self) -> ModelCache:
        """The process's loaded local models."""
        ...

    def check_cancelled(self) -> None:
        """Raise :class:`~flowbuilder.errors.RunCancelled` once the work should stop."""
        ...

    def path_check(self, field: str) -> PathCheck:
        """The file-access check for a model path given in the parameter ``field``."""
        ...

    async def to_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work in a worker thread and await its result."""
        ...


@dataclass
class CallContext:
    """A :class:`ProviderContext` for calls made outside a run (never cancelled).

    Model paths go through the same file-access policy a node's do; its errors name
    ``node_id`` and ``title`` as a node's would.
    """

    settings: Settings
    model_cache: ModelCache
    node_id: str = "call"
    title: str = "provider call"
    started_at: float = field(default_factory=time.time)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("flowbuilder.providers"))

    def check_cancelled(self) -> None:
        return None

    def path_check(self, field: str) -> PathCheck:
        from flowbuilder.files import FileAccess

        return FileAccess(self.settings).for_node(self.node_id, self.title).path_check(field)

    async def to_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)
