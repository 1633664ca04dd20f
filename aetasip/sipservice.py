"""
The SIP element: transports → transaction layer → registrar (and, later,
the proxy), hung on the service tree as L{SIPService}.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from twisted.application import service
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from aetasip import __version__, net
from aetasip.auth.step import Authentication
from aetasip.calls.call import CallObservers
from aetasip.calls.media import MediaHook
from aetasip.calls.proxy import Hop, Proxy
from aetasip.calls.settings import callSettings
from aetasip.calls.token import DialogSigner
from aetasip.domains import LocalDomains
from aetasip.keepalive import OptionsPinger
from aetasip.location import LocationService
from aetasip.registrar import SUPPORTED, Registrar
from aetasip.routing import Directory
from aetasip.routing.chain import makeRoutingChain
from aetasip.sip.client import ClientTransactionLayer
from aetasip.sip.digest import DigestAuthenticator
from aetasip.sip.errors import ParseError
from aetasip.sip.headers import splitCommas
from aetasip.sip.message import BadRequest, Request, Response, localResponse, parse
from aetasip.sip.transaction import Peer, ServerTransaction, ServerTransactionLayer
from aetasip.sip.uri import URI
from aetasip.stun.server import STUNServer
from aetasip.transport import DatagramSender, SIPDatagramProtocol, SIPStreamFactory

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
        proxy: Proxy | None = None,
        clients: ClientTransactionLayer | None = None,
    ) -> None:
        self.transactions = transactions
        self.registrar = registrar
        self.proxy = proxy
        self.clients = clients
        self.isLocalDomain = isLocalDomain
        self.serverHeader = serverHeader
        self.connections: set[Any] = set()
        self.counters = {"requests": 0, "responses": 0, "bad": 0, "dropped": 0}

    # -- from the transports ----------------------------------------------

    def connectionMade(self, connection: Any) -> None:
        self.connections.add(connection)

    def connectionLost(self, connection: Any) -> None:
        self.connections.discard(connection)

    def receive(self, data: bytes, peer: Peer, stream: bool = False) -> None:
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
        log.info("Bad request from {peer}: {status} {reason}", peer=peer, status=error.status, reason=error.reason)
        peer.send(response.toBytes())

    # -- requests ---------------------------------------------------------

    def request(self, request: Request, peer: Peer) -> None:
        self._stampVia(request, peer)
        transaction = self.transactions.receive(request, peer)
        if transaction is None:
            if self.proxy is not None and self.transactions.isStrayAck(request):
                self.proxy.statelessAck(request, peer)
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
                request.headers[i] = [name, f"{first};received={host}{rest}"]
                break
        request._index = None
        vias = request._vias
        assert vias is not None  # parsed by topVia above
        request._vias = [via, *vias[1:]]


class SIPService(service.Service):
    """
    SIP on every configured address: UDP and TCP on each of C{sip.udp_ports}
    / C{sip.tcp_ports}, TLS on C{sip.tls_port} when a certificate is set.

    Ports are bound in L{privilegedStartService} (so a bind failure stops the
    start with a clear message) and only start reading once the location
    service has restored the bindings of the last run.

    @ivar ports: the listening ports, as C{(transport, IListeningPort)}.
    """

    name = "sip"

    def __init__(
        self,
        config: Any,
        auth: Any,
        store: Any = None,
        reactor: Any = None,
        directory: Directory | None = None,
        observers: CallObservers | None = None,
        media: Any = None,
        dialogKey: bytes | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.config = config
        self.reactor = reactor
        self.domains = LocalDomains(config["sip.domains"], config["sip.listen"])
        self.digest = DigestAuthenticator(
            config["sip.realm"], config["auth.algorithms"], config["auth.nonce_lifetime"], now=reactor.seconds
        )
        self.location = LocationService(reactor, store)
        self.serverHeader = f"aetasip/{__version__}"
        self.authentication = Authentication(self.digest, auth, config["sip.realm"], self.serverHeader)
        self.registrar = Registrar(config, self.location, self.authentication, self.domains, self.serverHeader)
        self.transactions = ServerTransactionLayer(reactor)
        self.clients = ClientTransactionLayer(reactor)
        if dialogKey is None:
            configured = config["calls.dialog_key"]
            dialogKey = configured.encode() if configured is not None else os.urandom(32)
        self.proxy = Proxy(
            reactor,
            self.authentication,
            self.location,
            self.domains,
            self.clients,
            self.hopTo,
            self.hopToURI,
            self.address,
            self.serverHeader,
            self.isOurs,
            DialogSigner(dialogKey),
            makeRoutingChain(config),
            directory,
            config["routing.hunting_ring_time"],
            observers,
            MediaHook(media),
            callSettings(config),
        )
        self.core = SIPCore(
            self.transactions, self.registrar, self.domains, self.serverHeader, self.proxy, self.clients
        )
        self.ports: list[tuple[str, IListeningPort]] = []
        # What isOurs compares with, computed again when the ports change.
        self._portNumbers: frozenset[int] | None = None
        self._sentByHost: str | None = None
        self._bufferWarned = False
        self._udpByLocal: dict[tuple[str, int], SIPDatagramProtocol] = {}
        self.stunKeepalives = STUNServer(
            software=self.serverHeader, rateLimit=config["stun.rate_limit"], clock=reactor.seconds
        )
        self.pinger = OptionsPinger(
            reactor, self.location, self.udpSender, config["registrar.options_ping_interval"], self._sentBy()
        )
        # Fires when the ports read, after the bindings of the last run are restored.
        self.ready: Deferred[None] = Deferred()

    def privilegedStartService(self) -> None:
        self._listen()
        for _, port in self.ports:
            port.stopReading()  # type: ignore[attr-defined]
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.ports:
            self._listen()
            for _, port in self.ports:
                port.stopReading()  # type: ignore[attr-defined]
        super().startService()
        d = self.location.start()

        def ready(_: object) -> None:
            for _transport, port in self.ports:
                port.startReading()  # type: ignore[attr-defined]
            log.info(
                "SIP ready on {ports}; domains {domains}",
                ports=", ".join(self.describePorts()),
                domains=", ".join(self.domains),
            )

        d.addCallback(ready)
        d.addCallback(lambda _: self.pinger.start())
        d.addErrback(lambda f: log.failure("Could not restore bindings", f))
        d.addCallback(lambda _: self.ready.callback(None))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.pinger.stop()
        self.proxy.stop()
        self.transactions.stop()
        self.clients.stop()
        for connection in list(self.core.connections):
            connection.transport.loseConnection()
        stops = [maybeDeferred(port.stopListening) for _, port in self.ports]
        self.ports = []
        self._portNumbers = None
        d = gatherResults(stops)
        d.addCallback(lambda _: self.location.stop())
        return d  # type: ignore[return-value]

    def hopTo(self, binding: Any) -> Hop | None:
        """How to reach a registered agent: where its REGISTER came from."""
        if binding.transport == "udp":
            protocol = self._udpByLocal.get(binding.local)
            if protocol is None or protocol.transport is None:
                return None
            return DatagramSender(protocol, binding.source), False, "udp", binding.local
        connection = binding.connection
        if connection is None or connection not in self.core.connections:
            return None
        return connection.transport.write, True, binding.transport, binding.local

    def hopToURI(self, uri: URI) -> Hop | None:
        """
        How to reach a URI outside the bindings (in-dialog targets, whose
        Contacts we rewrote to real source addresses): on a live connection
        from that address for TCP/TLS, else by UDP from our first socket
        of its address family.
        """
        host = uri.host.strip("[]")
        port = uri.port or 5060
        transport = (uri.params.get("transport") or "udp").lower()
        if transport != "udp":
            for connection in self.core.connections:
                if connection.peer.source == (host, port):
                    return connection.transport.write, True, connection.peer.transport, connection.peer.local
            return None
        for local, protocol in self._udpByLocal.items():
            if (":" in local[0]) == (":" in host) and protocol.transport is not None:
                return DatagramSender(protocol, (host, port)), False, "udp", local
        return None

    def address(self, transport: str, local: tuple[str, int]) -> str:
        """Our host:port for a socket, as in Via and Record-Route."""
        return f"{self._sentBy()}:{local[1]}"

    def isOurs(self, uri: URI) -> bool:
        """Does a Route URI name this service (one of its names and ports)?"""
        return self.domains(uri.host) and (uri.port or 5060) in self._ourPorts() and uri.user is None

    def _ourPorts(self) -> frozenset[int]:
        """The configured SIP ports and those really bound (port 0 gets one)."""
        ports = self._portNumbers
        if ports is None:
            config = self.config
            numbers = {*config["sip.udp_ports"], *config["sip.tcp_ports"], config["sip.tls_port"]}
            numbers.update(port.getHost().port for _, port in self.ports)  # type: ignore[attr-defined]
            ports = self._portNumbers = frozenset(numbers)
        return ports

    def udpSender(self, local: tuple[str, int]) -> Any:
        """The function sending a datagram from our UDP socket C{local}, or C{None}."""
        protocol = self._udpByLocal.get(local)
        if protocol is None or protocol.transport is None:
            return None
        return protocol.sendTo

    def _sentBy(self) -> str:
        """
        Our host for the Via of requests we send: a configured name first,
        else a listen address, else the machine's name (looked up once).
        """
        if self._sentByHost is None:
            for candidate in [*self.config["sip.domains"], *self.config["sip.listen"]]:
                if candidate not in net.WILDCARDS:
                    self._sentByHost = f"[{candidate}]" if ":" in candidate else str(candidate)
                    break
            else:
                self._sentByHost = socket.getfqdn()
        return self._sentByHost

    def describePorts(self) -> list[str]:
        out = []
        for transport, port in self.ports:
            address: Any = port.getHost()
            host = f"[{address.host}]" if ":" in address.host else address.host
            out.append(f"{transport}:{host}:{address.port}")
        return out

    def _listen(self) -> None:
        self._portNumbers = None
        config = self.config
        maxSize = config["sip.max_message_size"]
        idle = config["sip.tcp_idle_timeout"]
        tls = self._tlsOptions()
        for address in config["sip.listen"]:
            try:
                for portNumber in config["sip.udp_ports"]:
                    protocol = SIPDatagramProtocol(self.core, (address, portNumber), maxSize, self.stunKeepalives)
                    port = net.listenUDP(
                        self.reactor, address, portNumber, protocol, maxSize, config["sip.udp_buffer_size"]
                    )
                    self._checkBuffer(port, config["sip.udp_buffer_size"])
                    protocol.local = (address, port.getHost().port)  # type: ignore[attr-defined]
                    self._udpByLocal[protocol.local] = protocol
                    self.ports.append(("udp", port))
                for portNumber in config["sip.tcp_ports"]:
                    self._listenStream("tcp", address, portNumber, maxSize, idle, None)
                if tls is not None:
                    self._listenStream("tls", address, config["sip.tls_port"], maxSize, idle, tls)
            except CannotListenError as e:
                if net.unavailableWildcard(address, e):
                    log.warn("No IPv6 on this host: not listening on [::]")
                    continue
                for _, port in self.ports:
                    port.stopListening()
                self.ports = []
                raise SystemExit(f"aetasip: cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}") from None

    def _checkBuffer(self, port: Any, wanted: int) -> None:
        """Say so, once, when the kernel gave a SIP UDP socket less buffer than configured."""
        sock = getattr(port, "socket", None)
        if sock is None or self._bufferWarned:
            return
        # Linux reports twice the size it granted (its bookkeeping included).
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        if granted < wanted:
            self._bufferWarned = True
            log.warn(
                "SIP UDP sockets have {granted}-byte receive buffers, not the {wanted} of sip.udp_buffer_size: "
                "raise net.core.rmem_max and wmem_max (etc/60-aetasip.conf)",
                granted=granted,
                wanted=wanted,
            )

    def _listenStream(self, name: str, address: str, portNumber: int, maxSize: int, idle: int, tls: Any) -> None:
        factory = SIPStreamFactory(self.core, name, (address, portNumber), maxSize, idle)
        wrapped = factory if tls is None else TLSMemoryBIOFactory(tls, False, factory)
        port = net.listenTCP(self.reactor, address, portNumber, wrapped)
        factory.local = (address, port.getHost().port)  # type: ignore[attr-defined]
        self.ports.append((name, port))

    def _tlsOptions(self) -> Any:
        certificate = self.config["sip.tls_certificate"]
        if certificate is None:
            return None
        keyFile = self.config["sip.tls_key"] or certificate
        try:
            with open(certificate) as f:
                pem = f.read()
            if keyFile != certificate:
                with open(keyFile) as f:
                    pem += "\n" + f.read()
            return ssl.PrivateCertificate.loadPEM(pem).options()
        except Exception as e:
            raise SystemExit(f"aetasip: cannot load the TLS certificate {certificate} and key {keyFile}: {e}") from None
