"""Auth on by default, against a real ``flowbuilder serve``: every page, route and
websocket needs a key, the server's token or a session (also on localhost); a session
ends when the key that made it is revoked; foreign ``Host`` headers (DNS rebinding),
cross-site posts (CSRF), off-site ``/login?next=`` and CORS are refused; ``--no-auth`` is
loopback only and keeps the Host, Origin and JSON-only rules; the OpenAPI document
answers to a Bearer key and declares its scheme.

Each server gets its own token through ``FLOWBUILDER_TOKEN``; requests are made with
plain ``httpx`` clients so that what each one sends is explicit.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from test_api import FLOWBUILDER, Server, create_flow, free_port, greeting_graph, start_server

TOKEN = secrets.token_urlsafe(24)
EVIL = "http://evil.example"
SOCKET = "/_nicegui_ws/socket.io/?EIO=4&transport=polling"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def plain(srv: Server, **kw: object) -> httpx.Client:
    """A client that sends only what each request names (no key, no cookie yet)."""
    return httpx.Client(base_url=srv.base, timeout=60, **kw)  # type: ignore[arg-type]


@contextmanager
def session(srv: Server, token: str = TOKEN) -> Iterator[httpx.Client]:
    """A client holding a browser session made by opening ``/?token=…``."""
    with plain(srv) as c:
        c.get(f"/?token={token}")
        yield c


def runs_of(srv: Server, flow_id: str, key: str = TOKEN) -> int:
    with plain(srv, headers=bearer(key)) as c:
        r = c.get("/api/v1/runs", params={"flow_id": flow_id})
        assert r.status_code == 200, r.text
        return len(r.json())


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A plain local ``flowbuilder serve`` (no auth setting at all) with a known token."""
    s = start_server(tmp_path_factory.mktemp("sec-auth"), FLOWBUILDER_TOKEN=TOKEN)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def flow_id(srv: Server) -> str:
    with plain(srv, headers=bearer(TOKEN)) as c:
        return create_flow(c, greeting_graph(), "Greeter (security)")


def test_local_server_refuses_requests_without_a_key(srv: Server) -> None:
    with plain(srv) as c:
        for path in ("/api/v1/flows", "/api/v1/nodes", "/api/v1/runs", "/v1/models"):
            r = c.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/openapi.json").status_code == 401
        assert c.get(SOCKET).status_code == 401  # the pages' websocket (polling transport)
        made = c.post("/api/v1/flows", json={"name": "x", "graph": greeting_graph()})
        assert made.status_code == 401
        for path in ("/", "/settings", "/runs", "/knowledge", "/docs", "/flow/abc"):
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"].startswith("/login?next="), r.headers["location"]
        assert c.get("/login").status_code == 200
        wrong = c.get("/api/v1/flows", headers=bearer("fb_" + "x" * 43))
        assert wrong.status_code == 401
        assert c.get("/?token=wrong", follow_redirects=False).status_code == 303


def test_a_refused_request_leaves_no_session_behind(srv: Server) -> None:
    """Old code: NiceGUI's request tracking ran before the gate and gave every request
    without a cookie a new session id (a Set-Cookie on the 401) and a user storage in
    the server's memory — about 1 kB per anonymous request, without bound."""
    for path in ("/api/v1/flows", "/settings", "/v1/models", "/flow/abc"):
        with plain(srv) as c:
            r = c.get(path, follow_redirects=False)
            assert r.status_code in (401, 303), (path, r.status_code)
            assert "set-cookie" not in r.headers, (path, r.headers["set-cookie"])


def test_the_token_works_as_bearer_and_as_a_tokenised_url(srv: Server) -> None:
    log = (srv.home / f"server-{srv.port}.log").read_text()
    assert f"http://127.0.0.1:{srv.port}/?token={TOKEN}" in log
    with plain(srv, headers=bearer(TOKEN)) as c:
        assert c.get("/api/v1/flows").status_code == 200
        assert c.get("/v1/models").status_code == 200
    with plain(srv) as c:
        r = c.get(f"/runs?token={TOKEN}", follow_redirects=False)
        assert r.status_code in (302, 303, 307) and r.headers["location"] == "/runs"
        assert r.cookies, "no session cookie was set"
        assert c.get("/runs").status_code == 200
        assert c.get("/api/v1/flows").status_code == 200  # the browser's own API calls
        assert c.get(SOCKET).status_code == 200
        other = c.get(f"/flow/caf%C3%A9?x=%C3%A9&token={TOKEN}", follow_redirects=False)
        assert other.headers["location"] == "/flow/caf%C3%A9?x=%C3%A9"
        raw = f"//evil.example/?token={TOKEN}".encode()  # a path that reads as another host
        off_site = c.get(httpx.URL(srv.base, raw_path=raw), follow_redirects=False)
        assert off_site.status_code == 303 and off_site.headers["location"] == "/"


def test_first_start_makes_a_private_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    s = start_server(home, FLOWBUILDER_TOKEN="")  # empty: no token given
    try:
        files = [p for p in home.iterdir() if p.name == "token"]
        assert files, sorted(p.name for p in home.iterdir())
        token = files[0].read_text().strip()
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert len(token) >= 32
        log = (home / f"server-{s.port}.log").read_text()
        assert f"/?token={token}" in log
        with plain(s, headers=bearer(token)) as c:
            assert c.get("/api/v1/flows").status_code == 200
    finally:
        s.stop()


def test_a_session_ends_when_its_key_is_revoked_or_the_token_changes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    s = start_server(home, FLOWBUILDER_TOKEN="first-token")
    try:
        made = json.loads(s.cli("keys", "create", "--name", "browser", "--json").stdout)
        with plain(s) as by_key, plain(s) as by_token:
            assert by_key.post("/login", json={"key": made["key"]}).status_code == 200
            assert by_token.post("/login", json={"key": "first-token"}).status_code == 200
            for c in (by_key, by_token):
                assert c.get("/api/v1/flows").status_code == 200
                assert c.get("/settings", follow_redirects=False).status_code == 200
            jar = dict(by_token.cookies)
            (signed,) = by_key.cookies.values()
            data = json.loads(base64.b64decode(signed.split(".")[0]))
            assert data["fb_auth"] == {"kind": "key", "id": made["id"]}  # names the key only
            assert made["key"] not in json.dumps(data)
            assert s.cli("keys", "revoke", made["id"]).returncode == 0
            assert by_key.get("/api/v1/flows").status_code == 401
            assert by_key.get("/settings", follow_redirects=False).status_code == 303
            assert by_key.get(SOCKET).status_code == 401
            assert by_token.get("/api/v1/flows").status_code == 200
        s.stop()
        s = start_server(home, port=s.port, FLOWBUILDER_TOKEN="second-token")
        with plain(s, cookies=jar) as c:  # the same browser, after the token changed
            assert c.get("/api/v1/flows").status_code == 401
            assert c.get("/settings", follow_redirects=False).status_code == 303
    finally:
        s.stop()


def test_a_foreign_host_is_refused_on_every_path(srv: Server, flow_id: str) -> None:
    before = runs_of(srv, flow_id)
    paths = ("/", "/login", "/settings", "/api/v1/flows", "/openapi.json", "/v1/models", SOCKET)
    with plain(srv) as c:
        for auth in ({}, bearer(TOKEN)):
            for host in ("evil.example", f"evil.example:{srv.port}", "127.0.0.1.evil.example"):
                for path in paths:
                    r = c.get(path, headers={"Host": host, **auth}, follow_redirects=False)
                    assert r.status_code == 400, (host, path, auth, r.status_code)
                    assert "host" in r.text.lower()
            ran = c.post(
                f"/api/v1/flows/{flow_id}/run",
                json={"name": "rebound"},
                headers={"Host": f"evil.example:{srv.port}", **auth},
            )
            assert ran.status_code == 400
        for host in (f"localhost:{srv.port}", f"[::1]:{srv.port}", "127.0.0.1", "LOCALHOST"):
            r = c.get("/api/v1/flows", headers={"Host": host, **bearer(TOKEN)})
            assert r.status_code == 200, (host, r.status_code)
    assert runs_of(srv, flow_id) == before


def test_cross_site_posts_with_the_session_cookie_do_not_run(srv: Server, flow_id: str) -> None:
    url = f"/api/v1/flows/{flow_id}/run"
    before = runs_of(srv, flow_id)
    body = json.dumps({"name": "csrf"})
    with session(srv) as c:
        assert c.get("/api/v1/flows").status_code == 200  # the victim's session works
        attacks = [
            {"content": body, "headers": {"Content-Type": "text/plain", "Origin": EVIL}},
            {"content": body, "headers": {"Content-Type": "text/plain"}},
            {"data": {"name": "csrf"}, "headers": {"Origin": EVIL}},
            {"data": {"name": "csrf"}},
            {"json": {"name": "csrf"}, "headers": {"Origin": EVIL}},
            {"json": {"name": "csrf"}, "headers": {"Origin": "null"}},
            {"json": {"name": "csrf"}, "headers": {"Origin": f"http://127.0.0.1:{srv.port + 1}"}},
            {"json": {"name": "csrf"}, "headers": {"Sec-Fetch-Site": "cross-site"}},
            {"json": {"name": "csrf"}, "headers": {"Sec-Fetch-Site": "same-site"}},
        ]
        for attack in attacks:
            r = c.post(url, **attack)  # type: ignore[arg-type]
            assert r.status_code in (403, 415), (attack, r.status_code, r.text)
        for target in (f"/api/v1/flows/{flow_id}/runs", "/api/v1/flows", "/v1/chat/completions"):
            r = c.post(target, content=body, headers={"Content-Type": "text/plain"})
            assert r.status_code == 415, (target, r.status_code)
        gone = c.delete(f"/api/v1/flows/{flow_id}", headers={"Origin": EVIL})
        assert gone.status_code == 403
        assert runs_of(srv, flow_id) == before

        same = {"Origin": srv.base, "Sec-Fetch-Site": "same-origin"}
        ok = c.post(url, json={"name": "same"}, headers=same)
        assert ok.status_code == 200, ok.text
    # A Bearer key is not sent by browsers on their own: no Origin rule for it.
    with plain(srv, headers=bearer(TOKEN)) as c:
        assert c.post(url, json={"name": "api"}, headers={"Origin": EVIL}).status_code == 200
        tp = c.post(url, content=body, headers={"Content-Type": "text/plain"})
        assert tp.status_code == 415  # still JSON only
    assert runs_of(srv, flow_id) == before + 2


def test_login_next_stays_on_site(srv: Server) -> None:
    bad = [
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "http:evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/\t/evil.example",
        " //evil.example",
        "javascript:alert(1)",
        "evil.example",
    ]
    with session(srv) as c:
        for target in bad:
            r = c.get("/login", params={"next": target}, follow_redirects=False)
            assert r.status_code in (302, 303, 307), (target, r.status_code)
            assert r.headers["location"] == "/", (target, r.headers["location"])
        r = c.get("/login", params={"next": "/flow/abc?x=1"}, follow_redirects=False)
        assert r.headers["location"] == "/flow/abc?x=1"
    with plain(srv) as c:
        for target in bad:
            r = c.post("/login", json={"key": TOKEN, "next": target})
            assert r.status_code == 200, (target, r.status_code, r.text)
            assert r.json()["next"] == "/", (target, r.json())
        assert c.post("/login", json={"key": "nope", "next": "/"}).status_code == 401


def test_openapi_and_docs_answer_to_a_bearer_key(srv: Server) -> None:
    made = srv.cli("keys", "create", "--name", "schema", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    for credential in (key, TOKEN):
        with plain(srv, headers=bearer(credential)) as c:
            r = c.get("/openapi.json", follow_redirects=False)
            assert r.status_code == 200, r.status_code
            docs = c.get("/docs", follow_redirects=False)
            assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    schema = r.json()
    schemes = schema["components"]["securitySchemes"]
    names = [n for n, s in schemes.items() if s["type"] == "http" and s["scheme"] == "bearer"]
    assert names, schemes
    for path, method in (("/api/v1/flows", "get"), ("/api/v1/runs", "get"), ("/v1/models", "get")):
        security = schema["paths"][path][method]["security"]
        assert {names[0]: []} in security, (path, security)


def test_no_cors_headers(srv: Server) -> None:
    with session(srv) as c:
        for path in ("/api/v1/flows", SOCKET):
            r = c.get(path, headers={"Origin": srv.base})
            assert "access-control-allow-origin" not in r.headers, (path, r.headers)
        r = c.get("/api/v1/flows", headers={"Origin": EVIL, **bearer(TOKEN)})
        assert "access-control-allow-origin" not in r.headers
        pre = c.options(
            "/api/v1/flows",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in pre.headers
        socket = c.get(SOCKET, headers={"Origin": EVIL})
        assert "access-control-allow-origin" not in socket.headers
        assert socket.status_code in (400, 403)


def test_websocket_needs_a_session_and_the_same_origin(srv: Server) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ws = f"ws://127.0.0.1:{srv.port}/_nicegui_ws/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(InvalidStatus), connect(ws, open_timeout=20):  # no session
        pass
    with session(srv) as c:
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
    with connect(ws, additional_headers={"Cookie": cookie}, open_timeout=20) as sock:
        assert sock.recv(timeout=20).startswith("0{")  # the engine.io open packet
    for headers in ({"Origin": EVIL}, {"Origin": f"http://127.0.0.1:{srv.port + 1}"}):
        with (
            pytest.raises(InvalidStatus),
            connect(ws, additional_headers={"Cookie": cookie, **headers}, open_timeout=20),
        ):
            pass
    evil = f"ws://127.0.0.1:{srv.port}/_nicegui_ws/socket.io/?EIO=4&transport=websocket"
    foreign = {"Cookie": cookie, "Host": "evil.example"}
    with pytest.raises(InvalidStatus), connect(evil, additional_headers=foreign, open_timeout=20):
        pass


def _refused(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [FLOWBUILDER, *args], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"flowbuilder {' '.join(args)} started instead of refusing")


def test_no_auth_is_loopback_only(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWBUILDER_HOME": str(tmp_path / "home")}
    env.pop("FLOWBUILDER_REQUIRE_AUTH", None)
    env.pop("FLOWBUILDER_NO_AUTH", None)
    port = str(free_port())
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps(greeting_graph()))
    for args, extra in (
        (("serve", "--no-auth", "--host", "0.0.0.0", "--port", port), {}),
        (("serve", "--host", "0.0.0.0", "--port", port), {"FLOWBUILDER_NO_AUTH": "1"}),
        (("serve-flow", str(graph), "--no-auth", "--host", "0.0.0.0", "--port", port), {}),
    ):
        done = _refused(*args, env={**env, **extra})
        assert done.returncode != 0
        said = done.stdout + done.stderr
        assert "--no-auth" in said and "loopback" in said, said
    done = _refused(
        "serve", "--no-auth", "--port", port, env={**env, "FLOWBUILDER_REQUIRE_AUTH": "1"}
    )
    assert done.returncode != 0
    assert "FLOWBUILDER_REQUIRE_AUTH" in done.stdout + done.stderr


def test_no_auth_still_checks_host_origin_and_json(tmp_path: Path) -> None:
    s = start_server(tmp_path / "home", FLOWBUILDER_NO_AUTH="1")
    try:
        with plain(s) as c:
            assert c.get("/api/v1/flows").status_code == 200  # no key needed
            assert c.get("/", follow_redirects=False).status_code == 200
            flow_id = create_flow(c, greeting_graph(), "Greeter (no auth)")
            url = f"/api/v1/flows/{flow_id}/run"
            body = json.dumps({"name": "csrf"})
            refused = [
                c.post(url, content=body, headers={"Content-Type": "text/plain"}),
                c.post(url, data={"name": "csrf"}),
                c.post(url, json={"name": "csrf"}, headers={"Origin": EVIL}),
                c.post(url, json={"name": "csrf"}, headers={"Sec-Fetch-Site": "cross-site"}),
                c.post(url, json={"name": "csrf"}, headers={"Host": "evil.example"}),
            ]
            assert [r.status_code for r in refused] == [415, 415, 403, 403, 400]
            assert c.get("/", headers={"Host": "evil.example"}).status_code == 400
            assert (
                "access-control-allow-origin"
                not in c.get("/api/v1/flows", headers={"Origin": EVIL}).headers
            )
            assert c.post(url, json={"name": "ok"}).status_code == 200
            assert len(c.get("/api/v1/runs", params={"flow_id": flow_id}).json()) == 1
    finally:
        s.stop()
