"""
Twisted adapters for SIP over UDP, TCP and TLS: they turn bytes on the
wire into calls of the SIP core and write what it answers. Nothing else in
aetasip touches a SIP socket.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from aetasip.net import sourceGroup
from aetasip.sip.framing import FramingError, Ping, StreamFramer, isKeepAlive
from aetasip.sip.framing import Message as Frame
from aetasip.sip.transaction import Peer

log = Logger()

CRLF = b"\r\n"
PING = b"\r\n\r\n"
STUN_MAGIC_COOKIE = b"\x21\x12\xa4\x42"

PEERS_KEPT = 4096
"""Source addresses a UDP socket keeps a L{Peer} for; past this it forgets them all and starts again."""


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
        # One Peer per source address, shared by its messages' transactions
        # (immutable): fewer objects for the garbage collector to scan
        # while transactions linger (32 s), none to build per datagram.
        self._peers: dict[Any, Peer] = {}

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
        peer = self._peers.get(addr)
        if peer is None:
            if len(self._peers) >= PEERS_KEPT:
                # A flood of sources: start again rather than track each.
                self._peers.clear()
            peer = self._peers[addr] = Peer("udp", (addr[0], addr[1]), self.local, DatagramSender(self, addr))
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


class StreamLimits:
    """
    How many SIP stream connections (TCP and TLS, all ports) may be open:
    in all, and from one source (an IPv6 /64 counts as one). Sans-IO.

    @ivar counters: C{refused} connections (over a limit).
    """

    def __init__(self, maxTotal: int, maxPerSource: int) -> None:
        self.maxTotal = maxTotal
        self.maxPerSource = maxPerSource
        self.total = 0
        self._bySource: dict[str, int] = {}
        self.counters = {"refused": 0}
        # Sources refused since their last admitted connection: one log line each.
        self._logged: set[str] = set()

    def admit(self, host: str) -> bool:
        """May a connection from C{host} open? If so it counts until L{release}."""
        group = sourceGroup(host)
        count = self._bySource.get(group, 0)
        if self.total >= self.maxTotal or count >= self.maxPerSource:
            self.counters["refused"] += 1
            if group not in self._logged and len(self._logged) < 10000:
                self._logged.add(group)
                log.warn(
                    "Refusing SIP connections from {source}: {count} open from it, {total} in all "
                    "(limits {perSource} and {maxTotal})",
                    source=group,
                    count=count,
                    total=self.total,
                    perSource=self.maxPerSource,
                    maxTotal=self.maxTotal,
                )
            return False
        self._logged.discard(group)
        self._bySource[group] = count + 1
        self.total += 1
        return True

    def release(self, host: str) -> None:
        group = sourceGroup(host)
        count = self._bySource.get(group, 0) - 1
        if count > 0:
            self._bySource[group] = count
        else:
            self._bySource.pop(group, None)
        self.total -= 1


class StreamSettings:
    """
    The limits of SIP stream connections, shared by every TCP and TLS port.

    @ivar maxSize: the largest message, in bytes.
    @ivar idleTimeout: seconds a connection carrying a binding may stay
        silent (no message, no keep-alive).
    @ivar unboundTimeout: the same for a connection carrying none.
    @ivar messageTimeout: seconds from the first byte of a message to its
        last (a peer trickling a message is closed).
    @ivar maxBacklog: bytes written to a peer that stopped reading beyond
        which it is closed.
    @ivar limits: the L{StreamLimits}.
    @ivar clock: the time source of the timers.
    """

    def __init__(
        self,
        maxSize: int = 65535,
        idleTimeout: float = 3600,
        unboundTimeout: float = 120,
        messageTimeout: float = 10,
        maxBacklog: int = 1 << 20,
        limits: StreamLimits | None = None,
        clock: Any = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.maxSize = maxSize
        self.idleTimeout = idleTimeout
        self.unboundTimeout = unboundTimeout
        self.messageTimeout = messageTimeout
        self.maxBacklog = maxBacklog
        self.limits = limits if limits is not None else StreamLimits(10000, 50)
        self.clock = clock


@implementer(IPushProducer)
class SIPStreamProtocol(Protocol):
    """
    SIP on one TCP or TLS connection, framed by Content-Length, with
    RFC 5626 CRLF keep-alives.

    A connection is closed when it stays silent (no complete message nor
    keep-alive; bytes of an unfinished message do not count) for
    C{unboundTimeout} seconds, or C{idleTimeout} once it carries a binding;
    when a message takes more than C{messageTimeout} seconds from its first
    byte to its last; and when its peer stops reading while more than
    C{maxBacklog} bytes wait for it (reading from it stops meanwhile).
    """

    factory: SIPStreamFactory
    transport: Any  # an ITCPTransport (or its TLS wrapper) once connected
    peer: Peer
    admitted = False
    carriesBinding = False

    def connectionMade(self) -> None:
        factory = self.factory
        settings = factory.settings
        remote = self.transport.getPeer()
        self.source = (remote.host, remote.port)
        if not settings.limits.admit(remote.host):
            self.transport.abortConnection()
            return
        self.admitted = True
        self.framer = StreamFramer(settings.maxSize)
        self.peer = Peer(factory.transportName, self.source, factory.local, self.write, connection=self)
        self._paused = False
        self._backlog = 0
        self._idle: Any = None
        self._deadline: Any = None
        self._restartIdle()
        self.transport.registerProducer(self, True)
        factory.core.connectionMade(self)

    def markBound(self) -> None:
        """A REGISTER over this connection made a binding: it may idle longer."""
        if not self.carriesBinding:
            self.carriesBinding = True
            self._restartIdle()

    # -- reading ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.admitted:
            return
        frames = self.framer.feed(data)
        if frames:
            self._restartIdle()
        for frame in frames:
            if isinstance(frame, Frame):
                self.factory.core.receive(frame.data, self.peer, stream=True)
            elif isinstance(frame, Ping):
                self.write(CRLF)
            elif isinstance(frame, FramingError):
                log.info("Closing {peer}: {reason}", peer=self.peer, reason=frame.reason)
                self.transport.loseConnection()
                return
        if self.framer.pending:
            if self._deadline is None:
                self._deadline = self.factory.settings.clock.callLater(
                    self.factory.settings.messageTimeout, self._messageTimedOut
                )
        elif self._deadline is not None:
            self._cancel("_deadline")

    def _restartIdle(self) -> None:
        settings = self.factory.settings
        self._cancel("_idle")
        timeout = settings.idleTimeout if self.carriesBinding else settings.unboundTimeout
        self._idle = settings.clock.callLater(timeout, self._idleTimedOut)

    def _idleTimedOut(self) -> None:
        self._idle = None
        log.debug("Closing idle {peer}", peer=self.peer)
        self.transport.loseConnection()

    def _messageTimedOut(self) -> None:
        self._deadline = None
        self.factory.counters["slow"] += 1
        log.debug(
            "Closing {peer}: a message took more than {seconds} s",
            peer=self.peer,
            seconds=self.factory.settings.messageTimeout,
        )
        self.transport.abortConnection()

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            if call.active():
                call.cancel()
            setattr(self, name, None)

    # -- writing ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send C{data} to the peer (responses, requests to a registered agent)."""
        if self._paused:
            self._backlog += len(data)
            if self._backlog > self.factory.settings.maxBacklog:
                self.factory.counters["backlogged"] += 1
                log.info("Closing {peer}: it reads nothing of {size} bytes", peer=self.peer, size=self._backlog)
                self.transport.abortConnection()
                return
        self.transport.write(data)

    def pauseProducing(self) -> None:
        # The transport's buffer is full: the peer does not read. Stop
        # reading its requests too, and count what still waits for it.
        self._paused = True
        self._backlog = 0
        reading = self._reading()
        if reading is not None:
            reading.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._backlog = 0
        reading = self._reading()
        if reading is not None:
            reading.resumeProducing()

    def _reading(self) -> Any:
        """What reads the socket: the transport, or under TLS the TCP transport beneath."""
        transport = self.transport
        if hasattr(transport, "pauseProducing"):
            return transport
        return getattr(transport, "transport", None)

    def stopProducing(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self._cancel("_idle")
        self._cancel("_deadline")
        self.factory.settings.limits.release(self.source[0])
        self.factory.core.connectionLost(self)


class SIPStreamFactory(Factory):
    """Makes L{SIPStreamProtocol}s for one listening TCP or TLS port."""

    protocol = SIPStreamProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, core: Any, transportName: str, local: tuple[str, int], settings: StreamSettings) -> None:
        self.core = core
        self.transportName = transportName
        self.local = local
        self.settings = settings
        self.counters = {"slow": 0, "backlogged": 0}
