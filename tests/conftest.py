"""Shared fixtures: an isolated data directory, an engine, test node types."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flowbuilder.builder import GraphBuilder
from flowbuilder.context import RunContext
from flowbuilder.engine import Engine
from flowbuilder.errors import NodeError, RetryableError
from flowbuilder.node import Node, NodeMeta, Param, Port
from flowbuilder.registry import Registry, default_registry
from flowbuilder.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"


class Sleep(Node):
    """Test node: awaits ``seconds``, records when it started and ended, passes ``value``."""

    meta = NodeMeta(type="test/sleep", version="1.0.0", category="Test")
    log: list[tuple[str, float, float]] = []

    class Inputs(BaseModel):
        value: Any = Port(None, description="passed through")
        seconds: float = Param(0.0, ge=0)
        label: str = Param("")

    class Outputs(BaseModel):
        value: Any

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        start = time.perf_counter()
        await asyncio.sleep(inputs.seconds)
        Sleep.log.append((ctx.node_id, start, time.perf_counter()))
        return self.Outputs(value=inputs.value if inputs.value is not None else inputs.label)


class Fail(Node):
    """Test node: always fails with ``message``."""

    meta = NodeMeta(type="test/fail", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        value: Any = Port(None)
        message: str = Param("boom")

    class Outputs(BaseModel):
        value: Any

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        raise NodeError(inputs.message)


class Flaky(Node):
    """Test node: raises RetryableError for the first ``failures`` attempts of a label."""

    meta = NodeMeta(type="test/flaky", version="1.0.0", category="Test", retries=3)
    attempts: dict[str, int] = {}

    class Inputs(BaseModel):
        failures: int = Param(1, ge=0)
        label: str = Param("x")

    class Outputs(BaseModel):
        attempts: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        n = Flaky.attempts[inputs.label] = Flaky.attempts.get(inputs.label, 0) + 1
        if n <= inputs.failures:
            raise RetryableError("try again", retry_after=0.01)
        return self.Outputs(attempts=n)


class Counter(Node):
    """Test node: counts its executions (to observe cache hits), returns text + suffix."""

    meta = NodeMeta(type="test/counter", version="1.0.0", category="Test")
    runs: list[str] = []

    class Inputs(BaseModel):
        text: str = Port("", description="input text")
        suffix: str = Param("")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        Counter.runs.append(ctx.node_id)
        return self.Outputs(text=inputs.text + inputs.suffix)


TEST_NODES = (Sleep, Fail, Flaky, Counter)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty FLOWBUILDER_HOME for this test."""
    path = tmp_path / "home"
    monkeypatch.setenv("FLOWBUILDER_HOME", str(path))
    return path


@pytest.fixture
def registry() -> Registry:
    """Every installed pack plus the test nodes."""
    reg = default_registry()
    for cls in TEST_NODES:
        reg.register(cls)
    Sleep.log.clear()
    Counter.runs.clear()
    Flaky.attempts.clear()
    return reg


@pytest.fixture
def engine(registry: Registry, home: Path) -> Engine:
    return Engine(registry, Settings.from_env())


@pytest.fixture
def builder(registry: Registry) -> GraphBuilder:
    return GraphBuilder(registry)
