"""``flowbuilder serve-flow graph.json``: one flow file as an endpoint, no UI, no database."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
from conftest import REPO
from test_api import FLOWBUILDER, free_port, greeting_graph, iter_sse


def test_serve_flow(tmp_path: Path) -> None:
    graph = tmp_path / "greeter.json"
    graph.write_text(json.dumps(greeting_graph()))
    port = free_port()
    token = "endpoint-test-token"
    env = {"FLOWBUILDER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    env["FLOWBUILDER_TOKEN"] = token
    proc = subprocess.Popen(
        [FLOWBUILDER, "serve-flow", str(graph), "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
            r = c.post("/run", json={"name": "Ada", "count": 2})
            assert r.status_code == 200, r.text
            assert r.json()["outputs"] == {"greeting": "Hello Ada!", "count": 2}
            bad = c.post("/run", json={"name": "Ada", "count": "2"})
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "count"]
            schema = c.get("/openapi.json").json()
            body = schema["paths"]["/run"]["post"]["requestBody"]["content"]["application/json"]
            inputs = schema["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
            assert inputs["properties"]["count"]["type"] == "integer"
            with c.stream("POST", "/run?stream=true", json={"name": "Bo"}) as resp:
                events = list(iter_sse(resp))
            assert events[0]["event"] == "run_started"
            assert events[-1]["event"] == "result"
            assert events[-1]["data"]["outputs"]["greeting"] == "Hello Bo!"
        assert not (tmp_path / "home" / "flowbuilder.db").exists()  # no database
    finally:
        proc.terminate()
        proc.wait(timeout=10)
