"""Saved flows and their versions (the ``flows`` and ``flow_versions`` tables).

Every save that changes a flow's graph adds a version (1, 2, …); restoring an old version
adds a new one equal to it, so history is never rewritten.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from flowbuilder.graph import Graph
from flowbuilder.store.db import Database, require
from flowbuilder.store.tables import Flow, FlowVersion, Run
from flowbuilder.store.values import graph_data, new_id, now


class Flows:
    """Flows and their versions in ``db``. Every method is one transaction and returns
    detached records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_flow(self, name: str, graph: dict[str, Any] | Graph) -> Flow:
        """Save a new flow (version 1) and return it.

        Raises:
            TypeError: ``graph`` is not JSON data.
        """
        data, t = graph_data(graph), now()
        flow = Flow(id=new_id(), name=name, graph=data, created_at=t, updated_at=t)
        with self.db.write() as s:
            s.add(flow)
            s.add(FlowVersion(flow_id=flow.id, version=1, graph=data, created_at=t))
        return flow

    def list_flows(self, *, published: bool | None = None) -> list[Flow]:
        """Every flow (or only published / unpublished ones), most recently updated first."""
        query = select(Flow).order_by(col(Flow.updated_at).desc(), col(Flow.id))
        if published is not None:
            query = query.where(col(Flow.published) == published)
        with self.db.read() as s:
            return list(s.exec(query).all())

    def get_flow(self, flow_id: str) -> Flow:
        """Raises: NotFound."""
        with self.db.read() as s:
            return require(s, Flow, flow_id, "flow")

    def save_flow(
        self, flow_id: str, graph: dict[str, Any] | Graph, name: str | None = None
    ) -> Flow:
        """Save a flow's graph (and optionally its name); return the flow.

        A new version is made only when the graph differs from the current one (compared
        as JSON data, so key order does not count).

        Raises:
            NotFound: no such flow.
            TypeError: ``graph`` is not JSON data.
        """
        data, t = graph_data(graph), now()
        with self.db.write() as s:
            flow = require(s, Flow, flow_id, "flow", lock=True)
            _set_graph(s, flow, data, t)
            if name is not None and name != flow.name:
                flow.name, flow.updated_at = name, t
                s.add(flow)
            return flow

    def rename_flow(self, flow_id: str, name: str) -> Flow:
        """Raises: NotFound."""
        with self.db.write() as s:
            flow = require(s, Flow, flow_id, "flow", lock=True)
            if name != flow.name:
                flow.name, flow.updated_at = name, now()
                s.add(flow)
            return flow

    def duplicate_flow(self, flow_id: str, name: str | None = None) -> Flow:
        """A new, unpublished flow (version 1) with the same graph; named
        "<name> (copy)" unless ``name`` is given.

        Raises:
            NotFound: no such flow.
        """
        t = now()
        with self.db.write() as s:
            src = require(s, Flow, flow_id, "flow")
            data = graph_data(src.graph)
            flow = Flow(
                id=new_id(),
                name=name if name is not None else f"{src.name} (copy)",
                graph=data,
                created_at=t,
                updated_at=t,
            )
            s.add(flow)
            s.add(FlowVersion(flow_id=flow.id, version=1, graph=data, created_at=t))
            return flow

    def delete_flow(self, flow_id: str) -> None:
        """Delete a flow and its versions. Its runs are kept, with ``flow_id`` set to null.

        Raises:
            NotFound: no such flow.
        """
        with self.db.write() as s:
            flow = require(s, Flow, flow_id, "flow", lock=True)
            s.exec(sa.update(Run).where(col(Run.flow_id) == flow_id).values(flow_id=None))
            s.exec(sa.delete(FlowVersion).where(col(FlowVersion.flow_id) == flow_id))
            s.delete(flow)

    def set_published(self, flow_id: str, published: bool) -> Flow:
        """Publish a flow (serve it as an HTTP endpoint) or take it back.

        Raises:
            NotFound: no such flow.
        """
        with self.db.write() as s:
            flow = require(s, Flow, flow_id, "flow", lock=True)
            if flow.published != published:
                flow.published, flow.updated_at = published, now()
                s.add(flow)
            return flow

    def list_versions(self, flow_id: str) -> list[FlowVersion]:
        """A flow's versions, newest first.

        Raises:
            NotFound: no such flow.
        """
        with self.db.read() as s:
            require(s, Flow, flow_id, "flow")
            query = (
                select(FlowVersion)
                .where(col(FlowVersion.flow_id) == flow_id)
                .order_by(col(FlowVersion.version).desc())
            )
            return list(s.exec(query).all())

    def get_version(self, flow_id: str, version: int) -> FlowVersion:
        """Raises: NotFound (naming the flow version, e.g. ``flow version 'ab12…@3'``)."""
        with self.db.read() as s:
            return require(
                s, FlowVersion, (flow_id, version), "flow version", f"{flow_id}@{version}"
            )

    def restore_version(self, flow_id: str, version: int) -> Flow:
        """Make an old version current again, as a new version with the same graph
        (history is never rewritten). Restoring a graph equal to the current one changes
        nothing, as with :meth:`save_flow`.

        Raises:
            NotFound: no such flow or version.
        """
        with self.db.write() as s:
            flow = require(s, Flow, flow_id, "flow", lock=True)
            old = require(
                s, FlowVersion, (flow_id, version), "flow version", f"{flow_id}@{version}"
            )
            _set_graph(s, flow, graph_data(old.graph), now())
            return flow


def _set_graph(s: Session, flow: Flow, data: dict[str, Any], t: datetime) -> bool:
    """Make ``data`` the flow's graph as a new version; False (nothing written) when it
    is the current graph already."""
    if data == flow.graph:
        return False
    flow.version += 1
    flow.graph = data
    flow.updated_at = t
    s.add(flow)
    s.add(FlowVersion(flow_id=flow.id, version=flow.version, graph=data, created_at=t))
    return True


__all__ = ["Flows"]
