"""The OpenAI-compatible facade with the official ``openai`` SDK (``base_url`` at the
server), streaming and not: answers, real token usage, errors in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from test_api import Server, chat_graph, create_flow, greeting_graph, start_server

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("openai-home"))
    yield srv
    srv.stop()


def test_openai_sdk_chat_completions(server: Server) -> None:
    with server.client() as c:
        flow_id = create_flow(c, chat_graph(), "Assistant")
        greeter = create_flow(c, greeting_graph(), "Greeter")
        expected = c.post(f"/api/v1/flows/{flow_id}/run", json={"prompt": "Say hello."}).json()
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=server.token, max_retries=0)

    answer = client.chat.completions.create(
        model="Assistant",
        messages=[
            {"role": "system", "content": "ignored: the flow has no system input"},
            {"role": "user", "content": "Say hello."},
        ],
    )
    assert answer.choices[0].message.content == expected["outputs"]["text"]
    assert answer.choices[0].finish_reason == "stop"

    by_id = client.chat.completions.create(
        model=flow_id, messages=[{"role": "user", "content": "Say hello."}]
    )
    assert by_id.choices[0].message.content == expected["outputs"]["text"]

    pieces = []  # a new prompt, so the LLM runs (not served from the cache) and streams
    for chunk in client.chat.completions.create(
        model="Assistant", messages=[{"role": "user", "content": "Name a colour."}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 1  # tokens arrive one by one
    with server.client() as c:
        same = c.post(f"/api/v1/flows/{flow_id}/run", json={"prompt": "Name a colour."}).json()
    assert "".join(pieces).strip() == same["outputs"]["text"]

    models = [m.id for m in client.models.list()]
    assert "Assistant" in models and "Greeter" not in models  # Greeter is not chat-shaped
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=greeter, messages=[{"role": "user", "content": "x"}])


def two_llm_graph() -> dict[str, Any]:
    """prompt → LLM → LLM → text, with each LLM's usage as an output of its own."""
    b = GraphBuilder(default_registry(), name="Two LLMs")
    prompt = b.add("core/input", name="prompt", type="text")
    first = b.add("llm/chat", model="local:smollm2", temperature=0.0, max_tokens=6, seed=0)
    second = b.add("llm/chat", model="local:smollm2", temperature=0.0, max_tokens=5, seed=0)
    b.link(prompt, "value", first, "prompt")
    b.link(first, "text", second, "prompt")
    for node, port, name in (
        (second, "text", "text"),
        (first, "usage", "u1"),
        (second, "usage", "u2"),
    ):
        out = b.add("core/output", name=name)
        b.link(node, port, out, "value")
    return b.build().to_dict()


def failing_graph() -> dict[str, Any]:
    """prompt → Template using a variable that has no value → text: fails when run."""
    b = GraphBuilder(default_registry(), name="Broken")
    prompt = b.add("core/input", name="prompt", type="text")
    tpl = b.add("core/template", template="{{ nowhere }}")
    out = b.add("core/output", name="text")
    b.link(prompt, "value", tpl, "text")
    b.link(tpl, "text", out, "value")
    return b.build().to_dict()


def recorded_usage(server: Server, completion_id: str) -> dict[str, int]:
    """The sum of the LLM nodes' usage, as the run's own record has it."""
    with server.client() as c:
        run = c.get(f"/api/v1/runs/{completion_id.removeprefix('chatcmpl-')}").json()
    u1, u2 = run["outputs"]["u1"], run["outputs"]["u2"]
    return {k: u1[k] + u2[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def test_usage_is_the_llm_nodes_usage(server: Server) -> None:
    with server.client() as c:
        create_flow(c, two_llm_graph(), "Two LLMs")
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=server.token, max_retries=0)

    answer = client.chat.completions.create(
        model="Two LLMs", messages=[{"role": "user", "content": "Say hi."}]
    )
    assert answer.usage is not None
    expected = recorded_usage(server, answer.id)
    assert expected["completion_tokens"] > 0 and expected["prompt_tokens"] > 0
    assert answer.usage.model_dump(include=set(expected)) == expected

    chunks = list(
        client.chat.completions.create(
            model="Two LLMs",
            messages=[{"role": "user", "content": "Name a fruit."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump(include=set(expected)) == recorded_usage(server, last.id)


def test_errors_come_in_openai_shape(server: Server) -> None:
    with server.client() as c:
        create_flow(c, failing_graph(), "Broken")
        create_flow(c, greeting_graph(), "Not chat")
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=server.token, max_retries=0)
    user = [{"role": "user", "content": "x"}]

    def shape(exc: openai.APIStatusError, status: int, code: str | None = None) -> dict[str, Any]:
        assert exc.status_code == status
        body: Any = exc.body
        assert set(body) == {"message", "type", "param", "code"}, body
        assert code is None or body["code"] == code, body
        return dict(body)

    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no such flow", messages=user)
    assert shape(nf.value, 404, "model_not_found")["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:  # messages must be a list
        client.chat.completions.create(model="Broken", messages="hello")  # type: ignore[arg-type]
    assert shape(bad.value, 400)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as not_chat:
        client.chat.completions.create(model="Not chat", messages=user)
    shape(not_chat.value, 400, "model_not_chat")
    with pytest.raises(openai.UnprocessableEntityError) as query:
        client.chat.completions.create(model="Broken", messages=user, extra_query={"timeout": -1})
    assert shape(query.value, 422)["param"] == "timeout"
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="Broken", messages=user)
    assert "nowhere" in shape(failed.value, 500, "flow_failed")["message"]

    with server.client() as c:  # streamed: an error event, then [DONE]
        r = c.post(
            "/v1/chat/completions", json={"model": "Broken", "messages": user, "stream": True}
        )
    data = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data:")]
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert error["code"] == "flow_failed" and "nowhere" in error["message"], error
    with pytest.raises(openai.APIError, match="nowhere"):
        list(client.chat.completions.create(model="Broken", messages=user, stream=True))


def test_auth_refusals_come_in_openai_shape(server: Server) -> None:
    """A missing or wrong key on the facade is an ``AuthenticationError`` whose body is
    OpenAI's error object (the gate answered FastAPI's ``{"detail"}`` before)."""
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="fb_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    body: Any = caught.value.body
    assert set(body) == {"message", "type", "param", "code"}, body
    assert "Bearer" in body["message"]
    with server.client(anonymous=True) as anon:  # the API under /api keeps its own shape
        assert set(anon.get("/api/v1/flows").json()) == {"detail"}
