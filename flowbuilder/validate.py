"""Static checks, done before anything runs, and the executable plan they produce.

:func:`check` looks at a whole graph and reports *every* problem at once, each an
:class:`~flowbuilder.errors.Issue` naming the node id, node type and field, with a
sentence a user understands. :func:`compile_graph` returns a :class:`Plan` when there
are none and raises :class:`~flowbuilder.errors.GraphInvalid` otherwise.

Issue codes: ``duplicate_id``, ``unknown_type``, ``bad_param``, ``unknown_param``,
``bad_link``, ``incompatible_link``, ``duplicate_link``, ``missing_input``, ``cycle``,
``duplicate_name``.
"""

from __future__ import annotations

import builtins
import difflib
import graphlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flowbuilder.errors import GraphInvalid, Issue
from flowbuilder.graph import MODE_BYPASS, MODE_NEVER, Graph, GraphNode
from flowbuilder.node import PORT, Node
from flowbuilder.registry import Registry
from flowbuilder.types import compatible, why_incompatible


@dataclass(slots=True)
class PlannedNode:
    """A node ready to run: its class, validated parameters and wired inputs by name."""

    id: str
    type: str
    cls: builtins.type[Node]
    params: dict[str, Any]
    wires: dict[str, tuple[str, str]]  # input name -> (source node id, source output)
    mode: int = 0
    types: dict[str, str] = field(default_factory=dict)  # resolved port types, in and out

    @property
    def bypassed(self) -> bool:
        return self.mode == MODE_BYPASS


@dataclass(frozen=True, slots=True)
class FlowInput:
    """One input of a flow's signature, declared by an Input node."""

    name: str
    type: str
    required: bool
    default: Any
    description: str
    node_id: str


@dataclass(frozen=True, slots=True)
class FlowOutput:
    """One output of a flow's signature, declared by an Output node."""

    name: str
    type: str
    description: str
    node_id: str


@dataclass(slots=True)
class Plan:
    """A checked graph: nodes by id, dependencies, and the flow's signature."""

    graph: Graph
    nodes: dict[str, PlannedNode]
    deps: dict[str, set[str]]
    inputs: list[FlowInput]
    outputs: list[FlowOutput]

    def consumers(self) -> dict[str, int]:
        """How many nodes read each node's outputs (to free values early)."""
        counts = dict.fromkeys(self.nodes, 0)
        for deps in self.deps.values():
            for d in deps:
                counts[d] += 1
        return counts


def _input_slot_names(node: GraphNode, cls: type[Node]) -> list[str]:
    ports = [s.name for s in cls.input_specs().values() if s.kind == PORT]
    names = [s.name for s in node.inputs]
    return names or ports


def _output_slot_names(node: GraphNode, cls: type[Node]) -> list[str]:
    names = [s.name for s in node.outputs]
    return names or list(cls.output_types())


def _is_litegraph_property(key: str) -> bool:
    # The canvas and ComfyUI keep their own bookkeeping in properties
    # ("Node name for S&R", "_collapsed"); those are not parameters.
    return " " in key or key.startswith("_")


def check(graph: Graph, registry: Registry) -> tuple[list[Issue], Plan | None]:
    """Check a graph; return all issues and, when there are none, the plan."""
    issues: list[Issue] = []
    seen: dict[str, GraphNode] = {}
    for node in graph.nodes:
        if node.key in seen:
            issues.append(
                Issue(
                    "duplicate_id",
                    f"node id {node.key} is used by more than "
                    f"one node (also by a {seen[node.key].type}); every node "
                    "needs its own id",
                    node.key,
                    node.type,
                )
            )
            continue
        seen[node.key] = node

    planned: dict[str, PlannedNode] = {}
    for node in seen.values():
        cls = registry.get(node.type)
        if cls is None:
            close = registry.suggest(node.type)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            issues.append(
                Issue("unknown_type", f"unknown node type '{node.type}'{hint}", node.key, node.type)
            )
            continue
        params = _check_params(node, cls, issues)
        planned[node.key] = PlannedNode(node.key, node.type, cls, params, {}, node.mode)
        types = dict(cls.output_types())
        types.update({n: s.type for n, s in cls.input_specs().items()})
        try:
            types.update(cls.resolve_types(params))
        except Exception as exc:  # a pack's hook failing is the pack's bug; report it
            issues.append(
                Issue("bad_param", f"cannot resolve port types: {exc}", node.key, node.type)
            )
        planned[node.key].types = types

    _check_links(graph, seen, planned, issues)
    _check_required(planned, seen, issues)
    deps = {
        nid: {src for src, _ in p.wires.values()}
        for nid, p in planned.items()
        if p.mode != MODE_NEVER
    }
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError as exc:
        cycle = list(dict.fromkeys(exc.args[1]))
        first = seen[cycle[0]]
        issues.append(
            Issue(
                "cycle",
                "the graph has a cycle: "
                + " → ".join(f"{n} ({seen[n].type})" for n in [*cycle, cycle[0]])
                + "; a node cannot depend on its own output",
                first.key,
                first.type,
            )
        )
    inputs, outputs = _signature(planned, issues)
    if issues:
        return issues, None
    return [], Plan(
        graph, {k: v for k, v in planned.items() if v.mode != MODE_NEVER}, deps, inputs, outputs
    )


def _check_params(node: GraphNode, cls: type[Node], issues: list[Issue]) -> dict[str, Any]:
    specs = cls.input_specs()
    params: dict[str, Any] = {}
    for key, value in node.properties.items():
        spec = specs.get(key)
        if spec is None:
            if _is_litegraph_property(key):
                continue
            known = [n for n, s in specs.items() if s.kind != PORT]
            close = difflib.get_close_matches(key, known, n=1)
            hint = (
                f"; did you mean '{close[0]}'?"
                if close
                else (f"; its parameters are {', '.join(known)}" if known else "")
            )
            issues.append(
                Issue(
                    "unknown_param",
                    f"'{key}' is not a parameter of this node{hint}",
                    node.key,
                    node.type,
                    key,
                )
            )
            continue
        if spec.kind == PORT:
            issues.append(
                Issue(
                    "unknown_param",
                    f"'{key}' is an input port, not a parameter; connect a link to it",
                    node.key,
                    node.type,
                    key,
                )
            )
            continue
        try:
            params[key] = spec.adapter().validate_python(value)
        except ValidationError as exc:
            msg = "; ".join(e["msg"] for e in exc.errors())
            issues.append(
                Issue(
                    "bad_param",
                    f"parameter '{key}' = {value!r} is not valid: {msg}",
                    node.key,
                    node.type,
                    key,
                )
            )
    # Parameters left out take their defaults, so a default written out and a default
    # left implicit give the same plan (and the same cache key).
    for name, spec in specs.items():
        if spec.kind != PORT and not spec.required and name not in params:
            params[name] = spec.info.get_default(call_default_factory=True)
    return params


def _check_links(
    graph: Graph, nodes: dict[str, GraphNode], planned: dict[str, PlannedNode], issues: list[Issue]
) -> None:
    for link in graph.links:
        origin, target = nodes.get(str(link.origin_id)), nodes.get(str(link.target_id))
        for end, node, node_id in (
            ("from", origin, link.origin_id),
            ("to", target, link.target_id),
        ):
            if node is None:
                other = target if end == "from" else origin
                issues.append(
                    Issue(
                        "bad_link",
                        f"link {link.id} goes {end} node {node_id}, which is not in the graph",
                        other.key if other else None,
                        other.type if other else None,
                    )
                )
        if origin is None or target is None:
            continue
        src, dst = planned.get(origin.key), planned.get(target.key)
        if dst is None:
            continue  # unknown type, already reported
        in_names = _input_slot_names(target, dst.cls)
        if src is None:
            # The origin's type is unknown (already reported), but the input is linked:
            # it must not also be reported as missing.
            slot = link.target_slot
            if 0 <= slot < len(in_names) and in_names[slot] in dst.cls.input_specs():
                dst.wires.setdefault(in_names[slot], (origin.key, ""))
            continue
        out_names = _output_slot_names(origin, src.cls)
        if (
            not 0 <= link.origin_slot < len(out_names)
            or out_names[link.origin_slot] not in src.cls.output_types()
        ):
            issues.append(
                Issue(
                    "bad_link",
                    f"link {link.id} comes from output slot "
                    f"{link.origin_slot}, which node {origin.key} does not have "
                    f"(outputs: {', '.join(src.cls.output_types()) or 'none'})",
                    target.key,
                    target.type,
                )
            )
            continue
        if (
            not 0 <= link.target_slot < len(in_names)
            or in_names[link.target_slot] not in dst.cls.input_specs()
        ):
            issues.append(
                Issue(
                    "bad_link",
                    f"link {link.id} goes into input slot "
                    f"{link.target_slot}, which this node does not have",
                    target.key,
                    target.type,
                )
            )
            continue
        out_name, in_name = out_names[link.origin_slot], in_names[link.target_slot]
        if in_name in dst.wires:
            issues.append(
                Issue(
                    "duplicate_link",
                    f"input '{in_name}' has more than one link; an input takes one link",
                    target.key,
                    target.type,
                    in_name,
                )
            )
            continue
        if origin.mode == MODE_NEVER:
            continue  # a muted node provides nothing; a required input then goes missing
        s_type, d_type = src.types[out_name], dst.types[in_name]
        if not compatible(s_type, d_type):
            issues.append(
                Issue(
                    "incompatible_link",
                    f"input '{in_name}' is linked from "
                    f"node {origin.key} output '{out_name}': "
                    f"{why_incompatible(s_type, d_type)}",
                    target.key,
                    target.type,
                    in_name,
                )
            )
        # Wired even when incompatible (the issue above already stops the plan), so the
        # input is not reported as missing too.
        dst.wires[in_name] = (origin.key, out_name)


def _check_required(
    planned: dict[str, PlannedNode], nodes: dict[str, GraphNode], issues: list[Issue]
) -> None:
    for p in planned.values():
        if p.mode == MODE_NEVER:
            continue
        for name, spec in p.cls.input_specs().items():
            if not spec.required or name in p.wires or name in p.params:
                continue
            if p.bypassed:
                continue
            how = "connect a link to it" if spec.kind == PORT else "set it or connect a link"
            issues.append(
                Issue(
                    "missing_input",
                    f"required input '{name}' ({spec.type}) has no value; {how}",
                    p.id,
                    p.type,
                    name,
                )
            )


def _signature(
    planned: dict[str, PlannedNode], issues: list[Issue]
) -> tuple[list[FlowInput], list[FlowOutput]]:
    inputs: dict[str, FlowInput] = {}
    outputs: dict[str, FlowOutput] = {}
    for p in planned.values():
        role = getattr(p.cls, "role", None)
        if role is None or p.mode == MODE_NEVER:
            continue
        name_spec = p.cls.input_specs().get("name")
        name = str(p.params.get("name", name_spec.default if name_spec else ""))
        table: dict[str, Any] = inputs if role == "input" else outputs
        if name in table:
            issues.append(
                Issue(
                    "duplicate_name",
                    f"another {role} node ({table[name].node_id})"
                    f" is also named '{name}'; flow {role}s need distinct names",
                    p.id,
                    p.type,
                    "name",
                )
            )
            continue
        description = str(p.params.get("description", "") or "")
        if role == "input":
            default = p.params.get("default")
            table[name] = FlowInput(
                name, p.types.get("value", "any"), default is None, default, description, p.id
            )
        else:
            wire = p.wires.get("value")
            src = planned.get(wire[0]) if wire else None
            out_type = src.types.get(wire[1], "any") if src and wire else "any"
            table[name] = FlowOutput(name, out_type, description, p.id)
    return list(inputs.values()), list(outputs.values())


def compile_graph(graph: Graph, registry: Registry) -> Plan:
    """Check a graph and return its plan.

    Raises:
        GraphInvalid: with every issue found.
    """
    issues, plan = check(graph, registry)
    if plan is None:
        raise GraphInvalid(issues)
    return plan
