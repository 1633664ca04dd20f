"""
Twisted adapters for SIP over UDP, TCP and TLS: they turn bytes on the
wire into calls of the SIP core and write what it answers. Nothing else in
aetasip touches a SIP socket.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from aetasip.sip.framing import FramingError, Ping, StreamFramer, isKeepAlive
from aetasip.sip.framing import Message as Frame
from aetasip.sip.transaction import Peer

log = Logger()

CRLF = b"\r\n"
PING = b"\r\n\r\n"
STUN_MAGIC_COOKIE = b"\x21\x12\xa4\x42"


class SIPDatagramProtocol(DatagramProtocol):
    """
    SIP on one UDP socket. Responses and requests to agents leave from
    this same socket, so a NATed agent sees them come from the address it
    registered with (5060 or 5070).

    @param core: the L{aetasip.element.core.SIPCore}.
    @param local: C{(host, port)} this socket is bound to.
    """

    transport: Any  # an IUDPTransport once started
    noisy = False

    def __init__(self, core: Any, local: tuple[str, int], maxSize: int = 65535, stun: Any = None) -> None:
        """
        @param stun: an L{aetasip.stun.server.STUNServer} answering the STUN
            keep-alives of RFC 5626 (section 4.4.2) that agents send on
            their SIP flow; or C{None} to drop them.
        """
        self.core = core
        self.local = local
        self.maxSize = maxSize
        self.stun = stun
        self._stunEndpoint: Any = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) > self.maxSize:
            log.debug("Dropped a {size}-byte datagram from {addr}", size=len(data), addr=addr)
            return
        if data[:1] in (b"\x00", b"\x01") and data[4:8] == STUN_MAGIC_COOKIE:
            # A SIP message starts with a letter; this is STUN on the SIP flow.
            self._stunReceived(data, (addr[0], addr[1]))
            return
        if isKeepAlive(data):
            # RFC 5626 CRLF keep-alive: answer a double CRLF ping with a pong.
            if data.startswith(PING):
                self.transport.write(CRLF, addr)
            return
        peer = Peer("udp", (addr[0], addr[1]), self.local, DatagramSender(self, addr))
        self.core.receive(data, peer)

    def sendTo(self, data: bytes, addr: Any) -> None:
        """
        Send a datagram from this socket to C{addr}, an IP address (no name
        resolution) and port.
        """
        # The socket directly: Port.write re-checks the address on every
        # datagram, a measurable share of a REGISTER's cost.
        try:
            self.transport.socket.sendto(data, addr)
        except OSError as e:
            # A full send buffer or an ICMP error from an earlier datagram:
            # UDP is lossy anyway, and retransmissions will follow.
            log.debug("Cannot send to {addr}: {error}", addr=addr, error=e)

    def _stunReceived(self, data: bytes, source: tuple[str, int]) -> None:
        if self.stun is None:
            return
        from aetasip.stun.server import PRIMARY

        if self._stunEndpoint is None:
            self._stunEndpoint = self.stun.endpoint(PRIMARY, {PRIMARY: self.local})
        try:
            reply = self.stun.datagram(data, source, self._stunEndpoint)
        except Exception:
            log.failure("STUN keep-alive from {source} failed", source=source)
            return
        if reply is not None:
            response, destination, _ = reply
            self.transport.write(response, destination)


class DatagramSender:
    """
    Sends datagrams to one address from one of our UDP sockets: a peer's
    C{send}, or the hop to an agent. One small object where a closure
    would be four, which live as long as a transaction (32 s) and are
    scanned by the garbage collector.

    @param protocol: the socket's protocol (anything with C{sendTo}).
    """

    __slots__ = ("addr", "protocol")

    def __init__(self, protocol: Any, addr: Any) -> None:
        self.protocol = protocol
        self.addr = addr

    def __call__(self, data: bytes) -> None:
        self.protocol.sendTo(data, self.addr)


class SIPStreamProtocol(Protocol, TimeoutMixin):
    """
    SIP on one TCP or TLS connection, framed by Content-Length, with
    RFC 5626 CRLF keep-alives. Idle connections are closed after the
    configured timeout; every message or keep-alive resets it.
    """

    factory: SIPStreamFactory
    transport: Any  # an ITCPTransport (or its TLS wrapper) once connected
    peer: Peer

    def connectionMade(self) -> None:
        factory = self.factory
        self.framer = StreamFramer(factory.maxSize)
        remote = self.transport.getPeer()
        self.peer = Peer(
            factory.transportName, (remote.host, remote.port), factory.local, self.transport.write, connection=self
        )
        self.setTimeout(factory.idleTimeout)
        factory.core.connectionMade(self)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        for frame in self.framer.feed(data):
            if isinstance(frame, Frame):
                self.factory.core.receive(frame.data, self.peer, stream=True)
            elif isinstance(frame, Ping):
                self.transport.write(CRLF)
            elif isinstance(frame, FramingError):
                log.info("Closing {peer}: {reason}", peer=self.peer, reason=frame.reason)
                self.transport.loseConnection()
                return

    def timeoutConnection(self) -> None:
        log.debug("Closing idle {peer}", peer=self.peer)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        self.factory.core.connectionLost(self)


class SIPStreamFactory(Factory):
    """Makes L{SIPStreamProtocol}s for one listening TCP or TLS port."""

    protocol = SIPStreamProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, core: Any, transportName: str, local: tuple[str, int], maxSize: int, idleTimeout: int) -> None:
        self.core = core
        self.transportName = transportName
        self.local = local
        self.maxSize = maxSize
        self.idleTimeout = idleTimeout
