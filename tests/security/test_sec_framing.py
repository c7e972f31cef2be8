"""No page of the app shows inside another site's frame (clickjacking).

A page on another port of the same host is the same site, so the browser sends the
session cookie with its frames: framed, the Settings page would be the victim's, one
disguised click away from minting a key or revoking one. Every answer says
``X-Frame-Options: DENY`` and ``frame-ancestors 'none'``, and chromium shows nothing.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import Browser, Page
from test_api import Server, create_flow, greeting_graph, start_server
from test_canvas import browser  # noqa: F401 (a fixture)
from test_sec_auth_browser import _EvilSite  # serves the page it is given

TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("sec-framing"), FLOWBUILDER_TOKEN=TOKEN)
    yield server
    server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


def test_every_page_refuses_to_be_framed(srv: Server) -> None:
    with httpx.Client(base_url=srv.base, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        flow_id = create_flow(c, greeting_graph(), "Greeter (framing)", publish=False)
    with httpx.Client(base_url=srv.base, timeout=60) as browser_like:
        browser_like.get(f"/?token={TOKEN}")  # a session, as a browser has
        for path in ("/", "/settings", "/runs", "/knowledge", f"/flow/{flow_id}", "/docs"):
            r = browser_like.get(path)
            assert r.status_code == 200, path
            assert r.headers.get("x-frame-options") == "DENY", path
            assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), path
        login = httpx.get(f"{srv.base}/login")
        assert login.headers.get("x-frame-options") == "DENY"


@pytest.mark.browser
def test_a_same_site_page_cannot_frame_the_settings_page(srv: Server, page: Page) -> None:
    site = ThreadingHTTPServer(("127.0.0.1", 0), _EvilSite)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        _EvilSite.page = f"""<!doctype html><body>
<iframe id="app" src="{srv.base}/settings" width="1300" height="800"
        onload="document.title = 'loaded'"></iframe></body>""".encode()
        page.goto(f"{srv.base}/?token={TOKEN}")  # the victim's session
        assert page.url == f"{srv.base}/"
        page.goto(f"http://127.0.0.1:{site.server_address[1]}/")
        page.wait_for_function("() => document.title === 'loaded'", timeout=30000)
        page.wait_for_timeout(1500)  # time for the framed page to render, had it loaded
        framed = page.frame_locator("#app")
        create = framed.get_by_test_id("create-key")
        if create.count():  # rendered with the victim's session: the disguised click
            framed.get_by_test_id("key-name").fill("framed")
            create.click()
            page.wait_for_timeout(1500)
        listed = srv.cli("keys", "list", "--json")
        assert [k["name"] for k in json.loads(listed.stdout)] == []
        assert create.count() == 0
    finally:
        site.shutdown()
