"""The graph file: LiteGraph's own serialisation, read and written by pydantic models.

Shape (what ``LGraph.serialize()`` gives and what the canvas saves)::

    {"last_node_id": 3, "last_link_id": 2,
     "nodes": [{"id": 1, "type": "core/text", "pos": [x, y], "size": [w, h],
                "flags": {}, "order": 0, "mode": 0,
                "inputs": [{"name": "text", "type": "text", "link": null}],
                "outputs": [{"name": "text", "type": "text", "links": [1]}],
                "properties": {"text": "hello"}, "widgets_values": ["hello"]}],
     "links": [[1, 1, 0, 2, 0, "text"]],  # id, origin, origin_slot, target, target_slot, type
     "groups": [], "config": {}, "extra": {"flowbuilder": {"schema": 1}}, "version": 0.4}

Parameters are read by *name* from ``properties``; ``widgets_values`` is kept for the
canvas but never read. ``extra.flowbuilder.schema`` is the file's schema version; older
files are migrated on load by :data:`MIGRATIONS`. Saving is canonical: the same graph
always gives the same bytes, so load → save → load → save is byte-identical.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from flowbuilder.errors import GraphFileError

SCHEMA_VERSION = 1
"""The graph file schema version this flowbuilder writes."""

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v0_to_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A plain LiteGraph file (no ``extra.flowbuilder``) becomes schema 1 unchanged."""
    extra = data.setdefault("extra", {})
    if not isinstance(extra, dict):
        raise GraphFileError("'extra' must be an object")
    fb = extra.setdefault("flowbuilder", {})
    if not isinstance(fb, dict):
        raise GraphFileError("'extra.flowbuilder' must be an object")
    fb["schema"] = 1
    return data


MIGRATIONS: dict[int, Migration] = {0: _v0_to_v1}
"""``MIGRATIONS[n]`` turns a schema-``n`` file (as a dict) into a schema-``n+1`` file."""


def _vector(value: Any) -> Any:
    # litegraph.js 0.7 serialises Float32Array as {"0": x, "1": y}; make it a list.
    if isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
        return [value[k] for k in sorted(value, key=lambda k: int(k))]
    return value


class Slot(BaseModel):
    """An input or output slot as LiteGraph stores it. Unknown keys are kept."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: Any = None
    link: int | None = None


class OutputSlot(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    type: Any = None
    links: list[int] | None = None


class GraphNode(BaseModel):
    """One node of the graph file. Unknown keys (colour, title, …) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    id: int | str
    type: str
    pos: list[int | float] = Field(default_factory=lambda: [0.0, 0.0])
    size: list[int | float] = Field(default_factory=lambda: [240.0, 80.0])
    flags: dict[str, Any] = Field(default_factory=dict)
    order: int = 0
    mode: int = 0
    inputs: list[Slot] = Field(default_factory=list)
    outputs: list[OutputSlot] = Field(default_factory=list)
    properties: dict[str, Any] = Field(default_factory=dict)
    widgets_values: list[Any] | dict[str, Any] | None = None

    @field_validator("pos", "size", mode="before")
    @classmethod
    def _vectors(cls, value: Any) -> Any:
        return _vector(value)

    @property
    def key(self) -> str:
        """The node id as a string (how the engine and messages refer to it)."""
        return str(self.id)


MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
"""LiteGraph node modes: run normally, muted (never runs), bypassed (passes inputs through)."""


class Link(BaseModel):
    """A link from an output slot to an input slot; saved as LiteGraph's 6-element array."""

    id: int
    origin_id: int | str
    origin_slot: int
    target_id: int | str
    target_slot: int
    type: Any = None

    def to_list(self) -> list[Any]:
        return [
            self.id,
            self.origin_id,
            self.origin_slot,
            self.target_id,
            self.target_slot,
            self.type,
        ]


class Graph(BaseModel):
    """A whole graph file. Build one with :func:`load_graph` / :func:`parse_graph`."""

    model_config = ConfigDict(extra="allow")

    last_node_id: int | str = 0
    last_link_id: int = 0
    nodes: list[GraphNode] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    groups: list[dict[str, Any]] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    version: int | float = 0.4

    @field_validator("links", mode="before")
    @classmethod
    def _links(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if isinstance(item, list | tuple):
                if len(item) < 5:
                    raise ValueError(
                        f"link {item!r} needs [id, origin_id, origin_slot, "
                        "target_id, target_slot, type]"
                    )
                keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
                out.append(dict(zip(keys, item, strict=False)))
            else:
                out.append(item)
        return out

    @property
    def schema_version(self) -> int:
        return int(self.extra.get("flowbuilder", {}).get("schema", 0))

    @property
    def name(self) -> str:
        return str(self.extra.get("flowbuilder", {}).get("name", ""))

    def node(self, node_id: int | str) -> GraphNode | None:
        key = str(node_id)
        return next((n for n in self.nodes if n.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        """The file's content as plain JSON data, links as arrays."""
        data = self.model_dump(mode="json")
        data["links"] = [link.to_list() for link in self.links]
        return data

    def dumps(self) -> str:
        """Canonical JSON text: two-space indent, stable key order, trailing newline."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def parse_graph(text: str | bytes, *, path: str | None = None) -> Graph:
    """Parse graph file text into a :class:`Graph`, migrating older schema versions.

    Raises:
        GraphFileError: malformed JSON (with line and column), a value of the wrong shape
            (with its location), or a schema version newer than this flowbuilder knows.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphFileError(
            f"not valid JSON: {exc.msg.removesuffix(' at')}",
            path=path,
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except UnicodeDecodeError as exc:
        raise GraphFileError(f"not UTF-8 text: {exc.reason}", path=path) from None
    except RecursionError:
        raise GraphFileError("not a graph: JSON nested too deeply", path=path) from None
    return graph_from_data(data, path=path)


NODE_CHUNK = 64
"""Graphs with more nodes than this have their nodes validated this many at a time: one
validation call holds the GIL throughout, so a large graph checked in a worker thread
would otherwise stall the event loop for its whole validation."""
_NODE_LIST = TypeAdapter(list[GraphNode])


def graph_from_data(data: Any, *, path: str | None = None) -> Graph:
    """Validate already-decoded JSON data as a graph (see :func:`parse_graph`)."""
    if not isinstance(data, dict):
        raise GraphFileError(f"a graph file is a JSON object, not {type(data).__name__}", path=path)
    data = migrate(data, path=path)
    nodes = data.get("nodes")
    chunked = isinstance(nodes, list) and len(nodes) > NODE_CHUNK
    try:
        graph = Graph.model_validate({**data, "nodes": []} if chunked else data)
    except ValidationError as exc:
        raise _file_error(data, exc, path) from None
    if chunked:
        assert isinstance(nodes, list)
        parsed: list[GraphNode] = []
        for start in range(0, len(nodes), NODE_CHUNK):
            try:
                parsed.extend(_NODE_LIST.validate_python(nodes[start : start + NODE_CHUNK]))
            except ValidationError as exc:
                raise _file_error(data, exc, path, ("nodes",), start) from None
        graph.nodes = parsed
    return graph


def _file_error(
    data: dict[str, Any],
    exc: ValidationError,
    path: str | None,
    prefix: tuple[str, ...] = (),
    offset: int = 0,
) -> GraphFileError:
    first = exc.errors()[0]
    loc = first["loc"]
    if prefix and loc and isinstance(loc[0], int):
        loc = (*prefix, loc[0] + offset, *loc[1:])
    where = _location(data, loc)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return GraphFileError(f"{where}: {first['msg']}{more}", path=path)


def _location(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """Describe a pydantic error location, naming the node id when inside ``nodes``."""
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        nodes = data.get("nodes") or []
        node = nodes[loc[1]] if loc[1] < len(nodes) else None
        node_id = node.get("id") if isinstance(node, dict) else None
        rest = ".".join(str(p) for p in loc[2:]) or "node"
        return f"node {node_id if node_id is not None else '#' + str(loc[1])}, field '{rest}'"
    return "field '" + ".".join(str(p) for p in loc) + "'"


def migrate(data: dict[str, Any], *, path: str | None = None) -> dict[str, Any]:
    """Bring decoded graph data up to :data:`SCHEMA_VERSION` by chaining migrations.

    Raises:
        GraphFileError: the version is not an integer or is newer than this flowbuilder.
    """
    extra = data.get("extra")
    fb = extra.get("flowbuilder") if isinstance(extra, dict) else None
    raw = fb.get("schema", 0) if isinstance(fb, dict) else 0
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise GraphFileError(
            f"extra.flowbuilder.schema must be a whole number, not {raw!r}", path=path
        )
    if raw > SCHEMA_VERSION:
        raise GraphFileError(
            f"schema version {raw} is newer than this flowbuilder supports "
            f"({SCHEMA_VERSION}); upgrade flowbuilder to open it",
            path=path,
        )
    version = raw
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    return data


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """Read and parse a graph file (see :func:`parse_graph`).

    Raises:
        GraphFileError: the file is missing or unreadable, or its content is invalid.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise GraphFileError(f"cannot read the file: {exc.strerror}", path=str(p)) from None
    return parse_graph(raw, path=str(p))


def save_graph(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Write a graph file atomically (a temporary file renamed over the target)."""
    write_atomic(Path(path), graph.dumps().encode("utf-8"))


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new file, never half.

    The file gets ``mode`` (e.g. ``0o600`` for a private file, whatever mode it had), or
    else the mode it had, or the usual umask mode for a new file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode asked for, the one it had, or the
        # usual umask mode.
        if mode is None:
            try:
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
