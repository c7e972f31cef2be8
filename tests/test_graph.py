"""The graph file: LiteGraph's serialisation read, migrated and written back canonically."""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from flowbuilder.errors import GraphFileError
from flowbuilder.graph import SCHEMA_VERSION, load_graph, parse_graph, save_graph
from flowbuilder.registry import Registry
from flowbuilder.types import (
    AudioRef,
    ImageRef,
    JSONValue,
    PortTypeError,
    compatible,
    port_type_of,
)
from flowbuilder.validate import compile_graph

REPO = Path(__file__).resolve().parent.parent
VOICE_MEMO = REPO / "examples" / "voice_memo.json"

# What LiteGraph 0.4 writes for a small graph: floats everywhere, colours, titles, slot
# labels, a widget converted to an input, the canvas offset in extra.ds, no flowbuilder
# schema (a file from before flowbuilder, or from plain LiteGraph).
LITEGRAPH_FILE: dict[str, Any] = {
    "last_node_id": 3,
    "last_link_id": 2,
    "nodes": [
        {
            "id": 1,
            "type": "core/text",
            "pos": [112.5, 204.25],
            "size": [260.0, 118.40000915527344],
            "flags": {"collapsed": False},
            "order": 0,
            "mode": 0,
            "outputs": [
                {"name": "text", "type": "text", "links": [1], "slot_index": 0, "label": "Text"}
            ],
            "title": "Greeting",
            "color": "#232",
            "bgcolor": "#353",
            "properties": {"text": "hello", "Node name for S&R": "core/text"},
            "widgets_values": ["hello"],
        },
        {
            "id": 2,
            "type": "core/template",
            "pos": [430.0, 200.0],
            "size": [300.0, 150.0],
            "flags": {},
            "order": 1,
            "mode": 0,
            "inputs": [
                {"name": "text", "type": "text", "link": 1, "shape": 7},
                {
                    "name": "template",
                    "type": "text",
                    "link": None,
                    "widget": {"name": "template"},
                },
            ],
            "outputs": [{"name": "text", "type": "text", "links": [2], "slot_index": 0}],
            "properties": {"template": "{{ text }}, world"},
            "widgets_values": ["{{ text }}, world"],
        },
        {
            "id": 3,
            "type": "core/output",
            "pos": [780.0, 200.0],
            "size": [240.0, 90.0],
            "flags": {},
            "order": 2,
            "mode": 0,
            "inputs": [{"name": "value", "type": "any", "link": 2}],
            "outputs": [],
            "properties": {"name": "greeting"},
        },
    ],
    "links": [[1, 1, 0, 2, 0, "text"], [2, 2, 0, 3, 0, "text"]],
    "groups": [{"title": "Make a greeting", "bounding": [90, 120, 700, 260], "color": "#3f789e"}],
    "config": {},
    "extra": {"ds": {"scale": 1.1, "offset": [-12.5, 40.0]}},
    "version": 0.4,
}


def _text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def _write(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else _text(data), encoding="utf-8")
    return path


def _link_objects_file() -> dict[str, Any]:
    data = copy.deepcopy(LITEGRAPH_FILE)
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    data["links"] = [dict(zip(keys, link, strict=True)) for link in data["links"]]
    return data


# ---- round trip ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: VOICE_MEMO.read_text(encoding="utf-8"), id="voice_memo"),
        pytest.param(lambda: _text(LITEGRAPH_FILE), id="litegraph"),
        pytest.param(lambda: _text(_link_objects_file()), id="link-objects"),
    ],
)
def test_load_save_load_is_identical_and_second_save_is_byte_identical(
    tmp_path: Path, source: Any
) -> None:
    original = _write(tmp_path / "original.json", source())
    first = load_graph(original)
    save_graph(first, tmp_path / "one.json")
    second = load_graph(tmp_path / "one.json")
    save_graph(second, tmp_path / "two.json")

    assert second == first
    assert second.to_dict() == first.to_dict()
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "one.json").read_bytes()


def test_saved_file_has_stable_key_order_whatever_order_the_file_had() -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    shuffled = copy.deepcopy(data)
    rng = random.Random(7)
    top = list(shuffled.items())
    rng.shuffle(top)
    shuffled = dict(top)
    for i, node in enumerate(shuffled["nodes"]):
        known = [(k, v) for k, v in node.items() if k not in ("title", "color", "bgcolor")]
        rng.shuffle(known)
        extras = [(k, node[k]) for k in ("title", "color", "bgcolor") if k in node]
        shuffled["nodes"][i] = dict(known + extras)

    saved = parse_graph(_text(data)).dumps()
    assert parse_graph(_text(shuffled)).dumps() == saved
    keys = list(json.loads(saved))
    assert keys[:4] == ["last_node_id", "last_link_id", "nodes", "links"]
    node_keys = list(json.loads(saved)["nodes"][0])
    assert node_keys[:3] == ["id", "type", "pos"]


def test_saved_text_is_two_space_indented_json_with_trailing_newline() -> None:
    text = parse_graph(_text(LITEGRAPH_FILE)).dumps()
    assert text.endswith("}\n")
    assert text.startswith('{\n  "last_node_id": 3,')
    assert json.loads(text)["links"] == [[1, 1, 0, 2, 0, "text"], [2, 2, 0, 3, 0, "text"]]


# ---- files as LiteGraph writes them -------------------------------------------------


def test_floats_in_pos_and_size_are_kept_exactly() -> None:
    graph = parse_graph(_text(LITEGRAPH_FILE))
    node = graph.node(1)
    assert node is not None
    assert node.pos == [112.5, 204.25]
    assert node.size == [260.0, 118.40000915527344]
    saved = json.loads(graph.dumps())["nodes"][0]
    assert saved["pos"] == [112.5, 204.25]
    assert saved["size"] == [260.0, 118.40000915527344]


def test_unknown_keys_on_nodes_slots_and_top_level_survive_a_save() -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["definitions"] = {"subgraphs": []}
    data["nodes"][2]["inputs"][0]["color_on"] = "#7F7"
    saved = json.loads(parse_graph(_text(data)).dumps())

    assert saved["definitions"] == {"subgraphs": []}
    assert saved["extra"]["ds"] == {"scale": 1.1, "offset": [-12.5, 40.0]}
    assert saved["groups"] == LITEGRAPH_FILE["groups"]
    text_node, template, output = saved["nodes"]
    assert text_node["title"] == "Greeting"
    assert (text_node["color"], text_node["bgcolor"]) == ("#232", "#353")
    assert text_node["flags"] == {"collapsed": False}
    assert text_node["outputs"][0]["label"] == "Text"
    assert text_node["outputs"][0]["slot_index"] == 0
    assert text_node["properties"]["Node name for S&R"] == "core/text"
    assert template["inputs"][0]["shape"] == 7
    assert template["inputs"][1]["widget"] == {"name": "template"}
    assert output["inputs"][0]["color_on"] == "#7F7"


def test_node_without_optional_keys_loads_with_defaults() -> None:
    text = json.dumps(
        {
            "nodes": [
                {"id": 1, "type": "core/text", "properties": {"text": "hi"}},
                {"id": 2, "type": "core/output"},
            ],
            "links": [[1, 1, 0, 2, 0, "text"]],
        }
    )
    graph = parse_graph(text)
    node = graph.node(2)
    assert node is not None
    assert node.inputs == [] and node.outputs == []
    assert node.properties == {}
    assert node.flags == {} and node.mode == 0
    assert len(node.pos) == 2 and len(node.size) == 2
    assert node.widgets_values is None


def test_graph_without_slot_lists_still_validates_by_declared_ports(registry: Registry) -> None:
    # Slots missing from the file fall back to the node type's declared ports, in order.
    text = json.dumps(
        {
            "nodes": [
                {"id": 1, "type": "core/text", "properties": {"text": "hi"}},
                {"id": 2, "type": "core/output", "properties": {"name": "out"}},
            ],
            "links": [[1, 1, 0, 2, 0, "text"]],
        }
    )
    plan = compile_graph(parse_graph(text), registry)
    assert plan.nodes["2"].wires == {"value": ("1", "text")}
    assert [o.name for o in plan.outputs] == ["out"]


def test_links_as_objects_load_like_arrays_and_save_as_arrays() -> None:
    as_arrays = parse_graph(_text(LITEGRAPH_FILE))
    as_objects = parse_graph(_text(_link_objects_file()))
    assert as_objects.links == as_arrays.links
    assert as_objects.links[0].origin_id == 1 and as_objects.links[0].target_slot == 0
    assert json.loads(as_objects.dumps())["links"] == LITEGRAPH_FILE["links"]


def test_link_arrays_of_five_elements_have_no_type() -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["links"] = [[1, 1, 0, 2, 0], [2, 2, 0, 3, 0]]
    graph = parse_graph(_text(data))
    assert graph.links[1].target_id == 3
    assert graph.links[1].type is None


def test_link_array_too_short_is_refused_naming_the_shape() -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["links"] = [[1, 1, 0]]
    with pytest.raises(GraphFileError) as err:
        parse_graph(_text(data))
    assert "links" in str(err.value)
    assert "origin_slot" in str(err.value)


def test_float32array_objects_from_litegraph_07_become_lists() -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["nodes"][0]["pos"] = {"0": 112.5, "1": 204.25}
    data["nodes"][0]["size"] = {"1": 118.5, "0": 260.0}  # key order does not matter
    graph = parse_graph(_text(data))
    node = graph.node(1)
    assert node is not None
    assert node.pos == [112.5, 204.25]
    assert node.size == [260.0, 118.5]
    assert json.loads(graph.dumps())["nodes"][0]["pos"] == [112.5, 204.25]


def test_parameters_are_read_from_properties_never_from_widgets_values(
    registry: Registry,
) -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["nodes"][0]["widgets_values"] = ["stale widget text"]
    data["nodes"][1]["properties"] = {}
    data["nodes"][1]["widgets_values"] = ["{{ text }}!!"]
    graph = parse_graph(_text(data))
    plan = compile_graph(graph, registry)

    assert plan.nodes["1"].params == {"text": "hello"}
    assert plan.nodes["2"].params == {"template": "{{ text }}"}  # the declared default
    saved = json.loads(graph.dumps())["nodes"]
    assert saved[0]["widgets_values"] == ["stale widget text"]
    assert saved[1]["widgets_values"] == ["{{ text }}!!"]


def test_node_ids_may_be_strings_and_links_refer_to_them(registry: Registry) -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    for node in data["nodes"]:
        node["id"] = f"n{node['id']}"
    data["links"] = [[1, "n1", 0, "n2", 0, "text"], [2, "n2", 0, "n3", 0, "text"]]
    graph = parse_graph(_text(data))
    plan = compile_graph(graph, registry)
    assert plan.nodes["n3"].wires == {"value": ("n2", "text")}
    assert json.loads(graph.dumps())["links"][0] == [1, "n1", 0, "n2", 0, "text"]


# ---- schema version -----------------------------------------------------------------


def test_file_without_flowbuilder_extra_migrates_to_schema_1_keeping_other_extra() -> None:
    assert "flowbuilder" not in LITEGRAPH_FILE["extra"]
    graph = parse_graph(_text(LITEGRAPH_FILE))
    assert graph.schema_version == 1 == SCHEMA_VERSION
    saved = json.loads(graph.dumps())
    assert saved["extra"]["flowbuilder"]["schema"] == 1
    assert saved["extra"]["ds"] == LITEGRAPH_FILE["extra"]["ds"]


def test_file_without_any_extra_migrates_to_schema_1() -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    del data["extra"]
    assert json.loads(parse_graph(_text(data)).dumps())["extra"] == {"flowbuilder": {"schema": 1}}


def test_schema_0_file_keeps_its_flowbuilder_name() -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["extra"]["flowbuilder"] = {"schema": 0, "name": "Greeter"}
    graph = parse_graph(_text(data))
    assert graph.schema_version == 1
    assert graph.name == "Greeter"


def test_newer_schema_version_is_refused_naming_the_version(tmp_path: Path) -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["extra"]["flowbuilder"] = {"schema": 7}
    path = _write(tmp_path / "future.json", data)
    with pytest.raises(GraphFileError) as err:
        load_graph(path)
    message = str(err.value)
    assert "schema version 7" in message
    assert "upgrade flowbuilder" in message
    assert str(path) in message


@pytest.mark.parametrize("schema", ["1", 1.5, 1.0, True, None, -1, [1]])
def test_schema_version_that_is_not_a_whole_number_is_refused(schema: Any) -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["extra"]["flowbuilder"] = {"schema": schema}
    with pytest.raises(GraphFileError) as err:
        parse_graph(_text(data))
    assert "extra.flowbuilder.schema must be a whole number" in str(err.value)
    assert repr(schema) in str(err.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [([], "'extra' must be an object"), ({"flowbuilder": "v1"}, "'extra.flowbuilder'")],
)
def test_extra_of_the_wrong_shape_is_refused(extra: Any, expected: str) -> None:
    data = copy.deepcopy(LITEGRAPH_FILE)
    data["extra"] = extra
    with pytest.raises(GraphFileError) as err:
        parse_graph(_text(data))
    assert expected in str(err.value)


# ---- malformed files ----------------------------------------------------------------


def test_malformed_json_names_the_line_and_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "broken.json", '{\n  "nodes": [\n    {"id": 1,, "type": "x"}\n  ]\n}\n'
    )
    with pytest.raises(GraphFileError) as err:
        load_graph(path)
    assert (err.value.line, err.value.column) == (3, 14)  # the second comma
    assert err.value.path == str(path)
    assert f"{path}, line 3, column 14: not valid JSON" in str(err.value)


def test_truncated_file_names_where_it_ends() -> None:
    text = _text(LITEGRAPH_FILE)
    cut = text[: text.index('"links"')]
    with pytest.raises(GraphFileError) as err:
        parse_graph(cut)
    assert err.value.line == cut.count("\n") + 1
    assert "not valid JSON" in str(err.value)


def test_empty_file_is_not_valid_json() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph("")
    assert (err.value.line, err.value.column) == (1, 1)


def test_json_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph("[1, 2, 3]")
    assert "a graph file is a JSON object, not list" in str(err.value)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph(b'{"nodes": [], "x": "\xff\xfe\xfd"}')
    assert "UTF-8" in str(err.value)


def test_absurdly_nested_json_is_refused_with_a_file_error() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph("[" * 100_000)
    assert "nested too deeply" in str(err.value)


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(GraphFileError) as err:
        load_graph(tmp_path / "nope.json")
    assert "cannot read the file" in str(err.value)
    assert "nope.json" in str(err.value)


def test_node_without_type_names_the_node_and_field() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph('{"nodes": [{"id": 1}]}')
    assert "node 1, field 'type'" in str(err.value)
    assert "required" in str(err.value).lower()


def test_node_without_id_is_named_by_its_position() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph('{"nodes": [{"id": 1, "type": "core/text"}, {"type": "core/text"}]}')
    assert "node #1, field 'id'" in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("pos", "here", "node 5, field 'pos'"),
        ("inputs", [{"type": "text"}], "node 5, field 'inputs.0.name'"),
        ("outputs", [{"name": "x", "links": "1"}], "node 5, field 'outputs.0.links'"),
        ("properties", ["text"], "node 5, field 'properties'"),
        ("mode", "always", "node 5, field 'mode'"),
    ],
)
def test_wrong_shaped_node_field_names_node_and_field(field: str, value: Any, where: str) -> None:
    node = {"id": 5, "type": "core/text", field: value}
    with pytest.raises(GraphFileError) as err:
        parse_graph(json.dumps({"nodes": [node]}))
    assert where in str(err.value)


def test_several_shape_errors_are_counted() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph('{"nodes": [{"id": 1}, {"id": 2}, {"id": 3}]}')
    assert "node 1, field 'type'" in str(err.value)
    assert "(and 2 more)" in str(err.value)


def test_wrong_shaped_top_level_field_is_named() -> None:
    with pytest.raises(GraphFileError) as err:
        parse_graph('{"nodes": [], "links": [{"id": 1, "origin_id": 1}]}')
    assert "field 'links.0." in str(err.value)


# ---- atomic save --------------------------------------------------------------------


def test_save_replaces_the_target_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "flow.json"
    target.write_text("old content that is not a graph\n")
    reader = target.open("rb")  # someone reading the old file while we save
    graph = parse_graph(_text(LITEGRAPH_FILE))

    save_graph(graph, target)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.json"]
    assert target.read_text(encoding="utf-8") == graph.dumps()
    # Replaced by rename, not rewritten in place: the open reader still sees the old file.
    assert reader.read() == b"old content that is not a graph\n"
    reader.close()


def test_save_creates_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "flow.json"
    save_graph(parse_graph(_text(LITEGRAPH_FILE)), target)
    assert load_graph(target) == parse_graph(_text(LITEGRAPH_FILE))


def test_failed_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "flow.json"
    target.mkdir()  # a folder in the way: the rename must fail
    with pytest.raises(OSError):
        save_graph(parse_graph(_text(LITEGRAPH_FILE)), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.json"]
    assert list(target.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root ignores modes")
def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "flow.json"
    target.write_text("{}\n")
    folder.chmod(0o500)  # no new files may be made here
    try:
        with pytest.raises(OSError):
            save_graph(parse_graph(_text(LITEGRAPH_FILE)), target)
        assert target.read_text() == "{}\n"
        assert sorted(p.name for p in folder.iterdir()) == ["flow.json"]
    finally:
        folder.chmod(0o700)


# ---- port types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        ("text", "text", True),
        ("integer", "number", True),
        ("number", "integer", False),
        ("text", "any", True),
        ("audio", "any", True),
        ("list[json]", "any", True),
        ("any", "integer", True),
        ("text", "json", True),
        ("integer", "json", True),
        ("boolean", "json", True),
        ("list[text]", "json", True),
        ("json", "text", False),
        ("json", "list[text]", False),
        ("text", "integer", False),
        ("boolean", "integer", False),
        ("integer", "text", False),
        ("list[integer]", "list[number]", True),
        ("list[number]", "list[integer]", False),
        ("list[text]", "text", False),
        ("text", "list[text]", False),
        ("list[list[integer]]", "list[list[number]]", True),
        ("audio", "file", True),
        ("image", "file", True),
        ("model", "file", True),
        ("file", "audio", False),
        ("audio", "image", False),
        ("text", "file", False),
        ("image", "json", False),
    ],
)
def test_compatible(source: str, target: str, ok: bool) -> None:
    assert compatible(source, target) is ok


class _Nested(BaseModel):
    x: int


@pytest.mark.parametrize(
    ("annotation", "port_type"),
    [
        (str, "text"),
        (int, "integer"),
        (float, "number"),
        (bool, "boolean"),
        (Any, "any"),
        (object, "any"),
        (dict, "json"),
        (dict[str, Any], "json"),
        (JSONValue, "json"),
        (list[int], "list[integer]"),
        (list[list[str]], "list[list[text]]"),
        (list, "list[any]"),
        (int | None, "integer"),
        (str | None, "text"),
        (int | float, "number"),
        (int | str, "json"),
        (Literal["a", "b"], "text"),
        (Literal[1, 2], "integer"),
        (AudioRef, "audio"),
        (ImageRef | None, "image"),
        (list[AudioRef], "list[audio]"),
        (_Nested, "json"),
    ],
)
def test_port_type_of(annotation: Any, port_type: str) -> None:
    assert port_type_of(annotation) == port_type


def test_port_type_of_refuses_annotations_without_a_port_type() -> None:
    with pytest.raises(PortTypeError) as err:
        port_type_of(set[int])
    assert "no port type" in str(err.value)
