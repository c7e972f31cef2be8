"""The node registry: an instance (never a global) mapping type ids to node classes.

Built-in packs and third-party packs are found the same way, through the
``flowbuilder.nodes`` entry-point group; each entry point names a ``register(registry)``
function.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from flowbuilder.errors import FlowbuilderError
from flowbuilder.node import Node

ENTRY_POINT_GROUP = "flowbuilder.nodes"
log = logging.getLogger(__name__)


class RegistryError(FlowbuilderError):
    """A node class that cannot be registered (duplicate type id, bad declaration)."""


class Registry:
    """Node classes by type id."""

    def __init__(self, nodes: Iterable[type[Node]] = ()) -> None:
        self._nodes: dict[str, type[Node]] = {}
        for cls in nodes:
            self.register(cls)

    def register(self, cls: type[Node]) -> type[Node]:
        """Add a node class; usable as a decorator.

        Raises:
            RegistryError: another class already has this type id, or the class's
                ports have annotations without a port type.
        """
        meta = getattr(cls, "meta", None)
        if meta is None:
            raise RegistryError(f"{cls.__qualname__} has no 'meta = NodeMeta(...)'")
        existing = self._nodes.get(meta.type)
        if existing is not None and existing is not cls:
            raise RegistryError(
                f"node type '{meta.type}' is registered twice: "
                f"{existing.__module__}.{existing.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        try:
            cls.input_specs()
            cls.output_types()
        except Exception as exc:
            raise RegistryError(f"node type '{meta.type}': {exc}") from exc
        self._nodes[meta.type] = cls
        return cls

    def get(self, type_id: str) -> type[Node] | None:
        return self._nodes.get(type_id)

    def __contains__(self, type_id: object) -> bool:
        return type_id in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def types(self) -> list[str]:
        return sorted(self._nodes)

    def suggest(self, type_id: str, n: int = 3) -> list[str]:
        """The closest known type ids, for 'unknown node type' messages."""
        names = self.types()
        close = difflib.get_close_matches(type_id, names, n=n, cutoff=0.5)
        if not close and "/" in type_id:
            tail = type_id.rsplit("/", 1)[1]
            close = [t for t in names if t.rsplit("/", 1)[1] == tail][:n]
        return close

    def catalogue(self) -> list[dict[str, Any]]:
        """Every node type's :meth:`Node.describe`, sorted by category then type id."""
        entries = [cls.describe() for cls in self._nodes.values()]
        return sorted(entries, key=lambda e: (e["category"], e["type"]))

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Call ``register(self)`` of every installed pack; returns the pack names loaded.

        A pack that fails to load is logged and skipped, so one broken third-party pack
        does not take the others down.
        """
        loaded = []
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                ep.load()(self)
            except Exception:
                log.exception("node pack %r (%s) failed to load", ep.name, ep.value)
                continue
            loaded.append(ep.name)
        return loaded


def default_registry() -> Registry:
    """A fresh registry with every installed node pack (built-in and third-party)."""
    registry = Registry()
    registry.load_entry_points()
    return registry
