"""
L{ClusterService}: this server among the others on the same store.

    - its L{Role} (active while it holds C{cluster.address}): only the
      active server sends OPTIONS keep-alive pings and dead-call probes;
    - on PostgreSQL, one L{NotificationListener} connection: the other
      servers' binding changes (L{LocationSync}), drain requests, and the
      advisory lock of the shared work, taken by the active server: the one
      holding it sends the mail outbox and makes the quarterly call logs
      (both are also safe against doing anything twice through the store:
      claimed messages, the ledger of logs);
    - its announcements in the store and its drain flag (L{NodeAnnouncer}).

On SQLite there is one server: no listener, and it does the shared work.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger

from aetasip.cluster.listener import NotificationListener
from aetasip.cluster.locationsync import LocationSync
from aetasip.cluster.nodes import NodeAnnouncer
from aetasip.cluster.roles import Role
from aetasip.location import LocationService
from aetasip.store.schema import BINDINGS_CHANNEL, NODES_CHANNEL

log = Logger()

WORK_LOCK = 0x61657461736973
"""Key of the PostgreSQL advisory lock of the shared work (mail, quarterly logs)."""


class ClusterService(service.Service):
    """
    @param store: the L{aetasip.store.AsyncStore}.
    @param calls: the L{aetasip.interfaces.ICallControl}, or C{None}.
    @param pinger: the L{aetasip.keepalive.OptionsPinger}, or C{None}.
    @param work: the services doing the shared work (with C{mayRun} and a
        method run when this server takes the work: C{sendDue} or C{check}).
    """

    name = "cluster"

    def __init__(
        self,
        location: LocationService,
        store: Any,
        url: str,
        serverName: str,
        address: str | None = None,
        checkInterval: float = 1.0,
        announceInterval: float = 5.0,
        calls: Any = None,
        pinger: Any = None,
        work: list[Any] | None = None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.reactor = reactor
        self.calls = calls
        self.work = list(work or [])
        self.role = Role(reactor, address, checkInterval)
        self.shared = not store.store.isSQLite
        self.sync: LocationSync | None = None
        self.listener: NotificationListener | None = None
        if self.shared:
            # The active server may die any moment: a registration it
            # answered must already be in the store.
            location.writeThrough = address is not None
            self.sync = LocationSync(location, reactor)
            self.listener = NotificationListener(
                url,
                [BINDINGS_CHANNEL, NODES_CHANNEL],
                self._notified,
                self._connected,
                self._disconnected,
                reactor,
                lockKey=WORK_LOCK,
                lockChanged=self._workChanged,
            )
        origin = self.sync.origin if self.sync is not None else ""
        self.announcer = NodeAnnouncer(
            reactor,
            store,
            serverName,
            origin,
            address,
            lambda: self.role.name,
            self.callsInProgress,
            self.holdsWork,
            announceInterval,
        )
        if pinger is not None:
            pinger.isActive = self.role.isActive
        for part in self.work:
            part.mayRun = self.holdsWork
        self.role.listeners.append(self._roleChanged)

    # -- what the rest of the service asks

    def holdsWork(self) -> bool:
        """Whether this server sends the mail and makes the quarterly logs now."""
        return self.listener.lockHeld if self.listener is not None else True

    @property
    def draining(self) -> bool:
        return self.announcer.draining

    def callsInProgress(self) -> int:
        return len(self.calls.active()) if self.calls is not None else 0

    # -- events

    def _roleChanged(self, active: bool) -> None:
        if self.calls is not None:
            self.calls.probe(active)
        if self.listener is not None:
            self.listener.wantLock(active)
        if self.running:
            self.announcer.announce()

    def _workChanged(self, held: bool) -> None:
        if held:
            log.info("This server now sends the mail outbox and makes the quarterly call logs")
            for part in self.work:
                run = getattr(part, "sendDue", None) or part.check
                maybeDeferred(run).addErrback(lambda f: log.failure("Shared work failed", f))
        else:
            log.info("This server no longer sends the mail outbox nor makes the quarterly call logs")
        if self.running:
            self.announcer.announce()

    def _notified(self, channel: str, payload: str) -> None:
        if channel == BINDINGS_CHANNEL and self.sync is not None:
            self.sync.notified(payload)
        elif channel == NODES_CHANNEL and payload == self.announcer.name:
            self.announcer.announce()

    def _connected(self) -> None:
        if self.sync is not None:
            self.sync.connected()
        self.announcer.announce()

    def _disconnected(self, reason: str) -> None:
        log.warn("Other servers' binding changes and drain requests are not heard until the store answers again")

    # -- lifecycle

    def startService(self) -> None:
        super().startService()
        if self.calls is not None:
            # A standby until the first look says otherwise.
            self.calls.probe(self.role.address is None)
        self.role.start()
        if self.listener is not None:
            self.listener.start()
        self.announcer.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.role.stop()
        if self.sync is not None:
            self.sync.stop()
        stops = [self.announcer.stop()]
        if self.listener is not None:
            stops.append(self.listener.stop())
        return gatherResults(stops, consumeErrors=True).addCallback(lambda _: None)
