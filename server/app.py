"""The flowbuilder server: NiceGUI pages (canvas, flow library, runs) and the REST API
on one FastAPI app.

``flowbuilder serve`` calls :func:`serve`. Services (engine, store, run manager) are made
once per process in :func:`setup` and kept on ``app.state.fb``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from nicegui import app, ui
from nicegui.storage import Storage

from flowbuilder.datadir import sessions_dir
from flowbuilder.engine import Engine
from flowbuilder.errors import GraphFileError
from flowbuilder.graph import load_graph
from flowbuilder.secrets import install_log_redaction
from flowbuilder.settings import Settings
from flowbuilder.store import Store
from server.runs import RunManager, default_server_id

log = logging.getLogger(__name__)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Services:
    engine: Engine
    store: Store
    runs: RunManager


def services() -> Services:
    """The process's services (set up by :func:`setup`)."""
    fb: Services = app.state.fb
    return fb


def seed_examples(store: Store, folder: Path = EXAMPLES) -> list[str]:
    """Add each example graph to the flow library once (by name); returns names added."""
    existing = {f.name for f in store.list_flows()}
    added = []
    for path in sorted(folder.glob("*.json")):
        try:
            graph = load_graph(path)
        except GraphFileError as exc:
            log.warning("example %s not loaded: %s", path.name, exc)
            continue
        name = graph.name or path.stem.replace("_", " ").capitalize()
        if name not in existing:
            store.create_flow(name, graph.to_dict())
            added.append(name)
    return added


def setup(
    engine: Engine | None = None, store: Store | None = None, *, server_id: str | None = None
) -> Services:
    """Create the services, take over the runs of servers that stopped, register pages.

    ``server_id`` names this server in the run queue (default
    :func:`~server.runs.default_server_id`). Runs this id owned before (a previous
    process of this server) and runs whose owner's heartbeat is stale end
    ``interrupted`` (or go back to the queue when they never started); other servers'
    live runs on the same database are left alone. The run queue's background task
    starts with the app.

    Raises:
        SettingError: a run queue setting (``FLOWBUILDER_MAX_RUNS``, …) is not a number.
    """
    engine = engine or Engine()
    store = store or Store()
    manager = RunManager(engine, store, owner=server_id)
    requeued, interrupted = store.recover_runs(manager.owner, manager.stale_s, startup=True)
    if interrupted:
        log.warning("%d run(s) were interrupted by a restart", len(interrupted))
    if requeued:
        log.warning("%d run(s) claimed by a stopped server went back to the queue", len(requeued))
    seed_examples(store)
    fb = Services(engine, store, manager)
    app.state.fb = fb
    # both idempotent, and they act on the current services
    app.on_startup(lambda: services().runs.start_background())
    app.on_shutdown(lambda: services().runs.stop_background())
    from server.api.artifacts import router as artifacts_router
    from server.pages import editor, flows, knowledge, runs, settings  # noqa: F401  (registers pages)

    if not any(getattr(r, "path", "") == "/api/v1/artifacts" for r in app.routes):
        app.include_router(artifacts_router)
    from server.api import install as install_api

    install_api(app)  # flows, runs, the OpenAI facade, API keys, the per-flow schema
    return fb


def serve(host: str = "127.0.0.1", port: int = 8080, *, no_auth: bool = False) -> None:
    """Start the server and block until it stops.

    A key, the server's token or a session is required on every page, route and
    websocket unless ``no_auth`` (``--no-auth``, loopback binds only); the tokenised URL
    is printed when the server starts.

    Raises:
        AuthSettingError: ``no_auth`` (or ``FLOWBUILDER_NO_AUTH``) beyond loopback or with
            ``FLOWBUILDER_REQUIRE_AUTH=1`` (raised before anything starts).
    """
    from server.api import main_gate
    from server.api.auth import auth_required
    from server.api.token import server_token, session_secret

    settings = Settings.from_env()
    required = auth_required(settings, host, no_auth)
    install_log_redaction()
    setup(server_id=default_server_id(port))
    token = server_token(settings) if required else None
    app.state.fb_gate = main_gate(app, settings, host, required=required, token=token)
    app.on_startup(lambda: announce(host, port, token, settings))
    # per-session storage: the private data directory (0700), not .nicegui in the cwd
    Storage.path = sessions_dir(settings.home)
    from server.api.docs_pages import add_docs_pages

    app.openapi_url = "/openapi.json"
    app.setup()  # FastAPI's /openapi.json route; /docs is ours, ReDoc is not served
    add_docs_pages(app, app.title)
    ui.run(
        storage_secret=session_secret(settings.home),
        # one cookie per port: two local servers do not overwrite each other's session
        session_middleware_kwargs={"session_cookie": f"flowbuilder-{port}", "same_site": "lax"},
        host=host,
        port=port,
        title="flowbuilder",
        show=False,
        reload=False,
        favicon="🔀",
        dark=True,
        show_welcome_message=False,
    )


def announce(host: str, port: int, token: str | None, settings: Settings) -> None:
    """Print where the server answers: the tokenised URL(s), or the plain one with
    ``--no-auth``; and, on a wildcard bind, which Host names are accepted."""
    from server.api.origin import WILDCARD_BINDS
    from server.api.token import token_urls

    if token is None:
        print(f"flowbuilder is serving at http://127.0.0.1:{port}/ (--no-auth: no key needed)")
    else:
        print("flowbuilder is serving; open this URL (it signs the browser in):")
        for url in token_urls(host, port, token):
            print(f"    {url}")
    if host.strip() in WILDCARD_BINDS:
        extra = ", ".join(settings.allowed_hosts) or "none"
        print(
            f"bound to {host or 'every address'}: requests must name the server as "
            f"127.0.0.1, localhost or ::1, or a host in FLOWBUILDER_ALLOWED_HOSTS ({extra})"
        )
    sys.stdout.flush()
