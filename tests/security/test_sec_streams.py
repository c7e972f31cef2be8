"""A cut stream is a retryable provider error, never a finished (and cached) answer.

A real ``flowbuilder serve`` calls the OpenAI- and Anthropic-wire servers of
``tests/servers.py`` (real SmolLM2 answers), which end a streamed answer early and
cleanly (no ``finish_reason`` / no ``message_stop``) or answer a streaming call with a
whole 200 JSON body. The node retries; when the fault persists it fails; and a second
run of the same graph calls the provider again instead of reusing a cut answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from servers import LocalServer
from test_api import Server, create_flow, start_server

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

pytest_plugins = ["servers"]

pytestmark = pytest.mark.slow  # the wire servers answer with the real bundled model

PATHS = {"oai": "/v1/chat/completions", "anth": "/v1/messages"}


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    srv = start_server(tmp_path_factory.mktemp("streams-home"), FLOWBUILDER_REQUIRE_AUTH="1")
    made = srv.cli("keys", "create", "--name", "t", "--json")
    assert made.returncode == 0, made.stderr
    yield srv, {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}
    srv.stop()


@pytest.fixture
def wire(
    serve: tuple[Server, dict[str, str]],
    openai_server: LocalServer,
    anthropic_server: LocalServer,
) -> dict[str, LocalServer]:
    """``oai:`` and ``anth:`` endpoints of the serve subprocess → the two wire servers."""
    srv, _ = serve
    for args in (
        ("oai", f"{openai_server.url}/v1"),
        ("anth", anthropic_server.url, "--kind", "anthropic"),
    ):
        done = srv.cli("providers", "add-endpoint", *args, "--timeout", "20")
        assert done.returncode == 0, done.stderr
    return {"oai": openai_server, "anth": anthropic_server}


def llm_flow(c: httpx.Client, provider: str, name: str) -> str:
    b = GraphBuilder(default_registry(), name=name)
    prompt = b.add("core/input", name="prompt", type="text")
    llm = b.add("llm/chat", model=f"{provider}:smollm2", temperature=0.0, max_tokens=12)
    out = b.add("core/output", name="text")
    b.link(prompt, "value", llm, "prompt")
    b.link(llm, "text", out, "value")
    return create_flow(c, b.build().to_dict(), name)


def run(c: httpx.Client, flow_id: str, prompt: str) -> tuple[int, dict[str, Any]]:
    r = c.post(f"/api/v1/flows/{flow_id}/run", json={"prompt": prompt}, timeout=120)
    body = r.json()
    return r.status_code, body.get("detail", body)


def node_status(c: httpx.Client, run_id: str) -> str:
    nodes = c.get(f"/api/v1/runs/{run_id}").json()["nodes"]
    return next(str(n["status"]) for n in nodes if n["node_type"] == "llm/chat")


@pytest.mark.parametrize("provider", ["oai", "anth"])
@pytest.mark.parametrize("fault", ["unfinished", "json"])
def test_cut_stream_fails_and_is_not_cached(
    provider: str,
    fault: str,
    serve: tuple[Server, dict[str, str]],
    wire: dict[str, LocalServer],
) -> None:
    srv, headers = serve
    state = wire[provider].state
    prompt = f"Name a colour ({provider}, {fault})."
    with srv.client(headers=headers) as c:
        flow_id = llm_flow(c, provider, f"Cut {provider} {fault}")

        state.inject(fault, times=4, tokens=2)  # every attempt: 1 + the node's 3 retries
        code, body = run(c, flow_id, prompt)
        assert code == 500, body
        assert body["status"] == "failed"
        assert "ended before the answer was complete" in body["error"], body["error"]
        assert len(state.requests(PATHS[provider])) == 4

        code, body = run(c, flow_id, prompt)  # the same graph: the provider is called again
        assert code == 200, body
        assert len(state.requests(PATHS[provider])) == 5
        assert node_status(c, body["run_id"]) == "done"
        assert body["outputs"]["text"]

        state.reset()
        state.inject(fault, tokens=2)  # once: the retry gets the whole answer
        code, body = run(c, flow_id, f"Name a fruit ({provider}, {fault}).")
        assert code == 200, body
        seen = state.requests(PATHS[provider])
        assert len(seen) == 2
        assert body["outputs"]["text"] == whole_answer(wire[provider], provider, seen[-1].body)


def whole_answer(server: LocalServer, provider: str, sent: dict[str, Any]) -> str:
    """The server's complete answer to the request the node sent, asked without
    streaming (greedy decoding: the same text)."""
    plain = {k: v for k, v in sent.items() if k not in ("stream", "stream_options")}
    r = httpx.post(server.url + PATHS[provider], json=plain, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()
    if provider == "oai":
        return str(data["choices"][0]["message"]["content"]).strip()
    return "".join(block["text"] for block in data["content"]).strip()
