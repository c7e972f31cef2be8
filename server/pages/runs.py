"""The runs page: history of runs, and each run's per-node timings, errors and outputs."""

from __future__ import annotations

import json

from nicegui import ui

from flowbuilder.store import NotFound
from server.app import services
from server.pages import frame

STATUS_COLOUR = {
    "finished": "positive",
    "failed": "negative",
    "cancelled": "warning",
    "interrupted": "warning",
    "running": "info",
    "queued": "grey",
}


@ui.page("/runs")
def runs_page() -> None:
    store = services().store
    names = {f.id: f.name for f in store.list_flows()}
    with frame("Runs"):
        pass
    rows = []
    for run in store.list_runs(limit=200):
        rows.append(
            {
                "id": run.id,
                "flow": names.get(run.flow_id or "", run.flow_id or "(no flow)"),
                "version": run.flow_version,
                "source": run.source,
                "started": f"{run.created_at:%Y-%m-%d %H:%M:%S}",
                "duration": f"{run.elapsed_s:.2f} s" if run.elapsed_s is not None else "",
                "status": run.status,
            }
        )
    columns = [
        {"name": k, "label": k.capitalize(), "field": k, "align": "left", "sortable": True}
        for k in ("flow", "version", "source", "started", "duration", "status")
    ]
    with ui.column().classes("w-full max-w-5xl mx-auto p-4"):
        if not rows:
            ui.label("No runs yet.")
            return
        table = (
            ui.table(columns=columns, rows=rows, row_key="id")
            .classes("w-full")
            .props('data-testid="runs-table"')
        )
        table.on("rowClick", lambda e: ui.navigate.to(f"/runs/{e.args[1]['id']}"))


@ui.page("/runs/{run_id}")
def run_page(run_id: str) -> None:
    store = services().store
    try:
        run = store.get_run(run_id)
    except NotFound as exc:
        with frame("Not found"):
            pass
        ui.label(str(exc)).classes("p-4")
        return
    with frame(f"Run {run.id[:8]}"):
        if run.flow_id:
            ui.link(
                f"Open flow version {run.flow_version}",
                f"/flow/{run.flow_id}?version={run.flow_version}",
            ).classes("text-white")
    with ui.column().classes("w-full max-w-5xl mx-auto p-4 gap-2"):
        with ui.row().classes("items-center gap-4"):
            ui.badge(run.status, color=STATUS_COLOUR.get(run.status, "grey")).props(
                'data-testid="run-status"'
            )
            ui.label(
                f"{run.source} · started {run.created_at:%Y-%m-%d %H:%M:%S}"
                + (f" · {run.elapsed_s:.2f} s" if run.elapsed_s is not None else "")
            )
        if run.error:
            ui.label(f"Error in node {run.failed_node}: {run.error}").classes("text-red-400")
        ui.label("Inputs").classes("text-lg")
        ui.code(json.dumps(run.inputs, indent=2, ensure_ascii=False), language="json")
        ui.label("Outputs").classes("text-lg")
        ui.code(json.dumps(run.outputs or {}, indent=2, ensure_ascii=False), language="json")
        ui.label("Nodes").classes("text-lg")
        rows = [
            {
                "node": n.node_id,
                "type": n.node_type,
                "status": n.status,
                "elapsed": f"{n.elapsed_s:.3f} s" if n.elapsed_s is not None else "",
                "error": n.error or "",
                "outputs": json.dumps(n.outputs, ensure_ascii=False)[:300] if n.outputs else "",
            }
            for n in store.node_runs(run.id)
        ]
        columns = [
            {"name": k, "label": k.capitalize(), "field": k, "align": "left"}
            for k in ("node", "type", "status", "elapsed", "error", "outputs")
        ]
        ui.table(columns=columns, rows=rows, row_key="node").classes("w-full").props(
            'data-testid="node-runs" wrap-cells'
        )
