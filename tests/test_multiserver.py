"""Several ``flowbuilder serve`` processes on one PostgreSQL database: the run queue.

Real server subprocesses on free ports, one shared data directory (the artifact store)
and one fresh PostgreSQL schema for the module (``FLOWBUILDER_TEST_POSTGRES_URL``; see
tests/test_store.py). Each server executes at most one run at once
(``FLOWBUILDER_MAX_RUNS=1``) and takes over a dead server's runs after 3 s without a
heartbeat (``FLOWBUILDER_RUN_STALE_S=3``). Long runs are real LLM runs (SmolLM2, many
tokens); queue tests use a few tokens per run.

The store-level tests check the queue's primitives on PostgreSQL and on SQLite (a fresh
database each): atomic claims from several connections at once, take-over, cancel
requests, and the migration of a database made before the queue existed.
"""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pg import fresh_schema
from test_api import (
    Server,
    chat_graph,
    create_flow,
    iter_sse,
    sse_events,
    start_server,
    wait_status,
)

from flowbuilder import events
from flowbuilder.store import INTERRUPTED_ERROR, Run, Store, alembic_config, make_engine

SERVER_ENV = {"FLOWBUILDER_MAX_RUNS": "1", "FLOWBUILDER_RUN_STALE_S": "3"}
LONG_PROMPT = {"prompt": "Write a very long story about a dragon and a knight."}


# ---- database and servers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_db() -> Iterator[str]:
    yield from fresh_schema("cluster")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for the queue's primitives: SQLite (claims serialised by
    ``BEGIN IMMEDIATE``) and PostgreSQL (``FOR UPDATE SKIP LOCKED``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    yield from fresh_schema("queue")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster-home")  # shared: one artifact store for all


@pytest.fixture(scope="module")
def servers(cluster_db: str, home: Path) -> Iterator[tuple[Server, Server]]:
    a = start_server(home, database_url=cluster_db, **SERVER_ENV)
    try:
        b = start_server(home, database_url=cluster_db, **SERVER_ENV)
    except BaseException:
        a.stop()
        raise
    yield a, b
    for srv in (a, b):
        srv.stop()


def server_id(srv: Server) -> str:
    """A server's id in ``runs.owner`` (the default: hostname and port)."""
    return f"{socket.gethostname()}:{srv.port}"


def wait_for_event(
    stream: Iterator[dict[str, Any]], event: str, node_id: str | None = None
) -> list[dict[str, Any]]:
    """Events read from ``stream`` up to and including the first ``event`` (of
    ``node_id``)."""
    seen = []
    for e in stream:
        seen.append(e)
        if e["event"] == event and (node_id is None or e["data"].get("node_id") == node_id):
            return seen
    raise AssertionError(f"the stream ended without {event} {node_id or ''}: {seen}")


# ---- two servers ------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_run_on_one_server_is_seen_streamed_and_cancelled_on_the_other(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    with a.client() as ca, b.client() as cb:
        flow_id = create_flow(ca, chat_graph(max_tokens=1500, name="Long A"), "Long A")
        run_id = ca.post(f"/api/v1/flows/{flow_id}/runs", json=LONG_PROMPT).json()["run_id"]

        seen = cb.get(f"/api/v1/runs/{run_id}").json()
        assert seen["status"] in ("queued", "running") and seen["owner"] == server_id(a)
        assert "payload" not in seen  # internal: the queued graph and inputs
        assert run_id in [r["id"] for r in cb.get("/api/v1/runs").json()]

        with cb.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
            stream = iter_sse(resp)
            before = wait_for_event(stream, "node_started", "3")  # the LLM is generating
            t0 = time.monotonic()
            r = cb.post(f"/api/v1/runs/{run_id}/cancel")
            assert r.status_code == 202, r.text
            after = list(stream)  # B's stream ends with the run's end, from A's records
        ended = time.monotonic() - t0
        assert after[-1]["event"] == "run_cancelled"
        assert ended < 5, f"server A took {ended:.1f} s to act on B's cancel request"
        live = before + after
        seqs = [int(e["id"]) for e in live]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert live[0]["event"] == "run_started"

        for c in (ca, cb):
            run = c.get(f"/api/v1/runs/{run_id}").json()
            assert run["status"] == "cancelled"
            nodes = {n["node_id"]: n for n in run["nodes"]}
            assert nodes["2"]["status"] == "done" and nodes["3"]["status"] == "cancelled"
        assert cb.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409

        # stored events, resumable on either server
        cut = int(live[1]["id"])
        with ca.stream(
            "GET", f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(cut)}
        ) as resp:
            rest = sse_events(resp)
        assert [e["id"] for e in rest] == [e["id"] for e in live if int(e["id"]) > cut]


@pytest.mark.postgres
def test_runs_beyond_the_limit_wait_in_the_queue_and_all_finish(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    with a.client() as ca, b.client() as cb:
        flow_id = create_flow(ca, chat_graph(max_tokens=24, name="Short"), "Short")
        prompts = [f"Name a colour, number {i}." for i in range(6)]
        run_ids = [
            ca.post(f"/api/v1/flows/{flow_id}/runs", json={"prompt": p}).json()["run_id"]
            for p in prompts
        ]
        # A executes one at a time: the others wait in the database, owned by no one
        waiting = [cb.get(f"/api/v1/runs/{r}").json() for r in run_ids[1:]]
        assert any(w["status"] == "queued" and w["owner"] is None for w in waiting), waiting

        # the synchronous API waits for its run wherever the queue executes it
        sync = ca.post(f"/api/v1/flows/{flow_id}/run", json={"prompt": "Say yes."}, timeout=120)
        assert sync.status_code == 200, sync.text
        assert sync.json()["status"] == "finished" and sync.json()["outputs"]["text"]
        with cb.stream(
            "POST", f"/api/v1/flows/{flow_id}/run?stream=true", json={"prompt": "Say no."}
        ) as resp:
            streamed = sse_events(resp)
        assert streamed[-1]["event"] == "result"
        assert streamed[-1]["data"]["status"] == "finished"

        runs = [wait_status(cb, r, {"finished", "failed", "cancelled"}) for r in run_ids]
        assert [r["status"] for r in runs] == ["finished"] * len(runs)
        assert all(r["outputs"]["text"] for r in runs)
        owners = {r["owner"] for r in runs}
        assert owners == {server_id(a), server_id(b)}, owners  # both servers took work
        for owner in owners:  # never more than FLOWBUILDER_MAX_RUNS=1 at once per server
            spans = sorted(
                (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
                for r in runs
                if r["owner"] == owner
            )
            assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))


@pytest.mark.postgres
def test_a_killed_server_s_run_ends_interrupted_with_finished_nodes_kept(
    servers: tuple[Server, Server], cluster_db: str, home: Path
) -> None:
    _, b = servers
    doomed = start_server(home, database_url=cluster_db, **SERVER_ENV)
    try:
        with doomed.client() as cd, b.client() as cb:
            flow_id = create_flow(cd, chat_graph(max_tokens=1500, name="Long C"), "Long C")
            run_id = cd.post(f"/api/v1/flows/{flow_id}/runs", json=LONG_PROMPT).json()["run_id"]
            with cb.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
                stream = iter_sse(resp)
                wait_for_event(stream, "node_started", "3")  # the template has finished
                assert cb.get(f"/api/v1/runs/{run_id}").json()["owner"] == server_id(doomed)
                doomed.stop(signal.SIGKILL)
                t0 = time.monotonic()
                rest = list(stream)  # B's stream ends when B takes the run over
            taken_over = time.monotonic() - t0
            assert not any(e["event"] in ("run_finished", "run_cancelled") for e in rest)
            assert taken_over < 15, f"took {taken_over:.1f} s (stale after 3 s)"

            run = cb.get(f"/api/v1/runs/{run_id}").json()
            assert run["status"] == "interrupted"
            assert run["error"] == INTERRUPTED_ERROR and run["finished_at"]
            nodes = {n["node_id"]: n for n in run["nodes"]}
            assert nodes["2"]["status"] == "done"  # the template's output is kept
            assert nodes["2"]["outputs"] == {"text": LONG_PROMPT["prompt"]}
            assert nodes["3"]["status"] == "cancelled"
            assert "interrupted" in nodes["3"]["error"]
            assert cb.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409
    finally:
        doomed.stop(signal.SIGKILL)


# ---- the queue's primitives ---------------------------------------------------------------


PAYLOAD = {"graph": {"nodes": [], "links": []}, "inputs": {}, "keep_outputs": False}


def _queue(store: Store, n: int) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    for run_id in ids:
        store.create_run(run_id, source="api", payload=PAYLOAD)
    return ids


def _age_heartbeat(store: Store, run_id: str, seconds: float) -> None:
    """As if the run's owner last beat ``seconds`` ago."""
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(Run)
            .where(sa.column("id") == run_id)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_concurrent_claims_take_each_run_exactly_once(db: str) -> None:
    with Store(db) as store:
        ids = _queue(store, 60)
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    gate = threading.Barrier(4)

    def claimer(owner: str) -> None:
        try:
            with Store(db, migrate=False) as mine:
                gate.wait()
                got = claimed.setdefault(owner, [])
                while batch := mine.claim_runs(owner, 3):
                    got += [r.id for r in batch]
                    assert all(r.owner == owner and r.payload == PAYLOAD for r in batch)
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"server-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    every = [run_id for got in claimed.values() for run_id in got]
    assert sorted(every) == sorted(ids)  # none twice, none lost
    assert sum(1 for got in claimed.values() if got) >= 2  # they really competed
    with Store(db) as store:
        assert store.claim_runs("late", 5) == []
        assert {store.get_run(r).owner for r in ids} <= set(claimed)


def test_dead_servers_runs_are_requeued_or_interrupted_and_live_ones_left_alone(db: str) -> None:
    with Store(db) as store:
        unstarted, started, alive, legacy = [*_queue(store, 3), uuid.uuid4().hex]
        store.create_run(legacy, source="api")  # no owner, no payload: made before the queue
        assert {r.id for r in store.claim_runs("dead", 2)} == {unstarted, started}
        assert [r.id for r in store.claim_runs("alive", 5)] == [alive]
        t = time.time()
        record = store.recorder(started)
        record(events.RunStarted(run_id=started, seq=1, t=t, node_count=2))
        record(events.NodeStarted(run_id=started, seq=2, t=t, node_id="1", node_type="core/text"))
        record(
            events.NodeFinished(
                run_id=started,
                seq=3,
                t=t,
                node_id="1",
                node_type="core/text",
                elapsed_s=0.5,
                outputs={"text": "kept"},
            )
        )
        record(events.NodeStarted(run_id=started, seq=4, t=t, node_id="2", node_type="llm/chat"))

        assert store.recover_runs("other", 10.0) == ([], [])  # fresh heartbeats: nothing
        for run_id in (unstarted, started):
            _age_heartbeat(store, run_id, 11)
        assert store.recover_runs("other", 10.0) == ([unstarted], [started])
        assert store.recover_runs("other", 10.0) == ([], [])  # once

        back = store.get_run(unstarted)
        assert (back.status, back.owner, back.payload) == ("queued", None, PAYLOAD)
        gone = store.get_run(started)
        assert (gone.status, gone.error, gone.payload) == ("interrupted", INTERRUPTED_ERROR, None)
        nodes = {n.node_id: n for n in store.node_runs(started)}
        assert (nodes["1"].status, nodes["1"].outputs) == ("done", {"text": "kept"})
        assert nodes["2"].status == "cancelled"
        assert store.get_run(alive).status == "queued" and store.get_run(legacy).owner is None

        # the dead owner's late events do not undo the take-over; it learns it lost the run
        record(events.RunCancelled(run_id=started, seq=5, t=t, elapsed_s=1.0))
        assert store.get_run(started).status == "interrupted"
        assert store.heartbeat("dead", [started]) == ([], [started])

        # at start-up a server takes back its own runs at once, and pre-queue leftovers
        requeued, interrupted = store.recover_runs("alive", 10.0, startup=True)
        assert (requeued, sorted(interrupted)) == ([alive], sorted([legacy]))


def test_cancel_requests_reach_the_owner_or_cancel_a_waiting_run(db: str) -> None:
    with Store(db) as store:
        waiting, owned = _queue(store, 2)
        assert [r.id for r in store.claim_runs("a", 1)] == [waiting]  # oldest first
        accepted, run = store.request_cancel(owned)  # no owner yet: cancelled now
        assert accepted and run.status == "cancelled"
        assert [e.type for e in store.events_after(owned)] == ["run_cancelled"]
        assert store.claim_runs("b", 5) == []  # a cancelled run is never claimed

        assert store.heartbeat("a", [waiting]) == ([], [])
        accepted, run = store.request_cancel(waiting)  # owned: the owner is asked
        assert accepted and run.status == "queued" and run.cancel_requested
        assert store.heartbeat("a", [waiting]) == ([waiting], [])
        assert store.request_cancel(owned)[0] is False  # already ended


def test_a_database_from_before_the_queue_is_migrated_with_its_runs(db: str) -> None:
    from alembic import command

    engine = make_engine(db, foreign_keys=False)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, source, status, inputs, created_at) "
                "VALUES ('old', 'api', 'finished', '{}', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    with Store(db) as store:
        old = store.get_run("old")
        assert (old.status, old.owner, old.cancel_requested, old.payload) == (
            "finished",
            None,
            False,
            None,
        )


def test_queue_settings_are_checked(monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    from flowbuilder.engine import Engine
    from server.runs import RunManager, SettingError

    monkeypatch.setenv("FLOWBUILDER_MAX_RUNS", "many")
    with Store(db) as store, pytest.raises(SettingError, match="FLOWBUILDER_MAX_RUNS"):
        RunManager(Engine(), store)
