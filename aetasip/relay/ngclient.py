"""
The ng protocol over UDP with Twisted: L{NgClient} sends requests and
retries them, L{NgPool} spreads new sessions over several rtpengines and
steps over one that does not answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.relay.ng import Address, PendingRequests, Reply, Request

log = Logger()


class RelayUnavailable(Exception):
    """No rtpengine could take the request (none answers, or too many requests waiting)."""


class NgTimeout(RelayUnavailable):
    """An rtpengine did not answer a request, retries included."""

    def __init__(self, address: Address, command: str) -> None:
        super().__init__(f"rtpengine {address[0]}:{address[1]} did not answer {command}")
        self.address = address
        self.command = command


@attrs.define(eq=False)
class _Waiter:
    deferred: Deferred[Reply]
    tries: int = 1
    timer: IDelayedCall | None = None


class NgClient(DatagramProtocol):
    """
    One UDP socket speaking ng to any number of rtpengines.

    A request is sent, then sent again with the same cookie (rtpengine
    answers a retransmission from its cache, without doing it twice)
    every C{timeout} seconds, C{retries} times, before it fails with
    L{NgTimeout}. At most C{maxPending} requests wait at once; past that a
    request fails at once with L{RelayUnavailable}: a stalled rtpengine
    must not pile up calls in memory.
    """

    noisy = False  # no "Starting protocol" line: the node logs what it does

    def __init__(self, clock: IReactorTime, timeout: float = 1.0, retries: int = 2, maxPending: int = 1000) -> None:
        self.clock = clock
        self.timeout = timeout
        self.retries = retries
        self.pending = PendingRequests(maxPending)

    def request(self, address: Address, command: str, arguments: Mapping[str, Any]) -> Deferred[Reply]:
        """
        Send C{command} to the rtpengine at C{address}.

        @return: a Deferred firing with the L{Reply} (a warning is a
            success), failing with L{aetasip.relay.ng.NgError} when
            rtpengine refused, L{aetasip.relay.ng.NgProtocolError} for a
            garbled reply to this cookie, L{NgTimeout} or
            L{RelayUnavailable}. Cancelling it stops the retries.
        """
        if self.transport is None:
            return fail(RelayUnavailable("the ng client is not running"))
        try:
            request = self.pending.add(command, arguments, address)
        except OverflowError as e:
            return fail(RelayUnavailable(str(e)))
        deferred: Deferred[Reply] = Deferred(lambda d: self._cancel(request))
        waiter = request.waiter = _Waiter(deferred)
        self._send(request)
        waiter.timer = self.clock.callLater(self.timeout, self._retry, request)
        return deferred

    def _send(self, request: Request) -> None:
        try:
            self.transport.write(request.datagram, request.address)  # type: ignore[union-attr]
        except OSError as e:
            # An unreachable address or a full buffer: the retry timer
            # still runs, the request times out like a lost datagram.
            log.warn("ng request to {address} not sent: {error}", address=request.address, error=e)

    def _retry(self, request: Request) -> None:
        waiter: _Waiter = request.waiter
        if waiter.tries > self.retries:
            waiter.timer = None
            self.pending.forget(request)
            waiter.deferred.errback(NgTimeout(request.address, request.command))
            return
        waiter.tries += 1
        self._send(request)
        waiter.timer = self.clock.callLater(self.timeout, self._retry, request)

    def _cancel(self, request: Request) -> None:
        waiter: _Waiter = request.waiter
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None
        self.pending.forget(request)

    def stopProtocol(self) -> None:
        # The socket is closed: nothing more will come back.
        for request in self.pending.clear():
            waiter: _Waiter = request.waiter
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.timer = None
            waiter.deferred.errback(RelayUnavailable("the ng client stopped"))

    def datagramReceived(self, datagram: bytes, address: Any) -> None:
        matched = self.pending.receive(datagram, (address[0], address[1]))
        if matched is None:
            return
        waiter: _Waiter = matched.request.waiter
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None
        if matched.error is not None:
            waiter.deferred.errback(matched.error)
        else:
            waiter.deferred.callback(matched.reply)  # type: ignore[arg-type]


@attrs.define(eq=False)
class Backend:
    """
    One rtpengine of a pool.

    @ivar up: it answered its last request (or has not been asked yet).
    @ivar check: the timer of the next ping while it is down.
    """

    address: Address
    client: NgClient
    up: bool = True
    check: IDelayedCall | None = None

    @property
    def name(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NgPool:
    """
    The rtpengines of one relay node.

    A new session goes to the next one up, in turn; one that does not
    answer is marked down and the request goes to the next. A down
    rtpengine gets a C{ping} every C{recheckInterval} seconds and is up
    again when it answers. A request for an existing session goes to the
    rtpengine holding it, without failover: its media is there.
    """

    def __init__(
        self, name: str, backends: Sequence[Backend], clock: IReactorTime, recheckInterval: float = 10.0
    ) -> None:
        if not backends:
            raise ValueError("an rtpengine node needs at least one ng address")
        self.name = name
        self.backends = list(backends)
        self.clock = clock
        self.recheckInterval = recheckInterval
        self._turn = itertools.count()
        self._stopped = False

    def backend(self, address: Address) -> Backend | None:
        for backend in self.backends:
            if backend.address == address:
                return backend
        return None

    async def requestNew(self, command: str, arguments: Mapping[str, Any]) -> tuple[Backend, Reply]:
        """
        Send C{command} to the next rtpengine up, stepping over those that
        time out. Errors other than a timeout (rtpengine refused it) are
        not retried elsewhere.

        @return: the rtpengine that answered, and its reply.
        @raise RelayUnavailable: none is up, or none answered.
        """
        start = next(self._turn)
        count = len(self.backends)
        candidates = [self.backends[(start + i) % count] for i in range(count)]
        tried = 0
        for backend in candidates:
            if not backend.up:
                continue
            tried += 1
            try:
                reply = await self.requestTo(backend, command, arguments)
            except NgTimeout:
                continue
            return backend, reply
        if not tried:
            raise RelayUnavailable(f"relay node {self.name}: no rtpengine is up")
        raise RelayUnavailable(f"relay node {self.name}: no rtpengine answered {command}")

    async def requestTo(self, backend: Backend, command: str, arguments: Mapping[str, Any]) -> Reply:
        """
        Send C{command} to C{backend}; a timeout marks it down.

        @raise NgTimeout: it did not answer.
        """
        try:
            reply = await backend.client.request(backend.address, command, arguments)
        except NgTimeout:
            self.markDown(backend)
            raise
        if not backend.up:
            self._markUp(backend)
        return reply

    def markDown(self, backend: Backend) -> None:
        if backend.up:
            log.warn(
                "relay node {node}: rtpengine {backend} does not answer; marked down, checked every {interval} s",
                node=self.name,
                backend=backend.name,
                interval=self.recheckInterval,
            )
        backend.up = False
        self._scheduleCheck(backend)

    def _markUp(self, backend: Backend) -> None:
        log.info("relay node {node}: rtpengine {backend} answers again", node=self.name, backend=backend.name)
        backend.up = True
        if backend.check is not None and backend.check.active():
            backend.check.cancel()
        backend.check = None

    def _scheduleCheck(self, backend: Backend) -> None:
        if self._stopped or (backend.check is not None and backend.check.active()):
            return
        backend.check = self.clock.callLater(self.recheckInterval, self._ping, backend)

    def _ping(self, backend: Backend) -> None:
        backend.check = None

        def answered(reply: Reply) -> None:
            self._markUp(backend)

        def failed(failure: Failure) -> None:
            failure.trap(Exception)
            if not failure.check(CancelledError) and not self._stopped:
                self._scheduleCheck(backend)

        backend.client.request(backend.address, "ping", {}).addCallbacks(answered, failed)

    def ping(self) -> Deferred[list[bool]]:
        """Ping every rtpengine now; fires with whether each is up, in order (and marks them)."""
        from twisted.internet.defer import gatherResults

        def one(backend: Backend) -> Deferred[bool]:
            d = Deferred.fromCoroutine(self.requestTo(backend, "ping", {}))
            return d.addCallbacks(lambda _: True, lambda f: False)

        return gatherResults([one(b) for b in self.backends])

    def stop(self) -> None:
        """Stop the rechecks."""
        self._stopped = True
        for backend in self.backends:
            if backend.check is not None and backend.check.active():
                backend.check.cancel()
            backend.check = None
