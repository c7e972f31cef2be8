"""Build graph files from Python, with the same shape the canvas saves.

    b = GraphBuilder(registry)
    text = b.add("core/text", text="hello")
    out = b.add("core/output", name="greeting")
    b.link(text, "text", out, "value")
    graph = b.build()

Slots are laid out as LiteGraph does: a node's ``inputs`` list names every port (and
every parameter that is linked), its ``outputs`` list every output, and links refer to
slot indices in those lists.
"""

from __future__ import annotations

from typing import Any

from flowbuilder.graph import SCHEMA_VERSION, Graph, graph_from_data
from flowbuilder.node import PORT
from flowbuilder.registry import Registry


class GraphBuilder:
    """Accumulates nodes and links; :meth:`build` returns a :class:`Graph`."""

    def __init__(self, registry: Registry, *, name: str = "") -> None:
        self.registry = registry
        self.name = name
        self._nodes: list[dict[str, Any]] = []
        self._links: list[list[Any]] = []

    def add(self, type_id: str, *, node_id: int | None = None, **params: Any) -> int:
        """Add a node with parameters; returns its id. Unknown types are allowed (for tests
        of validation); their slots are then empty."""
        node_id = node_id if node_id is not None else len(self._nodes) + 1
        cls = self.registry.get(type_id)
        inputs, outputs = [], []
        if cls is not None:
            types = {**cls.output_types(), **cls.resolve_types(params)}
            inputs = [
                {"name": s.name, "type": s.type, "link": None}
                for s in cls.input_specs().values()
                if s.kind == PORT
            ]
            outputs = [{"name": n, "type": types[n], "links": []} for n in cls.output_types()]
        col = len(self._nodes)
        self._nodes.append(
            {
                "id": node_id,
                "type": type_id,
                "pos": [40.0 + 300.0 * col, 80.0],
                "size": [260.0, 120.0],
                "flags": {},
                "order": col,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": dict(params),
            }
        )
        return node_id

    def _node(self, node_id: int) -> dict[str, Any]:
        return next(n for n in self._nodes if n["id"] == node_id)

    def link(self, src: int, output: str, dst: int, input: str) -> int:
        """Link ``src``'s output to ``dst``'s input, by name; returns the link id.

        An input that is a parameter gets a slot added, as the canvas does when a widget
        is converted to an input.
        """
        s, d = self._node(src), self._node(dst)
        out_slot = next(i for i, o in enumerate(s["outputs"]) if o["name"] == output)
        slots = d["inputs"]
        in_slot = next((i for i, o in enumerate(slots) if o["name"] == input), None)
        if in_slot is None:
            slots.append({"name": input, "type": "*", "link": None})
            in_slot = len(slots) - 1
        link_id = len(self._links) + 1
        link_type = s["outputs"][out_slot]["type"]
        self._links.append([link_id, src, out_slot, dst, in_slot, link_type])
        s["outputs"][out_slot]["links"].append(link_id)
        slots[in_slot]["link"] = link_id
        return link_id

    def build(self) -> Graph:
        data = {
            "last_node_id": max((n["id"] for n in self._nodes), default=0),
            "last_link_id": len(self._links),
            "nodes": self._nodes,
            "links": self._links,
            "groups": [],
            "config": {},
            "extra": {"flowbuilder": {"schema": SCHEMA_VERSION, "name": self.name}},
            "version": 0.4,
        }
        return graph_from_data(data)
