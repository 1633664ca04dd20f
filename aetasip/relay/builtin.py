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

The forwarding path (L{_RTPPort.datagramReceived}) is the hot path of
the service: it reads the socket through Twisted and writes with
C{sendto} on the other party's socket, with the counters of
L{aetasip.relay.quality.RTPStream}.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from aetasip.interfaces import IRelay
from aetasip.relay import sdp as sdplib
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

_RTPMAP = re.compile(rb"a=rtpmap: *([0-9]{1,3}) +[^/\s]+/([0-9]{1,7})")


class NoPortsLeft(Exception):
    """Every port pair of the range is in use: the offer is refused (503)."""


class PortRange:
    """
    Allocates even/odd port pairs of C{[low, high]} on C{interface},
    round robin (a port just freed is the last to be used again, so late
    packets of an old call do not reach a new one).
    """

    def __init__(self, reactor: Any, interface: str, low: int, high: int) -> None:
        if low % 2:
            low += 1
        self.reactor = reactor
        self.interface = interface
        self.low = low
        self.high = high
        self.pairs = max(0, (high - low + 1) // 2)
        self._next = 0
        self.used: set[int] = set()

    @property
    def free(self) -> int:
        return self.pairs - len(self.used)

    def allocate(self, rtp: DatagramProtocol, rtcp: DatagramProtocol) -> tuple[Any, Any]:
        """
        Listen with C{rtp} on an even port and C{rtcp} on the next one.

        @raise NoPortsLeft: no free pair (in use here or by another program).
        """
        for _ in range(self.pairs):
            even = self.low + 2 * self._next
            self._next = (self._next + 1) % self.pairs
            if even in self.used:
                continue
            try:
                first = self.reactor.listenUDP(even, rtp, interface=self.interface)
            except CannotListenError:
                continue
            try:
                second = self.reactor.listenUDP(even + 1, rtcp, interface=self.interface)
            except CannotListenError:
                first.stopListening()
                continue
            self.used.add(even)
            return first, second
        raise NoPortsLeft(f"no free RTP port pair in {self.low}-{self.high}")

    def release(self, even: int, ports: tuple[Any, Any]) -> list[Deferred[None]]:
        """Close the pair (the sockets close on the reactor's next turn: the returned Deferreds)."""
        self.used.discard(even)
        return [d for d in (port.stopListening() for port in ports) if d is not None]


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
        "dropped",
        "expectedHosts",
        "latched",
        "nat",
        "pair",
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

    def __init__(self) -> None:
        self.port = 0
        self.pair: tuple[Any, Any] | None = None
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

    def close(self, ports: PortRange) -> list[Deferred[None]]:
        closing = []
        if self.pair is not None:
            closing = ports.release(self.port, self.pair)
            self.pair = None
        self.peer = None
        return closing


class _RTPPort(DatagramProtocol):
    """The RTP socket facing a party: what it sends goes to the other party."""

    def __init__(self, stream: Stream, clock: Callable[[], float]) -> None:
        self.stream = stream
        self.clock = clock

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        stream = self.stream
        now = self.clock()
        if addr != stream.latched and not stream.accept(addr, now, False):
            stream.dropped += 1
            return
        stream.received.packet(data, now)
        peer = stream.peer
        if peer is None:
            return
        destination = peer.latched or peer.target
        if destination is None or peer.rtpSocket is None:
            return
        try:
            peer.rtpSocket.sendto(data, destination)
        except OSError:
            return  # a full send buffer: the packet is lost, as on the network
        peer.sentPackets += 1
        peer.sentBytes += len(data)


class _RTCPPort(DatagramProtocol):
    """The RTCP socket facing a party."""

    def __init__(self, stream: Stream, clock: Callable[[], float]) -> None:
        self.stream = stream
        self.clock = clock

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        stream = self.stream
        now = self.clock()
        if addr != stream.rtcpLatched and not stream.accept(addr, now, True):
            stream.dropped += 1
            return
        stream.rtcpLast = now
        peer = stream.peer
        if peer is None or peer.rtcpSocket is None:
            return
        destination = peer.rtcpLatched or peer.rtcpTarget
        if destination is None:
            return
        try:
            peer.rtcpSocket.sendto(data, destination)
        except OSError:
            return


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

    def close(self, ports: PortRange) -> list[Deferred[None]]:
        closing = [d for stream in self.streams if stream is not None for d in stream.close(ports)]
        self.streams = []
        return closing


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
        self.ports = PortRange(reactor, address, ports[0], ports[1])
        self._sessions: dict[tuple[str, str], Session] = {}

    def stopService(self) -> Deferred[None]:
        super().stopService()
        closing: list[Deferred[None]] = []
        for key in list(self._sessions):
            self._release(key, closing)
        return gatherResults(closing).addCallback(lambda _: None)

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
        if session is None:
            session = self._sessions[(callID, fromTag)] = Session(callID, fromTag)
        if toTag:
            session.toTag = toTag
        return self._apply(session, branch, sender, sdp, source, latchAnySource, answer=True)

    def delete(self, callID: str, fromTag: str) -> Deferred[RelayStats | None]:
        return succeed(self._release((callID, fromTag)))

    def query(self, callID: str, fromTag: str) -> Deferred[RelayStats | None]:
        session = self._sessions.get((callID, fromTag))
        return succeed(None if session is None else self.stats(session))

    def sessions(self) -> Deferred[list[tuple[str, str, RelayStats]]]:
        return succeed([(s.callID, s.fromTag, self.stats(s)) for s in self._sessions.values()])

    # -- the work

    def stats(self, session: Session) -> RelayStats:
        callee = session.callees.get(session.active or "") or next(iter(session.callees.values()), None)
        return RelayStats(str(self.name), session.caller.stats(), callee.stats() if callee is not None else LegStats())

    def _release(self, key: tuple[str, str], closing: list[Deferred[None]] | None = None) -> RelayStats | None:
        session = self._sessions.pop(key, None)
        if session is None:
            return None
        stats = self.stats(session)
        for party in session.parties():
            done = party.close(self.ports)
            if closing is not None:
                closing.extend(done)
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
                stream.close(self.ports)
            for party in (own, other):
                party.streams = [s if s not in new else None for s in party.streams]
            log.warn("Relay node {node}: {error}", node=self.name, error=e)
            return fail(e)
        return succeed(description.rewrite(endpoints))

    def _stream(self, party: Party, index: int, new: list[Stream]) -> Stream:
        stream = party.stream(index)
        if stream is not None and stream.pair is not None:
            return stream
        stream = Stream()
        clock = self.reactor.seconds
        rtp, rtcp = self.ports.allocate(_RTPPort(stream, clock), _RTCPPort(stream, clock))
        stream.pair = (rtp, rtcp)
        stream.port = rtp.getHost().port
        stream.rtpSocket = rtp.socket
        stream.rtcpSocket = rtcp.socket
        while len(party.streams) <= index:
            party.streams.append(None)
        party.streams[index] = stream
        new.append(stream)
        return stream


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
