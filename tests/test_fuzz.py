"""Fuzzing the graph file reader and the validator with hypothesis.

Whatever text arrives (a graph file mangled by hand, by a merge, by another tool), the
user gets either a graph or a :class:`GraphFileError`, and then either a plan or a
:class:`GraphInvalid` listing issues — never a traceback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flowbuilder.errors import GraphFileError, GraphInvalid
from flowbuilder.graph import Graph, parse_graph
from flowbuilder.registry import default_registry
from flowbuilder.validate import check, compile_graph

REPO = Path(__file__).resolve().parent.parent
VOICE_MEMO: dict[str, Any] = json.loads((REPO / "examples" / "voice_memo.json").read_text())

# A small valid graph: input → template ← text, template → output.
SMALL: dict[str, Any] = {
    "last_node_id": 4,
    "last_link_id": 3,
    "nodes": [
        {
            "id": 1,
            "type": "core/input",
            "outputs": [{"name": "value", "type": "text", "links": [1]}],
            "properties": {"name": "question", "type": "text"},
        },
        {
            "id": 2,
            "type": "core/text",
            "outputs": [{"name": "text", "type": "text", "links": [2]}],
            "properties": {"text": "Q: "},
        },
        {
            "id": 3,
            "type": "core/template",
            "inputs": [
                {"name": "text", "type": "text", "link": 1},
                {"name": "a", "type": "text", "link": 2},
            ],
            "outputs": [{"name": "text", "type": "text", "links": [3]}],
            "properties": {"template": "{{ a }}{{ text }}"},
        },
        {
            "id": 4,
            "type": "core/output",
            "inputs": [{"name": "value", "type": "any", "link": 3}],
            "properties": {"name": "prompt"},
        },
    ],
    "links": [[1, 1, 0, 3, 0, "text"], [2, 2, 0, 3, 1, "text"], [3, 3, 0, 4, 0, "text"]],
    "extra": {"flowbuilder": {"schema": 1}},
}

BASES = (VOICE_MEMO, SMALL)
REGISTRY = default_registry()
ISSUE_CODES = {
    "duplicate_id",
    "unknown_type",
    "bad_param",
    "unknown_param",
    "bad_link",
    "incompatible_link",
    "duplicate_link",
    "missing_input",
    "cycle",
    "duplicate_name",
}


def fuzz(examples: int) -> settings:
    """About 300 examples over the whole module; no deadline (the first check is slower)."""
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
node_types = st.sampled_from(REGISTRY.types()) | st.sampled_from(
    ["core/inptu", "core/Text", "", "llm/", "/", "x" * 40, "core/input "]
)
slot_indices = st.integers(min_value=-2, max_value=6) | json_values


def assert_loads_or_refuses(text: str | bytes) -> None:
    """The property: a graph or GraphFileError; then a plan or GraphInvalid."""
    try:
        graph = parse_graph(text)
    except GraphFileError as exc:
        assert str(exc).startswith("graph")
        event("GraphFileError")
        return
    assert_validates_or_refuses(graph)
    # Anything that loads also saves, and saving is stable.
    saved = graph.dumps()
    assert parse_graph(saved).dumps() == saved


def assert_validates_or_refuses(graph: Graph) -> None:
    node_ids = {node.key for node in graph.nodes}
    issues, plan = check(graph, REGISTRY)
    assert (plan is None) == bool(issues)
    for issue in issues:
        assert issue.code in ISSUE_CODES
        assert issue.message
        assert issue.node_id is None or issue.node_id in node_ids
    try:
        compiled = compile_graph(graph, REGISTRY)
    except GraphInvalid as exc:
        assert exc.issues == issues
        event("GraphInvalid")
    else:
        event("plan")
        assert plan is not None
        assert set(compiled.nodes) <= node_ids


# ---- mutations of valid files -------------------------------------------------------


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) to a value inside ``value``, the root excluded."""
    out: list[tuple[Any, ...]] = []
    items: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _mutate(data: st.DataObject, doc: dict[str, Any]) -> dict[str, Any]:
    kind = data.draw(
        st.sampled_from(
            ["delete", "retype", "add_key", "shuffle_links", "slot", "node_type", "id", "dup"]
        )
    )
    links = doc.get("links")
    nodes = doc.get("nodes")
    if kind == "shuffle_links" and isinstance(links, list):
        doc["links"] = data.draw(st.permutations(links))
    elif kind == "slot" and isinstance(links, list) and links:
        link = links[data.draw(st.integers(0, len(links) - 1))]
        if isinstance(link, list) and link:
            link[data.draw(st.integers(0, len(link) - 1))] = data.draw(slot_indices)
    elif kind == "node_type" and isinstance(nodes, list) and nodes:
        node = nodes[data.draw(st.integers(0, len(nodes) - 1))]
        if isinstance(node, dict):
            node["type"] = data.draw(node_types)
    elif kind == "id" and isinstance(nodes, list) and nodes:
        node = nodes[data.draw(st.integers(0, len(nodes) - 1))]
        if isinstance(node, dict):
            node["id"] = data.draw(st.integers(0, 8) | st.sampled_from(["1", "a", 1.0, 2.5]))
    elif kind == "dup" and isinstance(nodes, list) and nodes:
        nodes.append(copy.deepcopy(data.draw(st.sampled_from(nodes))))
    else:
        paths = _paths(doc)
        if not paths:
            return doc
        path = data.draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        if kind == "delete":
            del parent[path[-1]]
        elif kind == "retype":
            parent[path[-1]] = data.draw(json_values)
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=10))] = data.draw(json_values)
        else:
            parent.append(data.draw(json_values))
    return doc


@fuzz(120)
@given(data=st.data())
def test_mutated_graph_files_load_or_refuse_cleanly(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 4))):
        doc = _mutate(data, doc)
    assert_loads_or_refuses(json.dumps(doc))


@fuzz(50)
@given(
    base=st.sampled_from(BASES),
    params=st.dictionaries(
        st.sampled_from(["name", "type", "max_tokens", "temperature", "stop", "text", "x y"]),
        json_values,
        max_size=3,
    ),
    node_index=st.integers(0, 5),
)
def test_random_parameter_values_are_validated(
    base: dict[str, Any], params: dict[str, Any], node_index: int
) -> None:
    doc = copy.deepcopy(base)
    doc["nodes"][node_index % len(doc["nodes"])]["properties"].update(params)
    assert_loads_or_refuses(json.dumps(doc))


# ---- damaged and random text --------------------------------------------------------


@fuzz(50)
@given(base=st.sampled_from(BASES), cut=st.floats(0, 1), junk=st.text(max_size=5))
def test_truncated_files_load_or_refuse_cleanly(
    base: dict[str, Any], cut: float, junk: str
) -> None:
    text = json.dumps(base, indent=2)
    assert_loads_or_refuses(text[: int(len(text) * cut)] + junk)


PARAM_NAMES = ["name", "type", "default", "max_tokens", "temperature", "stop", "text", "x y"]


@fuzz(50)
@given(
    doc=json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "nodes": st.lists(
                st.fixed_dictionaries(
                    {"id": st.integers(1, 4) | json_values, "type": node_types},
                    optional={
                        "properties": st.dictionaries(st.sampled_from(PARAM_NAMES), json_values)
                        | json_values,
                        "inputs": json_values,
                        "outputs": json_values,
                        "pos": json_values,
                        "mode": st.integers(0, 4),
                    },
                ),
                max_size=4,
            ),
            "links": st.lists(
                st.lists(st.integers(-1, 5), min_size=5, max_size=7)
                | st.lists(slot_indices, max_size=7)
                | json_values,
                max_size=4,
            ),
            "extra": json_values,
            "last_node_id": json_values,
        },
    )
)
def test_random_json_loads_or_refuses_cleanly(doc: Any) -> None:
    assert_loads_or_refuses(json.dumps(doc))


@fuzz(30)
@given(raw=st.binary(max_size=64) | st.text(max_size=64))
def test_random_bytes_and_text_load_or_refuse_cleanly(raw: bytes | str) -> None:
    assert_loads_or_refuses(raw)
