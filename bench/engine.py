"""Scheduler overhead and branch overlap, each measured beside its baseline in one run.

    .venv/bin/python bench/engine.py

(a) Overhead: 10,000 trivial nodes as a chain and as a fan-out (one source, 10,000
    consumers), run with ``use_cache=False`` and no listeners, against the same number of
    ``await node.run(ctx, inputs)`` calls made directly in one loop. Reported in µs per
    node, with the ratio scheduler / bare loop. Target: <= 50 µs per node.
(b) Overlap: 20 independent nodes that each await 200 ms, as one graph under the
    scheduler against the same nodes run one by one (one single-node run after another).
    Target: <= 0.3 s for the 20 branches.

Graphs are written as LiteGraph data directly (GraphBuilder looks nodes up linearly,
which is fine for a canvas but not for 10,000 nodes) and compiled once outside the timed
part. Everything stays on this machine; no network, no models.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flowbuilder.context import RunContext
from flowbuilder.engine import Engine
from flowbuilder.events import EventBus
from flowbuilder.graph import SCHEMA_VERSION, Graph, graph_from_data
from flowbuilder.node import Node, NodeMeta, Param, Port
from flowbuilder.registry import default_registry
from flowbuilder.settings import Settings

N = 10_000
BRANCHES, WAIT_S = 20, 0.2
REPEATS = 3


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


class Wait(Node):
    """Bench node: awaits ``seconds`` (a stand-in for a remote call)."""

    meta = NodeMeta(type="bench/wait", version="1.0.0", category="Bench")

    class Inputs(BaseModel):
        seconds: float = Param(0.0)
        tag: int = Param(0)

    class Outputs(BaseModel):
        value: float

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        await asyncio.sleep(inputs.seconds)
        return self.Outputs(value=inputs.seconds)


def _node(node_id: int, type_id: str, props: dict[str, Any], linked_in: int | None) -> dict:
    return {
        "id": node_id,
        "type": type_id,
        "pos": [0.0, 0.0],
        "size": [200.0, 80.0],
        "flags": {},
        "order": node_id,
        "mode": 0,
        "inputs": [{"name": "value", "type": "any", "link": linked_in}] if linked_in else [],
        "outputs": [{"name": "value", "type": "any", "links": []}],
        "properties": props,
    }


def _graph(nodes: list[dict], links: list[list[Any]]) -> Graph:
    return graph_from_data(
        {
            "last_node_id": max(n["id"] for n in nodes),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"flowbuilder": {"schema": SCHEMA_VERSION}},
            "version": 0.4,
        }
    )


def chain_graph(n: int) -> Graph:
    nodes, links = [_node(1, "bench/noop", {"tag": 1}, None)], []
    for i in range(2, n + 1):
        links.append([i - 1, i - 1, 0, i, 0, "any"])
        nodes.append(_node(i, "bench/noop", {"tag": i}, i - 1))
        nodes[i - 2]["outputs"][0]["links"].append(i - 1)
    return _graph(nodes, links)


def fanout_graph(consumers: int) -> Graph:
    nodes, links = [_node(1, "bench/noop", {"tag": 0}, None)], []
    for i in range(2, consumers + 2):
        links.append([i - 1, 1, 0, i, 0, "any"])
        nodes.append(_node(i, "bench/noop", {"tag": i}, i - 1))
        nodes[0]["outputs"][0]["links"].append(i - 1)
    return _graph(nodes, links)


def wait_graph(branches: int, seconds: float) -> Graph:
    nodes = [
        _node(i, "bench/wait", {"seconds": seconds, "tag": i}, None) for i in range(1, 1 + branches)
    ]
    for n in nodes:
        n["outputs"][0]["type"] = "number"
    return _graph(nodes, [])


def best_of(repeats: int, fn: Callable[[], Awaitable[Any]]) -> float:
    """The fastest of ``repeats`` timed runs of ``fn`` in seconds (each on a fresh loop)."""

    async def timed() -> float:
        t0 = time.perf_counter()
        await fn()
        return time.perf_counter() - t0

    times = []
    for _ in range(repeats):
        gc.collect()
        times.append(asyncio.run(timed()))
    return min(times)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="flowbuilder-bench-"))
    registry = default_registry()
    registry.register(Noop)
    registry.register(Wait)
    engine = Engine(registry, Settings.from_env(home=home))

    # ---- (a) scheduling overhead -------------------------------------------------------
    chain = engine.compile(chain_graph(N))
    fanout = engine.compile(fanout_graph(N))

    async def bare() -> None:
        loop = asyncio.get_running_loop()
        ctx = RunContext(
            run_id="bench",
            node_id="1",
            node_type=Noop.meta.type,
            artifacts=engine.artifacts,
            models=engine.models,
            settings=engine.settings,
            providers=engine.providers,
            bus=EventBus("bench"),
            cancel=threading.Event(),
            loop=loop,
        )
        inputs = Noop.Inputs(value=1)
        for _ in range(N):
            await Noop().run(ctx, inputs)

    def sched(plan: Any) -> Callable[[], Awaitable[Any]]:
        async def go() -> None:
            result = await engine.run(plan, use_cache=False)
            assert result.status == "finished", result.error

        return go

    t_bare = best_of(REPEATS, bare)
    t_chain = best_of(REPEATS, sched(chain))
    t_fan = best_of(REPEATS, sched(fanout))

    async def chain_cold_cache() -> None:
        engine.cache.clear()  # type: ignore[union-attr]
        result = await engine.run(chain)
        assert result.status == "finished", result.error

    t_cached = best_of(REPEATS, chain_cold_cache)
    us = 1e6 / N

    # ---- (b) overlap of independent branches --------------------------------------------
    together = engine.compile(wait_graph(BRANCHES, WAIT_S))
    single = engine.compile(wait_graph(1, WAIT_S))

    async def parallel() -> None:
        result = await engine.run(together, use_cache=False)
        assert result.status == "finished", result.error

    async def one_by_one() -> None:
        for _ in range(BRANCHES):
            result = await engine.run(single, use_cache=False)
            assert result.status == "finished", result.error

    t_par = statistics.median(best_of(1, parallel) for _ in range(3))
    t_seq = best_of(1, one_by_one)

    # ---- report --------------------------------------------------------------------------
    print(f"flowbuilder scheduler bench (Python {sys.version.split()[0]})")
    print()
    print(f"(a) overhead, {N:,} trivial nodes, use_cache=False, no listeners, best of {REPEATS}")
    print(f"    {'case':<40}{'total s':>9}{'µs/node':>10}{'× bare':>9}")
    rows = [
        ("bare loop: await node.run()", t_bare),
        ("scheduler: chain", t_chain),
        ("scheduler: fan-out (1 → 10,000)", t_fan),
    ]
    for name, t in rows:
        print(f"    {name:<40}{t:>9.3f}{t * us:>10.1f}{t / t_bare:>9.1f}")
    name = "for reference: chain, cache on (cold)"
    print(f"    {name:<40}{t_cached:>9.3f}{t_cached * us:>10.1f}{t_cached / t_bare:>9.1f}")
    worst = max(t_chain, t_fan) * us
    print(f"    target ≤ 50 µs/node: {'met' if worst <= 50 else 'MISSED'} (worst {worst:.1f})")
    print()
    print(f"(b) {BRANCHES} independent nodes awaiting {WAIT_S * 1000:.0f} ms each")
    print(f"    {'case':<40}{'wall s':>9}")
    print(f"    {'one by one (sequential runs)':<40}{t_seq:>9.3f}")
    print(f"    {'scheduler, one graph (median of 3)':<40}{t_par:>9.3f}")
    verdict = "met" if t_par <= 0.3 else "MISSED"
    print(f"    speed-up {t_seq / t_par:.1f}×; target ≤ 0.3 s: {verdict}")


if __name__ == "__main__":
    main()
