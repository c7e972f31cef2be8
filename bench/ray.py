"""The Ray executor against the local (thread) executor, side by side in one run.

    .venv/bin/python bench/ray.py

(a) CPU-bound: 8 independent nodes, each about 1 s of pure-Python work that holds the GIL
    (an integer loop, calibrated on this machine), in worker threads under the local
    executor (the GIL lets one run at a time) against Ray tasks on a local cluster with
    one CPU per core. Target: Ray ≥ 1.6× faster on 2 cores.
(b) Overhead: trivial nodes that pass a value through, as 200 independent nodes and as a
    chain of 50, run with ``use_cache=False`` and no listeners. Reported in µs per node,
    local against Ray; the difference is Ray's per-task cost (scheduling, a worker
    round trip, the streamed result) as the scheduler sees it.

Ray is started once (``ray.init(num_cpus=os.cpu_count())``, its files under a temporary
directory, no dashboard) and warmed with one run of each graph before anything is timed,
so worker start-up is not counted. Input/Output nodes run on the driver under both
executors. Timings are best of ``REPEATS``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# This file is named ray.py: its folder (first on the path when run as a script) must not
# shadow the ray package.
sys.path.remove(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray starts its workers at niceness 15; on a machine shared with other work that would
# measure the scheduler's priority, not the executors. Same priority as this process:
os.environ.setdefault("RAY_worker_niceness", "0")

from flowbuilder.builder import GraphBuilder
from flowbuilder.context import RunContext
from flowbuilder.engine import Engine
from flowbuilder.executors.ray import RayExecutor
from flowbuilder.graph import Graph
from flowbuilder.node import Node, NodeMeta, Param, Port
from flowbuilder.registry import Registry, default_registry
from flowbuilder.settings import Settings

CPU_NODES, CPU_SECONDS = 8, 1.0
FAN, CHAIN = 200, 50
REPEATS = 3


def burn(n: int) -> int:
    """Pure-Python integer work (holds the GIL throughout)."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


class Burn(Node):
    """Bench node: ``burn(n)`` in a worker thread."""

    meta = NodeMeta(type="bench/burn", version="1.0.0", category="Bench")

    class Inputs(BaseModel):
        n: int = Param(1)
        tag: int = Param(0)

    class Outputs(BaseModel):
        value: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        return self.Outputs(value=await ctx.to_thread(burn, inputs.n))


class Noop(Node):
    """Bench node: passes its value through."""

    meta = NodeMeta(type="bench/noop", version="1.0.0", category="Bench")

    class Inputs(BaseModel):
        value: Any = Port(None)
        tag: int = Param(0)

    class Outputs(BaseModel):
        value: Any

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        return self.Outputs(value=inputs.value)


def calibrate(seconds: float) -> int:
    """The loop count that makes ``burn`` take about ``seconds`` here."""
    n = 200_000
    while True:
        t0 = time.perf_counter()
        burn(n)
        took = time.perf_counter() - t0
        if took > 0.2:
            return int(n * seconds / took)
        n *= 2


def cpu_graph(registry: Registry, n: int, nodes: int) -> Graph:
    b = GraphBuilder(registry)
    for i in range(nodes):
        node = b.add("bench/burn", n=n, tag=i)
        b.link(node, "value", b.add("core/output", name=f"v{i}"), "value")
    return b.build()


def fan_graph(registry: Registry, nodes: int) -> Graph:
    b = GraphBuilder(registry)
    for i in range(nodes):
        b.add("bench/noop", tag=i)
    return b.build()


def chain_graph(registry: Registry, nodes: int) -> Graph:
    b = GraphBuilder(registry)
    prev = b.add("bench/noop", tag=0)
    for i in range(1, nodes):
        node = b.add("bench/noop", tag=i)
        b.link(prev, "value", node, "value")
        prev = node
    return b.build()


def timed(engine: Engine, graph: Graph, repeats: int = REPEATS) -> float:
    """Best wall time in seconds of ``repeats`` runs (each asserted to finish)."""
    plan = engine.compile(graph)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = asyncio.run(engine.run(plan, use_cache=False))
        best = min(best, time.perf_counter() - t0)
        assert result.status == "finished", result.error
    return best


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="flowbuilder-bench-"))
    ray_tmp = tempfile.mkdtemp(prefix="fbray-", dir="/tmp")
    registry = default_registry()
    registry.register(Burn)
    registry.register(Noop)
    settings = Settings.from_env(home=home)
    local = Engine(registry, settings)
    executor = RayExecutor(settings, init_kwargs={"_temp_dir": ray_tmp})
    remote = Engine(registry, settings, executor=executor)
    try:
        t0 = time.perf_counter()
        executor.start()
        t_start = time.perf_counter() - t0
        n = calibrate(CPU_SECONDS)
        cpu = cpu_graph(registry, n, CPU_NODES)
        fan, chain = fan_graph(registry, FAN), chain_graph(registry, CHAIN)
        for graph in (cpu_graph(registry, n // 20, 2), fan, chain):  # start and warm workers
            timed(remote, graph, 1)

        t_cpu_local = timed(local, cpu, 1)
        t_cpu_ray = timed(remote, cpu, 2)
        t_fan_local, t_fan_ray = timed(local, fan), timed(remote, fan)
        t_chain_local, t_chain_ray = timed(local, chain), timed(remote, chain)
    finally:
        executor.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)

    cores = os.cpu_count()
    print(f"flowbuilder Ray executor bench (Python {sys.version.split()[0]}, {cores} cores)")
    print(f"ray.init (local cluster, {cores} CPUs): {t_start:.1f} s, not counted below")
    print()
    print(f"(a) {CPU_NODES} CPU-bound nodes, ~{CPU_SECONDS:g} s of pure Python each (n={n:,})")
    print(f"    {'executor':<34}{'wall s':>9}{'speed-up':>10}")
    print(f"    {'local (worker threads, one GIL)':<34}{t_cpu_local:>9.2f}{1:>9.2f}×")
    speedup = t_cpu_local / t_cpu_ray
    print(f"    {'ray (one task per node)':<34}{t_cpu_ray:>9.2f}{speedup:>9.2f}×")
    print(f"    target ≥ 1.6×: {'met' if speedup >= 1.6 else 'MISSED'}")
    print()
    print(f"(b) per-node overhead, trivial nodes, best of {REPEATS}")
    print(f"    {'graph':<28}{'local µs/node':>15}{'ray µs/node':>13}{'ray/local':>11}")
    for name, count, t_local, t_ray in (
        (f"{FAN} independent nodes", FAN, t_fan_local, t_fan_ray),
        (f"chain of {CHAIN} nodes", CHAIN, t_chain_local, t_chain_ray),
    ):
        a, b = t_local / count * 1e6, t_ray / count * 1e6
        print(f"    {name:<28}{a:>15.0f}{b:>13.0f}{b / a:>10.0f}×")
    print(
        f"    Ray's cost per task ≈ {(t_chain_ray - t_chain_local) / CHAIN * 1e3:.1f} ms "
        f"in a chain (latency), "
        f"{(t_fan_ray - t_fan_local) / FAN * 1e3:.1f} ms per node when {FAN} overlap"
    )


if __name__ == "__main__":
    main()
