"""The knowledge page: the knowledge bases, with their model, document and chunk counts
and last ingest; create and delete them. Filling one is a flow's Ingest node or
``flowbuilder kb ingest NAME FOLDER``."""

from __future__ import annotations

import asyncio
from typing import Any

from nicegui import ui

from flowbuilder.errors import FlowbuilderError
from flowbuilder.knowledge import KnowledgeBases, embedding_dimensions, format_time
from server.app import services
from server.pages import frame

COLUMNS: list[dict[str, Any]] = [
    {"name": "name", "label": "Name", "field": "name", "align": "left", "sortable": True},
    {"name": "model", "label": "Embedding model", "field": "model", "align": "left"},
    {"name": "documents", "label": "Documents", "field": "documents", "sortable": True},
    {"name": "chunks", "label": "Chunks", "field": "chunks", "sortable": True},
    {"name": "last_ingest", "label": "Last ingest", "field": "last_ingest", "align": "left"},
]


def _kbs() -> KnowledgeBases:
    return KnowledgeBases.from_settings(services().engine.settings)


def _rows() -> list[dict[str, object]]:
    return [
        {
            "name": i.name,
            "model": i.model,
            "documents": i.documents,
            "chunks": i.chunks,
            "last_ingest": format_time(i.last_ingest_at),
        }
        for i in _kbs().list()
    ]


@ui.page("/knowledge")
def knowledge_page() -> None:
    with ui.dialog() as create_dialog, ui.card().classes("w-96"):
        ui.label("New knowledge base").classes("text-lg")
        name = ui.input("Name").props('data-testid="kb-name"').classes("w-full")
        model = ui.input("Embedding model", value="local:all-minilm-l6-v2").classes("w-full")
        model.props('data-testid="kb-model"')

        async def create() -> None:
            try:
                dims = await embedding_dimensions(services().engine, model.value)
                await asyncio.to_thread(_kbs().create, name.value.strip(), model.value, dims)
            except FlowbuilderError as exc:
                ui.notify(str(exc), type="negative", multi_line=True)
                return
            create_dialog.close()
            ui.notify(f"Created {name.value}", type="positive")
            refresh()

        ui.button("Create", on_click=create).props('data-testid="kb-create"')

    with frame("Knowledge"):
        ui.button("New knowledge base", icon="add", on_click=create_dialog.open).props(
            'data-testid="kb-new"'
        )

    with ui.column().classes("w-full max-w-5xl mx-auto p-4 gap-2"):
        ui.label(
            "Knowledge bases hold embedded chunks of your documents for the Retrieve node. "
            "Fill one with the Ingest node or `flowbuilder kb ingest NAME FOLDER`."
        ).classes("text-slate-600")
        empty = ui.label("No knowledge bases yet.").props('data-testid="kb-empty"')
        table = ui.table(columns=COLUMNS, rows=[], row_key="name", selection="single")
        table.classes("w-full").props('data-testid="kb-table"')

        async def delete() -> None:
            if not table.selected:
                ui.notify("Select a knowledge base first")
                return
            target = str(table.selected[0]["name"])
            try:
                await asyncio.to_thread(_kbs().delete, target)
            except FlowbuilderError as exc:
                ui.notify(str(exc), type="negative")
                return
            ui.notify(f"Deleted {target}")
            refresh()

        with ui.row():
            ui.button("Delete selected", icon="delete", on_click=delete, color="negative").props(
                'data-testid="kb-delete" flat'
            )
            ui.button("Refresh", icon="refresh", on_click=lambda: refresh()).props("flat")

    def refresh() -> None:
        rows = _rows()
        table.rows = rows
        table.selected = []
        table.update()
        empty.set_visibility(not rows)
        table.set_visibility(bool(rows))

    refresh()
