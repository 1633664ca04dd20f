"""
The stateful proxy (RFC 3261 section 16): calls between registered agents.

Out-of-dialog requests (an INVITE, a MESSAGE, an OPTIONS to a number) are
authenticated (407, the shared L{aetasip.auth.step.Authentication}),
routed by the routing policies to the callee's bindings, and forwarded
through client transactions, one branch per binding, in parallel (see
L{aetasip.calls.context}). An INVITE becomes a L{Call}, whose events the
call observers hear; every SDP passes through the media hook.
Dialog-creating requests are Record-Routed with a signed token, so that
in-dialog requests come back through the proxy and only ever reach the
other leg of a dialog it set up (L{aetasip.calls.indialog}). Contacts of
agents behind NAT are rewritten to the address their packets really come
from (what Kamailio's fix_nated_contact does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.auth import Credentials
from aetasip.auth.step import PROXY, Authenticated, Authentication, Outcome
from aetasip.calls.call import Call, CallObservers, EndCause, Leg
from aetasip.calls.cancelling import Cancelling
from aetasip.calls.context import Branch, ResponseContext
from aetasip.calls.dialog import CALLEE, CALLER, DialogTable
from aetasip.calls.hunting import HuntingContext
from aetasip.calls.indialog import DialogRouter
from aetasip.calls.liveness import Liveness
from aetasip.calls.media import OFFER, MediaHook, kindOfResponseSDP, sdpOf
from aetasip.calls.mediafailure import MediaFailures
from aetasip.calls.sessiontimer import sessionExpires
from aetasip.calls.settings import CallSettings
from aetasip.calls.surgery import (
    copyRequest,
    decrementMaxForwards,
    fixContact,
    looped,
    upstream,
)
from aetasip.calls.token import DialogSigner, forwardBranch
from aetasip.location import Binding, LocationService
from aetasip.routing import Account, Directory, EmptyDirectory, OverlayDirectory
from aetasip.routing import Call as RoutedCall
from aetasip.routing.chain import RoutingChain
from aetasip.sip.client import ClientTransactionLayer, newBranch
from aetasip.sip.message import Request, Response
from aetasip.sip.responses import localResponse
from aetasip.sip.transaction import Peer, ServerTransaction
from aetasip.sip.uri import URI

log = Logger()

Sender = Callable[[bytes], None]
Hop = tuple[Sender, bool, str, tuple[str, int]]
"""How to reach a next hop: (send, reliable, transport, our local socket)."""
RingingLookup = Callable[[str, str, tuple[str, int]], "Deferred[tuple[str, ...] | None]"]
"""
Whether a call (Call-ID, caller tag, caller's address) rang on another
server: the numbers it rang (else C{None}); see L{Proxy.ringingElsewhere}.
"""


class Proxy:
    """
    Routes requests between agents, and keeps the calls they make.

    @param senderFor: the L{Hop} to a leg (a binding, or a dialog's leg: from
        the socket it talks to, or on its connection); C{None} when it cannot
        be reached (a TCP agent whose connection closed).
    @param sendTo: the L{Hop} to a URI on a connection from its address
        (a leg whose connection is not known: rebuilt from a token).
    @param address: our C{host:port} for a socket, C{(transport, local) -> str},
        as it goes in Via and Record-Route.
    @param isOurs: does a Route URI name this proxy?
    @param signer: signs and checks the dialog tokens of Record-Route.

    @ivar calls: the calls in progress, by L{Call.id}.
    @ivar dialogs: the L{DialogTable}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        authentication: Authentication,
        location: LocationService,
        isLocalDomain: Callable[[str], bool],
        clients: ClientTransactionLayer,
        senderFor: Callable[[Any], Hop | None],
        sendTo: Callable[[URI], Hop | None],
        address: Callable[[str, tuple[str, int]], str],
        serverHeader: str,
        isOurs: Callable[[URI], bool],
        signer: DialogSigner,
        routing: Any = None,
        directory: Directory | None = None,
        ringTime: float = 20.0,
        observers: CallObservers | None = None,
        media: MediaHook | None = None,
        settings: CallSettings | None = None,
    ) -> None:
        self.clock = clock
        self.authentication = authentication
        self.auth = authentication.auth
        self.location = location
        self.isLocalDomain = isLocalDomain
        self.clients = clients
        self.senderFor = senderFor
        self.sendTo = sendTo
        self.address = address
        self.serverHeader = serverHeader
        self.isOurs = isOurs
        self.signer = signer
        self.routing = routing if routing is not None else RoutingChain([])
        self.directory: Directory = directory if directory is not None else EmptyDirectory()
        self.ringTime = ringTime
        self.observers = observers if observers is not None else CallObservers()
        self.media = media if media is not None else MediaHook()
        self.settings = settings if settings is not None else CallSettings()
        self._contexts: dict[Any, ResponseContext] = {}
        self.calls: dict[int, Call] = {}
        # The same, by Call-ID and caller tag: what an early dialog's token names.
        self.callsByDialogID: dict[tuple[str, str], Call] = {}
        self.dialogs = DialogTable(self.settings.maxDialogs, clock.seconds)
        self.liveness = Liveness(self, clock, self.settings)
        self.router = DialogRouter(self)
        self.cancelling = Cancelling(self)
        self.mediaFailures = MediaFailures(self)
        # Set by ICallControl.lookForCallsRingingElsewhere (a cluster).
        self.ringingElsewhere: RingingLookup | None = None

    def stop(self) -> Deferred[None]:
        """
        The service stops: every call in progress ends (C{server shutdown};
        no BYE: after a restart, their signed Routes still carry them) and
        every timer is dropped (the client transactions are the transaction
        layer's to stop).

        @return: a Deferred firing once the observers heard every call end
            (after the media handler released their media).
        """
        contexts, self._contexts = self._contexts, {}
        for context in contexts.values():
            context.stop()
        self.liveness.stop()
        self.router.takeover.stop()
        ending = list(self.calls.values())
        for call in ending:
            call.end(EndCause.SERVER_SHUTDOWN)
        self.dialogs.clear()
        return DeferredList([call.endReported() for call in ending]).addCallback(lambda _: None)

    # -- the calls, for observers, handlers and operators ------------------

    def activeCalls(self) -> list[Call]:
        """The calls in progress, oldest first."""
        return sorted(self.calls.values(), key=lambda c: c.id)

    def release(self, call: Call, cause: str = EndCause.OPERATOR_RELEASE, detail: str = "") -> None:
        """
        End C{call} from the server's side: an answered call gets a BYE on
        both legs, a call still being set up is cancelled (the caller gets
        487). Ends it with C{cause}.
        """
        if call.ended:
            return
        self.router.release(call, cause, detail)

    def endedElsewhere(self, call: Call, cause: str, detail: str = "") -> None:
        """
        C{call}, answered here, ended on another server of the cluster (its
        BYE went there after a switch): it ends here too, without a word
        to its parties; its dialogs go (late requests get 481) and its
        media is released. A call not answered here is left alone.
        """
        if call.ended or call.answeredBy is None:
            return
        for dialog in list(call.dialogs):
            self.dialogs.remove(dialog)
            self.liveness.forget(dialog)
        call.endedElsewhere = True
        call.end(cause, detail=detail)

    # -- entry points ---------------------------------------------------------

    def handle(self, request: Request, peer: Peer, server: ServerTransaction) -> None:
        """A request not for the registrar nor for the server itself."""
        maxForwards = request.get("max-forwards")
        if maxForwards is not None and maxForwards.isdigit() and int(maxForwards) == 0:
            server.respond(self._reply(request, 483))
            return
        if request.toAddr.tag is not None:
            self.router.request(request, peer, server)
            return
        if looped(request, self.isOurs):
            server.respond(self._reply(request, 482))
            return
        uri = request.requestURI
        if not self.isLocalDomain(uri.host):
            # No open relay: only numbers of this service are routed.
            server.respond(self._reply(request, 403, "Domain not served here"))
            return
        caller = request.fromAddr.uri.user or ""
        outcome = self.authentication.authenticate(request, PROXY, caller, peer)
        if isinstance(outcome, Deferred):
            outcome.addCallback(self._authenticated, request, peer, server)
            outcome.addErrback(lambda f: log.failure("Routing {request} failed", f, request=request))
        else:
            self._authenticated(outcome, request, peer, server)

    def cancel(self, request: Request, server: ServerTransaction) -> None:
        """A CANCEL (see L{Cancelling.cancel})."""
        self.cancelling.cancel(request, server)

    def statelessAck(self, request: Request, peer: Peer) -> None:
        """An ACK for a 2xx: to the other leg of its dialog, without transaction."""
        self.router.ack(request, peer)

    def strayResponse(self, response: Response, peer: Peer | None = None) -> None:
        """
        A response matching no client transaction: a 2xx retransmission
        after ours ended, forwarded to the other leg of its dialog; a
        response to an INVITE another server of the cluster forwarded
        (see L{aetasip.calls.takeover}).
        """
        self.router.takeover.strayResponse(response, peer)

    # -- out of dialog ----------------------------------------------------------

    def _authenticated(self, outcome: Outcome, request: Request, peer: Peer, server: ServerTransaction) -> None:
        if not isinstance(outcome, Authenticated):
            server.respond(outcome)
            return
        # RFC 3261 22.3: credentials for our realm stop here; others go on.
        request.removeField("proxy-authorization", outcome.header)
        self._route(request, peer, server, outcome.credentials)

    def _route(self, request: Request, peer: Peer, server: ServerTransaction, caller: Credentials) -> None:
        dialled = request.requestURI.user or ""
        if not dialled:
            server.respond(self._reply(request, 404))
            return
        call = None
        if request.method == "INVITE":
            refusal = sessionExpires(request, self.settings.minSessionExpires, self._reply)
            if refusal is not None:
                server.respond(refusal)
                return
            call = self._newCall(request, peer, caller, dialled)
        d = self.auth.credentials(dialled)

        def decide(known: Credentials | None) -> None:
            accounts = {caller.number: Account(caller.number, caller.kind)}
            if known is not None:
                accounts[dialled] = Account(dialled, known.kind)
            directory = OverlayDirectory(self.directory, accounts)
            callerAccount = directory.account(caller.number)
            assert callerAccount is not None
            routed = RoutedCall(callerAccount, dialled, dialled)
            refusal = self.routing.route(routed, directory)
            if refusal is not None:
                self._refuse(request, server, call, refusal.code, refusal.reason)
                return
            if call is not None:
                call.resolve(routed.callee)
            if routed.series is not None:
                self._hunt(request, peer, server, routed.series, call)
                return
            if directory.account(routed.callee) is None:
                self._refuse(request, server, call, 404)
                return
            bindings = [b for b in self.location.targets(routed.callee) if self.senderFor(b) is not None]
            if not bindings:
                self._refuse(request, server, call, 480)
                return
            self._forward(request, peer, server, routed.callee, caller.number, bindings, call)

        def failed(failure: Failure) -> None:
            response = self.authentication.backendFailed(failure, request)
            server.respond(response)
            if call is not None:
                call.end(EndCause.REJECTED, response.code)

        d.addCallback(decide)
        d.addErrback(failed)

    def _newCall(self, request: Request, peer: Peer, caller: Credentials, dialled: str) -> Call:
        fromTag = request.fromAddr.tag or ""
        # Its Contact now (its dialogs set it too): the media handler compares it with the source.
        leg = Leg(peer.source, peer.transport, peer.local, peer.connection, request.get("contact"))
        call = Call(
            self.clock.seconds,
            request.callID,
            fromTag,
            caller.number,
            caller.kind,
            request.requestURI.host,
            leg,
            dialled,
            self.observers,
        )
        self.calls[call.id] = call
        self.callsByDialogID[(call.callID, call.callerTag)] = call
        call.whenEnded(self._callEnded)
        call.start()
        return call

    def _callEnded(self, call: Call) -> Deferred[None] | None:
        self.calls.pop(call.id, None)
        self.callsByDialogID.pop((call.callID, call.callerTag), None)
        call.control = None
        self.liveness.forgetCall(call)
        for dialog in call.dialogs:
            self.dialogs.remove(dialog)
        call.dialogs = []
        return self.media.callEnded(call)

    def _refuse(
        self, request: Request, server: ServerTransaction, call: Call | None, code: int, reason: str = ""
    ) -> None:
        server.respond(self._reply(request, code, reason))
        if call is not None:
            call.end(EndCause.REJECTED, code, reason)

    def _hunt(
        self, request: Request, peer: Peer, server: ServerTransaction, series: list[str], call: Call | None
    ) -> None:
        """Ring the members of a hunting series one after the other (see L{HuntingContext})."""
        members = [(m, [b for b in self.location.targets(m) if self.senderFor(b) is not None]) for m in series]
        members = [(number, bindings) for number, bindings in members if bindings]
        if not members:
            self._refuse(request, server, call, 480)
            return
        if call is None:
            # A hunting number reached by a MESSAGE or an OPTIONS: the first member.
            number, bindings = members[0]
            caller = request.fromAddr.uri.user or ""
            self._forward(request, peer, server, number, caller, bindings, None)
            return
        server.respond(self._reply(request, 100))
        hunt = HuntingContext(self, request, peer, server, members, call)
        call.control = hunt
        hunt.next()

    def _forward(
        self,
        request: Request,
        peer: Peer,
        server: ServerTransaction,
        callee: str,
        caller: str,
        bindings: list[Binding],
        call: Call | None,
    ) -> None:
        if request.method == "INVITE":
            server.respond(self._reply(request, 100))
        context = ResponseContext(self, request, peer, server, call)
        if call is not None:
            call.control = context
        self._contexts[server.key] = context
        branches = [self._branch(request, peer, binding, callee, caller, call) for binding in bindings]
        self._startBranches(context, request, branches)

    def _branch(
        self, request: Request, peer: Peer, binding: Binding, callee: str, caller: str, call: Call | None
    ) -> Branch:
        """The copy of C{request} for one binding (RFC 3261 16.6)."""
        outgoing = copyRequest(request)
        outgoing.uri = binding.contact
        decrementMaxForwards(outgoing)
        fixContact(outgoing, peer.source, peer.transport)
        leg = Leg(binding.source, binding.transport, binding.local, binding.connection, binding.contact)
        target = call.addTarget(callee, leg) if call is not None else None
        if request.method in ("INVITE", "SUBSCRIBE", "REFER"):
            callerLeg = call.callerLeg if call is not None else Leg(peer.source, peer.transport, peer.local)
            token = self.signer.sign(
                request.method,
                request.callID,
                request.fromAddr.tag or "",
                caller,
                callee,
                target.key if target is not None else "0",
                callerLeg,
                leg,
            )
            self._recordRoute(outgoing, peer.transport, peer.local, leg.transport, leg.local, token)
        for route in reversed(binding.path):
            outgoing.addFirst("route", route)
        return Branch(leg, outgoing, target)

    def _startBranches(self, context: ResponseContext, request: Request, branches: list[Branch]) -> None:
        """Send C{branches}, each once the media handler has seen its offer."""
        call = context.call
        if self.media.handler is None or call is None:
            context.start(branches)
            return
        context.hadOffer = sdpOf(request) is not None
        if not context.hadOffer:
            context.start(branches)
            return
        context.start([])
        context.branches = branches
        for branch in branches:
            assert branch.request is not None and branch.target is not None
            self.media.process(
                call,
                branch.request,
                OFFER,
                branch.target.key,
                CALLER,
                lambda _, branch=branch: self._send(context, branch),  # type: ignore[misc]
                lambda failure, branch=branch: self.mediaFailures.refused(context, branch, failure),  # type: ignore[misc]
            )

    def _send(self, context: ResponseContext, branch: Branch) -> None:
        if branch.code >= 200:
            return  # cancelled while its media was being prepared
        hop = self.hopToLeg(branch.leg)
        if hop is None:
            context.timeout(branch)
            return
        send, reliable, transport, local = hop
        outgoing = branch.request
        assert outgoing is not None
        branch.request = None
        target, request = branch.target, context.request
        if target is not None and request is not None and context.isInvite and context.dialog is None:
            # Derived, so another server of the cluster can CANCEL it (aetasip.calls.takeover).
            branchID = forwardBranch(
                self.signer,
                request.topVia,
                context.callID,
                context.fromTag,
                context.cseq,
                target.number,
                branch.leg.contact or "",
                context.loopTag,
            )
            if (branchID, "INVITE") in self.clients.transactions:
                # The same binding again in this call (a hunt ringing a member twice).
                branchID = f"{newBranch()}.{context.loopTag}"
        else:
            branchID = f"{newBranch()}.{context.loopTag}" if context.loopTag else newBranch()
        outgoing.addFirst("via", self._via(transport, local, branchID))
        branch.client = self.clients.send(
            outgoing,
            send,
            reliable,
            lambda response: self._fromBranch(context, branch, response),
            lambda: context.timeout(branch),
            branchID,
        )

    def _fromBranch(self, context: ResponseContext, branch: Branch, response: Response) -> None:
        code = response.code
        if branch.ackAgain is not None:
            # A branch the proxy ended after its 2xx (its media failed): only
            # retransmissions of that 2xx come, each ACKed again.
            if 200 <= code < 300:
                branch.ackAgain()
            return
        if code < 200 and branch.cancel:
            # A branch given up on: its first 1xx lets its CANCEL go.
            if branch.cancel == "pending":
                self.cancelling.send(branch)
            return
        if 100 < code < 300:
            # Also 1xx (early dialogs, RFC 3262) and the 2xx of SUBSCRIBE and REFER.
            fixContact(response, branch.leg.source, branch.leg.transport)
            if branch.target is not None and branch.target.tag is None:
                branch.target.tag = response.toAddr.tag
        call = context.call if context.dialog is None else context.dialog.call
        if call is None or code == 100 or self.media.handler is None:
            context.response(branch, response)
            return
        kind = kindOfResponseSDP(context.hadOffer) if code < 300 else None
        key = branch.target.key if branch.target is not None else context.extra.get("key", "1")
        sender = context.extra.get("to", CALLEE)
        answerFailed = None
        if context.dialog is None and context.method == "INVITE":
            answerFailed = lambda failure: self.mediaFailures.answer(context, branch, response, kind, failure)  # noqa: E731
        elif context.method == "INVITE":
            answerFailed = lambda failure: self.mediaFailures.reinviteAnswer(context, branch, response, kind, failure)  # noqa: E731
        self.media.process(
            call,
            response,
            kind,
            key,
            sender,
            lambda r: context.response(branch, r),  # type: ignore[arg-type]
            answerFailed,
            answerFailed,
        )

    # -- what the contexts tell ---------------------------------------------------

    def _provisional(self, context: ResponseContext, branch: Branch, response: Response) -> None:
        """A 1xx (not 100) goes up."""
        if context.dialog is not None:
            return
        call = context.call
        if call is not None:
            call.ringing()
        # A reliable 18x makes its early dialog now: its PRACK is sure to
        # come. Others make theirs only if a request (an UPDATE before the
        # answer) does, from the token of its Route.
        if context.method == "INVITE" and "100rel" in (response.get("require") or "").lower():
            self.router.dialogFromResponse(context, branch, response, early=True)

    def _answered(self, context: ResponseContext, branch: Branch, response: Response) -> None:
        """A branch's first 2xx goes up."""
        if context.dialog is not None:
            self.router.refreshed(context, branch, response)
            return
        if context.method not in ("INVITE", "SUBSCRIBE", "REFER") or response.toAddr.tag is None:
            return
        dialog = self.router.dialogFromResponse(context, branch, response, early=False)
        call = context.call
        if call is not None and dialog is not None and call.answeredBy is None:
            call.answered(branch.target, response.toAddr.tag)
            self.liveness.watch(dialog, response)
            client = branch.client
            if client is not None:
                # Its client transaction lingers 32 s (RFC 6026 Accepted) to
                # pass copies of the 2xx up; once the call is over they have
                # nowhere to go, and the call, held through this context,
                # is freed when it ends rather than 32 s later.
                call.whenEnded(lambda _: client.absorb())

    def _failed(self, context: ResponseContext, best: Response) -> None:
        """The best final non-2xx response went up (or our own timeout)."""
        call = context.call
        if call is None or context.dialog is not None:
            return
        if context.mediaFailure is not None and context.mediaFailure[0] is best:
            call.end(EndCause.MEDIA_FAILURE, best.code, context.mediaFailure[1])
            return
        if context.cancelledBy == "caller":
            cause = EndCause.CANCELLED
        elif context.cancelledBy is not None or best.code == 408:
            cause = EndCause.NO_ANSWER
        else:
            cause = EndCause.REJECTED
        call.end(cause, best.code, best.reason if cause == EndCause.REJECTED else "")

    # -- message surgery --------------------------------------------------------

    def _via(self, transport: str, local: tuple[str, int], branch: str | None = None) -> str:
        return f"SIP/2.0/{transport.upper()} {self.address(transport, local)};branch={branch or newBranch()};rport"

    def _routeURI(self, transport: str, local: tuple[str, int], token: str) -> str:
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{self.address(transport, local)}{suffix};lr;dlg={token}"

    def _recordRoute(
        self,
        outgoing: Request,
        inTransport: str,
        inLocal: tuple[str, int],
        outTransport: str,
        outLocal: tuple[str, int],
        token: str,
    ) -> None:
        inbound = self._routeURI(inTransport, inLocal, token)
        outbound = self._routeURI(outTransport, outLocal, token)
        # Two entries when the legs use different sockets (RFC 5658): each
        # side then reaches us on the socket it knows.
        if outbound != inbound:
            outgoing.addFirst("record-route", f"<{inbound}>")
            outgoing.addFirst("record-route", f"<{outbound}>")
        else:
            outgoing.addFirst("record-route", f"<{inbound}>")

    def _upstream(self, response: Response) -> Response:
        return upstream(response)

    def _reply(self, request: Request, code: int, reason: str = "") -> Response:
        return localResponse(request, code, reason, self.serverHeader)

    def hopToLeg(self, leg: Leg) -> Hop | None:
        """How to reach C{leg}: its socket or connection, else a connection from its address."""
        hop = self.senderFor(leg)
        if hop is None and leg.transport != "udp":
            host = f"[{leg.source[0]}]" if ":" in leg.source[0] else leg.source[0]
            hop = self.sendTo(URI("sip", None, host, leg.source[1], {"transport": leg.transport}))
        return hop


__all__ = ["CALLEE", "CALLER", "CallSettings", "Hop", "Proxy"]
