"""Attacks on the file-access policy, against a real ``flowbuilder serve`` subprocess.

Each test sends a graph over the HTTP API, as any caller (or a page the user visits) could,
and checks that the node is refused with a sentence naming the node, the field and the
folders nodes may use — and that nothing was read or written. The server runs with
``cwd=REPO`` (like ``make run``) and a fresh data directory.

Two servers: one with no folder named (only the workspace ``FLOWBUILDER_HOME/files``), and
one whose user named ``/`` as a root (through both the current and the old variable), to
show that the data directory's internals and the Python installation stay out of reach
whatever the roots say.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FIXTURES, REPO
from test_api import Server, create_flow, start_server

from flowbuilder.builder import GraphBuilder
from flowbuilder.bundled import BUNDLED
from flowbuilder.registry import default_registry
from flowbuilder.secrets import SecretStore

REFUSED = "nodes may use files under:"


@dataclass
class Api:
    srv: Server
    key: str

    @property
    def home(self) -> Path:
        return self.srv.home

    def client(self) -> httpx.Client:
        auth = {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.srv.base, headers=auth, timeout=180)

    def run(self, graph: dict[str, Any], inputs: dict[str, Any] | None = None) -> httpx.Response:
        """Create and publish ``graph`` as a flow and run it once; the HTTP answer."""
        with self.client() as c:
            flow_id = create_flow(c, graph, f"attack {uuid.uuid4().hex[:8]}")
            return c.post(f"/api/v1/flows/{flow_id}/run", json=inputs or {})


def _serve(home: Path, **env: str) -> Iterator[Api]:
    srv = start_server(home, FLOWBUILDER_REQUIRE_AUTH="1", **env)
    try:
        made = srv.cli("keys", "create", "--name", "t", "--json")
        assert made.returncode == 0, made.stderr
        SecretStore(home).set("OPENAI_API_KEY", "sk-never-leaves-the-store")
        yield Api(srv, json.loads(made.stdout)["key"])
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server with no folder named: nodes get the workspace only."""
    yield from _serve(tmp_path_factory.mktemp("sec-files") / "home")


@pytest.fixture(scope="module")
def api_root_everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server whose user named ``/`` as a root (new and old variable alike)."""
    yield from _serve(
        tmp_path_factory.mktemp("sec-files-root") / "home",
        FLOWBUILDER_FILE_ROOTS="/",
        FLOWBUILDER_ALLOWED_ROOTS="/",
    )


def graph_of(type_id: str, output: str, wires: dict[str, str] | None = None, **params: Any) -> Any:
    """``type_id`` with ``params``, its ``output`` port to a flow output ``out``; ``wires``
    feeds inputs from flow inputs of the given type (input name = port name)."""
    b = GraphBuilder(default_registry(), name="attack")
    node = b.add(type_id, **params)
    for port, kind in (wires or {}).items():
        src = b.add("core/input", name=port, type=kind)
        b.link(src, "value", node, port)
    out = b.add("core/output", name="out")
    b.link(node, output, out, "value")
    return b.build().to_dict()


def assert_refused(r: httpx.Response, field: str, reason: str, *, leak: bytes = b"") -> str:
    """The run failed on its first node with a policy refusal naming ``field`` and
    ``reason``; nothing of ``leak`` is in the answer. Returns the error."""
    assert r.status_code == 500, r.text[:500]
    detail = r.json()["detail"]
    error: str = detail["error"]
    assert f"field '{field}'" in error, error
    assert reason in error, error
    assert REFUSED in error, error
    if leak:
        assert leak not in r.content
    return error


# ---- secrets decrypted -----------------------------------------------------------------


def _symlink_in_workspace(api: Api, target: str) -> str:
    work = api.home / "files"
    work.mkdir(parents=True, exist_ok=True)
    link = work / f"innocent-{uuid.uuid4().hex[:6]}.txt"
    link.symlink_to(api.home / target)
    return str(link)


@pytest.mark.parametrize(
    "how",
    ["absolute", "traversal-from-workspace", "traversal-from-cwd", "symlink-in-workspace"],
)
@pytest.mark.parametrize("target", ["secret.key", "secrets.enc", "flowbuilder.db"])
def test_load_file_cannot_read_the_data_directory(api: Api, target: str, how: str) -> None:
    secret = (api.home / target).read_bytes()
    path = {
        "absolute": str(api.home / target),
        "traversal-from-workspace": f"../{target}",
        "traversal-from-cwd": os.path.relpath(api.home / target, REPO),
    }.get(how) or _symlink_in_workspace(api, target)
    kind = "file" if target == "flowbuilder.db" else "text"
    output = "file" if kind == "file" else "text"
    r = api.run(graph_of("core/load_file", output, path=path, kind=kind))
    reason = (
        "the run store's database" if target == "flowbuilder.db" else "inside the data directory"
    )
    if how == "traversal-from-cwd":  # resolved in the workspace now, it leads elsewhere
        reason = "outside every folder"
    error = assert_refused(r, "path", reason, leak=secret[:32])
    assert "Load File" in error and r.json()["detail"]["node_id"] == "1"


def test_root_everything_still_keeps_the_data_directory_out(api_root_everything: Api) -> None:
    api = api_root_everything
    for target in ("secret.key", "secrets.enc"):
        secret = (api.home / target).read_bytes()
        r = api.run(graph_of("core/load_file", "text", path=str(api.home / target)))
        assert_refused(r, "path", "inside the data directory", leak=secret[:32])


# ---- code execution --------------------------------------------------------------------


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _plant(api: Api, path_of: Any) -> None:
    """Try to write a harmless .pth (one line naming a directory that does not exist)."""
    name = f"flowbuilder-sec-test-{uuid.uuid4().hex}.pth"
    real = _site_packages().resolve() / name
    line = f"/nonexistent-flowbuilder-sec-test-{uuid.uuid4().hex}\n"
    try:
        r = api.run(
            graph_of(
                "core/save_file",
                "path",
                wires={"value": "text"},
                path=path_of(name),
                overwrite=True,
            ),
            {"value": line},
        )
        assert not real.exists(), f"{real} was written"
        if r.status_code == 200:  # a relative path: it must have landed in the workspace
            written = Path(r.json()["outputs"]["out"])
            assert written.is_relative_to(api.home / "files"), written
        else:
            assert_refused(r, "path", "")
    finally:
        real.unlink(missing_ok=True)


@pytest.mark.parametrize("form", ["absolute-through-cwd", "absolute-real", "relative-to-cwd"])
def test_save_file_cannot_plant_a_pth_file(api: Api, form: str) -> None:
    rel = _site_packages().relative_to(Path(sysconfig.get_paths()["data"]))
    path_of = {
        "absolute-through-cwd": lambda n: str(REPO / ".venv" / rel / n),
        "absolute-real": lambda n: str(_site_packages().resolve() / n),
        "relative-to-cwd": lambda n: str(Path(".venv") / rel / n),
    }[form]
    _plant(api, path_of)


@pytest.mark.parametrize("form", ["absolute", "traversal-from-workspace"])
def test_save_file_cannot_plant_a_pth_file_even_under_a_root(
    api_root_everything: Api, form: str
) -> None:
    api = api_root_everything
    site = _site_packages().resolve()
    path_of = {
        "absolute": lambda n: str(site / n),
        "traversal-from-workspace": lambda n: os.path.relpath(site / n, api.home / "files"),
    }[form]
    _plant(api, path_of)


# ---- endpoint hijack -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["../providers.json", "absolute"])
def test_save_file_cannot_rewrite_providers_json(api: Api, form: str) -> None:
    made = api.srv.cli("providers", "add-endpoint", "mine", "http://127.0.0.1:9/v1")
    assert made.returncode == 0, made.stderr
    config = api.home / "providers.json"
    before = config.read_bytes()
    evil = {"version": 1, "endpoints": {"openai": {"kind": "openai", "base_url": "http://evil/v1"}}}
    path = str(config) if form == "absolute" else form
    r = api.run(
        graph_of("core/save_file", "path", wires={"value": "json"}, path=path, overwrite=True),
        {"value": evil},
    )
    assert_refused(r, "path", "inside the data directory")
    assert config.read_bytes() == before


# ---- knowledge bases -------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs(api: Api) -> str:
    """A folder of one document inside the workspace; its path relative to it."""
    folder = api.home / "files" / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "note.md").write_text("# Note\n\nThe harbour opens at six.\n")
    return str(folder)


def test_ingest_location_outside_the_roots_is_refused(api: Api, docs: str, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere-kb"
    r = api.run(
        graph_of("rag/ingest", "summary", path=docs, knowledge_base="kb", location=str(target))
    )
    assert_refused(r, "location", "outside every folder")
    assert not target.exists()


def test_ingest_path_in_the_servers_folder_is_refused(api: Api) -> None:
    r = api.run(graph_of("rag/ingest", "summary", path=str(REPO / "examples"), knowledge_base="x"))
    assert_refused(r, "path", "outside every folder")


def test_write_location_outside_the_roots_is_refused(api: Api, docs: str, tmp_path: Path) -> None:
    b = GraphBuilder(default_registry(), name="write elsewhere")
    load = b.add("rag/load_documents", path=docs)
    split = b.add("rag/split")
    embed = b.add("rag/embed")
    target = tmp_path / "kb-write"
    write = b.add("rag/write", knowledge_base="kb", location=str(target))
    out = b.add("core/output", name="out")
    b.link(load, "documents", split, "documents")
    b.link(split, "chunks", embed, "chunks")
    b.link(embed, "chunks", write, "chunks")
    b.link(write, "chunks_written", out, "value")
    r = api.run(b.build().to_dict())
    assert_refused(r, "location", "outside every folder")
    assert not target.exists()


@pytest.mark.parametrize("where", ["knowledge-store", "object-store"])
def test_retrieve_location_is_refused(api: Api, where: str) -> None:
    location = str(api.home / "knowledge") if where == "knowledge-store" else "s3://bucket/kb"
    reason = "knowledge store" if where == "knowledge-store" else "FLOWBUILDER_KNOWLEDGE_URI"
    graph = graph_of(
        "rag/retrieve", "chunks", wires={"query": "text"}, knowledge_base="kb", location=location
    )
    r = api.run(
        graph,
        {"query": "when does the harbour open?"},
    )
    assert_refused(r, "location", reason)


# ---- model and dataset paths -----------------------------------------------------------


def test_llm_model_path_outside_the_roots_is_refused(api: Api) -> None:
    gguf = BUNDLED["smollm2"].path()
    r = api.run(
        graph_of("llm/chat", "text", wires={"prompt": "text"}, model=f"local:{gguf}", max_tokens=2),
        {"prompt": "hi"},
    )
    assert_refused(r, "model", "outside every folder")


def test_whisper_model_path_outside_the_roots_is_refused(api: Api) -> None:
    audio = api.home / "files" / "jfk.flac"
    audio.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "audio" / "jfk.flac", audio)
    model = next(m for m in BUNDLED.values() if m.kind == "whisper-ct2").path()
    b = GraphBuilder(default_registry(), name="transcribe elsewhere")
    load = b.add("core/load_file", path=str(audio), kind="audio")
    stt = b.add("audio/transcribe", model=str(model))
    out = b.add("core/output", name="out")
    b.link(load, "file", stt, "audio")
    b.link(stt, "text", out, "value")
    assert_refused(api.run(b.build().to_dict()), "model", "outside every folder")


def test_image_model_path_outside_the_roots_is_refused(api: Api, tmp_path: Path) -> None:
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    r = api.run(
        graph_of("image/generate", "image", wires={"prompt": "text"}, model=f"local:{folder}"),
        {"prompt": "a lighthouse"},
    )
    assert_refused(r, "model", "outside every folder")


def test_dataset_path_in_the_servers_folder_is_refused(api: Api) -> None:
    path = str(REPO / "examples" / "seed_tasks.jsonl")
    r = api.run(graph_of("training/load_dataset", "rows", path=path))
    assert_refused(r, "path", "outside every folder")


def test_training_base_model_outside_the_roots_is_refused(api: Api, tmp_path: Path) -> None:
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    tasks = api.home / "files" / "tasks.jsonl"
    tasks.parent.mkdir(parents=True, exist_ok=True)
    tasks.write_text('{"instruction": "Say hi.", "output": "Hi."}\n' * 4)
    b = GraphBuilder(default_registry(), name="tune elsewhere")
    data = b.add("training/load_dataset", path=str(tasks))
    tune = b.add("training/sft", model=str(folder), max_steps=1)
    out = b.add("core/output", name="out")
    b.link(data, "dataset", tune, "dataset")
    b.link(tune, "model", out, "value")
    assert_refused(api.run(b.build().to_dict()), "model", "outside every folder")
