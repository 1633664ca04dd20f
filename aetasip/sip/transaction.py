"""
Server transactions (RFC 3261 section 17.2, with the RFC 6026 Accepted
state): retransmitted requests are answered from the transaction and never
reach the transaction user twice.

Sans-IO: time comes from an injected L{IReactorTime} (a
L{twisted.internet.task.Clock} in tests) and bytes leave through the
C{send} callable of the L{Peer} a request came from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from aetasip.sip.headers import Via
from aetasip.sip.message import Request, Response
from aetasip.sip.responses import withinBudget
from aetasip.sip.timers import FixedTimers

T1 = 0.5
T2 = 4.0
T4 = 5.0
MAGIC_COOKIE = "z9hG4bK"

COUNTED_METHODS = frozenset(
    ("REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK", "MESSAGE", "NOTIFY",
     "SUBSCRIBE", "REFER", "PUBLISH")
)  # fmt: skip
"""Methods whose final responses are counted by name; any other (a client's invention) as C{other}."""


class Peer:
    """
    The other end of a message: where it came from and how to answer.

    @ivar transport: C{"udp"}, C{"tcp"} or C{"tls"}.
    @ivar source: C{(host, port)} the message came from.
    @ivar local: C{(host, port)} of our socket that received it.
    @ivar send: callable writing bytes to that peer (on UDP, from the same
        socket to C{source}; on streams, on the same connection).
    @ivar connection: the stream connection, or C{None} on UDP.
    """

    __slots__ = ("connection", "local", "send", "source", "transport")

    def __init__(
        self,
        transport: str,
        source: tuple[str, int],
        local: tuple[str, int],
        send: Callable[[bytes], None],
        connection: object | None = None,
    ) -> None:
        self.transport = transport
        self.source = source
        self.local = local
        self.send = send
        self.connection = connection

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __repr__(self) -> str:
        return f"<Peer {self.transport} {self.source[0]}:{self.source[1]}>"


def branchKey(via: Via, method: str) -> tuple[Any, ...] | None:
    """
    The key of the transaction of C{method} whose top Via is C{via}, when
    its branch is an RFC 3261 one (17.2.3); else C{None}.
    """
    branch = via.branch
    # A bare magic cookie is no unique branch (RFC 4475 badbranch).
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    return None


def transactionKey(request: Request) -> tuple[Any, ...]:
    """
    The key matching a request to its server transaction (17.2.3). An ACK
    has the key of the INVITE it acknowledges.
    """
    via = request.topVia
    method = "INVITE" if request.method == "ACK" else request.method
    key = branchKey(via, method)
    if key is not None:
        return key
    # RFC 2543 peers: no unique branch; match on the dialog identifiers.
    number, _ = request.cseq
    return (request.callID, number, request.fromAddr.tag, request.toAddr.tag, str(via), method)


class ServerTransaction:
    """
    One server transaction. The transaction user answers with L{respond}.

    @ivar request: the request that created it; C{None} once the final
        response is sent (INVITE) or the transaction completed over UDP.
    @ivar peer: where responses go.
    @ivar state: C{trying}, C{proceeding}, C{completed}, C{confirmed},
        C{accepted} or C{terminated}.
    """

    __slots__ = (
        "_lastResponse",
        "_layer",
        "_provisional",
        "_retransmitInterval",
        "_timerG",
        "key",
        "method",
        "peer",
        "request",
        "state",
    )

    def __init__(self, layer: ServerTransactionLayer, key: tuple[Any, ...], request: Request, peer: Peer) -> None:
        self._layer = layer
        self.key = key
        # Released once the final response is sent (on UDP for non-INVITE):
        # the 32 s of absorbing retransmissions need only the response, and
        # tens of thousands of retained requests would make the garbage
        # collector's full passes stall the reactor.
        self.request: Request | None = request
        self.method = request.method
        self.peer = peer
        self.state = "proceeding" if request.method == "INVITE" else "trying"
        self._lastResponse: bytes | None = None
        self._provisional = False
        # Timer G (retransmissions, UDP); the fixed-length timers (H, I, J,
        # Accepted) are in the layer's FixedTimers.
        self._timerG: IDelayedCall | None = None
        self._retransmitInterval = T1

    @property
    def isInvite(self) -> bool:
        return self.method == "INVITE"

    def respond(self, response: Response | bytes) -> None:
        """
        Send C{response} (a provisional or final response to our request)
        and move the state machine on. Responses after the final one are
        ignored: the transaction user may race with a timeout.
        """
        if self.state not in ("trying", "proceeding"):
            return
        if isinstance(response, bytes):
            data: bytes | None = response
            code = int(response[8:11])
        else:
            code = response.code
            data = response.toBytes() if response.budget is None else withinBudget(response)
            if data is None:
                # Larger than a spoofed request may cause: nothing is sent
                # (retransmissions are absorbed in silence).
                self._layer.withheld += 1
        self._lastResponse = data
        if data is not None:
            self.peer.send(data)
        if code < 200:
            self.state = "proceeding"
            self._provisional = True
            return
        method = self.method
        self._layer.finalResponses[method if method in COUNTED_METHODS else "other", code] += 1
        if self._layer._stopped:
            # Answered after the layer stopped (a slow backend during
            # shutdown): sent, but no timer may outlive the layer.
            self._terminate()
            return
        if self.isInvite:
            self._inviteFinal(code)
        else:
            self._completedNonInvite()

    def abandon(self) -> None:
        """
        End a non-INVITE transaction without a final response: what a
        proxy does when the next hop never answered (RFC 4320 4.1: no 408
        to a non-INVITE, whose client has given up too). Retransmissions
        are absorbed in silence for 64*T1, as after a final response.
        """
        if self.isInvite or self.state not in ("trying", "proceeding"):
            return
        if self._layer._stopped:
            self._terminate()
            return
        self._completedNonInvite()

    def _completedNonInvite(self) -> None:
        self.state = "completed"
        if self.peer.reliable:
            # Timer J is zero on reliable transports.
            self._terminate()
            return
        # Retransmissions get the last response from now on: see the note
        # where the request is kept.
        self.request = None
        self._layer.timers.after(64 * T1, self, "_expire")

    def _inviteFinal(self, code: int) -> None:
        # Accepted and Completed need only the response and the key: see
        # the note where the request is kept.
        self.request = None
        timers = self._layer.timers
        if 200 <= code < 300:
            # RFC 6026: absorb retransmitted INVITEs for 64*T1; the 2xx itself
            # is retransmitted end to end by the UAS core, not by us.
            self.state = "accepted"
            timers.after(64 * T1, self, "_expire")
            return
        self.state = "completed"
        if self._provisional and not self.peer.reliable:
            # Only once a provisional response stopped the client's own
            # retransmissions (Timer A): until then each retransmitted
            # INVITE gets the response again, and a challenge or refusal
            # to a spoofed INVITE is sent once, not ten times.
            self._timerG = self._layer.clock.callLater(T1, self._retransmitFinal)
        timers.after(64 * T1, self, "_timerH")

    def _retransmitFinal(self) -> None:
        # Timer G.
        self._timerG = None
        if self.state != "completed" or self._lastResponse is None:
            return
        self.peer.send(self._lastResponse)
        self._retransmitInterval = min(2 * self._retransmitInterval, T2)
        self._timerG = self._layer.clock.callLater(self._retransmitInterval, self._retransmitFinal)

    def _timerH(self, deadline: float) -> None:
        # No ACK came: give up (the transaction user may log it).
        if self.state == "completed":
            self._terminate()

    def _expire(self, deadline: float) -> None:
        # Timers I and J, and the end of Accepted: the lingering is over.
        if self.state in ("accepted", "confirmed") or (self.state == "completed" and not self.isInvite):
            self._terminate()

    def _retransmission(self, request: Request) -> None:
        if self.state in ("proceeding", "completed") and self._lastResponse is not None:
            self.peer.send(self._lastResponse)

    def _acknowledged(self) -> None:
        """The ACK of our final non-2xx response came (RFC 3261 17.2.1)."""
        if self.state == "completed":
            self.state = "confirmed"
            self._cancelTimers()
            if self.peer.reliable:
                self._terminate()
            else:
                # Timer I.
                self._layer.timers.after(T4, self, "_expire")

    def _cancelTimers(self) -> None:
        if self._timerG is not None and self._timerG.active():
            self._timerG.cancel()
        self._timerG = None

    def _terminate(self) -> None:
        self._cancelTimers()
        self.state = "terminated"
        self._layer._forget(self)


class ServerTransactionLayer:
    """
    All server transactions of one SIP element.

    @param clock: the time source.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.transactions: dict[tuple[Any, ...], ServerTransaction] = {}
        self.timers = FixedTimers(clock)
        self._stopped = False
        self.retransmissionsAbsorbed = 0
        # Responses not sent: over their amplification budget.
        self.withheld = 0
        # Final responses sent, by method (L{COUNTED_METHODS}, else "other") and code: the metrics' replies.
        self.finalResponses: defaultdict[tuple[str, int], int] = defaultdict(int)

    def receive(self, request: Request, peer: Peer) -> ServerTransaction | None:
        """
        Match C{request} to its transaction.

        @return: a new L{ServerTransaction} for the transaction user to
            answer, or C{None} when the request was a retransmission or an
            ACK (taken by L{receiveAck}, which says whether the transaction
            user routes it).
        """
        if request.method == "ACK":
            self.receiveAck(request)
            return None
        existing = self._match(request)
        if existing is not None:
            self.retransmissionsAbsorbed += 1
            existing._retransmission(request)
            return None
        key = transactionKey(request)
        transaction = ServerTransaction(self, key, request, peer)
        self.transactions[key] = transaction
        return transaction

    def absorbAck(self, via: Via) -> bool:
        """
        Take an ACK whose top Via is C{via} (parsed from the raw message
        alone) if it acknowledges a final non-2xx response of ours: an
        INVITE server transaction of that branch and sent-by in the
        Completed state. Such an ACK ends there (RFC 3261 17.2.1), so
        nothing else of it is read; a request taken so is not parsed
        at all. Anything else (an ACK for a 2xx, which goes end to end,
        or an RFC 2543 branch) is left to L{receiveAck}.
        """
        key = branchKey(via, "INVITE")
        existing = None if key is None else self.transactions.get(key)
        if existing is None or existing.state != "completed":
            return False
        existing._acknowledged()
        return True

    def receiveAck(self, request: Request) -> bool:
        """
        Take the ACK C{request}: one that acknowledges a final non-2xx
        response of ours confirms its INVITE server transaction and ends
        there (RFC 3261 17.2.1).

        @return: whether the ACK is for the transaction user: one that
            matches no transaction (the ACK of a 2xx, a transaction of its
            own) or an Accepted one (RFC 6026 8.7); it is routed by the
            proxy, statelessly.
        """
        existing = self._match(request)
        if existing is None or existing.state == "accepted":
            return True
        existing._acknowledged()
        return False

    def _match(self, request: Request) -> ServerTransaction | None:
        key = transactionKey(request)
        existing = self.transactions.get(key)
        if existing is None and request.method == "ACK" and len(key) == 6 and key[3] is not None:
            # RFC 2543 ACK (17.2.3): it carries the To tag of our response,
            # which the INVITE it acknowledges had not (key[3] is the To tag).
            existing = self.transactions.get((*key[:3], None, *key[4:]))
        return existing

    def _forget(self, transaction: ServerTransaction) -> None:
        if self.transactions.get(transaction.key) is transaction:
            del self.transactions[transaction.key]

    def stop(self) -> None:
        """Cancel every timer (service shutdown). Later answers arm none."""
        self._stopped = True
        self.timers.stop()
        for transaction in list(self.transactions.values()):
            transaction._cancelTimers()
        self.transactions.clear()
