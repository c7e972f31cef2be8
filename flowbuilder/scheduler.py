"""Dataflow execution of a plan.

Nodes start as soon as all their inputs are ready (``graphlib.TopologicalSorter``'s
``get_ready()`` / ``done()``), so independent branches overlap. Running one node on its
validated inputs is delegated to an executor (:mod:`flowbuilder.executors`): in process
by default (an asyncio task, blocking work in worker threads, heavy model work bounded by
a per-device semaphore), or as a Ray task. The scheduler, not the nodes nor the
executor, handles:

- the cache (see :mod:`flowbuilder.cache`),
- per-node timeouts (the node's ``meta.timeout_s`` or the run's ``node_timeout``),
- retries of :class:`~flowbuilder.errors.RetryableError` with exponential back-off and
  full jitter (base 0.5 s, cap 30 s; AWS Architecture Blog, "Exponential Backoff And
  Jitter", 2015), honouring a ``retry_after`` the remote side gave,
- failure: no new node starts, running ones finish, the run fails with the node's error;
  with ``keep_going`` every branch that does not depend on the failure still runs,
- cancellation: running nodes are cancelled and their worker threads told to stop,
- a lost worker (:class:`~flowbuilder.executors.WorkerLost`): the node is run again
  when it is ``idempotent`` (up to ``max(1, retries)`` times), otherwise it fails,
- freeing intermediate values once every consumer has read them.
"""

from __future__ import annotations

import asyncio
import graphlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from flowbuilder import events, files
from flowbuilder.artifacts import ArtifactStore
from flowbuilder.cache import MemoryCache, node_key
from flowbuilder.context import RunContext
from flowbuilder.errors import FlowbuilderError, NodeError, RetryableError, RunCancelled
from flowbuilder.executors import Executor, WorkerLost
from flowbuilder.executors.local import LocalExecutor
from flowbuilder.files import FileAccess
from flowbuilder.models import ModelCache
from flowbuilder.node import Node
from flowbuilder.providers import ProviderRegistry
from flowbuilder.secrets import redact
from flowbuilder.settings import Settings
from flowbuilder.types import compatible, summarise
from flowbuilder.validate import Plan, PlannedNode

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


@dataclass
class RunResult:
    """What a run produced.

    ``status`` is ``finished``, ``failed`` or ``cancelled``. ``outputs`` are the flow's
    outputs by name (from its Output nodes). ``node_status`` maps every node id to
    ``done``, ``cached``, ``failed``, ``skipped`` or ``cancelled``.
    """

    run_id: str
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    failed_node: str | None = None
    node_status: dict[str, str] = field(default_factory=dict)
    node_errors: dict[str, str] = field(default_factory=dict)
    node_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def executed(self) -> list[str]:
        """Node ids that actually ran (not served from the cache)."""
        return [n for n, s in self.node_status.items() if s == "done"]

    @property
    def cached(self) -> list[str]:
        return [n for n, s in self.node_status.items() if s == "cached"]


class CancelToken:
    """Cancels a run from any thread: ``token.cancel()``."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._wake: Callable[[], None] | None = None

    def cancel(self) -> None:
        self.event.set()
        if self._wake is not None:
            self._wake()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


def describe_error(exc: BaseException) -> str:
    """A user-facing sentence for an exception raised by a node (secret values redacted)."""
    return redact(_describe_error(exc))


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = [f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors()]
        return "invalid value for " + "; ".join(parts)
    if isinstance(exc, FlowbuilderError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    return f"{type(exc).__name__}: {exc}"


class Scheduler:
    """Runs plans. One scheduler serves many runs; it holds no per-run state."""

    def __init__(
        self,
        *,
        artifacts: ArtifactStore,
        models: ModelCache,
        settings: Settings,
        providers: ProviderRegistry,
        cache: MemoryCache | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``executor`` runs single nodes; default: in process
        (:class:`~flowbuilder.executors.local.LocalExecutor`)."""
        self.artifacts, self.models, self.settings = artifacts, models, settings
        self.files = FileAccess(settings)
        self.providers = providers
        self.cache = cache
        self.executor: Executor = executor if executor is not None else LocalExecutor(settings)

    async def execute(
        self,
        plan: Plan,
        bound: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        listeners: list[events.Listener] | None = None,
        keep_going: bool = False,
        use_cache: bool = True,
        node_timeout: float | None = None,
        cancel: CancelToken | None = None,
        keep_outputs: bool = False,
    ) -> RunResult:
        """Run a plan to the end and return its result; never raises for node failures.

        Args:
            bound: values for Input nodes, by node id (see ``Engine.bind_inputs``).
            keep_outputs: keep every node's outputs in the result (for previews);
                otherwise values are freed as soon as their consumers have read them.
        """
        run = _Run(
            self,
            plan,
            bound or {},
            run_id or uuid.uuid4().hex,
            listeners or [],
            keep_going,
            use_cache and self.cache is not None,
            node_timeout,
            cancel or CancelToken(),
            keep_outputs,
        )
        return await run.go()


class _Run:
    """The state of one run (kept off the scheduler so runs never share it)."""

    def __init__(
        self,
        sched: Scheduler,
        plan: Plan,
        bound: dict[str, Any],
        run_id: str,
        listeners: list[events.Listener],
        keep_going: bool,
        use_cache: bool,
        node_timeout: float | None,
        cancel: CancelToken,
        keep_outputs: bool,
    ) -> None:
        self.s, self.plan, self.bound = sched, plan, bound
        self.bus = events.EventBus(run_id, listeners)
        self.keep_going, self.use_cache = keep_going, use_cache
        self.node_timeout, self.cancel, self.keep_outputs = node_timeout, cancel, keep_outputs
        self.result = RunResult(run_id, "running")
        self.values: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}
        self.remaining = plan.consumers()
        self.running: dict[str, tuple[asyncio.Task[Any], RunContext]] = {}
        self.bad: set[str] = set()
        self.stop = False
        self.cancelled = False
        self.queue: asyncio.Queue[tuple[str, BaseException | None, dict[str, Any] | None, float]]
        self.output_nodes = {o.node_id: o.name for o in plan.outputs}

    async def go(self) -> RunResult:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.queue = asyncio.Queue()

        def wake() -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, ("", None, None, 0.0))

        self.cancel._wake = wake
        t0 = time.perf_counter()
        self.bus.emit(
            events.RunStarted,
            node_count=len(self.plan.nodes),
            inputs={k: summarise(v) for k, v in self.bound.items()},
        )
        self.ts = graphlib.TopologicalSorter(self.plan.deps)
        self.ts.prepare()
        try:
            if self.cancel.cancelled:
                raise asyncio.CancelledError
            self._pump()
            while self.running:
                node_id, exc, outputs, elapsed = await self.queue.get()
                if not node_id:  # cancel token woke us
                    if self.cancel.cancelled:
                        raise asyncio.CancelledError
                    continue
                self._finish(node_id, exc, outputs, elapsed)
                self._pump()
        except asyncio.CancelledError:
            self.cancelled = True
            await self._cancel_running()
        finally:
            self.cancel._wake = None
        return self._close(time.perf_counter() - t0)

    # ---- starting nodes --------------------------------------------------------------

    def _pump(self) -> None:
        while not self.stop:
            ready = self.ts.get_ready()
            if not ready:
                return
            for node_id in ready:
                pn = self.plan.nodes[node_id]
                failed_deps = self.plan.deps[node_id] & self.bad
                if failed_deps:
                    self._skip(pn, f"it depends on node {min(failed_deps)}, which failed")
                    continue
                try:
                    self._start(pn)
                except Exception as exc:  # a pack's hook (fingerprint, …) failing
                    log.exception("node %s (%s) could not start", pn.id, pn.type)
                    self._fail(pn, describe_error(exc))

    def _skip(self, pn: PlannedNode, reason: str) -> None:
        self.bad.add(pn.id)
        self.result.node_status[pn.id] = "skipped"
        self.bus.emit(events.NodeSkipped, node_id=pn.id, node_type=pn.type, reason=reason)
        self._release(pn)
        self.ts.done(pn.id)

    def _start(self, pn: PlannedNode) -> None:
        wired = {name: self.values[src][out] for name, (src, out) in pn.wires.items()}
        params = pn.params
        if pn.id in self.bound:
            params = {**params, "value": self.bound[pn.id]}
        # keys are only read by the cache; without it, skip the hashing
        key = self._key(pn, params) if self.use_cache else ""
        if pn.bypassed:
            try:
                self._complete(pn, _bypass(pn, wired), "done")
            except NodeError as exc:
                self._fail(pn, str(exc))
            return
        if self.use_cache:
            hit = self.s.cache.get(key)  # type: ignore[union-attr]
            if hit is not None:
                self.bus.emit(events.NodeCached, node_id=pn.id, node_type=pn.type, outputs=hit)
                self._complete(pn, hit, "cached")
                return
        ctx = RunContext(
            run_id=self.bus.run_id,
            node_id=pn.id,
            node_type=pn.type,
            artifacts=self.s.artifacts,
            models=self.s.models,
            settings=self.s.settings,
            providers=self.s.providers,
            bus=self.bus,
            cancel=self.cancel.event,
            loop=self.loop,
            node_title=pn.cls.meta.title,
            files=self.s.files,
        )
        task = self.loop.create_task(self._run_node(pn, ctx, {**params, **wired}))
        self.running[pn.id] = (task, ctx)

    def _key(self, pn: PlannedNode, params: dict[str, Any]) -> str:
        """``pn``'s cache key (see :func:`~flowbuilder.cache.node_key`), remembered for
        the nodes that read its outputs."""
        in_keys = {name: (self.keys[src], out) for name, (src, out) in pn.wires.items()}
        key_params = params
        if pn.cls.fingerprint.__func__ is not Node.fingerprint.__func__:  # type: ignore[attr-defined]
            with files.active(self.s.files):  # relative paths resolve as the node will
                key_params = {**params, "\0fingerprint": pn.cls.fingerprint(params)}
        key = node_key(pn.type, pn.cls.meta.version, key_params, in_keys, pn.cls.meta.deterministic)
        self.keys[pn.id] = key
        return key

    async def _run_node(self, pn: PlannedNode, ctx: RunContext, values: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        exc: BaseException | None = None
        outputs: dict[str, Any] | None = None
        meta = pn.cls.meta
        attempt = 1
        try:
            inputs = pn.cls.Inputs.model_validate(values)
            timeout = meta.timeout_s or self.node_timeout
            while True:
                self.bus.emit(events.NodeStarted, node_id=pn.id, node_type=pn.type, attempt=attempt)
                try:
                    outputs = await self._attempt(pn, ctx, inputs, timeout)
                    break
                except WorkerLost as err:
                    if not meta.idempotent:
                        raise WorkerLost(
                            f"{err}; it is not marked idempotent, so it was not run again"
                        ) from None
                    if attempt > max(1, meta.retries):
                        raise WorkerLost(f"{err} (attempt {attempt}, no retries left)") from None
                    ctx.log.warning("%s; running it again (attempt %d)", err, attempt + 1)
                    attempt += 1
                except RetryableError as err:
                    if attempt > meta.retries:
                        raise
                    delay = (
                        err.retry_after
                        if err.retry_after is not None
                        else random.uniform(
                            0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
                        )
                    )
                    ctx.log.info("node %s: %s; retry %d in %.2f s", pn.id, err, attempt, delay)
                    await asyncio.sleep(delay)
                    attempt += 1
        except asyncio.CancelledError:
            ctx.stop()
            raise
        except BaseException as err:  # every failure is reported, none escapes the run
            exc = err
            if not isinstance(err, FlowbuilderError | ValidationError | TimeoutError):
                log.exception("node %s (%s) raised", pn.id, pn.type)
        self.queue.put_nowait((pn.id, exc, outputs, time.perf_counter() - t0))

    async def _attempt(
        self, pn: PlannedNode, ctx: RunContext, inputs: BaseModel, timeout: float | None
    ) -> dict[str, Any]:
        """One execution of ``pn`` by the executor, bounded by ``timeout`` seconds."""
        run_node = self.s.executor.run_node
        if timeout is None:
            return await run_node(pn.cls, ctx, inputs)  # the common case, without the wrapper
        limit: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout(timeout) as limit:
                return await run_node(pn.cls, ctx, inputs)
        except TimeoutError:
            if limit is None or not limit.expired():
                raise  # the node's own timeout (e.g. a remote call's), with its message
            ctx.stop()
            raise TimeoutError(f"timed out after {timeout:g} s") from None

    # ---- finishing nodes -------------------------------------------------------------

    def _finish(
        self,
        node_id: str,
        exc: BaseException | None,
        outputs: dict[str, Any] | None,
        elapsed: float,
    ) -> None:
        pn = self.plan.nodes[node_id]
        del self.running[node_id]
        if exc is None and outputs is not None:
            if self.use_cache and pn.cls.meta.deterministic:
                self.s.cache.put(self.keys[node_id], outputs)  # type: ignore[union-attr]
            self.bus.emit(
                events.NodeFinished,
                node_id=node_id,
                node_type=pn.type,
                elapsed_s=elapsed,
                outputs=outputs,
            )
            self._complete(pn, outputs, "done")
            return
        message = describe_error(exc) if exc is not None else "produced no outputs"
        if isinstance(exc, RunCancelled):
            message = "cancelled"
        self._fail(pn, message, elapsed)

    def _fail(self, pn: PlannedNode, message: str, elapsed: float = 0.0) -> None:
        node_id = pn.id
        self.bad.add(node_id)
        self.result.node_status[node_id] = "failed"
        self.result.node_errors[node_id] = message
        self.bus.emit(
            events.NodeFailed, node_id=node_id, node_type=pn.type, error=message, elapsed_s=elapsed
        )
        if self.result.failed_node is None:
            self.result.failed_node, self.result.error = node_id, message
        if not self.keep_going:
            self.stop = True
        self._release(pn)
        self.ts.done(node_id)

    def _complete(self, pn: PlannedNode, outputs: dict[str, Any], status: str) -> None:
        self.values[pn.id] = outputs
        self.result.node_status[pn.id] = status
        if self.keep_outputs:
            self.result.node_outputs[pn.id] = outputs
        if pn.id in self.output_nodes:
            self.result.outputs[self.output_nodes[pn.id]] = outputs.get("value")
        self._release(pn)
        self.ts.done(pn.id)

    def _release(self, pn: PlannedNode) -> None:
        """``pn`` will not read its inputs again: free values nobody else still needs.

        ``remaining`` counts consuming *nodes* (``Plan.consumers``), so a node that reads
        one source on several ports releases it once.
        """
        for src in self.plan.deps[pn.id]:
            self.remaining[src] -= 1
            if self.remaining[src] == 0 and not self.keep_outputs:
                self.values.pop(src, None)

    async def _cancel_running(self) -> None:
        tasks = []
        for node_id, (task, ctx) in self.running.items():
            ctx.stop()
            task.cancel()
            tasks.append(task)
            self.result.node_status[node_id] = "cancelled"
        self.cancel.event.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()

    def _close(self, elapsed: float) -> RunResult:
        r = self.result
        for node_id, pn in self.plan.nodes.items():
            if node_id not in r.node_status:
                r.node_status[node_id] = "skipped"
                reason = "the run was cancelled" if self.cancelled else "the run stopped early"
                self.bus.emit(events.NodeSkipped, node_id=node_id, node_type=pn.type, reason=reason)
        r.elapsed_s = elapsed
        if self.cancelled:
            r.status = "cancelled"
            self.bus.emit(events.RunCancelled, elapsed_s=elapsed)
        elif r.failed_node is not None:
            r.status = "failed"
            self.bus.emit(
                events.RunFailed, elapsed_s=elapsed, error=r.error or "", node_id=r.failed_node
            )
        else:
            r.status = "finished"
            self.bus.emit(
                events.RunFinished,
                elapsed_s=elapsed,
                outputs={k: summarise(v) for k, v in r.outputs.items()},
            )
        return r


def _bypass(pn: PlannedNode, wired: dict[str, Any]) -> dict[str, Any]:
    """A bypassed node passes, for each output, the first wired input of a fitting type."""
    outputs: dict[str, Any] = {}
    for out_name in pn.cls.output_types():
        out_type = pn.types[out_name]
        for in_name, value in wired.items():
            if compatible(pn.types[in_name], out_type):
                outputs[out_name] = value
                break
        else:
            raise NodeError(
                f"node {pn.id} is bypassed but has no input to pass to output '{out_name}'"
            )
    return outputs
