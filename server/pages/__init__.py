"""The app's pages; each module registers its routes when imported."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nicegui import ui


@contextmanager
def frame(title: str) -> Iterator[ui.row]:
    """The common header (navigation); yields the header's right-hand row for page actions."""
    ui.page_title(f"{title} · flowbuilder")
    with ui.header().classes("items-center gap-4 px-4 py-2 bg-slate-900"):
        ui.link("flowbuilder", "/").classes("text-lg font-bold text-white no-underline")
        ui.link("Flows", "/").classes("text-white")
        ui.link("Runs", "/runs").classes("text-white")
        ui.link("Knowledge", "/knowledge").classes("text-white")
        ui.link("Settings", "/settings").classes("text-white")
        ui.label(title).classes("text-slate-300 truncate").props('data-testid="page-title"')
        ui.space()
        with ui.row().classes("items-center gap-2") as actions:
            yield actions
