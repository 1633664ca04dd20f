"""
L{NodeAnnouncer}: this server announces itself in the store every
C{cluster.announce_interval} seconds (its role, calls in progress, whether
it does the shared work; C{aetasip-admin node status} shows them), and
reads its drain flag there: an operator's C{aetasip-admin node drain}
makes it report not-ready (C{/health} 503), so that keepalived moves the
floating address away. On PostgreSQL the command also notifies the
servers, which then announce at once. The flag lives in the store, so
draining works whether or not the CLI can reach the running service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from aetasip import __version__
from aetasip.store.nodes import NodeState

log = Logger()

STOPPED = "stopped"


class NodeAnnouncer:
    """
    @param store: the L{aetasip.store.AsyncStore}.
    @param role: gives this server's role name (C{active}, C{standby}).
    @param calls: gives the number of calls in progress here.
    @param holdsWork: whether this server does the shared work now.
    @ivar draining: whether an operator asked this server to drain.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: Any,
        name: str,
        origin: str,
        address: str | None,
        role: Callable[[], str],
        calls: Callable[[], int],
        holdsWork: Callable[[], bool],
        interval: float,
        recordsServer: str = "",
    ) -> None:
        self.clock = clock
        self.store = store
        self.name = name
        self.origin = origin
        self.address = address or ""
        self.role = role
        self.calls = calls
        self.holdsWork = holdsWork
        self.interval = interval
        self.recordsServer = recordsServer or name
        self.draining = False
        self.startedAt = clock.seconds()
        self.lastAnnounced: float | None = None
        self._loop = LoopingCall(self.announce)
        self._loop.clock = clock
        self._warned = False
        self._turn = DeferredLock()
        self._stopped = False

    def start(self) -> None:
        self.startedAt = self.clock.seconds()
        self._stopped = False
        self._loop.start(self.interval, now=True)

    def stop(self) -> Deferred[None]:
        """Stop announcing; say in the store that this server stopped."""
        if self._loop.running:
            self._loop.stop()
        d = self.announce(STOPPED)
        self._stopped = True
        return d

    def state(self, role: str | None = None) -> NodeState:
        return NodeState(
            name=self.name,
            origin=self.origin,
            role=role or self.role(),
            address=self.address,
            version=__version__,
            startedAt=self.startedAt,
            lastSeen=self.clock.seconds(),
            calls=self.calls(),
            holdsWork=self.holdsWork(),
            draining=self.draining,
            recordsServer=self.recordsServer,
            announceInterval=self.interval,
        )

    def announce(self, role: str | None = None) -> Deferred[None]:
        """Announce now, after the announcement under way if any; failures are logged."""
        if self._stopped:
            return succeed(None)
        return self._turn.run(self._announce, role)

    def _announce(self, role: str | None) -> Deferred[None]:
        d: Deferred[bool] = self.store.announceNode(self.state(role))

        def announced(requested: bool) -> None:
            self.lastAnnounced = self.clock.seconds()
            if self._warned:
                log.info("Announcing this server in the store again")
            self._warned = False
            if requested != self.draining:
                self.draining = requested
                if requested:
                    log.warn(
                        "Draining on an operator's request: /health reports not-ready so that the service "
                        "address moves; {calls} calls in progress here",
                        calls=self.calls(),
                    )
                else:
                    log.info("Serving again on an operator's request: /health reports ready")
                # What the store says of this server follows at once.
                self.clock.callLater(0, self.announce)

        def failed(failure: Any) -> None:
            if not self._warned:
                self._warned = True
                log.warn("Cannot announce this server in the store: {reason}", reason=failure.getErrorMessage())

        return d.addCallbacks(announced, failed)
