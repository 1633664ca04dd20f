"""
The stateful proxy (RFC 3261 section 16): calls between registered agents.

Out-of-dialog requests (an INVITE, a MESSAGE, an OPTIONS to a number) are
authenticated (407, the registrar's digest machinery), routed to the
callee's bindings, and forwarded through client transactions, one branch
per binding, in parallel; responses come back through the response
context of RFC 3261 16.7 (best response, 2xx and 6xx cancel the other
branches). Dialog-creating requests are Record-Routed so in-dialog
requests come back through the proxy; Contacts of agents behind NAT are
rewritten to the address their packets really come from, so that the
other side reaches them there (what Kamailio's fix_nated_contact does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.auth import BackendUnavailable, Credentials
from aetasip.auth.step import PROXY, Authentication, Outcome
from aetasip.location import Binding, LocationService
from aetasip.peers import KnownPeers
from aetasip.routing import Account, Call, Directory, EmptyDirectory, OverlayDirectory
from aetasip.routing.chain import RoutingChain
from aetasip.sip.client import ClientTransaction, ClientTransactionLayer, cancelFor, newBranch
from aetasip.sip.errors import ParseError
from aetasip.sip.headers import NameAddr, parseNameAddr
from aetasip.sip.message import Request, Response, localResponse
from aetasip.sip.transaction import Peer, ServerTransaction
from aetasip.sip.uri import URI

log = Logger()

# RFC 3261 16.6 step 11: Timer C, more than 3 minutes.
TIMER_C = 181.0

Sender = Callable[[bytes], None]
Hop = tuple[Sender, bool, str, tuple[str, int]]
"""How to reach a next hop: (send, reliable, transport, our local socket)."""


def copyRequest(request: Request) -> Request:
    return Request(request.method, request.uri, [list(h) for h in request.headers], request.body)


def copyResponse(response: Response) -> Response:
    return Response(response.code, response.reason, [list(h) for h in response.headers], response.body)


class Branch:
    """One forwarded copy of a request, to one binding."""

    __slots__ = ("binding", "cancel", "client", "code", "request")

    def __init__(self, binding: Binding, request: Request) -> None:
        self.binding = binding
        # Handed to its client transaction when sent, and forgotten here.
        self.request: Request | None = request
        self.client: ClientTransaction | None = None
        self.code = 0
        # "" while wanted; "pending" when the proxy gave up on it before
        # any 1xx (its CANCEL waits for one, RFC 3261 9.1); "sent".
        self.cancel = ""


class ResponseContext:
    """
    The proxy's state for one forwarded request (RFC 3261 16.7).

    @ivar server: the server transaction of the request.
    @ivar peer: the agent that sent it.
    """

    def __init__(self, proxy: Proxy, request: Request, peer: Peer, server: ServerTransaction) -> None:
        self.proxy = proxy
        self.isInvite = request.method == "INVITE"
        # Ends the branch of each copy sent: a copy coming back is a loop.
        self.loopTag = loopTag(request)
        # What the proxy's own answers copy (Via, From, To, Call-ID, CSeq),
        # rather than the whole request, which may be long gone.
        self.template: Response | None = proxy._reply(request, 100)
        self.peer = peer
        self.server = server
        self.branches: list[Branch] = []
        # The best final response so far, ready to go up (without our Via),
        # and whether it is our own timeout.
        self.best: Response | None = None
        self.bestIsTimeout = False
        self.answered = False
        self.timerC: IDelayedCall | None = None

    def answer(self, code: int, reason: str = "") -> Response:
        """A final response of the proxy's own to the request (before it is answered)."""
        assert self.template is not None, "the request is answered already"
        return Response(code, reason, [list(h) for h in self.template.headers])

    def start(self, branches: list[Branch]) -> None:
        self.branches = branches
        for branch in branches:
            self.proxy._send(self, branch)
        if self.isInvite:
            self.timerC = self.proxy.clock.callLater(TIMER_C, self._timerC)

    def stop(self) -> None:
        """Drop the context's timers (the service stops)."""
        if self.timerC is not None and self.timerC.active():
            self.timerC.cancel()
        self.timerC = None

    def _timerC(self) -> None:
        self.timerC = None
        self.cancel()

    def response(self, branch: Branch, response: Response) -> None:
        code = response.code
        if code < 200:
            branch.code = max(branch.code, code)
            if code > 100 and not self.answered:
                if self.isInvite and self.timerC is not None:
                    self.timerC.reset(TIMER_C)
                self.server.respond(self.proxy._upstream(response))
            return
        firstFinal = branch.code < 200
        branch.code = code
        if 200 <= code < 300:
            # Every 2xx goes up (also later ones from other branches and the
            # retransmissions of this one): the caller's UA sorts them out.
            upstream = self.proxy._upstream(response)
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
        if self.best is None or _better(response, self.best):
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
            timeout = self.answer(408)
            if self.best is None or _better(timeout, self.best):
                self.best = timeout
                self.bestIsTimeout = True
            if all(b.code >= 200 for b in self.branches):
                self._sendBest()

    def cancel(self) -> None:
        """Cancel every pending branch (RFC 3261 16.10)."""
        for branch in self.branches:
            if branch.code < 200:
                self.proxy._cancelBranch(branch)
        # Branches cancelled before any response count as 487 at once.
        if not self.answered and all(b.code >= 200 for b in self.branches):
            if self.best is None:
                self.best = self.answer(487)
            self._sendBest()

    def callerCancelled(self) -> None:
        """The caller sent a CANCEL."""
        self.cancel()

    def _cancelOthers(self, winner: Branch) -> None:
        for branch in self.branches:
            if branch is not winner and branch.code < 200:
                self.proxy._cancelBranch(branch)

    def _sendBest(self) -> None:
        if self.answered or self.best is None:
            return
        self.answered = True
        if self.bestIsTimeout and not self.isInvite:
            # Our own timeout: RFC 4320 4.1, no 408 to a non-INVITE.
            self.server.abandon()
        else:
            self.server.respond(self.best)
        self._finish()

    def _finish(self) -> None:
        if self.timerC is not None and self.timerC.active():
            self.timerC.cancel()
        self.timerC = None
        # Answered: no answer of our own any more (late 2xx copies may still
        # come through lingering client transactions, for 32 s).
        self.template = None
        if all(b.code >= 200 for b in self.branches):
            self.proxy._contexts.pop(self.server.key, None)
            # Only late 2xx copies may still come (through lingering client
            # transactions); they need the peer, not the branches.
            self.branches = []


class HuntingContext:
    """
    A call to a hunting series: one member at a time, each rung for the
    ring time; the caller hears ringing once.
    """

    def __init__(
        self, proxy: Proxy, request: Request, peer: Peer, server: ServerTransaction, members: list[list[Binding]]
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.peer = peer
        self.server = server
        self.members = members
        self.index = -1
        self.rang = False
        self.busy = 0
        self.current: ResponseContext | None = None
        self.ringTimer: IDelayedCall | None = None

    def next(self) -> None:
        self.index += 1
        if self.index == len(self.members):
            # Everyone tried: busy if anyone was, else nobody answered.
            code = 486 if self.busy else 480
            self.server.respond(self.proxy._reply(self.request, code))
            self.proxy._contexts.pop(self.server.key, None)
            return
        context = HuntingMember(self, self.proxy, self.request, self.peer, self.server)
        self.current = context
        self.proxy._contexts[self.server.key] = context
        branches = [self.proxy._branch(self.request, self.peer, b) for b in self.members[self.index]]
        context.start(branches)
        self.ringTimer = self.proxy.clock.callLater(self.proxy.ringTime, self.ringTimeout)

    def ringTimeout(self) -> None:
        self.ringTimer = None
        if self.current is not None:
            self.current.cancel()

    def stopRinging(self) -> None:
        """Cancel the ring timer of the current member."""
        if self.ringTimer is not None and self.ringTimer.active():
            self.ringTimer.cancel()
        self.ringTimer = None

    def memberDone(self, response: Response | None) -> None:
        self.stopRinging()
        if response is not None and response.code >= 600:
            self.server.respond(response)
            self.proxy._contexts.pop(self.server.key, None)
            return
        if response is not None and response.code == 486:
            self.busy += 1
        self.next()

    def cancel(self) -> None:
        """The caller gave up."""
        self.index = len(self.members)
        self.stopRinging()
        if self.current is not None:
            self.current.cancel()


class HuntingMember(ResponseContext):
    """The response context of one member of a hunting series."""

    def __init__(
        self, hunt: HuntingContext, proxy: Proxy, request: Request, peer: Peer, server: ServerTransaction
    ) -> None:
        super().__init__(proxy, request, peer, server)
        self.hunt = hunt

    def response(self, branch: Branch, response: Response) -> None:
        if 200 <= response.code < 300:
            # Answered: the hunt is over.
            self.hunt.stopRinging()
        if response.code < 200:
            if response.code == 180 and self.hunt.rang:
                branch.code = max(branch.code, response.code)
                return
            if response.code == 180:
                self.hunt.rang = True
        super().response(branch, response)

    def callerCancelled(self) -> None:
        self.hunt.cancel()

    def stop(self) -> None:
        super().stop()
        self.hunt.stopRinging()

    def _sendBest(self) -> None:
        if self.answered:
            return
        if self.hunt.index >= len(self.hunt.members):
            # The caller cancelled: the 487 goes up.
            super()._sendBest()
            return
        self.answered = True
        self._finish()
        self.hunt.memberDone(self.best)


_LOOP_TAG_LENGTH = 12
_LOOPED_BRANCH_LENGTH = len(newBranch()) + 1 + _LOOP_TAG_LENGTH


def loopTag(request: Request) -> str:
    """
    What identifies a request as it reached us (RFC 3261 16.6 step 8):
    its Request-URI before translation, From and To tags, Call-ID and
    CSeq number, hashed.
    """
    number, _ = request.cseq
    text = f"{request.uri}\0{request.fromAddr.tag}\0{request.toAddr.tag}\0{request.callID}\0{number}"
    return hashlib.md5(text.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()[:_LOOP_TAG_LENGTH]


def _better(candidate: Response, best: Response) -> bool:
    """RFC 3261 16.7 step 6: a 6xx wins, then the lowest class."""
    a, b = candidate.code, best.code
    if (a >= 600) != (b >= 600):
        return a >= 600
    return a // 100 < b // 100


class Proxy:
    """
    Routes requests between agents.

    @param senderFor: the L{Hop} to a binding's agent (from the socket it
        registered on, or on its connection); C{None} when it cannot be
        reached (a TCP agent whose connection closed).
    @param sendTo: the L{Hop} to a URI outside any binding (in-dialog
        requests, stray responses), or C{None}.
    @param address: our C{host:port} for a socket, C{(transport, local) -> str},
        as it goes in Via and Record-Route.
    @param isOurs: does a Route URI name this proxy?
    """

    def __init__(
        self,
        clock: IReactorTime,
        authentication: Authentication,
        auth: Any,
        location: LocationService,
        isLocalDomain: Callable[[str], bool],
        clients: ClientTransactionLayer,
        senderFor: Callable[[Binding], Hop | None],
        sendTo: Callable[[URI], Hop | None],
        address: Callable[[str, tuple[str, int]], str],
        serverHeader: str,
        isOurs: Callable[[URI], bool],
        routing: Any = None,
        directory: Directory | None = None,
        ringTime: float = 20.0,
    ) -> None:
        self.clock = clock
        self.authentication = authentication
        self.auth = auth
        self.location = location
        self.isLocalDomain = isLocalDomain
        self.clients = clients
        self.senderFor = senderFor
        self.sendTo = sendTo
        self.address = address
        self.serverHeader = serverHeader
        self.isOurs = isOurs
        self.routing = routing if routing is not None else RoutingChain([])
        self.directory: Directory = directory if directory is not None else EmptyDirectory()
        self.ringTime = ringTime
        self._contexts: dict[Any, ResponseContext] = {}
        # Where in-dialog requests and stray 2xx may go (fed by the location
        # service's events too: see SIPService).
        self.peers = KnownPeers(clock)

    def stop(self) -> None:
        """
        Forget every call in progress and its timers (the service stops;
        the client transactions are the transaction layer's to stop).
        """
        contexts, self._contexts = self._contexts, {}
        for context in contexts.values():
            context.stop()

    # -- entry points ---------------------------------------------------------

    def handle(self, request: Request, peer: Peer, server: ServerTransaction) -> None:
        """A request not for the registrar nor for the server itself."""
        maxForwards = request.get("max-forwards")
        if maxForwards is not None and maxForwards.isdigit() and int(maxForwards) == 0:
            server.respond(self._reply(request, 483))
            return
        if request.toAddr.tag is not None:
            self._inDialog(request, peer, server)
            return
        if self._looped(request):
            server.respond(self._reply(request, 482))
            return
        uri = request.requestURI
        if not self.isLocalDomain(uri.host):
            # No open relay: only numbers of this service are routed.
            server.respond(self._reply(request, 403, "Domain not served here"))
            return
        outcome = self.authentication.authenticate(request, PROXY, request.fromAddr.uri.user or "", peer)
        if isinstance(outcome, Deferred):
            outcome.addCallback(self._authenticated, request, peer, server)
            outcome.addErrback(self._backendFailed, request, server)
            return
        try:
            self._authenticated(outcome, request, peer, server)
        except Exception:
            # As when the outcome comes later: a failure routing is a 503.
            self._backendFailed(Failure(), request, server)

    def cancel(self, request: Request, server: ServerTransaction) -> None:
        """
        A CANCEL: answered 200 here (RFC 3261 16.10) and passed on to the
        branches of the INVITE it cancels, or 481.
        """
        via = request.topVia
        context = self._contexts.get((via.branch, via.host, via.port, "INVITE"))
        if context is None:
            server.respond(self._reply(request, 481))
            return
        server.respond(self._reply(request, 200))
        context.callerCancelled()

    def statelessAck(self, request: Request, peer: Peer) -> None:
        """An ACK for a 2xx: routed like any in-dialog request, without transaction."""
        target = self._popOurRoutes(request)
        hop = None if target is None else self._hopToParty(target, peer)
        if hop is None:
            return
        outgoing = copyRequest(request)
        outgoing.addFirst("via", self._via(hop[2], hop[3]))
        self._decrementMaxForwards(outgoing)
        hop[0](outgoing.toBytes())

    def strayResponse(self, response: Response) -> None:
        """
        A response matching no client transaction: a 2xx retransmission
        after ours ended. Forwarded statelessly to the next Via.
        """
        if not 200 <= response.code < 300:
            return
        try:
            vias = response.vias
        except ParseError:
            return
        if len(vias) < 2:
            return
        nextVia = vias[1]
        host = nextVia.params.get("received") or nextVia.host.strip("[]")
        rport = nextVia.params.get("rport")
        port = int(rport) if rport and rport.isdigit() else nextVia.port or 5060
        transport = nextVia.transport.lower()
        params: dict[str, str | None] = {} if transport == "udp" else {"transport": transport}
        hop = self._hopToParty(URI("sip", None, f"[{host}]" if ":" in host else host, port, params))
        if hop is not None:
            upstream = copyResponse(response)
            upstream.removeFirstValue("via")
            hop[0](upstream.toBytes())

    # -- out of dialog ----------------------------------------------------------

    def _authenticated(self, outcome: Outcome, request: Request, peer: Peer, server: ServerTransaction) -> None:
        if isinstance(outcome, Response):
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
        d = self.auth.credentials(dialled)

        def decide(known: Credentials | None) -> None:
            accounts = {caller.number: Account(caller.number, caller.kind)}
            if known is not None:
                accounts[dialled] = Account(dialled, known.kind)
            directory = OverlayDirectory(self.directory, accounts)
            callerAccount = directory.account(caller.number)
            assert callerAccount is not None
            call = Call(callerAccount, dialled, dialled)
            refusal = self.routing.route(call, directory)
            if refusal is not None:
                server.respond(self._reply(request, refusal.code, refusal.reason))
                return
            if call.series is not None:
                self._hunt(request, peer, server, call.series)
                return
            if directory.account(call.callee) is None:
                server.respond(self._reply(request, 404))
                return
            bindings = [b for b in self.location.lookup(call.callee) if self.senderFor(b) is not None]
            if not bindings:
                server.respond(self._reply(request, 480))
                return
            self._forward(request, peer, server, bindings)

        d.addCallback(decide)
        d.addErrback(self._backendFailed, request, server)

    def _hunt(self, request: Request, peer: Peer, server: ServerTransaction, series: list[str]) -> None:
        """
        Ring the members of a hunting series one after the other (SPEC):
        members without a binding are skipped; the next one rings after a
        busy, unavailable or unanswered member; a 6xx or an answer ends it.
        """
        members = [[b for b in self.location.lookup(m) if self.senderFor(b) is not None] for m in series]
        members = [bindings for bindings in members if bindings]
        if not members:
            server.respond(self._reply(request, 480))
            return
        if request.method == "INVITE":
            server.respond(self._reply(request, 100))
        self._knowParties(peer, [b for bindings in members for b in bindings])
        HuntingContext(self, request, peer, server, members).next()

    def _forward(self, request: Request, peer: Peer, server: ServerTransaction, bindings: list[Binding]) -> None:
        if request.method == "INVITE":
            server.respond(self._reply(request, 100))
        self._knowParties(peer, bindings)
        context = ResponseContext(self, request, peer, server)
        self._contexts[server.key] = context
        context.start([self._branch(request, peer, binding) for binding in bindings])

    def _knowParties(self, caller: Peer, bindings: list[Binding]) -> None:
        """The ends of a call being set up may send each other in-dialog requests."""
        self.peers.add(caller.source)
        for binding in bindings:
            self.peers.add(binding.source)

    def _branch(self, request: Request, peer: Peer, binding: Binding) -> Branch:
        """The copy of C{request} for one binding (RFC 3261 16.6)."""
        outgoing = copyRequest(request)
        outgoing.uri = binding.contact
        self._decrementMaxForwards(outgoing)
        self._fixContact(outgoing, peer.source, peer.transport)
        if request.method in ("INVITE", "SUBSCRIBE", "REFER"):
            self._recordRoute(outgoing, peer, binding)
        for route in reversed(binding.path):
            outgoing.addFirst("route", route)
        return Branch(binding, outgoing)

    def _send(self, context: ResponseContext, branch: Branch) -> None:
        hop = self.senderFor(branch.binding)
        if hop is None:
            context.timeout(branch)
            return
        send, reliable, transport, local = hop
        outgoing = branch.request
        assert outgoing is not None
        branch.request = None
        branchID = f"{newBranch()}.{context.loopTag}"
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
        if response.code < 200 and branch.cancel:
            # A branch given up on: its first 1xx lets its CANCEL go.
            if branch.cancel == "pending":
                self._sendCancel(branch)
            return
        if 100 < response.code < 300:
            # Also 1xx (early dialogs, RFC 3262) and the 2xx of SUBSCRIBE and REFER.
            self._fixContact(response, branch.binding.source, branch.binding.transport)
        context.response(branch, response)

    def _cancelBranch(self, branch: Branch) -> None:
        if branch.client is None or branch.code >= 200 or branch.cancel:
            return
        if branch.code == 0:
            # RFC 3261 9.1: no CANCEL before a provisional response. The
            # branch counts as ended; its CANCEL goes when a 1xx comes, or
            # its Timer B ends it.
            branch.code = 487
            branch.cancel = "pending"
            return
        self._sendCancel(branch)

    def _sendCancel(self, branch: Branch) -> None:
        branch.cancel = "sent"
        client = branch.client
        if client is None or client.request is None:
            return
        hop = self.senderFor(branch.binding)
        if hop is None:
            return
        self.clients.send(cancelFor(client.request), hop[0], hop[1], lambda r: None, lambda: None, client.key[0])
        # Without a final response 64*T1 from now, the branch times out.
        client.cancelled()

    # -- in dialog --------------------------------------------------------------

    def _inDialog(self, request: Request, peer: Peer, server: ServerTransaction) -> None:
        target = self._popOurRoutes(request)
        if target is None:
            server.respond(self._reply(request, 404, "No route for in-dialog request"))
            return
        hop = self._hopToParty(target, peer)
        if hop is None:
            server.respond(self._reply(request, 403, "Not a party to a call through this service"))
            return
        send, reliable, transport, local = hop
        outgoing = copyRequest(request)
        branchID = newBranch()
        outgoing.addFirst("via", self._via(transport, local, branchID))
        self._decrementMaxForwards(outgoing)
        # A target refresh (re-INVITE, UPDATE, SUBSCRIBE, NOTIFY) may carry a
        # new Contact: it must stay reachable too, both ways.
        self._fixContact(outgoing, peer.source, peer.transport)
        # The agent answers from where we sent, when no other Route is left.
        direct = not outgoing.has("route")
        targetSource = (target.host[1:-1] if target.host.startswith("[") else target.host, target.port or 5060)

        def answered(response: Response) -> None:
            upstream = self._upstream(response)
            if direct and 100 < response.code < 300:
                self._fixContact(upstream, targetSource, transport)
            server.respond(upstream)

        def timedOut() -> None:
            if request.method == "INVITE":
                server.respond(self._reply(request, 408))
            else:
                # RFC 4320 4.1: no 408 to a non-INVITE; its sender gave up too.
                server.abandon()

        self.clients.send(outgoing, send, reliable, answered, timedOut, branchID)

    def _popOurRoutes(self, request: Request) -> URI | None:
        """
        Loose routing (RFC 3261 16.4): drop the Route entries naming us;
        then the next hop is the next Route, or the Request-URI; C{None}
        when one of them does not parse.
        """
        while True:
            value = request.get("route")
            if value is None:
                break
            try:
                uri = parseNameAddr(request.getAll("route")[0]).uri
            except ParseError:
                return None
            if not self.isOurs(uri):
                break
            request.removeFirstValue("route")
        routes = request.getAll("route")
        try:
            return parseNameAddr(routes[0]).uri if routes else request.requestURI
        except ParseError:
            return None

    def _looped(self, request: Request) -> bool:
        """
        Has this request been forwarded by us before, unchanged (RFC 3261
        16.3 step 4, 16.6 step 8)? One of its Vias is ours and its branch
        ends with the loop tag this very request gives. A request that
        comes back changed (another Request-URI: a call forwarded back to
        us) is a spiral, and is routed again.
        """
        tag = None
        for via in request.vias:
            branch = via.branch
            if branch is None or len(branch) != _LOOPED_BRANCH_LENGTH or branch[-_LOOP_TAG_LENGTH - 1] != ".":
                continue
            if tag is None:
                tag = loopTag(request)
            if branch.endswith(tag) and self.isOurs(URI("sip", None, via.host, via.port)):
                return True
        return False

    def _hopToParty(self, uri: URI, sender: Peer | None = None) -> Hop | None:
        """
        The hop to C{uri} outside a forwarded call's own transactions: only
        to a party of this service's calls (see L{aetasip.peers}). Over
        TCP/TLS only an existing connection from that address is used,
        which the party opened. Each request that passes keeps both ends
        known.
        """
        transport = (uri.params.get("transport") or "udp").lower()
        address = (uri.host, uri.port or 5060)
        if transport == "udp" and address not in self.peers:
            return None
        hop = self.sendTo(uri)
        if hop is not None:
            self.peers.add(address)
            if sender is not None:
                self.peers.add(sender.source)
        return hop

    # -- message surgery --------------------------------------------------------

    def _via(self, transport: str, local: tuple[str, int], branch: str | None = None) -> str:
        return f"SIP/2.0/{transport.upper()} {self.address(transport, local)};branch={branch or newBranch()};rport"

    def _routeURI(self, transport: str, local: tuple[str, int]) -> str:
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{self.address(transport, local)}{suffix};lr"

    def _recordRoute(self, outgoing: Request, peer: Peer, binding: Binding) -> None:
        inbound = self._routeURI(peer.transport, peer.local)
        outbound = self._routeURI(binding.transport, binding.local)
        # Two entries when the legs use different sockets (RFC 5658): each
        # side then reaches us on the socket it knows.
        if outbound != inbound:
            outgoing.addFirst("record-route", f"<{inbound}>")
            outgoing.addFirst("record-route", f"<{outbound}>")
        else:
            outgoing.addFirst("record-route", f"<{inbound}>")

    @staticmethod
    def _decrementMaxForwards(request: Request) -> None:
        value = request.get("max-forwards")
        hops = int(value) if value is not None and value.isdigit() else 70
        request.set("max-forwards", str(max(hops - 1, 0)))

    @staticmethod
    def _fixContact(message: Request | Response, source: tuple[str, int], transport: str) -> None:
        """
        Point the Contact at C{source}, the address the agent's packets come
        from over C{transport}, when it differs (an agent behind NAT
        advertising its private address): the other side of the dialog then
        reaches it there, through us.
        """
        host, port = source
        values = message.getAll("contact")
        if len(values) != 1:
            return
        try:
            contact = parseNameAddr(values[0])
        except ParseError:
            return
        uri = contact.uri
        address = f"[{host}]" if ":" in host else host
        if uri.host == address and (uri.port or 5060) == port:
            return
        uri = uri.copy()
        uri.host, uri.port = address, port
        if transport != "udp":
            uri.params["transport"] = transport
        # A new NameAddr: parsed ones are shared (see parseNameAddr).
        message.set("contact", str(NameAddr(uri, contact.display, contact.params)))

    def _upstream(self, response: Response) -> Response:
        """C{response} without our Via, to go up (RFC 3261 16.7 step 9)."""
        upstream = copyResponse(response)
        upstream.removeFirstValue("via")
        return upstream

    # -- answers ------------------------------------------------------------------

    def _backendFailed(self, failure: Failure, request: Request, server: ServerTransaction) -> None:
        if failure.check(BackendUnavailable):
            log.warn("Authentication backend unavailable: {error}", error=failure.getErrorMessage())
        else:
            log.failure("Routing {request} failed", failure, request=request)
        response = self._reply(request, 503, "Authentication service unavailable")
        response.add("retry-after", "30")
        server.respond(response)

    def _reply(self, request: Request, code: int, reason: str = "") -> Response:
        return localResponse(request, code, reason, self.serverHeader)
