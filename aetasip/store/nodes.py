"""
The cluster methods of L{aetasip.store.sql.Store}: each server announces
itself (L{NodeState}) in C{cluster_nodes}, and reads there the drain flag
an operator set (C{aetasip-admin node drain}).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import attrs
import sqlalchemy as sa

from aetasip.store.models import StoreError
from aetasip.store.schema import CALLS_CHANNEL, NODES_CHANNEL, clusterNodes


class NoSuchNode(StoreError):
    """No server of that name has announced itself."""


@attrs.frozen
class NodeState:
    """
    What a server announced.

    @ivar role: C{active}, C{standby} or C{stopped}.
    @ivar address: the floating address it watches (C{""}: none).
    @ivar calls: calls in progress on it.
    @ivar holdsWork: whether it sends the mail outbox and quarterly logs.
    @ivar draining: whether it reports not-ready to hand the address over.
    @ivar drainRequested: what the operator asked (the server follows
        within its announcement interval).
    @ivar recordsServer: its name in the call records (C{records.server}).
    @ivar announceInterval: seconds between its announcements
        (C{cluster.announce_interval}); C{0} when it did not say (an
        earlier version).
    """

    name: str
    origin: str
    role: str
    address: str
    version: str
    startedAt: float
    lastSeen: float
    calls: int
    holdsWork: bool
    draining: bool
    drainRequested: bool = False
    recordsServer: str = ""
    announceInterval: float = 0.0

    def silentAfter(self, intervals: int, default: float) -> float:
        """
        Seconds without an announcement after which this server is taken
        for dead: C{intervals} of its own interval (C{default} when it did
        not say).
        """
        return intervals * (self.announceInterval if self.announceInterval > 0 else default)


def _node(row: sa.Row[Any]) -> NodeState:
    return NodeState(
        name=row.name,
        origin=row.origin,
        role=row.role,
        address=row.address,
        version=row.version,
        startedAt=row.started_at,
        lastSeen=row.last_seen,
        calls=row.calls,
        holdsWork=bool(row.holds_work),
        draining=bool(row.draining),
        drainRequested=bool(row.drain_requested),
        recordsServer=row.records_server,
        announceInterval=row.announce_interval,
    )


class NodeMethods:
    """The cluster methods of L{aetasip.store.sql.Store}."""

    _transaction: Callable[..., AbstractContextManager[sa.Connection]]
    _insert: Callable[[sa.Connection, sa.Table], Any]

    def announceNode(self, state: NodeState) -> bool:
        """
        Write what C{state}'s server announces (its drain request stays as
        the operator left it).

        @return: whether an operator asked this server to drain.
        """
        values = {
            "name": state.name,
            "origin": state.origin,
            "role": state.role,
            "address": state.address,
            "version": state.version,
            "started_at": state.startedAt,
            "last_seen": state.lastSeen,
            "calls": state.calls,
            "holds_work": state.holdsWork,
            "draining": state.draining,
            "records_server": state.recordsServer,
            "announce_interval": state.announceInterval,
        }
        with self._transaction(write=True) as connection:
            insert = self._insert(connection, clusterNodes).values(drain_requested=False, **values)
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=[clusterNodes.c.name], set_={k: v for k, v in values.items() if k != "name"}
                )
            )
            requested = connection.execute(
                sa.select(clusterNodes.c.drain_requested).where(clusterNodes.c.name == state.name)
            ).scalar_one()
        return bool(requested)

    def listNodes(self) -> list[NodeState]:
        """Every server that announced itself, by name."""
        with self._transaction() as connection:
            return [_node(row) for row in connection.execute(sa.select(clusterNodes).order_by(clusterNodes.c.name))]

    def getNode(self, name: str) -> NodeState | None:
        with self._transaction() as connection:
            row = connection.execute(sa.select(clusterNodes).where(clusterNodes.c.name == name)).first()
        return None if row is None else _node(row)

    def requestDrain(self, name: str, drain: bool) -> None:
        """
        Ask the server C{name} to drain (or to serve again); on PostgreSQL
        the servers hear it at once (C{NOTIFY aetasip_nodes}).

        @raise NoSuchNode: when no server of that name announced itself.
        """
        with self._transaction(write=True) as connection:
            result = connection.execute(
                clusterNodes.update().where(clusterNodes.c.name == name).values(drain_requested=drain)
            )
            if result.rowcount == 0:
                raise NoSuchNode(f"no server {name} has announced itself in this store")
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_notify(:channel, :name)"), {"channel": NODES_CHANNEL, "name": name}
                )

    def announceCallEnded(self, payload: str) -> None:
        """
        Tell the other servers (C{NOTIFY aetasip_calls}, PostgreSQL only)
        that a call ended here: C{payload} says which (see
        L{aetasip.cluster.service.ClusterService.callEnded}).
        """
        with self._transaction(write=True) as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": CALLS_CHANNEL, "payload": payload}
                )

    def forgetNode(self, name: str) -> None:
        """Remove the announcement of C{name} (a server taken out of the cluster)."""
        with self._transaction(write=True) as connection:
            result = connection.execute(clusterNodes.delete().where(clusterNodes.c.name == name))
            if result.rowcount == 0:
                raise NoSuchNode(f"no server {name} has announced itself in this store")
