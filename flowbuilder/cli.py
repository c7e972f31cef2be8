"""The ``flowbuilder`` command line (Typer + Rich).

Exit codes: 0 ok, 1 invalid graph or inputs, 2 run failed, 130 cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from flowbuilder import events
from flowbuilder.cli_kb import kb_app
from flowbuilder.cli_providers import models_app, providers_app, secrets_app
from flowbuilder.cli_roots import roots_app
from flowbuilder.cli_serve import serve_flow, serve_web_app
from flowbuilder.engine import Engine, to_jsonable
from flowbuilder.errors import GraphFileError, GraphInvalid, InputError, Issue
from flowbuilder.graph import load_graph
from flowbuilder.scheduler import RunResult
from flowbuilder.secrets import install_log_redaction
from flowbuilder.settings import Settings, SettingsError
from flowbuilder.types import ArtifactRef
from flowbuilder.validate import Plan

EXIT_OK, EXIT_INVALID, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2, 130

# Click exits 2 on a usage error (unknown option, missing argument); here 2 means "a node
# failed", so a mistyped command line is reported as invalid input instead.
click.exceptions.UsageError.exit_code = EXIT_INVALID

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Build and run AI workflows from graph files."
)
out = Console()
err = Console(stderr=True)


def _setup_logging(verbose: bool) -> None:
    install_log_redaction()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
    )


def _issues_table(issues: list[Issue]) -> Table:
    table = Table(
        title=f"{len(issues)} problem(s) in the graph", title_justify="left", show_lines=False
    )
    for col in ("node", "type", "field", "problem"):
        table.add_column(col, overflow="fold")
    for i in issues:
        table.add_row(i.node_id or "-", i.node_type or "-", i.field or "-", escape(i.message))
    return table


def _load(path: Path, engine: Engine, as_json: bool, report: Console = err) -> Plan:
    """Load and check a graph; on a problem print it (to ``report``) and exit 1."""
    try:
        return engine.compile(load_graph(path))
    except GraphFileError as exc:
        if as_json:
            out.print_json(
                data={
                    "ok": False,
                    "status": "invalid",
                    "error": str(exc),
                    "line": exc.line,
                    "column": exc.column,
                    "issues": [],
                }
            )
        else:
            err.print(
                Panel(escape(str(exc)), title="cannot read the graph file", border_style="red")
            )
        raise typer.Exit(EXIT_INVALID) from None
    except GraphInvalid as exc:
        if as_json:
            out.print_json(
                data={"ok": False, "status": "invalid", "issues": [i.to_dict() for i in exc.issues]}
            )
        else:
            report.print(_issues_table(exc.issues))
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
def validate(
    graph: Annotated[Path, typer.Argument(help="graph file (.json)")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON report")] = False,
) -> None:
    """Check a graph file and list every problem, with node ids. Exit 1 if any."""
    engine = Engine(cache=False)
    plan = _load(graph, engine, as_json, report=out)  # the report is validate's output
    signature = {
        "inputs": [{"name": i.name, "type": i.type, "required": i.required} for i in plan.inputs],
        "outputs": [{"name": o.name, "type": o.type} for o in plan.outputs],
    }
    if as_json:
        out.print_json(data={"ok": True, "issues": [], "nodes": len(plan.nodes), **signature})
        return
    ins = ", ".join(f"{i.name}: {i.type}" for i in plan.inputs) or "none"
    outs = ", ".join(f"{o.name}: {o.type}" for o in plan.outputs) or "none"
    count = f"{len(plan.nodes)} node{'s' if len(plan.nodes) != 1 else ''}"
    out.print(f"[green]ok[/]: {count}; inputs: {escape(ins)}; outputs: {escape(outs)}")


def _parse_inputs(plan: Plan, pairs: list[str], input_json: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if input_json:
        try:
            text = sys.stdin.read() if input_json == "-" else Path(input_json).read_text()
            data = json.loads(text)
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError("--input-json", str(exc)) from None
        if not isinstance(data, dict):
            raise InputError("--input-json", "must hold a JSON object of inputs by name")
        values.update(data)
    types = {i.name: i.type for i in plan.inputs}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise InputError(pair, "write --input as name=value")
        kind = types.get(name, "text")
        if kind in ("integer", "number", "boolean", "json") or kind.startswith("list["):
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError:
                raise InputError(name, f"expected a {kind} value, got {raw!r}") from None
        else:
            values[name] = raw
    return values


class _ProgressView:
    """Draws run events as one Rich progress row per node."""

    GLYPH = {
        "queued": "[dim]·[/]",
        "running": "[yellow]▶[/]",
        "cached": "[cyan]↺[/]",
        "done": "[green]✔[/]",
        "failed": "[red]✘[/]",
        "skipped": "[dim]–[/]",
    }

    def __init__(self, plan: Plan) -> None:
        self.progress = Progress(
            TextColumn("{task.fields[glyph]} {task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=err,
        )
        self.tasks: dict[str, TaskID] = {}
        for node_id, pn in plan.nodes.items():
            title = pn.cls.meta.title or pn.type
            if pn.cls.role is not None:
                title += f" {pn.params.get('name', pn.cls.role)}"
            self.tasks[node_id] = self.progress.add_task(
                f"{node_id:>3} {title}",
                total=None,
                start=False,
                glyph=self.GLYPH["queued"],
                status="queued",
            )

    def _set(self, node_id: str, state: str, status: str | None = None, **kw: Any) -> None:
        task = self.tasks.get(node_id)
        if task is not None:
            self.progress.update(task, glyph=self.GLYPH[state], status=status or state, **kw)

    def __call__(self, event: Any) -> None:
        if isinstance(event, events.NodeStarted):
            self.progress.start_task(self.tasks[event.node_id])
            self._set(event.node_id, "running")
        elif isinstance(event, events.NodeProgress):
            kw: dict[str, Any] = {}
            if event.fraction is not None:
                kw = {"total": 1.0, "completed": event.fraction}
            self._set(event.node_id, "running", event.message or "running", **kw)
        elif isinstance(event, events.NodeCached):
            self._set(event.node_id, "cached", total=1.0, completed=1.0)
        elif isinstance(event, events.NodeFinished):
            self._set(
                event.node_id, "done", f"done in {event.elapsed_s:.2f} s", total=1.0, completed=1.0
            )
            self.progress.stop_task(self.tasks[event.node_id])
        elif isinstance(event, events.NodeFailed):
            self._set(event.node_id, "failed")
            self.progress.stop_task(self.tasks[event.node_id])
        elif isinstance(event, events.NodeSkipped):
            self._set(event.node_id, "skipped")


def _show_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, ArtifactRef):
        return f"<{value.kind} {value.name or value.id[:12]} ({value.size} bytes)>"
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)


def _write_out(engine: Engine, result: RunResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, value in result.outputs.items():
        if isinstance(value, ArtifactRef):
            suffix = Path(value.name).suffix
            engine.artifacts.export(value, out_dir / f"{name}{suffix}")
    (out_dir / "outputs.json").write_text(
        json.dumps(to_jsonable(result.outputs), indent=2, ensure_ascii=False) + "\n"
    )


@app.command()
def run(
    graph: Annotated[Path, typer.Argument(help="graph file (.json)")],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="flow input as name=value (a path for file inputs); repeat"
        ),
    ] = None,
    input_json: Annotated[
        str | None,
        typer.Option("--input-json", help="a JSON file of inputs by name, or - for standard input"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print outputs as one JSON object")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="write outputs and artifacts to this folder")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="run every node")] = False,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going", help="after a failure, run every branch that does not depend on it"
        ),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="per-node time limit in seconds")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log more")] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="where nodes run: local (this process) or ray (a Ray cluster); "
            "default FLOWBUILDER_EXECUTOR or local",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster to join (auto, ray://host:10001); default "
            "FLOWBUILDER_RAY_ADDRESS, else a local cluster is started",
        ),
    ] = None,
) -> None:
    """Run a graph file and print its outputs."""
    _setup_logging(verbose)
    overrides: dict[str, object] = {}
    if executor is not None:
        overrides["executor"] = executor.strip().lower()
    if address is not None:
        overrides["ray_address"] = address
        overrides.setdefault("executor", "ray")
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        err.print(Panel(escape(str(exc)), title="bad setting", border_style="red"))
        raise typer.Exit(EXIT_INVALID) from None
    engine = Engine(settings=settings, cache=not no_cache)
    plan = _load(graph, engine, as_json)
    try:
        values = _parse_inputs(plan, inputs or [], input_json)
        bound = engine.bind_inputs(plan, values, base_dir=Path.cwd())
    except InputError as exc:
        if as_json:
            out.print_json(data={"status": "invalid", "error": str(exc)})
        else:
            err.print(Panel(escape(str(exc)), title="bad input", border_style="red"))
        raise typer.Exit(EXIT_INVALID) from None

    start = getattr(engine.executor, "start", None)
    if start is not None:  # join or start the cluster now, from the main thread
        try:
            start()
        except Exception as exc:
            where = settings.ray_address or "a local cluster"
            err.print(
                Panel(escape(f"{type(exc).__name__}: {exc}"), title=f"cannot start Ray ({where})")
            )
            raise typer.Exit(EXIT_FAILED) from None

    view = None if quiet else _ProgressView(plan)
    listeners: list[events.Listener] = [view] if view else []

    async def go() -> RunResult:
        return await engine.scheduler.execute(
            plan,
            bound,
            listeners=listeners,
            keep_going=keep_going,
            use_cache=not no_cache,
            node_timeout=timeout,
        )

    try:
        if view:
            with view.progress:
                result = asyncio.run(go())
        else:
            result = asyncio.run(go())
    finally:
        engine.close()

    if out_dir is not None:
        _write_out(engine, result, out_dir)
    if as_json:
        payload: dict[str, Any] = {
            "status": result.status,
            "run_id": result.run_id,
            "outputs": to_jsonable(result.outputs),
            "elapsed_s": round(result.elapsed_s, 3),
        }
        if result.error:
            payload.update(
                error=result.error, node_id=result.failed_node, node_errors=result.node_errors
            )
        out.print_json(data=payload)
    else:
        for name, value in result.outputs.items():
            out.rule(f"[bold]{name}", align="left")
            out.print(_show_value(value), markup=False, highlight=False)
    if result.status == "cancelled":
        err.print("[yellow]cancelled[/]")
        raise typer.Exit(EXIT_CANCELLED)
    if result.status == "failed":
        pn = plan.nodes.get(result.failed_node or "")
        title = f"node {result.failed_node} ({pn.type if pn else '?'}) failed"
        if not as_json:
            err.print(Panel(escape(result.error or ""), title=escape(title), border_style="red"))
        raise typer.Exit(EXIT_FAILED)


@app.command("nodes")
def list_nodes(
    as_json: Annotated[bool, typer.Option("--json", help="print the catalogue as JSON")] = False,
) -> None:
    """List the node types: type id, version, category, ports, parameters."""
    engine = Engine(cache=False)
    catalogue = engine.registry.catalogue()
    if as_json:
        out.print_json(data=catalogue)
        return
    table = Table(title=f"{len(catalogue)} node types", title_justify="left", show_lines=True)
    # the type id stays whole (it is what a graph file and grep need); the rest folds
    widest = max((len(e["type"]) for e in catalogue), default=4)
    table.add_column("type", no_wrap=True, min_width=widest)
    for col in ("version", "category", "inputs", "params", "outputs"):
        table.add_column(col, overflow="fold")
    for e in catalogue:
        table.add_row(
            e["type"],
            e["version"],
            e["category"],
            escape(
                "\n".join(
                    f"{p['name']}: {p['type']}{'' if p['required'] else '?'}" for p in e["inputs"]
                )
            ),
            escape(
                "\n".join(
                    f"{p['name']}: {p['type']}"
                    for p in e["params"]
                    if not p["schema"].get("hidden")
                )
            ),
            escape("\n".join(f"{p['name']}: {p['type']}" for p in e["outputs"])),
        )
    out.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind; 127.0.0.1 keeps it local")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="no key or token needed (loopback binds only; Host, Origin and JSON-only "
            "checks stay)",
        ),
    ] = False,
) -> None:
    """Start the web app: canvas, flow library, runs, and the HTTP API.

    Prints a URL with the server's token: opening it signs the browser in.
    """
    _setup_logging(False)
    serve_web_app(host, port, no_auth)


app.add_typer(secrets_app, name="secrets")
app.add_typer(providers_app, name="providers")
app.add_typer(models_app, name="models")
app.add_typer(kb_app, name="kb")
app.add_typer(roots_app, name="roots")
from flowbuilder.cli_keys import keys_app  # noqa: E402

app.add_typer(keys_app, name="keys")
app.command("serve-flow")(serve_flow)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
