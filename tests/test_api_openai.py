"""The OpenAI-compatible facade with the official ``openai`` SDK (``base_url`` at the
server), streaming and not."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from test_api import Server, chat_graph, create_flow, greeting_graph, start_server


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
