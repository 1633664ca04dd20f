"""
The SIP element's core: everything between the transports and the
transaction users. It parses what the transports read, answers bad
requests, stamps Via (received/rport), matches transactions and hands
each request to the registrar or the proxy by method. Never lets an
exception reach the reactor.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.element.flood import FloodControl
from aetasip.element.loglimit import SourceLogLimiter
from aetasip.registrar import SUPPORTED, Registrar
from aetasip.sip.client import ClientTransactionLayer
from aetasip.sip.errors import ParseError
from aetasip.sip.headers import splitCommas
from aetasip.sip.message import Request, Response
from aetasip.sip.parser import BadRequest, ackTopVia, parse, parseTrying
from aetasip.sip.responses import localResponse, withinBudget
from aetasip.sip.transaction import Peer, ServerTransaction, ServerTransactionLayer

log = Logger()

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, MESSAGE, SUBSCRIBE, NOTIFY, REFER, PUBLISH"
KNOWN_METHODS = frozenset(
    "INVITE ACK CANCEL BYE OPTIONS REGISTER INFO UPDATE PRACK MESSAGE SUBSCRIBE NOTIFY REFER PUBLISH".split()
)

# An rport parameter without a value, in a Via header value.
_BARE_RPORT = re.compile(r";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)


def _firstElement(value: str) -> tuple[str, str]:
    """Split a Via header value after its first element: (first, ", rest")."""
    first, *rest = splitCommas(value)
    return first, "".join(f", {element}" for element in rest)


class SIPCore:
    """
    Everything between the transports and the registrar: parse, answer
    bad requests, stamp Via (received/rport), match transactions and
    dispatch by method. Never lets an exception reach the reactor.
    """

    def __init__(
        self,
        transactions: ServerTransactionLayer,
        registrar: Registrar,
        isLocalDomain: Any,
        serverHeader: str,
        proxy: Any = None,
        clients: ClientTransactionLayer | None = None,
        flood: FloodControl | None = None,
    ) -> None:
        self.transactions = transactions
        self.flood = flood
        # Five lines a minute per source about the bad requests it sends.
        self.logLimiter = SourceLogLimiter(transactions.clock.seconds)
        self.registrar = registrar
        self.proxy = proxy
        self.clients = clients
        self.isLocalDomain = isLocalDomain
        self.serverHeader = serverHeader
        # Live stream connections by their peer's (host, port): what an
        # in-dialog request to a TCP/TLS leg finds in O(1).
        self.connections: dict[tuple[str, int], Any] = {}
        self.counters = {"requests": 0, "responses": 0, "bad": 0, "dropped": 0}

    # -- from the transports ----------------------------------------------

    def connectionMade(self, connection: Any) -> None:
        self.connections[connection.source] = connection

    def connectionLost(self, connection: Any) -> None:
        key = connection.source
        if self.connections.get(key) is connection:
            del self.connections[key]

    def receive(self, data: bytes, peer: Peer, stream: bool = False) -> None:
        flood = self.flood
        if flood is not None and not flood.allow(peer.source[0]):
            # A banned source: dropped unparsed and unanswered.
            return
        if data[:4] == b"ACK ":
            via = ackTopVia(data)
            if via is not None and self.transactions.absorbAck(via):
                # The ACK of our challenge or refusal: it ends here, unparsed.
                self.counters["requests"] += 1
                return
        if data[:12] == b"SIP/2.0 100 " and self.clients is not None:
            trying = parseTrying(data)
            if trying is not None:
                self.counters["responses"] += 1
                try:
                    # One matching no transaction is dropped: a 100 goes no further.
                    self.clients.receive(trying)
                except Exception:
                    log.failure("Failed on {message} from {peer}", message=trying, peer=peer)
                return
        try:
            message = parse(data, stream)
        except BadRequest as e:
            self.counters["bad"] += 1
            self._refuse(e, peer)
            return
        except ParseError as e:
            self.counters["dropped"] += 1
            log.debug("Dropped unparsable message from {peer}: {reason}", peer=peer, reason=e.reason)
            return
        except Exception:
            self.counters["dropped"] += 1
            log.failure("Parser failed on a message from {peer}", peer=peer)
            return
        try:
            if isinstance(message, Response):
                self.counters["responses"] += 1
                if self.clients is None or not self.clients.receive(message):
                    if self.proxy is not None:
                        self.proxy.strayResponse(message, peer)
            else:
                self.counters["requests"] += 1
                self.request(message, peer)
        except Exception:
            log.failure("Failed on {message} from {peer}", message=message, peer=peer)

    def _refuse(self, error: BadRequest, peer: Peer) -> None:
        request = error.request
        if request is None or request.method == "ACK":
            log.debug("Dropped a bad request from {peer}: {reason}", peer=peer, reason=error.reason)
            return
        try:
            self._stampVia(request, peer)
        except ParseError:
            pass
        response = localResponse(request, error.status, error.reason, self.serverHeader)
        write, held = self.logLimiter.allow(peer.source[0])
        if write:
            log.info(
                "Bad request from {peer}: {status} {reason}{held}",
                peer=peer,
                status=error.status,
                reason=error.reason,
                held=f" ({held} more from it were not logged)" if held else "",
            )
        data = withinBudget(response)
        if data is not None:
            peer.send(data)

    # -- requests ---------------------------------------------------------

    def request(self, request: Request, peer: Peer) -> None:
        self._stampVia(request, peer)
        if request.method == "ACK":
            if self.transactions.receiveAck(request) and self.proxy is not None:
                self.proxy.statelessAck(request, peer)
            return
        transaction = self.transactions.receive(request, peer)
        if transaction is None:
            return
        method = request.method
        if request.requestURI.scheme not in ("sip", "sips", "tel"):
            # RFC 3261 8.2.2.1: a scheme this service cannot route or serve.
            transaction.respond(self._reply(request, 416))
        elif method == "REGISTER":
            self._answer(transaction, self.registrar.handle, request, peer)
        elif method == "OPTIONS" and self._forUs(request):
            transaction.respond(self.optionsResponse(request))
        elif method == "CANCEL":
            if self.proxy is None:
                transaction.respond(self._reply(request, 481))
            else:
                self.proxy.cancel(request, transaction)
        elif self.proxy is not None and (method in KNOWN_METHODS or self._forAnAgent(request)):
            # RFC 3261 16.3 step 1: a proxy routes methods it does not know.
            self.proxy.handle(request, peer, transaction)
        elif method in KNOWN_METHODS:
            response = self._reply(request, 405)
            response.add("allow", ALLOW)
            transaction.respond(response)
        else:
            # RFC 3261 8.2.1: a method we do not know at all.
            response = self._reply(request, 501)
            response.add("allow", ALLOW)
            transaction.respond(response)

    def _answer(self, transaction: ServerTransaction, handler: Any, request: Request, peer: Peer) -> None:
        """
        Send what C{handler} answers, at once or when its Deferred fires; a
        handler that fails gets the request a 500.
        """
        try:
            result = handler(request, peer)
        except Exception:
            log.failure("Failed to answer {request}", request=request)
            transaction.respond(self._reply(request, 500))
            return
        if not isinstance(result, Deferred):
            transaction.respond(result)
            return

        def failed(failure: Failure) -> Response:
            log.failure("Failed to answer {request}", failure, request=request)
            return self._reply(request, 500)

        result.addErrback(failed)
        result.addCallback(transaction.respond)

    @staticmethod
    def _forAnAgent(request: Request) -> bool:
        """Is C{request} for an agent (a number, or a dialog), not the server itself?"""
        return request.requestURI.user is not None or request.toAddr.tag is not None

    def _forUs(self, request: Request) -> bool:
        """Is this OPTIONS addressed to the server itself (no other user)?"""
        uri = request.requestURI
        if not self.isLocalDomain(uri.host):
            return False
        if uri.user is None:
            return True
        # An agent pinging its own registration (common keep-alive form).
        return bool(uri.user == request.fromAddr.uri.user)

    def optionsResponse(self, request: Request) -> Response:
        response = self._reply(request, 200)
        response.add("allow", ALLOW)
        response.add("accept", "application/sdp")
        response.add("supported", ", ".join(SUPPORTED))
        return response

    def _reply(self, request: Request, code: int, reason: str = "") -> Response:
        return localResponse(request, code, reason, self.serverHeader)

    @staticmethod
    def _stampVia(request: Request, peer: Peer) -> None:
        """
        Record where the request really came from in its top Via: received
        (RFC 3261 18.2.1) and rport (RFC 3581), so responses carry it.
        Responses themselves always go back to the packet's source: for a
        NATed agent without rport that is the only address that works.

        The header text is edited in place (cheaper than writing the parsed
        Via out again); the parsed Via the request keeps is replaced by a
        changed copy.
        """
        via = request.topVia
        host, port = peer.source
        viaHost = via.host[1:-1] if via.host.startswith("[") else via.host
        rport = "rport" in via.params and via.params["rport"] is None
        if not rport and viaHost == host:
            return
        # Parsed Vias are shared (see parseVia): the request gets its own.
        via = via.copy()
        via.params["received"] = host
        if rport:
            via.params["rport"] = str(port)
        for i, (name, value) in enumerate(request.headers):
            if name == "via":
                first, rest = (value, "") if "," not in value else _firstElement(value)
                if rport:
                    first = _BARE_RPORT.sub(f";rport={port}", first, count=1)
                value = f"{first};received={host}{rest}"
                request.headers[i] = [name, value]
                # The index's first Via is that same field.
                request._lookup()["via"][0] = value
                break
        vias = request._vias
        assert vias is not None  # parsed by topVia above
        request._vias = [via, *vias[1:]]
