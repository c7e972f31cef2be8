"""``flowbuilder serve-flow`` follows the server's rules: a key or the token on every
path (but ``/health``), the Host allow-list, JSON-only bodies and the Origin rule for
cookie sessions."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_api import FLOWBUILDER, free_port, greeting_graph, launch

TOKEN = secrets.token_urlsafe(24)
EVIL = "http://evil.example"


@dataclass
class FlowServer:
    base: str
    home: Path
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLOWBUILDER, *args], env=self.env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowServer]:
    tmp = tmp_path_factory.mktemp("sec-serve-flow")
    graph = tmp / "greeter.json"
    graph.write_text(json.dumps(greeting_graph()))
    port = free_port()
    env = {**os.environ, "FLOWBUILDER_HOME": str(tmp / "home"), "FLOWBUILDER_TOKEN": TOKEN}
    for name in ("FLOWBUILDER_REQUIRE_AUTH", "FLOWBUILDER_NO_AUTH", "FLOWBUILDER_DATABASE_URL"):
        env.pop(name, None)
    base = f"http://127.0.0.1:{port}"
    args = ["serve-flow", str(graph), "--port", str(port)]
    proc = launch(args, env, tmp / "serve-flow.log", f"{base}/health")
    yield FlowServer(base, tmp / "home", env)
    proc.terminate()
    proc.wait(timeout=10)
    assert f"{base}/docs?token={TOKEN}" in (tmp / "serve-flow.log").read_text()


def test_serve_flow_needs_a_key_or_the_token(flow_server: FlowServer) -> None:
    with httpx.Client(base_url=flow_server.base, timeout=60) as c:
        assert c.post("/run", json={"name": "Ada"}).status_code == 401
        for path in ("/", "/openapi.json", "/docs", "/api/v1/artifacts/abc"):
            assert c.get(path, follow_redirects=False).status_code == 401, path
        assert c.get("/health").status_code == 200
        wrong = c.post("/run", json={"name": "Ada"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        docs = c.get(f"/docs?token={TOKEN}", follow_redirects=False)
        assert docs.status_code in (302, 303, 307) and docs.headers["location"] == "/docs"
        assert c.get("/docs").status_code == 200  # the session cookie
        assert c.get("/openapi.json").status_code == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=flow_server.base, headers=auth, timeout=60) as c:
        r = c.post("/run", json={"name": "Ada"})
        assert r.status_code == 200 and r.json()["outputs"]["greeting"] == "Hello Ada!"
        schema = c.get("/openapi.json").json()
        schemes = schema["components"]["securitySchemes"]
        assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
        assert schema["paths"]["/run"]["post"]["security"] == [{"bearer": []}]
    made = flow_server.cli("keys", "create", "--name", "flow", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    with httpx.Client(base_url=flow_server.base, timeout=60) as c:
        kh = {"Authorization": f"Bearer {key['key']}"}
        assert c.post("/run", json={"name": "Bo"}, headers=kh).status_code == 200
        assert flow_server.cli("keys", "revoke", key["id"]).returncode == 0
        assert c.post("/run", json={"name": "Bo"}, headers=kh).status_code == 403


def test_serve_flow_checks_host_origin_and_json(flow_server: FlowServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=flow_server.base, timeout=60) as c:
        for headers in ({}, auth):
            for path in ("/", "/health", "/docs", "/openapi.json"):
                r = c.get(path, headers={"Host": "evil.example", **headers})
                assert r.status_code == 400, (path, headers, r.status_code)
            ran = c.post("/run", json={"name": "x"}, headers={"Host": "evil.example", **headers})
            assert ran.status_code == 400
        body = json.dumps({"name": "x"})
        tp = c.post("/run", content=body, headers={"Content-Type": "text/plain", **auth})
        assert tp.status_code == 415
        assert c.post("/run", data={"name": "x"}, headers=auth).status_code == 415
        c.get(f"/docs?token={TOKEN}")  # a browser session
        assert c.post("/run", json={"name": "x"}, headers={"Origin": EVIL}).status_code == 403
        tp = c.post("/run", content=body, headers={"Content-Type": "text/plain"})
        assert tp.status_code == 415
        assert c.post("/run", json={"name": "x"}).status_code == 200
        assert (
            "access-control-allow-origin"
            not in c.get("/", headers={"Origin": EVIL, **auth}).headers
        )
