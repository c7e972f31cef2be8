"""Static validation: every problem reported at once, each with its node id and a sentence."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flowbuilder.builder import GraphBuilder
from flowbuilder.cli import app
from flowbuilder.errors import GraphFileError, GraphInvalid, Issue
from flowbuilder.graph import Graph, graph_from_data, load_graph
from flowbuilder.registry import Registry
from flowbuilder.validate import check, compile_graph

REPO = Path(__file__).resolve().parent.parent
VOICE_MEMO = REPO / "examples" / "voice_memo.json"


def issues_of(graph: Graph, registry: Registry) -> list[Issue]:
    issues, plan = check(graph, registry)
    assert plan is None, "a graph with problems must not give a plan"
    assert issues
    with pytest.raises(GraphInvalid) as err:
        compile_graph(graph, registry)
    assert err.value.issues == issues
    return issues


def only(issues: list[Issue], code: str) -> Issue:
    found = [i for i in issues if i.code == code]
    assert len(found) == 1, f"expected one {code!r} issue, got {issues}"
    return found[0]


def text_to_output(b: GraphBuilder) -> tuple[int, int]:
    text = b.add("core/text", text="hi")
    out = b.add("core/output", name="out")
    b.link(text, "text", out, "value")
    return text, out


def small_graph_data(builder: GraphBuilder) -> dict[str, Any]:
    text_to_output(builder)
    return builder.build().to_dict()


# ---- a valid graph ------------------------------------------------------------------


def test_valid_graph_gives_a_plan_with_its_signature(registry: Registry) -> None:
    plan = compile_graph(load_graph(VOICE_MEMO), registry)
    assert set(plan.nodes) == {"1", "2", "3", "4", "5", "6"}
    assert plan.deps["4"] == {"3"}
    assert [(i.name, i.type, i.required) for i in plan.inputs] == [("audio", "audio", True)]
    assert [(o.name, o.type) for o in plan.outputs] == [
        ("transcript", "text"),
        ("summary", "text"),
    ]


# ---- one test per kind of problem ---------------------------------------------------


def test_unknown_node_type_suggests_the_closest_known_types(
    builder: GraphBuilder, registry: Registry
) -> None:
    builder.add("core/inptu", name="x")
    issue = only(issues_of(builder.build(), registry), "unknown_type")
    assert (issue.node_id, issue.node_type) == ("1", "core/inptu")
    assert "unknown node type 'core/inptu'" in issue.message
    assert "did you mean 'core/input'" in issue.message


def test_unknown_node_type_from_another_pack_suggests_by_its_name(
    builder: GraphBuilder, registry: Registry
) -> None:
    builder.add("comfy/chat")
    issue = only(issues_of(builder.build(), registry), "unknown_type")
    assert "'llm/chat'" in issue.message


def test_unknown_node_type_with_nothing_close_has_no_suggestion(
    builder: GraphBuilder, registry: Registry
) -> None:
    builder.add("zzzzzzzz")
    issue = only(issues_of(builder.build(), registry), "unknown_type")
    assert issue.message == "unknown node type 'zzzzzzzz'"


def test_missing_required_port(builder: GraphBuilder, registry: Registry) -> None:
    builder.add("core/output", name="result")
    issue = only(issues_of(builder.build(), registry), "missing_input")
    assert (issue.node_id, issue.node_type, issue.field) == ("1", "core/output", "value")
    assert "required input 'value'" in issue.message
    assert "connect a link to it" in issue.message


def test_missing_required_parameter(builder: GraphBuilder, registry: Registry) -> None:
    builder.add("core/load_file")
    issue = only(issues_of(builder.build(), registry), "missing_input")
    assert (issue.node_id, issue.field) == ("1", "path")
    assert "required input 'path' (text)" in issue.message
    assert "set it or connect a link" in issue.message


def test_incompatible_link_types(builder: GraphBuilder, registry: Registry) -> None:
    number = builder.add("core/number", value=3)
    chat = builder.add("llm/chat")
    builder.link(number, "value", chat, "prompt")
    issue = only(issues_of(builder.build(), registry), "incompatible_link")
    assert (issue.node_id, issue.node_type, issue.field) == (str(chat), "llm/chat", "prompt")
    assert f"linked from node {number} output 'value'" in issue.message
    assert "'number' cannot feed an input of type 'text'" in issue.message


def test_json_into_text_is_refused_with_a_hint(builder: GraphBuilder, registry: Registry) -> None:
    parse = builder.add("core/json_parse")
    template = builder.add("core/template")
    text = builder.add("core/text", text="{}")
    builder.link(text, "text", parse, "text")
    builder.link(parse, "value", template, "text")
    issue = only(issues_of(builder.build(), registry), "incompatible_link")
    assert issue.node_id == str(template)
    assert "'json' cannot feed an input of type 'text'" in issue.message
    assert "JSON get" in issue.message


def test_widening_links_are_accepted(builder: GraphBuilder, registry: Registry) -> None:
    # integer → number, text → json, anything → any: no issue.
    flow_in = builder.add("core/input", name="count", type="integer")
    sleep = builder.add("test/sleep")
    builder.link(flow_in, "value", sleep, "seconds")
    text = builder.add("core/text", text='{"a": 1}')
    get = builder.add("core/json_get", path="a")
    builder.link(text, "text", get, "value")
    out = builder.add("core/output", name="a")
    builder.link(get, "value", out, "value")
    issues, plan = check(builder.build(), registry)
    assert issues == []
    assert plan is not None
    assert plan.nodes[str(sleep)].wires == {"seconds": (str(flow_in), "value")}


def test_input_type_parameter_decides_the_link_type(
    builder: GraphBuilder, registry: Registry
) -> None:
    flow_in = builder.add("core/input", name="photo", type="image")
    chat = builder.add("llm/chat")
    builder.link(flow_in, "value", chat, "prompt")
    issue = only(issues_of(builder.build(), registry), "incompatible_link")
    assert "'image' cannot feed an input of type 'text'" in issue.message


def test_incompatible_link_into_a_required_input_is_reported_once(
    builder: GraphBuilder, registry: Registry
) -> None:
    number = builder.add("core/number")
    parse = builder.add("core/json_parse")
    builder.link(number, "value", parse, "text")
    issues = issues_of(builder.build(), registry)
    assert [(i.code, i.node_id, i.field) for i in issues] == [
        ("incompatible_link", str(parse), "text")
    ]


def test_link_from_an_unknown_type_does_not_make_its_target_input_missing(
    builder: GraphBuilder, registry: Registry
) -> None:
    data = small_graph_data(builder)
    data["nodes"][0]["type"] = "core/txet"
    issues = issues_of(graph_from_data(data), registry)
    assert [(i.code, i.node_id) for i in issues] == [("unknown_type", "1")]
    assert "did you mean 'core/text'" in issues[0].message


def test_link_from_a_missing_node(builder: GraphBuilder, registry: Registry) -> None:
    data = small_graph_data(builder)
    data["links"].append([7, 99, 0, 2, 0, "text"])
    issues = issues_of(graph_from_data(data), registry)
    issue = next(i for i in issues if i.code == "bad_link")
    assert (issue.node_id, issue.node_type) == ("2", "core/output")
    assert "link 7 goes from node 99, which is not in the graph" in issue.message


def test_link_to_a_missing_node(builder: GraphBuilder, registry: Registry) -> None:
    data = small_graph_data(builder)
    data["links"].append([7, 1, 0, 42, 0, "text"])
    issue = only(issues_of(graph_from_data(data), registry), "bad_link")
    assert (issue.node_id, issue.node_type) == ("1", "core/text")
    assert "link 7 goes to node 42, which is not in the graph" in issue.message


def test_link_between_two_missing_nodes_has_no_node_id(
    builder: GraphBuilder, registry: Registry
) -> None:
    data = small_graph_data(builder)
    data["links"].append([7, 41, 0, 42, 0, "text"])
    issues = [i for i in issues_of(graph_from_data(data), registry) if i.code == "bad_link"]
    assert [i.node_id for i in issues] == [None, None]
    assert {"node 41" in i.message or "node 42" in i.message for i in issues} == {True}


def test_link_from_a_missing_output_slot(builder: GraphBuilder, registry: Registry) -> None:
    data = small_graph_data(builder)
    data["links"][0][2] = 3  # core/text has one output, slot 0
    issue = only(issues_of(graph_from_data(data), registry), "bad_link")
    assert (issue.node_id, issue.node_type) == ("2", "core/output")
    assert "link 1 comes from output slot 3, which node 1 does not have" in issue.message
    assert "(outputs: text)" in issue.message


def test_link_into_a_missing_input_slot(builder: GraphBuilder, registry: Registry) -> None:
    data = small_graph_data(builder)
    data["links"][0][4] = 5
    issue = only(issues_of(graph_from_data(data), registry), "bad_link")
    assert (issue.node_id, issue.node_type) == ("2", "core/output")
    assert "link 1 goes into input slot 5, which this node does not have" in issue.message


def test_link_into_a_slot_named_after_no_input(builder: GraphBuilder, registry: Registry) -> None:
    data = small_graph_data(builder)
    data["nodes"][1]["inputs"][0]["name"] = "valeu"
    issue = only(issues_of(graph_from_data(data), registry), "bad_link")
    assert issue.node_id == "2"
    assert "input slot 0" in issue.message


def test_negative_slot_index_is_a_bad_link(builder: GraphBuilder, registry: Registry) -> None:
    data = small_graph_data(builder)
    data["links"][0][2] = -1
    issue = only(issues_of(graph_from_data(data), registry), "bad_link")
    assert "output slot -1" in issue.message


def test_two_links_into_one_input(builder: GraphBuilder, registry: Registry) -> None:
    first = builder.add("core/text", text="a")
    second = builder.add("core/text", text="b")
    out = builder.add("core/output", name="out")
    builder.link(first, "text", out, "value")
    builder.link(second, "text", out, "value")
    issue = only(issues_of(builder.build(), registry), "duplicate_link")
    assert (issue.node_id, issue.field) == (str(out), "value")
    assert "input 'value' has more than one link" in issue.message


def test_cycle_names_every_node_in_it(builder: GraphBuilder, registry: Registry) -> None:
    a = builder.add("test/counter", suffix="a")
    b = builder.add("test/counter", suffix="b")
    c = builder.add("test/counter", suffix="c")
    builder.add("core/text", text="outside")
    builder.link(a, "text", b, "text")
    builder.link(b, "text", c, "text")
    builder.link(c, "text", a, "text")
    issue = only(issues_of(builder.build(), registry), "cycle")
    assert issue.node_id in {"1", "2", "3"}
    assert issue.node_type == "test/counter"
    assert "the graph has a cycle" in issue.message
    for node_id in ("1", "2", "3"):
        assert f"{node_id} (test/counter)" in issue.message
    assert "4 (" not in issue.message


def test_node_linked_to_itself_is_a_cycle(builder: GraphBuilder, registry: Registry) -> None:
    a = builder.add("test/counter")
    builder.link(a, "text", a, "text")
    issue = only(issues_of(builder.build(), registry), "cycle")
    assert issue.node_id == "1"
    assert "1 (test/counter) → 1 (test/counter)" in issue.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "greater than or equal to 1"),
        ("abc", "valid integer"),
        (10**6, "less than or equal to 8192"),
        (2.5, "integer"),
    ],
)
def test_parameter_failing_its_schema(
    builder: GraphBuilder, registry: Registry, value: Any, expected: str
) -> None:
    builder.add("llm/chat", max_tokens=value)
    issue = only(issues_of(builder.build(), registry), "bad_param")
    assert (issue.node_id, issue.node_type, issue.field) == ("1", "llm/chat", "max_tokens")
    assert f"parameter 'max_tokens' = {value!r} is not valid" in issue.message
    assert expected in issue.message


def test_input_name_with_a_space_is_a_bad_parameter(
    builder: GraphBuilder, registry: Registry
) -> None:
    builder.add("core/input", name="my input")
    issue = only(issues_of(builder.build(), registry), "bad_param")
    assert (issue.node_id, issue.field) == ("1", "name")
    assert "parameter 'name' = 'my input' is not valid" in issue.message
    assert "should match pattern" in issue.message


def test_choice_parameter_names_the_allowed_values(
    builder: GraphBuilder, registry: Registry
) -> None:
    builder.add("core/input", name="x", type="video")
    issue = only(issues_of(builder.build(), registry), "bad_param")
    assert issue.field == "type"
    assert "'text'" in issue.message and "'audio'" in issue.message


def test_unknown_parameter_suggests_the_closest(builder: GraphBuilder, registry: Registry) -> None:
    builder.add("llm/chat", max_token=10)
    issue = only(issues_of(builder.build(), registry), "unknown_param")
    assert (issue.node_id, issue.field) == ("1", "max_token")
    assert "'max_token' is not a parameter of this node" in issue.message
    assert "did you mean 'max_tokens'?" in issue.message


def test_unknown_parameter_with_nothing_close_lists_the_parameters(
    builder: GraphBuilder, registry: Registry
) -> None:
    builder.add("core/output", name="x", colour="red")
    issue = only(issues_of(builder.build(), registry), "unknown_param")
    assert "its parameters are name, description" in issue.message


def test_port_given_as_a_parameter_is_reported(builder: GraphBuilder, registry: Registry) -> None:
    builder.add("core/output", name="x", value="a value")
    issues = issues_of(builder.build(), registry)
    issue = only(issues, "unknown_param")
    assert issue.field == "value"
    assert "'value' is an input port, not a parameter; connect a link to it" in issue.message


def test_litegraph_bookkeeping_properties_are_not_parameters(
    builder: GraphBuilder, registry: Registry
) -> None:
    text = builder.add("core/text", text="hi", **{"Node name for S&R": "core/text"})
    out = builder.add("core/output", name="out", _collapsed=True)
    builder.link(text, "text", out, "value")
    issues, plan = check(builder.build(), registry)
    assert issues == []
    assert plan is not None
    assert plan.nodes["1"].params == {"text": "hi"}


def test_duplicate_node_ids(builder: GraphBuilder, registry: Registry) -> None:
    builder.add("core/text", node_id=3, text="a")
    builder.add("core/number", node_id=3)
    issue = only(issues_of(builder.build(), registry), "duplicate_id")
    assert (issue.node_id, issue.node_type) == ("3", "core/number")
    assert "node id 3 is used by more than one node (also by a core/text)" in issue.message


def test_int_and_string_ids_that_read_the_same_are_duplicates(
    builder: GraphBuilder, registry: Registry
) -> None:
    data = small_graph_data(builder)
    data["nodes"][1]["id"] = "1"
    issue = only(issues_of(graph_from_data(data), registry), "duplicate_id")
    assert issue.node_id == "1"


@pytest.mark.parametrize("kind", ["input", "output"])
def test_duplicate_flow_names(builder: GraphBuilder, registry: Registry, kind: str) -> None:
    text = builder.add("core/text", text="x")
    first = builder.add(f"core/{kind}", name="answer")
    second = builder.add(f"core/{kind}", name="answer")
    if kind == "output":
        builder.link(text, "text", first, "value")
        builder.link(text, "text", second, "value")
    issue = only(issues_of(builder.build(), registry), "duplicate_name")
    assert (issue.node_id, issue.node_type, issue.field) == (str(second), f"core/{kind}", "name")
    assert f"another {kind} node ({first}) is also named 'answer'" in issue.message


def test_unnamed_flow_inputs_take_the_default_name(
    builder: GraphBuilder, registry: Registry
) -> None:
    builder.add("core/input")
    plan = compile_graph(builder.build(), registry)
    assert [i.name for i in plan.inputs] == ["input"]
    builder.add("core/input")
    issue = only(issues_of(builder.build(), registry), "duplicate_name")
    assert "is also named 'input'" in issue.message


def test_muted_nodes_do_not_count(builder: GraphBuilder, registry: Registry) -> None:
    _, out = text_to_output(builder)
    data = builder.build().to_dict()
    data["nodes"][0]["mode"] = 2  # muted: the output's required input goes missing
    issue = only(issues_of(graph_from_data(data), registry), "missing_input")
    assert issue.node_id == str(out)


def test_unsupported_schema_version_is_a_file_error(tmp_path: Path) -> None:
    data = json.loads(VOICE_MEMO.read_text())
    data["extra"]["flowbuilder"]["schema"] = 99
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GraphFileError) as err:
        load_graph(path)
    assert "schema version 99 is newer than this flowbuilder supports" in str(err.value)


# ---- all problems at once -----------------------------------------------------------


def broken_graph_data(registry: Registry) -> dict[str, Any]:
    """A graph with one of nearly every kind of problem, each on its own node."""
    b = GraphBuilder(registry)
    b.add("core/inptu", node_id=11)  # unknown_type
    b.add("llm/chat", node_id=12, max_tokens=0, temprature=0.5)  # bad_param, unknown_param
    b.add("core/output", node_id=13, name="out")  # missing_input
    b.add("core/number", node_id=14)
    b.add("core/template", node_id=15)
    b.link(14, "value", 15, "text")  # incompatible_link
    b.add("test/counter", node_id=16)
    b.add("test/counter", node_id=17)
    b.link(16, "text", 17, "text")
    b.link(17, "text", 16, "text")  # cycle
    b.add("core/input", node_id=18, name="q")
    b.add("core/input", node_id=19, name="q")  # duplicate_name
    b.add("core/text", node_id=20)
    b.add("core/text", node_id=20)  # duplicate_id
    data = b.build().to_dict()
    data["links"].append([9, 20, 0, 99, 0, "text"])  # bad_link
    return data


def test_a_graph_with_many_problems_reports_all_of_them(registry: Registry) -> None:
    issues = issues_of(graph_from_data(broken_graph_data(registry)), registry)
    found = {(i.code, i.node_id) for i in issues}
    assert {
        ("unknown_type", "11"),
        ("bad_param", "12"),
        ("unknown_param", "12"),
        ("missing_input", "13"),
        ("incompatible_link", "15"),
        ("duplicate_name", "19"),
        ("duplicate_id", "20"),
        ("bad_link", "20"),
    } <= found
    assert any(i.code == "cycle" and i.node_id in {"16", "17"} for i in issues)
    with pytest.raises(GraphInvalid) as err:
        compile_graph(graph_from_data(broken_graph_data(registry)), registry)
    text = str(err.value)
    assert f"the graph has {len(issues)} problem(s)" in text
    for issue in issues:
        assert str(issue) in text


# ---- the CLI ------------------------------------------------------------------------

runner = CliRunner()


def _broken_file(tmp_path: Path) -> Path:
    # The CLI uses the installed packs only, so no test/* nodes here.
    data = json.loads(VOICE_MEMO.read_text())
    nodes = {n["id"]: n for n in data["nodes"]}
    nodes[2]["type"] = "audio/transcrib"  # unknown_type on 2
    nodes[4]["properties"]["max_tokens"] = 0  # bad_param on 4
    nodes[6]["properties"]["name"] = "transcript"  # duplicate_name on 6
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def test_cli_validate_ok(home: Path) -> None:
    result = runner.invoke(app, ["validate", str(VOICE_MEMO)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ok: 6 nodes" in result.output
    assert "inputs: audio: audio" in result.output


def test_cli_validate_broken_graph_lists_each_node(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(_broken_file(tmp_path))], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "3 problem(s) in the graph" in result.stdout
    rows = [line.split("│") for line in result.stdout.splitlines() if "│" in line]
    assert {"2", "4", "6"} <= {cells[1].strip() for cells in rows}
    assert "unknown node type 'audio/transcrib'" in result.stdout
    assert "parameter 'max_tokens' = 0" in result.stdout
    assert "also named 'transcript'" in result.stdout
    assert "Traceback" not in result.output


def test_cli_validate_json_report(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--json", str(_broken_file(tmp_path))])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert sorted((i["node_id"], i["code"]) for i in report["issues"]) == [
        ("2", "unknown_type"),
        ("4", "bad_param"),
        ("6", "duplicate_name"),
    ]
    bad = next(i for i in report["issues"] if i["code"] == "bad_param")
    assert bad["field"] == "max_tokens"
    assert bad["node_type"] == "llm/chat"


def test_cli_validate_malformed_json(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "nodes": [\n    {"id": 1 "type": "core/text"}\n  ]\n}\n')
    result = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "line 3, column 14" in result.stderr
    assert "Expecting ',' delimiter" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_validate_malformed_json_as_json(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"nodes": [}')
    result = runner.invoke(app, ["validate", "--json", str(path)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert (report["line"], report["column"]) == (1, 12)
    assert report["issues"] == []


def test_cli_validate_missing_file(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.json")], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "cannot read the file" in result.stderr
    assert "Traceback" not in result.output


def test_cli_validate_newer_schema(home: Path, tmp_path: Path) -> None:
    data = copy.deepcopy(json.loads(VOICE_MEMO.read_text()))
    data["extra"]["flowbuilder"]["schema"] = 2
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["validate", "--json", str(path)])
    assert result.exit_code == 1
    assert "schema version 2" in json.loads(result.stdout)["error"]
