"""The LLM and Embed nodes against every kind of provider, through real HTTP servers.

The servers (tests/servers.py) answer with the same bundled models the local provider
runs, so with greedy decoding the three paths — local, OpenAI-compatible over HTTP,
Anthropic Messages over HTTP — must give the very same text.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import pytest
from servers import (
    LocalServer,
    chat_graph,
    deltas,
    make_engine,
    run_graph,
    starts,
)

from flowbuilder.builder import GraphBuilder
from flowbuilder.errors import NodeError
from flowbuilder.graph import graph_from_data, load_graph
from flowbuilder.models import ModelCache
from flowbuilder.providers import (
    ChatMessage,
    ChatRequest,
    ProviderRegistry,
    parse_json_answer,
    split_model_id,
    validate_json,
)
from flowbuilder.providers.config import ProviderConfig
from flowbuilder.providers.structured import InvalidAnswer
from flowbuilder.registry import Registry
from flowbuilder.scheduler import CancelToken

pytest_plugins = ["servers"]

REPO = Path(__file__).resolve().parent.parent
COLOUR_SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["colour", "count"],
}


def use_servers(home: Path, oai: LocalServer, anth: LocalServer) -> None:
    """Point ``testoai`` at the OpenAI-format server and ``anthropic`` at the Anthropic one."""
    config = ProviderConfig(home)
    config.add("testoai", f"{oai.url}/v1")
    config.add("anthropic", anth.url)


# ---- the same node, three providers -------------------------------------------------


@pytest.mark.slow
def test_same_node_three_providers(
    registry: Registry,
    home: Path,
    shared_models: ModelCache,
    openai_server: LocalServer,
    anthropic_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Switching only the model id: local, OpenAI-compatible, Anthropic — same answer,
    same usage, tokens streamed as progress on every path."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    use_servers(home, openai_server, anthropic_server)
    engine = make_engine(registry, shared_models)
    answers: dict[str, Any] = {}
    for model in ("local:smollm2", "testoai:smollm2", "anthropic:smollm2"):
        graph = chat_graph(registry, model, "Name three colours.", temperature=0, max_tokens=24)
        result, events = run_graph(engine, graph)
        assert result.status == "finished", (model, result.error)
        answer = result.outputs["answer"]
        assert answer
        assert deltas(events).strip() == answer
        progress = [e for e in events if e.type == "node_progress" and e.node_id == "2"]
        assert len(progress) >= 3 and progress[-1].message.endswith("tokens")
        answers[model] = (answer, result.outputs["usage"])
    assert len({a for a, _ in answers.values()}) == 1, answers
    assert len({tuple(u.items()) for _, u in answers.values()}) == 1, answers
    usage = answers["local:smollm2"][1]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    oai = openai_server.state.requests("/v1/chat/completions")
    anth = anthropic_server.state.requests("/v1/messages")
    assert len(oai) == 1 and oai[0].stream and oai[0].body["max_tokens"] == 24
    assert len(anth) == 1 and anth[0].stream and "seed" not in anth[0].body
    assert anth[0].auth == "Bearer test-anthropic-key"


@pytest.mark.slow
def test_test_servers_answer_without_streaming_too(
    openai_server: LocalServer, anthropic_server: LocalServer
) -> None:
    """The servers' non-streamed answers parse with the official SDKs and match the
    streamed ones (the servers are only useful if they speak the real formats)."""
    import anthropic
    import openai

    async def ask() -> tuple[str, str, str, str]:
        messages: Any = [{"role": "user", "content": "Name a colour."}]
        async with openai.AsyncOpenAI(
            api_key="k", base_url=f"{openai_server.url}/v1", max_retries=0
        ) as oai:
            whole = await oai.chat.completions.create(
                model="smollm2", messages=messages, max_tokens=12, temperature=0
            )
            pieces = [
                c.choices[0].delta.content or ""
                async for c in await oai.chat.completions.create(
                    model="smollm2",
                    messages=messages,
                    max_tokens=12,
                    temperature=0,
                    stream=True,
                )
                if c.choices
            ]
        async with anthropic.AsyncAnthropic(
            api_key="k", base_url=anthropic_server.url, max_retries=0
        ) as anth:
            message = await anth.messages.create(model="smollm2", messages=messages, max_tokens=12)
            events = await anth.messages.create(
                model="smollm2", messages=messages, max_tokens=12, stream=True
            )
            streamed = [
                e.delta.text
                async for e in events
                if e.type == "content_block_delta" and e.delta.type == "text_delta"
            ]
        assert whole.usage is not None and whole.usage.completion_tokens > 0
        assert message.usage.output_tokens > 0
        block = message.content[0]
        assert block.type == "text"
        return (
            whole.choices[0].message.content or "",
            "".join(pieces),
            block.text,
            "".join(streamed),
        )

    oai_whole, oai_streamed, anth_whole, anth_streamed = asyncio.run(ask())
    assert oai_whole and oai_whole == oai_streamed == anth_whole == anth_streamed


@pytest.mark.slow
def test_remote_nodes_run_side_by_side_local_ones_take_turns(
    registry: Registry,
    home: Path,
    shared_models: ModelCache,
    openai_server: LocalServer,
) -> None:
    """Remote calls are not serialised behind the local model limit; local ones are."""
    ProviderConfig(home).add("testoai", f"{openai_server.url}/v1")
    engine = make_engine(registry, shared_models)

    def two_chats(model: str) -> Any:
        b = GraphBuilder(registry)
        p = b.add("core/text", text="Say hi.")
        for seed in (1, 2):
            chat = b.add("llm/chat", model=model, max_tokens=4, seed=seed)
            b.link(p, "text", chat, "prompt")
            out = b.add("core/output", name=f"a{seed}")
            b.link(chat, "text", out, "value")
        return b.build()

    def order(events: list[Any]) -> tuple[dict[str, float], dict[str, float]]:
        """First streamed token and finish time of each LLM node, by node id."""
        first: dict[str, float] = {}
        for e in events:
            if e.type == "node_progress" and e.delta:
                first.setdefault(e.node_id, e.t)
        done = {e.node_id: e.t for e in events if e.type == "node_finished"}
        return first, done

    openai_server.state.inject("slow", times=2, seconds=0.3)
    result, events = run_graph(engine, two_chats("testoai:smollm2"))
    assert result.status == "finished", result.error
    first, done = order(events)
    a, b = sorted(first, key=first.__getitem__)
    assert first[b] < done[a], "remote calls should overlap"

    result, events = run_graph(engine, two_chats("local:smollm2"))
    assert result.status == "finished", result.error
    first, done = order(events)
    a, b = sorted(first, key=first.__getitem__)
    assert first[b] >= done[a], "local chats should take turns"


# ---- cancellation --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["openai", "anthropic"])
def test_cancel_closes_the_stream_at_once(
    server_name: str,
    registry: Registry,
    home: Path,
    shared_models: ModelCache,
    openai_server: LocalServer,
    anthropic_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    use_servers(home, openai_server, anthropic_server)
    server = openai_server if server_name == "openai" else anthropic_server
    model = "testoai:smollm2" if server_name == "openai" else "anthropic:smollm2"
    server.state.inject("slow", seconds=0.5)  # 0.5 s before each of up to 32 tokens
    engine = make_engine(registry, shared_models)
    token = CancelToken()
    cancelled_at: list[float] = []

    def listener(event: Any) -> None:
        if event.type == "node_progress" and event.delta and not cancelled_at:
            cancelled_at.append(time.monotonic())
            token.cancel()

    graph = chat_graph(registry, model, "Tell a long story.", max_tokens=32, temperature=0)
    result = asyncio.run(engine.run(graph, listeners=[listener], cancel=token, use_cache=False))
    ended = time.monotonic()
    assert result.status == "cancelled"
    assert result.node_status["2"] == "cancelled"
    # the next token was 0.5 s away, the whole answer ~16 s
    assert cancelled_at and ended - cancelled_at[0] < 0.4, "the run should stop at once"
    deadline = time.monotonic() + 2
    while not server.state.streamed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.state.disconnects, "the server should see the client hang up"
    assert server.state.disconnects[0] - cancelled_at[0] < 0.4
    assert server.state.streamed == [1], "the stream stopped after the first token"


# ---- structured output ------------------------------------------------------------------


@pytest.mark.slow
def test_structured_output_local(registry: Registry, home: Path, shared_models: ModelCache) -> None:
    """A JSON schema in, a parsed value out (llama.cpp constrains the local model)."""
    engine = make_engine(registry, shared_models)
    graph = chat_graph(
        registry,
        "local:smollm2",
        "Give a colour and a number.",
        json_schema=COLOUR_SCHEMA,
        max_tokens=32,
    )
    result, _ = run_graph(engine, graph)
    assert result.status == "finished", result.error
    value = result.outputs["json"]
    assert validate_json(value, COLOUR_SCHEMA) == []
    assert parse_json_answer(result.outputs["answer"]) == value


@pytest.mark.slow
def test_structured_output_retries_once_on_invalid_json(
    registry: Registry, home: Path, shared_models: ModelCache, openai_server: LocalServer
) -> None:
    """The server's first answer is cut to 3 tokens (invalid JSON); the node shows the
    model its answer and the problem, and the second answer is used."""
    ProviderConfig(home).add("testoai", f"{openai_server.url}/v1")
    openai_server.state.inject("truncate", tokens=3)
    engine = make_engine(registry, shared_models)
    graph = chat_graph(
        registry,
        "testoai:smollm2",
        "Give a colour and a number.",
        json_schema=COLOUR_SCHEMA,
        max_tokens=32,
    )
    result, events = run_graph(engine, graph)
    assert result.status == "finished", result.error
    assert validate_json(result.outputs["json"], COLOUR_SCHEMA) == []
    seen = openai_server.state.requests("/v1/chat/completions")
    assert len(seen) == 2
    assert seen[0].body["response_format"]["json_schema"]["schema"] == COLOUR_SCHEMA
    retry_messages = seen[1].body["messages"]
    assert retry_messages[-2]["role"] == "assistant"
    assert "not valid" in retry_messages[-1]["content"]
    assert len(starts(events)) == 1, "the JSON retry is inside one attempt"
    usage = result.outputs["usage"]
    assert usage["completion_tokens"] > 3


@pytest.mark.slow
def test_structured_output_fails_after_one_retry(
    registry: Registry, home: Path, shared_models: ModelCache, openai_server: LocalServer
) -> None:
    ProviderConfig(home).add("testoai", f"{openai_server.url}/v1")
    openai_server.state.inject("truncate", times=2, tokens=3)
    engine = make_engine(registry, shared_models)
    graph = chat_graph(registry, "testoai:smollm2", "A colour?", json_schema=COLOUR_SCHEMA)
    result, _ = run_graph(engine, graph)
    assert result.status == "failed"
    assert len(openai_server.state.requests("/v1/chat/completions")) == 2
    assert result.error is not None
    assert "model 'testoai:smollm2' did not return JSON matching the schema after one retry" in (
        result.error
    )


def test_json_answer_parsing_and_validation() -> None:
    assert parse_json_answer('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_answer('Sure! {"a": [1, 2]} hope that helps') == {"a": [1, 2]}
    with pytest.raises(InvalidAnswer, match="not JSON"):
        parse_json_answer('{"a": ')
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2},
            "n": {"type": "integer", "minimum": 0},
            "kid": {"$ref": "#/$defs/kid"},
        },
        "required": ["name", "n"],
        "additionalProperties": False,
        "$defs": {"kid": {"type": "object", "required": ["age"]}},
    }
    assert validate_json({"name": "ab", "n": 3, "tags": ["x"], "kid": {"age": 1}}, schema) == []
    problems = validate_json({"name": "a", "n": -1, "tags": ["z"], "kid": {}, "extra": 1}, schema)
    text = "; ".join(problems)
    assert "/name should have at least 2 characters" in text
    assert "/n should be at least 0" in text
    assert "/tags/0 should be one of" in text
    assert "/kid is missing the required key 'age'" in text
    assert validate_json(True, {"type": "integer"}) == ["the answer should be integer, not boolean"]


# ---- embeddings -----------------------------------------------------------------------


def _embed_graph(registry: Registry, **params: Any) -> Any:
    b = GraphBuilder(registry)
    inp = b.add("core/input", name="texts", type="list[text]")
    emb = b.add("llm/embed", **params)
    b.link(inp, "value", emb, "texts")
    for port in ("vectors", "dimensions", "usage"):
        out = b.add("core/output", name=port)
        b.link(emb, port, out, "value")
    return b.build()


@pytest.mark.slow
def test_embeddings_local_and_openai_compatible_agree(
    registry: Registry, home: Path, shared_models: ModelCache, openai_server: LocalServer
) -> None:
    """The bundled MiniLM locally and through the OpenAI-format server: same vectors."""
    ProviderConfig(home).add("testoai", f"{openai_server.url}/v1")
    engine = make_engine(registry, shared_models)
    texts = ["The cat sat on the mat.", "A kitten rested on a rug.", "Stock prices fell."]
    local, events = run_graph(engine, _embed_graph(registry), inputs={"texts": texts})
    assert local.status == "finished", local.error
    vectors = local.outputs["vectors"]
    assert local.outputs["dimensions"] == 384 and len(vectors) == 3
    assert all(abs(math.fsum(x * x for x in v) - 1) < 1e-4 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    assert local.outputs["usage"]["prompt_tokens"] > 10
    assert [e for e in events if e.type == "node_progress" and e.node_id == "2"]

    remote, _ = run_graph(
        engine,
        _embed_graph(registry, model="testoai:all-minilm-l6-v2"),
        inputs={"texts": texts},
    )
    assert remote.status == "finished", remote.error
    for a, b in zip(vectors, remote.outputs["vectors"], strict=True):
        assert cos(a, b) > 0.9999
    assert remote.outputs["usage"] == local.outputs["usage"]
    seen = openai_server.state.requests("/v1/embeddings")
    assert len(seen) == 1 and seen[0].body["input"] == texts


def test_embed_with_a_chat_only_provider_is_a_clear_error(
    registry: Registry, home: Path, shared_models: ModelCache
) -> None:
    engine = make_engine(registry, shared_models)
    result, _ = run_graph(
        engine, _embed_graph(registry, model="anthropic:x"), inputs={"texts": ["a"]}
    )
    assert result.status == "failed"
    assert "provider 'anthropic' has no embeddings API" in (result.error or "")


# ---- local Hugging Face model directories ------------------------------------------------


@pytest.mark.slow
def test_local_hf_directory_chats_and_is_catalogued(
    registry: Registry,
    home: Path,
    shared_models: ModelCache,
    tiny_hf_model: tuple[Path, int],
) -> None:
    import shutil

    from flowbuilder.providers.catalog import list_local_models

    src, params = tiny_hf_model
    shutil.copytree(src, home / "models" / "tiny-llama")
    engine = make_engine(registry, shared_models)
    graph = chat_graph(registry, "local:tiny-llama", "hello", temperature=0.7, max_tokens=8, seed=3)
    first, events = run_graph(engine, graph)
    assert first.status == "finished", first.error
    assert first.outputs["usage"]["completion_tokens"] == 8
    assert deltas(events).strip() == first.outputs["answer"]
    second, _ = run_graph(engine, graph)
    assert second.outputs["answer"] == first.outputs["answer"]

    entry = next(m for m in list_local_models(home) if m.id == "local:tiny-llama")
    assert (entry.task, entry.format, entry.source) == ("chat", "hf-safetensors", "models-dir")
    assert entry.parameters == params

    too_long = chat_graph(registry, "local:tiny-llama", "word " * 300, max_tokens=8)
    result, _ = run_graph(engine, too_long)
    assert result.status == "failed"
    assert "exceeds the context of 256 tokens" in (result.error or "")


# ---- ids, errors, parameters --------------------------------------------------------------


def test_model_ids() -> None:
    assert split_model_id("openai:gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert split_model_id("ollama:llama3.2:1b") == ("ollama", "llama3.2:1b")
    assert split_model_id("/models/x.gguf") == ("local", "/models/x.gguf")
    assert split_model_id("C:\\models\\x.gguf") == ("local", "C:\\models\\x.gguf")
    with pytest.raises(NodeError, match="unknown model provider 'nope'"):
        ProviderRegistry().resolve("nope:x")


def test_unknown_provider_and_pasted_key_are_reported_before_running(
    registry: Registry, home: Path, shared_models: ModelCache
) -> None:
    engine = make_engine(registry, shared_models)
    result, _ = run_graph(engine, chat_graph(registry, "nowhere:model"))
    assert result.status == "failed"
    assert "unknown model provider 'nowhere'" in (result.error or "")
    assert "flowbuilder providers add-endpoint nowhere URL" in (result.error or "")
    from flowbuilder.errors import GraphInvalid

    with pytest.raises(GraphInvalid, match="looks like an API key"):
        engine.compile(chat_graph(registry, "openai:gpt-4o-mini", credential="sk-proj-abc123"))


def test_missing_key_names_the_secret(
    registry: Registry, home: Path, shared_models: ModelCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, "openai:gpt-4o-mini"))
    assert result.status == "failed"
    assert len(starts(events)) == 1, "a missing key is not retried"
    assert "no API key for OpenAI: the secret 'OPENAI_API_KEY' is not set" in (result.error or "")
    assert "flowbuilder secrets set OPENAI_API_KEY" in (result.error or "")


def test_anthropic_request_shape() -> None:
    """System prompts become 'system', same-role turns merge, a schema becomes the
    structured-output format; the 2.x Messages API takes no sampling parameters."""
    from flowbuilder.providers.anthropic import AnthropicProvider
    from flowbuilder.providers.config import BUILTIN
    from flowbuilder.secrets import SecretStore

    provider = AnthropicProvider(BUILTIN["anthropic"], SecretStore(Path("/nonexistent")))
    request = ChatRequest(
        messages=[
            ChatMessage(role="system", content="be brief"),
            ChatMessage(role="user", content="a"),
            ChatMessage(role="user", content="b"),
        ],
        temperature=1.5,
        stop=["\n\n"],
        json_schema=COLOUR_SCHEMA,
    )
    assert provider._params("claude-x", request) == {
        "model": "claude-x",
        "max_tokens": 256,
        "system": "be brief",
        "messages": [{"role": "user", "content": "a\n\nb"}],
        "stop_sequences": ["\n\n"],
        "output_config": {"format": {"type": "json_schema", "schema": COLOUR_SCHEMA}},
    }


# ---- the example ------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_models_example_runs_offline(
    registry: Registry, home: Path, shared_models: ModelCache
) -> None:
    """The example as shipped, with shorter answers (16 tokens each) to keep tests quick."""
    engine = make_engine(registry, shared_models)
    data = load_graph(REPO / "examples" / "compare_models.json").to_dict()
    chats = [n for n in data["nodes"] if n["type"] == "llm/chat"]
    assert {n["properties"]["model"] for n in chats} == {"local:smollm2"}
    for node in chats:
        node["properties"]["max_tokens"] = 16
    graph = graph_from_data(data)
    result, events = run_graph(engine, graph, inputs={"prompt": "Name a fruit."})
    assert result.status == "finished", result.error
    text = result.outputs["comparison"]
    chats = [e for e in events if e.type == "node_finished" and e.node_type == "llm/chat"]
    assert len(chats) == 2
    assert text.count("###") == 2, text


AMX_AFTER_TORCH = """
import threading, torch
from flowbuilder.models import ModelCache
from flowbuilder.providers import ChatMessage, ChatRequest
from flowbuilder.providers.local import LocalModels

local = LocalModels(ModelCache())
request = ChatRequest(messages=[ChatMessage(role="user", content="Name a colour.")],
                      temperature=0.0, max_tokens=8)

def worker():
    first = local.chat("smollm2", request).text
    a = torch.randn(256, 256, dtype=torch.bfloat16)
    (a @ a).sum().item()  # oneDNN: AMX tiles on CPUs that have them, then released
    second = local.chat("smollm2", request).text
    assert first == second, (first, second)
    print("same answer:", first)

t = threading.Thread(target=worker)
t.start()
t.join()
"""


def test_local_model_survives_torch_bf16_work_on_the_same_thread() -> None:
    """A GGUF chat, bf16 torch work on the same thread, the chat again: with llama.cpp's
    AMX build, a thread whose tiles torch released faulted with SIGILL on the next prompt
    (llama.cpp now runs on its own thread). In a child process, so a fault is a failure
    here and not the end of the test session."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", AMX_AFTER_TORCH], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "same answer:" in proc.stdout
