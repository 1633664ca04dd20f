"""
The forwarding path of the built-in relay node: a L{Stream} is the port
pair facing one party for one media section, and forwards what it
receives to the other party's stream, with symmetric latching.

A party's media is accepted only from where it is expected: a party
behind NAT (C{latchAnySource}) from its signalling source host, any port;
another from that host or the host its SDP advertises. The first packet
accepted fixes (latches) the address media is sent back to; any other
source is dropped and counted, so nobody can hijack a call's media. Until
a party behind NAT is latched nothing is sent to it at all: the address
its SDP advertises may be a host of the operator's own network. Payload
bytes are forwarded untouched (SRTP passes).

The forwarding path (L{Stream.relayRTP}) is the hot path of the service:
every relay socket of a node sits behind one epoll descriptor the reactor
watches (L{Poller}), and each datagram is read, counted
(L{aetasip.relay.quality.RTPStream}) and written with C{sendto} on the
other party's socket. Linux (epoll) only.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from aetasip.relay.ports import PortRange
from aetasip.relay.quality import RTPStream

log = Logger()

RELATCH_AFTER = 2.0
"""
Seconds of silence from a latched party behind NAT after which a packet
from its signalling host on another port latches again (its NAT mapping
changed). Only that host may: the rule against hijacking stays.
"""

RECEIVE_SIZE = 65535
"""The largest datagram read (a larger one is cut, as any UDP receiver would)."""


class Poller:
    """
    Every relay socket of a node behind one epoll descriptor, which the
    reactor watches: when it is readable, L{doRead} serves every socket
    with a datagram waiting, one datagram each (the descriptor is
    level-triggered: a socket with more is served on the next turn). This
    keeps the reactor's per-event work and the failed read that ends each
    of Twisted's UDP read loops off the forwarding path.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.epoll: select.epoll | None = None
        self.handlers: dict[int, Callable[[], None]] = {}
        self.reading = False

    def fileno(self) -> int:
        return self.epoll.fileno() if self.epoll is not None else -1

    def logPrefix(self) -> str:
        return "relay"

    def add(self, sock: socket.socket, handler: Callable[[], None]) -> None:
        if self.epoll is None:
            self.epoll = select.epoll()
        self.handlers[sock.fileno()] = handler
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        if not self.reading:
            self.reading = True
            self.reactor.addReader(self)

    def remove(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self.handlers.pop(fd, None) is not None and self.epoll is not None:
            self.epoll.unregister(fd)

    def doRead(self) -> None:
        if self.epoll is None:
            return
        handlers = self.handlers
        for fd, _event in self.epoll.poll(0, 4096):
            handler = handlers.get(fd)
            if handler is not None:
                try:
                    handler()
                except Exception:
                    log.failure("Relaying a datagram failed")

    def connectionLost(self, reason: object) -> None:
        self.reading = False

    def close(self) -> None:
        """Stop reading (the sockets are closed by their streams); L{add} starts again."""
        if self.reading:
            self.reactor.removeReader(self)
            self.reading = False
        if self.epoll is not None:
            self.epoll.close()
            self.epoll = None


class Stream:
    """
    The relay's port pair facing one party for one media section, what it
    knows of that party's address, and its counters.

    @ivar target: where the party's SDP says it receives RTP, or C{None}
        (none, or a party behind NAT: media goes only where it latched).
    @ivar latched: the source its RTP was latched to, or C{None}.
    @ivar peer: the stream facing the other party, where its media goes.
    """

    __slots__ = (
        "clock",
        "dropped",
        "expectedHosts",
        "latched",
        "nat",
        "peer",
        "port",
        "received",
        "rtcpLast",
        "rtcpLatched",
        "rtcpSocket",
        "rtcpTarget",
        "rtpSocket",
        "sentBytes",
        "sentPackets",
        "target",
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.port = 0
        self.rtpSocket: socket.socket | None = None
        self.rtcpSocket: socket.socket | None = None
        self.target: tuple[str, int] | None = None
        self.rtcpTarget: tuple[str, int] | None = None
        self.latched: tuple[str, int] | None = None
        self.rtcpLatched: tuple[str, int] | None = None
        self.expectedHosts: frozenset[str] = frozenset()
        self.nat = False
        self.peer: Stream | None = None
        self.received = RTPStream()
        self.rtcpLast: float | None = None
        self.sentPackets = 0
        self.sentBytes = 0
        self.dropped = 0

    def expect(
        self,
        target: tuple[str, int] | None,
        rtcpTarget: tuple[str, int] | None,
        signalHost: str,
        nat: bool,
        rates: dict[int, int],
    ) -> None:
        """The party's (new) SDP: where it wants media, where it signals from."""
        hosts = {signalHost} if nat or target is None else {signalHost, target[0]}
        if self.latched is not None and (self.latched[0] not in hosts or (not nat and target != self.target)):
            # A new address (a re-INVITE moving the media): latch again.
            self.latched = self.rtcpLatched = None
        self.expectedHosts = frozenset(hosts)
        self.nat = nat
        self.target = None if nat else target
        self.rtcpTarget = None if nat else rtcpTarget
        self.received.rates = rates

    def accept(self, addr: tuple[str, int], now: float, rtcp: bool) -> bool:
        """Whether a datagram from C{addr} (not the latched address) is the party's: if so it latches."""
        if addr[0] not in self.expectedHosts:
            return False
        if rtcp:
            if self.rtcpLatched is not None and not self._silent(self.rtcpLast, now):
                return False
            self.rtcpLatched = addr
            return True
        if self.latched is not None and not self._silent(self.received.lastPacketAt, now):
            return False
        if self.latched is not None:
            log.info("Media of a party moved from {old} to {new}: latched again", old=self.latched, new=addr)
        self.latched = addr
        return True

    def _silent(self, last: float | None, now: float) -> bool:
        return self.nat and (last is None or now - last > RELATCH_AFTER)

    def relayRTP(self) -> None:
        """A datagram on the RTP socket facing the party: to the other party."""
        try:
            data, addr = self.rtpSocket.recvfrom(RECEIVE_SIZE)  # type: ignore[union-attr]
        except OSError:
            return
        now = self.clock()
        if addr != self.latched and not self.accept(addr, now, False):
            self.dropped += 1
            return
        self.received.packet(data, now)
        peer = self.peer
        if peer is None:
            return
        destination = peer.latched or peer.target
        sock = peer.rtpSocket
        if destination is None or sock is None:
            return
        try:
            sock.sendto(data, destination)
        except OSError:
            return  # a full send buffer, or a closed peer: lost, as on the network
        peer.sentPackets += 1
        peer.sentBytes += len(data)

    def relayRTCP(self) -> None:
        """A datagram on the RTCP socket facing the party."""
        try:
            data, addr = self.rtcpSocket.recvfrom(RECEIVE_SIZE)  # type: ignore[union-attr]
        except OSError:
            return
        now = self.clock()
        if addr != self.rtcpLatched and not self.accept(addr, now, True):
            self.dropped += 1
            return
        self.rtcpLast = now
        peer = self.peer
        if peer is None:
            return
        destination = peer.rtcpLatched or peer.rtcpTarget
        sock = peer.rtcpSocket
        if destination is None or sock is None:
            return
        try:
            sock.sendto(data, destination)
        except OSError:
            return

    def close(self, ports: PortRange, poller: Poller) -> None:
        if self.rtpSocket is not None and self.rtcpSocket is not None:
            for sock in (self.rtpSocket, self.rtcpSocket):
                poller.remove(sock)
                sock.close()
            ports.release(self.port)
            self.rtpSocket = self.rtcpSocket = None
        self.peer = None
