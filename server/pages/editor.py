"""The flow editor: palette, canvas, autosave, run with live per-node state and previews."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from typing import Any

from nicegui import background_tasks, events, ui

from flowbuilder import events as ev
from flowbuilder.errors import GraphFileError, GraphInvalid, InputError
from flowbuilder.files import FileAccess
from flowbuilder.graph import graph_from_data
from flowbuilder.limits import LimitExceeded, Limits, check_graph
from flowbuilder.providers.catalog import model_choices
from flowbuilder.secrets import SecretStore
from flowbuilder.store import NotFound
from flowbuilder.types import (
    REF_CLASSES,
    ArtifactRef,
    summarise,
    to_jsonable,
    why_incompatible,
)
from flowbuilder.validate import FlowInput, check
from server.app import services
from server.components.canvas import STATIC, Canvas
from server.pages import frame
from server.pages.flow_api import open_api_dialog
from server.pages.flows import import_graph

AUTOSAVE_DELAY_S = 1.0


def palette(catalogue: list[dict[str, Any]]) -> None:
    """Searchable node palette by category; items drag onto the canvas."""
    search = (
        ui.input(placeholder="Search nodes")
        .props('dense clearable data-testid="palette-search"')
        .classes("w-full")
    )
    items: list[tuple[ui.element, str]] = []
    with ui.column().classes("w-full gap-1"):
        by_category: dict[str, list[dict[str, Any]]] = {}
        for entry in catalogue:
            by_category.setdefault(entry["category"], []).append(entry)
        for category in sorted(by_category):
            with ui.expansion(category, value=True).classes("w-full").props("dense"):
                for entry in by_category[category]:
                    item = (
                        ui.item(entry["title"])
                        .props(
                            f'draggable dense data-testid="palette-{entry["type"]}" '
                            f'title="{entry["type"]}: {entry["description"]}"'
                        )
                        .classes("cursor-grab rounded bg-slate-800 my-0.5")
                    )
                    item.on(
                        "dragstart",
                        js_handler=(
                            "(e) => { e.dataTransfer.setData('application/x-flowbuilder-node', "
                            f"'{entry['type']}'); e.dataTransfer.effectAllowed = 'copy'; }}"
                        ),
                    )
                    text = f"{entry['title']} {entry['type']} {entry['description']}".lower()
                    items.append((item, text))

    def filter_items() -> None:
        needle = (search.value or "").lower()
        for item, text in items:
            item.set_visibility(needle in text)

    search.on_value_change(filter_items)


def input_widget(spec: FlowInput, values: dict[str, Any]) -> None:
    """One field of the run-inputs form; writes into ``values`` by input name."""
    label = f"{spec.name} ({spec.type})" + ("" if spec.required else " — optional")
    current = values.get(spec.name, spec.default)
    test_id = f'data-testid="input-{spec.name}"'
    if spec.type in REF_CLASSES:
        ui.label(label)
        shown = ui.label(current.get("name", "") if isinstance(current, dict) else "")

        async def on_upload(e: events.UploadEventArguments) -> None:
            from pathlib import PurePath

            name = PurePath(e.file.name.replace("\\", "/")).name or "upload"  # no folders
            data = await e.file.read()
            store = services().engine.artifacts
            ref = await asyncio.to_thread(store.put_bytes, data, name=name, kind=spec.type)
            values[spec.name] = ref.model_dump(mode="json")
            shown.set_text(f"{ref.name} ({ref.size} bytes)")

        ui.upload(auto_upload=True, on_upload=on_upload).props(test_id).classes("w-full")
    elif spec.type == "boolean":
        ui.switch(label, value=bool(current)).on_value_change(
            lambda e: values.__setitem__(spec.name, e.value)
        )
    elif spec.type in ("integer", "number"):
        ui.number(label, value=current).props(test_id).on_value_change(
            lambda e: values.__setitem__(
                spec.name,
                int(e.value) if spec.type == "integer" and e.value is not None else e.value,
            )
        )
    elif spec.type == "text":
        ui.textarea(label, value=current or "").props(f"autogrow {test_id}").classes(
            "w-full"
        ).on_value_change(lambda e: values.__setitem__(spec.name, e.value))
    else:

        def set_json(e: events.ValueChangeEventArguments) -> None:
            with contextlib.suppress(json.JSONDecodeError):
                values[spec.name] = json.loads(e.value)

        ui.textarea(
            f"{label}, as JSON", value=json.dumps(current) if current is not None else ""
        ).props(test_id).classes("w-full").on_value_change(set_json)


@ui.page("/flow/{flow_id}")
async def editor_page(flow_id: str, version: int | None = None) -> None:
    fb = services()

    def workspace_path(ref: ArtifactRef) -> str:
        """An uploaded artifact copied into the workspace (``uploads/<name>``), by the
        path a node's file parameter takes: nodes cannot name the artifact store, and
        upload answers never say where the server keeps files."""
        data = fb.engine.artifacts.path(ref).read_bytes()
        return FileAccess(fb.engine.settings).save_upload(ref.name or ref.id, data)

    try:
        flow = fb.store.get_flow(flow_id)
        graph = fb.store.get_version(flow_id, version).graph if version else flow.graph
    except NotFound as exc:
        with frame("Not found"):
            pass
        ui.label(str(exc)).classes("p-4")
        return
    state: dict[str, Any] = {
        "graph": graph,
        "pending": None,
        "save_task": None,
        "run": None,
        "inputs": {},
    }
    registry = fb.engine.registry
    catalogue = registry.catalogue()

    with frame(flow.name) as actions:
        saved = ui.label("Saved").classes("text-slate-400").props('data-testid="save-state"')
        inputs_button = ui.button("Inputs", icon="tune", on_click=lambda: open_inputs()).props(
            'flat data-testid="inputs"'
        )
        run_button = ui.button("Run", icon="play_arrow", on_click=lambda: run_flow()).props(
            'data-testid="run"'
        )
        cancel_button = ui.button("Cancel", icon="stop", on_click=lambda: cancel_run()).props(
            'flat color=negative data-testid="cancel"'
        )
        cancel_button.disable()
        ui.button("API", icon="api", on_click=lambda: open_api_dialog(flow_id)).props(
            'flat data-testid="flow-api"'
        )
        ui.button(icon="download", on_click=lambda: export()).props(
            'flat round title="Export JSON" data-testid="export"'
        )
        status = ui.label("").props('data-testid="run-status"')
    del actions, inputs_button

    if version:
        with ui.row().classes("w-full items-center bg-amber-900 px-4 py-1"):
            ui.label(f"Viewing version {version} of '{flow.name}' (current: {flow.version}).")
            ui.button("Restore this version", on_click=lambda: restore()).props("flat dense")

    with ui.left_drawer(value=True).classes("bg-slate-900 p-2").props("width=260"):
        palette(catalogue)

    ui.add_css(STATIC / "canvas.css")
    canvas = Canvas(registry, graph).classes("w-full").style("height: calc(100vh - 56px)")
    ui.query(".nicegui-content").classes("p-0")

    # ---- autosave -----------------------------------------------------------------------
    async def save_later() -> None:
        await asyncio.sleep(AUTOSAVE_DELAY_S)
        pending = state["pending"]
        state["pending"] = None
        if pending is None:
            return
        try:
            check_graph(pending, Limits.from_settings(fb.engine.settings))
            graph_from_data(json.loads(json.dumps(pending)))
            saved_flow = fb.store.save_flow(flow_id, pending)
        except (GraphFileError, LimitExceeded, NotFound) as exc:
            saved.set_text(f"Not saved: {exc}")
            return
        state["graph"] = pending
        canvas.mark_saved()
        saved.set_text(f"Saved · version {saved_flow.version}")

    def on_change(e: events.GenericEventArguments) -> None:
        state["pending"] = e.args["graph"]
        saved.set_text("Unsaved changes…")
        task = state["save_task"]
        if task is not None and not task.done():
            task.cancel()
        state["save_task"] = asyncio.create_task(save_later())

    canvas.on("change", on_change)

    async def flush_save() -> None:
        task = state["save_task"]
        if state["pending"] is not None and task is not None and not task.done():
            task.cancel()
            state["save_task"] = None
            pending = state["pending"]
            state["pending"] = None
            try:
                check_graph(pending, Limits.from_settings(fb.engine.settings))
            except LimitExceeded as exc:
                saved.set_text(f"Not saved: {exc}")
                return
            fb.store.save_flow(flow_id, pending)
            state["graph"] = pending
            canvas.mark_saved()
            saved.set_text("Saved")

    # ---- editing helpers ------------------------------------------------------------------
    def on_edit_param(e: events.GenericEventArguments) -> None:
        a = e.args
        if a["widget"] in ("model", "credential", "file"):
            pick_param(a)
            return
        with ui.dialog() as dialog, ui.card().classes("w-[36rem]"):
            ui.label(f"{a['name']}: {a.get('description') or ''}").classes("font-bold")
            value = a.get("value")
            if a["widget"] == "json":
                field = (
                    ui.textarea(value=json.dumps(value, indent=2))
                    .props('autogrow data-testid="param-editor"')
                    .classes("w-full font-mono")
                )
            else:
                field = (
                    ui.textarea(value=value or "")
                    .props('autogrow data-testid="param-editor"')
                    .classes("w-full")
                )
            error = ui.label("").classes("text-red-400")

            def done() -> None:
                new: Any = field.value
                if a["widget"] == "json":
                    try:
                        new = json.loads(field.value)
                    except json.JSONDecodeError as exc:
                        error.set_text(f"not valid JSON: {exc.msg} (line {exc.lineno})")
                        return
                canvas.set_property(a["node_id"], a["name"], new)
                dialog.close()

            with ui.row():
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("OK", on_click=done).props('data-testid="param-ok"')
        dialog.open()

    def pick_param(a: dict[str, Any]) -> None:
        """Model, credential and file parameters: choose from what exists, or type/upload."""
        home = fb.engine.settings.home
        with ui.dialog() as dialog, ui.card().classes("w-[36rem]"):
            ui.label(f"{a['name']}: {a.get('description') or ''}").classes("font-bold")
            current = a.get("value") or ""
            if a["widget"] == "file":
                ui.label(current or "no file yet").props('data-testid="param-file"')

                async def on_upload(up: events.UploadEventArguments) -> None:
                    data = await up.file.read()
                    files = FileAccess(fb.engine.settings)  # kept in the workspace
                    path = await asyncio.to_thread(files.save_upload, up.file.name, data)
                    canvas.set_property(a["node_id"], a["name"], path)
                    dialog.close()

                ui.upload(label="Upload a file", auto_upload=True, on_upload=on_upload).props(
                    'data-testid="param-upload"'
                ).classes("w-full")
                dialog.open()
                return
            if a["widget"] == "model":
                options = {
                    c["id"]: c["label"] + ("" if c["local"] else f" · {c['provider']}")
                    for c in model_choices(home, a.get("task") or "chat")
                }
            else:
                options = {"": "(none: the endpoint's own key)"}
                options.update({n: n for n in SecretStore(home).names()})
            if current and current not in options:
                options[current] = current
            select = (
                ui.select(options, value=current, with_input=True, new_value_mode="add-unique")
                .props('data-testid="param-select"')
                .classes("w-full")
            )
            if a["widget"] == "model":
                ui.label(
                    "Local models come first; type any provider:model id, e.g. "
                    "openai:gpt-4o-mini or ollama:llama3.2."
                ).classes("text-slate-400")

            def done() -> None:
                canvas.set_property(a["node_id"], a["name"], select.value or "")
                dialog.close()

            with ui.row():
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("OK", on_click=done).props('data-testid="param-ok"')
        dialog.open()

    canvas.on("edit_param", on_edit_param)
    canvas.on(
        "link_refused",
        lambda e: ui.notify(
            f"Link refused: {why_incompatible(e.args['from_type'], e.args['to_type'])}",
            type="warning",
            multi_line=True,
        ),
    )
    canvas.on("notify", lambda e: ui.notify(e.args["message"], type=e.args.get("type")))

    def on_open_graph(e: events.GenericEventArguments) -> None:
        try:
            new_id = import_graph(e.args["name"], e.args["text"])
        except GraphFileError as exc:
            ui.notify(str(exc), type="negative", multi_line=True)
            return
        ui.navigate.to(f"/flow/{new_id}")

    canvas.on("open_graph", on_open_graph)

    async def on_file_dropped(e: events.GenericEventArguments) -> None:
        """A file dropped on the canvas, uploaded as an artifact: a Load File node for it."""
        ref = fb.engine.artifacts.info(str(e.args.get("id", "")))
        if ref is None:
            ui.notify(f"Upload of {e.args.get('name')} was not stored", type="negative")
            return
        kind = e.args.get("kind", "file")
        path = await asyncio.to_thread(workspace_path, ref)
        canvas.add_node("core/load_file", {"path": path, "kind": kind}, e.args["pos"])
        ui.notify(f"Added {ref.name} as a Load File node ({kind})", type="positive")

    canvas.on("file_dropped", on_file_dropped)

    def on_open_image(e: events.GenericEventArguments) -> None:
        with ui.dialog() as dialog, ui.card():
            ui.image(e.args["url"]).classes("w-[40rem]").props('data-testid="image-large"')
            ui.button("Close", on_click=dialog.close).props("flat")
        dialog.open()

    canvas.on("open_image", on_open_image)

    def on_open_markdown(e: events.GenericEventArguments) -> None:
        """A text output with a Markdown table (a Compare node's report), full size."""
        with ui.dialog() as dialog, ui.card().classes("max-w-none w-[56rem]"):
            ui.label(f"{e.args.get('title') or ''} · {e.args['name']}").classes("font-bold")
            ui.markdown(e.args["text"]).classes("fb-report w-full overflow-auto").props(
                'data-testid="markdown-large"'
            )
            ui.button("Close", on_click=dialog.close).props("flat")
        dialog.open()

    canvas.on("open_markdown", on_open_markdown)

    def export() -> None:
        text = json.dumps(state["pending"] or state["graph"], indent=2, ensure_ascii=False)
        ui.download.content((text + "\n").encode("utf-8"), f"{flow.name}.json", "application/json")

    def restore() -> None:
        if version:
            fb.store.restore_version(flow_id, version)
            ui.navigate.to(f"/flow/{flow_id}")

    # ---- running --------------------------------------------------------------------------
    def current_graph() -> dict[str, Any]:
        graph_now: dict[str, Any] = state["pending"] or state["graph"]
        return graph_now

    async def open_inputs(then_run: bool = False) -> None:
        try:
            plan = fb.engine.compile(graph_from_data(current_graph()))
        except (GraphFileError, GraphInvalid) as exc:
            ui.notify(str(exc), type="negative", multi_line=True)
            return
        if not plan.inputs:
            ui.notify("This flow has no Input nodes.")
            return
        values = state["inputs"]
        with ui.dialog() as dialog, ui.card().classes("w-[32rem]"):
            ui.label("Run inputs").classes("text-lg")
            for spec in plan.inputs:
                input_widget(spec, values)

            async def go() -> None:
                dialog.close()
                if then_run:
                    await run_flow(ask=False)

            ui.button("Run" if then_run else "OK", on_click=go).props('data-testid="inputs-ok"')
        dialog.open()

    async def run_flow(ask: bool = True) -> None:
        if state["run"] is not None:
            return
        await flush_save()
        try:
            graph_obj = graph_from_data(json.loads(json.dumps(current_graph())))
        except GraphFileError as exc:
            ui.notify(str(exc), type="negative", multi_line=True)
            return
        issues, plan = check(graph_obj, registry)
        if plan is None:
            canvas.show_issues([i.to_dict() for i in issues])
            status.set_text(f"{len(issues)} problem(s)")
            ui.notify(
                f"The flow has {len(issues)} problem(s); they are shown on the nodes.",
                type="negative",
            )
            return
        missing = [i for i in plan.inputs if i.required and i.name not in state["inputs"]]
        if missing and ask:
            await open_inputs(then_run=True)
            return
        try:
            # keep_outputs: the whole of any output whose event summary was cut (a long
            # comparison table) can be shown once the run ends.
            run = fb.runs.start(
                plan, dict(state["inputs"]), flow_id=flow_id, source="canvas", keep_outputs=True
            )
        except InputError as exc:
            ui.notify(str(exc), type="negative")
            return
        queue = fb.runs.subscribe(run.run_id)  # before the run's task gets to start
        state["run"] = run
        run_button.disable()
        cancel_button.enable()
        status.set_text("running")
        canvas.set_states(
            [
                {
                    "node_id": _node_key(n),
                    "status": "queued",
                    "outputs": None,
                    "error": None,
                    "issues": [],
                    "elapsed_s": None,
                    "curve": None,
                    "metrics": None,
                }
                for n in plan.nodes
            ]
        )
        background_tasks.create(follow(run, queue), name=f"follow {run.run_id}")

    def cancel_run() -> None:
        run = state["run"]
        if run is not None:
            fb.runs.cancel(run.run_id)

    async def follow(run: Any, queue: asyncio.Queue[Any] | None) -> None:
        if queue is None:
            return
        try:
            with canvas:  # the page's context, for notifications from this task
                await _pump(queue, status, canvas)
                await _send_full_outputs(run, canvas)
        finally:
            fb.runs.unsubscribe(run.run_id, queue)
            state["run"] = None
            run_button.enable()
            cancel_button.disable()


async def _pump(queue: asyncio.Queue[Any], status: ui.label, canvas: Canvas) -> None:
    """Forward run events to the canvas in small batches until the run ends."""
    while True:
        event = await queue.get()
        updates: dict[str, dict[str, Any]] = {}
        done = _apply(event, updates, status)
        while not queue.empty() and not done:
            done = _apply(queue.get_nowait(), updates, status)
        if updates:
            canvas.set_states(list(updates.values()))
        if done:
            return
        await asyncio.sleep(0.05)


FULL_OUTPUT_MAX_CHARS = 100_000
"""Outputs larger than this (as JSON) stay as their event summary on the canvas."""


def curve_point(metrics: dict[str, float]) -> dict[str, float] | None:
    """A loss-curve point from a progress event's ``metrics``: the finite numbers in it,
    with ``step`` and ``loss``; None when there is no finite ``loss``."""
    point = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    return point if "loss" in point else None


async def _send_full_outputs(run: Any, canvas: Canvas) -> None:
    """After a run ends, send the canvas the outputs whose event summary was cut (see
    :func:`flowbuilder.types.summarise`: text over 2,000 characters, lists over 50 items,
    less inside nested values), so long tables and loss curves show whole.

    Only for runs executed in this process with ``keep_outputs`` (a run carried out
    elsewhere has no task here, and its nodes keep their summaries).
    """
    task = getattr(run, "task", None)
    if task is None:
        return
    try:
        result = await asyncio.shield(task)
    except Exception:  # the run's own failure was already reported by its events
        return
    updates = []
    for node_id, outputs in (getattr(result, "node_outputs", None) or {}).items():
        full: dict[str, Any] = {}
        for name, value in outputs.items():
            whole = to_jsonable(value)
            if whole == summarise(value):
                continue
            with contextlib.suppress(TypeError, ValueError):
                if len(json.dumps(whole)) <= FULL_OUTPUT_MAX_CHARS:
                    full[name] = whole
        if full:
            updates.append({"node_id": _node_key(node_id), "full": full})
    if updates:
        canvas.set_states(updates)


def _node_key(node_id: str) -> int | str:
    return int(node_id) if node_id.isdigit() else node_id


def _apply(event: Any, updates: dict[str, dict[str, Any]], status: ui.label) -> bool:
    """Fold one run event into per-node canvas updates; True when the run has ended."""

    def upd(node_id: str, **fields: Any) -> None:
        updates.setdefault(node_id, {"node_id": _node_key(node_id)}).update(fields)

    if isinstance(event, ev.NodeStarted):
        # A (re)started node begins a new loss curve.
        upd(event.node_id, status="running", started=True, curve=None, metrics=None, points=[])
    elif isinstance(event, ev.NodeProgress):
        upd(event.node_id, status="running", fraction=event.fraction, message=event.message)
        if event.metrics is not None:
            upd(event.node_id, metrics=event.metrics)
            point = curve_point(event.metrics)
            if point is not None:
                updates[event.node_id].setdefault("points", []).append(point)
    elif isinstance(event, ev.NodeCached):
        upd(event.node_id, status="cached", outputs=event.outputs)
    elif isinstance(event, ev.NodeFinished):
        upd(event.node_id, status="done", elapsed_s=event.elapsed_s, outputs=event.outputs)
    elif isinstance(event, ev.NodeFailed):
        upd(event.node_id, status="failed", error=event.error, elapsed_s=event.elapsed_s)
    elif isinstance(event, ev.NodeSkipped):
        upd(event.node_id, status="skipped", message=event.reason)
    elif isinstance(event, ev.RunFinished):
        status.set_text(f"finished in {event.elapsed_s:.2f} s")
        ui.notify("Run finished", type="positive")
        return True
    elif isinstance(event, ev.RunFailed):
        status.set_text("failed")
        ui.notify(f"Run failed: {event.error}", type="negative", multi_line=True)
        return True
    elif isinstance(event, ev.RunCancelled):
        status.set_text("cancelled")
        ui.notify("Run cancelled", type="warning")
        return True
    return False
