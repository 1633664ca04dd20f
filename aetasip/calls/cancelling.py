"""
CANCEL (RFC 3261 9 and 16.10): the branches of an INVITE the proxy gives
up on, and the CANCEL of a call that rang on another server of the
cluster when it died (see L{aetasip.calls.takeover}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.calls.call import Call, EndCause, Leg
from aetasip.calls.context import Branch
from aetasip.sip.client import cancelFor
from aetasip.sip.message import Request
from aetasip.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from aetasip.calls.proxy import Proxy, RingingLookup

log = Logger()


class Cancelling:
    """The proxy's CANCELs (see the module docstring)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def cancel(self, request: Request, server: ServerTransaction) -> None:
        """
        A CANCEL: answered 200 here (RFC 3261 16.10) and passed on to the
        branches of the INVITE it cancels, or 481.
        """
        via = request.topVia
        context = self.proxy._contexts.get((via.branch, via.host, via.port, "INVITE"))
        if context is None:
            callerTag = request.fromAddr.tag
            lookup = self.proxy.ringingElsewhere
            if lookup is None or not callerTag or (request.callID, callerTag) in self.proxy.callsByDialogID:
                server.respond(self.proxy._reply(request, 481))
            else:
                self.elsewhere(request, server, callerTag, lookup)
            return
        server.respond(self.proxy._reply(request, 200))
        context.callerCancelled()

    def elsewhere(self, request: Request, server: ServerTransaction, callerTag: str, lookup: RingingLookup) -> None:
        """
        A CANCEL of an INVITE this server never saw: if another server of
        the cluster set the call up and it rang there when that server
        died (its record says so, from this caller's address), the caller
        gets 200 and a 487 for its INVITE (it stops waiting), the record
        ends C{cancelled}, and the callee gets a CANCEL its INVITE
        transaction matches (the branch was derived: see
        L{aetasip.calls.takeover}); its 487 is ACKed here, its answer,
        should it come first, is ACKed and ended.
        """
        peer = server.peer
        callID = request.callID

        def looked(ringing: tuple[str, ...] | bool | None) -> None:
            if not ringing:
                server.respond(self.proxy._reply(request, 481))
                return
            log.info("CANCEL of {callID}, which rang on a server that failed: 487 to the caller", callID=callID)
            self.proxy.dialogs.cancelledHere(callID, callerTag)
            server.respond(self.proxy._reply(request, 200))
            # The callee's phone stops ringing: the numbers the call rang (or the one dialled).
            numbers = ringing if isinstance(ringing, (tuple, list)) else (request.requestURI.user or "",)
            self.proxy.router.takeover.cancelCallees(request, numbers)
            invite = request.copy()
            invite.set("cseq", f"{request.cseq[0]} INVITE")
            peer.send(self.proxy._reply(invite, 487).toBytes())
            uri = request.requestURI
            call = Call(
                self.proxy.clock.seconds,
                callID,
                callerTag,
                request.fromAddr.uri.user or "",
                "",
                uri.host,
                Leg(peer.source, peer.transport, peer.local, peer.connection),
                uri.user or "",
                self.proxy.observers,
            )
            # Its record amends the one the other server left.
            call.recovered = True
            call.start()
            call.end(EndCause.CANCELLED, 487, "the caller cancelled while the callee rang")

        def failed(failure: Failure) -> None:
            log.warn(
                "Cannot tell whether {callID} rang on another server: {error}",
                callID=callID,
                error=failure.getErrorMessage(),
            )
            server.respond(self.proxy._reply(request, 481))

        d = maybeDeferred(lookup, callID, callerTag, peer.source)
        d.addCallbacks(looked, failed)
        d.addErrback(lambda f: log.failure("Answering the CANCEL of {callID} failed", f, callID=callID))

    def branch(self, branch: Branch) -> None:
        if branch.code >= 200 or branch.cancel:
            return
        if branch.client is None or branch.code == 0:
            # RFC 3261 9.1: no CANCEL before a provisional response. The
            # branch counts as ended; its CANCEL goes when a 1xx comes, or
            # its Timer B ends it (or it was never sent).
            branch.code = 487
            branch.cancel = "pending"
            return
        self.proxy.cancelling.send(branch)

    def send(self, branch: Branch) -> None:
        branch.cancel = "sent"
        client = branch.client
        if client is None or client.request is None:
            return
        hop = self.proxy.senderFor(branch.leg)
        if hop is None:
            return
        self.proxy.clients.send(cancelFor(client.request), hop[0], hop[1], lambda r: None, lambda: None, client.key[0])
        # Without a final response 64*T1 from now, the branch times out.
        client.cancelled()
