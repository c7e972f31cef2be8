"""The commands that start a server: ``flowbuilder serve`` (the web app) and
``flowbuilder serve-flow`` (one flow file as an HTTP endpoint).

The one engine module that imports the server package, and only inside these functions,
so that no other command loads it: the import contract "the engine never imports the
server" (``[tool.importlinter]`` in pyproject.toml) names this module as its one
exception — import-linter sees an import inside a function as any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flowbuilder.errors import GraphFileError, GraphInvalid

err = Console(stderr=True)


def serve_web_app(host: str, port: int, no_auth: bool) -> None:
    """Run the web app (canvas, flow library, runs, HTTP API) until interrupted; exit
    code 2 for an auth setting that forbids this bind (see :mod:`server.api.auth`)."""
    from server.api.auth import AuthSettingError
    from server.app import serve as serve_app

    try:
        serve_app(host=host, port=port, no_auth=no_auth)
    except AuthSettingError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from None


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
