"""The Ray executor on a real local Ray cluster (2 CPUs, started once for this module's
session): example parity with the local executor, overlap of independent nodes, progress
and logs streamed back to the driver, cancellation, and a worker lost mid-node.

Test node types defined here are shipped to the workers by value
(``ray.cloudpickle.register_pickle_by_value``), the way classes from a notebook or a
script's ``__main__`` travel; installed packs travel by reference through their modules.
Workers communicate with the test through files (they are other processes).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO
from pydantic import BaseModel

from flowbuilder import events
from flowbuilder.builder import GraphBuilder
from flowbuilder.context import RunContext
from flowbuilder.engine import Engine
from flowbuilder.errors import RunCancelled
from flowbuilder.graph import Graph, graph_from_data, migrate
from flowbuilder.node import Node, NodeMeta, Param
from flowbuilder.registry import Registry, default_registry
from flowbuilder.scheduler import CancelToken, RunResult
from flowbuilder.settings import Settings
from flowbuilder.types import ArtifactRef

ray = pytest.importorskip("ray")

from flowbuilder.executors.ray import CANCEL_GRACE_S, RayExecutor  # noqa: E402

pytestmark = pytest.mark.ray

EXAMPLES = sorted((REPO / "examples").glob("*.json"))

# ---- test node types (they run in Ray worker processes) ---------------------------------


class Nap(Node):
    """Blocks a worker thread for ``seconds``; reports where and when it ran."""

    meta = NodeMeta(type="raytest/nap", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        seconds: float = Param(1.0)
        label: str = Param("")

    class Outputs(BaseModel):
        pid: int
        start: float
        end: float

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        start = time.time()
        await ctx.to_thread(time.sleep, inputs.seconds)
        return self.Outputs(pid=os.getpid(), start=start, end=time.time())


class Ticker(Node):
    """Reports progress ``steps`` times (from a worker thread) and logs a line."""

    meta = NodeMeta(type="raytest/ticker", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        steps: int = Param(4)

    class Outputs(BaseModel):
        pid: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        def work() -> None:
            for i in range(1, inputs.steps + 1):
                time.sleep(0.02)
                ctx.progress(i / inputs.steps, f"step {i}", delta=str(i))

        ctx.log.info("ticking %d times in pid %d", inputs.steps, os.getpid())
        await ctx.to_thread(work)
        return self.Outputs(pid=os.getpid())


class Spin(Node):
    """Loops for ``seconds`` in a worker thread, checking for cancellation; leaves
    ``started``/``stopped``/``finished`` files in ``folder``."""

    meta = NodeMeta(type="raytest/spin", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        folder: str = Param()
        seconds: float = Param(30.0)

    class Outputs(BaseModel):
        done: bool

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        folder = Path(inputs.folder)

        def work() -> None:
            (folder / "started").write_text(str(os.getpid()))
            ctx.progress(0.0, "spinning")
            deadline = time.monotonic() + inputs.seconds
            try:
                while time.monotonic() < deadline:
                    ctx.check_cancelled()
                    time.sleep(0.02)
            except RunCancelled:
                (folder / "stopped").write_text("")
                raise
            (folder / "finished").write_text("")

        await ctx.to_thread(work)
        return self.Outputs(done=True)


class Stubborn(Node):
    """Blocks its worker's event loop for ``seconds`` and never checks for cancellation."""

    meta = NodeMeta(type="raytest/stubborn", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        folder: str = Param()
        seconds: float = Param(60.0)

    class Outputs(BaseModel):
        done: bool

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        (Path(inputs.folder) / "stubborn").write_text(str(os.getpid()))
        ctx.progress(0.0, "blocking")
        time.sleep(inputs.seconds)  # deliberately blocks the loop
        return self.Outputs(done=True)


class _CrashInputs(BaseModel):
    folder: str = Param()
    label: str = Param("x")


class _CrashOutputs(BaseModel):
    attempt_pid: int


async def _crash_once(ctx: RunContext, inputs: _CrashInputs) -> _CrashOutputs:
    """Kill this worker process on the first attempt of ``label``; succeed afterwards."""
    marker = Path(inputs.folder) / f"crashed-{inputs.label}"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return _CrashOutputs(attempt_pid=os.getpid())


class Crash(Node):
    """Not idempotent (not deterministic): a lost worker fails it."""

    meta = NodeMeta(type="raytest/crash", version="1.0.0", category="Test", deterministic=False)
    Inputs = _CrashInputs
    Outputs = _CrashOutputs

    async def run(self, ctx: RunContext, inputs: _CrashInputs) -> _CrashOutputs:
        return await _crash_once(ctx, inputs)


class CrashIdempotent(Node):
    """Idempotent: a lost worker runs it again."""

    meta = NodeMeta(
        type="raytest/crash_idempotent",
        version="1.0.0",
        category="Test",
        deterministic=False,
        idempotent=True,
    )
    Inputs = _CrashInputs
    Outputs = _CrashOutputs

    async def run(self, ctx: RunContext, inputs: _CrashInputs) -> _CrashOutputs:
        return await _crash_once(ctx, inputs)


class CrashHeavy(Node):
    """A model node (runs on a long-lived actor), idempotent."""

    meta = NodeMeta(
        type="raytest/crash_heavy", version="1.0.0", category="Test", heavy=True, idempotent=True
    )
    Inputs = _CrashInputs
    Outputs = _CrashOutputs

    async def run(self, ctx: RunContext, inputs: _CrashInputs) -> _CrashOutputs:
        return await _crash_once(ctx, inputs)


class Greedy(Node):
    """Asks for more GPUs than a CPU-only cluster has."""

    meta = NodeMeta(type="raytest/greedy", version="1.0.0", category="Test", num_gpus=8)

    class Outputs(BaseModel):
        pid: int

    async def run(self, ctx: RunContext, inputs: BaseModel) -> Outputs:
        return self.Outputs(pid=os.getpid())


RAY_TEST_NODES = (Nap, Ticker, Spin, Stubborn, Crash, CrashIdempotent, CrashHeavy, Greedy)

# ---- the cluster and engines -------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local 2-CPU Ray cluster whose files stay in a short temporary directory (Ray's
    socket paths must stay under 107 bytes); yields its GCS address."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "OMP_NUM_THREADS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Workers would get OMP_NUM_THREADS=1 from Ray; the driver's torch uses every core.
    # The same thread count on both sides keeps float reductions (hence artifacts)
    # identical for the parity test.
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    temp = tempfile.mkdtemp(prefix="fbray-", dir="/tmp")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, _temp_dir=temp, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ray_registry() -> Registry:
    reg = default_registry()
    for cls in RAY_TEST_NODES:
        reg.register(cls)
    return reg


@pytest.fixture(scope="module")
def ray_engine(
    ray_cluster: str, ray_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    settings = Settings.from_env(home=tmp_path_factory.mktemp("ray-home"), executor="ray")
    engine = Engine(ray_registry, settings)
    assert isinstance(engine.executor, RayExecutor)
    yield engine
    engine.close()


def run(engine: Engine, graph: Graph, **kw: Any) -> tuple[RunResult, list[Any]]:
    seen: list[Any] = []
    result = asyncio.run(engine.run(graph, listeners=[seen.append], use_cache=False, **kw))
    return result, seen


# ---- parity: every example graph, local vs Ray -------------------------------------------

EXAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "voice_memo.json": {"audio": str(REPO / "examples" / "jfk.ogg")},
    "meeting_notes.json": {"audio": str(REPO / "examples" / "jfk.ogg")},
}
"""Values for required inputs, by example file; inputs with a default use it. File inputs
not listed here get a bundled file of their kind (see ``_example_inputs``)."""

FILES_BY_KIND = {
    "audio": REPO / "examples" / "jfk.ogg",
    "document": REPO / "examples" / "pep8_excerpt.txt",
}

# Reduced for CI (2 cores): parity compares the same reduced graph under both executors,
# so it stays exact; the full-size examples run in their own tests.
CAPS_ANY = {"max_tokens": 32}  # LLM answers: 32 tokens are enough to compare
CAPS_BY_PREFIX = {
    "rag/": {"max_characters": 1200},  # a shorter context for the LLM to read
    "image/": {"steps": 4},  # diffusion steps
    "training/": {"max_steps": 2, "limit": 16, "max_length": 64, "batch_size": 2},
}
UNBOUNDED_ZERO = {"max_steps", "limit"}  # 0 means "no limit" for these


def _reduced(path: Path, registry: Registry) -> Graph:
    data = migrate(json.loads(path.read_text()), path=str(path))
    for node in data["nodes"]:
        cls = registry.get(node["type"])
        if cls is None:
            continue
        caps = dict(CAPS_ANY)
        for prefix, more in CAPS_BY_PREFIX.items():
            if node["type"].startswith(prefix):
                caps.update(more)
        props = node.setdefault("properties", {})
        for name, cap in caps.items():
            spec = cls.input_specs().get(name)
            if spec is None:
                continue
            value = props.get(name, spec.default)
            if (value == 0 and name in UNBOUNDED_ZERO) or (
                isinstance(value, int | float) and value > cap
            ):
                props[name] = cap
    return graph_from_data(data, path=str(path))


@pytest.fixture(scope="module")
def parity_engines(
    ray_cluster: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, Engine]]:
    """A local and a Ray engine on one data directory (one artifact store, so equal
    artifacts have equal ids)."""
    home = tmp_path_factory.mktemp("parity-home")
    roots = (tmp_path_factory.getbasetemp().resolve(), FIXTURES.resolve())
    local = Engine(default_registry(), Settings.from_env(home=home, file_roots=roots))
    remote_settings = Settings.from_env(home=home, file_roots=roots, executor="ray")
    remote = Engine(default_registry(), remote_settings)
    yield local, remote
    remote.close()


def _ensure_knowledge_bases(graph: Graph, engine: Engine, tmp: Path) -> None:
    """Build, for every knowledge base a graph retrieves from, a small one from a few
    PEPs (reduced for CI: the full 84-PEP base takes minutes to embed on 2 cores)."""
    from flowbuilder.knowledge import KnowledgeBases

    names = {
        str(n.properties.get("knowledge_base"))
        for n in graph.nodes
        if n.type == "rag/retrieve" and n.properties.get("knowledge_base")
    }
    kbs = KnowledgeBases.from_settings(engine.settings)
    for name in sorted(names):
        if name in {kb.name for kb in kbs.list()}:
            continue
        folder = tmp / f"kb-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for pep in ("pep-0008.rst", "pep-0020.rst", "pep-0257.rst"):
            shutil.copy(FIXTURES / "rag" / "peps" / pep, folder / pep)
        b = GraphBuilder(engine.registry)
        ingest = b.add("rag/ingest", path=str(folder), knowledge_base=name)
        sink = b.add("core/output", name="summary")
        b.link(ingest, "summary", sink, "value")
        result = asyncio.run(engine.run(b.build(), use_cache=False))
        assert result.status == "finished", result.error


def _example_inputs(path: Path, engine: Engine, graph: Graph, request: Any) -> dict[str, Any]:
    values = dict(EXAMPLE_INPUTS.get(path.name, {}))
    if path.name == "illustrate.json":  # a local diffusers pipeline, not OpenAI
        values["model"] = str(request.getfixturevalue("tiny_sd"))
    for spec in engine.compile(graph).inputs:
        if spec.name in values or not spec.required:
            continue
        if spec.type in FILES_BY_KIND:
            values[spec.name] = str(FILES_BY_KIND[spec.type])
        else:
            pytest.fail(
                f"{path.name}: no test value for its required input '{spec.name}' "
                f"({spec.type}); add one to EXAMPLE_INPUTS in tests/test_ray.py"
            )
    return values


def _pixels(engine: Engine, ref: ArtifactRef) -> list[int]:
    from PIL import Image

    with Image.open(io.BytesIO(engine.artifacts.path(ref).read_bytes())) as img:
        return list(img.convert("RGB").tobytes())


# Wall-clock measurements (tokens/s, speed-ups, seconds) are outputs of some examples
# (quantize/fine-tune comparisons) but differ from run to run on any executor: parity
# leaves them out, by key in JSON and by column in Markdown tables, and leaves out the
# "chart" images that plot them beside the other metrics.
TIMING = re.compile(
    r"tok(en)?s?[/_ ](per[_ ])?s\b|speed|seconds|elapsed|latency|_s$|per_s|^chart$", re.I
)


def _mask_tables(text: str) -> str:
    """``text`` with the cells of timing columns of Markdown tables blanked."""
    out, columns = [], set[int]()
    for line in text.splitlines():
        if not line.startswith("|"):
            columns = set()
            out.append(line)
            continue
        cells = line.split("|")
        if not columns and not set(line) <= set("|-: "):
            columns = {i for i, c in enumerate(cells) if TIMING.search(c.strip())}
        out.append("|".join("" if i in columns else c for i, c in enumerate(cells)))
    return "\n".join(out)


def assert_same(a: Any, b: Any, engine: Engine, where: str = "") -> None:
    """Exact for text, JSON and artifacts (same bytes, same id); floats to 1e-9
    relative; images, if their bytes differ, to one intensity level per channel;
    timings (see ``TIMING``) are left out."""
    if isinstance(a, str) and isinstance(b, str) and "|" in a:
        a, b = _mask_tables(a), _mask_tables(b)
    if isinstance(a, ArtifactRef):
        assert isinstance(b, ArtifactRef), f"{where}: {b!r} is not an artifact"
        if a.id != b.id:
            assert a.kind == b.kind == "image", f"{where}: artifacts differ: {a!r} vs {b!r}"
            pa, pb = _pixels(engine, a), _pixels(engine, b)
            assert len(pa) == len(pb), where
            assert max(abs(x - y) for x, y in zip(pa, pb, strict=True)) <= 1, where
        return
    if isinstance(a, BaseModel):
        assert type(a) is type(b), where
        a, b = a.model_dump(), b.model_dump()  # type: ignore[union-attr]
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a!r} vs {b!r}"
        for key in a:
            if not TIMING.search(str(key)):
                assert_same(a[key], b[key], engine, f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, engine, f"{where}[{i}]")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_parity(
    path: Path,
    parity_engines: tuple[Engine, Engine],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    local, remote = parity_engines
    graph = _reduced(path, local.registry)
    _ensure_knowledge_bases(graph, local, tmp_path)
    values = _example_inputs(path, local, graph, request)
    ours, seen_local = run(local, graph, inputs=values, base_dir=REPO)
    theirs, seen_ray = run(remote, graph, inputs=values, base_dir=REPO)
    assert ours.status == "finished", ours.error
    assert theirs.status == "finished", theirs.error
    assert ours.outputs and set(ours.outputs) == set(theirs.outputs)
    assert_same(ours.outputs, theirs.outputs, local)

    # the same events, node by node (progress counts may differ with timing)
    def shape(seen: list[Any]) -> list[tuple[str, str]]:
        return sorted(
            (e.type, getattr(e, "node_id", "")) for e in seen if e.type != "node_progress"
        )

    assert shape(seen_local) == shape(seen_ray)
    progress_local = {e.node_id for e in seen_local if e.type == "node_progress"}
    progress_ray = {e.node_id for e in seen_ray if e.type == "node_progress"}
    assert progress_local == progress_ray


# Reuse the tiny Stable Diffusion pipeline of the image tests for illustrate.json.
from test_image import tiny_sd  # noqa: E402, F401

# ---- Ray mechanics -----------------------------------------------------------------------


def test_independent_nodes_overlap_on_different_workers(ray_engine: Engine) -> None:
    b = GraphBuilder(ray_engine.registry)
    first = b.add("raytest/nap", seconds=1.5, label="a")
    second = b.add("raytest/nap", seconds=1.5, label="b")
    for node, name in ((first, "a"), (second, "b")):
        b.link(node, "pid", b.add("core/output", name=name), "value")
    run(ray_engine, b.build())  # warm both workers
    b2 = GraphBuilder(ray_engine.registry)
    n1 = b2.add("raytest/nap", seconds=1.5, label="c")
    n2 = b2.add("raytest/nap", seconds=1.5, label="d")
    b2.link(n1, "pid", b2.add("core/output", name="pa"), "value")
    b2.link(n2, "pid", b2.add("core/output", name="pb"), "value")
    start = time.perf_counter()
    result, _ = run(ray_engine, b2.build(), keep_outputs=True)
    wall = time.perf_counter() - start
    assert result.status == "finished", result.error
    a, b_ = result.node_outputs[str(n1)], result.node_outputs[str(n2)]
    assert a["pid"] != b_["pid"] and os.getpid() not in (a["pid"], b_["pid"])
    assert a["start"] < b_["end"] and b_["start"] < a["end"], "the two naps did not overlap"
    assert wall < 2.6, f"two 1.5 s naps took {wall:.2f} s"


def test_progress_and_logs_reach_the_driver(
    ray_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    b = GraphBuilder(ray_engine.registry)
    tick = b.add("raytest/ticker", steps=4)
    b.link(tick, "pid", b.add("core/output", name="pid"), "value")
    with caplog.at_level("INFO", logger="flowbuilder.node.raytest/ticker"):
        result, seen = run(ray_engine, b.build())
    assert result.status == "finished", result.error
    assert result.outputs["pid"] != os.getpid()
    mine = [e for e in seen if getattr(e, "node_id", None) == str(tick)]
    kinds = [e.type for e in mine]
    assert kinds[0] == "node_started" and kinds[-1] == "node_finished"
    progress = [e for e in mine if isinstance(e, events.NodeProgress)]
    assert [p.fraction for p in progress] == [0.25, 0.5, 0.75, 1.0]
    assert [p.message for p in progress] == ["step 1", "step 2", "step 3", "step 4"]
    assert [p.delta for p in progress] == ["1", "2", "3", "4"]
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert any(
        f"ticking 4 times in pid {result.outputs['pid']}" in r.getMessage() for r in caplog.records
    )


def _wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (an exited one its parent has not reaped yet, a
    zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` has ended, waiting up to ``seconds`` for it."""
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def test_cancellation_stops_ray_tasks(ray_engine: Engine, tmp_path: Path) -> None:
    """A cancelled run cancels its Ray tasks: a node that checks stops (its
    ``ctx.check_cancelled()`` raises on the worker); one that never checks has its
    worker process ended after the grace period."""
    b = GraphBuilder(ray_engine.registry)
    spin = b.add("raytest/spin", folder=str(tmp_path), seconds=30)
    stub = b.add("raytest/stubborn", folder=str(tmp_path), seconds=60)
    b.link(spin, "done", b.add("core/output", name="a"), "value")
    b.link(stub, "done", b.add("core/output", name="b"), "value")
    token = CancelToken()
    started: set[str] = set()

    def listener(event: Any) -> None:
        if isinstance(event, events.NodeProgress):
            started.add(event.node_id)
            if len(started) == 2:
                token.cancel()

    def give_up() -> None:  # fail rather than hang if progress never arrives
        if not token.cancelled:
            token.cancel()

    timer = threading.Timer(60, give_up)
    timer.start()
    t0 = time.perf_counter()
    try:
        result = asyncio.run(ray_engine.run(b.build(), listeners=[listener], cancel=token))
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    assert started == {str(spin), str(stub)}, "both nodes should have reported progress"
    assert result.status == "cancelled"
    assert result.node_status[str(spin)] == "cancelled"
    assert _wait_for(tmp_path / "stopped", 5), "the spinning node never saw the cancellation"
    assert elapsed < 30
    stub_pid = int((tmp_path / "stubborn").read_text())
    assert _gone_within(stub_pid, CANCEL_GRACE_S + 5), (
        "the worker blocked in the stubborn node was not ended"
    )
    time.sleep(1)
    assert not (tmp_path / "finished").exists()


def test_a_lost_worker_fails_the_node_with_a_clear_error(
    ray_engine: Engine, tmp_path: Path
) -> None:
    b = GraphBuilder(ray_engine.registry)
    crash = b.add("raytest/crash", folder=str(tmp_path), label="plain")
    b.link(crash, "attempt_pid", b.add("core/output", name="pid"), "value")
    result, seen = run(ray_engine, b.build())
    assert result.status == "failed" and result.failed_node == str(crash)
    error = result.node_errors[str(crash)]
    assert error.startswith(f"node {crash} (raytest/crash) lost its Ray worker mid-run")
    assert "WorkerCrashedError" in error and "not marked idempotent" in error
    starts = [e for e in seen if isinstance(e, events.NodeStarted) and e.node_id == str(crash)]
    assert [e.attempt for e in starts] == [1]  # neither Ray nor the scheduler re-ran it
    crashed_pid = int((tmp_path / "crashed-plain").read_text())
    assert _gone_within(crashed_pid, 10)


@pytest.mark.parametrize("type_id", ["raytest/crash_idempotent", "raytest/crash_heavy"])
def test_a_lost_worker_reruns_an_idempotent_node(
    ray_engine: Engine, tmp_path: Path, type_id: str
) -> None:
    b = GraphBuilder(ray_engine.registry)
    crash = b.add(type_id, folder=str(tmp_path), label=type_id.split("/")[1])
    b.link(crash, "attempt_pid", b.add("core/output", name="pid"), "value")
    result, seen = run(ray_engine, b.build())
    assert result.status == "finished", result.error
    crashed_pid = int((tmp_path / f"crashed-{type_id.split('/')[1]}").read_text())
    assert result.outputs["pid"] != crashed_pid  # a fresh worker (or actor) ran it
    starts = [e for e in seen if isinstance(e, events.NodeStarted) and e.node_id == str(crash)]
    assert [e.attempt for e in starts] == [1, 2]


def test_unsatisfiable_resources_fail_at_once(ray_engine: Engine) -> None:
    b = GraphBuilder(ray_engine.registry)
    greedy = b.add("raytest/greedy")
    b.link(greedy, "pid", b.add("core/output", name="pid"), "value")
    result, _ = run(ray_engine, b.build())
    assert result.status == "failed"
    assert result.node_errors[str(greedy)] == (
        f"node {greedy} (raytest/greedy) asks for 8 GPU(s) but the Ray cluster has 0 in all"
    )


def test_cli_runs_on_an_existing_cluster(
    ray_cluster: str, tmp_path: Path, registry: Registry
) -> None:
    """``flowbuilder run --executor ray --address <cluster>`` joins the running cluster;
    its outputs equal the local executor's."""
    import subprocess

    from flowbuilder.graph import save_graph

    b = GraphBuilder(registry)
    text = b.add("core/text", text="ray")
    tpl = b.add("core/template", template="hello {{ text }}")
    b.link(text, "text", tpl, "text")
    b.link(tpl, "text", b.add("core/output", name="greeting"), "value")
    path = tmp_path / "g.json"
    save_graph(b.build(), path)
    env = {**os.environ, "FLOWBUILDER_HOME": str(tmp_path / "home"), "RAY_AUTH_MODE": "disabled"}
    cli = str(Path(sys.executable).parent / "flowbuilder")
    outs = {}
    for args in (["--executor", "local"], ["--executor", "ray", "--address", ray_cluster]):
        proc = subprocess.run(
            [cli, "run", str(path), "--json", "--no-cache", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outs[args[1]] = json.loads(proc.stdout)["outputs"]
    assert outs["local"] == outs["ray"] == {"greeting": "hello ray"}
    bad = subprocess.run(
        [cli, "run", str(path), "--executor", "spark"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "unknown executor 'spark'" in bad.stderr
