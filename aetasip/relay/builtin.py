"""
The built-in relay node (L{IRelay}): RTP/RTCP port pairs (even/odd) from
a range, one pair per party and media section, forwarding datagrams
between the two parties of a call with symmetric latching.

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

import re
import resource
import select
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from aetasip.interfaces import IRelay
from aetasip.relay import sdp as sdplib
from aetasip.relay.errors import UnknownSession
from aetasip.relay.quality import STATIC_CLOCK_RATES, RTPStream
from aetasip.relay.stats import LegStats, RelayStats, StreamStats

log = Logger()

CALLER = "caller"
CALLEE = "callee"

RELATCH_AFTER = 2.0
"""
Seconds of silence from a latched party behind NAT after which a packet
from its signalling host on another port latches again (its NAT mapping
changed). Only that host may: the rule against hijacking stays.
"""

RECEIVE_SIZE = 65535
"""The largest datagram read (a larger one is cut, as any UDP receiver would)."""

_RTPMAP = re.compile(rb"a=rtpmap: *([0-9]{1,3}) +[^/\s]+/([0-9]{1,7})")


class NoPortsLeft(Exception):
    """Every port pair of the range is in use: the offer is refused (503)."""


class PortRange:
    """
    Binds even/odd UDP port pairs of C{[low, high]} on C{interface},
    round robin (a port just freed is the last to be used again, so late
    packets of an old call do not reach a new one). A port another program
    holds is skipped.
    """

    def __init__(self, interface: str, low: int, high: int) -> None:
        if low % 2:
            low += 1
        self.interface = interface
        self.family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self.low = low
        self.high = high
        self.pairs = max(0, (high - low + 1) // 2)
        self._next = 0
        self.used: set[int] = set()

    @property
    def free(self) -> int:
        return self.pairs - len(self.used)

    def allocate(self) -> tuple[int, socket.socket, socket.socket]:
        """
        @return: the even port and the two bound non-blocking sockets.
        @raise NoPortsLeft: no free pair (in use here or by another program).
        """
        for _ in range(self.pairs):
            even = self.low + 2 * self._next
            self._next = (self._next + 1) % self.pairs
            if even in self.used:
                continue
            pair: list[socket.socket] = []
            for port in (even, even + 1):
                try:
                    sock = socket.socket(self.family, socket.SOCK_DGRAM)
                except OSError as e:
                    # Out of file descriptors: no pair can be had now.
                    for opened in pair:
                        opened.close()
                    raise NoPortsLeft(f"cannot open a socket: {e.strerror}") from None
                try:
                    sock.bind((self.interface, port))
                except OSError:
                    sock.close()
                    break
                sock.setblocking(False)
                pair.append(sock)
            if len(pair) == 2:
                self.used.add(even)
                return even, pair[0], pair[1]
            for sock in pair:
                sock.close()
        raise NoPortsLeft(f"no free RTP port pair in {self.low}-{self.high}")

    def release(self, even: int) -> None:
        self.used.discard(even)


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


class Party:
    """One party of a relayed call (the caller, or a callee branch): its streams by media section."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.streams: list[Stream | None] = []

    def stream(self, index: int) -> Stream | None:
        return self.streams[index] if index < len(self.streams) else None

    def stats(self) -> LegStats:
        streams = [s for s in self.streams if s is not None]
        if not streams:
            return LegStats()
        first = streams[0]
        received = first.received.stats()
        received.packets = sum(s.received.packets for s in streams)
        received.bytes = sum(s.received.bytes for s in streams)
        lasts = [t for s in streams for t in (s.received.lastPacketAt, s.rtcpLast) if t is not None]
        received.lastPacketAt = max(lasts) if lasts else None
        sent = StreamStats(sum(s.sentPackets for s in streams), sum(s.sentBytes for s in streams))
        return LegStats(first.latched, received, sent, sum(s.dropped for s in streams))

    def close(self, ports: PortRange, poller: Poller) -> None:
        for stream in self.streams:
            if stream is not None:
                stream.close(ports, poller)
        self.streams = []


class Session:
    """
    A relayed call: the caller's party and one party per callee branch;
    the caller's media goes to the branch that answered last.
    """

    def __init__(self, callID: str, fromTag: str) -> None:
        self.callID = callID
        self.fromTag = fromTag
        self.caller = Party(CALLER)
        self.callees: dict[str, Party] = {}
        self.active: str | None = None
        self.toTag: str | None = None

    def callee(self, branch: str) -> Party:
        party = self.callees.get(branch)
        if party is None:
            party = self.callees[branch] = Party(CALLEE)
        return party

    def parties(self) -> list[Party]:
        return [self.caller, *self.callees.values()]


@implementer(IRelay)
class BuiltinRelay(service.Service):
    """
    The built-in relay node.

    @param name: the node's name (a key of C{relay.nodes}).
    @param address: the address its sockets are bound to.
    @param advertise: the address written in SDP (default: C{address}).
    @param ports: the C{(low, high)} port range.
    """

    def __init__(
        self,
        name: str,
        address: str,
        ports: tuple[int, int],
        advertise: str | None = None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.name = name
        self.reactor = reactor
        self.address = address
        self.advertise = advertise or address
        self.ports = PortRange(address, ports[0], ports[1])
        self.poller = Poller(reactor)
        self._sessions: dict[tuple[str, str], Session] = {}

    def startService(self) -> None:
        super().startService()
        raiseFileLimit(2 * self.ports.pairs * 2 + 512, self.name)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for key in list(self._sessions):
            self._release(key)
        self.poller.close()
        return succeed(None)

    # -- IRelay

    def offer(
        self,
        callID: str,
        fromTag: str,
        branch: str,
        sender: str,
        sdp: bytes,
        source: tuple[str, int],
        latchAnySource: bool,
    ) -> Deferred[bytes]:
        session = self._sessions.get((callID, fromTag))
        if session is None:
            session = self._sessions[(callID, fromTag)] = Session(callID, fromTag)
        return self._apply(session, branch, sender, sdp, source, latchAnySource, answer=False)

    def answer(
        self,
        callID: str,
        fromTag: str,
        toTag: str | None,
        branch: str,
        sender: str,
        sdp: bytes,
        source: tuple[str, int],
        latchAnySource: bool,
    ) -> Deferred[bytes]:
        session = self._sessions.get((callID, fromTag))
        if session is None or branch not in session.callees:
            # No offer of this branch went through here (it went through
            # another server's relay, whose ports died with it): new ports
            # would leave the call silent, the other party sending to the
            # dead ones.
            return fail(
                UnknownSession(
                    f"relay node {self.name} has no ports for call {callID!r}: its offer went through another relay"
                )
            )
        if toTag:
            session.toTag = toTag
        return self._apply(session, branch, sender, sdp, source, latchAnySource, answer=True)

    def delete(self, callID: str, fromTag: str) -> Deferred[RelayStats | None]:
        return succeed(self._release((callID, fromTag)))

    def deleteBranch(self, callID: str, fromTag: str, branch: str) -> Deferred[None]:
        """
        Release the ports of the callee branch C{branch} (a hunting member
        or a forked branch that failed): the call goes on without it. Not
        part of L{IRelay}: the handler uses it when a node has it.
        """
        session = self._sessions.get((callID, fromTag))
        party = session.callees.pop(branch, None) if session is not None else None
        if party is not None and session is not None:
            if session.active == branch:
                session.active = None
            for stream in session.caller.streams:
                if stream is not None and stream.peer is not None and stream.peer in party.streams:
                    stream.peer = None
            party.close(self.ports, self.poller)
        return succeed(None)

    def query(self, callID: str, fromTag: str) -> Deferred[RelayStats | None]:
        session = self._sessions.get((callID, fromTag))
        return succeed(None if session is None else self.stats(session))

    def sessions(self) -> Deferred[list[tuple[str, str, RelayStats]]]:
        return succeed([(s.callID, s.fromTag, self.stats(s)) for s in self._sessions.values()])

    # -- the work

    def stats(self, session: Session) -> RelayStats:
        callee = session.callees.get(session.active or "") or next(iter(session.callees.values()), None)
        return RelayStats(str(self.name), session.caller.stats(), callee.stats() if callee is not None else LegStats())

    def _release(self, key: tuple[str, str]) -> RelayStats | None:
        session = self._sessions.pop(key, None)
        if session is None:
            return None
        stats = self.stats(session)
        for party in session.parties():
            party.close(self.ports, self.poller)
        return stats

    def _apply(
        self,
        session: Session,
        branch: str,
        sender: str,
        body: bytes,
        source: tuple[str, int],
        nat: bool,
        answer: bool,
    ) -> Deferred[bytes]:
        """
        The SDP of C{sender}: its party now expects media where it says;
        the SDP forwarded to the other party points at the other party's
        ports (allocated here when new).
        """
        try:
            description = sdplib.parse(body)
        except sdplib.SDPError as e:
            return fail(e)
        if sender == CALLER:
            own, other = session.caller, session.callee(branch)
        else:
            own, other = session.callee(branch), session.caller
        if sender == CALLEE and (answer or session.active is None):
            session.active = branch
        rates = rtpRates(body)
        endpoints: list[tuple[str, int] | None] = []
        new: list[Stream] = []
        try:
            for index, (media, wanted) in enumerate(zip(description.media, description.rtpAddresses(), strict=True)):
                if wanted is None:
                    endpoints.append(None)
                    mine = own.stream(index)
                    if mine is not None:
                        mine.target = mine.rtcpTarget = None
                    continue
                mine = self._stream(own, index, new)
                theirs = self._stream(other, index, new)
                connection = description.connectionOf(media)
                target = None if connection is None or connection.ip is None or connection.unspecified else wanted
                rtcpTarget = None
                if target is not None:
                    rtcpHost = media.rtcpConnection.address if media.rtcpConnection is not None else target[0]
                    rtcpTarget = (rtcpHost, media.rtcp if media.rtcp is not None else target[1] + 1)
                mine.expect(target, rtcpTarget, source[0], nat, rates)
                if (sender == CALLEE and session.active == branch) or sender == CALLER:
                    mine.peer, theirs.peer = theirs, mine
                endpoints.append((self.advertise, theirs.port))
        except NoPortsLeft as e:
            for stream in new:
                stream.close(self.ports, self.poller)
            for party in (own, other):
                party.streams = [s if s not in new else None for s in party.streams]
            log.warn("Relay node {node}: {error}", node=self.name, error=e)
            return fail(e)
        return succeed(description.rewrite(endpoints))

    def _stream(self, party: Party, index: int, new: list[Stream]) -> Stream:
        stream = party.stream(index)
        if stream is not None and stream.rtpSocket is not None:
            return stream
        stream = Stream(self.reactor.seconds)
        stream.port, stream.rtpSocket, stream.rtcpSocket = self.ports.allocate()
        self.poller.add(stream.rtpSocket, stream.relayRTP)
        self.poller.add(stream.rtcpSocket, stream.relayRTCP)
        while len(party.streams) <= index:
            party.streams.append(None)
        party.streams[index] = stream
        new.append(stream)
        return stream


def raiseFileLimit(needed: int, node: object) -> None:
    """
    Raise this process's soft limit of open files to C{needed} (two
    sockets per port pair, and room for the rest of the service), within
    the hard limit: systemd starts services with a soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warn(
            "Relay node {node}: the open files limit ({hard}) is below the {needed} its port range may need "
            "(LimitNOFILE= in the systemd unit): calls will get 503 before the range is full",
            node=node,
            hard=hard,
            needed=needed,
        )


def rtpRates(body: bytes) -> dict[int, int]:
    """The RTP clock rate of each payload type: the static ones and those C{a=rtpmap} gives."""
    rates = dict(STATIC_CLOCK_RATES)
    for pt, rate in _RTPMAP.findall(body):
        if int(pt) < 128 and int(rate) > 0:
            rates[int(pt)] = int(rate)
    return rates


def makeNode(name: str, options: Mapping[str, Any], config: Any, reactor: Any) -> BuiltinRelay:
    """The built-in node C{name} of C{relay.nodes} (see L{aetasip.relay.settings})."""
    from aetasip.relay.settings import builtinOptions

    checked = builtinOptions(name, options, config.values)
    return BuiltinRelay(name, checked.address, checked.ports, checked.advertise, reactor)
