"""The store's errors: a record that is missing, or one that exists already."""

from __future__ import annotations

from flowbuilder.errors import FlowbuilderError


class NotFound(FlowbuilderError):
    """A flow, flow version, run or API key that does not exist.

    ``kind`` is ``flow``, ``flow version``, ``run`` or ``API key``; ``key`` the id asked for.
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"{kind} '{key}' not found")


class AlreadyExists(FlowbuilderError):
    """A record with this id exists already (e.g. a second run with the same run_id)."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"{kind} '{key}' already exists")


__all__ = ["AlreadyExists", "NotFound"]
