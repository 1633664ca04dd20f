"""
Forking (RFC 3261 16.7): the response context of one forwarded request,
with its branches; best response, CANCEL, Timer C.

A context serves a call's initial INVITE (one branch per binding of the
callee), a request outside any call (MESSAGE, SUBSCRIBE, …), and an
in-dialog request (one branch: the other leg). What the proxy does with
the outcome (call events, dialogs, media) goes through its C{_answered},
C{_provisional} and C{_failed} methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall

from aetasip.calls.call import Call, Leg, Target
from aetasip.calls.surgery import better, loopTag
from aetasip.sip.client import ClientTransaction
from aetasip.sip.message import Request, Response
from aetasip.sip.transaction import Peer, ServerTransaction

if TYPE_CHECKING:
    from aetasip.calls.dialog import Dialog
    from aetasip.calls.proxy import Proxy

# Requests that create dialogs (and are Record-Routed).
DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})

# RFC 3261 16.6 step 11: Timer C, more than 3 minutes.
TIMER_C = 181.0


class Branch:
    """One forwarded copy of a request, to one leg."""

    __slots__ = ("ackAgain", "cancel", "client", "code", "leg", "request", "target")

    def __init__(self, leg: Leg, request: Request, target: Target | None = None) -> None:
        self.leg = leg
        self.target = target
        # Handed to its client transaction when sent, and forgotten here.
        self.request: Request | None = request
        self.client: ClientTransaction | None = None
        self.code = 0
        # "" while wanted; "pending" when the proxy gave up on it before
        # any 1xx (its CANCEL waits for one, RFC 3261 9.1); "sent".
        self.cancel = ""
        # A 2xx the proxy ACKed and ended itself (its media failed): sends
        # the ACK again for each retransmission of that 2xx.
        self.ackAgain: Callable[[], None] | None = None


class ResponseContext:
    """
    The proxy's state for one forwarded request (RFC 3261 16.7).

    @ivar server: the server transaction of the request.
    @ivar peer: the agent that sent it.
    @ivar call: the L{Call} of an initial INVITE, else C{None}.
    @ivar dialog: the L{Dialog} of an in-dialog request, else C{None}.
    @ivar hadOffer: the request carried SDP (an offer).
    @ivar cancelledBy: C{"caller"} or C{"timer"} once the proxy cancelled
        the branches, for the call's end cause.
    """

    __slots__ = (
        "answered",
        "best",
        "bestIsTimeout",
        "branches",
        "call",
        "callID",
        "cancelledBy",
        "contact",
        "cseq",
        "dialog",
        "extra",
        "fromTag",
        "fromURI",
        "hadOffer",
        "isInvite",
        "loopTag",
        "mediaFailure",
        "method",
        "peer",
        "proxy",
        "request",
        "server",
        "timerC",
        "toURI",
    )

    def __init__(
        self,
        proxy: Proxy,
        request: Request,
        peer: Peer,
        server: ServerTransaction,
        call: Call | None = None,
        dialog: Dialog | None = None,
    ) -> None:
        self.proxy = proxy
        self.method = request.method
        self.isInvite = request.method == "INVITE"
        # Ends the branch of each copy sent: a copy coming back is a loop
        # (only requests outside a dialog are checked for loops).
        self.loopTag = loopTag(request) if dialog is None else ""
        # What the proxy's own answers are made from, until the request is
        # answered (the server transaction keeps it that long anyway).
        self.request: Request | None = request
        self.peer = peer
        self.server = server
        self.call = call
        self.dialog = dialog
        self.hadOffer = False
        self.cancelledBy: str | None = None
        self.branches: list[Branch] = []
        # The best final response so far, ready to go up (without our Via),
        # and whether it is our own timeout.
        self.best: Response | None = None
        self.bestIsTimeout = False
        self.answered = False
        # The proxy's own refusal of a branch whose media failed, and why:
        # the call's end cause when it is the best response.
        self.mediaFailure: tuple[Response, str] | None = None
        self.timerC: IDelayedCall | None = None
        # What the dialogs of the answer need from the request, which is
        # long gone when the answer comes.
        self.callID = request.callID
        self.fromTag = request.fromAddr.tag or ""
        self.cseq = request.cseq[0]
        # Parsed already (and shared): kept as they are, written out only
        # when the proxy sends a request in the dialog's name.
        self.fromURI = request.fromAddr.uri
        self.toURI = request.toAddr.uri
        self.contact = request.get("contact") if dialog is None and self.method in DIALOG_METHODS else None
        # In dialog: the side the request goes to, and the dialog's branch key.
        self.extra: dict[str, Any] = {}

    def answer(self, code: int, reason: str = "") -> Response:
        """A final response of the proxy's own to the request (before it is answered)."""
        assert self.request is not None, "the request is answered already"
        return self.proxy._reply(self.request, code, reason)

    def start(self, branches: list[Branch]) -> None:
        self.branches = branches
        if self.isInvite:
            self.timerC = self.proxy.clock.callLater(TIMER_C, self._timerC)
        for branch in branches:
            self.proxy._send(self, branch)

    def stop(self) -> None:
        """Drop the context's timers (the service stops)."""
        if self.timerC is not None and self.timerC.active():
            self.timerC.cancel()
        self.timerC = None

    def _timerC(self) -> None:
        self.timerC = None
        self.cancel("timer")

    def response(self, branch: Branch, response: Response) -> None:
        code = response.code
        if code < 200:
            branch.code = max(branch.code, code)
            if code > 100 and not self.answered:
                if self.isInvite and self.timerC is not None:
                    self.timerC.reset(TIMER_C)
                self.proxy._provisional(self, branch, response)
                self.server.respond(self.proxy._upstream(response))
            return
        firstFinal = branch.code < 200
        branch.code = code
        if branch.target is not None:
            branch.target.status = code
        if 200 <= code < 300:
            # Every 2xx goes up (also later ones from other branches and the
            # retransmissions of this one): the caller's UA sorts them out.
            upstream = self.proxy._upstream(response)
            if firstFinal:
                self.proxy._answered(self, branch, response)
            if not self.answered:
                self.answered = True
                self.server.respond(upstream)
            else:
                self.peer.send(upstream.toBytes())
            self._cancelOthers(branch)
            self._finish()
            return
        if not firstFinal:
            return
        if self.best is None or better(response, self.best):
            # Without our Via, ready to go up; a 503 from downstream is not
            # forwarded as such (RFC 3261 16.7 step 6).
            self.best = (
                self.answer(500, "Service Unavailable Downstream") if code == 503 else self.proxy._upstream(response)
            )
            self.bestIsTimeout = False
        if code >= 600:
            self._cancelOthers(branch)
        if all(b.code >= 200 for b in self.branches):
            self._sendBest()

    def timeout(self, branch: Branch) -> None:
        if branch.code < 200 and self.answered:
            # A branch left behind by the answer: nothing more goes up.
            branch.code = 408
        elif branch.code < 200:
            branch.code = 408
            if branch.target is not None:
                branch.target.status = 408
            timeout = self.answer(408)
            if self.best is None or better(timeout, self.best):
                self.best = timeout
                self.bestIsTimeout = True
            if all(b.code >= 200 for b in self.branches):
                self._sendBest()

    def refuse(self, branch: Branch, code: int, reason: str, warning: str = "", mediaFailure: str = "") -> None:
        """
        C{branch} could not be sent (its media was refused), or the proxy
        ended it (the media of its answer failed): it ends with C{code}.

        @param warning: a Warning header value for the caller's response.
        @param mediaFailure: why the branch's media failed, for the call's
            end cause if this response is the one the caller gets.
        """
        branch.code = code
        if branch.target is not None:
            branch.target.status = code
        refusal = self.answer(code, reason) if self.request is not None else None
        if refusal is not None and warning:
            refusal.add("warning", warning)
        if refusal is not None and (self.best is None or better(refusal, self.best)):
            self.best = refusal
            self.bestIsTimeout = False
            if mediaFailure:
                self.mediaFailure = (refusal, mediaFailure)
        if all(b.code >= 200 for b in self.branches):
            self._sendBest()

    def cancel(self, by: str = "caller") -> None:
        """Cancel every pending branch (RFC 3261 16.10)."""
        if self.cancelledBy is None:
            self.cancelledBy = by
        for branch in self.branches:
            if branch.code < 200:
                self.proxy.cancelling.branch(branch)
        # Branches cancelled before any response count as 487 at once.
        if not self.answered and all(b.code >= 200 for b in self.branches):
            if self.best is None:
                self.best = self.answer(487)
            self._sendBest()

    def callerCancelled(self) -> None:
        """The caller sent a CANCEL."""
        self.cancel("caller")

    def _cancelOthers(self, winner: Branch) -> None:
        for branch in self.branches:
            if branch is not winner and branch.code < 200:
                self.proxy.cancelling.branch(branch)

    def _sendBest(self) -> None:
        if self.answered or self.best is None:
            return
        self.answered = True
        if self.bestIsTimeout and not self.isInvite:
            # Our own timeout: RFC 4320 4.1, no 408 to a non-INVITE.
            self.server.abandon()
        else:
            self.server.respond(self.best)
        self.proxy._failed(self, self.best)
        self._finish()

    def _finish(self) -> None:
        if self.timerC is not None and self.timerC.active():
            self.timerC.cancel()
        self.timerC = None
        # Answered: no answer of our own any more (late 2xx copies may still
        # come through lingering client transactions, for 32 s).
        self.request = None
        if all(b.code >= 200 for b in self.branches):
            self.proxy._contexts.pop(self.server.key, None)
            # Only late 2xx copies may still come (through lingering client
            # transactions); they need the peer, not the branches.
            self.branches = []
