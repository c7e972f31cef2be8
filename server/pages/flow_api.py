"""A flow as an endpoint, in the UI: the editor's "API" dialog and the settings' API keys.

The dialog has the publish switch, the endpoint URL, a ready ``curl`` command and a
Python snippet filled with the flow's real inputs (example values by type), and the
flow's recent API runs. The keys section lists keys (name, prefix, created, last used,
revoked), makes new ones (shown once) and revokes them.
"""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui

from flowbuilder.errors import FlowbuilderError
from flowbuilder.graph import graph_from_data
from flowbuilder.types import REF_CLASSES
from flowbuilder.validate import FlowInput
from server.api.socket_guard import client_allowed
from server.app import services

EXAMPLES: dict[str, Any] = {
    "text": "hello",
    "integer": 1,
    "number": 0.5,
    "boolean": True,
    "json": {},
    "list[text]": ["a", "b"],
}


def example_inputs(inputs: list[FlowInput]) -> dict[str, Any]:
    """An example request body: each input's default, else a value of its type."""
    body: dict[str, Any] = {}
    for spec in inputs:
        if spec.type in REF_CLASSES:
            continue
        body[spec.name] = spec.default if spec.default is not None else EXAMPLES.get(spec.type)
    return body


def snippets(base: str, flow_id: str, inputs: list[FlowInput], auth: bool) -> tuple[str, str]:
    """(curl command, Python snippet) that run the flow with its real inputs."""
    url = f"{base}/api/v1/flows/{flow_id}/run"
    files = [i for i in inputs if i.type in REF_CLASSES]
    header = ' -H "Authorization: Bearer $FLOWBUILDER_API_KEY"' if auth else ""
    py_headers = (
        'headers={"Authorization": f"Bearer {os.environ[\'FLOWBUILDER_API_KEY\']}"}, '
        if auth
        else ""
    )
    body = example_inputs(inputs)
    if files:
        parts = " ".join(f"-F {i.name}=@{i.type}.file" for i in files)
        parts += "".join(f" -F {k}={json.dumps(v)!r}" for k, v in body.items())
        curl = f"curl -X POST{header} {parts} {url}"
        form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        opened = ", ".join(f'"{i.name}": open("{i.type}.file", "rb")' for i in files)
        python = (
            "import os\nimport httpx\n\n"
            f"r = httpx.post(\n    {url!r},\n    {py_headers}files={{{opened}}},\n"
            f"    data={json.dumps(form)},\n"
            "    timeout=300,\n)\nprint(r.json()['outputs'])\n"
        )
    else:
        curl = (
            f"curl -X POST{header} -H 'Content-Type: application/json' "
            f"-d '{json.dumps(body)}' {url}"
        )
        python = (
            "import os\nimport httpx\n\n"
            f"r = httpx.post(\n    {url!r},\n    {py_headers}json={json.dumps(body)},\n"
            "    timeout=300,\n)\nprint(r.json()['outputs'])\n"
        )
    return curl, python


def open_api_dialog(flow_id: str) -> None:
    """Show the flow's endpoint: publish switch, URL, curl and Python, recent API runs."""
    fb = services()
    flow = fb.store.get_flow(flow_id)
    from nicegui import app

    auth = bool(app.state.fb_gate.required)
    base = (
        ui.context.client.request.base_url.__str__().rstrip("/")
        if ui.context.client.request
        else ""
    )
    try:
        plan = fb.engine.compile(graph_from_data(flow.graph))
        inputs = plan.inputs
        problem = ""
    except FlowbuilderError as exc:
        inputs, problem = [], str(exc)

    def toggle(e: Any) -> None:
        fb.store.set_published(flow_id, bool(e.value))
        cache = getattr(app.state, "fb_plans", None)
        if cache is not None:
            cache.invalidate(flow_id)
        ui.notify("Published: served at its endpoint" if e.value else "Unpublished")

    with ui.dialog() as dialog, ui.card().classes("w-[720px] max-w-full"):
        ui.label(f"'{flow.name}' as an HTTP endpoint").classes("text-lg")
        ui.switch("Published (served by the API)", value=flow.published, on_change=toggle).props(
            'data-testid="publish-switch"'
        )
        if problem:
            ui.label(f"The flow has problems: {problem}").classes("text-negative")
        url = f"{base}/api/v1/flows/{flow_id}/run"
        ui.label("Endpoint").classes("text-sm text-slate-400")
        ui.code(f"POST {url}").classes("w-full").props('data-testid="endpoint-url"')
        curl, python = snippets(base, flow_id, inputs, auth)
        ui.label("curl").classes("text-sm text-slate-400")
        ui.code(curl, language="bash").classes("w-full").props('data-testid="curl"')
        ui.label("Python").classes("text-sm text-slate-400")
        ui.code(python, language="python").classes("w-full")
        ui.label(
            "Also: POST …/runs (202, then poll /api/v1/runs/{id} or follow …/events), "
            "?stream=true for Server-Sent Events, schema in /docs."
        ).classes("text-xs text-slate-400")
        ui.label("Recent API runs").classes("text-sm text-slate-400")
        runs = [r for r in fb.store.list_runs(flow_id, limit=50) if r.source != "canvas"][:10]
        if not runs:
            ui.label("none yet")
        for run in runs:
            with ui.row().classes("gap-3 items-center text-sm"):
                ui.link(run.id[:8], f"/runs/{run.id}").classes("font-mono")
                ui.label(run.status)
                ui.label(run.created_at.strftime("%Y-%m-%d %H:%M:%S"))
                ui.label(f"{run.elapsed_s:.3f} s" if run.elapsed_s is not None else "")
        ui.button("Close", on_click=dialog.close).props("flat")
    dialog.open()


def api_keys_section() -> None:
    """Settings section: list, create (shown once) and revoke API keys."""
    store = services().store
    ui.label("API keys").classes("text-xl")
    ui.label(
        "Send one as 'Authorization: Bearer <key>', or sign a browser in with it at /login. "
        "Only a hash is stored; revoking a key ends the sessions it signed in."
    ).classes("text-sm text-slate-400")

    @ui.refreshable
    def key_list() -> None:
        records = store.list_api_keys()
        if not records:
            ui.label("No API keys.")
        for r in records:
            with ui.row().classes("items-center gap-3").props(f'data-testid="key-{r.id}"'):
                ui.label(r.name)
                ui.label(f"{r.prefix}…").classes("font-mono")
                ui.label(f"created {r.created_at:%Y-%m-%d}")
                ui.label(
                    f"last used {r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never used"
                )
                if r.revoked_at:
                    ui.label("revoked").classes("text-negative")
                else:
                    ui.button("Revoke", on_click=lambda k=r.id: revoke(k)).props(
                        "flat dense color=negative"
                    )

    def still_signed_in() -> bool:
        """Key actions check the page's own credential again first (a revoked key's
        session must not make or revoke keys); a refused page goes to the login."""
        if client_allowed(ui.context.client):
            return True
        ui.navigate.to("/login?next=/settings")
        return False

    def revoke(key_id: str) -> None:
        if not still_signed_in():
            return
        store.revoke_api_key(key_id)
        key_list.refresh()

    def create() -> None:
        if not still_signed_in():
            return
        key, _ = store.create_api_key(name.value.strip() or "default")
        shown.set_content(f"New key (copy it now, it is not shown again):\n\n`{key}`")
        name.value = ""
        key_list.refresh()

    key_list()
    with ui.row().classes("items-center gap-2"):
        name = ui.input("Key name").props('data-testid="key-name"')
        ui.button("Create key", on_click=create).props('data-testid="create-key"')
    shown = ui.markdown("")
