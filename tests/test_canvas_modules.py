"""The canvas's ES modules as a browser gets them from ``flowbuilder serve``: the page's
import map names our module folders (``fb-canvas/``, ``fb-menus/``), every file that
static/canvas.js and its modules import is served from there (and only with a
credential), and a module edited in place gets a new URL.

The browser tests (tests/test_canvas.py, tests/test_canvas_training.py) run the modules.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urljoin

from conftest import REPO
from test_api import start_server

from server.components.canvas import MODULES, modules_version

SHELL = REPO / "static" / "canvas.js"
IMPORT = re.compile(r'^import\s[^;]*?\sfrom\s+"([^"]+)";', re.MULTILINE)
THIRD_PARTY = ("litegraph/", "dompurify")  # from npm and from NiceGUI, not ours


def import_map(html: str) -> dict[str, str]:
    found = re.search(r'<script type="importmap">\s*(\{.*?\})\s*</script>', html, re.DOTALL)
    assert found, "the page has no import map"
    imports: dict[str, str] = json.loads(found.group(1))["imports"]
    return imports


def test_every_module_the_canvas_imports_is_served_behind_the_gate(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home")
    try:
        with server.client() as client, server.client(anonymous=True) as anonymous:
            page = client.get("/")
            assert page.status_code == 200
            imports = import_map(page.text)
            assert "litegraph/" in imports
            bases = {f: urljoin(server.base, imports[f"{n}/"]) for n, f in MODULES.items()}

            served: dict[Path, str] = {}
            todo = [(SHELL, spec) for spec in IMPORT.findall(SHELL.read_text())]
            while todo:
                importer, spec = todo.pop()
                if spec.startswith(THIRD_PARTY):
                    continue
                name, _, rest = spec.partition("/")
                if name in MODULES:
                    file = MODULES[name] / rest
                else:
                    assert spec.startswith("./") and importer.parent in bases, (importer, spec)
                    file = (importer.parent / spec).resolve()
                if file in served:
                    continue
                url = urljoin(bases[file.parent], file.name)
                got = client.get(url)
                assert got.status_code == 200, (spec, url, got.status_code)
                assert got.headers["content-type"].startswith("text/javascript"), url
                assert got.text == file.read_text(), f"{url} is not {file}"
                assert anonymous.get(url).status_code == 401, url
                served[file] = url
                todo += [(file, s) for s in IMPORT.findall(file.read_text())]
    finally:
        server.stop()
    # Every module is in use, and each says at its top what it owns.
    assert set(served) == {f for folder in MODULES.values() for f in folder.glob("*.js")}
    for file in served:
        assert file.read_text().startswith("// "), f"{file.name} has no comment at its top"


def test_a_module_edited_in_place_gets_a_new_version(tmp_path: Path) -> None:
    folder = tmp_path / "modules"
    folder.mkdir()
    for name in ("a.js", "b.js"):
        (folder / name).write_text(f"export const {name[0]} = 1;\n")
        os.utime(folder / name, (1e9, 1e9))
    os.utime(folder, (1e9, 1e9))
    before = modules_version(folder)
    assert before == 1e9

    (folder / "b.js").write_text("export const b = 2;\n")  # in place, as an editor saves
    assert folder.stat().st_mtime == 1e9  # what NiceGUI's own esm= option would key by
    assert (modules_version(folder) or 0) > before
