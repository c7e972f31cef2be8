"""Auth in a real browser (Debian's chromium via Playwright) against ``flowbuilder serve``:
a session made with a key ends when the key is revoked — at the next HTTP request and at
the next websocket event, so the Settings page can no longer mint a key — and a page on
another port of the same host (same site, so the session cookie goes along) cannot make
the victim's browser run a flow.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import Browser, Page
from test_api import Server, create_flow, greeting_graph, start_server
from test_canvas import browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.browser
TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    context = browser.new_context()
    yield context.new_page()
    context.close()


def keys(srv: Server) -> list[dict[str, object]]:
    listed = srv.cli("keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, object]] = json.loads(listed.stdout)
    return rows


def test_a_revoked_key_ends_its_session_and_mints_nothing(
    tmp_path_factory: pytest.TempPathFactory, page: Page
) -> None:
    srv = start_server(tmp_path_factory.mktemp("sec-revoke"), FLOWBUILDER_REQUIRE_AUTH="1")
    try:
        made = json.loads(srv.cli("keys", "create", "--name", "laptop", "--json").stdout)
        page.goto(f"{srv.base}/login?next=/\\evil.example")
        page.get_by_test_id("login-key").fill(made["key"])
        page.get_by_test_id("login-submit").click()
        page.wait_for_url(f"{srv.base}/")  # the login's next stayed on this site
        page.goto(f"{srv.base}/settings")
        page.get_by_test_id("key-name").wait_for()
        assert page.evaluate("async () => (await fetch('/api/v1/flows')).status") == 200

        page.get_by_test_id("key-name").fill("minted")
        page.wait_for_timeout(3500)  # the page acknowledges what it got (every 3 s), then idles

        assert srv.cli("keys", "revoke", made["id"]).returncode == 0
        # The next websocket event of the open page: create a key from Settings.
        page.get_by_test_id("create-key").click()
        page.wait_for_url("**/login**", timeout=20000)
        page.wait_for_timeout(500)
        assert [k["name"] for k in keys(srv)] == ["laptop"], keys(srv)
        # The next HTTP requests of the session.
        assert page.evaluate("async () => (await fetch('/api/v1/flows')).status") == 401
        page.goto(f"{srv.base}/settings")
        assert "/login" in page.url
    finally:
        srv.stop()


class _EvilSite(BaseHTTPRequestHandler):
    """Serves one page that makes the visitor's browser post to the victim's server."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: object) -> None:
        pass


def evil_page(target: str) -> bytes:
    name = '{"name": "csrf", "x": "'
    return f"""<!doctype html><body>
<iframe name="sink"></iframe>
<form id="plain" method="POST" action="{target}" enctype="text/plain" target="sink">
  <input name='{name}' value='"}}'></form>
<form id="form" method="POST" action="{target}" target="sink">
  <input name="name" value="csrf"></form>
<script>
  document.getElementById("plain").submit();
  setTimeout(() => document.getElementById("form").submit(), 300);
  fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
         body: JSON.stringify({{name: "csrf"}})}});
  fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
         headers: {{"Content-Type": "application/x-www-form-urlencoded"}}, body: "name=csrf"}});
  setTimeout(() => {{ document.title = "done"; }}, 1500);
</script></body>""".encode()


def test_a_same_site_page_cannot_run_a_flow_with_the_victims_session(
    tmp_path_factory: pytest.TempPathFactory, page: Page
) -> None:
    srv = start_server(tmp_path_factory.mktemp("sec-csrf"), FLOWBUILDER_TOKEN=TOKEN)
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _EvilSite)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=srv.base, headers=auth, timeout=60) as c:
            flow_id = create_flow(c, greeting_graph(), "Greeter (CSRF)")
        _EvilSite.page = evil_page(f"{srv.base}/api/v1/flows/{flow_id}/run")
        page.goto(f"{srv.base}/?token={TOKEN}")  # the victim's session
        assert page.url == f"{srv.base}/"
        page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        page.wait_for_function("() => document.title === 'done'", timeout=20000)
        page.wait_for_timeout(500)
        with httpx.Client(base_url=srv.base, headers=auth, timeout=60) as c:
            runs = c.get("/api/v1/runs", params={"flow_id": flow_id}).json()
        assert runs == [], [r.get("inputs") for r in runs]
        # The same session, same origin, still works.
        page.goto(f"{srv.base}/")
        status = page.evaluate(
            """async (url) => (await fetch(url, {method: "POST",
                 headers: {"Content-Type": "application/json"},
                 body: JSON.stringify({name: "me"})})).status""",
            f"/api/v1/flows/{flow_id}/run",
        )
        assert status == 200
    finally:
        evil.shutdown()
        srv.stop()
