"""``flowbuilder keys create|list|revoke`` (API keys) and ``flowbuilder serve-flow``.

A key is shown once, when it is made; the store keeps only its SHA-256 and its first
8 characters (to tell keys apart in lists).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowbuilder.errors import GraphFileError, GraphInvalid
from flowbuilder.store import NotFound, Store

keys_app = typer.Typer(
    no_args_is_help=True,
    help="API keys for the HTTP API and the canvas (the server's token works too).",
)
out = Console()
err = Console(stderr=True)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="what the key is for")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Make a key and print it (once: only its hash is stored)."""
    with Store() as store:
        key, record = store.create_api_key(name)
    if as_json:
        print(json.dumps({"id": record.id, "name": record.name, "key": key}))
        return
    print(key)
    err.print(
        f"[green]API key[/] {escape(record.name)} ({record.id}) made. Keep it now: it is not "
        "shown again. Send it as 'Authorization: Bearer <key>'."
    )


@keys_app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List keys: id, name, prefix, created, last used, revoked (never the keys)."""
    with Store() as store:
        records = store.list_api_keys()
    rows = [
        {
            "id": r.id,
            "name": r.name,
            "prefix": r.prefix,
            "created_at": r.created_at.isoformat(),
            "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in records
    ]
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        err.print("no API keys (flowbuilder keys create)")
        return
    table = Table(title_justify="left")
    for col in ("id", "name", "prefix", "created", "last used", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            escape(str(r["name"])),
            f"{r['prefix']}…",
            (r["created_at"] or "")[:19],
            (r["last_used_at"] or "never")[:19],
            (r["revoked_at"] or "")[:19],
        )
    out.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key's id (see keys list)")]) -> None:
    """Revoke a key: requests with it are refused (403) from now on."""
    with Store() as store:
        try:
            record = store.revoke_api_key(key_id)
        except NotFound:
            err.print(f"[red]no API key {escape(key_id)}[/] (see flowbuilder keys list)")
            raise typer.Exit(1) from None
    err.print(f"revoked {escape(record.name)} ({record.id})")


def serve_flow(
    graph: Annotated[
        Path, typer.Argument(help="a graph file (.json)", exists=True, dir_okay=False)
    ],
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="no key or token needed (loopback binds only)"),
    ] = False,
) -> None:
    """Serve one flow file as an HTTP endpoint: no UI, no database (POST /run, /docs).

    Needs the server's token or an API key, like ``flowbuilder serve``.
    """
    from flowbuilder.settings import Settings
    from server.api.auth import AuthSettingError, auth_required
    from server.api.token import server_token, token_urls
    from server.headless import build_app, flow_gate

    settings = Settings.from_env()
    try:
        required = auth_required(settings, host, no_auth)
        app = build_app(graph)
    except AuthSettingError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None
    except (GraphFileError, GraphInvalid) as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    token = server_token(settings) if required else None
    app.state.fb_gate = flow_gate(settings, host, required=required, token=token)
    import uvicorn

    err.print(f"serving [bold]{escape(str(graph))}[/] at http://{host}:{port}/run")
    if token is None:
        err.print(f"docs: http://127.0.0.1:{port}/docs (--no-auth: no key needed)")
    else:
        err.print("docs (the URL signs the browser in; send the token as a Bearer key):")
        for url in token_urls(host, port, token, "/docs"):
            err.print(url, soft_wrap=True, markup=False, highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")
