"""The editor's API dialog and the settings' API keys, in a real browser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright
from test_api import Server, create_flow, greeting_graph, start_server
from test_canvas import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("ui-home"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_api_dialog_and_keys(server: Server, browser: Browser) -> None:
    with server.client() as c:
        flow_id = create_flow(c, greeting_graph(), "Greeter UI", publish=False)
        c.post(f"/api/v1/flows/{flow_id}/publish")
        run_id = c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "Ada"}).json()["run_id"]
    page = browser.new_page()
    page.goto(server.login_url)  # the tokenised URL signs the browser in
    page.goto(f"{server.base}/flow/{flow_id}")
    page.get_by_test_id("flow-api").click()
    expect(page.get_by_test_id("endpoint-url")).to_contain_text(f"/api/v1/flows/{flow_id}/run")
    curl = page.get_by_test_id("curl")
    expect(curl).to_contain_text('"name": "hello"')
    expect(curl).to_contain_text('"count": 1')
    expect(page.get_by_text(run_id[:8])).to_be_visible()
    page.get_by_test_id("publish-switch").click()  # unpublish
    page.wait_for_timeout(500)
    with server.client() as c:
        assert c.post(f"/api/v1/flows/{flow_id}/run", json={"name": "A"}).status_code == 404

    page.goto(f"{server.base}/settings")
    page.get_by_test_id("key-name").fill("laptop")
    page.get_by_test_id("create-key").click()
    expect(page.get_by_text("fb_", exact=False).first).to_be_visible()
    assert server.cli("keys", "list", "--json").stdout.count('"laptop"') == 1
    page.close()
