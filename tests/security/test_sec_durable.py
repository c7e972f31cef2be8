"""Acknowledged means durable: a 200 or 202 carrying a run id means the run is recorded.

Sixteen clients call a published trivial flow (Input → Template → Output: the fast path
for the synchronous route) and submit runs (202) as fast as they can; the server is
killed with SIGKILL in the middle; a new server on the same data directory must know
every run id that was answered, with its final status for the 200s.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg import fresh_schema
from test_api import Server, create_flow, greeting_graph, start_server

CLIENTS = 16
SUBMITTERS = 4  # of the clients, these call POST /flows/{id}/runs (202); the rest /run


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    yield from fresh_schema("durable")


def api_key(srv: Server) -> dict[str, str]:
    made = srv.cli("keys", "create", "--name", "t", "--json")
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}


async def hammer(
    srv: Server, headers: dict[str, str], flow_id: str, runs: int, submits: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """``CLIENTS`` concurrent clients until ``runs`` synchronous runs (200) and ``submits``
    submitted ones (202) were answered (or 60 s passed), then SIGKILL while they still
    send. Returns every answer that carried a run id: (status, run id, body)."""
    answered: list[tuple[int, str, dict[str, Any]]] = []
    stop = False

    async def client(i: int) -> None:
        path = f"/api/v1/flows/{flow_id}/" + ("runs" if i < SUBMITTERS else "run")
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=srv.base, headers=headers, timeout=10, limits=limits
        ) as c:
            n = 0
            while not stop:
                n += 1
                try:
                    r = await c.post(path, json={"name": f"c{i}-{n}"})
                except httpx.HTTPError:
                    return  # the server is gone
                body = r.json()
                if r.status_code in (200, 202):
                    answered.append((r.status_code, body["run_id"], body))
                if i < SUBMITTERS:
                    await asyncio.sleep(0.05)  # a backlog of runs would starve the rest

    tasks = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        codes = [a[0] for a in answered]
        if codes.count(200) >= runs and codes.count(202) >= submits:
            break
        await asyncio.sleep(0.05)
    srv.proc.send_signal(signal.SIGKILL)  # mid-flight: requests are still coming in
    stop = True
    await asyncio.gather(*tasks)
    srv.proc.wait(timeout=15)
    return answered


def all_runs(c: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every run record, by id (``GET /runs``, page by page)."""
    found: dict[str, dict[str, Any]] = {}
    while True:
        page = c.get("/api/v1/runs", params={"limit": 500, "offset": len(found)})
        assert page.status_code == 200, page.text
        found.update((r["id"], r) for r in page.json())
        if len(page.json()) < 500:
            return found


def test_sigkill_under_load_loses_no_acknowledged_run(tmp_path: Path, database: str | None) -> None:
    home = tmp_path / "home"
    srv = start_server(home, database_url=database, FLOWBUILDER_REQUIRE_AUTH="1")
    try:
        headers = api_key(srv)
        with srv.client(headers=headers) as c:
            flow_id = create_flow(c, greeting_graph(), "Greeter")
        answered = asyncio.run(hammer(srv, headers, flow_id, runs=200, submits=30))
    finally:
        srv.stop(signal.SIGKILL)
    codes = [a[0] for a in answered]
    assert codes.count(200) >= 200 and codes.count(202) >= 30, (codes.count(200), len(codes))

    srv = start_server(home, database_url=database, port=srv.port, FLOWBUILDER_REQUIRE_AUTH="1")
    try:
        with srv.client(headers=headers) as c:
            stored = all_runs(c)
            # the last answers are the ones a late write loses: each read by its own route
            for _, run_id, _ in answered[-20:]:
                r = c.get(f"/api/v1/runs/{run_id}")
                assert r.status_code == 200, f"acknowledged run {run_id}: {r.status_code}"
                stored[run_id] = r.json()
        lost = [run_id for _, run_id, _ in answered if run_id not in stored]
        assert not lost, f"{len(lost)} of {len(answered)} acknowledged runs were lost"
        wrong = [
            (run_id, stored[run_id]["status"])
            for code, run_id, body in answered
            if code == 200
            and (stored[run_id]["status"], stored[run_id]["outputs"])
            != (body["status"], body["outputs"])
        ]
        assert not wrong, f"runs answered 200 recorded otherwise: {wrong[:5]}"
    finally:
        srv.stop(signal.SIGKILL)
