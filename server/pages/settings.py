"""Settings: secrets (names and scopes; values are write-only), provider endpoints, local
models, the folders nodes may use."""

from __future__ import annotations

from nicegui import ui

from flowbuilder.errors import FlowbuilderError
from flowbuilder.providers.catalog import list_local_models, list_providers
from flowbuilder.providers.config import ProviderConfig
from flowbuilder.secrets import SecretStore, parse_scope
from server.app import services
from server.pages import frame
from server.pages.file_roots import file_roots_section
from server.pages.flow_api import api_keys_section


@ui.page("/settings")
def settings_page() -> None:
    home = services().engine.settings.home
    secrets = SecretStore(home)
    config = ProviderConfig(home)
    with frame("Settings"):
        pass

    @ui.refreshable
    def secret_list() -> None:
        scopes = secrets.scopes()
        if not scopes:
            ui.label(
                "No secrets stored. Environment variables (OPENAI_API_KEY, "
                "ANTHROPIC_API_KEY) serve as their own provider's key."
            )
        for name, scope in scopes.items():
            with ui.row().classes("items-center gap-2").props(f'data-testid="secret-{name}"'):
                ui.label(name).classes("font-mono")
                ui.label("••••••••").classes("text-slate-500")
                ui.label(scope_text(scope)).classes("text-slate-400").props(
                    f'data-testid="scope-{name}"'
                )
                edit = ui.input("Endpoints", value=", ".join(scope or ())).props(
                    f'dense data-testid="scope-input-{name}"'
                )
                ui.button(
                    "Save scope", on_click=lambda n=name, e=edit: save_scope(n, e.value)
                ).props(f'flat dense data-testid="scope-save-{name}"')
                ui.button(icon="delete", on_click=lambda n=name: remove_secret(n)).props(
                    "flat round dense color=negative"
                )

    def scope_text(scope: tuple[str, ...] | None) -> str:
        if scope is None:
            return "no scope: only an endpoint that names it as its key"
        return "may be sent to " + ", ".join(scope)

    def save_scope(name: str, text: str) -> None:
        try:
            secrets.set_scope(name, parse_scope(text) if text.strip() else None)
        except FlowbuilderError as exc:
            ui.notify(str(exc), type="negative")
            return
        secret_list.refresh()
        provider_list.refresh()

    def remove_secret(name: str) -> None:
        secrets.delete(name)
        secret_list.refresh()

    def add_secret() -> None:
        try:
            scope = parse_scope(secret_scope.value) if secret_scope.value.strip() else None
            secrets.set(secret_name.value.strip(), secret_value.value, scope=scope)
        except FlowbuilderError as exc:
            ui.notify(str(exc), type="negative")
            return
        secret_name.value = secret_value.value = secret_scope.value = ""
        secret_list.refresh()
        provider_list.refresh()

    @ui.refreshable
    def provider_list() -> None:
        rows = [
            {
                "name": p["name"],
                "kind": p["kind"],
                "base_url": p["base_url"] or "",
                "credential": p["credential_state"],
                "source": p["source"],
            }
            for p in list_providers(home)
        ]
        columns = [
            {"name": k, "label": k.replace("_", " ").capitalize(), "field": k, "align": "left"}
            for k in ("name", "kind", "base_url", "credential", "source")
        ]
        ui.table(columns=columns, rows=rows, row_key="name").classes("w-full").props(
            'data-testid="providers-table"'
        )

    def add_endpoint() -> None:
        try:
            config.add(
                ep_name.value.strip(),
                ep_url.value.strip(),
                api_key_secret=ep_secret.value.strip() or None,
            )
        except FlowbuilderError as exc:
            ui.notify(str(exc), type="negative")
            return
        ep_name.value = ep_url.value = ep_secret.value = ""
        provider_list.refresh()

    with ui.column().classes("w-full max-w-4xl mx-auto p-4 gap-4"):
        ui.label("Secrets").classes("text-xl")
        ui.label(
            "Stored encrypted in the data directory. Nodes name a secret; its value "
            "never appears in graph files, events, run records or logs. A secret is sent "
            "only to the endpoints it is scoped to (comma-separated provider names); one "
            "without a scope only to an endpoint that names it as its key."
        ).classes("text-slate-400")
        secret_list()
        with ui.row().classes("items-end gap-2"):
            secret_name = ui.input("Name", placeholder="OPENAI_API_KEY").props(
                'data-testid="secret-name"'
            )
            secret_value = ui.input("Value", password=True).props('data-testid="secret-value"')
            secret_scope = ui.input("For endpoints", placeholder="openai, vllm").props(
                'data-testid="secret-scope"'
            )
            ui.button("Save secret", on_click=add_secret).props('data-testid="secret-save"')

        ui.label("Providers").classes("text-xl")
        provider_list()
        with ui.row().classes("items-end gap-2"):
            ep_name = ui.input("Endpoint name", placeholder="vllm")
            ep_url = ui.input("Base URL", placeholder="http://127.0.0.1:8000/v1")
            ep_secret = ui.input("Key secret (optional)")
            ui.button("Add endpoint", on_click=add_endpoint)

        ui.label("Local models").classes("text-xl")
        rows = [
            {
                "id": m.id,
                "task": m.task,
                "format": m.format,
                "parameters": f"{m.parameters:,}" if m.parameters else "",
                "size": f"{m.size_bytes / 2**20:.0f} MB",
            }
            for m in list_local_models(home)
        ]
        ui.table(
            columns=[
                {"name": k, "label": k.capitalize(), "field": k, "align": "left"}
                for k in ("id", "task", "format", "parameters", "size")
            ],
            rows=rows,
            row_key="id",
        ).classes("w-full").props('data-testid="models-table"')

        file_roots_section(services().engine.settings)

        api_keys_section()
