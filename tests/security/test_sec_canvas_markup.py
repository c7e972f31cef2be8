"""Markup in a graph file stays text in the canvas's menus, panels and dialogs.

LiteGraph builds its context menus, its node panel and its dialogs with ``innerHTML``,
from strings a graph file carries: a node's ``type`` (an unknown one too: it is shown as
a red placeholder), the names of its ``properties``, its slots' types. A shared graph —
imported, created over the API, or opened as a file — whose strings hold markup would
run script in the victim's session the moment they right-click the node. In chromium,
against a real ``flowbuilder serve``: the menus open, and nothing runs.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page
from test_api import Server, create_flow, start_server
from test_canvas import browser, canvas_call, wait_canvas  # noqa: F401 (a fixture)

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

pytestmark = pytest.mark.browser
TOKEN = secrets.token_urlsafe(24)


def markup(where: str) -> str:
    return f"<img src=x onerror=\"window.pwned = '{where}'\">"


TEXT, OUTPUT, UNKNOWN = 1, 2, 9


def hostile_graph() -> dict[str, Any]:
    """Text → Output, with a hostile property name on the Text node and a hostile type
    on the Output node's input slot; and a node of a hostile unknown type."""
    b = GraphBuilder(default_registry(), name="shared")
    text = b.add("core/text", node_id=TEXT, text="hello")
    out = b.add("core/output", node_id=OUTPUT, name="o")
    b.link(text, "text", out, "value")
    graph = b.build().to_dict()
    first, second = graph["nodes"]
    first["properties"][markup("property name")] = 1
    second["inputs"][0]["type"] = markup("slot type")
    graph["nodes"].append(
        {"id": UNKNOWN, "type": markup("node type"), "pos": [300, 400], "size": [240, 80]}
    )
    return graph


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("sec-canvas"), FLOWBUILDER_TOKEN=TOKEN)
    yield server
    server.stop()


@pytest.fixture
def page(srv: Server, browser: Browser) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    with httpx.Client(base_url=srv.base, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        flow_id = create_flow(c, hostile_graph(), f"shared {secrets.token_hex(3)}", publish=False)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.goto(f"{srv.base}/?token={TOKEN}")
    pg.goto(f"{srv.base}/flow/{flow_id}")
    wait_canvas(pg)
    yield pg
    context.close()


def right_click(page: Page, x: float, y: float) -> None:
    """Right-click at screen (x, y), where a context menu opens."""
    page.mouse.click(10, 880)  # close any menu first
    page.wait_for_timeout(200)
    page.mouse.click(x, y, button="right")
    page.locator(".litecontextmenu").first.wait_for()


def on_title(page: Page, node_id: int) -> tuple[float, float]:
    x, y, w, _ = canvas_call(page, "nodeScreenRect", node_id)
    return x + w / 2, y - 15


def pwned(page: Page) -> Any:
    page.wait_for_timeout(500)  # an image error fires at once; give it a moment
    return page.evaluate("() => window.pwned")


def test_a_property_name_is_text_in_the_properties_menu(page: Page) -> None:
    right_click(page, *on_title(page, TEXT))
    page.locator(".litemenu-entry", has_text="Properties").first.click()
    page.wait_for_timeout(300)
    assert page.locator(".litecontextmenu").count() >= 2  # the properties submenu is open
    assert pwned(page) is None
    page.locator(".litecontextmenu").last.locator(".litemenu-entry").last.click()
    page.locator(".graphdialog").first.wait_for()  # editing the hostile property
    assert pwned(page) is None


def test_an_unknown_node_type_is_text_in_its_menu_and_panel(page: Page) -> None:
    right_click(page, *on_title(page, UNKNOWN))  # its type heads the menu
    assert pwned(page) is None
    page.locator(".litemenu-entry", has_text="Properties Panel").first.click()
    page.locator(".litegraph.dialog .node_type").first.wait_for(state="attached")  # the panel
    assert pwned(page) is None


def test_a_slot_type_is_text_in_the_slot_menu(page: Page) -> None:
    right_click(page, *canvas_call(page, "slotScreenPos", OUTPUT, True, 0))
    assert pwned(page) is None
