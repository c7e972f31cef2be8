"""``flowbuilder secrets``, ``flowbuilder providers`` and ``flowbuilder models``.

Secrets are set from ``--value``, standard input (``echo $KEY | flowbuilder secrets set
OPENAI_API_KEY --for openai``) or a hidden prompt; they are never printed. ``--for``
(and ``secrets scope``) says which endpoints a secret may be sent to (see
:mod:`flowbuilder.providers.credentials`). Exit code 1 for a bad name, URL, scope or an
unreadable store.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowbuilder.errors import FlowbuilderError
from flowbuilder.settings import Settings

out = Console()
err = Console(stderr=True)

secrets_app = typer.Typer(no_args_is_help=True, help="Manage API keys in the encrypted store.")
providers_app = typer.Typer(
    no_args_is_help=True, help="Model providers and named OpenAI-compatible endpoints."
)
models_app = typer.Typer(help="List the local models (bundled and in FLOWBUILDER_HOME/models).")

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


def _home() -> Path:
    return Settings.from_env().home


def _fail(exc: FlowbuilderError) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(str(exc))}")
    return typer.Exit(1)


# ---- secrets -------------------------------------------------------------------------


ScopeOption = Annotated[
    str | None,
    typer.Option(
        "--for",
        metavar="ENDPOINTS",
        help="comma-separated endpoints the secret may be sent to, e.g. openai,vllm",
    ),
]


@secrets_app.command("set")
def secrets_set(
    name: Annotated[str, typer.Argument(help="secret name, e.g. OPENAI_API_KEY")],
    value: Annotated[
        str | None,
        typer.Option("--value", help="the value (else read from standard input or a prompt)"),
    ] = None,
    scope: ScopeOption = None,
) -> None:
    """Store a secret (encrypted). Nodes refer to it by NAME; it is sent only to the
    endpoints named with --for (without --for: an existing secret keeps its scope, a new
    one goes only to the endpoint that names it as its key)."""
    from flowbuilder.secrets import SecretStore, parse_scope

    try:
        endpoints = parse_scope(scope) if scope is not None else None
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    if value is None:
        if sys.stdin.isatty():
            value = typer.prompt(f"value for {name}", hide_input=True)
        else:
            value = sys.stdin.read().strip("\r\n")
    try:
        store = SecretStore(_home())
        store.set(name, value or "", scope=endpoints)
        stored_scope = store.scope(name)
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    err.print(f"stored secret [bold]{escape(name)}[/] ({escape(_scope_text(stored_scope))})")


@secrets_app.command("scope")
def secrets_scope(
    name: Annotated[str, typer.Argument(help="a stored secret's name")],
    scope: ScopeOption = None,
    clear: Annotated[
        bool,
        typer.Option("--clear", help="remove the scope: only endpoints naming it as their key"),
    ] = False,
) -> None:
    """Change where a stored secret may be sent: --for openai,vllm, or --clear."""
    from flowbuilder.secrets import SecretError, SecretStore, parse_scope

    try:
        if (scope is not None) == clear:  # exactly one of the two
            raise SecretError("give either --for ENDPOINTS or --clear")
        endpoints = parse_scope(scope) if scope is not None else None
        SecretStore(_home()).set_scope(name, endpoints)
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    err.print(f"secret [bold]{escape(name)}[/]: {escape(_scope_text(endpoints))}")


def _scope_text(scope: tuple[str, ...] | None) -> str:
    if scope is None:
        return "no scope: sent only to an endpoint that names it as its key"
    return "may be sent to " + ", ".join(scope)


@secrets_app.command("list")
def secrets_list(as_json: JsonOption = False) -> None:
    """List secret names (never values) with their scopes: stored ones, and well-known
    environment keys (those go only to their own provider)."""
    import os

    from flowbuilder.secrets import WELL_KNOWN_ENV, SecretStore

    try:
        stored = SecretStore(_home()).scopes()
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    env = [n for n in WELL_KNOWN_ENV[:2] if os.environ.get(n) and n not in stored]
    rows: list[dict[str, Any]] = [
        {"name": n, "source": "store", "scope": list(s) if s is not None else None}
        for n, s in stored.items()
    ]
    rows += [{"name": n, "source": "environment", "scope": None} for n in env]
    if as_json:
        out.print_json(data=rows)
        return
    if not rows:
        err.print("no secrets: add one with `flowbuilder secrets set NAME --for ENDPOINTS`")
        return
    for row in rows:
        if row["source"] == "store":
            scope = row["scope"]
            note = "→ " + ", ".join(scope) if scope else "[dim](no scope)[/]"
        else:
            note = "[dim](environment)[/]"
        out.print(f"{escape(row['name'])}  {note}")


@secrets_app.command("delete")
def secrets_delete(name: Annotated[str, typer.Argument(help="secret name")]) -> None:
    """Remove a stored secret."""
    from flowbuilder.secrets import SecretStore

    try:
        removed = SecretStore(_home()).delete(name)
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    if not removed:
        err.print(f"[red]error:[/] no stored secret named '{escape(name)}'")
        raise typer.Exit(1)
    err.print(f"deleted secret [bold]{escape(name)}[/]")


@secrets_app.command("keygen")
def secrets_keygen() -> None:
    """Print a new random key for FLOWBUILDER_SECRET_KEY."""
    from flowbuilder.secrets import generate_key

    out.print(generate_key(), highlight=False)


# ---- providers -----------------------------------------------------------------------


@providers_app.command("list")
def providers_list(as_json: JsonOption = False) -> None:
    """List providers: local, the built-in endpoints and the configured ones."""
    from flowbuilder.providers.catalog import list_providers

    try:
        rows = list_providers(_home())
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(data=rows)
        return
    table = Table(title="providers (model id = NAME:MODEL)", title_justify="left")
    for col in ("name", "kind", "base URL", "API key", "source"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["name"], r["kind"], r["base_url"] or "-", escape(r["credential_state"]), r["source"]
        )
    out.print(table)


@providers_app.command("add-endpoint")
def providers_add(
    name: Annotated[str, typer.Argument(help="provider name, the prefix of model ids")],
    base_url: Annotated[str, typer.Argument(help="e.g. http://127.0.0.1:11434/v1")],
    api_key_secret: Annotated[
        str | None,
        typer.Option("--api-key-secret", help="name of the secret holding its API key"),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="openai_compatible (default), anthropic, or openai"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="seconds the server may stay silent (default 120)")
    ] = None,
    connect_timeout: Annotated[
        float | None, typer.Option(help="seconds to open a connection (default 10)")
    ] = None,
) -> None:
    """Add (or replace) a named endpoint; `NAME:MODEL` ids then call it."""
    from flowbuilder.providers.config import ProviderConfig, ProviderConfigError

    if kind not in (None, "openai_compatible", "anthropic", "openai"):
        raise _fail(
            ProviderConfigError(
                f"unknown kind '{kind}': use openai_compatible, anthropic or openai"
            )
        )
    try:
        endpoint = ProviderConfig(_home()).add(
            name,
            base_url,
            kind=kind,  # type: ignore[arg-type]
            api_key_secret=api_key_secret,
            timeout_s=timeout,
            connect_timeout_s=connect_timeout,
        )
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    err.print(
        f"endpoint [bold]{escape(name)}[/] ({endpoint.kind}) at {escape(endpoint.base_url or '')}"
        f"; use it as [bold]{escape(name)}:MODEL[/]"
    )


@providers_app.command("remove")
def providers_remove(name: Annotated[str, typer.Argument(help="endpoint name")]) -> None:
    """Remove a configured endpoint (a built-in one returns to its defaults)."""
    from flowbuilder.providers.config import BUILTIN, ProviderConfig

    try:
        removed = ProviderConfig(_home()).remove(name)
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    if not removed:
        what = (
            "is built in and has no settings to remove" if name in BUILTIN else "is not configured"
        )
        err.print(f"[red]error:[/] endpoint '{escape(name)}' {what}")
        raise typer.Exit(1)
    err.print(f"removed endpoint [bold]{escape(name)}[/]")


@providers_app.command("models")
def providers_models(
    name: Annotated[str, typer.Argument(help="an OpenAI-format endpoint, e.g. ollama")],
    credential: Annotated[
        str | None, typer.Option(help="secret name to use instead of the endpoint's")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ask an OpenAI-format endpoint which models it serves (checks URL and key too)."""
    from flowbuilder.providers.config import ProviderConfig, ProviderConfigError
    from flowbuilder.providers.openai import OpenAIProvider
    from flowbuilder.secrets import SecretStore

    home = _home()
    try:
        endpoint = ProviderConfig(home).get(name)
        if endpoint is None or endpoint.kind == "anthropic":
            raise ProviderConfigError(f"'{name}' is not an OpenAI-format endpoint")
        provider = OpenAIProvider(endpoint, SecretStore(home))
        names = asyncio.run(provider.list_models(credential))
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(data=names)
    else:
        for n in names:
            out.print(f"{name}:{n}", highlight=False)


# ---- models ---------------------------------------------------------------------------


@models_app.callback(invoke_without_command=True)
def models_list(as_json: JsonOption = False) -> None:
    """The local model catalogue: id, task, format, parameters, size on disk."""
    from flowbuilder.providers.catalog import human_bytes, human_count, list_local_models

    models = list_local_models(_home())
    if as_json:
        out.print_json(data=[m.to_dict() for m in models])
        return
    table = Table(title=f"{len(models)} local models", title_justify="left")
    for col in ("id", "task", "format", "parameters", "size", "source"):
        table.add_column(col, overflow="fold")
    for m in models:
        table.add_row(
            escape(m.id),
            m.task,
            m.format,
            human_count(m.parameters),
            human_bytes(m.size_bytes),
            m.source,
        )
    out.print(table)
