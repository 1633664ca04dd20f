"""
Client transactions (RFC 3261 section 17.1): what the proxy uses to send a
request to the next hop and hear its answers.

Sans-IO like the server side: time from an injected L{IReactorTime}, bytes
out through a C{send} callable. The transaction user gets each response
that matters (provisionals, the final response once, 2xx retransmissions
for INVITE as RFC 6026 says) through C{onResponse}, and C{onTimeout} when
Timer B or F fires without a final response.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from aetasip.sip.message import Request, Response
from aetasip.sip.timers import FixedTimers
from aetasip.sip.transaction import MAGIC_COOKIE, T1, T2, T4

ResponseHandler = Callable[[Response], None]


# Random bytes for branches, drawn from the kernel a page at a time rather
# than with a system call per request.
_random = b""
_randomUsed = 0


def newBranch() -> str:
    """
    A branch parameter unique in space and time (RFC 3261 8.1.1.7), and
    unpredictable: 64 random bits, so nobody can forge responses to the
    proxy's transactions from the branches they see.
    """
    global _random, _randomUsed
    if _randomUsed >= len(_random):
        _random, _randomUsed = os.urandom(4096), 0
    start = _randomUsed
    _randomUsed = start + 8
    return MAGIC_COOKIE + _random[start : start + 8].hex()


def ackFor(request: Request, response: Response) -> Request:
    """
    The ACK a client transaction sends for a 3xx-6xx response to the
    INVITE C{request} (RFC 3261 17.1.1.3): same Request-URI, Call-ID, From,
    CSeq number and top Via; the To of the response (with its tag); the
    Route headers of the request.
    """
    number, _ = request.cseq
    headers: list[list[str]] = []
    via = request.get("via")
    if via is not None:
        headers.append(["via", request.getAll("via")[0]])
    headers.append(["max-forwards", "70"])
    for name in ("from", "call-id"):
        value = request.get(name)
        if value is not None:
            headers.append([name, value])
    to = response.get("to")
    headers.append(["to", to if to is not None else request.get("to") or ""])
    headers.append(["cseq", f"{number} ACK"])
    for route in request.getAll("route"):
        headers.append(["route", route])
    return Request("ACK", request.uri, headers)


def cancelFor(request: Request) -> Request:
    """
    The CANCEL of C{request} (RFC 3261 9.1): same Request-URI, Call-ID,
    From, To, CSeq number and top Via (so it matches the same server
    transaction downstream), and the same Route headers.
    """
    number, _ = request.cseq
    headers: list[list[str]] = [["via", request.getAll("via")[0]], ["max-forwards", "70"]]
    for name in ("from", "to", "call-id"):
        value = request.get(name)
        if value is not None:
            headers.append([name, value])
    headers.append(["cseq", f"{number} CANCEL"])
    for route in request.getAll("route"):
        headers.append(["route", route])
    return Request("CANCEL", request.uri, headers)


def _ignore(*args: object) -> None:
    """What a finished transaction calls instead of its user."""


class ClientTransaction:
    """
    One client transaction.

    @ivar request: the request sent (its top Via carries our branch), until
        the final response; then C{None}.
    @ivar state: C{calling} (INVITE) or C{trying}, then C{proceeding},
        C{completed}, C{terminated}.
    @ivar lastProvisional: the code of the last 1xx received, or 0.
    """

    def __init__(
        self,
        layer: ClientTransactionLayer,
        request: Request,
        send: Callable[[bytes], None],
        reliable: bool,
        onResponse: ResponseHandler,
        onTimeout: Callable[[], None],
        branch: str | None = None,
    ) -> None:
        self._layer = layer
        # Released at the final response (see _final).
        self.request: Request | None = request
        if branch is None:
            branch = request.topVia.branch or ""
        self.key = (branch, "INVITE" if request.method in ("INVITE", "ACK") else request.method)
        self._send = send
        self.reliable = reliable
        self.onResponse = onResponse
        self.onTimeout = onTimeout
        self.isInvite = request.method == "INVITE"
        self.state = "calling" if self.isInvite else "trying"
        self.lastProvisional = 0
        self._data = request.toBytes()
        self._ack: bytes | None = None
        self._interval = T1
        self._retransmit: IDelayedCall | None = None
        # The deadline of Timer B (INVITE) or F (non-INVITE) while it runs;
        # it and the lingering after the final response are in the layer's
        # FixedTimers.
        self._timeoutAt: float | None = None

    def start(self) -> None:
        self._send(self._data)
        if not self.reliable:
            self._retransmit = self._layer.clock.callLater(T1, self._timerAE)
        self._timeoutAt = self._layer.timers.after(64 * T1, self, "_timedOut")

    def _timerAE(self) -> None:
        self._retransmit = None
        if self.state in ("completed", "terminated"):
            return
        if self.isInvite and self.state != "calling":
            return
        self._send(self._data)
        if self.isInvite:
            self._interval *= 2
        else:
            # Timer E: doubling up to T2, and T2 once a provisional came.
            self._interval = T2 if self.state == "proceeding" else min(2 * self._interval, T2)
        self._retransmit = self._layer.clock.callLater(self._interval, self._timerAE)

    def cancelled(self) -> None:
        """
        The transaction user sent a CANCEL for this INVITE: if no final
        response comes within 64*T1, the transaction ends as timed out
        (RFC 3261 9.1), even though a provisional stopped Timer B.
        """
        if self.isInvite and self.state in ("calling", "proceeding"):
            self._timeoutAt = self._layer.timers.after(64 * T1, self, "_timedOut")

    def _timedOut(self, deadline: float) -> None:
        if deadline != self._timeoutAt:
            return  # stopped (a 1xx, the final response) or started again
        self._timeoutAt = None
        if self.state in ("calling", "trying", "proceeding"):
            onTimeout = self.onTimeout
            self._terminate()
            onTimeout()

    def receive(self, response: Response) -> None:
        code = response.code
        if code < 200:
            if self.state in ("calling", "trying", "proceeding"):
                self.state = "proceeding"
                self.lastProvisional = code
                if self.isInvite:
                    # Timer A stops; so does Timer B: once the callee rings, how
                    # long to wait is the proxy's business (Timer C, 16.6).
                    self._cancel("_retransmit")
                    self._timeoutAt = None
                self.onResponse(response)
            return
        if self.state in ("calling", "trying", "proceeding"):
            self._final(response)
        elif self.state == "completed" and self.isInvite and code >= 300 and self._ack is not None:
            # A retransmitted final response: our ACK was lost (Timer D).
            self._send(self._ack)
        elif self.isInvite and 200 <= code < 300 and self.state == "accepted":
            # RFC 6026: 2xx retransmissions go to the transaction user.
            self.onResponse(response)

    def _final(self, response: Response) -> None:
        # Kept first: over TCP the transaction ends right here.
        onResponse = self.onResponse
        self._cancel("_retransmit")
        self._timeoutAt = None
        # What the transaction user gave for a timeout holds its request and
        # more: 32 s of lingering need none of it.
        self.onTimeout = _ignore
        timers = self._layer.timers
        if self.isInvite and 200 <= response.code < 300:
            # RFC 6026 Accepted: the ACK is end to end; absorb 2xx copies.
            self.state = "accepted"
            timers.after(64 * T1, self, "_lingered")
        elif self.isInvite:
            self.state = "completed"
            assert self.request is not None  # released just below
            self._ack = ackFor(self.request, response).toBytes()
            self._send(self._ack)
            # Timer D.
            if self.reliable:
                self._terminate()
            else:
                timers.after(32.0, self, "_lingered")
        else:
            self.state = "completed"
            # Timer K.
            if self.reliable:
                self._terminate()
            else:
                timers.after(T4, self, "_lingered")
        # What lingers (absorbing copies, re-sending the ACK) needs only bytes:
        # 32 s of retained requests would make full GC passes stall the reactor.
        self.request = None
        if self.state != "accepted":
            # Only an Accepted INVITE hands responses up any more (2xx copies).
            self.onResponse = _ignore
        onResponse(response)

    def absorb(self) -> None:
        """
        The transaction user needs no more responses (the call of an
        Accepted INVITE ended): copies of the 2xx are absorbed from now on,
        and what the user's callback held is freed at once rather than
        after the 32 s of lingering.
        """
        self.onResponse = _ignore

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None and call.active():
            call.cancel()
        setattr(self, name, None)

    def _lingered(self, deadline: float) -> None:
        if self.state in ("accepted", "completed"):
            self._terminate()

    def _terminate(self) -> None:
        self._cancel("_retransmit")
        self._timeoutAt = None
        # Break the cycles through the transaction user's callbacks (they
        # hold what holds this transaction): reference counting frees it all.
        self.onResponse = _ignore
        self.onTimeout = _ignore
        self.state = "terminated"
        self._layer._forget(self)


class ClientTransactionLayer:
    """
    Every client transaction of the element, matched to responses by
    branch and CSeq method (RFC 3261 17.1.3).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.transactions: dict[tuple[str, str], ClientTransaction] = {}
        self.timers = FixedTimers(clock)

    def send(
        self,
        request: Request,
        send: Callable[[bytes], None],
        reliable: bool,
        onResponse: ResponseHandler,
        onTimeout: Callable[[], None],
        branch: str | None = None,
    ) -> ClientTransaction:
        """
        Start a client transaction for C{request}, whose top Via must carry
        a unique branch (see L{newBranch}).

        @param branch: that branch, when the caller knows it (saves parsing
            the Via it just wrote).
        """
        transaction = ClientTransaction(self, request, send, reliable, onResponse, onTimeout, branch)
        self.transactions[transaction.key] = transaction
        transaction.start()
        return transaction

    def receive(self, response: Response) -> bool:
        """
        Hand C{response} to its transaction.

        @return: whether a transaction took it; a response matching none
            is for the proxy core to handle (a stray 2xx to forward).
        """
        try:
            branch = response.topVia.branch or ""
            _, method = response.cseq
        except Exception:
            return False
        transaction = self.transactions.get((branch, "INVITE" if method == "ACK" else method))
        if transaction is None:
            return False
        transaction.receive(response)
        return True

    def _forget(self, transaction: ClientTransaction) -> None:
        if self.transactions.get(transaction.key) is transaction:
            del self.transactions[transaction.key]

    def stop(self) -> None:
        """Cancel every timer (service shutdown)."""
        self.timers.stop()
        for transaction in list(self.transactions.values()):
            transaction._terminate()
