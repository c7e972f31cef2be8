"""schemathesis against a real ``flowbuilder serve``: every operation of its
``/openapi.json`` (the app's routes and the published flows' own operations) gets
generated requests — schema examples, boundary and invalid values (the ``coverage``
phase), then random ones — sent with an API key. Every answer must be no 5xx
(``not_a_server_error``), have a status the schema documents for that operation
(``status_code_conformance``) and a content type it documents
(``content_type_conformance``).

Path ids are drawn, most of the time, from real flows, runs and artifacts made first,
so the operations behind them are reached, not only their 404. Bounded:
:data:`EXAMPLES` requests per operation and phase, no shrinking; a minute or two on
2 cores. schemathesis runs as its own CLI (its pytest plugin does not support this
pytest); a failure prints its report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from test_api import greeting_graph, start_server

from flowbuilder.builder import GraphBuilder
from flowbuilder.registry import default_registry

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
EXAMPLES = 40
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"


def typed_graph() -> dict[str, Any]:
    """Inputs of every scalar type and JSON → quick nodes → outputs of the same types."""
    b = GraphBuilder(default_registry(), name="Typed inputs")
    text = b.add("core/input", name="text", type="text", description="some text")
    count = b.add("core/input", name="count", type="integer", default=1)
    ratio = b.add("core/input", name="ratio", type="number", default=0.5)
    flag = b.add("core/input", name="flag", type="boolean", default=False)
    data = b.add("core/input", name="data", type="json", default={})
    tpl = b.add("core/template", template="{{ text }} / {{ a }}")
    join = b.add("core/join", separator="-")
    b.link(text, "value", tpl, "text")
    b.link(text, "value", join, "a")
    b.link(join, "text", tpl, "a")
    for name, node, port in (
        ("summary", tpl, "text"),
        ("count", count, "value"),
        ("ratio", ratio, "value"),
        ("flag", flag, "value"),
        ("data", data, "value"),
    ):
        out = b.add("core/output", name=name)
        b.link(node, port, out, "value")
    return b.build().to_dict()


MUTATING = ("DELETE", "PATCH", "PUT")
"""Methods (with unpublish and restore) that get only the spare flows' ids, so the
published flows stay published and in place for the other operations."""


def made_ids(client: httpx.Client) -> dict[str, list[str]]:
    """Publish two flows and make two spare ones, run one, upload a file: their ids."""
    ids: dict[str, list[str]] = {"flows": [], "spare": []}
    for name, graph, kind in (
        ("Typed inputs", typed_graph(), "flows"),
        ("Greeter", greeting_graph(), "flows"),
        ("Spare", greeting_graph(), "spare"),
        ("Spare 2", typed_graph(), "spare"),
    ):
        r = client.post("/api/v1/flows", json={"name": name, "graph": graph})
        assert r.status_code == 201, r.text
        ids[kind].append(r.json()["id"])
        assert client.post(f"/api/v1/flows/{ids[kind][-1]}/publish").status_code == 200
    run = client.post(f"/api/v1/flows/{ids['flows'][1]}/run", json={"name": "schemathesis"})
    assert run.status_code == 200, run.text
    upload = client.post("/api/v1/artifacts", files={"file": ("note.txt", b"hello")})
    assert upload.status_code == 201, upload.text
    return {**ids, "runs": [run.json()["run_id"]], "artifacts": [upload.json()["id"]]}


def _draw(param: str, dictionary: str) -> str:
    return f'"path.{param}" = {{ dictionary = "{dictionary}", probability = 0.7 }}'


def config_text(ids: dict[str, list[str]]) -> str:
    """A schemathesis.toml drawing path ids from ``ids`` 70% of the time (the spare
    flows' for operations that change or remove a flow)."""
    lines = []
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for param, name in (("flow_id", "flows"), ("run_id", "runs"), ("artifact_id", "artifacts")):
        lines.append(_draw(param, name))
    for method in MUTATING:
        lines += ["", "[[operations]]", f'include-method = "{method}"']
        lines.append(f"parameters = {{ {_draw('flow_id', 'spare')} }}")
    for path in ("unpublish", "versions/{version}/restore"):
        lines += ["", "[[operations]]", f'include-path = "/api/v1/flows/{{flow_id}}/{path}"']
        lines.append(f"parameters = {{ {_draw('flow_id', 'spare')} }}")
    # A run given a ?timeout it cannot meet (5e-324 s) answers 504 by design, documented;
    # every other 5xx, and 504 elsewhere, stays a failure.
    lines += ["", "[[operations]]", 'include-path-regex = "/run$"']
    lines.append('checks.not_a_server_error.expected-statuses = ["2XX", "3XX", "4XX", "504"]')
    return "\n".join(lines) + "\n"


def test_api_conforms_to_its_schema(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "home")
    try:
        made = srv.cli("keys", "create", "--name", "schemathesis", "--json")
        assert made.returncode == 0, made.stderr
        bearer = f"Bearer {json.loads(made.stdout)['key']}"
        with srv.client(headers={"Authorization": bearer}) as client:
            ids = made_ids(client)
        config = tmp_path / "schemathesis.toml"
        config.write_text(config_text(ids))
        result = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                str(config),
                "run",
                f"{srv.base}/openapi.json",
                "--header",
                f"Authorization: {bearer}",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                str(EXAMPLES),
                "--no-shrink",
                "--workers",
                "2",
                "--request-timeout",
                "30",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    finally:
        srv.stop()
    log = next(srv.home.glob("server-*.log"), None)
    report = result.stdout[-20_000:] + result.stderr[-2_000:]
    report += "\n--- server log ---\n" + (log.read_text()[-4_000:] if log else "")
    print(report)  # shown with -s, and on failure
    assert "Loaded specification" in result.stdout, report
    assert result.returncode == 0, report
