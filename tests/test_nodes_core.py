"""Core nodes, run through the engine as a flow would run them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.registry import Registry
from flowbuilder.scheduler import RunResult
from flowbuilder.settings import Settings
from flowbuilder.types import DocumentRef


@pytest.fixture
def wd_engine(tmp_path: Path, registry: Registry, home: Path) -> Engine:
    """An engine whose user named ``tmp_path`` as a root (the data directory inside it
    stays out of reach); relative paths are in the workspace."""
    return Engine(registry, Settings.from_env(file_roots=(tmp_path,)))


@pytest.fixture
def work(home: Path) -> Path:
    """The workspace, ``FLOWBUILDER_HOME/files``: where relative paths resolve."""
    path = home / "files"
    path.mkdir(parents=True)
    return path


def run_single(
    engine: Engine,
    builder: GraphBuilder,
    type_id: str,
    wires: dict[str, tuple[str, Any]] | None = None,
    output: str = "text",
    **params: Any,
) -> RunResult:
    """Run one node whose inputs come from Input nodes (name -> (type, value))."""
    node = builder.add(type_id, **params)
    values = {}
    for name, (kind, value) in (wires or {}).items():
        src = builder.add("core/input", name=name, type=kind)
        builder.link(src, "value", node, name)
        values[name] = value
    out = builder.add("core/output", name="out")
    builder.link(node, output, out, "value")
    return asyncio.run(engine.run(builder.build(), values))


def test_template_fills_named_variables(engine: Engine, builder: GraphBuilder) -> None:
    r = run_single(
        engine,
        builder,
        "core/template",
        {"text": ("text", "memo"), "vars": ("json", {"n": 2})},
        template="{{ text }} x{{ n }}",
    )
    assert r.outputs == {"out": "memo x2"}


def test_template_names_missing_variable(engine: Engine, builder: GraphBuilder) -> None:
    r = run_single(
        engine, builder, "core/template", {"text": ("text", "a")}, template="{{ text }} {{ topic }}"
    )
    assert r.status == "failed"
    assert "'topic' is undefined" in (r.error or "")
    assert "available: text" in (r.error or "")


def test_template_syntax_error_gives_line(engine: Engine, builder: GraphBuilder) -> None:
    r = run_single(engine, builder, "core/template", template="ok\n{% if %}")
    assert r.status == "failed"
    assert "line 2" in (r.error or "")


def test_join_skips_missing_inputs(engine: Engine, builder: GraphBuilder) -> None:
    r = run_single(
        engine,
        builder,
        "core/join",
        {"a": ("text", "one"), "c": ("text", "three"), "items": ("list[text]", ["four", "five"])},
        separator=", ",
    )
    assert r.outputs == {"out": "one, three, four, five"}


def test_json_parse_and_get(engine: Engine, builder: GraphBuilder) -> None:
    src = builder.add("core/text", text='{"results": [{"text": "hi"}, {"text": "yo"}]}')
    parse = builder.add("core/json_parse")
    get = builder.add("core/json_get", path="results[1].text")
    out = builder.add("core/output", name="out")
    builder.link(src, "text", parse, "text")
    builder.link(parse, "value", get, "value")
    builder.link(get, "value", out, "value")
    assert asyncio.run(engine.run(builder.build())).outputs == {"out": "yo"}


def test_json_parse_error_names_position(engine: Engine, builder: GraphBuilder) -> None:
    r = run_single(
        engine, builder, "core/json_parse", {"text": ("text", '{"a": 1,\n  }')}, output="value"
    )
    assert r.status == "failed"
    assert "line 2, column 3" in (r.error or "")


def test_json_get_missing_path_and_default(
    engine: Engine, builder: GraphBuilder, registry: Registry
) -> None:
    r = run_single(
        engine,
        builder,
        "core/json_get",
        {"value": ("json", {"a": {"b": 1}})},
        output="value",
        path="a.c.d",
    )
    assert r.status == "failed"
    assert "nothing at 'a.c'" in (r.error or "")
    r = run_single(
        engine,
        GraphBuilder(registry),
        "core/json_get",
        {"value": ("json", {"a": [5, 6]})},
        output="value",
        path="a.c",
        default="none",
    )
    assert r.outputs == {"out": "none"}


def test_number_widens_into_number_input(engine: Engine, builder: GraphBuilder) -> None:
    r = run_single(engine, builder, "core/number", output="value", value=2)
    assert r.outputs == {"out": 2.0}


def test_load_file_reads_text_as_artifact(
    work: Path, wd_engine: Engine, builder: GraphBuilder
) -> None:
    (work / "notes.md").write_text("# Notes\nbuy milk\n")
    r = run_single(wd_engine, builder, "core/load_file", path="notes.md", kind="text")
    assert r.outputs == {"out": "# Notes\nbuy milk\n"}


def test_load_file_refuses_paths_outside_allowed_roots(
    wd_engine: Engine, builder: GraphBuilder
) -> None:
    r = run_single(wd_engine, builder, "core/load_file", path="/etc/hostname", kind="text")
    assert r.status == "failed"
    assert "field 'path': '/etc/hostname' is outside every folder" in (r.error or "")
    assert "FLOWBUILDER_FILE_ROOTS" in (r.error or "")


def test_load_file_edit_reruns_it(work: Path, wd_engine: Engine, registry: Registry) -> None:
    engine = wd_engine
    note = work / "n.txt"
    note.write_text("v1")
    b = GraphBuilder(registry)
    load = b.add("core/load_file", path="n.txt")
    out = b.add("core/output", name="out")
    b.link(load, "text", out, "value")
    graph = b.build()
    assert asyncio.run(engine.run(graph)).outputs == {"out": "v1"}
    assert asyncio.run(engine.run(graph)).cached == ["1", "2"]
    note.write_text("version 2")
    r = asyncio.run(engine.run(graph))
    assert r.outputs == {"out": "version 2"} and r.executed == ["1", "2"]


def test_load_file_non_utf8_text_errors(
    work: Path, wd_engine: Engine, builder: GraphBuilder
) -> None:
    (work / "x.bin").write_bytes(b"\xff\xfe\x00bad")
    r = run_single(wd_engine, builder, "core/load_file", path="x.bin", kind="text")
    assert r.status == "failed" and "not UTF-8 text" in (r.error or "")


def test_save_file_writes_text_json_and_artifacts(
    tmp_path: Path, work: Path, wd_engine: Engine, registry: Registry
) -> None:
    engine = wd_engine
    (work / "in.txt").write_text("payload")
    b = GraphBuilder(registry)
    text = b.add("core/text", text="héllo")
    save_text = b.add("core/save_file", path="a/hello.txt")
    data = b.add("core/input", name="data", type="json", default={"k": [1, 2]})
    save_json = b.add("core/save_file", path=str(tmp_path / "data.json"))
    load = b.add("core/load_file", path="in.txt")
    save_copy = b.add("core/save_file", path="copy.txt")
    out = b.add("core/output", name="where")
    b.link(text, "text", save_text, "value")
    b.link(data, "value", save_json, "value")
    b.link(load, "file", save_copy, "value")
    b.link(save_text, "path", out, "value")
    r = asyncio.run(engine.run(b.build()))
    assert r.status == "finished", r.error
    assert Path(r.outputs["where"]) == work / "a" / "hello.txt"
    assert (work / "a" / "hello.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "data.json").read_text() == '{\n  "k": [\n    1,\n    2\n  ]\n}\n'
    assert (work / "copy.txt").read_text() == "payload"
    assert not [p for p in tmp_path.rglob(".*tmp")]


def test_save_file_respects_overwrite_and_roots(work: Path, engine: Engine) -> None:
    def save(path: str, **params: Any) -> RunResult:
        b = GraphBuilder(engine.registry)
        return run_single(
            engine, b, "core/save_file", {"value": ("text", "new")}, "path", path=path, **params
        )

    (work / "keep.txt").write_text("original")
    r = save("keep.txt")
    assert r.status == "failed" and "exists and 'overwrite' is off" in (r.error or "")
    assert (work / "keep.txt").read_text() == "original"  # overwrite is off by default
    r = save("keep.txt", overwrite=True)
    assert r.status == "finished" and (work / "keep.txt").read_text() == "new"
    r = save("/etc/evil.txt")
    assert r.status == "failed" and "outside every folder nodes may use" in (r.error or "")


def test_input_default_and_file_inputs(
    tmp_path: Path, engine: Engine, builder: GraphBuilder
) -> None:
    doc = builder.add("core/input", name="doc", type="document")
    out = builder.add("core/output", name="out")
    builder.link(doc, "value", out, "value")
    (tmp_path / "a.rst").write_text("Title\n=====\n")
    r = asyncio.run(engine.run(builder.build(), {"doc": "a.rst"}, base_dir=tmp_path))
    ref = r.outputs["out"]
    assert isinstance(ref, DocumentRef) and ref.name == "a.rst" and ref.size == 12
    assert engine.artifacts.path(ref).read_text() == "Title\n=====\n"
