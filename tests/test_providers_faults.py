"""Faults real APIs have, injected by real local HTTP servers (tests/servers.py).

Each test shows what a user sees: how many attempts the node made (its
``node_started`` events, and the requests the server received), the time between them,
and the final message. The SDKs' own retries are off; the scheduler retries transient
faults (429, 5xx, timeouts, dropped connections) three times with exponential back-off
and jitter, or after the server's Retry-After; 400/401/404 fail at once.
"""

from __future__ import annotations

import itertools
import logging
import socket
from pathlib import Path

import pytest
from servers import LocalServer, chat_graph, deltas, make_engine, run_graph, starts

from flowbuilder.models import ModelCache
from flowbuilder.providers.config import ProviderConfig
from flowbuilder.registry import Registry
from flowbuilder.secrets import SecretStore

pytest_plugins = ["servers"]

pytestmark = pytest.mark.slow  # the servers answer with the real bundled model

OAI = "testoai:smollm2"
ANTH = "anthropic:smollm2"
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


@pytest.fixture
def servers(
    home: Path,
    openai_server: LocalServer,
    anthropic_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[LocalServer, LocalServer]:
    """``testoai`` → the OpenAI-format server, ``anthropic`` → the Anthropic one, both
    with a 10 s read timeout (the timeout tests set the node's own)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    config = ProviderConfig(home)
    config.add("testoai", f"{openai_server.url}/v1", timeout_s=10.0)
    config.add("anthropic", anthropic_server.url, timeout_s=10.0)
    return openai_server, anthropic_server


def gaps(server: LocalServer, path: str) -> list[float]:
    """Seconds between consecutive requests the server received."""
    times = [s.t for s in server.state.requests(path)]
    return [b - a for a, b in itertools.pairwise(times)]


# ---- retried -------------------------------------------------------------------------


def test_429_retry_after_ms_is_honoured_openai(
    registry: Registry,
    shared_models: ModelCache,
    servers: tuple[LocalServer, LocalServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    oai, _ = servers
    oai.state.inject("429", times=2, retry_after_ms=400)
    caplog.set_level(logging.INFO)
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, OAI, max_tokens=8))
    assert result.status == "finished", result.error
    assert [e.attempt for e in starts(events)] == [1, 2, 3]
    assert len(oai.state.requests(CHAT)) == 3
    assert all(g >= 0.4 for g in gaps(oai, CHAT)), gaps(oai, CHAT)
    assert "is rate limiting requests for model 'smollm2' (HTTP 429" in caplog.text
    assert "retry 1 in 0.40 s" in caplog.text and "retry 2 in 0.40 s" in caplog.text


def test_429_retry_after_seconds_is_honoured_anthropic(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    _, anth = servers
    anth.state.inject("429", retry_after="1")
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, ANTH, max_tokens=8))
    assert result.status == "finished", result.error
    assert [e.attempt for e in starts(events)] == [1, 2]
    (gap,) = gaps(anth, MESSAGES)
    assert gap >= 1.0
    begun = starts(events)
    assert begun[1].t - begun[0].t >= 1.0


def test_5xx_backs_off_with_jitter_then_succeeds(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    """No Retry-After: full jitter, at most 0.5 s then 1 s (base 0.5 s, doubling)."""
    oai, anth = servers
    oai.state.inject("500", times=2)
    anth.state.inject("529")  # Anthropic's "overloaded"
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, OAI, max_tokens=8))
    assert result.status == "finished", result.error
    assert len(starts(events)) == 3 and len(oai.state.requests(CHAT)) == 3
    first, second = gaps(oai, CHAT)
    assert first < 0.5 + 0.5 and second < 1.0 + 0.5  # the cap plus the answer's own time
    result, events = run_graph(engine, chat_graph(registry, ANTH, max_tokens=8))
    assert result.status == "finished", result.error
    assert len(starts(events)) == 2 and len(anth.state.requests(MESSAGES)) == 2


def test_5xx_every_time_fails_after_three_retries(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    oai, _ = servers
    oai.state.inject("503", times=4)
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, OAI, max_tokens=8))
    assert result.status == "failed"
    assert [e.attempt for e in starts(events)] == [1, 2, 3, 4]
    assert len(oai.state.requests(CHAT)) == 4
    assert result.error == (
        f"'testoai' ({oai.url}/v1) had a temporary error for model 'smollm2' (HTTP 503: The "
        "server had an error while processing your request. Sorry about that!)"
    )


def test_read_timeout_is_retried(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    """The server says nothing for 10 s; the client gives up after the node's 1.5 s
    timeout and the next attempt gets an answer."""
    oai, anth = servers
    oai.state.inject("hang", seconds=10)
    anth.state.inject("hang", seconds=10)
    engine = make_engine(registry, shared_models)
    for server, model, path in ((oai, OAI, CHAT), (anth, ANTH, MESSAGES)):
        graph = chat_graph(registry, model, max_tokens=8, timeout=1.5)
        result, events = run_graph(engine, graph)
        assert result.status == "finished", result.error
        begun = starts(events)
        assert len(begun) == 2 and len(server.state.requests(path)) == 2
        assert begun[1].t - begun[0].t >= 1.5


def test_timeout_every_time_says_so(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    oai, _ = servers
    oai.state.inject("hang", times=4, seconds=5)
    engine = make_engine(registry, shared_models)
    graph = chat_graph(registry, OAI, max_tokens=8, timeout=0.5)  # the node's own timeout
    result, events = run_graph(engine, graph)
    assert result.status == "failed"
    begun = starts(events)
    assert len(begun) == 4
    assert all(b.t - a.t >= 0.5 for a, b in itertools.pairwise(begun))
    assert result.error == (
        f"'testoai' ({oai.url}/v1) did not answer within 0.5 s for model 'smollm2' (read "
        "timeout); raise the node's timeout if the model is slow"
    )


@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_stream_cut_midway_is_retried(
    which: str,
    registry: Registry,
    shared_models: ModelCache,
    servers: tuple[LocalServer, LocalServer],
) -> None:
    server = servers[0] if which == "openai" else servers[1]
    model, path = (OAI, CHAT) if which == "openai" else (ANTH, MESSAGES)
    server.state.inject("cut", tokens=2)
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, model, max_tokens=12, temperature=0))
    assert result.status == "finished", result.error
    assert len(starts(events)) == 2 and len(server.state.requests(path)) == 2
    first_attempt = [
        e
        for e in events
        if e.type == "node_progress" and e.node_id == "2" and e.seq < starts(events)[1].seq
    ]
    assert len(first_attempt) == 2, "two tokens arrived before the cut"
    assert deltas(events).strip() == result.outputs["answer"]


def test_stream_cut_every_time_says_so(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    oai, _ = servers
    oai.state.inject("cut", times=4, tokens=1)
    engine = make_engine(registry, shared_models)
    result, _ = run_graph(engine, chat_graph(registry, OAI, max_tokens=8))
    assert result.status == "failed"
    assert len(oai.state.requests(CHAT)) == 4
    assert (result.error or "").startswith(
        f"the connection to 'testoai' ({oai.url}/v1) dropped in the middle of the answer from "
        "model 'smollm2' ("
    )


def test_connection_refused_is_retried_then_explained(
    registry: Registry, home: Path, shared_models: ModelCache
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ProviderConfig(home).add("gone", f"http://127.0.0.1:{port}/v1")
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, "gone:m", max_tokens=8))
    assert result.status == "failed"
    assert len(starts(events)) == 4
    assert (result.error or "").startswith(
        f"cannot reach 'gone' (http://127.0.0.1:{port}/v1) for model 'm' ("
    )
    assert "is the server running and the base URL right?" in (result.error or "")


# ---- not retried ----------------------------------------------------------------------


def test_wrong_key_401_is_not_retried(
    registry: Registry,
    home: Path,
    shared_models: ModelCache,
    servers: tuple[LocalServer, LocalServer],
) -> None:
    oai, anth = servers
    oai.state.reset(api_key="right-key-123")
    anth.state.reset(api_key="right-key-123")
    SecretStore(home).set("TEST_KEY", "wrong-key-456", scope=["testoai"])
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, OAI, credential="TEST_KEY"))
    assert result.status == "failed"
    assert len(starts(events)) == 1 and len(oai.state.requests(CHAT)) == 1
    assert (result.error or "").startswith(
        f"'testoai' ({oai.url}/v1) rejected the API key for model 'smollm2' (HTTP 401: "
        "Incorrect API key provided: [redacted]."
    )
    # a node's credential is a stored secret: the environment is not suggested for it
    assert (result.error or "").endswith(
        "check the secret 'TEST_KEY' (`flowbuilder secrets set TEST_KEY`)"
    )
    result, events = run_graph(engine, chat_graph(registry, ANTH))
    assert len(starts(events)) == 1 and len(anth.state.requests(MESSAGES)) == 1
    assert (
        f"'anthropic' ({anth.url}) rejected the API key for model 'smollm2' (HTTP 401: "
        "invalid x-api-key)" in (result.error or "")
    )
    assert "check the secret 'ANTHROPIC_API_KEY'" in (result.error or "")


def test_unknown_model_404_is_not_retried(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    oai, anth = servers
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, "testoai:gpt-nope"))
    assert len(starts(events)) == 1 and len(oai.state.requests(CHAT)) == 1
    assert result.error == (
        f"'testoai' ({oai.url}/v1) has no model 'gpt-nope' (HTTP 404: The model `gpt-nope` "
        "does not exist or you do not have access to it.); check the model name in the "
        "node's model id"
    )
    result, events = run_graph(engine, chat_graph(registry, "anthropic:claude-nope"))
    assert len(starts(events)) == 1 and len(anth.state.requests(MESSAGES)) == 1
    assert "has no model 'claude-nope' (HTTP 404: model: claude-nope)" in (result.error or "")


@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_context_too_long_is_explained(
    which: str,
    registry: Registry,
    shared_models: ModelCache,
    servers: tuple[LocalServer, LocalServer],
) -> None:
    """A prompt longer than the real model's 2048-token context: HTTP 400 with the real
    APIs' bodies, not retried."""
    model = OAI if which == "openai" else ANTH
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, model, "hello " * 2100))
    assert result.status == "failed"
    assert len(starts(events)) == 1
    error = result.error or ""
    assert "the prompt is too long for" in error and "model 'smollm2' (HTTP 400: " in error
    assert (
        "shorten the prompt or messages, lower max_tokens, or pick a model with a "
        "longer context" in error
    )
    if which == "openai":
        assert "maximum context length is 2048 tokens" in error
    else:
        assert "prompt is too long: " in error and "> 2048 maximum" in error


@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_refused_content_is_explained(
    which: str,
    registry: Registry,
    shared_models: ModelCache,
    servers: tuple[LocalServer, LocalServer],
) -> None:
    server = servers[0] if which == "openai" else servers[1]
    server.state.inject("refuse")
    engine = make_engine(registry, shared_models)
    model = OAI if which == "openai" else ANTH
    result, events = run_graph(engine, chat_graph(registry, model, max_tokens=8))
    assert result.status == "failed"
    assert len(starts(events)) == 1
    reason = (
        "its content filter stopped the answer" if which == "openai" else "stop reason 'refusal'"
    )
    assert (
        f"model 'smollm2' refused to answer ({reason}); rephrase the prompt or use "
        "another model" in (result.error or "")
    )


def test_quota_exhausted_429_is_not_retried(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    oai, _ = servers
    oai.state.inject("quota")
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, OAI, max_tokens=8))
    assert len(starts(events)) == 1
    assert "says the account's quota is used up (HTTP 429: You exceeded your current quota" in (
        result.error or ""
    )


def test_retry_after_too_long_is_not_waited_for(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    oai, _ = servers
    oai.state.inject("429", retry_after="120")
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, chat_graph(registry, OAI, max_tokens=8))
    assert len(starts(events)) == 1
    assert "and asks to wait 120 s; try again later" in (result.error or "")


def test_embeddings_faults_are_retried_too(
    registry: Registry, shared_models: ModelCache, servers: tuple[LocalServer, LocalServer]
) -> None:
    from flowbuilder.builder import GraphBuilder

    oai, _ = servers
    oai.state.inject("500")
    b = GraphBuilder(registry)
    inp = b.add("core/input", name="texts", type="list[text]")
    emb = b.add("llm/embed", model="testoai:all-minilm-l6-v2", timeout=120)
    out = b.add("core/output", name="vectors")
    b.link(inp, "value", emb, "texts")
    b.link(emb, "vectors", out, "value")
    engine = make_engine(registry, shared_models)
    result, events = run_graph(engine, b.build(), inputs={"texts": ["a", "b"]})
    assert result.status == "finished", result.error
    assert len(starts(events)) == 2 and len(result.outputs["vectors"]) == 2
