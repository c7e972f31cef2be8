"""The engine: one long-lived object per process that turns graph files into runs.

It owns the registry, settings, artifact store, model cache, output cache and the
scheduler, so the CLI, the server and tests all run graphs the same way::

    engine = Engine()
    result = await engine.run(load_graph("examples/voice_memo.json"),
                              {"audio": "speech.flac"})
    result.outputs["summary"]

Where nodes run follows ``settings.executor`` (``FLOWBUILDER_EXECUTOR``): ``local`` in
this process, ``ray`` on a Ray cluster (see :mod:`flowbuilder.executors`). The server
runs through ``engine.scheduler`` and so follows the same setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from flowbuilder import events
from flowbuilder.artifacts import ArtifactStore
from flowbuilder.cache import MemoryCache
from flowbuilder.datadir import secure_home
from flowbuilder.errors import InputError, NodeError
from flowbuilder.executors import Executor, make_executor
from flowbuilder.graph import Graph
from flowbuilder.models import ModelCache
from flowbuilder.providers import default_providers
from flowbuilder.registry import Registry, default_registry
from flowbuilder.scheduler import CancelToken, RunResult, Scheduler
from flowbuilder.settings import Settings
from flowbuilder.types import REF_CLASSES, ArtifactRef, python_type, to_jsonable

__all__ = ["Engine", "to_jsonable"]
from flowbuilder.validate import Plan, compile_graph


class Engine:
    """Registry + services + scheduler. Safe to share across runs in one process.

    ``executor`` overrides the one ``settings.executor`` names (e.g. a
    :class:`~flowbuilder.executors.ray.RayExecutor` shared by several engines).
    """

    def __init__(
        self,
        registry: Registry | None = None,
        settings: Settings | None = None,
        *,
        cache: bool = True,
        executor: Executor | None = None,
    ) -> None:
        self.registry = registry if registry is not None else default_registry()
        self.settings = settings or Settings.from_env()
        secure_home(self.settings.home)  # 0700, its files 0600, fixed at every start
        self.artifacts = ArtifactStore(self.settings.artifacts_root)
        self.models = ModelCache(self.settings.model_memory_mb)
        self.cache = MemoryCache() if cache else None
        self.providers = default_providers(self.settings)
        self.executor = executor if executor is not None else make_executor(self.settings)
        self.scheduler = Scheduler(
            artifacts=self.artifacts,
            models=self.models,
            settings=self.settings,
            providers=self.providers,
            cache=self.cache,
            executor=self.executor,
        )

    def close(self) -> None:
        """Release the executor's resources (Ray actors; a local Ray cluster it started)."""
        self.executor.close()

    def compile(self, graph: Graph) -> Plan:
        """Check a graph (see :func:`flowbuilder.validate.compile_graph`)."""
        return compile_graph(graph, self.registry)

    def bind_inputs(
        self, plan: Plan, values: dict[str, Any], base_dir: Path | None = None
    ) -> dict[str, Any]:
        """Check flow input values against the signature; return them by Input node id.

        File-typed inputs (audio, image, …) accept an :class:`ArtifactRef`, its dict form,
        or a path, which is copied into the artifact store. With ``base_dir`` the path is
        the caller's own (the command line's ``--input audio=memo.ogg``): relative paths
        resolve against ``base_dir`` and any file may be read. Without it the path goes
        through the file-access policy like a node's parameter (relative: in the
        workspace; :mod:`flowbuilder.files`).

        Raises:
            InputError: an unknown name, a missing required input, or a wrong value type.
        """
        known = {i.name: i for i in plan.inputs}
        for name in values:
            if name not in known:
                names = ", ".join(known) or "none"
                raise InputError(name, f"this flow has no such input (its inputs: {names})")
        bound: dict[str, Any] = {}
        for spec in plan.inputs:
            if spec.name not in values:
                if spec.required:
                    raise InputError(spec.name, f"a value is required ({spec.type})")
                continue
            value = values[spec.name]
            if spec.type in REF_CLASSES:
                value = self._artifact_input(spec.name, spec.type, value, base_dir)
            else:
                try:
                    value = TypeAdapter(python_type(spec.type)).validate_python(value, strict=True)
                except ValidationError as exc:
                    if spec.type == "number" and isinstance(value, int):
                        value = float(value)
                    else:
                        msg = exc.errors()[0]["msg"]
                        raise InputError(spec.name, f"expected {spec.type}: {msg}") from None
            bound[spec.node_id] = value
        return bound

    def _artifact_input(
        self, name: str, kind: str, value: Any, base_dir: Path | None
    ) -> ArtifactRef:
        cls = REF_CLASSES[kind]
        if isinstance(value, ArtifactRef):
            value = value.model_dump()
        if isinstance(value, dict):
            try:
                ref = cls.model_validate({**value, "kind": kind} if kind != "file" else value)
            except ValidationError as exc:
                raise InputError(
                    name, f"not an artifact reference: {exc.errors()[0]['msg']}"
                ) from None
            try:
                self.artifacts.path(ref)
            except NodeError as exc:
                raise InputError(name, str(exc)) from None
            return ref
        if isinstance(value, str | os.PathLike):
            if base_dir is None:
                try:
                    with self.scheduler.files.open_read(os.fspath(value)) as fh:
                        return self.artifacts.put_stream(fh, name=Path(value).name, kind=kind)
                except NodeError as exc:
                    raise InputError(name, str(exc)) from None
            path = Path(value).expanduser()
            if not path.is_absolute():
                path = base_dir / path
            if not path.is_file():
                raise InputError(name, f"file not found: {path}")
            return self.artifacts.put_file(path, kind=kind)
        raise InputError(
            name, f"expected a file path or an artifact reference, not {type(value).__name__}"
        )

    async def run(
        self,
        graph: Graph | Plan,
        inputs: dict[str, Any] | None = None,
        *,
        listeners: list[events.Listener] | None = None,
        keep_going: bool = False,
        use_cache: bool = True,
        node_timeout: float | None = None,
        cancel: CancelToken | None = None,
        run_id: str | None = None,
        keep_outputs: bool = False,
        base_dir: Path | None = None,
    ) -> RunResult:
        """Check, bind inputs and run a graph.

        Raises:
            GraphInvalid: the graph has problems (nothing ran).
            InputError: an input value is missing or wrong (nothing ran).
        """
        plan = graph if isinstance(graph, Plan) else self.compile(graph)
        bound = self.bind_inputs(plan, inputs or {}, base_dir)
        return await self.scheduler.execute(
            plan,
            bound,
            run_id=run_id,
            listeners=listeners,
            keep_going=keep_going,
            use_cache=use_cache,
            node_timeout=node_timeout,
            cancel=cancel,
            keep_outputs=keep_outputs,
        )
