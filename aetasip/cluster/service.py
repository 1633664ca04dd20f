"""
L{ClusterService}: this server among the others on the same store.

    - its L{Role} (active while it holds C{cluster.address}): only the
      active server sends OPTIONS keep-alive pings and dead-call probes;
    - on PostgreSQL, one L{NotificationListener} connection: the other
      servers' binding changes (L{LocationSync}), drain requests, the
      calls this server set up that ended on another (L{callEnded}), and the
      advisory lock of the shared work, taken by the active server: the one
      holding it sends the mail outbox and makes the quarterly call logs
      (both are also safe against doing anything twice through the store:
      claimed messages, the ledger of logs);
    - its announcements in the store and its drain flag (L{NodeAnnouncer});
    - the other servers' announcements, read every announcement interval:
      when the active server finds one silent for L{SILENT_INTERVALS}
      intervals (dead), it closes the call records that server left open
      with the end cause C{failover} at its last announcement, and
      announces (to the webhook) the expiry of the bindings it had
      registered, each once; a standby with calls in progress looks which
      of them ended elsewhere (their BYE reached the active server);
    - the call records, for a caller's CANCEL of a call another server left
      ringing (L{aetasip.interfaces.ICallControl.lookForCallsRingingElsewhere}).

On SQLite there is one server: no listener, and it does the shared work.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from aetasip.calls.call import EndCause
from aetasip.cluster.listener import NotificationListener
from aetasip.cluster.locationsync import LocationSync
from aetasip.cluster.nodes import STOPPED, NodeAnnouncer
from aetasip.cluster.roles import Role
from aetasip.location import Binding, LocationService
from aetasip.store.schema import BINDINGS_CHANNEL, CALLS_CHANNEL, NODES_CHANNEL

log = Logger()

SILENT_INTERVALS = 3
"""
A server not announced for this many of its announcement intervals is
dead (C{node status}: silent).
"""

MAX_PAYLOAD = 8000
"""Bytes a PostgreSQL notification's payload must stay under."""

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
        recordsServer: str = "",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.reactor = reactor
        self.calls = calls
        self.store = store
        self.location = location
        self.work = list(work or [])
        self.recordsServer = recordsServer or serverName
        # Origins of the servers alive at the last look (None: not looked yet).
        self.liveOrigins: set[str] | None = None
        # Dead servers whose records were closed: (name, last announcement).
        self.takenOver: set[tuple[str, float]] = set()
        # This server's calls whose records another server closed.
        self.endedElsewhere: set[tuple[str, str]] = set()
        self._peers = LoopingCall(self.lookAtPeers)
        self._peers.clock = reactor
        self._looking: Deferred[None] | None = None
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
                [BINDINGS_CHANNEL, NODES_CHANNEL, CALLS_CHANNEL],
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
            self.recordsServer,
        )
        if self.shared:
            location.orphaned = self._orphaned
            if calls is not None:
                calls.lookForCallsRingingElsewhere(self._rangElsewhere)
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
        """
        The calls in progress here: those whose record another server
        closed (their BYE reached it after a switch) are not.
        """
        if self.calls is None:
            return 0
        calls = self.calls.active()
        if not self.endedElsewhere:
            return len(calls)
        return sum(1 for call in calls if (call.callID, call.callerTag) not in self.endedElsewhere)

    def _rangElsewhere(self, callID: str, callerTag: str, source: tuple[str, int]) -> Deferred[tuple[str, ...] | None]:
        """
        Whether another server's record says this call, from this caller's
        address, rang there unanswered: the numbers it rang, else C{None}.
        """
        return self.store.ringingElsewhere(callID, callerTag, source, self.recordsServer)  # type: ignore[no-any-return]

    def _orphaned(self, binding: Binding) -> bool:
        """Whether this server announces the expiry of C{binding}: it is active and its writer is dead."""
        return (
            self.role.active
            and self.liveOrigins is not None
            and binding.writer != self.announcer.origin
            and binding.writer not in self.liveOrigins
        )

    # -- calls that end here but were set up elsewhere (an ICallObserver)

    def callStarted(self, call: Any) -> None:
        pass

    def callRinging(self, call: Any) -> None:
        pass

    def callAnswered(self, call: Any) -> None:
        pass

    def callEnded(self, call: Any) -> None:
        """
        A call rebuilt here from its signed Route (set up by another
        server, or by this one before a restart) ended: the server that
        set it up, if it still runs (drained), hears it and ends its own
        copy (L{_callEndedElsewhere}), with or without call records.
        """
        if not self.shared or not call.recovered or call.endCause == EndCause.SERVER_SHUTDOWN:
            return
        payload = json.dumps(
            {
                "origin": self.announcer.origin,
                "server": self.announcer.name,
                "callID": call.callID,
                "callerTag": call.callerTag,
                "cause": call.endCause,
            }
        )
        if len(payload.encode()) >= MAX_PAYLOAD:
            return  # a Call-ID of thousands of characters: the records' look (callsInProgress) covers it
        d = self.store.announceCallEnded(payload)
        d.addErrback(
            lambda f: log.warn("Cannot tell the other servers a call ended: {reason}", reason=f.getErrorMessage())
        )

    def _callEndedElsewhere(self, payload: str) -> None:
        try:
            ended = json.loads(payload)
            origin, server, callID, callerTag, cause = (
                ended["origin"], ended["server"], ended["callID"], ended["callerTag"], ended["cause"]
            )  # fmt: skip
            if not all(isinstance(x, str) for x in (origin, server, callID, callerTag, cause)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            log.warn("Unreadable call end notification {payload!r}", payload=payload[:200])
            return
        if origin == self.announcer.origin or self.calls is None:
            return
        for call in self.calls.find(callID):
            if call.callerTag == callerTag and not call.ended:
                log.info("Call {callID} ended at {server} ({cause})", callID=callID, server=server, cause=cause)
                self.calls.endedElsewhere(call, cause, f"ended at {server} after a switch")
                if self.draining and self.running:
                    # The operator waiting for idle hears it now.
                    self.announcer.announce()

    # -- the other servers

    def lookAtPeers(self) -> Deferred[None]:
        """Read the servers' announcements and act on what changed (one look at a time)."""
        if self._looking is not None or not self.shared:
            return Deferred.fromCoroutine(_nothing())
        self._looking = d = self._look()

        def looked(_: object) -> None:
            if self._lookFailing:
                log.info("Reading the other servers' announcements again")
            self._lookFailing = False

        def failed(failure: Any) -> None:
            # Once per outage: the store's own errors are logged elsewhere too.
            if not self._lookFailing:
                self._lookFailing = True
                log.warn("Cannot read the other servers' announcements: {reason}", reason=failure.getErrorMessage())

        def done(_: object) -> None:
            self._looking = None

        d.addCallbacks(looked, failed)
        d.addBoth(done)
        return d

    _lookFailing = False

    @inlineCallbacks
    def _look(self) -> Any:
        nodes = yield self.store.listNodes()
        now = self.reactor.seconds()
        live = {self.announcer.origin}
        dead = []
        for node in nodes:
            if node.name == self.announcer.name:
                continue
            if node.role == STOPPED:
                continue
            # Judged by its own interval: the servers need not share one.
            if now - node.lastSeen > node.silentAfter(SILENT_INTERVALS, self.announcer.interval):
                dead.append(node)
            else:
                live.add(node.origin)
        self.liveOrigins = live
        if self.role.active:
            # Expired while nobody looked (this server was down or standby):
            # the rows are deleted and their expiry announced here, once.
            expired = yield self.store.expireOrphanBindings(sorted(live), now, origin=self.announcer.origin)
            for binding in expired:
                self.location.forget(binding)
                self.location.emit("expired", binding)
            for node in dead:
                key = (node.name, node.lastSeen)
                if key in self.takenOver:
                    continue
                closed = yield self.store.closeFailedOverCallRecords(
                    node.recordsServer or node.name, node.lastSeen, self.recordsServer
                )
                self.takenOver.add(key)
                if closed:
                    log.warn(
                        "{server} has not announced itself for {age:.0f} s: {count} calls it left open closed "
                        "as 'failover' (a BYE reaching this server amends its record)",
                        server=node.name,
                        age=now - node.lastSeen,
                        count=len(closed),
                    )
        if self.calls is not None and not self.role.active:
            calls = [(call.callID, call.callerTag) for call in self.calls.active()]
            ended = yield self.store.closedCallRecords(self.recordsServer, calls)
            self.endedElsewhere = set(ended)
        else:
            self.endedElsewhere = set()

    # -- events

    def _roleChanged(self, active: bool) -> None:
        if self.calls is not None:
            self.calls.probe(active)
        if active and self.running:
            # Taking over: the records a dead server left open, at once.
            self.lookAtPeers()
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
        elif channel == CALLS_CHANNEL:
            self._callEndedElsewhere(payload)

    def _connected(self) -> None:
        if self.sync is not None:
            self.sync.connected()
        self.announcer.announce()

    def _disconnected(self, reason: str) -> None:
        log.warn("Other servers' binding changes and drain requests are not heard until the store answers again")

    # -- lifecycle

    def startService(self) -> None:
        super().startService()
        address = self.role.address
        log.info(
            "Cluster: server {server}, {store}, {role}",
            server=self.announcer.name,
            store="sharing its store with the other servers" if self.shared else "alone on its SQLite store",
            role="always active" if address is None else f"active while it holds the cluster address {address}",
        )
        if self.calls is not None:
            # A standby until the first look says otherwise.
            self.calls.probe(self.role.address is None)
        self.role.start()
        if self.listener is not None:
            self.listener.start()
        self.announcer.start()
        if self.shared:
            self._peers.start(self.announcer.interval, now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.role.stop()
        if self._peers.running:
            self._peers.stop()
        if self.sync is not None:
            self.sync.stop()
        stops = [self.announcer.stop()]
        if self.listener is not None:
            stops.append(self.listener.stop())
        d = gatherResults(stops, consumeErrors=True)
        return d.addCallback(lambda _: log.info("Cluster stopped"))


async def _nothing() -> None:
    return None
