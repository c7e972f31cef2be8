"""The run store: saved flows and their versions, runs and their events, the run queue,
API keys — SQLModel tables on SQLite or PostgreSQL.

The parts, one concern each, share one :class:`~flowbuilder.store.db.Database`:

- :mod:`~flowbuilder.store.tables` the tables (``flows``, ``flow_versions``, ``runs``,
  ``node_runs``, ``run_events``, ``api_keys``) and the status values;
- :mod:`~flowbuilder.store.db` where the database is (``FLOWBUILDER_DATABASE_URL``, else
  SQLite in ``FLOWBUILDER_HOME``), its engine and transactions, the Alembic migrations;
- :mod:`~flowbuilder.store.flows` flows and versions (:class:`Flows`);
- :mod:`~flowbuilder.store.runs` runs, node runs and events, recorded as a run goes
  (:class:`RunRecorder`) or in one group commit at its end (:class:`Runs`);
- :mod:`~flowbuilder.store.queue` the run queue shared by several servers: claim,
  heartbeat, cancel requests, recovery (:class:`RunQueue`);
- :mod:`~flowbuilder.store.keys` API keys (:class:`ApiKeys`).

:class:`Store` opens the database, brings its schema up to date and offers every part's
methods under their own names (``store.create_flow`` is ``store.flows.create_flow``).

Every method is synchronous, thread-safe (one engine per store, one session and one
transaction per call) and returns detached records.

Typical use::

    store = Store()
    flow = store.create_flow("Voice memo", graph.to_dict())
    store.create_run(run_id, flow_id=flow.id, source="canvas", inputs={"audio": "memo.ogg"})
    result = await engine.run(graph, inputs, run_id=run_id,
                              listeners=[store.recorder(run_id)])
    store.save_result(result)          # full outputs (events carry summaries only)
"""

from __future__ import annotations

import sqlalchemy as sa

from flowbuilder.store.db import Database, alembic_config, default_url, make_engine
from flowbuilder.store.errors import AlreadyExists, NotFound
from flowbuilder.store.flows import Flows
from flowbuilder.store.keys import API_KEY_PREFIX, ApiKeys
from flowbuilder.store.queue import INTERRUPTED_ERROR, RUN_STALE_S, RunQueue
from flowbuilder.store.runs import PROGRESS_INTERVAL_S, FinishedRun, RunRecorder, Runs
from flowbuilder.store.tables import (
    FINAL_RUN_STATUSES,
    LIVE_RUN_STATUSES,
    NODE_STATUSES,
    RUN_STATUSES,
    ApiKey,
    Flow,
    FlowVersion,
    NodeRun,
    Run,
    RunEvent,
)


class Store:
    """Flows, versions, runs, events, the run queue and API keys in one database.

    Args:
        url: an SQLAlchemy URL (``sqlite:///path.db``,
            ``postgresql+psycopg://user:password@host/db``); default :func:`default_url`.
        migrate: bring the schema up to date now (see :meth:`migrate`).

    The parts are ``flows`` (:class:`Flows`), ``runs`` (:class:`Runs`), ``queue``
    (:class:`RunQueue`) and ``keys`` (:class:`ApiKeys`); their methods are also the
    store's own. Use one store per process (it holds a connection pool); :meth:`close`
    releases it.
    """

    def __init__(self, url: str | sa.URL | None = None, *, migrate: bool = True) -> None:
        self.db = Database(url)
        self.url, self.engine = self.db.url, self.db.engine
        if migrate:
            self.migrate()
        self.flows = flows = Flows(self.db)
        self.runs = runs = Runs(self.db)
        self.queue = queue = RunQueue(self.db)
        self.keys = keys = ApiKeys(self.db)

        self.create_flow = flows.create_flow
        self.list_flows = flows.list_flows
        self.get_flow = flows.get_flow
        self.save_flow = flows.save_flow
        self.rename_flow = flows.rename_flow
        self.duplicate_flow = flows.duplicate_flow
        self.delete_flow = flows.delete_flow
        self.set_published = flows.set_published
        self.list_versions = flows.list_versions
        self.get_version = flows.get_version
        self.restore_version = flows.restore_version

        self.create_run = runs.create_run
        self.get_run = runs.get_run
        self.list_runs = runs.list_runs
        self.count_runs = runs.count_runs
        self.delete_run = runs.delete_run
        self.node_runs = runs.node_runs
        self.events_after = runs.events_after
        self.recorder = runs.recorder
        self.save_result = runs.save_result
        self.add_finished_runs = runs.add_finished_runs

        self.claim_runs = queue.claim_runs
        self.heartbeat = queue.heartbeat
        self.request_cancel = queue.request_cancel
        self.recover_runs = queue.recover_runs
        self.mark_interrupted = queue.mark_interrupted

        self.create_api_key = keys.create_api_key
        self.list_api_keys = keys.list_api_keys
        self.revoke_api_key = keys.revoke_api_key
        self.get_api_key = keys.get_api_key
        self.verify_api_key = keys.verify_api_key

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def migrate(self) -> None:
        """Create or update the tables (see :meth:`Database.migrate`)."""
        self.db.migrate()

    def close(self) -> None:
        """Close every pooled connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "API_KEY_PREFIX",
    "FINAL_RUN_STATUSES",
    "INTERRUPTED_ERROR",
    "LIVE_RUN_STATUSES",
    "NODE_STATUSES",
    "PROGRESS_INTERVAL_S",
    "RUN_STALE_S",
    "RUN_STATUSES",
    "AlreadyExists",
    "ApiKey",
    "ApiKeys",
    "Database",
    "FinishedRun",
    "Flow",
    "FlowVersion",
    "Flows",
    "NodeRun",
    "NotFound",
    "Run",
    "RunEvent",
    "RunQueue",
    "RunRecorder",
    "Runs",
    "Store",
    "alembic_config",
    "default_url",
    "make_engine",
]
