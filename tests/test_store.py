"""The run store on a real database: SQLite (a temporary file) and PostgreSQL.

PostgreSQL tests need ``FLOWBUILDER_TEST_POSTGRES_URL`` (``scripts/start-postgres.sh``
starts a server and prints it); without it they are skipped, except in CI
(``CI=true``), where they fail. Each test gets an empty database: a fresh SQLite file,
or a fresh PostgreSQL schema dropped afterwards.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import Counter
from pg import fresh_schema
from pydantic import BaseModel
from sqlmodel import SQLModel

from flowbuilder import events
from flowbuilder.builder import GraphBuilder
from flowbuilder.context import RunContext
from flowbuilder.engine import Engine
from flowbuilder.errors import FlowbuilderError
from flowbuilder.graph import Graph
from flowbuilder.node import Node, NodeMeta, Param
from flowbuilder.registry import Registry
from flowbuilder.scheduler import CancelToken, RunResult
from flowbuilder.store import (
    AlreadyExists,
    ApiKeys,
    Database,
    Flows,
    NotFound,
    RunQueue,
    Runs,
    Store,
)

TABLES = {"flows", "flow_versions", "runs", "node_runs", "run_events", "api_keys"}


class Talk(Node):
    """Test node: streams ``words`` tokens as an LLM does, then returns them joined."""

    meta = NodeMeta(type="test/talk", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        words: int = Param(5, ge=1)
        word: str = Param("blah")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        pieces = []
        for i in range(1, inputs.words + 1):
            piece = f"{inputs.word}{i} "
            pieces.append(piece)
            ctx.progress(None, "", delta=piece)  # tokens only
            ctx.progress(i / inputs.words, f"{i} tokens", delta=piece)
        return self.Outputs(text="".join(pieces))


# ---- backends -----------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'flowbuilder.db'}"
        return
    yield from fresh_schema("test")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def run_graph(engine: Engine, graph: Graph, store: Store, run_id: str, **kw: Any) -> RunResult:
    return asyncio.run(engine.run(graph, run_id=run_id, listeners=[store.recorder(run_id)], **kw))


def new_id() -> str:
    return uuid.uuid4().hex


def all_rows(store: Store) -> list[str]:
    """Every row of every table, as text."""
    rows = []
    with store.engine.connect() as conn:
        for table in sorted(TABLES):
            rows += [repr(tuple(r)) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    return rows


# ---- schema -------------------------------------------------------------------------


def test_migrations_create_every_table_and_can_run_again(db_url: str) -> None:
    store = Store(db_url, migrate=False)
    try:
        assert not TABLES & set(sa.inspect(store.engine).get_table_names())

        store.migrate()
        assert TABLES | {"alembic_version"} <= set(sa.inspect(store.engine).get_table_names())
        flow = store.create_flow("kept", {"nodes": []})

        store.migrate()  # again, and again on open: nothing changes, nothing is lost
        Store(db_url).close()
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert context.get_current_revision() == "0002"
            # the migration builds exactly the tables the models describe
            assert compare_metadata(context, SQLModel.metadata) == []
        assert store.get_flow(flow.id).name == "kept"
    finally:
        store.close()


RACE = """
import os, sys, time
from pathlib import Path
from flowbuilder.store import Store
url, gate = sys.argv[1], Path(sys.argv[2])
(gate.parent / f"ready-{os.getpid()}").touch()
while not gate.exists():
    time.sleep(0.001)
Store(url).close()
"""


def test_processes_starting_together_migrate_once(db_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "race" / "go"
    gate.parent.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, db_url, str(gate)], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(gate.parent.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.touch()  # all at once
    failures = [p.communicate(timeout=120)[1] for p in procs if p.wait(timeout=120) != 0]
    assert failures == []
    with Store(db_url) as store, store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0002"
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_the_default_database_is_sqlite_in_the_data_directory(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWBUILDER_DATABASE_URL", raising=False)
    assert not home.exists()
    with Store() as store:
        store.create_flow("f", {})
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    assert (home / "flowbuilder.db").is_file()


def test_the_database_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "elsewhere" / "runs.db"
    monkeypatch.setenv("FLOWBUILDER_DATABASE_URL", f"sqlite:///{path}")
    with Store() as store:
        store.create_flow("f", {})
    assert path.is_file()


# ---- flows --------------------------------------------------------------------------


def test_flow_crud_versions_and_restore(store: Store) -> None:
    v1 = {"nodes": [{"id": 1, "type": "core/text"}], "links": []}
    v2 = {"nodes": [{"id": 1, "type": "core/text"}, {"id": 2, "type": "core/output"}]}
    flow = store.create_flow("Greeting", v1)
    assert len(flow.id) == 12
    assert (flow.name, flow.version, flow.published, flow.graph) == ("Greeting", 1, False, v1)
    assert flow.created_at.tzinfo is not None

    saved = store.save_flow(flow.id, v2)
    assert (saved.version, saved.graph) == (2, v2)
    assert saved.updated_at >= flow.updated_at

    # saving the same graph (key order does not count) makes no version
    store.save_flow(flow.id, {"nodes": [{"type": "core/text", "id": 1}, v2["nodes"][1]]})
    assert store.get_flow(flow.id).version == 2
    renamed = store.save_flow(flow.id, v2, name="Hello")
    assert (renamed.version, renamed.name) == (2, "Hello")
    assert store.rename_flow(flow.id, "Hi").name == "Hi"
    assert store.get_flow(flow.id).version == 2

    versions = store.list_versions(flow.id)
    assert [v.version for v in versions] == [2, 1]
    assert store.get_version(flow.id, 1).graph == v1

    restored = store.restore_version(flow.id, 1)
    assert (restored.version, restored.graph) == (3, v1)
    assert store.get_version(flow.id, 3).graph == v1
    assert [v.version for v in store.list_versions(flow.id)] == [3, 2, 1]

    assert store.set_published(flow.id, True).published
    assert [f.id for f in store.list_flows(published=True)] == [flow.id]

    copy = store.duplicate_flow(flow.id)
    assert (copy.name, copy.version, copy.graph, copy.published) == ("Hi (copy)", 1, v1, False)
    assert copy.id != flow.id
    assert store.duplicate_flow(flow.id, name="Other").name == "Other"
    assert {f.name for f in store.list_flows()} == {"Hi", "Hi (copy)", "Other"}
    assert store.list_flows()[0].name == "Other"  # most recently updated first


def test_missing_flows_and_versions_raise_not_found(store: Store) -> None:
    flow = store.create_flow("f", {})
    with pytest.raises(NotFound, match="flow 'nope' not found") as info:
        store.get_flow("nope")
    assert isinstance(info.value, FlowbuilderError)
    assert (info.value.kind, info.value.key) == ("flow", "nope")
    for call in (
        lambda: store.save_flow("nope", {}),
        lambda: store.rename_flow("nope", "x"),
        lambda: store.duplicate_flow("nope"),
        lambda: store.delete_flow("nope"),
        lambda: store.set_published("nope", True),
        lambda: store.list_versions("nope"),
        lambda: store.restore_version("nope", 1),
    ):
        with pytest.raises(NotFound, match="flow 'nope'"):
            call()
    with pytest.raises(NotFound, match=f"flow version '{flow.id}@7' not found"):
        store.get_version(flow.id, 7)
    with pytest.raises(NotFound, match="flow version"):
        store.restore_version(flow.id, 7)
    assert store.get_flow(flow.id).version == 1


def test_a_graph_model_is_saved_as_its_file_content(store: Store, builder: GraphBuilder) -> None:
    builder.add("core/text", text="hello")
    graph = builder.build()
    flow = store.create_flow("g", graph)
    assert flow.graph == graph.to_dict()
    assert store.save_flow(flow.id, graph.to_dict()).version == 1


def test_deleting_a_flow_keeps_its_runs(store: Store) -> None:
    flow = store.create_flow("f", {"nodes": []})
    store.save_flow(flow.id, {"nodes": [1]})
    run = store.create_run(new_id(), flow_id=flow.id, source="canvas", inputs={"x": 1})
    assert (run.flow_id, run.flow_version, run.status) == (flow.id, 2, "queued")

    store.delete_flow(flow.id)

    with pytest.raises(NotFound):
        store.get_flow(flow.id)
    with pytest.raises(NotFound):
        store.list_versions(flow.id)
    kept = store.get_run(run.id)
    assert (kept.flow_id, kept.flow_version, kept.inputs) == (None, 2, {"x": 1})
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM flow_versions")).scalar() == 0


# ---- runs ---------------------------------------------------------------------------


def test_runs_are_listed_newest_first_and_paged(store: Store) -> None:
    flow = store.create_flow("f", {})
    ids = []
    for i in range(5):
        ids.append(f"run{i}")
        store.create_run(ids[-1], flow_id=flow.id if i % 2 else None, source="api", inputs={})
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(limit=2, offset=1)] == ["run3", "run2"]
    assert [r.id for r in store.list_runs(flow_id=flow.id)] == ["run3", "run1"]
    assert store.count_runs() == 5
    assert store.count_runs(flow.id) == 2
    assert store.count_runs(status="queued") == 5

    with pytest.raises(AlreadyExists, match="run 'run0' already exists"):
        store.create_run("run0", source="api", inputs={})
    with pytest.raises(NotFound, match="flow 'nope'"):
        store.create_run("run9", flow_id="nope", source="api", inputs={})
    with pytest.raises(NotFound, match="run 'run9' not found"):
        store.get_run("run9")
    store.delete_run("run0")
    assert store.count_runs() == 4


def test_the_recorder_records_a_real_run(
    store: Store, engine: Engine, registry: Registry, builder: GraphBuilder
) -> None:
    registry.register(Talk)
    text = builder.add("core/text", text="hi")
    shout = builder.add("test/counter", suffix="!")
    talk = builder.add("test/talk", words=400)  # > 2000 characters of output
    out = builder.add("core/output", name="greeting")
    said = builder.add("core/output", name="said")
    builder.link(text, "text", shout, "text")
    builder.link(shout, "text", out, "value")
    builder.link(talk, "text", said, "value")
    graph = builder.build()
    flow = store.create_flow("Greeting", graph)

    run_id = new_id()
    store.create_run(run_id, flow_id=flow.id, source="canvas", inputs={})
    result = run_graph(engine, graph, store, run_id)
    assert result.status == "finished"

    run = store.get_run(run_id)
    assert (run.status, run.error, run.failed_node, run.flow_version) == (
        "finished",
        None,
        None,
        1,
    )
    assert run.outputs is not None
    assert run.outputs["greeting"] == "hi!"
    assert run.outputs["said"].endswith("…")  # the event carries a summary …
    assert run.started_at is not None and run.finished_at is not None
    assert run.created_at <= run.started_at <= run.finished_at
    assert run.elapsed_s is not None
    assert 0 < run.elapsed_s <= (run.finished_at - run.created_at).total_seconds() + 0.01

    store.save_result(result)  # … and the result the whole value
    assert store.get_run(run_id).outputs == {"greeting": "hi!", "said": result.outputs["said"]}
    assert len(result.outputs["said"]) > 2000

    nodes = {n.node_id: n for n in store.node_runs(run_id)}
    assert set(nodes) == {str(n) for n in (text, shout, talk, out, said)}
    for n in nodes.values():
        assert (n.status, n.cached, n.attempts, n.error) == ("done", False, 1, None)
        assert n.started_at is not None and n.finished_at is not None
        assert n.started_at <= n.finished_at
        assert n.elapsed_s is not None and n.elapsed_s >= 0
    assert nodes[str(shout)].node_type == "test/counter"

    # streamed tokens are not kept; progress without them is
    recorded = store.events_after(run_id)
    assert recorded[0].type == "run_started"
    assert recorded[-1].type == "run_finished"
    progress = [e for e in recorded if isinstance(e, events.NodeProgress)]
    assert progress
    assert all(e.delta is None for e in progress)
    assert all(e.message for e in progress)
    assert progress[-1].fraction == 1.0
    assert len(progress) < 400  # frequent progress events are coalesced
    seqs = [e.seq for e in recorded]
    assert seqs == sorted(set(seqs))

    # the same graph again: served from the cache
    Counter.runs.clear()
    second = new_id()
    store.create_run(second, flow_id=flow.id, source="api", inputs={})
    run_graph(engine, graph, store, second)
    assert Counter.runs == []
    cached = {n.node_id: n for n in store.node_runs(second)}
    assert (cached[str(shout)].status, cached[str(shout)].cached) == ("cached", True)
    assert cached[str(shout)].elapsed_s == 0.0
    assert store.get_run(second).status == "finished"


def test_a_failed_node_is_recorded_with_its_error(
    store: Store, engine: Engine, builder: GraphBuilder
) -> None:
    text = builder.add("core/text", text="hi")
    fail = builder.add("test/fail", message="the disk is full")
    out = builder.add("core/output", name="result")
    builder.link(text, "text", fail, "value")
    builder.link(fail, "value", out, "value")
    graph = builder.build()

    run_id = new_id()
    store.create_run(run_id, source="cli", inputs={})
    result = run_graph(engine, graph, store, run_id, keep_going=True)
    store.save_result(result)

    run = store.get_run(run_id)
    assert (run.status, run.failed_node) == ("failed", str(fail))
    assert run.error is not None and "the disk is full" in run.error
    nodes = {n.node_id: n for n in store.node_runs(run_id)}
    assert nodes[str(text)].status == "done"
    assert nodes[str(fail)].status == "failed"
    assert "the disk is full" in str(nodes[str(fail)].error)
    assert nodes[str(out)].status == "skipped"
    assert f"node {fail}" in str(nodes[str(out)].error)  # the reason it was skipped
    assert store.events_after(run_id)[-1].type == "run_failed"


def test_the_parts_work_alone_on_one_database(
    db_url: str, engine: Engine, builder: GraphBuilder
) -> None:
    db = Database(db_url)
    try:
        db.migrate()
        flows, runs, queue, keys = Flows(db), Runs(db), RunQueue(db), ApiKeys(db)
        text = builder.add("core/text", text="hi")
        out = builder.add("core/output", name="greeting")
        builder.link(text, "text", out, "value")
        graph = builder.build()
        flow = flows.create_flow("Greeting", graph)

        run_id = new_id()
        runs.create_run(run_id, flow_id=flow.id, source="cli", inputs={})
        recorder = runs.recorder(run_id)
        result = asyncio.run(engine.run(graph, run_id=run_id, listeners=[recorder]))
        other = new_id()
        runs.create_run(other, source="cli", inputs={})
        with pytest.raises(ValueError, match=f"run '{run_id}'.*run '{other}'"):
            runs.recorder(other).save_result(result)  # a result goes to its own run only
        recorder.save_result(result)
        key, _ = keys.create_api_key("ci")

        with Store(db_url) as store:  # the facade reads what the parts wrote
            assert store.get_flow(flow.id).name == "Greeting"
            assert store.get_run(run_id).outputs == {"greeting": "hi"}
            assert {n.status for n in store.node_runs(run_id)} == {"done"}
            assert store.events_after(run_id)[-1].type == "run_finished"
            assert store.get_run(other).status == "queued"
            verified = store.verify_api_key(key)
            assert verified is not None and verified.name == "ci"
        assert queue.mark_interrupted() == [other]
    finally:
        db.close()


def test_a_cancelled_run_marks_its_running_nodes_cancelled(
    store: Store, engine: Engine, builder: GraphBuilder
) -> None:
    quick = builder.add("test/sleep", seconds=0.0, label="quick")
    slow = builder.add("test/sleep", seconds=30.0, label="slow")
    graph = builder.build()
    run_id = new_id()
    store.create_run(run_id, source="api", inputs={})
    token = CancelToken()

    async def go() -> RunResult:
        asyncio.get_running_loop().call_later(0.3, token.cancel)
        return await engine.run(
            graph, run_id=run_id, listeners=[store.recorder(run_id)], cancel=token
        )

    result = asyncio.run(go())
    assert result.status == "cancelled"
    nodes = {n.node_id: n for n in store.node_runs(run_id)}
    assert nodes[str(quick)].status == "done"
    assert nodes[str(slow)].status == "cancelled"
    assert store.get_run(run_id).status == "cancelled"
    store.save_result(result)
    assert store.get_run(run_id).status == "cancelled"


def test_each_node_keeps_a_summary_of_its_outputs(
    store: Store, engine: Engine, builder: GraphBuilder
) -> None:
    text = builder.add("core/text", text="x" * 5000)
    tiny = builder.add("test/sleep", label="tiny")
    graph = builder.build()
    for keep_outputs in (False, True):  # from the events; from the result
        run_id = new_id()
        store.create_run(run_id, source="canvas", inputs={})
        result = run_graph(engine, graph, store, run_id, keep_outputs=keep_outputs)
        store.save_result(result)
        nodes = {n.node_id: n for n in store.node_runs(run_id)}
        assert nodes[str(tiny)].outputs == {"value": "tiny"}
        summary = nodes[str(text)].outputs
        assert summary is not None
        assert summary["text"].startswith("xxx") and summary["text"].endswith("…")
        assert len(summary["text"]) < 5000


def test_events_resume_after_a_sequence_number(
    store: Store, engine: Engine, builder: GraphBuilder
) -> None:
    a = builder.add("test/sleep", seconds=0.0)
    b = builder.add("test/counter", suffix="!")
    builder.link(a, "value", b, "text")
    run_id = new_id()
    store.create_run(run_id, source="api", inputs={})
    run_graph(engine, builder.build(), store, run_id)

    every = store.events_after(run_id, 0)
    assert [e.type for e in every] == [
        "run_started",
        "node_started",
        "node_finished",
        "node_started",
        "node_finished",
        "run_finished",
    ]
    assert all(e.run_id == run_id for e in every)
    middle = every[2].seq
    rest = store.events_after(run_id, middle)
    assert [e.seq for e in rest] == [e.seq for e in every[3:]]
    assert rest == every[3:]  # typed events, equal to what was emitted
    assert store.events_after(run_id, middle, limit=1) == every[3:4]
    assert store.events_after(run_id, every[-1].seq) == []
    with pytest.raises(NotFound, match="run 'nope'"):
        store.events_after("nope", 0)
    with pytest.raises(NotFound, match="run 'nope'"):
        store.recorder("nope")


def test_an_event_is_recorded_whole_or_not_at_all(store: Store) -> None:
    run_id = new_id()
    store.create_run(run_id, source="api", inputs={})
    record = store.recorder(run_id)
    record(events.RunStarted(run_id=run_id, seq=1, t=time.time(), node_count=1))
    record(events.NodeStarted(run_id=run_id, seq=2, t=time.time(), node_id="1", node_type="x"))
    # a second event with seq 2 cannot be appended; its node update must not stick either
    with pytest.raises(sa.exc.IntegrityError):
        record(
            events.NodeFinished(
                run_id=run_id, seq=2, t=time.time(), node_id="1", node_type="x", elapsed_s=1
            )
        )
    assert [(n.node_id, n.status) for n in store.node_runs(run_id)] == [("1", "running")]
    assert [e.seq for e in store.events_after(run_id)] == [1, 2]


def test_runs_left_running_by_a_dead_process_become_interrupted(db_url: str) -> None:
    first = Store(db_url)
    live, done = new_id(), new_id()
    for run_id in (live, done):
        first.create_run(run_id, source="api", inputs={"q": "hello"})
    t = time.time()
    record = first.recorder(live)
    record(events.RunStarted(run_id=live, seq=1, t=t, node_count=3))
    record(events.NodeStarted(run_id=live, seq=2, t=t, node_id="1", node_type="core/text"))
    record(events.NodeFinished(run_id=live, seq=3, t=t + 1, node_id="1", node_type="core/text",
                               elapsed_s=1.0))  # fmt: skip
    record(events.NodeCached(run_id=live, seq=4, t=t + 1, node_id="2", node_type="test/counter"))
    record(events.NodeStarted(run_id=live, seq=5, t=t + 1, node_id="3", node_type="llm/chat"))
    other = first.recorder(done)
    other(events.RunStarted(run_id=done, seq=1, t=t, node_count=0))
    other(events.RunFinished(run_id=done, seq=2, t=t, elapsed_s=0.1, outputs={"a": 1}))
    queued = new_id()
    first.create_run(queued, source="api", inputs={})
    first.close()  # the process "dies" here

    second = Store(db_url)
    try:
        assert sorted(second.mark_interrupted()) == sorted([live, queued])
        assert second.mark_interrupted() == []
        run = second.get_run(live)
        assert run.status == "interrupted"
        assert run.error is not None and "interrupted" in run.error
        assert run.finished_at is not None
        assert run.inputs == {"q": "hello"}
        nodes = {n.node_id: n for n in second.node_runs(live)}
        assert (nodes["1"].status, nodes["1"].elapsed_s) == ("done", 1.0)
        assert (nodes["2"].status, nodes["2"].cached) == ("cached", True)
        assert nodes["3"].status == "cancelled"
        assert second.get_run(queued).status == "interrupted"
        assert (second.get_run(done).status, second.get_run(done).outputs) == (
            "finished",
            {"a": 1},
        )
    finally:
        second.close()


# ---- API keys -----------------------------------------------------------------------


def test_api_keys_are_verified_revoked_and_stored_only_as_a_hash(store: Store) -> None:
    key, record = store.create_api_key("ci")
    assert key.startswith("fb_") and len(key) > 40
    assert record.prefix == key[:8]
    assert (record.name, record.revoked_at, record.last_used_at) == ("ci", None, None)
    other_key, _ = store.create_api_key("laptop")

    found = store.verify_api_key(key)
    assert found is not None and found.id == record.id and not found.revoked
    assert found.last_used_at is not None
    assert store.verify_api_key(key + "x") is None
    assert store.verify_api_key("not a key") is None
    assert store.verify_api_key("") is None

    revoked = store.revoke_api_key(record.id)
    assert revoked.revoked_at is not None
    after = store.verify_api_key(key)  # known but revoked: 403, not 401
    assert after is not None and after.revoked and after.id == record.id
    assert store.revoke_api_key(record.id).revoked_at == revoked.revoked_at
    other = store.verify_api_key(other_key)
    assert other is not None and not other.revoked
    assert [k.name for k in store.list_api_keys()] == ["laptop", "ci"]
    with pytest.raises(NotFound, match="API key 'nope'"):
        store.revoke_api_key("nope")

    rows = "\n".join(all_rows(store))
    assert key not in rows and other_key not in rows
    assert key[8:] not in rows
    assert record.key_hash in rows


# ---- concurrency --------------------------------------------------------------------


def test_concurrent_writers_neither_fail_nor_lose_versions(db_url: str) -> None:
    stores = [Store(db_url), Store(db_url)]  # two "processes" on one database
    flow = stores[0].create_flow("shared", {"n": 0})
    errors: list[BaseException] = []
    threads_n, saves_n = 8, 15
    start = threading.Barrier(threads_n)

    def work(i: int) -> None:
        store = stores[i % 2]
        try:
            start.wait()
            for j in range(saves_n):
                store.save_flow(flow.id, {"n": f"{i}-{j}"})
                run_id = f"r{i}-{j}"
                store.create_run(run_id, flow_id=flow.id, source="api", inputs={"j": j})
                record = store.recorder(run_id)
                record(events.RunStarted(run_id=run_id, seq=1, t=time.time(), node_count=0))
                record(events.RunFinished(run_id=run_id, seq=2, t=time.time(), elapsed_s=0))
                store.list_runs(limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        total = threads_n * saves_n
        versions = [v.version for v in stores[1].list_versions(flow.id)]
        assert versions == list(range(total + 1, 0, -1))
        assert stores[1].get_flow(flow.id).version == total + 1
        assert stores[0].count_runs(status="finished") == total
    finally:
        for store in stores:
            store.close()
