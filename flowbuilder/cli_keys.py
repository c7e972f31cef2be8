"""``flowbuilder keys create|list|revoke``: API keys.

A key is shown once, when it is made; the store keeps only its SHA-256 and its first
8 characters (to tell keys apart in lists).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
