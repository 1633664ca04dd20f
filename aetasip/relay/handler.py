"""
C{RelayHandler}: the media handler (L{IMediaHandler}) of the relay
(C{calls.media_handler = "relay"}).

For each branch of a call it decides whether media is relayed
(L{aetasip.relay.decision}; the decision and its reason are logged and
kept in C{call.media["relay"]}), picks the node by the caller's registrar
domain (C{relay.domains}, else C{relay.default_node}), and has the node
rewrite each offer and answer. When the call ends the node's session is
deleted and its final statistics kept on the call
(C{call.media["relay"]["stats"]}) before the call's observers hear that
it ended.

An answered relayed call is released through L{ICallControl} (end cause
C{media timeout}) when a party that is to send media sends nothing, not
even RTCP, for C{relay.media_timeout} seconds. Who is to send follows the
directions each offer/answer negotiated per media section (L{flows},
L{senders}): a party sends where it declared C{sendrecv} or C{sendonly}
and the other party receives; so a one-way call (a codec sending
C{sendonly} to a receiver) is released when its sender stops, whatever
the receiver does, and a call on hold (C{a=inactive} both ways, or the
old C{c=0.0.0.0}) is not released while nobody is to send. A party that
becomes a sender again (a resumed call) is timed from then.

SDP that cannot be read is refused with 400 and the reason; a node without
ports left refuses with 503.

After a switch (two servers of a cluster), the first SDP of a branch this
server sees may be an answer whose offer the dead server handled: the
branch is relayed when the node has the call (C{query}), whatever this
server would decide without the offer; a node that cannot take such an
answer (the built-in relay: the offer's ports died with the other
server) refuses it, and the call ends (500 with a Warning, end cause
C{media failure}) rather than go on silent.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aetasip.calls.call import ANSWERED, Call, EndCause
from aetasip.calls.media import MediaRefused
from aetasip.interfaces import IMediaHandler
from aetasip.relay import sdp as sdplib
from aetasip.relay.decision import LegDecision, decideLeg, modeOf, natEvidence
from aetasip.relay.errors import UnknownSession
from aetasip.relay.ports import NoPortsLeft
from aetasip.relay.stats import RelayStats
from aetasip.routing import Directory, EmptyDirectory

log = Logger()

CALLER = "caller"
CALLEE = "callee"


@attrs.define(eq=False)
class RelayedCall:
    """
    What the handler knows of a call.

    @ivar node: the L{IRelay} chosen by the caller's domain.
    @ivar caller: the decision on the caller's leg (once it sent SDP).
    @ivar callees: the decision on each branch's callee leg.
    @ivar relayed: by branch: whether its media goes through the node.
    @ivar since: when the node started relaying (media timeout counts from
        the answer, or from this).
    @ivar dropped: the branches whose ports went back to the node.
    @ivar offers: by branch, the sender and the L{flows} of the last offer
        seen, until its answer comes.
    @ivar senders: by branch, the parties (C{caller}, C{callee}) its last
        offer/answer has sending media (both until one is negotiated).
    @ivar sendingSince: by party, when it last became a sender again (its
        silence counts from then).
    """

    node: Any
    caller: LegDecision | None = None
    callees: dict[str, LegDecision] = attrs.Factory(dict)
    relayed: dict[str, bool] = attrs.Factory(dict)
    since: float | None = None
    dropped: set[str] = attrs.Factory(set)
    offers: dict[str, tuple[str, list[tuple[bool, bool]]]] = attrs.Factory(dict)
    senders: dict[str, frozenset[str]] = attrs.Factory(dict)
    sendingSince: dict[str, float] = attrs.Factory(dict)

    @property
    def anyRelayed(self) -> bool:
        return any(self.relayed.values())


def flows(description: sdplib.SessionDescription) -> list[tuple[bool, bool]]:
    """
    What the party whose SDP this is will do on each media section:
    C{(sends, receives)} (RFC 3264 5.1, 6.1, 8.4): nothing on a disabled
    section (port 0) or one the relay does not carry; C{sendonly} does
    not receive, C{recvonly} does not send, C{inactive} neither; an
    unspecified address (C{c=0.0.0.0}, hold the RFC 2543 way) neither:
    the agents that still hold that way stop their own media too.
    """
    found = []
    for media in description.media:
        if not media.relayable:
            found.append((False, False))
            continue
        direction = description.directionOf(media)
        connection = description.connectionOf(media)
        held = connection is not None and connection.unspecified
        found.append(
            (direction in ("sendrecv", "sendonly") and not held, direction in ("sendrecv", "recvonly") and not held)
        )
    return found


def senders(
    offerer: str, offer: list[tuple[bool, bool]], answerer: str, answer: list[tuple[bool, bool]]
) -> frozenset[str]:
    """The parties an offer/answer has sending media: on some section, it sends and the other receives."""
    found = set()
    for o, a in zip(offer, answer, strict=False):
        if o[0] and a[1]:
            found.add(offerer)
        if a[0] and o[1]:
            found.add(answerer)
    return frozenset(found)


@implementer(IMediaHandler)
class RelayHandler(service.MultiService):
    """
    @param nodes: the L{IRelay} nodes by name; those that are services are
        started and stopped with the handler.
    @param defaultNode: the name of the node for domains not in C{domains}.
    @param domains: registrar domain -> node name.
    @param mode: C{relay.mode}.
    @param directory: the accounts and groups, for their relay setting.
    @param calls: the L{ICallControl}, to release a call whose media stopped.
    @param mediaTimeout: seconds (0: never).
    """

    name = "relay"

    def __init__(
        self,
        nodes: dict[str, Any],
        defaultNode: str,
        domains: dict[str, str],
        mode: str,
        directory: Directory | None,
        calls: Any,
        mediaTimeout: float = 60.0,
        clock: Any = None,
    ) -> None:
        super().__init__()
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.nodes = nodes
        self.defaultNode = defaultNode
        self.domains = {k.lower(): v for k, v in domains.items()}
        self.mode = mode
        self.directory: Directory = directory if directory is not None else EmptyDirectory()
        self.calls = calls
        self.mediaTimeout = mediaTimeout
        self.clock = clock
        self._calls: dict[Call, RelayedCall] = {}
        for node in nodes.values():
            if service.IService.providedBy(node):
                node.setServiceParent(self)
        self._watch = task.LoopingCall(self.checkMedia)
        self._watch.clock = clock

    def startService(self) -> None:
        log.info(
            "Relay: mode {mode}, nodes {nodes} (default {default}), media timeout {timeout:g} s",
            mode=self.mode,
            nodes=", ".join(sorted(self.nodes)),
            default=self.defaultNode,
            timeout=self.mediaTimeout,
        )
        super().startService()
        if self.mediaTimeout > 0:
            self._watch.start(max(0.5, min(5.0, self.mediaTimeout / 4)), now=False)

    def stopService(self) -> Deferred[None]:
        if self._watch.running:
            self._watch.stop()
        d: Deferred[None] = super().stopService()
        return d.addCallback(lambda _: log.info("Relay stopped"))

    # -- IMediaHandler

    def offer(self, call: Call, key: str, sender: str, sdp: bytes) -> Deferred[bytes]:
        return self._handle(call, key, sender, sdp, answer=False)

    def answer(self, call: Call, key: str, sender: str, sdp: bytes) -> Deferred[bytes]:
        return self._handle(call, key, sender, sdp, answer=True)

    def callEnded(self, call: Call) -> Deferred[None] | None:
        """
        Delete the call's session on its node; the Deferred fires (never
        failing) once the node's final statistics are on the call
        (C{call.media["relay"]["stats"]}): the call's end is reported to
        its observers (call records) then.
        """
        relayed = self._calls.pop(call, None)
        if relayed is None or not relayed.anyRelayed:
            return None
        d = relayed.node.delete(call.callID, call.callerTag)

        def deleted(stats: RelayStats | None) -> None:
            if stats is not None:
                call.media.setdefault("relay", {})["stats"] = stats
                log.info(
                    "Call {id} relayed by {node}: caller {caller.received.packets} packets in, "
                    "{caller.received.lost} lost; callee {callee.received.packets} in, {callee.received.lost} lost",
                    id=call.id,
                    node=stats.node,
                    caller=stats.caller,
                    callee=stats.callee,
                )

        d.addCallback(deleted)
        d.addErrback(lambda f: log.failure("Deleting the relay session of {call} failed", f, call=call))
        return d  # type: ignore[no-any-return]

    # -- decisions

    def nodeNameFor(self, call: Call) -> str:
        """The node of the caller's registrar domain, else the default node."""
        return self.domains.get(call.domain.lower().strip("[]"), self.defaultNode)

    def _relayedCall(self, call: Call) -> RelayedCall:
        relayed = self._calls.get(call)
        if relayed is None:
            name = self.nodeNameFor(call)
            relayed = self._calls[call] = RelayedCall(self.nodes[name])
            call.media["relay"] = {"node": name, "legs": {}, "relayed": {}}
        return relayed

    def _decide(self, number: str | None, leg: Any, description: sdplib.SessionDescription | None) -> LegDecision:
        mode, modeFrom = modeOf(number, self.directory, self.mode)
        hosts = []
        if description is not None:
            hosts = [address[0] for address in description.rtpAddresses() if address is not None]
        evidence = natEvidence(leg.source, leg.transport, hosts, leg.contact)
        return decideLeg(mode, modeFrom, evidence)

    def _remember(self, call: Call, relayed: RelayedCall) -> None:
        record = call.media["relay"]
        if relayed.caller is not None:
            record["legs"]["caller"] = relayed.caller.describe()
        for branch, decision in relayed.callees.items():
            record["legs"][branch] = decision.describe()
        record["relayed"] = dict(relayed.relayed)

    # -- offers and answers

    def _handle(self, call: Call, key: str, sender: str, sdp: bytes, answer: bool) -> Deferred[bytes]:
        try:
            description = sdplib.parse(sdp)
        except sdplib.SDPError as e:
            log.warn("Refused the SDP of {call} ({sender}): {error}", call=call, sender=sender, error=e)
            return fail(MediaRefused(400, f"Bad SDP: {e}"))
        relayed = self._relayedCall(call)
        if answer and key not in relayed.relayed and key not in relayed.offers:
            # An answer whose offer another server handled (it died, this one
            # took the call over): relayed if the node has the call, whatever
            # this server would decide without the offer.
            d = relayed.node.query(call.callID, call.callerTag)
            d.addErrback(lambda f: log.failure("Querying the relay of {call} failed", f, call=call))

            def found(stats: RelayStats | None) -> Deferred[bytes]:
                if stats is not None and key not in relayed.relayed:
                    relayed.relayed[key] = True
                    log.info(
                        "Call {id} branch {key}: media relayed by {node}, which has the call offered elsewhere",
                        id=call.id,
                        key=key,
                        node=call.media["relay"]["node"],
                    )
                return self._handleSDP(call, relayed, key, sender, sdp, description, answer)

            return d.addCallback(found)  # type: ignore[no-any-return]
        return self._handleSDP(call, relayed, key, sender, sdp, description, answer)

    def _handleSDP(
        self,
        call: Call,
        relayed: RelayedCall,
        key: str,
        sender: str,
        sdp: bytes,
        description: sdplib.SessionDescription,
        answer: bool,
    ) -> Deferred[bytes]:
        self._negotiated(call, relayed, key, sender, description, answer)
        target = call.target(key)
        calleeLeg = target.leg if target is not None else None
        # The sender's leg, decided again with each SDP it sends (its addresses may move).
        if sender == CALLER:
            relayed.caller = self._decide(call.caller, call.callerLeg, description)
            senderDecision = relayed.caller
            if key not in relayed.callees and calleeLeg is not None:
                relayed.callees[key] = self._decide(target.number if target is not None else None, calleeLeg, None)
        else:
            if calleeLeg is None:
                # A branch the call does not know (cannot happen): leave it direct.
                return succeed(sdp)
            relayed.callees[key] = self._decide(target.number if target is not None else None, calleeLeg, description)
            senderDecision = relayed.callees[key]
            if relayed.caller is None:
                relayed.caller = self._decide(call.caller, call.callerLeg, None)
        if key not in relayed.relayed:
            # Decided once per branch, at its first SDP: a relay cannot be inserted half way.
            legs = [d for d in (relayed.caller, relayed.callees.get(key)) if d is not None]
            relayed.relayed[key] = any(d.relay for d in legs)
            log.info(
                "Call {id} branch {key}: media {how} (caller: {caller}; callee: {callee})",
                id=call.id,
                key=key,
                how="relayed by " + call.media["relay"]["node"] if relayed.relayed[key] else "direct",
                caller=relayed.caller.reason if relayed.caller is not None else "-",
                callee=relayed.callees[key].reason if key in relayed.callees else "-",
            )
        self._remember(call, relayed)
        if not relayed.relayed[key]:
            if senderDecision.nat and senderDecision.mode != "never":
                log.warn(
                    "Call {id}: the {sender} looks behind NAT after its branch went direct ({reason}): "
                    "its media may not arrive",
                    id=call.id,
                    sender=sender,
                    reason=senderDecision.reason,
                )
            return succeed(sdp)
        if relayed.since is None:
            relayed.since = self.clock.seconds()
        if (sender == CALLER and not answer) or call.answeredBy is not None:
            self._dropFailedBranches(call, relayed, key)
        leg = call.callerLeg if sender == CALLER else calleeLeg
        assert leg is not None
        node = relayed.node
        if answer:
            # The callee's tag on this branch: known before the call is answered (a 18x, the 2xx itself).
            calleeTag = target.tag if target is not None and target.tag is not None else call.calleeTag
            d = node.answer(call.callID, call.callerTag, calleeTag, key, sender, sdp, leg.source, senderDecision.nat)
        else:
            d = node.offer(call.callID, call.callerTag, key, sender, sdp, leg.source, senderDecision.nat)
        return d.addErrback(self._failed, call)  # type: ignore[no-any-return]

    def _negotiated(
        self,
        call: Call,
        relayed: RelayedCall,
        key: str,
        sender: str,
        description: sdplib.SessionDescription,
        answer: bool,
    ) -> None:
        """Follow the directions of the branch's offers and answers (hold and resume)."""
        if not answer:
            relayed.offers[key] = (sender, flows(description))
            return
        offered = relayed.offers.get(key)
        if offered is None or offered[0] == sender:
            return  # an answer without its offer (cannot happen), or a repeat of one
        now = senders(offered[0], offered[1], sender, flows(description))
        before = relayed.senders.get(key, frozenset((CALLER, CALLEE)))
        relayed.senders[key] = now
        if now == before:
            return
        for party in now - before:
            relayed.sendingSince[party] = self.clock.seconds()
        log.info(
            "Call {id} branch {key}: media now sent by {now} (was {before}): the media timeout watches {watched}",
            id=call.id,
            key=key,
            now=_parties(now),
            before=_parties(before),
            watched=_parties(now) if now else "nobody (on hold)",
        )

    def _dropFailedBranches(self, call: Call, relayed: RelayedCall, current: str) -> None:
        """
        The ports of branches that ended without the call (the hunting
        members tried before this one, the forks another branch's answer
        cancelled) go back to the node, when it can release one branch
        (both kinds of node can): a call that lasts days does not hold
        them.
        """
        deleteBranch = getattr(relayed.node, "deleteBranch", None)
        if deleteBranch is None:
            return
        answered = call.answeredBy.key if call.answeredBy is not None else None
        for target in call.targets:
            key = target.key
            lost = target.status >= 300 or (answered is not None and key != answered)
            if key != current and lost and relayed.relayed.get(key) and key not in relayed.dropped:
                relayed.dropped.add(key)
                deleteBranch(call.callID, call.callerTag, key)

    def _failed(self, failure: Failure, call: Call) -> Failure:
        if failure.check(MediaRefused):
            return failure
        if failure.check(NoPortsLeft):
            return Failure(MediaRefused(503, "No relay ports left"))
        if failure.check(sdplib.SDPError):
            return Failure(MediaRefused(400, f"Bad SDP: {failure.getErrorMessage()}"))
        if failure.check(UnknownSession):
            # An answer to an offer another server's relay took: no media without it.
            log.warn("Relay refused the answer of {call}: {error}", call=call, error=failure.getErrorMessage())
            return Failure(MediaRefused(500, failure.getErrorMessage()))
        log.failure("The relay node failed on {call}", failure, call=call)
        return Failure(MediaRefused(503, "Media relay unavailable"))

    # -- media timeout

    def checkMedia(self) -> None:
        """Release the answered relayed calls without media for C{mediaTimeout} seconds."""
        now = self.clock.seconds()
        for call, relayed in list(self._calls.items()):
            if call.state != ANSWERED or not relayed.anyRelayed:
                continue
            answered = call.answeredBy.key if call.answeredBy is not None else ""
            self._dropFailedBranches(call, relayed, answered)
            if not relayed.relayed.get(answered):
                continue  # a relayed fork lost; the answer's media is direct: nothing to watch
            d = relayed.node.query(call.callID, call.callerTag)
            d.addCallback(self._checked, call, relayed, now)
            d.addErrback(lambda f, call=call: log.failure("Querying the relay of {call} failed", f, call=call))

    def _checked(self, stats: RelayStats | None, call: Call, relayed: RelayedCall, now: float) -> None:
        if call.ended:
            return
        if stats is None:
            # The node no longer has the call (rtpengine deleted it after its
            # own timeout, or restarted): its media is gone for good.
            detail = f"relay node {call.media['relay']['node']} lost the call's media session"
            log.warn("Call {id}: {detail}: released", id=call.id, detail=detail)
            self.calls.release(call, EndCause.MEDIA_FAILURE, detail)
            return
        call.media["relay"]["stats"] = stats
        keepAlive = getattr(relayed.node, "keepAlive", None)
        if keepAlive is not None:
            lasts = [t for t in (stats.caller.received.lastPacketAt, stats.callee.received.lastPacketAt) if t]
            keepAlive(call.callID, call.callerTag, max(lasts) if lasts else None)
        expected = relayed.senders.get(call.answeredBy.key if call.answeredBy is not None else "")
        if expected is None:
            expected = frozenset((CALLER, CALLEE))
        silent = {}
        for party in sorted(expected):
            leg = stats.caller if party == CALLER else stats.callee
            times = [
                t
                for t in (leg.received.lastPacketAt, call.answeredAt, relayed.sendingSince.get(party), relayed.since)
                if t is not None
            ]
            if times and now - max(times) > self.mediaTimeout:
                silent[party] = now - max(times)
        if not silent:
            return
        longest = max(silent.values())
        if len(silent) == 2:
            detail = f"no media for {longest:.0f} s"
        else:
            detail = f"no media from the {next(iter(silent))} for {longest:.0f} s"
        log.info("Call {id}: {detail}: released", id=call.id, detail=detail)
        self.calls.release(call, EndCause.MEDIA_TIMEOUT, detail)


def _parties(parties: frozenset[str]) -> str:
    return " and ".join(sorted(parties)) or "nobody"


def makeRelayHandler(config: Any, calls: Any, directory: Directory | None, reactor: Any = None) -> RelayHandler:
    """The L{RelayHandler} of the C{relay} configuration section, with its nodes."""
    from aetasip.relay.settings import makeNode

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    nodes = {name: makeNode(name, config, reactor) for name in config["relay.nodes"]}
    return RelayHandler(
        nodes,
        config["relay.default_node"],
        config["relay.domains"],
        config["relay.mode"],
        directory,
        calls,
        config["relay.media_timeout"],
        reactor,
    )
