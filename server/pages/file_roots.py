"""Settings section: the folders nodes may use (the file-access policy's roots).

The workspace and ``FLOWBUILDER_FILE_ROOTS`` are shown; folders added here are kept in
the data directory (``file_roots.json``, see :mod:`flowbuilder.file_roots`), which no node
can reach, and apply to the next node that runs.
"""

from __future__ import annotations

from nicegui import ui

from flowbuilder.file_roots import RootsError, add_root, listed_roots, remove_root
from flowbuilder.settings import Settings


def file_roots_section(settings: Settings) -> None:
    """List the roots; add and remove folders (those kept in the data directory)."""
    ui.label("Files").classes("text-xl")
    ui.label(
        "Nodes read and write files only under these folders; relative paths are in the "
        "workspace. The data directory's insides (secrets, database, providers, artifacts, "
        "models, knowledge bases) are never reachable; Python's own folders, hidden names "
        "below a folder (.bashrc, .ssh, .git) and executable files are never written."
    ).classes("text-sm text-slate-400")

    @ui.refreshable
    def root_list() -> None:
        for path, source in listed_roots(settings):
            with ui.row().classes("items-center gap-2").props('data-testid="file-root"'):
                ui.label(str(path)).classes("font-mono")
                ui.label(source).classes("text-slate-500")
                if source == "added":
                    ui.button(icon="delete", on_click=lambda p=str(path): remove(p)).props(
                        "flat round dense color=negative"
                    )

    def remove(path: str) -> None:
        remove_root(settings.home, path)
        root_list.refresh()

    def add() -> None:
        try:
            add_root(settings.home, folder.value)
        except RootsError as exc:
            ui.notify(str(exc), type="negative")
            return
        folder.value = ""
        root_list.refresh()

    root_list()
    with ui.row().classes("items-end gap-2"):
        folder = ui.input("Folder", placeholder="/srv/data").props('data-testid="root-folder"')
        ui.button("Add folder", on_click=add).props('data-testid="root-add"')
