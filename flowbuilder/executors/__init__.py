"""Executors: where one node runs, once the scheduler has decided it should.

The :class:`~flowbuilder.scheduler.Scheduler` stays the driver of every run: dataflow
ordering, the cache, retries, timeouts, events and freeing values all happen there. When a
node is ready and its inputs are validated, the scheduler hands exactly one thing to its
executor — "run this node class with these inputs, reporting through this context" — and
gets the node's output values back (or the node's exception). Two executors exist:

- ``local`` (:class:`~flowbuilder.executors.local.LocalExecutor`): the node runs as an
  asyncio task in this process; blocking work goes to worker threads through the context.
- ``ray`` (:class:`~flowbuilder.executors.ray.RayExecutor`): the node runs as a Ray task
  (a model node on a long-lived actor that keeps its models loaded), with its progress
  streamed back to the driver. Ray is imported only when this executor is chosen.

Pick one with :func:`make_executor` (``FLOWBUILDER_EXECUTOR``, ``--executor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from flowbuilder.errors import NodeError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flowbuilder.context import RunContext
    from flowbuilder.node import Node
    from flowbuilder.settings import Settings


class WorkerLost(NodeError):
    """The process running a node died mid-run (killed, out of memory, its machine gone).

    The message names the node. The scheduler runs the node again when its
    ``meta.idempotent`` is set, and otherwise fails it with this error.
    """


class Executor(Protocol):
    """Runs one node execution. Implementations must be safe to share between runs."""

    name: str

    async def run_node(self, cls: type[Node], ctx: RunContext, inputs: BaseModel) -> dict[str, Any]:
        """Run ``cls`` once on validated ``inputs`` and return its outputs by port name.

        Progress goes through ``ctx`` (events reach the run's listeners on the driver);
        cancelling the awaiting task stops the node (``ctx.check_cancelled()`` raises in
        it). Raises what the node raised, :class:`WorkerLost` when its worker died, and
        ``pydantic.ValidationError`` when its outputs do not fit ``cls.Outputs``.
        """
        ...

    def close(self) -> None:
        """Release what the executor holds (actors, a cluster it started)."""
        ...


def output_values(cls: type[Node], out: Any) -> dict[str, Any]:
    """A node's return value as a dict by output port name, validated against
    ``cls.Outputs`` when it is not already an instance (fields, then any extras).

    Raises:
        pydantic.ValidationError: the value does not fit ``cls.Outputs``.
    """
    if not isinstance(out, cls.Outputs):
        out = cls.Outputs.model_validate(out)
    # What dict(out) gives, without pydantic's slow __iter__.
    values = dict(out.__dict__)
    if out.model_extra:
        values.update(out.model_extra)
    return values


def make_executor(settings: Settings) -> Executor:
    """The executor ``settings.executor`` names (``local`` or ``ray``).

    Ray is imported here only for ``ray``; the cluster is joined or started on first use
    (see :class:`~flowbuilder.executors.ray.RayExecutor`).
    """
    if settings.executor == "ray":
        from flowbuilder.executors.ray import RayExecutor

        return RayExecutor(settings, address=settings.ray_address)
    from flowbuilder.executors.local import LocalExecutor

    return LocalExecutor(settings)


__all__ = ["Executor", "WorkerLost", "make_executor", "output_values"]
