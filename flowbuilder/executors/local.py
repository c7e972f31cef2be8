"""The in-process executor: today's behaviour, and the default.

A node runs as an asyncio task on the run's event loop; its blocking work goes to worker
threads through ``ctx.to_thread``. Heavy model work (``Node.is_heavy``) is bounded by a
per-event-loop semaphore of ``settings.heavy_concurrency`` (one device, one model job at
a time by default), so light nodes overlap while model nodes take turns.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from flowbuilder.executors import output_values

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flowbuilder.context import RunContext
    from flowbuilder.node import Node
    from flowbuilder.settings import Settings


class LocalExecutor:
    """Runs nodes in this process (see the module docstring)."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._heavy: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _heavy_limit(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._heavy.get(loop)
        if sem is None:
            sem = self._heavy[loop] = asyncio.Semaphore(self.settings.heavy_concurrency)
        return sem

    async def run_node(self, cls: type[Node], ctx: RunContext, inputs: BaseModel) -> dict[str, Any]:
        """Await ``cls().run(ctx, inputs)`` (under the heavy-work limit when it is model
        work) and return its outputs by port name; see :class:`~flowbuilder.executors.Executor`."""
        node = cls()
        if cls.is_heavy(inputs):
            async with self._heavy_limit():
                out = await node.run(ctx, inputs)
        else:
            out = await node.run(ctx, inputs)
        return output_values(cls, out)

    def close(self) -> None:
        """Nothing to release."""
