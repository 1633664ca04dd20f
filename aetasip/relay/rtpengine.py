"""
Relay nodes on rtpengine (L{aetasip.interfaces.IRelay} over the ng
protocol): a node of C{relay.nodes} of kind C{rtpengine} names the ng
addresses of one or more rtpengine daemons (its options are checked in
L{aetasip.relay.settings}), and media of the calls given to that node
goes through rtpengine (in-kernel forwarding when its kernel module is
loaded) instead of this process. The node is a service of the relay's
media handler: it opens its ng sockets when the service starts.

How the SDP is handed over (rtpengine's flags, set on every offer and
answer):

    - a leg behind NAT (C{latchAnySource}) gets C{SIP source address} with
      C{received from} its signalling source: rtpengine ignores the
      (private) address of its SDP, never sends there, and learns its
      media address from packets coming from the signalling source's
      host, any port (the per-call flag C{endpoint-learning-heuristic},
      which wins over the daemon's C{--endpoint-learning}: the
      signalling host ranks first, so a stranger sending first does not
      take the leg);
    - other legs (their SDP is true) get C{trust address} and
      C{asymmetric}: rtpengine learns nothing for them ("asymmetric [...]
      disables learning of endpoint addresses", ng_control_protocol.md)
      and takes their media address from the SDP, so with C{strict source}
      a stranger's packets are dropped and counted from the first one
      (the agent must send from the port it receives on: symmetric RTP,
      RFC 4961, as broadcast codecs do);
    - C{strict source}: once learnt, packets from elsewhere are dropped.
      rtpengine's learning window (3 s after the call's last signalling,
      in every mode but C{immediate}) does not delay media: it forwards
      both ways from the NATed leg's first packet (the tests measure it),
      and only confirms the latch, and applies strict source to that
      leg, once the window is over; until then it forwards a stranger's
      packets sent to that leg's port on to the other party, though it
      sends nothing back to a stranger. C{immediate} learning (the
      daemon option or the per-call flag C{endpoint-learning-immediate})
      closes that window but gives the leg to whoever sends first: a
      stranger sending before the caller hears the call and the caller
      hears nothing (measured with rtpengine 10.5), which is worse. The
      built-in relay, which latches on the signalling host from the
      first packet, has neither problem;
    - ICE lines are removed from the SDP before rtpengine sees it, and
      C{ICE: remove}: agents must not route around the relay, and
      rtpengine, given candidates, sends media and connectivity checks to
      them whatever C{SIP source address} says (a private address leaks);
      C{replace: origin, session connection};
    - C{port latching}: a re-INVITE keeps the relay's ports, even when
      the other side's address changes (agents that ignore an SDP change
      keep working);
    - C{via-branch}: the branch of a forked call, so each fork gets its
      own ports until the answer names the callee's tag; a fork that lost
      (another answered, or it failed) gets its own C{delete} with its
      C{via-branch} (L{RtpengineNode.deleteBranch}) and gives its ports
      back while the call goes on.

rtpengine names each side of a call by the tag of its SIP party and
wants the offerer's tag as C{from-tag}; the node remembers, per session
and branch, the tag it used for the callee (its To tag, once an answer
gave it), so a re-INVITE or a late offer from the callee is sent with
the callee's tag as C{from-tag}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from aetasip.interfaces import IRelay
from aetasip.relay.ng import Address, NgError, NgProtocolError, Reply
from aetasip.relay.ngclient import Backend, NgClient, NgPool, NgTimeout, RelayUnavailable
from aetasip.relay.rtpengineplacement import Placement, Session, viaBranch
from aetasip.relay.rtpenginestats import guessCaller, relayStats
from aetasip.relay.stats import RelayStats

log = Logger()

LIST_LIMIT = 1000
"""Most call-IDs asked of one rtpengine by C{list}: its reply must fit one UDP datagram."""


@implementer(IRelay)
class RtpengineNode(Service):
    """
    A relay node whose media goes through rtpengine daemons (an L{NgPool}).

    With a C{reactor}, starting the service opens a UDP socket for each
    L{NgClient} of the pool (one per address family, see L{makeNode}) and
    pings every daemon; stopping it stops the pings and closes them.

    Failures: C{offer} and C{answer} fail with L{RelayUnavailable} (no
    daemon answers, too many requests waiting), L{NgError} (rtpengine
    refused: bad SDP, no ports) or L{NgProtocolError} (a garbled reply);
    C{answer} with L{UnknownSession} when no daemon of this node has the
    call. C{delete} forgets the session first, then asks its daemon
    (or, for a call this node does not remember, every daemon up): it
    fires with the final statistics, C{None} when no daemon had the call,
    and fails only when the session's daemon did not answer (rtpengine
    then ends the call itself after its own media timeout). C{query}
    fires with C{None} for an unknown call.

    Calls this node did not set up (the other server of a cluster did,
    and died; or this one restarted) are adopted: an answer for a call
    it does not remember goes to each daemon up in turn until one has
    the call (the others refuse it, "Unknown call-id"), and the session
    is remembered with that daemon from then on (re-INVITEs, keep-alives,
    delete, statistics). An offer for a call it does not remember, from
    the callee (a re-INVITE) or on a node of several daemons, first asks
    them (C{query}) which has the call and with which tags.
    """

    def __init__(self, name: str, pool: NgPool, reactor: Any = None, keepalive: float = 30.0) -> None:
        self.name = name
        self.pool = pool
        self.reactor = reactor
        self.keepalive = keepalive
        self._ports: list[Any] = []
        self.placement = Placement(name, pool)

    def startService(self) -> None:
        super().startService()
        if self.reactor is not None:
            clients: dict[NgClient, list[Address]] = {}
            for backend in self.pool.backends:
                clients.setdefault(backend.client, []).append(backend.address)
            for client, addresses in clients.items():
                if client.transport is None:
                    interface = _interface(addresses, ":" in addresses[0][0])
                    self._ports.append(self.reactor.listenUDP(0, client, interface=interface))
        log.info(
            "Relay node {node}: rtpengine at {daemons}",
            node=self.name,
            daemons=", ".join(backend.name for backend in self.pool.backends),
        )
        # Learn at once which daemons answer, rather than on the first call.
        self.pool.ping()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.pool.stop()
        ports, self._ports = self._ports, []
        d = gatherResults([p.stopListening() or succeed(None) for p in ports])
        return d.addCallback(lambda _: log.info("Relay node {node} stopped", node=self.name))

    # -- offer and answer ------------------------------------------------------

    def _media(self, sdp: bytes, source: Address, latchAnySource: bool) -> dict[str, Any]:
        host = source[0]
        return {
            "sdp": withoutICE(sdp),
            "ICE": "remove",
            "replace": ["origin", "session-connection"],
            "received-from": ["IP6" if ":" in host else "IP4", host],
            "flags": (
                ["SIP-source-address", "strict-source", "port-latching", "endpoint-learning-heuristic"]
                if latchAnySource
                else ["trust-address", "asymmetric", "strict-source", "port-latching"]
            ),
        }

    @staticmethod
    def _sdp(command: str, reply: Reply) -> bytes:
        if reply.result != "ok":
            raise RelayUnavailable(f"rtpengine answered {reply.result!r} to {command}")
        if reply.warning:
            log.info("rtpengine warns about {command}: {warning}", command=command, warning=reply.warning)
        sdp = reply.body.get("sdp")
        if not isinstance(sdp, bytes) or not sdp:
            raise NgProtocolError(f"rtpengine's reply to {command} has no SDP")
        return sdp

    def offer(
        self,
        callID: str,
        fromTag: str,
        branch: object,
        sender: str,
        sdp: bytes,
        source: Address,
        latchAnySource: bool,
    ) -> Deferred[bytes]:
        return Deferred.fromCoroutine(self._offer(callID, fromTag, branch, sender, sdp, source, latchAnySource))

    async def _offer(
        self,
        callID: str,
        fromTag: str,
        branch: object,
        sender: str,
        sdp: bytes,
        source: Address,
        latchAnySource: bool,
    ) -> bytes:
        if sender not in ("caller", "callee"):
            raise ValueError(f"an offer comes from the caller or the callee, not {sender!r}")
        key = (callID, fromTag)
        branchKey = viaBranch(branch)
        arguments = self._media(sdp, source, latchAnySource)
        arguments.update({"call-id": callID, "via-branch": branchKey})
        session = self.placement.sessions.get(key)
        calleeTag = session.calleeTags.get(branchKey) if session is not None else None
        if sender == "caller":
            arguments["from-tag"] = fromTag
            if calleeTag is not None:
                arguments["to-tag"] = calleeTag
        else:
            if calleeTag is None:
                # A late offer in the callee's 2xx: its To tag is not known
                # here, so this branch's callee side gets a tag of its own,
                # used for it from now on.
                calleeTag = f"aetasip-branch-{branchKey}"
                if session is not None:
                    session.calleeTags[branchKey] = calleeTag
            arguments["from-tag"] = calleeTag
            arguments["to-tag"] = fromTag

        def located(found: Session, partner: str | None) -> None:
            # A call set up through another server: rtpengine knows its callee by its own tag.
            if partner is not None:
                found.calleeTags[branchKey] = partner
                arguments["from-tag" if sender == "callee" else "to-tag"] = partner

        # An offer of a call this node does not know may be a re-INVITE of a
        # call set up elsewhere: from the callee (rtpengine needs its tag),
        # or on a node of several daemons (it must go to the one with the call).
        locate = session is None and (sender != "caller" or len(self.pool.backends) > 1)
        reply = await self.placement.backendFor(key, "offer", arguments, located if locate else None)
        session = self.placement.sessions.get(key)
        if session is not None:
            if sender != "caller":
                session.calleeTags.setdefault(branchKey, calleeTag)  # type: ignore[arg-type]
            session.offers[branchKey] = arguments
            session.signalledAt = self._now()
        return self._sdp("offer", reply)

    def answer(
        self,
        callID: str,
        fromTag: str,
        toTag: str | None,
        branch: object,
        sender: str,
        sdp: bytes,
        source: Address,
        latchAnySource: bool,
    ) -> Deferred[bytes]:
        return Deferred.fromCoroutine(self._answer(callID, fromTag, toTag, branch, sender, sdp, source, latchAnySource))

    async def _answer(
        self,
        callID: str,
        fromTag: str,
        toTag: str | None,
        branch: object,
        sender: str,
        sdp: bytes,
        source: Address,
        latchAnySource: bool,
    ) -> bytes:
        if sender not in ("caller", "callee"):
            raise ValueError(f"an answer comes from the caller or the callee, not {sender!r}")
        key = (callID, fromTag)
        session = self.placement.sessions.get(key)
        branchKey = viaBranch(branch)
        # Without the callee's To tag (an answer without one) the branch gets a tag of its own.
        if session is not None:
            calleeTag = session.calleeTags.setdefault(branchKey, toTag or f"aetasip-branch-{branchKey}")
        else:
            calleeTag = toTag or f"aetasip-branch-{branchKey}"
        arguments = self._media(sdp, source, latchAnySource)
        arguments.update({"call-id": callID, "via-branch": branchKey})
        if sender == "callee":
            arguments.update({"from-tag": fromTag, "to-tag": calleeTag})
        else:
            arguments.update({"from-tag": calleeTag, "to-tag": fromTag})
        if session is None:
            # Offered elsewhere (by another server): the daemon that has it.
            reply = await self.placement.adopt(key, "answer", arguments)
            session = self.placement.sessions[key]
            session.calleeTags.setdefault(branchKey, calleeTag)
        else:
            reply = await self.placement.backendFor(key, "answer", arguments)
        session.answered = branchKey
        offer = session.offers.get(branchKey)
        # Without an offer here (adopted from another server), keep-alives send the answer alone.
        session.negotiated = (offer, arguments)
        session.signalledAt = self._now()
        return self._sdp("answer", reply)

    def _now(self) -> float:
        return float(self.reactor.seconds()) if self.reactor is not None else 0.0

    def keepAlive(self, callID: str, fromTag: str, lastPacketAt: float | None) -> Deferred[bool]:
        """
        Keep the session of a call whose parties send nothing (on hold)
        on its daemon: rtpengine deletes a call once none of its streams
        got a packet for C{--timeout} seconds (C{--silent-timeout} for
        streams that do not receive), but each offer or answer counts as
        activity. When neither a packet (C{lastPacketAt}) nor a request
        reached the daemon for C{keepalive} seconds, the answered branch's
        last offer and answer are sent again, unchanged (the ports stay,
        C{port latching}; rtpengine's learning starts again for a NATed
        leg, which is on hold). Not done while an offer awaits its answer
        (a re-INVITE under way). Not part of L{IRelay}: the handler uses
        it when a node has it.

        @return: a Deferred firing (never failing) with whether it was sent.
        """
        return Deferred.fromCoroutine(self._keepAlive(callID, fromTag, lastPacketAt))

    async def _keepAlive(self, callID: str, fromTag: str, lastPacketAt: float | None) -> bool:
        session = self.placement.sessions.get((callID, fromTag))
        if self.keepalive <= 0 or session is None or session.backend is None or session.negotiated is None:
            return False
        offer, answer = session.negotiated
        if session.answered is None or session.offers.get(session.answered) is not offer:
            return False  # an offer awaits its answer
        # A call adopted from its answer (offered through another server)
        # has no offer here: the answer alone counts as signalling.
        exchange = [("answer", answer)] if offer is None else [("offer", offer), ("answer", answer)]
        now = self._now()
        if now - max(session.signalledAt, lastPacketAt or 0.0) < self.keepalive:
            return False
        session.signalledAt = now
        try:
            for command, arguments in exchange:
                reply = await self.pool.requestTo(session.backend, command, arguments)
                self._sdp(command, reply)
        except (NgTimeout, NgError, NgProtocolError, RelayUnavailable) as e:
            log.warn("rtpengine keep-alive of {callID} failed: {error}", callID=callID, error=e)
            return False
        log.debug("rtpengine session of {callID} kept alive (no media for a while)", callID=callID)
        return True

    def deleteBranch(self, callID: str, fromTag: str, branch: object) -> Deferred[None]:
        """
        Release the ports of one fork of a call (a branch that did not
        answer): rtpengine's C{delete} with its C{via-branch}, and the
        callee's tag when a 18x gave one. Fires (never failing) once
        rtpengine answered.
        """
        return Deferred.fromCoroutine(self._deleteBranch(callID, fromTag, viaBranch(branch)))

    async def _deleteBranch(self, callID: str, fromTag: str, branchKey: str) -> None:
        session = self.placement.sessions.get((callID, fromTag))
        if session is None or session.backend is None or session.answered == branchKey:
            return
        arguments: dict[str, Any] = {"call-id": callID, "from-tag": fromTag, "via-branch": branchKey, "delete delay": 0}
        calleeTag = session.calleeTags.pop(branchKey, None)
        if calleeTag is not None:
            arguments["to-tag"] = calleeTag
        try:
            reply = await self.pool.requestTo(session.backend, "delete", arguments)
        except (NgTimeout, NgError, NgProtocolError) as e:
            log.warn(
                "rtpengine did not release branch {branch} of {callID}: {error}",
                branch=branchKey,
                callID=callID,
                error=e,
            )
            return
        if reply.warning:
            log.info(
                "rtpengine on branch {branch} of {callID}: {warning}",
                branch=branchKey,
                callID=callID,
                warning=reply.warning,
            )

    # -- delete, query, sessions -------------------------------------------------

    def delete(self, callID: str, fromTag: str) -> Deferred[RelayStats | None]:
        return Deferred.fromCoroutine(self._delete(callID, fromTag))

    async def _delete(self, callID: str, fromTag: str) -> RelayStats | None:
        key = (callID, fromTag)
        session = self.placement.sessions.pop(key, None)
        callerTag, calleeTag = self.placement.tags(key, session)
        stats: RelayStats | None = None
        failure: Exception | None = None
        for backend in self.placement.backendsFor(session):
            try:
                reply = await self.pool.requestTo(
                    backend, "delete", {"call-id": callID, "from-tag": fromTag, "delete delay": 0}
                )
            except (NgTimeout, NgError, NgProtocolError) as e:
                failure = e
                continue
            if reply.warning:
                # "Call-ID not found or tags didn't match": not there.
                continue
            stats = self._stats(reply.body, callerTag, calleeTag)
        if stats is None and failure is not None and session is not None:
            raise failure
        return stats

    def _stats(self, body: Mapping[str, Any], callerTag: str, calleeTag: str | None) -> RelayStats | None:
        try:
            return relayStats(str(self.name), body, callerTag, calleeTag)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            log.warn("rtpengine statistics not understood: {error}", error=e)
            return None

    def query(self, callID: str, fromTag: str) -> Deferred[RelayStats | None]:
        return Deferred.fromCoroutine(self._query(callID, fromTag))

    async def _query(self, callID: str, fromTag: str) -> RelayStats | None:
        key = (callID, fromTag)
        session = self.placement.sessions.get(key)
        callerTag, calleeTag = self.placement.tags(key, session)
        for backend in self.placement.backendsFor(session):
            try:
                reply = await self.pool.requestTo(backend, "query", {"call-id": callID, "from-tag": fromTag})
            except NgError:
                continue  # "Unknown call-id"
            return self._stats(reply.body, callerTag, calleeTag)
        return None

    def sessions(self) -> Deferred[list[tuple[str, str, RelayStats]]]:
        return Deferred.fromCoroutine(self._allSessions())

    async def _allSessions(self) -> list[tuple[str, str, RelayStats]]:
        semaphore = DeferredSemaphore(8)
        found: list[tuple[str, str, RelayStats]] = []
        known = {(k[0], id(s.backend)): (k, s) for k, s in self.placement.sessions.items()}

        async def one(backend: Backend, callID: str) -> None:
            try:
                reply = await self.pool.requestTo(backend, "query", {"call-id": callID})
            except (NgError, NgProtocolError, NgTimeout):
                return  # ended meanwhile, or the daemon went away
            session = known.get((callID, id(backend)))
            if session is not None:
                callerTag, calleeTag = self.placement.tags(*session)
            else:
                callerTag, calleeTag = guessCaller(reply.body), None
            stats = self._stats(reply.body, callerTag, calleeTag)
            if stats is not None:
                found.append((callID, callerTag, stats))

        for backend in [b for b in self.pool.backends if b.up]:
            try:
                reply = await self.pool.requestTo(backend, "list", {"limit": LIST_LIMIT})
            except (NgError, NgProtocolError, NgTimeout) as e:
                log.warn("rtpengine {backend} did not list its calls: {error}", backend=backend.name, error=e)
                continue
            calls = reply.body.get("calls")
            callIDs = [c.decode("utf-8", "surrogateescape") for c in calls or [] if isinstance(c, bytes)]
            await gatherResults([semaphore.run(one, backend, c) for c in callIDs])
        found.sort(key=lambda item: item[:2])
        return found


_ICE_ATTRIBUTES = (
    b"a=candidate:",
    b"a=remote-candidates:",
    b"a=end-of-candidates",
    b"a=ice-",
)


def withoutICE(sdp: bytes) -> bytes:
    """C{sdp} without its ICE attribute lines (RFC 8839), the rest byte for byte."""
    lines = sdp.splitlines(keepends=True)
    kept = [line for line in lines if not line.lower().startswith(_ICE_ATTRIBUTES)]
    return sdp if len(kept) == len(lines) else b"".join(kept)


# -- the service -------------------------------------------------------------------


def _interface(addresses: Iterable[Address], ipv6: bool) -> str:
    import ipaddress

    loopback = all(ipaddress.ip_address(host).is_loopback for host, _ in addresses)
    if ipv6:
        return "::1" if loopback else "::"
    return "127.0.0.1" if loopback else "0.0.0.0"


def makeNode(name: str, options: Mapping[str, Any], config: Any, reactor: Any) -> RtpengineNode:
    """The rtpengine node C{name} of C{relay.nodes} (see L{aetasip.relay.settings})."""
    from aetasip.relay.settings import rtpengineOptions

    checked = rtpengineOptions(name, options, config.values)
    clock: IReactorTime = reactor
    clients: dict[bool, NgClient] = {}
    backends = []
    for address in checked.ng:
        ipv6 = ":" in address[0]
        if ipv6 not in clients:
            clients[ipv6] = NgClient(clock, checked.timeout, checked.retries, checked.maxPending)
        backends.append(Backend(address, clients[ipv6]))
    return RtpengineNode(name, NgPool(name, backends, clock, checked.recheckInterval), reactor, checked.keepalive)
