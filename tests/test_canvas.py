"""The canvas in a real browser: Debian's chromium driven by Playwright, real mouse actions.

One server process (``flowbuilder serve``) and one browser serve the whole module; each
test makes its own flow. Screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO
from playwright.sync_api import Browser, Page, expect, sync_playwright
from test_api import launch, server_env
from test_image import tiny_sd  # noqa: F401 (the tiny diffusers pipeline fixture)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
FLOWBUILDER = str(Path(sys.executable).parent / "flowbuilder")
TOKEN = secrets.token_urlsafe(24)  # every server of these tests takes it (FLOWBUILDER_TOKEN)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(home: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """Run ``flowbuilder serve`` on a free port with ``home`` as its data directory,
    :data:`TOKEN` as its token and ``env`` added to the environment; yield (base URL,
    home); stop it after. Pages need the browser signed in first (the ``page`` fixture
    opens ``/?token=…``); API calls send :data:`AUTH`."""
    port = free_port()
    full_env = server_env(home, {"FLOWBUILDER_TOKEN": TOKEN, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    proc = launch(["serve", "--port", str(port)], full_env, home / "server.log", f"{base}/login")
    yield base, home
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running ``flowbuilder serve`` with an empty data directory: (base URL, home)."""
    yield from serve(tmp_path_factory.mktemp("server-home"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, server: tuple[str, Path], tmp_path: Path) -> Iterator[Page]:
    """A fresh browser context signed in to the module's ``server`` (its tokenised URL)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.goto(f"{server[0]}/?token={TOKEN}")
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    pg.screenshot(path=str(tmp_path / "last.png"))
    context.close()
    assert not errors, errors


def new_flow(page: Page, base: str, name: str) -> str:
    page.goto(base + "/")
    page.get_by_test_id("new-flow").click()
    page.get_by_test_id("new-flow-name").fill(name)
    page.get_by_test_id("create-flow").click()
    page.wait_for_url("**/flow/*")
    wait_canvas(page)
    return page.url.rsplit("/", 1)[1]


def wait_canvas(page: Page) -> None:
    page.wait_for_function("() => window.fbCanvas && window.fbCanvas.lgraph")
    page.wait_for_timeout(600)  # first poll: the canvas takes its saved state


def canvas_call(page: Page, method: str, *args: Any) -> Any:
    return page.evaluate(f"(args) => window.fbCanvas.{method}(...args)", list(args))


def nodes(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = canvas_call(page, "nodeIds")
    return result


def drag_from_palette(page: Page, type_id: str, x: float, y: float) -> int:
    """Drag a palette item onto the canvas at screen (x, y); returns the new node's id."""
    before = {n["id"] for n in nodes(page)}
    page.get_by_test_id(f"palette-{type_id}").drag_to(
        page.locator("canvas").first, target_position={"x": x - 260, "y": y - 56}
    )
    page.wait_for_timeout(200)
    added = [n["id"] for n in nodes(page) if n["id"] not in before]
    assert len(added) == 1, (type_id, added)
    return int(added[0])


def drag_link(page: Page, src: int, out_slot: int, dst: int, in_slot: int) -> None:
    """Drag with the mouse from an output slot to an input slot."""
    x0, y0 = canvas_call(page, "slotScreenPos", src, False, out_slot)
    x1, y1 = canvas_call(page, "slotScreenPos", dst, True, in_slot)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * i / 10, y0 + (y1 - y0) * i / 10)
    page.mouse.up()
    page.wait_for_timeout(150)


def links(page: Page) -> list[list[Any]]:
    result: list[list[Any]] = page.evaluate(
        "() => window.fbCanvas.serialize().links.map(l => Array.isArray(l) ? l : "
        "[l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type])"
    )
    return result


def edit_param(page: Page, node_id: int, name: str, text: str) -> None:
    """Click a parameter's widget, type into its editor, press OK (as a user does)."""
    x, y = canvas_call(page, "widgetScreenPos", node_id, name)
    page.mouse.click(x, y)
    editor = page.get_by_test_id("param-editor")
    editor.fill(text)
    page.get_by_test_id("param-ok").click()
    page.wait_for_function(
        "([id, name, text]) => window.fbCanvas.lgraph.getNodeById(id).properties[name] === text",
        arg=[node_id, name, text],
    )
    page.wait_for_timeout(150)


def wait_saved(page: Page) -> None:
    """Wait until the canvas holds no unsaved edit and the page says it saved (the label
    alone may still show an earlier save)."""
    page.wait_for_function("() => !window.fbCanvas.hasUnsavedChanges()", timeout=10000)
    expect(page.get_by_test_id("save-state")).to_contain_text("Saved", timeout=10000)


def node_state(page: Page, node_id: int) -> dict[str, Any]:
    for n in nodes(page):
        if int(n["id"]) == node_id:
            return n["state"] or {}
    raise AssertionError(f"no node {node_id}")


def test_build_text_llm_output_by_mouse_and_run(
    page: Page, server: tuple[str, Path], tmp_path: Path
) -> None:
    base, home = server
    flow_id = new_flow(page, base, "Ask the LLM")
    text = drag_from_palette(page, "core/text", 420, 300)
    llm = drag_from_palette(page, "llm/chat", 760, 300)
    out = drag_from_palette(page, "core/output", 1120, 300)
    drag_link(page, text, 0, llm, 0)  # text -> prompt
    drag_link(page, llm, 0, out, 0)  # text -> value
    assert len(links(page)) == 2
    edit_param(page, text, "text", "Say hello in three words.")
    wait_saved(page)
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("run-status")).to_contain_text("finished", timeout=60000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / "canvas-finished.png"))
    state = node_state(page, out)
    assert state["status"] == "done"
    answer = state["outputs"]["value"]
    assert isinstance(answer, str) and answer.strip()
    assert node_state(page, llm)["status"] == "done"

    # What the canvas saved runs unchanged from the command line.
    graph_file = tmp_path / "saved.json"
    from flowbuilder.store import Store

    store = Store(f"sqlite:///{home / 'flowbuilder.db'}", migrate=False)
    graph_file.write_text(json.dumps(store.get_flow(flow_id).graph))
    store.close()
    proc = subprocess.run(
        [FLOWBUILDER, "run", str(graph_file), "--json", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FLOWBUILDER_HOME": str(tmp_path / "cli")},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"]["output"] == answer


def test_incompatible_link_is_refused_with_reason(page: Page, server: tuple[str, Path]) -> None:
    base, _ = server
    new_flow(page, base, "Refusals")
    inp = drag_from_palette(page, "core/input", 420, 300)
    canvas_call(page, "setProperty", inp, "type", "audio")
    tpl = drag_from_palette(page, "core/template", 800, 300)
    drag_link(page, inp, 0, tpl, 0)  # audio -> text
    expect(page.get_by_text("Link refused")).to_be_visible()
    expect(page.get_by_text("type 'audio' cannot feed an input of type 'text'")).to_be_visible()
    assert links(page) == []
    canvas_call(page, "setProperty", inp, "type", "text")
    drag_link(page, inp, 0, tpl, 0)
    assert len(links(page)) == 1


def test_save_reload_keeps_graph(page: Page, server: tuple[str, Path]) -> None:
    base, _ = server
    new_flow(page, base, "Persistence")
    a = drag_from_palette(page, "core/text", 420, 300)
    b = drag_from_palette(page, "core/template", 800, 300)
    drag_link(page, a, 0, b, 0)
    edit_param(page, a, "text", "kept across reloads")
    wait_saved(page)
    before = page.evaluate("() => window.fbCanvas.serialize()")
    page.reload()
    wait_canvas(page)
    after = page.evaluate("() => window.fbCanvas.serialize()")
    by_id = {n["id"]: n for n in after["nodes"]}
    assert {n["id"]: n["type"] for n in before["nodes"]} == {i: n["type"] for i, n in by_id.items()}
    assert after["links"] == before["links"]
    assert by_id[a]["properties"]["text"] == "kept across reloads"
    assert by_id[b]["properties"] == {"template": "{{ text }}"}


def test_validation_problems_show_on_nodes(page: Page, server: tuple[str, Path]) -> None:
    base, _ = server
    new_flow(page, base, "Broken")
    drag_from_palette(page, "llm/chat", 500, 300)
    out = drag_from_palette(page, "core/output", 900, 300)
    wait_saved(page)
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("run-status")).to_contain_text("1 problem")
    issues = node_state(page, out)["issues"]
    assert any("required input 'value'" in i for i in issues)


def test_voice_memo_runs_on_uploaded_audio(
    page: Page, server: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = server
    page.goto(base + "/")
    page.get_by_role("link", name="Voice memo").click()
    wait_canvas(page)
    page.get_by_test_id("run").click()
    page.get_by_test_id("input-audio").locator("input[type=file]").set_input_files(
        str(FIXTURES / "audio" / "jfk.flac")
    )
    page.wait_for_timeout(1500)
    page.get_by_test_id("inputs-ok").click()
    page.wait_for_timeout(700)
    page.screenshot(path=str(tmp_path / "voice-memo-running.png"))
    expect(page.get_by_test_id("run-status")).to_contain_text("finished", timeout=120000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / "voice-memo-finished.png"))
    transcript = node_state(page, 5)["outputs"]["value"]
    assert "ask not what your country can do for you" in transcript
    assert node_state(page, 6)["outputs"]["value"].strip()
    # Re-running re-uses the cache: every node shows as cached.
    page.get_by_test_id("run").click()
    page.wait_for_function(
        "() => window.fbCanvas.nodeIds().every(n => n.state?.status === 'cached')", timeout=60000
    )
    expect(page.get_by_test_id("run-status")).to_contain_text("finished")


def test_cancel_long_run(page: Page, server: tuple[str, Path]) -> None:
    base, _ = server
    new_flow(page, base, "Long run")
    text = drag_from_palette(page, "core/text", 420, 300)
    llm = drag_from_palette(page, "llm/chat", 760, 300)
    drag_link(page, text, 0, llm, 0)
    edit_param(page, text, "text", "Write a very long story about a lighthouse keeper.")
    canvas_call(page, "setProperty", llm, "max_tokens", 1900)
    canvas_call(page, "setProperty", llm, "temperature", 0.9)
    wait_saved(page)
    page.get_by_test_id("run").click()
    page.wait_for_function(
        f"() => window.fbCanvas.nodeIds().find(n => n.id == {llm})?.state?.status === 'running'"
    )
    page.wait_for_timeout(800)
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("run-status")).to_contain_text("cancelled", timeout=15000)


def test_drop_audio_file_adds_load_node(page: Page, server: tuple[str, Path]) -> None:
    base, home = server
    new_flow(page, base, "Dropped")
    data = (REPO / "examples" / "jfk.ogg").read_bytes()
    transfer = page.evaluate_handle(
        """(bytes) => { const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], 'memo.ogg', {type: 'audio/ogg'}));
            return dt; }""",
        list(data),
    )
    page.locator("canvas").first.dispatch_event("drop", {"dataTransfer": transfer})
    page.wait_for_function("() => window.fbCanvas.nodeIds().length === 1")
    node = page.evaluate("() => window.fbCanvas.serialize().nodes[0]")
    assert node["type"] == "core/load_file"
    assert node["properties"]["kind"] == "audio"
    assert node["properties"]["path"] == "uploads/memo.ogg"  # in the workspace, by name
    assert (home / "files" / "uploads" / "memo.ogg").read_bytes() == data


def test_import_export_round_trip(page: Page, server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    source = json.loads((REPO / "examples" / "voice_memo.json").read_text())
    source["extra"]["flowbuilder"]["name"] = "Imported memo"
    path = tmp_path / "imported.json"
    path.write_text(json.dumps(source))
    page.goto(base + "/")
    page.get_by_test_id("import-flow").locator("input[type=file]").set_input_files(str(path))
    page.wait_for_url("**/flow/*")
    wait_canvas(page)
    with page.expect_download() as info:
        page.get_by_test_id("export").click()
    exported = json.loads(Path(info.value.path()).read_text())
    assert [n["type"] for n in exported["nodes"]] == [n["type"] for n in source["nodes"]]
    assert [n["properties"] for n in exported["nodes"]] == [
        {**n["properties"]} for n in source["nodes"]
    ]
    proc = subprocess.run(
        [FLOWBUILDER, "validate", str(info.value.path())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_runs_page_lists_runs(page: Page, server: tuple[str, Path]) -> None:
    base, _ = server
    page.goto(base + "/runs")
    table = page.get_by_test_id("runs-table")
    expect(table).to_be_visible()
    table.locator("tbody tr").first.click()
    page.wait_for_url("**/runs/*")
    expect(page.get_by_test_id("node-runs")).to_be_visible()


def test_llm_node_picks_local_and_provider_models(page: Page, server: tuple[str, Path]) -> None:
    base, _ = server
    new_flow(page, base, "Model picker")
    llm = drag_from_palette(page, "llm/chat", 600, 300)
    x, y = canvas_call(page, "widgetScreenPos", llm, "model")
    page.mouse.click(x, y)
    page.get_by_test_id("param-select").click()
    menu = page.locator(".q-menu")
    expect(menu.get_by_text("smollm2 (gguf", exact=False)).to_be_visible()
    expect(menu.get_by_text("· anthropic", exact=False).first).to_be_visible()
    menu.get_by_text("· openai", exact=False).first.click()
    page.get_by_test_id("param-ok").click()
    page.wait_for_timeout(200)
    model = page.evaluate(
        f"() => window.fbCanvas.serialize().nodes.find(n => n.id == {llm}).properties.model"
    )
    assert model.startswith("openai:")


def test_settings_page_stores_secret_names_only(page: Page, server: tuple[str, Path]) -> None:
    base, home = server
    page.goto(base + "/settings")
    page.get_by_test_id("secret-name").fill("DEMO_KEY")
    page.get_by_test_id("secret-value").fill("sk-test-value-never-shown-123")
    page.get_by_test_id("secret-scope").fill("vllm, openai")
    page.get_by_test_id("secret-save").click()
    expect(page.get_by_test_id("secret-DEMO_KEY")).to_be_visible()
    expect(page.get_by_test_id("scope-DEMO_KEY")).to_have_text("may be sent to openai, vllm")
    assert "sk-test-value-never-shown-123" not in page.content()
    assert b"sk-test-value-never-shown-123" not in (home / "secrets.enc").read_bytes()
    page.get_by_test_id("scope-input-DEMO_KEY").fill("")
    page.get_by_test_id("scope-save-DEMO_KEY").click()
    expect(page.get_by_test_id("scope-DEMO_KEY")).to_contain_text("no scope")
    page.get_by_test_id("scope-input-DEMO_KEY").fill("ollama")
    page.get_by_test_id("scope-save-DEMO_KEY").click()
    expect(page.get_by_test_id("scope-DEMO_KEY")).to_have_text("may be sent to ollama")
    from flowbuilder.secrets import SecretStore

    assert SecretStore(home).scope("DEMO_KEY") == ("ollama",)
    expect(page.get_by_test_id("providers-table")).to_contain_text("ollama")
    expect(page.get_by_test_id("models-table")).to_contain_text("local:smollm2")


def _open_stored_flow(page: Page, base: str, home: Path, name: str, graph: Any) -> str:
    """Put a flow into the server's store (as the API would) and open it."""
    from flowbuilder.store import Store

    store = Store(f"sqlite:///{home / 'flowbuilder.db'}", migrate=False)
    flow_id = store.create_flow(name, graph.to_dict()).id
    store.close()
    page.goto(f"{base}/flow/{flow_id}")
    wait_canvas(page)
    return flow_id


def test_generated_image_shows_as_thumbnail_and_enlarges(
    page: Page,
    server: tuple[str, Path],
    tiny_sd: Path,  # noqa: F811 (a fixture imported from test_image)
    tmp_path: Path,
) -> None:
    """A local diffusers model folder generates an image through the node; the canvas
    shows it as a thumbnail on the node, and a click opens it large."""
    from flowbuilder.builder import GraphBuilder
    from flowbuilder.registry import default_registry

    base, home = server
    shutil.copytree(tiny_sd, home / "files" / "tiny-sd", dirs_exist_ok=True)  # in the workspace
    b = GraphBuilder(default_registry())
    text = b.add("core/text", text="a red fox in the snow")
    gen = b.add("image/generate", model="local:tiny-sd", steps=2, seed=1)
    b.link(text, "text", gen, "prompt")
    _open_stored_flow(page, base, home, "Thumbnail", b.build())
    page.get_by_test_id("run").click()
    expect(page.get_by_test_id("run-status")).to_contain_text("finished", timeout=120000)
    page.wait_for_function(
        f"""() => {{ const s = window.fbCanvas.nodeIds().find(n => n.id == {gen}).state;
            const ref = s && s.outputs && s.outputs.image;
            const img = ref && window.fbCanvas.images[ref.id];
            return img && img.complete && img.naturalWidth === 64; }}"""
    )
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / "thumbnail.png"))
    x, y, _, h = canvas_call(page, "nodeScreenRect", gen)
    page.mouse.click(x + 40, y + h - 50)  # on the thumbnail
    expect(page.get_by_test_id("image-large")).to_be_visible()


def test_audio_preview_plays(page: Page, server: tuple[str, Path]) -> None:
    """The audio player on a node plays the artifact the server serves."""
    base, _ = server
    page.goto(base + "/")
    page.get_by_role("link", name="Voice memo").first.click()
    wait_canvas(page)
    page.get_by_test_id("run").click()
    page.get_by_test_id("input-audio").locator("input[type=file]").set_input_files(
        str(REPO / "examples" / "jfk.ogg")
    )
    page.wait_for_timeout(1500)
    page.get_by_test_id("inputs-ok").click()
    expect(page.get_by_test_id("run-status")).to_contain_text("finished", timeout=120000)
    x, y, w, h = canvas_call(page, "nodeScreenRect", 1)
    page.mouse.click(x + w / 2, y + h - 14)  # the play button under the Input node
    page.wait_for_function(
        "() => window.fbCanvas.audio && !window.fbCanvas.audio.paused "
        "&& window.fbCanvas.audio.currentTime > 0.2",
        timeout=15000,
    )
