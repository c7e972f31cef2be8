"""The Settings page's Files section in a real browser: add a folder, a node reads from it
at once, remove it, the node is refused again; the data directory cannot be added."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect
from test_api import Server, create_flow, start_server
from test_canvas import browser  # noqa: F401 (a fixture)

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    srv = start_server(tmp_path_factory.mktemp("roots-ui") / "home", FLOWBUILDER_REQUIRE_AUTH="1")
    made = srv.cli("keys", "create", "--name", "t", "--json")
    assert made.returncode == 0, made.stderr
    yield srv, json.loads(made.stdout)["key"]
    srv.stop()


def read_file(srv: Server, key: str, path: Path) -> httpx.Response:
    b = GraphBuilder(default_registry(), name="read")
    load = b.add("core/load_file", path=str(path))
    out = b.add("core/output", name="out")
    b.link(load, "text", out, "value")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=srv.base, headers=auth, timeout=60) as c:
        flow_id = create_flow(c, b.build().to_dict(), f"read {path.name}")
        return c.post(f"/api/v1/flows/{flow_id}/run", json={})


def test_folders_added_on_the_settings_page(
    server: tuple[Server, str],
    browser: Browser,  # noqa: F811 (the fixture imported from test_canvas)
    tmp_path: Path,
) -> None:
    srv, key = server
    folder = tmp_path / "shared-notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("water the plants")
    assert read_file(srv, key, folder / "todo.txt").status_code == 500  # not a root yet

    page = browser.new_page()
    page.goto(f"{srv.base}/login?next=/settings")
    page.get_by_test_id("login-key").fill(key)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url("**/settings")
    roots = page.get_by_test_id("file-root")
    expect(roots.first).to_contain_text(str(srv.home / "files"))
    expect(roots.first).to_contain_text("workspace")

    page.get_by_test_id("root-folder").fill(str(folder))
    page.get_by_test_id("root-add").click()
    expect(roots.filter(has_text=str(folder))).to_contain_text("added")
    listed = json.loads(srv.cli("roots", "list", "--json").stdout)
    assert {"path": str(folder.resolve()), "source": "added"} in listed
    r = read_file(srv, key, folder / "todo.txt")
    assert r.status_code == 200 and r.json()["outputs"]["out"] == "water the plants"

    page.get_by_test_id("root-folder").fill(str(srv.home))
    page.get_by_test_id("root-add").click()
    expect(page.get_by_text("inside the data directory").first).to_be_visible()

    roots.filter(has_text=str(folder)).get_by_role("button").click()
    expect(roots.filter(has_text=str(folder))).to_have_count(0)
    r = read_file(srv, key, folder / "todo.txt")
    assert r.status_code == 500 and "outside every folder" in r.json()["detail"]["error"]
    page.close()
