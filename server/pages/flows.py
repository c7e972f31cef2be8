"""The flow library: list, create, rename, duplicate, delete, import and export flows."""

from __future__ import annotations

import json

from nicegui import events, ui

from flowbuilder.errors import GraphFileError
from flowbuilder.graph import SCHEMA_VERSION, parse_graph
from server.app import services
from server.pages import frame


def empty_graph(name: str) -> dict:
    return {
        "last_node_id": 0,
        "last_link_id": 0,
        "nodes": [],
        "links": [],
        "groups": [],
        "config": {},
        "extra": {"flowbuilder": {"schema": SCHEMA_VERSION, "name": name}},
        "version": 0.4,
    }


def import_graph(name: str, text: str | bytes) -> str:
    """Create a flow from graph file text; returns its id. Raises GraphFileError."""
    graph = parse_graph(text, path=name)
    title = graph.name or name.removesuffix(".json")
    return services().store.create_flow(title, graph.to_dict()).id


@ui.page("/")
def flows_page() -> None:
    store = services().store
    with ui.dialog() as new_dialog, ui.card():
        name = ui.input("Name", value="Untitled flow").props('data-testid="new-flow-name"')

        def create() -> None:
            flow = store.create_flow(name.value or "Untitled flow", empty_graph(name.value))
            ui.navigate.to(f"/flow/{flow.id}")

        ui.button("Create", on_click=create).props('data-testid="create-flow"')

    with frame("Flows"):
        ui.button("New flow", icon="add", on_click=lambda: new_dialog.open()).props(
            'data-testid="new-flow"'
        )
        upload = ui.upload(label="Import JSON", auto_upload=True, on_upload=lambda e: on_import(e))
        upload.props('accept=".json" flat dense data-testid="import-flow"').classes("w-48")

    async def on_import(e: events.UploadEventArguments) -> None:
        try:
            flow_id = import_graph(e.file.name, await e.file.read())
        except GraphFileError as exc:
            ui.notify(str(exc), type="negative", multi_line=True)
            return
        ui.notify(f"Imported {e.file.name}", type="positive")
        ui.navigate.to(f"/flow/{flow_id}")

    @ui.refreshable
    def table() -> None:
        flows = store.list_flows()
        if not flows:
            ui.label("No flows yet: create one or import a graph file.")
        for flow in flows:
            with (
                ui.card().classes("w-full").props(f'data-testid="flow-{flow.id}"'),
                ui.row().classes("w-full items-center"),
            ):
                ui.link(flow.name, f"/flow/{flow.id}").classes("text-lg").props(
                    'data-testid="flow-link"'
                )
                ui.label(
                    f"version {flow.version} · saved {flow.updated_at:%Y-%m-%d %H:%M}"
                ).classes("text-slate-400")
                ui.space()
                ui.button(icon="edit", on_click=lambda f=flow: rename(f)).props(
                    'flat round title="Rename"'
                )
                ui.button(icon="content_copy", on_click=lambda f=flow: duplicate(f)).props(
                    'flat round title="Duplicate"'
                )
                ui.button(icon="download", on_click=lambda f=flow: export(f)).props(
                    'flat round title="Export JSON"'
                )
                ui.button(icon="delete", on_click=lambda f=flow: delete(f)).props(
                    'flat round color=negative title="Delete"'
                )

    def rename(flow) -> None:  # type: ignore[no-untyped-def]
        with ui.dialog() as dialog, ui.card():
            field = ui.input("Name", value=flow.name)

            def done() -> None:
                store.rename_flow(flow.id, field.value)
                dialog.close()
                table.refresh()

            ui.button("Rename", on_click=done)
        dialog.open()

    def duplicate(flow) -> None:  # type: ignore[no-untyped-def]
        store.duplicate_flow(flow.id)
        table.refresh()

    def export(flow) -> None:  # type: ignore[no-untyped-def]
        text = json.dumps(store.get_flow(flow.id).graph, indent=2, ensure_ascii=False) + "\n"
        ui.download.content(text.encode("utf-8"), f"{flow.name}.json", "application/json")

    def delete(flow) -> None:  # type: ignore[no-untyped-def]
        with ui.dialog() as dialog, ui.card():
            ui.label(f"Delete '{flow.name}' and its versions? Its runs are kept.")
            with ui.row():
                ui.button("Cancel", on_click=dialog.close).props("flat")

                def yes() -> None:
                    store.delete_flow(flow.id)
                    dialog.close()
                    table.refresh()

                ui.button("Delete", color="negative", on_click=yes)
        dialog.open()

    with ui.column().classes("w-full max-w-4xl mx-auto p-4 gap-2"):
        table()
