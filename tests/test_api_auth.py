"""API keys: 401 without a valid key, 403 when revoked, 200 with one; the canvas behind a
login; ``flowbuilder keys create|list|revoke``. (The attacks on auth are in
``tests/security/``.)"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from test_api import Server, chat_graph, create_flow, greeting_graph, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("auth-home"), FLOWBUILDER_REQUIRE_AUTH="1")
    yield srv
    srv.stop()


def test_keys_required(server: Server) -> None:
    made = server.cli("keys", "create", "--name", "ci", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    key_id = json.loads(made.stdout)["id"]
    listed = json.loads(server.cli("keys", "list", "--json").stdout)
    assert [k["id"] for k in listed] == [key_id]
    assert key not in server.cli("keys", "list").stdout  # only the prefix is shown

    with server.client(anonymous=True) as anon:
        assert anon.get("/api/v1/flows").status_code == 401
        assert anon.get("/v1/models").status_code == 401
        wrong = anon.get("/api/v1/flows", headers={"Authorization": "Bearer fb_wrong"})
        assert wrong.status_code == 401
        page = anon.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert anon.get("/login").status_code == 200

    auth = {"Authorization": f"Bearer {key}"}
    with server.client(headers=auth) as c:
        assert c.get("/api/v1/flows").status_code == 200
        flow_id = create_flow(c, greeting_graph(), "Greeter")
        r = c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "Ada"})
        assert r.status_code == 200 and r.json()["outputs"]["greeting"] == "Hello Ada!"
        create_flow(c, chat_graph(max_tokens=4), "Tiny chat")
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0)
    assert "Tiny chat" in [m.id for m in client.models.list()]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.base}/v1", api_key="fb_x", max_retries=0).models.list()

    assert server.cli("keys", "revoke", key_id).returncode == 0
    with server.client(headers=auth) as c:
        revoked = c.get("/api/v1/flows")
        assert revoked.status_code == 403 and "revoked" in revoked.json()["detail"]
    assert server.cli("keys", "revoke", "nope").returncode == 1
    log = "".join(p.read_text() for p in server.home.glob("server-*.log"))
    assert key not in log
