"""What goes into the store's columns: plain JSON values, UTC times, new ids."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from flowbuilder.graph import Graph
from flowbuilder.types import summarise, to_jsonable


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def at(t: float) -> datetime:
    """A Unix time in seconds (an event's ``t``) as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)


def new_id() -> str:
    """A new record id: 12 random hex digits."""
    return uuid.uuid4().hex[:12]


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: artifact refs and other models as dicts
    (:func:`~flowbuilder.types.to_jsonable`), non-finite floats, bytes and other objects
    as strings (PostgreSQL's ``json`` refuses NaN)."""
    value = to_jsonable(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return summarise(repr(value))


def summary(outputs: dict[str, Any]) -> dict[str, Any]:
    """A node's outputs, small: long text cut, long lists shortened (see ``summarise``)."""
    return {str(k): plain(summarise(v)) for k, v in outputs.items()}


def graph_data(graph: dict[str, Any] | Graph) -> dict[str, Any]:
    """A private copy of a graph file as plain JSON data.

    Raises:
        TypeError: ``graph`` is neither a dict nor a :class:`~flowbuilder.graph.Graph`,
            or holds values that are not JSON.
    """
    if isinstance(graph, Graph):
        return graph.to_dict()
    if not isinstance(graph, dict):
        raise TypeError(f"a graph is a dict or a Graph, not {type(graph).__name__}")
    # a JSON round trip: a private copy of plain JSON data, and non-JSON values fail here
    data: dict[str, Any] = json.loads(json.dumps(graph))
    return data
