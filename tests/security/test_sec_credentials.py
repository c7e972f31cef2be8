"""Scoped credentials, against a real ``flowbuilder serve`` and a real capture server.

The capture server is the OpenAI-wire server of ``tests/servers.py``: it records every
request with its ``Authorization`` header. It is added to the server with ``flowbuilder
providers add-endpoint capture URL`` (no key of its own), as any user who can bind a
local port could ask an admin to do, or could find already configured.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import LocalServer
from test_api import Server, create_flow, start_server

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

pytest_plugins = ["servers"]

AWS_VALUE = "aws-test-secret-9f3c1e7a5b"
STORED_VALUE = "sk-stored-test-2d8e4b6a0c"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("creds-home"),
        FLOWBUILDER_REQUIRE_AUTH="1",
        AWS_SECRET_ACCESS_KEY=AWS_VALUE,
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auth(server: Server) -> dict[str, str]:
    made = server.cli("keys", "create", "--name", "t", "--json")
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}


@pytest.fixture
def capture(server: Server, openai_server: LocalServer) -> Iterator[LocalServer]:
    """The capture server as endpoint ``capture`` of the running server."""
    added = server.cli("providers", "add-endpoint", "capture", f"{openai_server.url}/v1")
    assert added.returncode == 0, added.stderr
    yield openai_server
    server.cli("providers", "remove", "capture")


def chat_flow(credential: str, model: str = "capture:smollm2") -> dict[str, Any]:
    b = GraphBuilder(default_registry(), name=f"Chat with {credential}")
    text = b.add("core/text", text="Say hi.")
    llm = b.add(
        "llm/chat", model=model, credential=credential, max_tokens=4, temperature=0.0, seed=0
    )
    out = b.add("core/output", name="text")
    b.link(text, "text", llm, "prompt")
    b.link(llm, "text", out, "value")
    return b.build().to_dict()


def run(server: Server, auth: dict[str, str], credential: str) -> httpx.Response:
    with server.client(headers=auth) as c:
        flow_id = create_flow(c, chat_flow(credential), f"chat {credential}")
        return c.post(f"/api/v1/flows/{flow_id}/run", json={})


def events_text(server: Server, auth: dict[str, str], run_id: str) -> str:
    with server.client(headers=auth) as c:
        record = c.get(f"/api/v1/runs/{run_id}").json()
        with c.stream("GET", f"/api/v1/runs/{run_id}/events") as r:
            events = "".join(r.iter_text())
    return json.dumps(record) + events


def assert_refused(response: httpx.Response, secret: str, capture: LocalServer) -> str:
    """The run failed before any request, naming the secret and the endpoint."""
    assert capture.state.seen == [], (
        f"the capture server received {[s.auth for s in capture.state.seen]}"
    )
    assert response.status_code == 500, response.text
    error: str = response.json()["detail"]["error"]
    assert f"'{secret}'" in error and "'capture'" in error, error
    return error


@pytest.mark.parametrize("variable", ["PATH", "AWS_SECRET_ACCESS_KEY"])
def test_credential_naming_an_environment_variable_sends_nothing(
    server: Server, auth: dict[str, str], capture: LocalServer, variable: str
) -> None:
    """Old code: the variable's value went out as ``Authorization: Bearer <value>``."""
    response = run(server, auth, variable)
    error = assert_refused(response, variable, capture)
    assert "not a stored secret" in error, error
    values = (AWS_VALUE, server.env["PATH"])
    text = response.text + events_text(server, auth, response.json()["detail"]["run_id"])
    log = "".join(p.read_text() for p in server.home.glob("server-*.log"))
    for value in values:
        assert value not in text and value not in log


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "MY_KEY"])
def test_stored_secret_goes_only_where_it_is_scoped(
    server: Server, auth: dict[str, str], capture: LocalServer, name: str
) -> None:
    """Old code: any stored secret went to any endpoint a node named."""
    stored = server.cli("secrets", "set", name, "--value", STORED_VALUE)
    assert stored.returncode == 0, stored.stderr
    try:
        # unscoped (as every secret stored before scopes existed): not to 'capture'
        assert_refused(run(server, auth, name), name, capture)
        # scoped to another endpoint: not to 'capture' either
        assert server.cli("secrets", "scope", name, "--for", "openai").returncode == 0
        error = assert_refused(run(server, auth, name), name, capture)
        assert "openai" in error and STORED_VALUE not in error, error
        # scoped to 'capture' as well: sent there
        scoped = server.cli("secrets", "scope", name, "--for", "openai,capture")
        assert scoped.returncode == 0, scoped.stderr
        ok = run(server, auth, name)
        assert ok.status_code == 200, ok.text
        sent = capture.state.requests("/v1/chat/completions")
        assert [s.auth for s in sent] == [f"Bearer {STORED_VALUE}"]
        listed = json.loads(server.cli("secrets", "list", "--json").stdout)
        assert {"name": name, "source": "store", "scope": ["capture", "openai"]} in listed
    finally:
        server.cli("secrets", "delete", name)


def test_endpoint_key_binding_still_works(
    server: Server, auth: dict[str, str], openai_server: LocalServer, tmp_path: Path
) -> None:
    """An endpoint configured with ``--api-key-secret`` gets that secret (an admin-made
    binding), whether the node names it or leaves the credential empty."""
    added = server.cli(
        "providers",
        "add-endpoint",
        "bound",
        f"{openai_server.url}/v1",
        "--api-key-secret",
        "BOUND_KEY",
    )
    assert added.returncode == 0, added.stderr
    assert server.cli("secrets", "set", "BOUND_KEY", "--value", STORED_VALUE).returncode == 0
    try:
        with server.client(headers=auth) as c:
            for credential in ("", "BOUND_KEY"):
                flow_id = create_flow(
                    c, chat_flow(credential, "bound:smollm2"), f"bound {credential}"
                )
                r = c.post(f"/api/v1/flows/{flow_id}/run", json={})
                assert r.status_code == 200, r.text
        sent = openai_server.state.requests("/v1/chat/completions")
        assert [s.auth for s in sent] == [f"Bearer {STORED_VALUE}"] * 2
    finally:
        server.cli("secrets", "delete", "BOUND_KEY")
        server.cli("providers", "remove", "bound")


# ---- file modes -------------------------------------------------------------------------

PRIVATE_FILES = (
    "flowbuilder.db",
    "flowbuilder.db-wal",
    "flowbuilder.db-shm",
    "secret.key",
    "secrets.enc",
    "storage_secret",
    "providers.json",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(home: Path) -> None:
    """Checked while the server runs (SQLite's -wal and -shm exist only then)."""
    assert mode(home) == 0o700, oct(mode(home))
    for name in PRIVATE_FILES:
        assert mode(home / name) == 0o600, (name, oct(mode(home / name)))
    loose = {p.name: oct(mode(p)) for p in home.iterdir() if p.is_file() and mode(p) & 0o077}
    assert loose == {}, f"readable by others: {loose}"


def test_data_directory_is_private_also_when_it_was_not(tmp_path: Path) -> None:
    """Old code: the database and providers.json were 0644 in a 0755 data directory."""
    home = tmp_path / "home"

    def use(srv: Server) -> None:
        for args in (
            ("keys", "create", "--name", "a", "--json"),
            ("secrets", "set", "A_KEY", "--value", "value-a-1234", "--for", "vllm"),
            ("providers", "add-endpoint", "vllm", "http://127.0.0.1:8000/v1"),
        ):
            done = srv.cli(*args)
            assert done.returncode == 0, done.stderr

    srv = start_server(home, FLOWBUILDER_REQUIRE_AUTH="1")
    try:
        use(srv)
        assert_private(home)  # a new data directory
    finally:
        srv.stop()
    # a data directory from before, or after a careless chmod: everything readable by all
    for path in home.iterdir():
        if path.is_file():
            path.chmod(0o644)
    home.chmod(0o755)
    srv = start_server(home, FLOWBUILDER_REQUIRE_AUTH="1")
    try:
        use(srv)
        assert_private(home)  # fixed at start
    finally:
        srv.stop()
