"""The scheduler as a user of the engine sees it: dataflow order, overlap of independent
branches, the event stream, failures, cancellation, timeouts, retries, the content cache,
flow inputs and the freeing of intermediate values."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import Counter, Flaky, Sleep
from pydantic import BaseModel

from flowbuilder.builder import GraphBuilder
from flowbuilder.context import RunContext
from flowbuilder.engine import Engine
from flowbuilder.errors import InputError
from flowbuilder.graph import Graph
from flowbuilder.node import Node, NodeMeta, Param, Port
from flowbuilder.registry import Registry
from flowbuilder.scheduler import CancelToken, RunResult
from flowbuilder.types import ArtifactRef, DocumentRef


class Steps(Node):
    """Test node: reports progress from a worker thread, one event per step."""

    meta = NodeMeta(type="test/steps", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        steps: int = Param(3, ge=1)

    class Outputs(BaseModel):
        steps: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        def work() -> int:
            for i in range(1, inputs.steps + 1):
                ctx.progress(i / inputs.steps, f"step {i} of {inputs.steps}")
            return inputs.steps

        return self.Outputs(steps=await ctx.to_thread(work))


class Spin(Node):
    """Test node: blocking work in a worker thread that polls for cancellation.

    ``how`` is ``check`` (``ctx.check_cancelled()``) or ``progress`` (``ctx.progress``).
    The loop gives up by itself after ~10 s, recording that it ran out, so a scheduler
    that never tells it to stop fails the test instead of hanging it.
    """

    meta = NodeMeta(type="test/spin", version="1.0.0", category="Test")
    started: dict[str, threading.Event] = {}
    stopped: dict[str, threading.Event] = {}
    ran_out: set[str] = set()

    class Inputs(BaseModel):
        label: str = Param("spin")
        how: Literal["check", "progress"] = Param("check")

    class Outputs(BaseModel):
        value: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        started = Spin.started.setdefault(inputs.label, threading.Event())
        stopped = Spin.stopped.setdefault(inputs.label, threading.Event())

        def work() -> str:
            started.set()
            try:
                for _ in range(2000):
                    if inputs.how == "check":
                        ctx.check_cancelled()
                    else:
                        ctx.progress(None, "spinning")
                    time.sleep(0.005)
                Spin.ran_out.add(inputs.label)
                return "ran out"
            finally:
                stopped.set()

        return self.Outputs(value=await ctx.to_thread(work))


class Clock(Node):
    """Test node: not deterministic; appends a fresh timestamp to its text."""

    meta = NodeMeta(type="test/clock", version="1.0.0", category="Test", deterministic=False)
    runs: list[str] = []

    class Inputs(BaseModel):
        text: str = Port("")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        Clock.runs.append(ctx.node_id)
        return self.Outputs(text=f"{inputs.text}@{time.perf_counter_ns()}")


class Unanswered(Node):
    """Test node: its own remote call times out (a TimeoutError not raised by the scheduler)."""

    meta = NodeMeta(type="test/unanswered", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        seconds: float = Param(0.0)

    class Outputs(BaseModel):
        value: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        await asyncio.sleep(inputs.seconds)
        raise TimeoutError("the server did not answer within 30 s")


class HeavySleep(Node):
    """Test node: model work (``heavy``) that awaits ``seconds`` and records when it ran."""

    meta = NodeMeta(type="test/heavy_sleep", version="1.0.0", category="Test", heavy=True)
    log: list[tuple[str, float, float]] = []

    class Inputs(BaseModel):
        seconds: float = Param(0.0)
        label: str = Param("")

    class Outputs(BaseModel):
        value: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        start = time.perf_counter()
        await asyncio.sleep(inputs.seconds)
        HeavySleep.log.append((ctx.node_id, start, time.perf_counter()))
        return self.Outputs(value=inputs.label)


@pytest.fixture(autouse=True)
def _more_test_nodes(registry: Registry) -> None:
    for cls in (Steps, Spin, Clock, Unanswered, HeavySleep):
        registry.register(cls)
    Spin.started.clear()
    Spin.stopped.clear()
    Spin.ran_out.clear()
    Clock.runs.clear()
    HeavySleep.log.clear()


def run(engine: Engine, graph: Graph, inputs: dict[str, Any] | None = None, **kw: Any) -> RunResult:
    return asyncio.run(engine.run(graph, inputs, **kw))


def sleep_times() -> dict[str, tuple[float, float]]:
    """(start, end) of every test/sleep node that ran, by node id."""
    return {node_id: (start, end) for node_id, start, end in Sleep.log}


# ---- dataflow and overlap -------------------------------------------------------------


def test_independent_nodes_run_at_the_same_time(engine: Engine, builder: GraphBuilder) -> None:
    ids = [str(builder.add("test/sleep", seconds=0.3)) for _ in range(4)]
    t0 = time.perf_counter()
    result = run(engine, builder.build())
    wall = time.perf_counter() - t0

    assert result.status == "finished"
    times = sleep_times()
    assert sorted(times) == sorted(ids)
    assert max(start for start, _ in times.values()) < min(end for _, end in times.values())
    assert wall < 0.6


def test_a_chain_runs_in_order(engine: Engine, builder: GraphBuilder) -> None:
    a = builder.add("test/sleep", seconds=0.05, label="x")
    b = builder.add("test/sleep", seconds=0.05)
    c = builder.add("test/sleep", seconds=0.05)
    builder.link(a, "value", b, "value")
    builder.link(b, "value", c, "value")
    result = run(engine, builder.build(), keep_outputs=True)

    assert result.status == "finished"
    times = sleep_times()
    assert times[str(a)][1] <= times[str(b)][0]
    assert times[str(b)][1] <= times[str(c)][0]
    assert result.node_outputs[str(c)] == {"value": "x"}


def test_a_node_starts_when_its_own_inputs_are_ready(engine: Engine, builder: GraphBuilder) -> None:
    # Two "levels": A -> C and B -> D. C must not wait for the slow B.
    a = builder.add("test/sleep", seconds=0.05)
    b = builder.add("test/sleep", seconds=0.4)
    c = builder.add("test/sleep", seconds=0.05)
    d = builder.add("test/sleep", seconds=0.0)
    builder.link(a, "value", c, "value")
    builder.link(b, "value", d, "value")
    result = run(engine, builder.build())

    assert result.status == "finished"
    times = sleep_times()
    assert times[str(c)][0] < times[str(b)][1]
    assert times[str(c)][1] < times[str(b)][1]
    assert times[str(d)][0] >= times[str(b)][1]


def test_heavy_nodes_take_turns_while_light_ones_overlap(
    engine: Engine, builder: GraphBuilder
) -> None:
    assert engine.settings.heavy_concurrency == 1
    heavy = {str(builder.add("test/heavy_sleep", seconds=0.1, label=str(i))) for i in range(3)}
    light = str(builder.add("test/sleep", seconds=0.15))
    result = run(engine, builder.build())

    assert result.status == "finished"
    spans = sorted((start, end) for _, start, end in HeavySleep.log)
    assert {node_id for node_id, _, _ in HeavySleep.log} == heavy
    for (_, end), (start, _) in pairwise(spans):
        assert end <= start
    light_start, light_end = sleep_times()[light]
    assert light_start < spans[0][1] and spans[0][0] < light_end


@pytest.mark.timeout(30)
def test_a_node_timeout_also_bounds_heavy_work(engine: Engine, builder: GraphBuilder) -> None:
    node = str(builder.add("test/heavy_sleep", seconds=2.0))
    result = run(engine, builder.build(), node_timeout=0.1)

    assert result.status == "failed"
    assert result.node_errors[node] == "timed out after 0.1 s"
    assert HeavySleep.log == []


# ---- events -----------------------------------------------------------------------------


def test_events_come_in_order(engine: Engine, builder: GraphBuilder) -> None:
    a = builder.add("test/sleep", seconds=0.05)
    b = builder.add("test/sleep", seconds=0.0)
    c = builder.add("test/counter", suffix="!")
    builder.link(a, "value", b, "value")
    ids = {str(a), str(b), str(c)}
    seen: list[Any] = []
    result = run(engine, builder.build(), listeners=[seen.append])

    assert result.status == "finished"
    types = [e.type for e in seen]
    assert types[0] == "run_started"
    assert types[-1] == "run_finished"
    assert types.count("run_started") == types.count("run_finished") == 1
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs))
    assert all(e.run_id == result.run_id for e in seen)
    assert seen[0].node_count == 3

    started = {e.node_id: i for i, e in enumerate(seen) if e.type == "node_started"}
    finished = {e.node_id: i for i, e in enumerate(seen) if e.type == "node_finished"}
    assert set(started) == set(finished) == ids
    for node_id in ids:
        assert started[node_id] < finished[node_id]
    assert finished[str(a)] < started[str(b)]

    slow = next(e for e in seen if e.type == "node_finished" and e.node_id == str(a))
    assert slow.elapsed_s >= 0.04
    assert slow.node_type == "test/sleep"


def test_progress_from_a_worker_thread_arrives_as_events(
    engine: Engine, builder: GraphBuilder
) -> None:
    node = str(builder.add("test/steps", steps=4))
    seen: list[Any] = []
    result = run(engine, builder.build(), listeners=[seen.append])

    assert result.status == "finished"
    progress = [e for e in seen if e.type == "node_progress"]
    assert [(e.node_id, e.fraction, e.message) for e in progress] == [
        (node, 0.25, "step 1 of 4"),
        (node, 0.5, "step 2 of 4"),
        (node, 0.75, "step 3 of 4"),
        (node, 1.0, "step 4 of 4"),
    ]
    types = [e.type for e in seen]
    assert types.index("node_started") < types.index("node_progress")
    assert len(types) - 1 - types[::-1].index("node_progress") < types.index("node_finished")
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs))


# ---- failures ---------------------------------------------------------------------------


def failing_graph(builder: GraphBuilder) -> dict[str, str]:
    """A fails at once; X and Y depend on it. L runs long beside it. N waits behind S,
    which ends after A has failed."""
    ids = {
        "A": builder.add("test/fail", message="the disk is full"),
        "X": builder.add("test/counter", suffix="x"),
        "Y": builder.add("test/counter", suffix="y"),
        "L": builder.add("test/sleep", seconds=0.3, label="long"),
        "S": builder.add("test/sleep", seconds=0.1, label="short"),
        "N": builder.add("test/sleep", seconds=0.0),
    }
    builder.link(ids["A"], "value", ids["X"], "text")
    builder.link(ids["X"], "text", ids["Y"], "text")
    builder.link(ids["S"], "value", ids["N"], "value")
    return {k: str(v) for k, v in ids.items()}


def test_a_failure_stops_the_run_and_names_the_node(engine: Engine, builder: GraphBuilder) -> None:
    ids = failing_graph(builder)
    seen: list[Any] = []
    result = run(engine, builder.build(), listeners=[seen.append])

    assert result.status == "failed"
    assert result.failed_node == ids["A"]
    assert "the disk is full" in (result.error or "")
    assert result.node_status[ids["A"]] == "failed"
    assert result.node_status[ids["X"]] == "skipped"
    assert result.node_status[ids["Y"]] == "skipped"
    # running siblings finish; nothing new starts after the failure
    assert result.node_status[ids["L"]] == "done"
    assert result.node_status[ids["S"]] == "done"
    assert result.node_status[ids["N"]] == "skipped"
    assert set(sleep_times()) == {ids["L"], ids["S"]}
    assert Counter.runs == []

    assert seen[-1].type == "run_failed"
    assert seen[-1].node_id == ids["A"]
    assert "the disk is full" in seen[-1].error
    failed = [e for e in seen if e.type == "node_failed"]
    assert [(e.node_id, e.error) for e in failed] == [(ids["A"], "the disk is full")]
    skipped = {e.node_id for e in seen if e.type == "node_skipped"}
    assert skipped == {ids["X"], ids["Y"], ids["N"]}


def test_keep_going_runs_every_branch_that_does_not_depend_on_the_failure(
    engine: Engine, builder: GraphBuilder
) -> None:
    ids = failing_graph(builder)
    result = run(engine, builder.build(), keep_going=True)

    assert result.status == "failed"
    assert result.failed_node == ids["A"]
    assert result.node_status == {
        ids["A"]: "failed",
        ids["X"]: "skipped",
        ids["Y"]: "skipped",
        ids["L"]: "done",
        ids["S"]: "done",
        ids["N"]: "done",
    }
    assert set(sleep_times()) == {ids["L"], ids["S"], ids["N"]}
    assert Counter.runs == []


# ---- cancellation and timeouts ------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_from_another_thread_stops_a_running_node(
    engine: Engine, builder: GraphBuilder
) -> None:
    slow = str(builder.add("test/sleep", seconds=5.0))
    after = str(builder.add("test/counter"))
    builder.link(int(slow), "value", int(after), "text")
    token = CancelToken()
    seen: list[Any] = []
    timer = threading.Timer(0.2, token.cancel)
    t0 = time.perf_counter()
    timer.start()
    try:
        result = run(engine, builder.build(), cancel=token, listeners=[seen.append])
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0

    assert result.status == "cancelled"
    assert wall < 1.0
    assert result.node_status == {slow: "cancelled", after: "skipped"}
    assert seen[-1].type == "run_cancelled"
    assert Sleep.log == []
    assert Counter.runs == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["check", "progress"])
def test_cancel_stops_blocking_work_in_a_worker_thread(
    engine: Engine, builder: GraphBuilder, how: str
) -> None:
    node = str(builder.add("test/spin", label=how, how=how))
    token = CancelToken()
    timer = threading.Timer(0.2, token.cancel)
    t0 = time.perf_counter()
    timer.start()
    try:
        result = run(engine, builder.build(), cancel=token)
    finally:
        timer.cancel()

    assert result.status == "cancelled"
    assert result.node_status[node] == "cancelled"
    assert Spin.started[how].is_set()
    assert Spin.stopped[how].wait(2.0)
    assert how not in Spin.ran_out
    assert time.perf_counter() - t0 < 3.0


def test_cancel_before_the_run_starts_runs_nothing(engine: Engine, builder: GraphBuilder) -> None:
    node = str(builder.add("test/sleep", seconds=0.0))
    token = CancelToken()
    token.cancel()
    result = run(engine, builder.build(), cancel=token)

    assert result.status == "cancelled"
    assert result.node_status == {node: "skipped"}
    assert Sleep.log == []


@pytest.mark.timeout(30)
def test_node_timeout_fails_the_node(engine: Engine, builder: GraphBuilder) -> None:
    node = str(builder.add("test/sleep", seconds=2.0))
    t0 = time.perf_counter()
    result = run(engine, builder.build(), node_timeout=0.1)

    assert result.status == "failed"
    assert result.failed_node == node
    assert "timed out" in (result.error or "")
    assert result.node_status[node] == "failed"
    assert Sleep.log == []
    assert time.perf_counter() - t0 < 1.5


@pytest.mark.timeout(30)
def test_node_timeout_stops_blocking_work_in_a_worker_thread(
    engine: Engine, builder: GraphBuilder
) -> None:
    node = str(builder.add("test/spin", label="t", how="check"))
    result = run(engine, builder.build(), node_timeout=0.2)

    assert result.status == "failed"
    assert "timed out" in result.node_errors[node]
    assert Spin.stopped["t"].wait(2.0)
    assert "t" not in Spin.ran_out


@pytest.mark.parametrize("node_timeout", [None, 5.0])
def test_a_timeout_inside_a_node_keeps_its_own_message(
    engine: Engine, builder: GraphBuilder, node_timeout: float | None
) -> None:
    node = str(builder.add("test/unanswered", seconds=0.01))
    result = run(engine, builder.build(), node_timeout=node_timeout)

    assert result.status == "failed"
    assert result.failed_node == node
    assert result.error == "the server did not answer within 30 s"


# ---- retries ----------------------------------------------------------------------------


def test_a_retryable_error_is_retried_until_it_succeeds(
    engine: Engine, builder: GraphBuilder
) -> None:
    node = str(builder.add("test/flaky", failures=2, label="a"))
    seen: list[Any] = []
    result = run(engine, builder.build(), keep_outputs=True, listeners=[seen.append])

    assert result.status == "finished"
    assert result.node_outputs[node] == {"attempts": 3}
    assert Flaky.attempts["a"] == 3
    assert [e.attempt for e in seen if e.type == "node_started"] == [1, 2, 3]


def test_retries_give_up_after_the_node_limit(engine: Engine, builder: GraphBuilder) -> None:
    node = str(builder.add("test/flaky", failures=5, label="b"))
    result = run(engine, builder.build())

    assert result.status == "failed"
    assert result.failed_node == node
    assert result.error == "try again"
    assert Flaky.attempts["b"] == 1 + Flaky.meta.retries


# ---- cache ------------------------------------------------------------------------------


def counter_chain(registry: Registry, middle: str = "2", ids: tuple[int, ...] = ()) -> Graph:
    """text -> c1 -> c2 -> c3 -> output, plus c4 reading the text directly."""
    b = GraphBuilder(registry)
    nid = iter(ids)
    text = b.add("core/text", node_id=next(nid, None), text="a")
    c1 = b.add("test/counter", node_id=next(nid, None), suffix="1")
    c2 = b.add("test/counter", node_id=next(nid, None), suffix=middle)
    c3 = b.add("test/counter", node_id=next(nid, None), suffix="3")
    c4 = b.add("test/counter", node_id=next(nid, None), suffix="4")
    out = b.add("core/output", node_id=next(nid, None), name="result")
    b.link(text, "text", c1, "text")
    b.link(c1, "text", c2, "text")
    b.link(c2, "text", c3, "text")
    b.link(text, "text", c4, "text")
    b.link(c3, "text", out, "value")
    return b.build()


def test_rerunning_an_unchanged_graph_runs_nothing(engine: Engine, registry: Registry) -> None:
    first = run(engine, counter_chain(registry))
    assert first.status == "finished"
    assert first.outputs == {"result": "a123"}
    assert sorted(Counter.runs) == ["2", "3", "4", "5"]

    second = run(engine, counter_chain(registry))
    assert second.status == "finished"
    assert second.outputs == {"result": "a123"}
    assert set(second.node_status.values()) == {"cached"}
    assert len(second.node_status) == 6
    assert sorted(Counter.runs) == ["2", "3", "4", "5"]


def test_changing_a_parameter_reruns_only_that_node_and_its_descendants(
    engine: Engine, registry: Registry
) -> None:
    run(engine, counter_chain(registry))
    Counter.runs.clear()
    seen: list[Any] = []
    result = run(engine, counter_chain(registry, middle="X"), listeners=[seen.append])

    assert result.outputs == {"result": "a1X3"}
    assert sorted(Counter.runs) == ["3", "4"]
    assert sorted(result.executed) == ["3", "4", "6"]
    assert sorted(result.cached) == ["1", "2", "5"]
    assert sorted(e.node_id for e in seen if e.type == "node_cached") == ["1", "2", "5"]


def test_use_cache_false_runs_everything(engine: Engine, registry: Registry) -> None:
    run(engine, counter_chain(registry))
    Counter.runs.clear()
    result = run(engine, counter_chain(registry), use_cache=False)

    assert set(result.node_status.values()) == {"done"}
    assert sorted(Counter.runs) == ["2", "3", "4", "5"]


def test_a_non_deterministic_node_and_its_dependents_always_rerun(
    engine: Engine, builder: GraphBuilder
) -> None:
    text = builder.add("core/text", text="t")
    before = builder.add("test/counter", suffix="b")
    clock = builder.add("test/clock")
    after = builder.add("test/counter", suffix="a")
    aside = builder.add("test/counter", suffix="s")
    builder.link(text, "text", before, "text")
    builder.link(before, "text", clock, "text")
    builder.link(clock, "text", after, "text")
    builder.link(text, "text", aside, "text")
    graph = builder.build()

    first = run(engine, graph, keep_outputs=True)
    Counter.runs.clear()
    second = run(engine, graph, keep_outputs=True)

    assert sorted(second.executed) == sorted([str(clock), str(after)])
    assert sorted(second.cached) == sorted([str(text), str(before), str(aside)])
    assert Counter.runs == [str(after)]
    assert Clock.runs == [str(clock), str(clock)]
    assert first.node_outputs[str(after)] != second.node_outputs[str(after)]


def test_save_file_is_never_served_from_the_cache(
    engine: Engine, builder: GraphBuilder, home: Path
) -> None:
    text = builder.add("core/text", text="hello")
    save = builder.add("core/save_file", path="hello.txt")
    builder.link(text, "text", save, "value")
    graph = builder.build()
    run(engine, graph)
    saved = home / "files" / "hello.txt"
    saved.unlink()

    result = run(engine, graph)
    assert result.node_status == {str(text): "cached", str(save): "done"}
    assert saved.read_text() == "hello"


def test_the_cache_key_does_not_depend_on_node_ids(engine: Engine, registry: Registry) -> None:
    first = run(engine, counter_chain(registry, ids=(1, 2, 3, 4, 5, 6)))
    runs = list(Counter.runs)
    second = run(engine, counter_chain(registry, ids=(60, 50, 40, 30, 20, 10)))

    assert second.outputs == first.outputs == {"result": "a123"}
    assert set(second.node_status) == {"60", "50", "40", "30", "20", "10"}
    assert set(second.node_status.values()) == {"cached"}
    assert Counter.runs == runs


# ---- flow inputs -----------------------------------------------------------------------


@pytest.fixture
def inputs_graph(builder: GraphBuilder) -> Graph:
    count = builder.add("core/input", name="count", type="integer")
    ratio = builder.add("core/input", name="ratio", type="number", default=0.5)
    doc = builder.add("core/input", name="doc", type="document", default="unused.txt")
    for src, name in ((count, "count"), (ratio, "ratio"), (doc, "doc")):
        out = builder.add("core/output", name=name)
        builder.link(src, "value", out, "value")
    return builder.build()


def test_an_unknown_input_is_refused(engine: Engine, inputs_graph: Graph) -> None:
    plan = engine.compile(inputs_graph)
    with pytest.raises(InputError, match="'cuont'") as err:
        engine.bind_inputs(plan, {"count": 1, "cuont": 2})
    assert err.value.name == "cuont"
    assert "count" in str(err.value)  # the flow's real inputs are listed


def test_a_missing_required_input_is_refused(engine: Engine, inputs_graph: Graph) -> None:
    with pytest.raises(InputError, match="'count'") as err:
        run(engine, inputs_graph, {"ratio": 1.0})
    assert err.value.name == "count"
    assert "required" in str(err.value)


def test_a_value_of_the_wrong_type_is_refused(engine: Engine, inputs_graph: Graph) -> None:
    plan = engine.compile(inputs_graph)
    with pytest.raises(InputError, match="'count'") as err:
        engine.bind_inputs(plan, {"count": "three"})
    assert err.value.name == "count"
    assert "integer" in str(err.value)
    with pytest.raises(InputError, match="'ratio'"):
        engine.bind_inputs(plan, {"count": 1, "ratio": "half"})


def test_an_integer_is_accepted_for_a_number(engine: Engine, inputs_graph: Graph) -> None:
    result = run(engine, inputs_graph, {"count": 3, "ratio": 2})

    assert result.status == "finished"
    assert result.outputs["count"] == 3
    assert result.outputs["ratio"] == 2.0
    assert isinstance(result.outputs["ratio"], float)


def test_a_file_input_is_copied_into_the_artifact_store(
    engine: Engine, inputs_graph: Graph, tmp_path: Path
) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("meeting at noon\n")
    plan = engine.compile(inputs_graph)
    bound = engine.bind_inputs(plan, {"count": 1, "doc": str(source)}, base_dir=tmp_path)

    doc_id = next(i.node_id for i in plan.inputs if i.name == "doc")
    ref = bound[doc_id]
    assert isinstance(ref, ArtifactRef)
    assert isinstance(ref, DocumentRef)
    assert ref.id == hashlib.sha256(b"meeting at noon\n").hexdigest()
    assert ref.name == "notes.txt"
    stored = engine.artifacts.path(ref)
    assert stored != source
    assert stored.read_bytes() == b"meeting at noon\n"

    result = run(engine, inputs_graph, {"count": 1, "doc": "notes.txt"}, base_dir=tmp_path)
    assert result.outputs["doc"] == ref


def test_a_missing_file_input_is_refused(
    engine: Engine, inputs_graph: Graph, tmp_path: Path
) -> None:
    plan = engine.compile(inputs_graph)
    with pytest.raises(InputError, match=r"'doc'.*not found"):
        engine.bind_inputs(plan, {"count": 1, "doc": "absent.txt"}, base_dir=tmp_path)


# ---- intermediate values ---------------------------------------------------------------


def test_intermediate_values_are_freed_unless_kept(engine: Engine, registry: Registry) -> None:
    freed = run(engine, counter_chain(registry), use_cache=False)
    assert freed.outputs == {"result": "a123"}
    assert freed.node_outputs == {}

    kept = run(engine, counter_chain(registry), use_cache=False, keep_outputs=True)
    assert set(kept.node_outputs) == {"1", "2", "3", "4", "5", "6"}
    assert kept.node_outputs["4"] == {"text": "a123"}
    assert kept.node_outputs["5"] == {"text": "a4"}


def test_a_value_read_twice_by_one_node_stays_for_its_other_readers(
    engine: Engine, builder: GraphBuilder
) -> None:
    # The join reads the text on two ports and finishes first; the counter reads the same
    # text only after a sleep, so the text must still be there then.
    text = builder.add("core/text", text="hi")
    join = builder.add("core/join", separator="+")
    wait = builder.add("test/sleep", seconds=0.1, label="!")
    late = builder.add("test/counter")
    builder.link(text, "text", join, "a")
    builder.link(text, "text", join, "b")
    builder.link(text, "text", late, "text")
    builder.link(wait, "value", late, "suffix")
    for src, name in ((join, "joined"), (late, "late")):
        out = builder.add("core/output", name=name)
        builder.link(src, "text", out, "value")
    result = run(engine, builder.build())

    assert result.status == "finished"
    assert result.outputs == {"joined": "hi+hi", "late": "hi!"}
