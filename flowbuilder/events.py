"""The one event stream of a run.

The scheduler emits typed events; the CLI draws them as progress bars, the canvas shows
them on nodes, the HTTP API streams them as Server-Sent Events, the run store records
them. Every event has ``run_id``, a per-run sequence number ``seq`` (1, 2, …) and a wall
clock time ``t`` (seconds since the epoch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator

from flowbuilder.types import summarise

log = logging.getLogger(__name__)


def _summarise(cls: type, value: Any) -> Any:
    return {k: summarise(v) for k, v in value.items()} if isinstance(value, dict) else value


class _Event(BaseModel):
    run_id: str
    seq: int = 0
    t: float = 0.0


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    node_count: int
    inputs: dict[str, Any] = Field(default_factory=dict)


class NodeStarted(_Event):
    type: Literal["node_started"] = "node_started"
    node_id: str
    node_type: str
    attempt: int = 1


class NodeProgress(_Event):
    """Progress of a node: ``fraction`` in [0, 1] (None when unknown) and a short message.

    ``delta`` carries streamed output (e.g. the tokens an LLM just generated);
    ``metrics`` numbers to plot (a training step's ``{"step", "loss", "eta_s", …}``).
    """

    type: Literal["node_progress"] = "node_progress"
    node_id: str
    fraction: float | None = None
    message: str = ""
    delta: str | None = None
    metrics: dict[str, float] | None = None


class NodeCached(_Event):
    """A node served from the cache; ``outputs`` as in :class:`NodeFinished`."""

    type: Literal["node_cached"] = "node_cached"
    node_id: str
    node_type: str
    outputs: dict[str, Any] = Field(default_factory=dict)

    _summary = field_validator("outputs", mode="before")(_summarise)


class NodeFinished(_Event):
    """A node finished; ``outputs`` is a small JSON summary of what it produced
    (long text cut, artifacts as their references) for previews."""

    type: Literal["node_finished"] = "node_finished"
    node_id: str
    node_type: str
    elapsed_s: float
    outputs: dict[str, Any] = Field(default_factory=dict)

    _summary = field_validator("outputs", mode="before")(_summarise)


class NodeFailed(_Event):
    type: Literal["node_failed"] = "node_failed"
    node_id: str
    node_type: str
    error: str
    elapsed_s: float = 0.0


class NodeSkipped(_Event):
    """A node that did not run because something it depends on failed or was cancelled."""

    type: Literal["node_skipped"] = "node_skipped"
    node_id: str
    node_type: str
    reason: str


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    elapsed_s: float
    outputs: dict[str, Any] = Field(default_factory=dict)


class RunFailed(_Event):
    type: Literal["run_failed"] = "run_failed"
    elapsed_s: float
    error: str
    node_id: str | None = None


class RunCancelled(_Event):
    type: Literal["run_cancelled"] = "run_cancelled"
    elapsed_s: float


Event = Annotated[
    RunStarted
    | NodeStarted
    | NodeProgress
    | NodeCached
    | NodeFinished
    | NodeFailed
    | NodeSkipped
    | RunFinished
    | RunFailed
    | RunCancelled,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
"""Parses an event back from its JSON form (``EVENT_ADAPTER.validate_json(...)``)."""

Listener = Callable[[Any], None]


class EventBus:
    """Delivers a run's events, in order, to every listener.

    Listeners are plain callables, called synchronously on the event loop's thread; a
    listener that raises is logged and kept (one broken display never stops a run).
    """

    def __init__(self, run_id: str, listeners: list[Listener] | None = None) -> None:
        self.run_id = run_id
        self._listeners: list[Listener] = list(listeners or [])
        self._seq = 0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event_cls: type[_Event], **fields: Any) -> None:
        if not self._listeners:
            self._seq += 1
            return
        self._seq += 1
        event = event_cls(run_id=self.run_id, seq=self._seq, t=time.time(), **fields)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event)
