"""The HTTP API against a running ``flowbuilder serve``, on SQLite and on PostgreSQL.

Each backend gets one server process (with its own empty data directory and database);
the restart test starts and kills its own. Real models only where the behaviour needs
them (streamed tokens, long runs), with few tokens.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FIXTURES, REPO
from pg import fresh_schema

from flowbuilder.builder import GraphBuilder
from flowbuilder.graph import load_graph
from flowbuilder.registry import default_registry

FLOWBUILDER = str(Path(sys.executable).parent / "flowbuilder")


# ---- servers and databases ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A ``flowbuilder serve`` subprocess: its URL, data directory, environment and
    token (the server's own, sent as a Bearer key by :meth:`client`)."""

    base: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    port: int
    token: str = ""

    def client(self, *, anonymous: bool = False, **kw: Any) -> httpx.Client:
        """An HTTP client of this server sending ``Authorization: Bearer <token>``;
        ``headers=`` given here win (e.g. an API key), ``anonymous=True`` sends none."""
        headers = {} if anonymous or not self.token else {"Authorization": f"Bearer {self.token}"}
        headers.update(kw.pop("headers", None) or {})
        return httpx.Client(base_url=self.base, timeout=60, headers=headers, **kw)

    @property
    def login_url(self) -> str:
        """The tokenised URL the server prints: opening it signs a browser in."""
        return f"{self.base}/?token={self.token}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the ``flowbuilder`` CLI against this server's data directory/database."""
        return subprocess.run(
            [FLOWBUILDER, *args], env=self.env, capture_output=True, text=True, timeout=60
        )


def server_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment of a test server: this one, ``home`` as the data directory, no
    auth setting of the calling shell unless ``env`` (added last) names it."""
    full = {**os.environ, "FLOWBUILDER_HOME": str(home), "HF_HUB_OFFLINE": "1", **env}
    full.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would think it runs inside pytest
    for name in ("FLOWBUILDER_REQUIRE_AUTH", "FLOWBUILDER_NO_AUTH", "FLOWBUILDER_ALLOWED_HOSTS"):
        if name not in env:
            full.pop(name, None)
    return full


def launch(args: list[str], env: dict[str, str], log: Path, probe: str) -> subprocess.Popen[bytes]:
    """Start ``flowbuilder *args`` (output appended to ``log``) and wait up to 60 s until
    the URL ``probe`` answers at all.

    Raises:
        RuntimeError: the process ended or never answered (the message is its log).
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [FLOWBUILDER, *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(probe, timeout=2)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(log.read_text())


def start_server(
    home: Path, *, database_url: str | None = None, port: int | None = None, **env: str
) -> Server:
    """Start ``flowbuilder serve`` on a free port and wait until it answers.

    The server gets a fresh token (``FLOWBUILDER_TOKEN``) unless ``env`` names one; an
    empty one lets the server make its own (read back from the data directory).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env.setdefault("FLOWBUILDER_TOKEN", secrets.token_urlsafe(24))
    full_env = server_env(home, env)
    if database_url:
        full_env["FLOWBUILDER_DATABASE_URL"] = database_url
    else:
        full_env.pop("FLOWBUILDER_DATABASE_URL", None)
    base = f"http://127.0.0.1:{port}"
    log = home / f"server-{port}.log"
    proc = launch(["serve", "--port", str(port)], full_env, log, f"{base}/openapi.json")
    token = env["FLOWBUILDER_TOKEN"]
    if not token and (home / "token").is_file():
        token = (home / "token").read_text().strip()
    return Server(base, home, full_env, proc, port, token)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for SQLite (the default, in the data directory) or the URL of a fresh
    PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    yield from fresh_schema("api")


@pytest.fixture(scope="module")
def server(database: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("api-home"), database_url=database)
    yield srv
    srv.stop()


# ---- graphs ---------------------------------------------------------------------------


def greeting_graph() -> dict[str, Any]:
    """name (text), count (integer, default 1) → greeting (text), count (integer)."""
    b = GraphBuilder(default_registry(), name="Greeter")
    name = b.add("core/input", name="name", type="text", description="who to greet")
    count = b.add("core/input", name="count", type="integer", default=1)
    tpl = b.add("core/template", template="Hello {{ text }}!")
    out = b.add("core/output", name="greeting", description="the greeting")
    out2 = b.add("core/output", name="count")
    b.link(name, "value", tpl, "text")
    b.link(tpl, "text", out, "value")
    b.link(count, "value", out2, "value")
    return b.build().to_dict()


def chat_graph(max_tokens: int = 8, name: str = "Chat") -> dict[str, Any]:
    """prompt (text) → Template → LLM (SmolLM2, greedy) → text."""
    b = GraphBuilder(default_registry(), name=name)
    prompt = b.add("core/input", name="prompt", type="text")
    tpl = b.add("core/template", template="{{ text }}")
    llm = b.add("llm/chat", model="local:smollm2", temperature=0.0, max_tokens=max_tokens, seed=0)
    out = b.add("core/output", name="text")
    b.link(prompt, "value", tpl, "text")
    b.link(tpl, "text", llm, "prompt")
    b.link(llm, "text", out, "value")
    return b.build().to_dict()


def create_flow(
    client: httpx.Client, graph: dict[str, Any], name: str, publish: bool = True
) -> str:
    r = client.post("/api/v1/flows", json={"name": name, "graph": graph})
    assert r.status_code == 201, r.text
    flow_id: str = r.json()["id"]
    if publish:
        assert client.post(f"/api/v1/flows/{flow_id}/publish").status_code == 200
    return flow_id


def iter_sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a Server-Sent Events response into {id, event, data} dicts as they come."""
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if current:
                yield current
                current = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "data":
            current["data"] = json.loads(value)
        elif key in ("id", "event"):
            current[key] = value


def sse_events(response: httpx.Response, limit: int | None = None) -> list[dict[str, Any]]:
    """The events of a Server-Sent Events response, up to ``limit``."""
    found: list[dict[str, Any]] = []
    for event in iter_sse(response):
        found.append(event)
        if limit is not None and len(found) >= limit:
            break
    return found


def wait_status(
    client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}: {run}")


# ---- tests ----------------------------------------------------------------------------


def test_typed_run_and_schema(server: Server) -> None:
    with server.client() as c:
        flow_id = create_flow(c, greeting_graph(), "Greeter", publish=False)
        assert c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "Ada"}).status_code == 404
        assert c.post(f"/api/v1/flows/{flow_id}/publish").json()["published"] is True

        r = c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "Ada", "count": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "finished"
        assert body["outputs"] == {"greeting": "Hello Ada!", "count": 3}

        wrong = c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "Ada", "count": "3"})
        assert wrong.status_code == 422
        assert wrong.json()["detail"][0]["loc"] == ["body", "count"]
        missing = c.post(f"/api/v1/flows/{flow_id}/run", json={"count": 2})
        assert missing.status_code == 422
        assert missing.json()["detail"][0]["loc"] == ["body", "name"]
        unknown = c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "A", "colour": "red"})
        assert unknown.status_code == 422 and "colour" in unknown.json()["detail"][0]["loc"]

        run = c.get(f"/api/v1/runs/{body['run_id']}").json()
        assert run["status"] == "finished" and run["source"] == "api"
        assert run["flow_id"] == flow_id and run["outputs"]["greeting"] == "Hello Ada!"
        assert run["inputs"] == {"name": "Ada", "count": 3}
        assert {n["status"] for n in run["nodes"]} == {"done"}

        schema = c.get("/openapi.json").json()
        op = schema["paths"][f"/api/v1/flows/{flow_id}/run"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        inputs = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert inputs["properties"]["name"]["type"] == "string"
        assert inputs["properties"]["count"]["type"] == "integer"
        assert inputs["required"] == ["name"]
        out_ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        result = schema["components"]["schemas"][out_ref.rsplit("/", 1)[1]]
        outputs = schema["components"]["schemas"][
            result["properties"]["outputs"]["$ref"].rsplit("/", 1)[1]
        ]
        assert set(outputs["properties"]) == {"greeting", "count"}
        assert c.get("/docs").status_code == 200

        assert c.post(f"/api/v1/flows/{flow_id}/unpublish").status_code == 200
        assert c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "A"}).status_code == 404
        assert f"/api/v1/flows/{flow_id}/run" not in c.get("/openapi.json").json()["paths"]


def test_flows_crud_versions_validate(server: Server) -> None:
    with server.client() as c:
        flow_id = create_flow(c, greeting_graph(), "Versions", publish=False)
        graph = greeting_graph()
        graph["nodes"][2]["properties"]["template"] = "Hi {{ text }}"
        assert c.put(f"/api/v1/flows/{flow_id}", json={"graph": graph}).json()["version"] == 2
        assert [v["version"] for v in c.get(f"/api/v1/flows/{flow_id}/versions").json()] == [2, 1]
        restored = c.post(f"/api/v1/flows/{flow_id}/versions/1/restore").json()
        assert restored["version"] == 3
        got = c.get(f"/api/v1/flows/{flow_id}").json()
        assert got["graph"]["nodes"][2]["properties"]["template"] == "Hello {{ text }}!"
        assert [i["name"] for i in got["inputs"]] == ["name", "count"]
        assert c.get(f"/api/v1/flows/{flow_id}/versions/9").status_code == 404

        ok = c.post(f"/api/v1/flows/{flow_id}/validate").json()
        assert ok["valid"] is True
        bad = greeting_graph()
        bad["nodes"][2]["type"] = "core/templat"
        problems = c.post(f"/api/v1/flows/{flow_id}/validate", json={"graph": bad}).json()
        assert problems["valid"] is False
        assert problems["issues"][0]["code"] == "unknown_type"
        assert problems["issues"][0]["node_id"] == "3"

        renamed = c.patch(f"/api/v1/flows/{flow_id}", json={"name": "Renamed", "published": True})
        assert renamed.json()["name"] == "Renamed" and renamed.json()["published"]
        assert any(f["id"] == flow_id for f in c.get("/api/v1/flows?published=true").json())
        assert c.get("/api/v1/nodes").status_code == 200
        assert c.delete(f"/api/v1/flows/{flow_id}").status_code == 204
        assert c.get(f"/api/v1/flows/{flow_id}").status_code == 404


def test_async_run_poll_and_events(server: Server) -> None:
    with server.client() as c:
        flow_id = create_flow(c, chat_graph(), "Chat async")
        r = c.post(f"/api/v1/flows/{flow_id}/runs", json={"prompt": "Say hello."})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        with c.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            live = sse_events(resp)
        run = wait_status(c, run_id, {"finished", "failed"})
        assert run["status"] == "finished", run
        assert run["outputs"]["text"]
        types = [e["event"] for e in live]
        assert types[0] == "run_started" and types[-1] == "run_finished"
        seqs = [int(e["id"]) for e in live]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert any(e["event"] == "node_progress" and e["data"].get("delta") for e in live)
        started = [e["data"]["node_id"] for e in live if e["event"] == "node_started"]
        assert started.index("2") < started.index("3")

        # after the run: the stored events, resumable
        with c.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
            stored = sse_events(resp)
        assert stored[0]["event"] == "run_started"
        assert stored[-1]["event"] == "run_finished"
        cut = int(stored[2]["id"])
        with c.stream(
            "GET", f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(cut)}
        ) as resp:
            rest = sse_events(resp)
        assert rest == [e for e in stored if int(e["id"]) > cut]


def test_live_sse_resume_and_stream(server: Server) -> None:
    with server.client() as c:
        flow_id = create_flow(c, chat_graph(name="Chat stream"), "Chat stream")
        run_id = c.post(f"/api/v1/flows/{flow_id}/runs", json={"prompt": "Count to ten."}).json()[
            "run_id"
        ]
        with c.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
            first = sse_events(resp, limit=3)
        last = int(first[-1]["id"])
        with c.stream(
            "GET", f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(last)}
        ) as resp:
            rest = sse_events(resp)
        seqs = [int(e["id"]) for e in first + rest]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert rest and all(int(e["id"]) > last for e in rest)
        assert rest[-1]["event"] == "run_finished"

        # ?stream=true: node events and tokens, then the full result
        with c.stream(
            "POST", f"/api/v1/flows/{flow_id}/run?stream=true", json={"prompt": "Say hi."}
        ) as resp:
            assert resp.status_code == 200
            streamed = sse_events(resp)
        tokens = [e["data"]["delta"] for e in streamed if e.get("data", {}).get("delta")]
        assert tokens
        assert streamed[-1]["event"] == "result"
        assert streamed[-1]["data"]["status"] == "finished"
        assert "".join(tokens).strip() == streamed[-1]["data"]["outputs"]["text"]


def test_cancel_and_timeout(server: Server) -> None:
    with server.client() as c:
        flow_id = create_flow(c, chat_graph(max_tokens=1500, name="Long"), "Long")
        prompt = {"prompt": "Write a very long story about a dragon and a knight."}
        run_id = c.post(f"/api/v1/flows/{flow_id}/runs", json=prompt).json()["run_id"]
        with c.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
            for event in iter_sse(resp):
                if event["event"] == "node_progress":
                    break
        assert c.post(f"/api/v1/runs/{run_id}/cancel").status_code == 202
        run = wait_status(c, run_id, {"cancelled", "finished", "failed"}, timeout=20)
        assert run["status"] == "cancelled"
        assert c.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409
        assert c.post("/api/v1/runs/nope/cancel").status_code == 404

        t0 = time.monotonic()
        r = c.post(f"/api/v1/flows/{flow_id}/run?timeout=0.5", json=prompt)
        assert r.status_code == 504 and time.monotonic() - t0 < 10
        timed_out = wait_status(c, r.json()["detail"]["run_id"], {"cancelled"}, timeout=20)
        assert timed_out["source"] == "api"


def test_multipart_audio_voice_memo(server: Server, database: str | None) -> None:
    if database is not None:
        pytest.skip("the voice memo runs once, on SQLite (the database does not matter)")
    graph = load_graph(REPO / "examples" / "voice_memo.json").to_dict()
    for node in graph["nodes"]:
        if node["type"] == "llm/chat":
            node["properties"]["max_tokens"] = 16
    with server.client() as c:
        flow_id = create_flow(c, graph, "Voice memo (API)")
        audio = (FIXTURES / "audio" / "jfk.flac").read_bytes()
        r = c.post(
            f"/api/v1/flows/{flow_id}/run",
            files={"audio": ("jfk.flac", audio, "audio/flac")},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        outputs = r.json()["outputs"]
        assert "ask not what your country can do for you" in outputs["transcript"].lower()
        assert outputs["summary"]

        # the same audio by artifact id, uploaded first
        ref = c.post("/api/v1/artifacts", files={"file": ("jfk.flac", audio)}).json()
        again = c.post(f"/api/v1/flows/{flow_id}/run", json={"audio": ref["id"]}, timeout=120)
        assert again.status_code == 200
        assert again.json()["outputs"]["transcript"] == outputs["transcript"]
        bad = c.post(f"/api/v1/flows/{flow_id}/run", json={"audio": "/etc/passwd"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "audio"]


def test_restart_marks_run_interrupted(
    database: str | None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("restart-home")
    srv = start_server(home, database_url=database)
    try:
        with srv.client() as c:
            flow_id = create_flow(c, chat_graph(max_tokens=1500, name="Long"), "Long restart")
            prompt = {"prompt": "Write a very long story about a dragon and a knight."}
            run_id = c.post(f"/api/v1/flows/{flow_id}/runs", json=prompt).json()["run_id"]
            with c.stream("GET", f"/api/v1/runs/{run_id}/events") as resp:
                for event in iter_sse(resp):
                    if event["event"] == "node_progress":
                        break
            assert c.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"
        srv.stop(signal.SIGKILL)
        srv = start_server(home, database_url=database, port=srv.port)
        with srv.client() as c:
            run = c.get(f"/api/v1/runs/{run_id}").json()
            assert run["status"] == "interrupted"
            nodes = {n["node_id"]: n for n in run["nodes"]}
            assert nodes["2"]["status"] == "done"  # the template's output is kept
            assert nodes["2"]["outputs"] == {"text": prompt["prompt"]}
            assert nodes["3"]["status"] == "cancelled"
            events = c.get(f"/api/v1/runs/{run_id}/events", timeout=10).text
            assert "event: node_finished" in events
    finally:
        srv.stop(signal.SIGKILL)


def test_file_outputs_come_as_urls_or_base64(server: Server, tmp_path: Path) -> None:
    """A flow returning an image: its output carries a download URL, and the bytes as
    base64 when asked."""
    b = GraphBuilder(default_registry(), name="Echo image")
    image = b.add("core/input", name="image", type="image")
    out = b.add("core/output", name="image")
    b.link(image, "value", out, "value")
    png = _tiny_png(tmp_path)
    with server.client() as c:
        flow_id = create_flow(c, b.build().to_dict(), "Echo image")
        r = c.post(f"/api/v1/flows/{flow_id}/run", files={"image": ("dot.png", png, "image/png")})
        assert r.status_code == 200, r.text
        ref = r.json()["outputs"]["image"]
        assert ref["kind"] == "image" and ref["url"] == f"/api/v1/artifacts/{ref['id']}"
        assert "data" not in ref
        assert c.get(ref["url"]).content == png
        r = c.post(
            f"/api/v1/flows/{flow_id}/run?artifacts=base64",
            files={"image": ("dot.png", png, "image/png")},
        )
        assert base64.b64decode(r.json()["outputs"]["image"]["data"]) == png


def _tiny_png(tmp_path: Path) -> bytes:
    from PIL import Image

    Image.new("RGB", (4, 4), (200, 40, 40)).save(tmp_path / "dot.png")
    return (tmp_path / "dot.png").read_bytes()
