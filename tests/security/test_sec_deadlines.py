"""Bounded waits: a hung provider fails in about the remote deadline, and ``?timeout``
answers 504 on every run path.

A real ``flowbuilder serve`` (``FLOWBUILDER_REMOTE_DEADLINE_S=3``) has endpoints at a
local TCP server that accepts connections and never answers. Without the deadline a
node waited four read timeouts of 120 s plus back-off (482 s) before failing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from servers import SilentServer
from test_api import Server, create_flow, iter_sse, start_server

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

DEADLINE_S = 3.0
SLOW_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}x"
"""A template that takes a second or more to render (a trivial flow: the fast path)."""


@pytest.fixture(scope="module")
def hung() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.fixture(scope="module")
def serve(
    hung: SilentServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, str]]]:
    srv = start_server(
        tmp_path_factory.mktemp("deadline-home"),
        FLOWBUILDER_REQUIRE_AUTH="1",
        FLOWBUILDER_REMOTE_DEADLINE_S=str(DEADLINE_S),
    )
    made = srv.cli("keys", "create", "--name", "t", "--json")
    assert made.returncode == 0, made.stderr
    for args in (("hung", f"{hung.url}/v1"), ("hunganth", hung.url, "--kind", "anthropic")):
        done = srv.cli("providers", "add-endpoint", *args)  # read timeout: 120 s
        assert done.returncode == 0, done.stderr
    yield srv, {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}
    srv.stop()


def llm_flow(c: httpx.Client, model: str, name: str) -> str:
    """prompt → LLM (``model``) → text: a chat-shaped flow."""
    b = GraphBuilder(default_registry(), name=name)
    prompt = b.add("core/input", name="prompt", type="text")
    llm = b.add("llm/chat", model=model, max_tokens=8)
    out = b.add("core/output", name="text")
    b.link(prompt, "value", llm, "prompt")
    b.link(llm, "text", out, "value")
    return create_flow(c, b.build().to_dict(), name)


def slow_trivial_flow(c: httpx.Client) -> str:
    b = GraphBuilder(default_registry(), name="Slow template")
    name = b.add("core/input", name="name", type="text")
    tpl = b.add("core/template", template=SLOW_TEMPLATE)
    out = b.add("core/output", name="text")
    b.link(name, "value", tpl, "text")
    b.link(tpl, "text", out, "value")
    return create_flow(c, b.build().to_dict(), "Slow template")


@pytest.mark.parametrize("model", ["hung:m", "hunganth:m"])
def test_hung_provider_fails_within_the_deadline(
    model: str, serve: tuple[Server, dict[str, str]], hung: SilentServer
) -> None:
    """Without the deadline: four read timeouts of 120 s plus back-off (482 s)."""
    srv, headers = serve
    with httpx.Client(base_url=srv.base, headers=headers, timeout=30) as c:
        flow_id = llm_flow(c, model, f"Hung {model}")
        t0 = time.monotonic()
        r = c.post(f"/api/v1/flows/{flow_id}/run", json={"prompt": "hello"})
        took = time.monotonic() - t0
    assert r.status_code == 500, r.text
    error = r.json()["detail"]["error"]
    endpoint = model.split(":")[0]
    assert f"'{endpoint}' ({hung.url}" in error, error
    assert f"within the remote deadline of {DEADLINE_S:g} s" in error, error
    assert "FLOWBUILDER_REMOTE_DEADLINE_S" in error
    assert DEADLINE_S - 0.5 <= took < DEADLINE_S + 3, took
    assert hung.accepted >= 1  # it did reach the provider, which said nothing


def _timed_out(detail: dict[str, Any], timeout: float) -> None:
    assert detail["run_id"]
    assert f"took longer than {timeout:g} s" in detail["error"], detail


def test_timeout_answers_504_on_every_path(serve: tuple[Server, dict[str, str]]) -> None:
    srv, headers = serve
    with httpx.Client(base_url=srv.base, headers=headers, timeout=15) as c:
        slow = llm_flow(c, "hung:m", "Slow chat")
        trivial = slow_trivial_flow(c)

        t0 = time.monotonic()  # the synchronous run
        r = c.post(f"/api/v1/flows/{slow}/run", params={"timeout": 1}, json={"prompt": "hi"})
        assert r.status_code == 504, r.text
        assert time.monotonic() - t0 < 2.5
        _timed_out(r.json()["detail"], 1)
        run = c.get(f"/api/v1/runs/{r.json()['detail']['run_id']}").json()
        assert run["status"] in ("running", "cancelled")  # cancelled: it ends at once

        # the fast path (a trivial flow run inside the request; it said 409)
        r = c.post(f"/api/v1/flows/{trivial}/run", params={"timeout": 0.3}, json={"name": "x"})
        assert r.status_code == 504, r.text
        _timed_out(r.json()["detail"], 0.3)
        assert c.get(f"/api/v1/runs/{r.json()['detail']['run_id']}").status_code == 200

        t0 = time.monotonic()  # streamed: an error event, then the end of the stream
        with c.stream(
            "POST",
            f"/api/v1/flows/{slow}/run",
            params={"timeout": 1, "stream": "true"},
            json={"prompt": "hi"},
        ) as resp:
            assert resp.status_code == 200
            events = list(iter_sse(resp))
        assert time.monotonic() - t0 < 2.5
        assert events[-1]["event"] == "error", events
        assert events[-1]["data"]["status"] == 504
        _timed_out(events[-1]["data"], 1)

    client = openai.OpenAI(
        base_url=f"{srv.base}/v1",
        api_key=headers["Authorization"].removeprefix("Bearer "),
        max_retries=0,
        timeout=15,
    )
    t0 = time.monotonic()  # the OpenAI facade: 504 in OpenAI's error shape
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="Slow chat",
            messages=[{"role": "user", "content": "hi"}],
            extra_query={"timeout": 1},
        )
    assert time.monotonic() - t0 < 2.5
    assert caught.value.status_code == 504
    body: Any = caught.value.body
    assert body["code"] == "timeout" and "took longer than 1 s" in body["message"], body
    assert set(body) == {"message", "type", "param", "code"}
