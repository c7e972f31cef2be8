"""A trivial flow served as an endpoint against a bare FastAPI route, side by side.

    .venv/bin/python bench/endpoint.py [--clients 16] [--seconds 10] [--client httpx]

Two servers, each its own process on this machine:

- **flow**: ``flowbuilder serve`` (NiceGUI + FastAPI, SQLite run store in a temporary
  ``FLOWBUILDER_HOME``; every request sends the server's token as a Bearer key, as an
  API client does) with a published flow Input(text) → Template("Hello {{ text }}!")
  → Output(greeting), called at ``POST /api/v1/flows/{id}/run``. Every run is checked
  against the flow's typed schema, executed by the scheduler and recorded in the store.
- **bare**: a plain FastAPI app on uvicorn with one POST route doing the same string work
  (the same Jinja2 template, sandboxed, compiled once and rendered per request,
  as the Template node does) and answering the same JSON.

The same load generator drives both for the same time: N concurrent clients in one
asyncio loop, each sending its next request as soon as the last one is answered
(aiohttp, which NiceGUI already depends on; ``--client httpx`` uses httpx, whose own CPU
cost then caps both servers at a few hundred requests/s on 2 cores). It
prints requests/s, p50/p99 latency, errors and the ratio flow / bare. Targets: ≥ 1,000
runs/s for the flow and ≥ 0.5× the bare route, with 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BARE_APP = """
import functools
import jinja2.sandbox
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
app = FastAPI()
env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)
compiled = functools.lru_cache(maxsize=256)(env.from_string)
@app.post("/greet")
async def greet(request: Request):
    body = await request.json()
    text = compiled("Hello {{ text }}!").render({"text": body["text"]})
    return JSONResponse({"status": "finished", "outputs": {"greeting": text}})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], method: str = "GET") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.request(method, url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


TOKEN = secrets.token_urlsafe(24)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_flow_server(home: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """``flowbuilder serve`` with the trivial flow published: (process, base, run path)."""
    from flowbuilder.builder import GraphBuilder
    from flowbuilder.registry import default_registry

    port = free_port()
    env = {**os.environ, "FLOWBUILDER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env["FLOWBUILDER_TOKEN"] = TOKEN
    env.pop("FLOWBUILDER_REQUIRE_AUTH", None)
    env.pop("FLOWBUILDER_NO_AUTH", None)
    env.pop("FLOWBUILDER_DATABASE_URL", None)
    exe = str(Path(sys.executable).parent / "flowbuilder")
    proc = subprocess.Popen(
        [exe, "serve", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=(home / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_up(f"{base}/api/v1/flows", proc)
    b = GraphBuilder(default_registry(), name="Trivial")
    src = b.add("core/input", name="text", type="text")
    tpl = b.add("core/template", template="Hello {{ text }}!")
    out = b.add("core/output", name="greeting")
    b.link(src, "value", tpl, "text")
    b.link(tpl, "text", out, "value")
    graph = b.build().to_dict()
    made = httpx.post(
        f"{base}/api/v1/flows", json={"name": "Trivial", "graph": graph}, headers=AUTH
    )
    flow = made.json()
    httpx.post(f"{base}/api/v1/flows/{flow['id']}/publish", headers=AUTH).raise_for_status()
    path = f"/api/v1/flows/{flow['id']}/run"
    check = httpx.post(base + path, json={"text": "bench"}, headers=AUTH).json()
    assert check["outputs"] == {"greeting": "Hello bench!"}, check
    return proc, base, path


def start_bare_server(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    (folder / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_up(f"{base}/docs", proc)
    return proc, base, "/greet"


async def load(
    base: str, path: str, clients: int, seconds: float, client_kind: str
) -> dict[str, Any]:
    """N clients in a loop for ``seconds`` (after a 1 s warm-up): rate, latencies, errors."""
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0
    recording = False

    if client_kind == "aiohttp":
        import aiohttp

        session: Any = aiohttp.ClientSession(
            base, connector=aiohttp.TCPConnector(limit=clients), headers=AUTH
        )

        async def call(i: int) -> bool:
            async with session.post(path, json={"text": f"client {i}"}) as resp:
                data = await resp.read()
                return resp.status == 200 and b"Hello client" in data

    else:
        session = httpx.AsyncClient(
            base_url=base,
            limits=httpx.Limits(max_connections=clients),
            timeout=30,
            headers=AUTH,
        )

        async def call(i: int) -> bool:
            resp = await session.post(path, json={"text": f"client {i}"})
            return resp.status_code == 200 and "Hello client" in resp.text

    async def worker(i: int) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                ok = await call(i)
            except Exception:
                ok = False
            if recording:
                latencies.append(time.perf_counter() - t0)
                errors += not ok

    try:
        stop_at = time.perf_counter() + 1.0  # warm-up
        await asyncio.gather(*(worker(i) for i in range(clients)))
        recording = True
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        if client_kind == "aiohttp":
            await session.close()
        else:
            await session.aclose()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="load generator's HTTP client (aiohttp ships with NiceGUI; httpx is heavier "
        "and saturates a 2-core machine before the servers do)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fb-bench-") as tmp:
        folder = Path(tmp)
        (folder / "home").mkdir()
        flow_proc, flow_base, flow_path = start_flow_server(folder / "home")
        bare_proc, bare_base, bare_path = start_bare_server(folder)
        try:
            bare = asyncio.run(load(bare_base, bare_path, args.clients, args.seconds, args.client))
            flow = asyncio.run(load(flow_base, flow_path, args.clients, args.seconds, args.client))
            recorded = httpx.get(f"{flow_base}/api/v1/runs?limit=1", headers=AUTH).json()
        finally:
            for proc in (flow_proc, bare_proc):
                proc.terminate()
                proc.wait(timeout=10)
    print(
        f"\n{args.clients} concurrent clients ({args.client}), {args.seconds:.0f} s each, "
        f"{os.cpu_count()} CPUs\n"
    )
    print(f"| {'server':<42} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for label, r in (
        ("bare FastAPI route (same template)", bare),
        ("flowbuilder: Input → Template → Output", flow),
    ):
        print(
            f"| {label:<42} | {r['rps']:>8.0f} | {r['p50_ms']:>7.2f} | {r['p99_ms']:>7.2f} "
            f"| {r['errors']:>6} |"
        )
    ratio = flow["rps"] / bare["rps"] if bare["rps"] else 0.0
    print(f"\nflow / bare: {ratio:.2f}×  (targets: ≥ 1,000 runs/s, ≥ 0.5×, 0 errors)")
    print(f"last run recorded in the store: {json.dumps(recorded[0]['status'])}")


if __name__ == "__main__":
    main()
