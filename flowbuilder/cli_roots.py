"""``flowbuilder roots``: the folders nodes may use (the file-access policy's roots).

``list`` shows them all; ``add``/``remove`` change the ones kept in the data directory
(``file_roots.json``, shared with the Settings page). The workspace and the folders in
``FLOWBUILDER_FILE_ROOTS`` are listed but changed elsewhere. Exit code 1 for a folder
that cannot be added.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowbuilder.file_roots import RootsError, add_root, listed_roots, remove_root
from flowbuilder.settings import Settings

out = Console()
err = Console(stderr=True)

roots_app = typer.Typer(
    no_args_is_help=True, help="Folders nodes may read and write (besides the workspace)."
)
FolderArg = Annotated[str, typer.Argument(help="an absolute folder path")]


@roots_app.command("list")
def roots_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every folder nodes may use, and where it comes from."""
    rows = [{"path": str(p), "source": s} for p, s in listed_roots(Settings.from_env())]
    if as_json:
        out.print_json(data=rows)
        return
    table = Table(title="folders nodes may use", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("source")
    for row in rows:
        table.add_row(escape(row["path"]), row["source"])
    out.print(table)


@roots_app.command("add")
def roots_add(folder: FolderArg) -> None:
    """Let nodes read and write under FOLDER (never the data directory's insides)."""
    try:
        real = add_root(Settings.from_env().home, folder)
    except RootsError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    err.print(f"nodes may use files under [bold]{escape(str(real))}[/]")


@roots_app.command("remove")
def roots_remove(folder: FolderArg) -> None:
    """Stop nodes using FOLDER (one added with ``roots add`` or the Settings page)."""
    if not remove_root(Settings.from_env().home, folder):
        err.print(f"[red]error:[/] {escape(folder)} is not an added root")
        raise typer.Exit(1)
    err.print(f"removed [bold]{escape(folder)}[/]")
