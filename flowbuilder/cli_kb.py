"""``flowbuilder kb``: list, create, delete and fill knowledge bases.

``kb ingest NAME PATH`` runs the Ingest node (the same code a flow runs) on a file or
folder, with a progress bar of files and chunks; run it again after editing files and
only what changed is embedded. The path named on the command line is allowed even when
it lies outside the current folder. Exit code 1 for a bad name, path or unknown
knowledge base, 2 when the ingest fails (e.g. a file it cannot read, another model).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flowbuilder.errors import FlowbuilderError
from flowbuilder.knowledge import KnowledgeBases, format_time
from flowbuilder.settings import Settings

out = Console()
err = Console(stderr=True)

kb_app = typer.Typer(no_args_is_help=True, help="Knowledge bases for retrieval (RAG).")

DEFAULT_MODEL = "local:all-minilm-l6-v2"
LocationOption = Annotated[
    str,
    typer.Option(
        "--location",
        help="a folder or LanceDB URI (default: FLOWBUILDER_KNOWLEDGE_URI, else "
        "FLOWBUILDER_HOME/knowledge)",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


def _kbs(location: str) -> KnowledgeBases:
    return KnowledgeBases.from_settings(Settings.from_env(), location)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(str(exc))}")
    return typer.Exit(1)


@kb_app.command("list")
def kb_list(location: LocationOption = "", as_json: JsonOption = False) -> None:
    """List knowledge bases: model, documents, chunks, last ingest."""
    try:
        infos = _kbs(location).list()
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(data=[i.model_dump() for i in infos])
        return
    if not infos:
        out.print("No knowledge bases yet: `flowbuilder kb ingest NAME FOLDER` makes one.")
        return
    table = Table(title=f"{len(infos)} knowledge base(s)", title_justify="left")
    for col in ("name", "model", "documents", "chunks", "last ingest"):
        table.add_column(col)
    for i in infos:
        table.add_row(
            i.name, i.model, str(i.documents), str(i.chunks), format_time(i.last_ingest_at)
        )
    out.print(table)


def _model_dimensions(model: str) -> int:
    from flowbuilder.engine import Engine
    from flowbuilder.knowledge import embedding_dimensions

    return asyncio.run(embedding_dimensions(Engine(cache=False), model))


@kb_app.command("create")
def kb_create(
    name: Annotated[str, typer.Argument(help="knowledge base name")],
    model: Annotated[str, typer.Option(help="embedding model (provider:model)")] = DEFAULT_MODEL,
    location: LocationOption = "",
) -> None:
    """Create an empty knowledge base for one embedding model."""
    try:
        kbs = _kbs(location)
        if kbs.exists(name):
            raise _fail(ValueError(f"a knowledge base named '{name}' already exists"))
        kbs.create(name, model, _model_dimensions(model))
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    out.print(f"created knowledge base [bold]{escape(name)}[/] ({escape(model)})")


@kb_app.command("delete")
def kb_delete(
    name: Annotated[str, typer.Argument(help="knowledge base name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    location: LocationOption = "",
) -> None:
    """Delete a knowledge base and everything in it."""
    try:
        kbs = _kbs(location)
        info = kbs.open(name).info()
        if not yes and not typer.confirm(
            f"delete '{name}' ({info.documents} documents, {info.chunks} chunks)?"
        ):
            raise typer.Exit(1)
        kbs.delete(name)
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    out.print(f"deleted knowledge base [bold]{escape(name)}[/]")


@kb_app.command("ingest")
def kb_ingest(
    name: Annotated[str, typer.Argument(help="knowledge base name (created if missing)")],
    path: Annotated[Path, typer.Argument(help="a file or folder of documents")],
    model: Annotated[
        str, typer.Option(help="embedding model for a new knowledge base")
    ] = DEFAULT_MODEL,
    chunk_size: Annotated[int, typer.Option(help="most characters (or tokens) a chunk")] = 1000,
    chunk_overlap: Annotated[int, typer.Option(help="shared between neighbours")] = 100,
    unit: Annotated[str, typer.Option(help="characters or tokens")] = "characters",
    pattern: Annotated[str, typer.Option(help="only files matching this glob")] = "",
    prune: Annotated[
        bool, typer.Option("--prune", help="remove documents whose files are gone")
    ] = False,
    location: LocationOption = "",
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
) -> None:
    """Load, split, embed and write documents; unchanged files are skipped."""
    from flowbuilder import events
    from flowbuilder.builder import GraphBuilder
    from flowbuilder.engine import Engine

    if not path.exists():
        raise _fail(FileNotFoundError(f"no such file or folder: {path}"))
    # the folder and location are the user's own choice: the node may use them
    base = Settings.from_env()
    folder = path.resolve() if path.is_dir() else path.resolve().parent
    overrides: dict[str, object] = {"file_roots": (*base.file_roots, folder)}
    if location:
        overrides["knowledge_uri"] = location
    engine = Engine(settings=Settings.from_env(**overrides), cache=False)
    b = GraphBuilder(engine.registry)
    node = b.add(
        "rag/ingest",
        path=str(path.resolve()),
        knowledge_base=name,
        model=model,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        unit=unit,
        pattern=pattern,
        prune=prune,
    )
    sink = b.add("core/output", name="summary")
    b.link(node, "summary", sink, "value")
    progress = Progress(
        TextColumn("ingest"),
        BarColumn(bar_width=30),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or as_json,
    )
    task = progress.add_task("ingest", total=1.0, status="starting")

    def listen(event: Any) -> None:
        if isinstance(event, events.NodeProgress) and event.fraction is not None:
            progress.update(task, completed=event.fraction, status=event.message)

    try:
        graph = b.build()
        with progress:
            result = asyncio.run(engine.run(graph, {}, listeners=[listen], use_cache=False))
    except FlowbuilderError as exc:
        raise _fail(exc) from None
    if result.status != "finished":
        err.print(f"[red]ingest failed:[/] {escape(result.error or result.status)}")
        raise typer.Exit(2)
    summary = result.outputs["summary"]
    if as_json:
        out.print_json(data={"knowledge_base": name, **summary})
        return
    out.print(
        f"[bold]{escape(name)}[/]: {summary['files']} files — {summary['added']} added, "
        f"{summary['updated']} updated, {summary['unchanged']} unchanged, "
        f"{summary['removed']} removed; {summary['chunks']} chunks written"
    )
