"""The Ray executor: each node a Ray task, model nodes on long-lived actors.

The scheduler on the driver keeps running the run (ordering, cache, retries, timeouts,
events, freeing values); this executor only runs single nodes on a Ray cluster:

- A node runs as a Ray task that reserves the node's resource hints
  (``meta.num_cpus``, default 1; ``meta.num_gpus``; ``meta.memory_mb``), so independent
  nodes run on different workers at once. Its validated inputs and its outputs are small
  values passed as Ray objects; heavy values are artifact references into the artifact
  store, which must be a directory every worker reaches (``FLOWBUILDER_ARTIFACTS_DIR``
  or ``FLOWBUILDER_HOME`` on a shared file system).
- Model work (``Node.is_heavy``) goes to one long-lived async actor per node type and
  resource shape. The actor keeps its :class:`~flowbuilder.models.ModelCache`, so a
  model stays loaded between nodes and runs; inside it, model jobs take turns
  (``settings.heavy_concurrency`` at a time). Actors reserve ``num_gpus`` and
  ``memory_mb`` for their whole life but no CPU unless ``meta.num_cpus`` says so.
- Input and Output nodes (``Node.role``) only pass a value through; they run on the
  driver.
- The node class itself travels with the task (by reference for installed packs, by
  value for classes defined in ``__main__`` or in modules registered with
  ``ray.cloudpickle.register_pickle_by_value``), so test and notebook nodes run too.
  Workers rebuild a :class:`~flowbuilder.context.RunContext` from the driver's
  :class:`~flowbuilder.settings.Settings`: artifact store, model cache, providers.
- Every task is a Ray streaming generator: the worker yields the node's progress events
  and log records as they happen, then its outputs (or its exception). The driver
  re-emits them through the node's context, so the CLI, the canvas and SSE show
  progress exactly as with the local executor.
- Cancelling the awaiting coroutine (run cancelled, node timed out) calls ``ray.cancel``:
  the worker stops the node (``ctx.check_cancelled()`` raises there) and, for a task
  that does not stop within :data:`CANCEL_GRACE_S`, the worker process is killed
  (``force=True``; actors cannot be force-cancelled, so their task is left to stop).
- A worker lost mid-node (crash, ``os._exit``, OOM kill, its machine gone) raises
  :class:`~flowbuilder.executors.WorkerLost` naming the node; the scheduler runs the
  node again if it is idempotent. Ray's own retries are off (``max_retries=0``), so a
  non-idempotent node never runs twice behind the scheduler's back.

The cluster: an existing connection (``ray.is_initialized()``) is used as is; otherwise
``address`` (``auto``, ``ray://host:10001``) joins a running cluster, and no address
starts a local one with one CPU per core (``ray.init(num_cpus=os.cpu_count())``), shut
down again by :meth:`RayExecutor.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
import ray.exceptions
from ray import cloudpickle

from flowbuilder import events
from flowbuilder.artifacts import ArtifactStore
from flowbuilder.context import RunContext
from flowbuilder.errors import FlowbuilderError, NodeError, RunCancelled
from flowbuilder.executors import WorkerLost, output_values
from flowbuilder.executors.local import LocalExecutor
from flowbuilder.models import ModelCache
from flowbuilder.settings import Settings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flowbuilder.node import Node, NodeMeta
    from flowbuilder.providers import ProviderRegistry

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 3.0
"""Seconds a cancelled node gets to stop before its worker process is ended (a task's
worker ends itself; the driver force-cancels a task still running 2 s after that)."""

LOST_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.RayActorError,  # ActorDiedError, ActorUnavailableError
    ray.exceptions.NodeDiedError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.ObjectLostError,  # OwnerDiedError, …
    ray.exceptions.OutOfMemoryError,
)
"""Ray errors that mean "the process running the node is gone", not "the node failed"."""

Item = tuple[Any, ...]
"""What a worker streams back: ``("progress", fields)``, ``("log", level, message)``,
``("result", outputs)`` or ``("error", exception)``."""


@dataclass(frozen=True, slots=True)
class _Call:
    """Which node execution a worker is running (for its context and messages)."""

    run_id: str
    node_id: str
    node_type: str
    started_at: float | None = None  # the driver's RunContext.started_at


# ---- the worker side -------------------------------------------------------------------


@dataclass
class _Services:
    artifacts: ArtifactStore
    models: ModelCache
    providers: ProviderRegistry


_SERVICES: dict[Settings, _Services] = {}
_SERVICES_LOCK = threading.Lock()


def _services(settings: Settings) -> _Services:
    """This worker process's artifact store, model cache and providers for ``settings``
    (made once per process and settings, so models stay loaded between nodes)."""
    with _SERVICES_LOCK:
        svc = _SERVICES.get(settings)
        if svc is None:
            from flowbuilder.providers import default_providers

            svc = _SERVICES[settings] = _Services(
                ArtifactStore(settings.artifacts_root),
                ModelCache(settings.model_memory_mb),
                default_providers(settings),
            )
        return svc


class _ForwardBus(events.EventBus):
    """The worker-side event bus: hands every event to ``put`` instead of listeners."""

    def __init__(self, run_id: str, put: Callable[[Item], None]) -> None:
        super().__init__(run_id)
        self._put = put

    def emit(self, event_cls: type[Any], **fields: Any) -> None:
        if event_cls is events.NodeProgress:
            self._put(("progress", fields))


class _ForwardLog(logging.Handler):
    """Sends a node's log records (INFO and up) to the driver, formatted."""

    def __init__(self, put: Callable[[Item], None]) -> None:
        super().__init__(logging.INFO)
        self._put = put

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self._put(("log", record.levelno, message))
        except Exception:
            self.handleError(record)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a NodeError with the same sentence; errors
    that are our bugs or a library's carry the worker's traceback as a note."""
    if not isinstance(exc, FlowbuilderError):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.add_note(f"traceback on the Ray worker (pid {os.getpid()}):\n{tb}")
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        from flowbuilder.scheduler import describe_error

        return NodeError(describe_error(exc))


async def _execute(
    cls: type[Node],
    call: _Call,
    inputs: BaseModel,
    settings: Settings,
    put: Callable[[Item], None],
    cancel: threading.Event,
) -> None:
    """Run the node on this worker; stream its progress, logs and outcome to ``put``."""
    svc = _services(settings)
    ctx = RunContext(
        run_id=call.run_id,
        node_id=call.node_id,
        node_type=call.node_type,
        artifacts=svc.artifacts,
        models=svc.models,
        settings=settings,
        providers=svc.providers,
        bus=_ForwardBus(call.run_id, put),
        cancel=cancel,
        loop=asyncio.get_running_loop(),
        started_at=call.started_at,
        node_title=cls.meta.title,
    )
    node_log = logging.Logger(f"flowbuilder.node.{call.node_type}", logging.INFO)
    node_log.addHandler(_ForwardLog(put))
    ctx.log = node_log
    try:
        out = await cls().run(ctx, inputs)
        put(("result", output_values(cls, out)))
    except asyncio.CancelledError:
        ctx.stop()
        raise
    except Exception as exc:
        put(("error", _portable(exc)))


_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def _worker_loop() -> asyncio.AbstractEventLoop:
    """An event loop running in a daemon thread of this worker process, made once.

    A task's main thread stays free to stream items and to receive ``ray.cancel``'s
    KeyboardInterrupt while the node's coroutine runs on this loop.
    """
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="flowbuilder-node", daemon=True).start()
            _LOOP = loop
        return _LOOP


_DONE = ("done",)


def _node_task(
    cls: type[Node], call: _Call, inputs: BaseModel, settings: Settings
) -> Iterator[Item]:
    """The Ray task body (a streaming generator): run one node, yield what it reports."""
    items: queue.SimpleQueue[Item] = queue.SimpleQueue()
    cancel = threading.Event()
    finished = threading.Event()

    async def main() -> None:
        try:
            await _execute(cls, call, inputs, settings, items.put, cancel)
        finally:
            finished.set()
            items.put(_DONE)

    future = asyncio.run_coroutine_threadsafe(main(), _worker_loop())
    runtime = ray.get_runtime_context()
    try:
        while True:
            try:
                item = items.get(timeout=0.1)
            except queue.Empty:
                # ray.cancel interrupts this (main) thread; the pending KeyboardInterrupt
                # is raised at the next Python-level call, such as this check, which
                # also catches a cancellation whose interrupt went astray.
                if runtime.is_canceled():
                    raise KeyboardInterrupt from None
                continue
            if item is _DONE:
                break
            yield item
    finally:  # cancelled (KeyboardInterrupt) or the stream closed: stop the node
        if not finished.is_set():
            cancel.set()
            future.cancel()
            if not finished.wait(CANCEL_GRACE_S):
                # The node ignores cancellation (blocking code that never checks): this
                # process's node loop is stuck, so it must not take another task.
                log.warning("node %s did not stop; ending worker %d", call.node_id, os.getpid())
                os._exit(1)


class _NodeActor:
    """A long-lived worker for one model node type; keeps its model cache warm."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._limit: asyncio.Semaphore | None = None
        _services(settings)

    def pid(self) -> int:
        """The actor's process id (for tests and diagnostics)."""
        return os.getpid()

    async def run(self, cls: type[Node], call: _Call, inputs: BaseModel) -> AsyncIterator[Item]:
        """Run one node (model jobs take turns); yield what it reports, as a task does."""
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.settings.heavy_concurrency)
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Item] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Item) -> None:  # called from the loop and from worker threads
            loop.call_soon_threadsafe(items.put_nowait, item)

        async def main() -> None:
            try:
                async with self._limit:  # type: ignore[union-attr]
                    await _execute(cls, call, inputs, self.settings, put, cancel)
            finally:
                put(_DONE)

        task = asyncio.ensure_future(main())
        try:
            while True:
                item = await items.get()
                if item is _DONE:
                    break
                yield item
        finally:
            if not task.done():
                cancel.set()
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_GRACE_S)


# ---- the driver side -------------------------------------------------------------------


class RayExecutor:
    """Runs nodes on a Ray cluster (see the module docstring).

    Args:
        settings: passed to every worker (artifact store, model memory, providers).
        address: ``None`` starts a local cluster (unless Ray is already initialised in
            this process); ``auto`` or ``ray://host:port`` joins a running one.
        init_kwargs: extra ``ray.init`` arguments (e.g. ``_temp_dir``) when it starts.
    """

    name = "ray"

    def __init__(
        self,
        settings: Settings,
        *,
        address: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self.address = settings, address
        self.init_kwargs = dict(init_kwargs or {})
        self._local = LocalExecutor(settings)
        self._lock = threading.Lock()
        self._ready = False
        self._started_cluster = False
        self._settings_ref: Any = None
        self._cluster: dict[str, float] = {}
        self._tasks: dict[tuple[Any, ...], Any] = {}
        self._actors: dict[tuple[Any, ...], Any] = {}

    # ---- the cluster -------------------------------------------------------------------

    def start(self) -> None:
        """Join or start the Ray cluster (blocking, seconds; idempotent).

        Raises:
            ConnectionError: nothing answers at ``address`` (from ``ray.init``).
        """
        with self._lock:
            if self._ready:
                return
            if not ray.is_initialized():
                kwargs: dict[str, Any] = {"logging_level": logging.WARNING, **self.init_kwargs}
                if self.address:
                    ray.init(address=self.address, **kwargs)
                else:
                    kwargs.setdefault("include_dashboard", False)
                    ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)
                    self._started_cluster = True
            self._settings_ref = ray.put(self.settings)
            self._cluster = dict(ray.cluster_resources())
            self._ready = True

    def close(self) -> None:
        """Kill this executor's model actors; shut down a local cluster it started."""
        with self._lock:
            if not self._ready:
                return
            for actor in self._actors.values():
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(actor)
            self._actors.clear()
            self._tasks.clear()
            if self._started_cluster and ray.is_initialized():
                ray.shutdown()
            self._started_cluster = self._ready = False

    def _check_feasible(self, meta: NodeMeta, ctx: RunContext, heavy: bool) -> None:
        """Fail at once, naming the node, when no machine of the cluster has what it asks
        for (Ray would otherwise wait for such a worker forever)."""
        wants = {
            "CPU": (0.0 if heavy else 1.0) if meta.num_cpus is None else meta.num_cpus,
            "GPU": meta.num_gpus,
            "memory": (meta.memory_mb or 0) * 1024 * 1024,
        }
        for resource, amount in wants.items():
            if amount and self._cluster.get(resource, 0.0) < amount:
                self._cluster = dict(ray.cluster_resources())  # it may have grown
                have = self._cluster.get(resource, 0.0)
                if have < amount:
                    unit = {"CPU": "CPU core(s)", "GPU": "GPU(s)", "memory": "bytes of memory"}
                    raise NodeError(
                        f"node {ctx.node_id} ({ctx.node_type}) asks for {amount:g} "
                        f"{unit[resource]} but the Ray cluster has {have:g} in all"
                    )

    def _task(self, meta: NodeMeta) -> Any:
        key = (meta.num_cpus, meta.num_gpus, meta.memory_mb)
        fn = self._tasks.get(key)
        if fn is None:
            options: dict[str, Any] = {
                "num_cpus": 1 if meta.num_cpus is None else meta.num_cpus,
                "num_gpus": meta.num_gpus,
                "max_retries": 0,
                "retry_exceptions": False,
                "num_returns": "streaming",
            }
            if meta.memory_mb:
                options["memory"] = meta.memory_mb * 1024 * 1024
            fn = self._tasks[key] = _remote_task().options(**options)
        return fn

    def _actor(self, meta: NodeMeta) -> tuple[tuple[Any, ...], Any]:
        key = (meta.type, meta.num_cpus, meta.num_gpus, meta.memory_mb)
        actor = self._actors.get(key)
        if actor is None:
            options: dict[str, Any] = {
                "num_cpus": meta.num_cpus or 0,
                "num_gpus": meta.num_gpus,
                "max_restarts": 0,
                "max_task_retries": 0,
            }
            if meta.memory_mb:
                options["memory"] = meta.memory_mb * 1024 * 1024
            actor = _remote_actor().options(**options).remote(self._settings_ref)
            self._actors[key] = actor
        return key, actor

    def actor_pid(self, cls: type[Node]) -> int | None:
        """The process id of the model actor that runs ``cls`` (None if there is none)."""
        actor = self._actors.get(
            (cls.meta.type, cls.meta.num_cpus, cls.meta.num_gpus, cls.meta.memory_mb)
        )
        return None if actor is None else int(ray.get(actor.pid.remote()))

    # ---- one node ----------------------------------------------------------------------

    async def run_node(self, cls: type[Node], ctx: RunContext, inputs: BaseModel) -> dict[str, Any]:
        """Run ``cls`` once on a Ray worker; see :class:`~flowbuilder.executors.Executor`.

        Raises:
            WorkerLost: the worker (or actor) died before the node finished.
            NodeError: the node asks for more resources than the cluster has; or what
                the node itself raised, re-raised here with its message.
        """
        if cls.role is not None:  # Input/Output nodes pass a value through
            return await self._local.run_node(cls, ctx, inputs)
        if not self._ready:
            await asyncio.to_thread(self.start)
        meta = cls.meta
        heavy = cls.is_heavy(inputs)
        self._check_feasible(meta, ctx, heavy)
        call = _Call(ctx.run_id, ctx.node_id, ctx.node_type, ctx.started_at)
        actor_key: tuple[Any, ...] | None = None
        if heavy:
            actor_key, actor = self._actor(meta)
            stream = actor.run.options(num_returns="streaming").remote(cls, call, inputs)
        else:
            stream = self._task(meta).remote(cls, call, inputs, self._settings_ref)
        try:
            return await self._follow(stream, ctx)
        except asyncio.CancelledError:
            await self._stop(stream, force=actor_key is None)
            raise
        except LOST_ERRORS as exc:
            if actor_key is not None:
                self._forget_actor(actor_key)
            raise WorkerLost(
                f"node {ctx.node_id} ({ctx.node_type}) lost its Ray worker mid-run: {_why(exc)}"
            ) from None
        except ray.exceptions.TaskCancelledError:
            raise RunCancelled(f"node {ctx.node_id} was cancelled on its Ray worker") from None
        except ray.exceptions.RayTaskError as exc:  # our wrapper failed, not the node
            raise NodeError(
                f"node {ctx.node_id} ({ctx.node_type}) failed on its Ray worker: "
                f"{type(exc.cause).__name__}: {exc.cause}"
            ) from None

    async def _follow(self, stream: Any, ctx: RunContext) -> dict[str, Any]:
        """Re-emit a worker's progress and logs on the driver; return its outputs."""
        result: dict[str, Any] | None = None
        async for ref in stream:
            item = await ref
            kind = item[0]
            if kind == "progress":
                fields = item[1]
                # RunCancelled: the run is stopping; this coroutine is about to be cancelled
                fields.pop("node_id", None)
                with contextlib.suppress(RunCancelled):
                    ctx.progress(**fields)
            elif kind == "log":
                ctx.log.log(item[1], "%s", item[2])
            elif kind == "result":
                result = item[1]
            elif kind == "error":
                raise item[1]
        if result is None:
            raise NodeError(f"node {ctx.node_id} ({ctx.node_type}) returned nothing from Ray")
        return result

    async def _stop(self, stream: Any, *, force: bool) -> None:
        """Cancel a node's Ray task and wait (at most CANCEL_GRACE_S) until it ended;
        then kill its worker process if it is a task that did not stop."""
        ray.cancel(stream)
        try:
            await asyncio.wait_for(_drain(stream), CANCEL_GRACE_S + 2.0)
        except TimeoutError:
            if force:
                ray.cancel(stream, force=True)
        except Exception:  # whatever the stream ended with, it ended
            pass

    def _forget_actor(self, key: tuple[Any, ...]) -> None:
        """Drop a dead actor, so the next node of its type starts a fresh one."""
        actor = self._actors.pop(key, None)
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor)


async def _drain(stream: Any) -> None:
    async for ref in stream:
        with contextlib.suppress(Exception):
            await ref


def _why(exc: BaseException) -> str:
    """The first line of a Ray error, without the class name noise."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


_REMOTE: dict[str, Any] = {}


def _remote_task() -> Any:
    """``_node_task`` as a Ray remote function (made once, after ``ray`` is imported)."""
    fn = _REMOTE.get("task")
    if fn is None:
        fn = _REMOTE["task"] = ray.remote(max_retries=0)(_node_task)
    return fn


def _remote_actor() -> Any:
    """``_NodeActor`` as a Ray actor class (made once)."""
    cls = _REMOTE.get("actor")
    if cls is None:
        cls = _REMOTE["actor"] = ray.remote(_NodeActor)
    return cls


__all__ = ["CANCEL_GRACE_S", "LOST_ERRORS", "RayExecutor"]
