"""The API documentation pages run no script a graph file brings.

``flowbuilder serve-flow`` titles its ``/docs`` page with the flow's name, which comes
from the graph file — a file someone may have shared. The name is text: a name holding
markup appears escaped, in chromium no script of it runs on the server's origin (where
the browser's session is: the printed URL is ``/docs?token=…``). ReDoc, which renders a
description's Markdown with raw HTML by default, is served by neither server.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser
from test_api import free_port, launch, start_server
from test_canvas import browser  # noqa: F401 (a fixture)

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

TOKEN = secrets.token_urlsafe(24)
NAME = 'Greeter</title><script>window.pwned = "docs"</script><title>'


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve-flow`` of a graph whose name carries a script; its base URL."""
    tmp = tmp_path_factory.mktemp("sec-docs")
    b = GraphBuilder(default_registry(), name=NAME)
    name = b.add("core/input", name="name", type="text")
    out = b.add("core/output", name="greeting")
    b.link(name, "value", out, "value")
    graph = tmp / "shared.json"
    graph.write_text(json.dumps(b.build().to_dict()))
    port = free_port()
    env = {**os.environ, "FLOWBUILDER_HOME": str(tmp / "home"), "FLOWBUILDER_TOKEN": TOKEN}
    for var in ("FLOWBUILDER_REQUIRE_AUTH", "FLOWBUILDER_NO_AUTH", "FLOWBUILDER_DATABASE_URL"):
        env.pop(var, None)
    base = f"http://127.0.0.1:{port}"
    proc = launch(["serve-flow", str(graph), "--port", str(port)], env, tmp / "log", base)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_the_flow_name_is_text_on_the_docs_page(docs_server: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=docs_server, headers=auth, timeout=60) as c:
        assert c.get("/redoc").status_code == 404
        page = c.get("/docs")
        assert page.status_code == 200
        assert "<script>window.pwned" not in page.text
        assert "Greeter&lt;/title&gt;&lt;script&gt;" in page.text
        assert c.get("/openapi.json").json()["info"]["title"].startswith(NAME)  # data, as is


@pytest.mark.browser
def test_no_script_of_the_flow_name_runs_in_the_browser(
    docs_server: str,
    browser: Browser,  # noqa: F811 (the imported fixture)
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        # Swagger UI itself comes from a CDN, out of reach here: the page's own HTML is
        # what is checked.
        page.route("https://**/*", lambda route: route.abort())
        page.goto(f"{docs_server}/docs?token={TOKEN}", wait_until="domcontentloaded")
        assert page.url == f"{docs_server}/docs"  # signed in, the token dropped
        assert page.evaluate("() => window.pwned") is None
        assert NAME.split("<")[0] in page.title()
    finally:
        context.close()


def test_the_main_server_serves_docs_but_not_redoc(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Old code: ``/redoc`` rendered published flows' descriptions (from graph files) as
    HTML on the app's origin."""
    srv = start_server(tmp_path_factory.mktemp("docs-home"))
    try:
        with srv.client() as c:
            assert c.get("/redoc").status_code == 404
            docs = c.get("/docs")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
            assert c.get("/openapi.json").json()["info"]["title"] == "flowbuilder"
    finally:
        srv.stop()
