"""The command line as a user runs it: a real subprocess, real exit codes, real signals.

A third-party node pack is installed the way any pack is — a distribution on the path
with a ``flowbuilder.nodes`` entry point — so these tests also cover pack discovery.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowbuilder.builder import GraphBuilder
from flowbuilder.graph import save_graph
from flowbuilder.registry import Registry, default_registry

FLOWBUILDER = str(Path(sys.executable).parent / "flowbuilder")

PACK = '''
import asyncio
from pathlib import Path
from pydantic import BaseModel
from flowbuilder.errors import NodeError
from flowbuilder.node import Node, NodeMeta, Param, Port


class Wait(Node):
    """Waits, then passes text through."""

    meta = NodeMeta(type="demo/wait", version="0.1.0", category="Demo")

    class Inputs(BaseModel):
        text: str = Port("", description="passed through")
        seconds: float = Param(0.0, ge=0)
        started: str = Param("", description="a file to create when the wait begins")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx, inputs):
        if inputs.started:
            Path(inputs.started).touch()
        await asyncio.sleep(inputs.seconds)
        return self.Outputs(text=inputs.text)


class Explode(Node):
    """Always fails."""

    meta = NodeMeta(type="demo/explode", version="0.1.0", category="Demo")

    class Inputs(BaseModel):
        text: str = Port("")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx, inputs):
        raise NodeError("the demo node exploded on purpose")


def register(registry):
    registry.register(Wait)
    registry.register(Explode)
'''


@pytest.fixture
def env(tmp_path: Path, home: Path) -> dict[str, str]:
    """Environment with a third-party pack 'demo' installed on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "fb_demo_pack").mkdir(parents=True)
    (site / "fb_demo_pack" / "__init__.py").write_text(textwrap.dedent(PACK))
    dist = site / "fb_demo_pack-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fb-demo-pack\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[flowbuilder.nodes]\ndemo = fb_demo_pack:register\n")
    e = dict(os.environ)
    # the pack first, then the caller's path (a checkout's own code before the installed one)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), e.get("PYTHONPATH", "")) if p)
    e["FLOWBUILDER_HOME"] = str(home)
    e["COLUMNS"] = "200"
    return e


@pytest.fixture
def demo_registry(env: dict[str, str]) -> Registry:
    site = env["PYTHONPATH"].split(os.pathsep)[0]
    sys.path.insert(0, site)
    try:
        import fb_demo_pack

        reg = default_registry()
        fb_demo_pack.register(reg)
        return reg
    finally:
        sys.path.remove(site)


def cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWBUILDER, *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def greeting_graph(reg: Registry, path: Path, *, wait: float = 0.0, started: str = "") -> Path:
    """Input(who) and Input(times, json {"n": …}) → Template → demo/wait → Output."""
    b = GraphBuilder(reg)
    who = b.add("core/input", name="who", type="text", default="world")
    times = b.add("core/input", name="times", type="json", default={"n": 1})
    tpl = b.add("core/template", template="{% for _ in range(n) %}Hello {{ text }}! {% endfor %}")
    waiter = b.add("demo/wait", seconds=wait, started=started)
    out = b.add("core/output", name="greeting")
    b.link(who, "value", tpl, "text")
    b.link(times, "value", tpl, "vars")
    b.link(tpl, "text", waiter, "text")
    b.link(waiter, "text", out, "value")
    save_graph(b.build(), path)
    return path


def test_run_prints_outputs_and_exits_0(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    path = greeting_graph(demo_registry, tmp_path / "g.json")
    proc = cli("run", str(path), "--input", "who=Ada", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Hello Ada!" in proc.stdout
    assert "greeting" in proc.stdout


def test_run_json_and_typed_inputs(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    path = greeting_graph(demo_registry, tmp_path / "g.json")
    proc = cli("run", str(path), "--json", "-i", "who=Bo", "-i", 'times={"n": 2}', env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "finished"
    assert data["outputs"] == {"greeting": "Hello Bo! Hello Bo! "}


def test_run_input_json_from_stdin(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    path = greeting_graph(demo_registry, tmp_path / "g.json")
    proc = cli(
        "run",
        str(path),
        "--json",
        "-q",
        "--input-json",
        "-",
        env=env,
        stdin=json.dumps({"who": "Cy", "times": {"n": 1}}),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"]["greeting"] == "Hello Cy! "


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-i", "nobody=1"], "no such input"),
        (["-i", "times=notjson"], "expected a json value"),
        (["-i", "who"], "name=value"),
    ],
)
def test_bad_inputs_exit_1(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry, args: list[str], needle: str
) -> None:
    path = greeting_graph(demo_registry, tmp_path / "g.json")
    proc = cli("run", str(path), *args, env=env)
    assert proc.returncode == 1
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_required_input_missing_exits_1(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    b = GraphBuilder(demo_registry)
    i = b.add("core/input", name="question", type="text")
    o = b.add("core/output", name="echo")
    b.link(i, "value", o, "value")
    save_graph(b.build(), tmp_path / "g.json")
    proc = cli("run", str(tmp_path / "g.json"), "--json", env=env)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["status"] == "invalid"
    assert "question" in data["error"] and "required" in data["error"]


def test_invalid_graph_exits_1(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "bad.json").write_text('{"nodes": [{"id": 1, "type": "core/nope"}]}')
    proc = cli("run", str(tmp_path / "bad.json"), env=env)
    assert proc.returncode == 1
    assert "core/nope" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_node_exits_2_with_panel(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    b = GraphBuilder(demo_registry)
    t = b.add("core/text", text="x")
    boom = b.add("demo/explode")
    o = b.add("core/output", name="out")
    b.link(t, "text", boom, "text")
    b.link(boom, "text", o, "value")
    save_graph(b.build(), tmp_path / "g.json")
    proc = cli("run", str(tmp_path / "g.json"), env=env)
    assert proc.returncode == 2
    assert "node 2 (demo/explode) failed" in proc.stderr
    assert "exploded on purpose" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("run", str(tmp_path / "g.json"), "--json", env=env)
    data = json.loads(proc.stdout)
    assert (data["status"], data["node_id"]) == ("failed", "2")


def test_keep_going_runs_independent_branch(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    b = GraphBuilder(demo_registry)
    boom = b.add("demo/explode")
    bad = b.add("core/output", name="bad")
    t = b.add("core/text", text="still here")
    w = b.add("demo/wait", seconds=0.2)
    good = b.add("core/output", name="good")
    b.link(boom, "text", bad, "value")
    b.link(t, "text", w, "text")
    b.link(w, "text", good, "value")
    save_graph(b.build(), tmp_path / "g.json")
    plain = json.loads(cli("run", str(tmp_path / "g.json"), "--json", env=env).stdout)
    assert "good" not in plain["outputs"]
    proc = cli("run", str(tmp_path / "g.json"), "--json", "--keep-going", env=env)
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["outputs"] == {"good": "still here"}
    assert data["node_errors"] == {"1": "the demo node exploded on purpose"}


def test_ctrl_c_cancels_and_exits_130(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    started = tmp_path / "started"
    path = greeting_graph(demo_registry, tmp_path / "g.json", wait=30, started=str(started))
    proc = subprocess.Popen(
        [FLOWBUILDER, "run", str(path)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as in a terminal: a test session started in the background by a
        # non-interactive shell ignores SIGINT, and a child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60  # interpreter start-up, then the wait node runs
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), proc.stderr.read() if proc.stderr else "never started"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - t0 < 10
    assert "cancelled" in stderr
    assert "Traceback" not in stderr


def test_timeout_fails_node(tmp_path: Path, env: dict[str, str], demo_registry: Registry) -> None:
    path = greeting_graph(demo_registry, tmp_path / "g.json", wait=10)
    proc = cli("run", str(path), "--timeout", "0.2", "--json", env=env)
    assert proc.returncode == 2
    assert "timed out after 0.2 s" in json.loads(proc.stdout)["error"]


def test_out_dir_writes_outputs(
    tmp_path: Path, env: dict[str, str], demo_registry: Registry
) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("some notes\n")
    b = GraphBuilder(demo_registry)
    load = b.add("core/load_file", path=str(src), kind="text")
    o1 = b.add("core/output", name="file")
    o2 = b.add("core/output", name="text")
    b.link(load, "file", o1, "value")
    b.link(load, "text", o2, "value")
    save_graph(b.build(), tmp_path / "g.json")
    env = {**env, "FLOWBUILDER_FILE_ROOTS": str(tmp_path)}
    proc = cli("run", str(tmp_path / "g.json"), "--out", str(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "file.txt").read_text() == "some notes\n"
    outputs = json.loads((tmp_path / "out" / "outputs.json").read_text())
    assert outputs["text"] == "some notes\n"
    assert outputs["file"]["kind"] == "document"


def test_nodes_catalogue_includes_third_party_pack(env: dict[str, str]) -> None:
    proc = cli("nodes", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    catalogue = {e["type"]: e for e in json.loads(proc.stdout)}
    assert {"demo/wait", "core/input", "llm/chat", "audio/transcribe"} <= set(catalogue)
    chat = catalogue["llm/chat"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", chat["version"]) and chat["category"] == "LLM"
    assert {"name": "text", "type": "text"} in chat["outputs"]
    params = {p["name"]: p for p in chat["params"]}
    assert params["max_tokens"]["schema"]["minimum"] == 1
    assert params["temperature"]["type"] == "number"
    proc = cli("nodes", env=env)
    assert "demo/wait" in proc.stdout and "audio/transcribe" in proc.stdout
