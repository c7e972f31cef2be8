"""The LiteGraph canvas as a NiceGUI element (Python side; the JS is static/canvas.js).

``static/canvas.js`` is the element's Vue component (the shell). It imports our own ES
modules by import name (:data:`MODULES`): the canvas's in ``static/canvas/`` as
``fb-canvas/…``, the hardening of LiteGraph's menus in ``static/menus/`` as ``fb-menus/…``.
LiteGraph itself comes from npm (``static/package.json``, installed by ``npm ci``) and is
served as an ES module under the import name ``litegraph``. Nothing is bundled: the
browser loads each file through the page's import map, behind the same auth gate as
every ``/_nicegui`` route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nicegui import ui
from nicegui.dependencies import compute_key, register_esm

from flowbuilder.errors import FlowbuilderError
from flowbuilder.registry import Registry
from flowbuilder.types import BASE_TYPES, compatible

STATIC = Path(__file__).resolve().parents[2] / "static"
LITEGRAPH_DIST = STATIC / "node_modules" / "@comfyorg" / "litegraph" / "dist"
MODULES = {
    "fb-canvas": STATIC / "canvas",  # the canvas's own modules, imported by static/canvas.js
    "fb-menus": STATIC / "menus",  # inert.js: LiteGraph's menus show a graph's strings as text
}
"""Our ES module folders by import name (``fb-canvas/layout.js``… in the page's import map)."""

if not (LITEGRAPH_DIST / "litegraph.es.js").is_file():  # pragma: no cover - setup problem
    raise FlowbuilderError(
        f"LiteGraph is not installed in {LITEGRAPH_DIST.parent}; run 'make setup' "
        "(or 'npm ci' in static/)"
    )


def modules_version(folder: Path) -> float | None:
    """The newest modification time (seconds since the epoch) of the ``.js`` files under
    ``folder``; None when there is none.

    NiceGUI serves ES modules as immutable for a year, at a URL keyed by a modification
    time. Its own ``esm=`` option takes the folder's, which an in-place edit of a file in
    the folder leaves unchanged: a browser would go on running the old module beside new
    ones. Keyed by the newest file, a changed module gets a new URL, as a changed
    component file does.
    """
    return max((p.stat().st_mtime for p in folder.rglob("*.js")), default=None)


def register_modules(folder: Path, name: str) -> str:
    """Serve the ES modules in ``folder`` under the import name ``name`` (``name/x.js``
    in every page's import map; relative imports among them resolve in the same folder)
    and return their URL key: ``/_nicegui/<version>/esm/<key>/x.js``."""
    version = modules_version(folder)
    register_esm(name, folder, max_time=version)
    return compute_key(folder, max_time=version)


for _name, _folder in MODULES.items():
    register_modules(_folder, _name)


def port_types(catalogue: list[dict[str, Any]]) -> list[str]:
    """Every port type the catalogue can produce, including parameter-dependent ones."""
    types = set(BASE_TYPES)
    for entry in catalogue:
        for port in (*entry["inputs"], *entry["outputs"]):
            types.add(port["type"])
        for by_value in entry.get("dynamic", {}).values():
            for overrides in by_value.values():
                types.update(overrides.values())
    return sorted(types)


def compat_table(catalogue: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"types": [...], "allowed": {source: [targets...]}}`` from
    :func:`flowbuilder.types.compatible`, so the canvas applies exactly the engine's rules."""
    types = port_types(catalogue)
    return {"types": types, "allowed": {a: [b for b in types if compatible(a, b)] for a in types}}


class Canvas(
    ui.element,
    component=str(STATIC / "canvas.js"),
    esm={"litegraph": str(LITEGRAPH_DIST)},  # our own folders: MODULES
):
    """A graph editor. Emits ``change`` ({graph}), ``edit_param``, ``link_refused``,
    ``open_graph``, ``open_image``, ``open_markdown`` ({name, text, title}) and ``notify``
    events.

    Run state reaches the nodes through :meth:`set_states`; besides status and outputs,
    an update may carry ``points`` (progress metrics with a ``loss``, appended to the
    node's loss curve; ``curve: None`` clears it) and ``full`` (outputs whose event
    summary was cut, sent whole).
    """

    def __init__(self, registry: Registry, graph: dict[str, Any] | None = None) -> None:
        super().__init__()
        catalogue = registry.catalogue()
        self._props["catalogue"] = catalogue
        self._props["compat"] = compat_table(catalogue)
        self._props["graph"] = graph

    def load(self, graph: dict[str, Any]) -> None:
        self.run_method("loadGraph", graph)

    def set_property(self, node_id: int | str, name: str, value: Any) -> None:
        self.run_method("setProperty", node_id, name, value)

    def show_issues(self, issues: list[dict[str, Any]]) -> None:
        self.run_method("showIssues", issues)

    def set_states(self, updates: list[dict[str, Any]]) -> None:
        self.run_method("setStates", updates)

    def clear_states(self) -> None:
        self.run_method("clearStates")

    def mark_saved(self, graph_text: str | None = None) -> None:
        self.run_method("markSaved", graph_text)

    def add_node(
        self,
        type_id: str,
        properties: dict[str, Any] | None = None,
        pos: list[float] | None = None,
    ) -> None:
        """Add a node at canvas position ``pos`` (default: the visible centre)."""
        self.run_method("addNode", type_id, pos, properties or {})
