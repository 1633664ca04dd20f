"""
The built-in relay node (L{IRelay}): RTP/RTCP port pairs (even/odd) from
a range (L{aetasip.relay.ports}), one pair per party and media section,
forwarding datagrams between the two parties of a call with symmetric
latching (L{aetasip.relay.forwarding}, the hot path). Here: the calls'
sessions and parties, and the SDP of each offer and answer, which points
each party at the ports facing it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from aetasip.interfaces import IRelay
from aetasip.relay import sdp as sdplib
from aetasip.relay.errors import UnknownSession
from aetasip.relay.forwarding import Poller, Stream
from aetasip.relay.ports import NoPortsLeft, PortRange, raiseFileLimit
from aetasip.relay.quality import STATIC_CLOCK_RATES
from aetasip.relay.stats import LegStats, RelayStats, StreamStats

log = Logger()

CALLER = "caller"
CALLEE = "callee"
_RTPMAP = re.compile(rb"a=rtpmap: *([0-9]{1,3}) +[^/\s]+/([0-9]{1,7})")


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
        log.info(
            "Relay node {node}: built-in, on {address} ports {low}-{high}, advertised as {advertise}",
            node=self.name,
            address=self.address,
            low=self.ports.low,
            high=self.ports.high,
            advertise=self.advertise,
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for key in list(self._sessions):
            self._release(key)
        self.poller.close()
        log.info("Relay node {node} stopped", node=self.name)
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
