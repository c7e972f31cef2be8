"""Typed errors a user can cause, each with a sentence a user understands.

Tracebacks are for flowbuilder's own bugs; everything a graph file, an input value or a
node's work can get wrong is one of these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


class FlowbuilderError(Exception):
    """Base class of every error flowbuilder raises on purpose."""


class GraphFileError(FlowbuilderError):
    """A graph file that cannot be read: not JSON, wrong shape, unsupported schema version.

    ``line`` and ``column`` are 1-based and set when the JSON itself is malformed.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path, self.line, self.column = path, line, column
        where = path or "graph"
        if line is not None:
            where += f", line {line}, column {column}"
        super().__init__(f"{where}: {message}")
        self.message = message


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a graph before it runs.

    ``code`` is stable for machines (``unknown_type``, ``missing_input``, …); ``message``
    is for people and names the node. ``field`` is the input or parameter concerned.
    """

    code: str
    message: str
    node_id: str | None = None
    node_type: str | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.node_id is None:
            return self.message
        return f"node {self.node_id} ({self.node_type}): {self.message}"


class GraphInvalid(FlowbuilderError):
    """The graph has one or more problems; ``issues`` lists all of them."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        lines = "\n".join(f"- {i}" for i in issues)
        super().__init__(f"the graph has {len(issues)} problem(s):\n{lines}")


class InputError(FlowbuilderError):
    """A flow input value that is missing, unknown, or of the wrong type."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"input '{name}': {message}")


class NodeError(FlowbuilderError):
    """A node could not do its work for a reason the user can fix (bad file, bad value)."""


class RetryableError(NodeError):
    """A transient failure (rate limit, dropped connection); the scheduler may retry.

    ``retry_after`` (seconds) is honoured when the remote side gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NodeFailed(FlowbuilderError):
    """Raised by a run when a node failed; names the node and carries its message."""

    def __init__(self, node_id: str, node_type: str, message: str) -> None:
        self.node_id, self.node_type, self.message = node_id, node_type, message
        super().__init__(f"node {node_id} ({node_type}) failed: {message}")


class RunCancelled(FlowbuilderError):
    """The run was cancelled (Ctrl-C or the API) before it finished."""
