"""The canvas side of post-training, in a real browser (Debian's chromium via Playwright).

- A node whose progress events carry ``metrics`` with a ``loss`` gets a live loss curve,
  kept after the run, cleared by the next run, redrawn from its ``loss_curve`` output
  when it is served from the cache.
- A Markdown table output renders as a grid on the node and opens full size; an image
  output (a chart) shows as a thumbnail.
- A model saved into ``FLOWBUILDER_HOME/models`` during a run shows up in the LLM node's
  model picker without reloading the page.

The first test uses a small node pack installed for the test server only (a real
``flowbuilder.nodes`` entry point in a ``.dist-info`` on the server's ``PYTHONPATH``): its
node reports a loss each step as a trainer does, saves a real model (the bundled
SmolLM2 GGUF, linked into the model store) and outputs a table and a chart. The second
runs the real fine-tune (``training/sft``) for three steps when that node is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FIXTURES, REPO
from playwright.sync_api import Page, expect
from test_canvas import (  # noqa: F401 (browser and page are fixtures)
    AUTH,
    browser,
    canvas_call,
    node_state,
    page,
    serve,
    wait_canvas,
)

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import Registry, default_registry

pytestmark = pytest.mark.browser

PACK = '''
"""Canvas test pack: a stand-in trainer with a loss curve, a table, a chart and a model."""

import asyncio
import io
import math
import os

from PIL import Image, ImageDraw
from pydantic import BaseModel

from flowbuilder.bundled import BUNDLED
from flowbuilder.node import Node, NodeMeta, Param
from flowbuilder.types import ImageRef


class Trainer(Node):
    """Reports {step, loss, eta_s, epoch} each step like a fine-tune; saves a model."""

    meta = NodeMeta(type="canvas_test/trainer", version="1.0.0", category="Test")

    class Inputs(BaseModel):
        steps: int = Param(6, description="steps")
        delay: float = Param(0.3, description="seconds per step")
        name: str = Param("curve-model", description="model name")

    class Outputs(BaseModel):
        model: str
        loss_curve: list[dict[str, float]]
        table: str
        chart: ImageRef

    async def run(self, ctx, inputs):
        curve = []
        for i in range(1, inputs.steps + 1):
            await asyncio.sleep(inputs.delay)
            loss = 0.5 + 2.0 * math.exp(-i / 3)
            curve.append({"step": i, "loss": loss})
            ctx.progress(
                i / inputs.steps,
                f"step {i}/{inputs.steps}",
                metrics={"step": i, "loss": loss, "eta_s": (inputs.steps - i) * inputs.delay,
                         "epoch": i / inputs.steps},
            )
        models = ctx.settings.home / "models"
        models.mkdir(parents=True, exist_ok=True)
        target = models / f"{inputs.name}.gguf"
        if not target.exists():
            os.symlink(BUNDLED["smollm2"].path(), target)
        table = (
            "Before and after\\n\\n"
            "| model | size MB | perplexity | tokens/s |\\n"
            "|---|---:|---:|---:|\\n"
            f"| local:smollm2 | 98.2 | 16.89 | 101.4 |\\n"
            f"| local:{inputs.name} | 98.2 | {curve[-1]['loss'] * 10:.2f} | 99.8 |\\n"
            "\\nperplexity change: +0.4%"
        )
        image = Image.new("RGB", (240, 120), "white")
        draw = ImageDraw.Draw(image)
        draw.rectangle((20, 30, 100, 110), fill="steelblue")
        draw.rectangle((140, 50, 220, 110), fill="orange")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        chart = ctx.artifacts.put_bytes(buf.getvalue(), name="chart.png", kind="image")
        return self.Outputs(model=f"local:{inputs.name}", loss_curve=curve, table=table,
                            chart=chart)


def register(registry):
    registry.register(Trainer)
'''


def install_pack(root: Path) -> Path:
    """Write the test pack as an installed distribution under ``root`` (for PYTHONPATH)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "canvas_test_pack.py").write_text(textwrap.dedent(PACK))
    info = root / "canvas_test_pack-0.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: canvas-test-pack\nVersion: 0.0.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[flowbuilder.nodes]\ncanvas_test = canvas_test_pack:register\n"
    )
    return root


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the test pack is installed in."""
    return install_pack(tmp_path_factory.mktemp("pack"))


@pytest.fixture(scope="module")
def registry(pack: Path) -> Registry:
    """The installed node packs plus the test pack, for building graphs in the test."""
    spec = importlib.util.spec_from_file_location("canvas_test_pack", pack / "canvas_test_pack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reg = default_registry()
    module.register(reg)
    return reg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pack: Path) -> Iterator[tuple[str, Path]]:
    """``flowbuilder serve`` on an empty data directory, with the test pack installed."""
    home = tmp_path_factory.mktemp("training-home")
    # The bundled SmolLM2 unpacked to fp32 (~30 s to build) is shared with the other
    # training tests through pytest's cache folder, under the same key.
    shared_hf = REPO / ".pytest_cache" / "flowbuilder-train" / "hf"
    shared_hf.mkdir(parents=True, exist_ok=True)
    (home / "cache").mkdir()
    (home / "cache" / "hf").symlink_to(shared_hf, target_is_directory=True)
    pythonpath = os.pathsep.join(filter(None, [str(pack), os.environ.get("PYTHONPATH")]))
    yield from serve(home, {"FLOWBUILDER_FILE_ROOTS": str(FIXTURES), "PYTHONPATH": pythonpath})


def node_types(base: str) -> set[str]:
    nodes = httpx.get(f"{base}/api/v1/nodes", headers=AUTH, timeout=10).json()
    items = nodes["nodes"] if isinstance(nodes, dict) else nodes
    return {n["type"] for n in items}


def open_graph(pg: Page, base: str, home: Path, name: str, graph: dict[str, Any]) -> str:
    """Store a flow in the server's store (as the API would) and open it on the canvas."""
    from flowbuilder.store import Store

    store = Store(f"sqlite:///{home / 'flowbuilder.db'}", migrate=False)
    flow_id = store.create_flow(name, graph).id
    store.close()
    pg.goto(f"{base}/flow/{flow_id}")
    wait_canvas(pg)
    return flow_id


def set_and_save(pg: Page, node_id: int, name: str, value: Any) -> None:
    """Set a node's parameter as its widget does, and wait for the autosave."""
    canvas_call(pg, "setProperty", node_id, name, value)
    pg.wait_for_function("() => !window.fbCanvas.hasUnsavedChanges()", timeout=10000)


def flow_runs(home: Path, flow_id: str) -> list[tuple[str, str]]:
    """(run id, status) of the flow's runs in the server's store, newest first."""
    from flowbuilder.store import Store

    store = Store(f"sqlite:///{home / 'flowbuilder.db'}", migrate=False)
    try:
        return [(r.id, r.status) for r in store.list_runs(flow_id)]
    finally:
        store.close()


def run_and_wait(pg: Page, home: Path, flow_id: str, timeout_s: float = 60) -> str:
    """Press Run, wait for that run (not an earlier one) to end; its status."""
    before = {run_id for run_id, _ in flow_runs(home, flow_id)}
    pg.get_by_test_id("run").click()
    return wait_run_end(pg, home, flow_id, before, timeout_s)


def wait_run_end(pg: Page, home: Path, flow_id: str, before: set[str], timeout_s: float) -> str:
    """Wait for the flow's first run not in ``before`` to end; its status."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [st for run_id, st in flow_runs(home, flow_id) if run_id not in before]
        if new and new[0] not in ("queued", "running"):
            pg.wait_for_timeout(500)  # the canvas's last batch of states, and full outputs
            return new[0]
        pg.wait_for_timeout(250)
    raise AssertionError(f"the run did not end within {timeout_s} s")


def curve_drawn(pg: Page, node_id: int) -> list[dict[str, float]]:
    """The points the canvas draws as the node's loss curve."""
    points: list[dict[str, float]] = pg.evaluate(
        "(id) => window.fbCanvas.curvePoints(window.fbCanvas.lgraph.getNodeById(id))", node_id
    )
    return points


def block_kinds(pg: Page, node_id: int) -> list[str]:
    kinds: list[str] = pg.evaluate(
        "(id) => window.fbCanvas.layout(window.fbCanvas.lgraph.getNodeById(id)).map(b => b.kind)",
        node_id,
    )
    return kinds


def pick_models(pg: Page, node_id: int) -> list[str]:
    """Open the node's model picker as a user does; the options it lists."""
    pg.wait_for_timeout(300)  # a frame, so a node just added has its widgets laid out
    x, y = canvas_call(pg, "widgetScreenPos", node_id, "model")
    pg.mouse.click(x, y)
    select = pg.get_by_test_id("param-select")
    select.click()
    menu = pg.locator(".q-menu")
    expect(menu.locator(".q-item").first).to_be_visible()
    options = [t.strip() for t in menu.locator(".q-item").all_inner_texts()]
    for _ in range(3):  # the first Escape closes the menu, the next the dialog
        if not select.is_visible():
            break
        pg.keyboard.press("Escape")
        pg.wait_for_timeout(200)
    expect(select).to_be_hidden()
    return options


def test_loss_curve_table_chart_and_new_model_in_picker(
    page: Page,  # noqa: F811 (the fixture imported from test_canvas)
    server: tuple[str, Path],
    registry: Registry,
    tmp_path: Path,
) -> None:
    base, home = server
    assert "canvas_test/trainer" in node_types(base), "the test pack did not load"
    b = GraphBuilder(registry)
    trainer = b.add("canvas_test/trainer", steps=8, delay=0.4, name="curve-model")
    text = b.add("core/text", text="Say hi.")
    llm = b.add("llm/chat", max_tokens=4)
    b.link(text, "text", llm, "prompt")
    graph = b.build().to_dict()
    flow_id = open_graph(page, base, home, "Loss curve", graph)

    # Before the run, the trained model is not in the picker.
    assert not any("curve-model" in o for o in pick_models(page, llm))

    page.get_by_test_id("run").click()
    # Live: the curve grows while the node runs, with the eta in its caption.
    page.wait_for_function(
        f"""() => {{ const n = window.fbCanvas.lgraph.getNodeById({trainer});
            return n.fbState?.status === 'running' && (n.fbState.curve || []).length >= 3; }}""",
        timeout=30000,
    )
    live = node_state(page, trainer)
    assert live["metrics"]["eta_s"] > 0
    assert "curve" in block_kinds(page, trainer)
    page.screenshot(path=str(tmp_path / "loss-curve-running.png"))
    expect(page.get_by_test_id("run-status")).to_contain_text("finished", timeout=60000)
    page.wait_for_timeout(400)
    page.screenshot(path=str(tmp_path / "loss-curve-finished.png"))

    state = node_state(page, trainer)
    assert state["status"] == "done"
    live_steps = [p["step"] for p in state["curve"]]
    assert live_steps == list(range(1, 9)), live_steps
    assert [p["loss"] for p in state["curve"]] == [
        p["loss"] for p in state["outputs"]["loss_curve"]
    ]
    assert all(p["loss"] > 0 for p in curve_drawn(page, trainer))
    # The table is a grid on the node, the chart a thumbnail; neither is shown as raw text.
    kinds = block_kinds(page, trainer)
    assert kinds.count("table") == 1 and kinds.count("image") == 1, kinds
    lines = page.evaluate(
        f"() => window.fbCanvas.previewLines(window.fbCanvas.lgraph.getNodeById({trainer}))"
    )
    assert not any("|---" in line or "loss_curve" in line for line in lines), lines
    table = page.evaluate(
        f"() => window.fbCanvas.previewTables(window.fbCanvas.lgraph.getNodeById({trainer}))[0]"
    )
    assert table["table"]["header"] == ["model", "size MB", "perplexity", "tokens/s"]
    assert [r[0] for r in table["table"]["rows"]] == ["local:smollm2", "local:curve-model"]
    assert table["table"]["align"][1:] == ["right", "right", "right"]
    assert table["table"]["before"] == ["Before and after"]
    assert table["table"]["after"] == ["perplexity change: +0.4%"]

    # The model the run saved is in the picker now, without reloading the page.
    assert any("curve-model" in o for o in pick_models(page, llm))

    # Clicking the table opens it full size as an HTML table; the chart enlarges too.
    click_block(page, trainer, "table")
    large = page.get_by_test_id("markdown-large")
    expect(large.locator("table")).to_be_visible()
    expect(large.locator("tbody tr")).to_have_count(2)
    expect(large.locator("td").first).to_have_text("local:smollm2")
    page.wait_for_timeout(400)  # the dialog's fade-in
    page.screenshot(path=str(tmp_path / "table-large.png"))
    page.get_by_text("Close").last.click()
    page.wait_for_timeout(400)
    click_block(page, trainer, "image")
    expect(page.get_by_test_id("image-large")).to_be_visible()
    page.get_by_text("Close").last.click()
    page.wait_for_timeout(400)

    # A new run starts a new curve: 4 steps now, not 8 + 4.
    set_and_save(page, trainer, "steps", 4)
    assert run_and_wait(page, home, flow_id) == "finished"
    state = node_state(page, trainer)
    assert state["status"] == "done"
    assert [p["step"] for p in state["curve"]] == [1, 2, 3, 4]
    assert [p["step"] for p in curve_drawn(page, trainer)] == [1, 2, 3, 4]

    # Served from the cache, the node has no live curve: it is drawn from `loss_curve`.
    set_and_save(page, trainer, "steps", 8)
    assert run_and_wait(page, home, flow_id) == "finished"
    state = node_state(page, trainer)
    assert state["status"] == "cached" and not state["curve"]
    assert [p["step"] for p in curve_drawn(page, trainer)] == list(range(1, 9))
    assert "curve" in block_kinds(page, trainer)
    page.screenshot(path=str(tmp_path / "loss-curve-cached.png"))


def add_node_in_view(pg: Page, type_id: str) -> int:
    """Add a node below all the others (clear of their previews) and scroll to it."""
    node_id: int = pg.evaluate(
        """(type) => { const c = window.fbCanvas;
            const bottom = Math.max(0, ...c.lgraph._nodes.map(n => n.pos[1] + n.size[1]));
            const id = c.addNode(type, [40, bottom + 80], {});
            c.lcanvas.ds.offset = [0, 140 - (bottom + 80)];
            c.lcanvas.setDirty(true, true);
            return id; }""",
        type_id,
    )
    pg.wait_for_timeout(300)
    return node_id


def click_block(pg: Page, node_id: int, kind: str) -> None:
    """Scroll the node into view and click the middle of a preview block on it (a table,
    an image)."""
    pg.evaluate(
        """(id) => { const c = window.fbCanvas, n = c.lgraph.getNodeById(id);
            c.lcanvas.ds.offset = [40 - n.pos[0], 60 - n.pos[1]];
            c.lcanvas.setDirty(true, true); }""",
        node_id,
    )
    pg.wait_for_timeout(300)
    x, y = pg.evaluate(
        """([id, kind]) => { const c = window.fbCanvas, n = c.lgraph.getNodeById(id);
            const b = c.layout(n).find(b => b.kind === kind);
            const p = c.lcanvas.ds.convertOffsetToCanvas([n.pos[0] + 60, n.pos[1] + b.y + b.h / 2]);
            const r = c.$refs.canvas.getBoundingClientRect();
            return [r.left + p[0], r.top + p[1]]; }""",
        [node_id, kind],
    )
    pg.mouse.click(x, y)


EXAMPLE = REPO / "examples" / "finetune_smollm.json"

# Fewer steps, rows and tokens than the example ships with, set as a user would.
SHORTER = {
    "training/load_dataset": {"limit": 40},
    "training/sft": {"max_steps": 3, "batch_size": 2, "max_length": 128},
    "training/evaluate": {"max_rows": 3, "decode_tokens": 8},
    "llm/chat": {"max_tokens": 12},
}


@pytest.mark.slow
def test_fine_tune_example_live_loss_comparison_and_picker(
    page: Page,  # noqa: F811 (the fixture imported from test_canvas)
    server: tuple[str, Path],
    registry: Registry,
    tmp_path: Path,
) -> None:
    """The fine-tune example (seed tasks → split → SFT → evaluate before/after → compare
    → chat), opened from the flow library and run from the canvas with 3 training steps:
    the real trainer's loss curve is drawn live, the comparison table and chart show on
    the Compare node, and the tuned model is offered in a new LLM node's picker.
    Without the example file, a Load Dataset → SFT → LLM flow stands in for it."""
    base, home = server
    if "training/sft" not in node_types(base):
        pytest.skip("the training/sft node is not installed")
    if EXAMPLE.is_file():
        name = json.loads(EXAMPLE.read_text())["extra"]["flowbuilder"]["name"]
        page.goto(base + "/")
        page.get_by_role("link", name=name).first.click()
        wait_canvas(page)
        flow_id = page.url.rsplit("/", 1)[1]
    else:
        flow_id = open_graph(page, base, home, "Fine-tune", tiny_finetune_flow(registry))
    by_type: dict[str, list[int]] = {}
    for n in page.evaluate("() => window.fbCanvas.serialize().nodes"):
        by_type.setdefault(n["type"], []).append(int(n["id"]))
    for type_id, params in SHORTER.items():
        for node_id in by_type.get(type_id, []):
            for param, value in params.items():
                canvas_call(page, "setProperty", node_id, param, value)
    page.wait_for_function("() => !window.fbCanvas.hasUnsavedChanges()", timeout=10000)
    sft = by_type["training/sft"][0]
    picker = add_node_in_view(page, "llm/chat")
    assert not any("-sft-" in o or "canvas-sft" in o for o in pick_models(page, picker))
    page.evaluate(
        "(id) => window.fbCanvas.lgraph.remove(window.fbCanvas.lgraph.getNodeById(id))", picker
    )
    page.wait_for_function("() => !window.fbCanvas.hasUnsavedChanges()", timeout=10000)
    page.evaluate("() => { const c = window.fbCanvas; c.lcanvas.ds.offset = [0, 0]; c.resize(); }")

    started = time.monotonic()
    page.get_by_test_id("run").click()
    page.wait_for_function(
        f"""() => {{ const n = window.fbCanvas.lgraph.getNodeById({sft});
            return n.fbState?.status === 'running' && (n.fbState.curve || []).length >= 2; }}""",
        timeout=600000,  # ~40 s on an idle 2-core machine; far more when it is shared
    )
    page.screenshot(path=str(tmp_path / "sft-running.png"))
    assert wait_run_end(page, home, flow_id, set(), 900) == "finished"
    elapsed = time.monotonic() - started
    page.screenshot(path=str(tmp_path / "sft-finished.png"))
    state = node_state(page, sft)
    assert state["status"] == "done", state.get("error")
    assert [p["step"] for p in state["curve"]] == [1, 2, 3]
    assert all(p["loss"] > 0 and p["eta_s"] >= 0 for p in state["curve"])
    assert state["curve"][-1]["loss"] == pytest.approx(state["outputs"]["train_loss"])
    assert [p["step"] for p in curve_drawn(page, sft)] == [1, 2, 3]
    assert "curve" in block_kinds(page, sft)
    for chat in by_type["llm/chat"]:
        assert node_state(page, chat)["status"] == "done"

    for compare in by_type.get("training/compare", []):
        assert block_kinds(page, compare).count("table") == 1
        assert block_kinds(page, compare).count("image") == 1
        table = page.evaluate(
            f"() => window.fbCanvas.previewTables(window.fbCanvas.lgraph.getNodeById({compare}))[0]"
        )
        assert {"model", "perplexity"} <= set(table["table"]["header"])
        assert len(table["table"]["rows"]) == len(by_type["training/evaluate"])
        click_block(page, compare, "table")
        large = page.get_by_test_id("markdown-large")
        expect(large.locator("tbody tr")).to_have_count(len(by_type["training/evaluate"]))
        page.wait_for_timeout(400)
        page.screenshot(path=str(tmp_path / "comparison-large.png"))
        page.keyboard.press("Escape")
        expect(large).to_be_hidden()

    # A new LLM node's picker offers the model the run saved, without a page reload.
    model = state["outputs"]["model"].removeprefix("local:")
    picker = add_node_in_view(page, "llm/chat")
    assert any(o.startswith(f"{model} (") for o in pick_models(page, picker)), model
    print(f"fine-tune example on the canvas: {elapsed:.0f} s")


def tiny_finetune_flow(registry: Registry) -> dict[str, Any]:
    """Load Dataset → Fine-tune (SFT) → LLM chatting with the tuned model."""
    b = GraphBuilder(registry)
    data = b.add("training/load_dataset", path=str(FIXTURES / "sft" / "seed_tasks.jsonl"), limit=12)
    sft = b.add("training/sft", name="canvas-sft")
    b.link(data, "dataset", sft, "dataset")
    text = b.add("core/text", text="Give me a synonym for happy.")
    chat = b.add("llm/chat")
    b.link(text, "text", chat, "prompt")
    b.link(sft, "model", chat, "model")
    graph = b.build().to_dict()
    by_id = {n["id"]: n for n in graph["nodes"]}
    by_id[text]["pos"] = [640.0, 560.0]  # the builder lays nodes out in one long row
    by_id[chat]["pos"] = [940.0, 80.0]
    return graph
