"""The public node SDK: a pack written only against ``flowbuilder.sdk`` runs, and the run
context's services keep the file-access policy."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from flowbuilder import sdk
from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.registry import default_registry
from flowbuilder.sdk import (
    SDK_VERSION,
    ChatMessage,
    ChatRequest,
    Node,
    NodeMeta,
    Param,
    Registry,
    RunContext,
)
from flowbuilder.settings import Settings

LOADS: list[str] = []


class CachedModel(Node):
    """Loads a stand-in model through ``ctx.models`` and reports what it holds."""

    meta = NodeMeta(type="sdktest/cached", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        key: str = Param("demo")
        salt: int = Param(0, description="changes the cache key of the node, not the model")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        def loader() -> dict[str, str]:
            LOADS.append(inputs.key)
            return {"name": inputs.key}

        entry = await ctx.models.load(f"sdktest:{inputs.key}", loader, 1)
        with entry.lock:
            return self.Outputs(text=entry.model["name"])


class Reach(Node):
    """Asks a service for what its parameters name; the service's errors are the node's."""

    meta = NodeMeta(type="sdktest/reach", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        what: str = Param("model")
        value: str = Param("")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        if inputs.what == "model":
            spec = await ctx.to_thread(ctx.models.resolve, inputs.value)
            return self.Outputs(text=f"{spec.kind}:{spec.path.name}")
        if inputs.what == "knowledge":
            names = await ctx.to_thread(lambda: ctx.knowledge.bases(inputs.value).names())
            return self.Outputs(text=",".join(names))
        request = ChatRequest(messages=[ChatMessage(role="user", content="hi")])
        result = await ctx.providers.chat(inputs.value, request)
        return self.Outputs(text=result.text)


def register(registry: Registry) -> None:
    registry.register(CachedModel)
    registry.register(Reach)


@pytest.fixture
def sdk_engine(home: Path, tmp_path: Path) -> Engine:
    registry = default_registry()
    register(registry)
    LOADS.clear()
    return Engine(registry, Settings.from_env(file_roots=(tmp_path / "root",)), cache=False)


def run_one(engine: Engine, type_id: str, **params: Any) -> Any:
    builder = GraphBuilder(engine.registry)
    node = builder.add(type_id, **params)
    out = builder.add("core/output", name="out")
    builder.link(node, "text", out, "value")
    return asyncio.run(engine.run(builder.build(), {}))


def test_every_public_name_resolves_and_the_version_is_semantic() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", SDK_VERSION)
    missing = [name for name in sdk.__all__ if not hasattr(sdk, name)]
    assert missing == []
    assert sorted(sdk.__all__) == dir(sdk)
    with pytest.raises(AttributeError, match="no attribute 'Scheduler'"):
        sdk.Scheduler  # noqa: B018  (the engine's own classes are not in the SDK)
    # a node reaches files by path only through ctx.files: the store takes no path in
    # and copies nothing out
    assert not hasattr(sdk.ArtifactService, "put_file")
    assert not hasattr(sdk.ArtifactService, "export")


def test_a_model_loads_once_per_process(sdk_engine: Engine) -> None:
    first = run_one(sdk_engine, "sdktest/cached", key="demo")
    second = run_one(sdk_engine, "sdktest/cached", key="demo", salt=1)
    assert first.status == second.status == "finished", (first.error, second.error)
    assert first.outputs["out"] == second.outputs["out"] == "demo"
    assert LOADS == ["demo"]
    assert sdk_engine.models.keys() == ["sdktest:demo"]


def test_services_keep_the_file_access_policy(sdk_engine: Engine, home: Path) -> None:
    (home / "models").mkdir(parents=True, exist_ok=True)
    outside = home.parent / "elsewhere"
    outside.mkdir()
    model = run_one(sdk_engine, "sdktest/reach", what="model", value=str(outside))
    assert model.status == "failed"
    assert "field 'model'" in (model.error or "") and str(outside) in (model.error or "")
    store = run_one(sdk_engine, "sdktest/reach", what="knowledge", value=str(home / "models"))
    assert store.status == "failed"
    assert "field 'location'" in (store.error or "") and "model store" in (store.error or "")
    bundled = run_one(sdk_engine, "sdktest/reach", what="model", value="smollm2")
    assert bundled.status == "finished", bundled.error
    assert bundled.outputs["out"].startswith("gguf:")


def test_providers_by_model_id(sdk_engine: Engine) -> None:
    result = run_one(sdk_engine, "sdktest/reach", what="chat", value="nowhere:model-x")
    assert result.status == "failed"
    assert "unknown model provider 'nowhere'" in (result.error or "")
