"""Loaded models kept between runs in one process, bounded by a memory budget.

Loading is the slow part of local inference (SmolLM2 GGUF 0.1 s, Whisper tiny 0.3 s,
a transformers model many seconds), so a model stays loaded after the node that used it
finishes. When the estimated total passes the budget, the least recently used models are
dropped. Each entry carries a lock: llama.cpp and CTranslate2 model objects must not be
used from two threads at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadedModel:
    """A loaded model object, its estimated size in MB, and the lock for using it."""

    key: str
    model: Any
    size_mb: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelCache:
    """Least-recently-used cache of loaded models with a memory budget in MB."""

    def __init__(self, budget_mb: float = 4096) -> None:
        self.budget_mb = budget_mb
        self._entries: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0  # how many times a loader ran (for tests and diagnostics)

    def get(self, key: str, loader: Callable[[], Any], size_mb: float) -> LoadedModel:
        """Return the model for ``key``, calling ``loader()`` once if it is not loaded.

        Blocking; call from a worker thread. Two callers asking for the same key at once
        share one load.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    return entry
            model = loader()
            entry = LoadedModel(key, model, size_mb)
            with self._lock:
                self.loads += 1
                self._entries[key] = entry
                self._evict(keep=key)
                self._loading.pop(key, None)
            return entry

    def _evict(self, keep: str) -> None:
        total = sum(e.size_mb for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.budget_mb:
                break
            if key == keep:
                continue
            total -= self._entries.pop(key).size_mb

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
