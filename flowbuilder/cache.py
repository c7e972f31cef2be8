"""Content-addressed output cache, in the manner of ComfyUI's signature cache.

A node's key is a SHA-256 over its type id, version, parameters and the keys of its
wired inputs (with the output names they come from) — so a key depends on the content
of a node's ancestors, never on node ids or positions. Re-running an edited graph
re-runs only nodes whose key changed. Non-deterministic nodes get a fresh random key on
every run, so neither they nor anything downstream of them is served from the cache.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from typing import Any

from pydantic_core import to_json


def node_key(
    type_id: str,
    version: str,
    params: dict[str, Any],
    inputs: dict[str, tuple[str, str]],
    deterministic: bool = True,
) -> str:
    """The cache key of one node execution.

    Args:
        params: parameter values by name (JSON-serialisable, pydantic models allowed).
        inputs: input name -> (upstream node's key, upstream output name).
    """
    if not deterministic:
        return "nd-" + uuid.uuid4().hex
    payload = to_json([type_id, version, sorted(params.items()), sorted(inputs.items())])
    return hashlib.sha256(payload).hexdigest()


class MemoryCache:
    """Node outputs by key, least recently used dropped past ``max_entries``."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: str, outputs: dict[str, Any]) -> None:
        self._data[key] = outputs
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
