"""
The SIP transports and transaction layers, hung on the service tree as
L{SIPService}: UDP, TCP and TLS ports feeding the L{SIPCore}, which hands
requests to the registrar and the proxy that L{aetasip.tap} builds and
attaches.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from aetasip import net
from aetasip.calls.proxy import Hop
from aetasip.config import Key, declare, hostname, integer, ipAddress, listOf, optional, readableFile, text
from aetasip.config import port as portNumber
from aetasip.domains import LocalDomains
from aetasip.element.core import SIPCore
from aetasip.keepalive import OptionsPinger
from aetasip.location import LocationService
from aetasip.sip.client import ClientTransactionLayer
from aetasip.sip.transaction import ServerTransactionLayer
from aetasip.sip.uri import URI
from aetasip.stun.server import STUNServer
from aetasip.transport import DatagramSender, SIPDatagramProtocol, SIPStreamFactory, StreamLimits, StreamSettings

log = Logger()


def _defaultServerName() -> str:
    return socket.gethostname() or "aetasip"


declare(
    Key(
        "server.name",
        _defaultServerName(),
        text,
        "Name of this server in logs, events and the User-Agent/Server header.",
    ),
    # SIP transports
    Key(
        "sip.listen",
        ["0.0.0.0", "::"],
        listOf(ipAddress, "IP addresses", allowEmpty=False),
        "Addresses SIP listens on. '::' (all IPv6 addresses) is skipped with a warning on hosts without IPv6.",
    ),
    Key(
        "sip.udp_ports",
        [5060, 5070],
        listOf(portNumber, "port numbers"),
        "UDP ports (5070 is the alternate port for routers that mangle 5060).",
    ),
    Key("sip.tcp_ports", [5060, 5070], listOf(portNumber, "port numbers"), "TCP ports."),
    Key("sip.tls_port", 5061, portNumber, "TLS port, used only when sip.tls_certificate is set."),
    Key("sip.tls_certificate", None, optional(readableFile), "PEM file with the certificate chain for SIP over TLS."),
    Key(
        "sip.tls_key",
        None,
        optional(readableFile),
        "PEM file with the private key (defaults to the certificate file).",
    ),
    Key(
        "sip.domains",
        [],
        listOf(hostname, "host names or IP addresses"),
        "Domain names and addresses this service answers for, all one user space. The machine's own names and listen addresses are always added.",
    ),
    Key(
        "sip.realm",
        "aetasip",
        text,
        "Digest realm. Changing it invalidates every stored HA1: set it once, before adding accounts.",
    ),
    Key("sip.max_message_size", 65535, integer(1024, 1048576), "Largest SIP message accepted, in bytes."),
    Key(
        "sip.udp_buffer_size",
        4194304,
        integer(65536, 268435456),
        "Receive and send buffer of each SIP UDP socket, in bytes: room for the datagrams that arrive while "
        "the server is busy, instead of losing them to retransmissions. Above net.core.rmem_max it is forced "
        "when aetasip has CAP_NET_ADMIN (root outside a container), else capped by the kernel.",
    ),
    Key(
        "sip.tcp_idle_timeout",
        3600,
        integer(10, 86400),
        "Seconds after which a TCP/TLS connection that carries a binding is closed when it sends nothing "
        "(no message, no keep-alive).",
    ),
    Key(
        "sip.tcp_unbound_timeout",
        120,
        integer(5, 86400),
        "The same for a connection that carries no binding (no REGISTER made one over it). Bytes of an "
        "unfinished message do not count as activity.",
    ),
    Key(
        "sip.tcp_message_timeout",
        10,
        integer(1, 600),
        "Seconds a peer may take from the first byte of a message to its last; a slower one is closed (slowloris).",
    ),
    Key(
        "sip.tcp_max_connections",
        10000,
        integer(1, 1_000_000),
        "Most TCP/TLS connections open at once, all ports together; more are closed at once. Keep it below "
        "the unit's LimitNOFILE.",
    ),
    Key(
        "sip.tcp_max_per_source",
        100,
        integer(1, 1_000_000),
        "Most TCP/TLS connections open at once from one source address (an IPv6 /64).",
    ),
    Key(
        "sip.tcp_max_backlog",
        1048576,
        integer(65536, 1 << 30),
        "Bytes waiting for a peer that stopped reading beyond which its connection is closed (reading from it "
        "stops as soon as the send buffer is full).",
    ),
)


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
        self, config: Any, location: LocationService, domains: LocalDomains, serverHeader: str, reactor: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.config = config
        self.reactor = reactor
        self.domains = domains
        self.location = location
        self.serverHeader = serverHeader
        self.transactions = ServerTransactionLayer(reactor)
        self.clients = ClientTransactionLayer(reactor)
        # The transaction users, handed in by whoever builds the tree
        # (aetasip.sipelement.makeSIPService): see attach().
        self.core: SIPCore = None  # type: ignore[assignment]
        self.registrar: Any = None
        self.proxy: Any = None
        self.ports: list[tuple[str, IListeningPort]] = []
        # What isOurs compares with, computed again when the ports change.
        self._portNumbers: frozenset[int] | None = None
        self._sentByHost: str | None = None
        self._bufferWarned = False
        self._udpByLocal: dict[tuple[str, int], SIPDatagramProtocol] = {}
        # A loopback UDP socket for the service's own agents, when SIP has no UDP socket.
        self._loopback: Any = None
        self.stunKeepalives = STUNServer(
            software=self.serverHeader, rateLimit=config["stun.rate_limit"], clock=reactor.seconds
        )
        self.pinger = OptionsPinger(
            reactor, self.location, self.udpSender, config["registrar.options_ping_interval"], self._sentBy()
        )
        self.streamSettings = StreamSettings(
            maxSize=config["sip.max_message_size"],
            idleTimeout=config["sip.tcp_idle_timeout"],
            unboundTimeout=config["sip.tcp_unbound_timeout"],
            messageTimeout=config["sip.tcp_message_timeout"],
            maxBacklog=config["sip.tcp_max_backlog"],
            limits=StreamLimits(config["sip.tcp_max_connections"], config["sip.tcp_max_per_source"]),
            clock=reactor,
        )
        # Fires when the ports read, after the bindings of the last run are restored.
        self.ready: Deferred[None] = Deferred()

    def attach(self, core: SIPCore, registrar: Any, proxy: Any) -> None:
        """The transaction users the transports feed: before the service starts."""
        self.core = core
        self.registrar = registrar
        self.proxy = proxy

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
        listened = ", ".join(self.describePorts())
        self.pinger.stop()
        self.transactions.stop()
        self.clients.stop()
        for connection in list(self.core.connections.values()):
            connection.transport.loseConnection()
        stops = [maybeDeferred(port.stopListening) for _, port in self.ports]
        self.ports = []
        if self._loopback is not None:
            loopback, self._loopback = self._loopback, None
            self._udpByLocal = {k: v for k, v in self._udpByLocal.items() if v.transport is not loopback}
            stops.append(maybeDeferred(loopback.stopListening))
        self._portNumbers = None
        d = gatherResults(stops)
        d.addCallback(lambda _: self.location.stop())
        d.addCallback(lambda _: log.info("SIP stopped on {ports}", ports=listened))
        return d  # type: ignore[return-value]

    def hopTo(self, binding: Any) -> Hop | None:
        """How to reach a registered agent: where its REGISTER came from."""
        if binding.transport == "udp":
            protocol = self._udpByLocal.get(binding.local)
            if protocol is None or protocol.transport is None:
                return None
            return DatagramSender(protocol, binding.source), False, "udp", binding.local
        connection: Any = binding.connection
        if connection is None:
            return None
        write = connection.write
        if self.core.connections.get(connection.source) is not connection:
            return None
        return write, True, binding.transport, binding.local

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
            connection: Any = self.core.connections.get((host, port))
            if connection is None:
                return None
            return connection.write, True, connection.peer.transport, connection.peer.local
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
            if self._loopback is not None:
                numbers.add(self._loopback.getHost().port)
            ports = self._portNumbers = frozenset(numbers)
        return ports

    def udpLocals(self) -> list[tuple[str, int]]:
        """Our UDP sockets' C{(address, port)}, as bound (with the real port of port 0)."""
        return list(self._udpByLocal)

    def loopbackUDP(self) -> tuple[str, int] | None:
        """
        A UDP socket of SIP on loopback (an ephemeral port), for the
        service's own agents (the test line) when SIP has no UDP socket of
        its own (a service on TCP and TLS only): opened on first use,
        closed with the service. Like any SIP socket, it is the proxy's:
        what comes in is routed and answered as usual.

        @return: its C{(address, port)}, or C{None} when no loopback
            address can be bound.
        """
        if self._loopback is None:
            maxSize = self.config["sip.max_message_size"]
            for host in ("127.0.0.1", "::1"):
                protocol = SIPDatagramProtocol(self.core, (host, 0), maxSize, self.stunKeepalives)
                try:
                    port = self.reactor.listenUDP(0, protocol, interface=host, maxPacketSize=maxSize)
                except CannotListenError:
                    continue
                protocol.local = (host, port.getHost().port)  # type: ignore[attr-defined]
                self._udpByLocal[protocol.local] = protocol
                self._loopback = port
                self._portNumbers = None
                log.info(
                    "SIP on {host}:{port} (UDP, loopback) for the service's own agents",
                    host=host,
                    port=protocol.local[1],
                )
                break
            else:
                return None
        return (self._loopback.getHost().host, self._loopback.getHost().port)

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
        streams = self.streamSettings
        tls = self._tlsOptions()
        for address in config["sip.listen"]:
            # The floating address of a cluster is bound on every server, held or not.
            freebind = address == config["cluster.address"]
            try:
                for portNumber in config["sip.udp_ports"]:
                    protocol = SIPDatagramProtocol(self.core, (address, portNumber), maxSize, self.stunKeepalives)
                    port = net.listenUDP(
                        self.reactor, address, portNumber, protocol, maxSize, config["sip.udp_buffer_size"], freebind
                    )
                    self._checkBuffer(port, config["sip.udp_buffer_size"])
                    protocol.local = (address, port.getHost().port)  # type: ignore[attr-defined]
                    self._udpByLocal[protocol.local] = protocol
                    self.ports.append(("udp", port))
                for portNumber in config["sip.tcp_ports"]:
                    self._listenStream("tcp", address, portNumber, streams, None, freebind)
                if tls is not None:
                    self._listenStream("tls", address, config["sip.tls_port"], streams, tls, freebind)
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

    def _listenStream(
        self, name: str, address: str, portNumber: int, settings: StreamSettings, tls: Any, freebind: bool = False
    ) -> None:
        factory = SIPStreamFactory(self.core, name, (address, portNumber), settings)
        wrapped = factory if tls is None else TLSMemoryBIOFactory(tls, False, factory)
        port = net.listenTCP(self.reactor, address, portNumber, wrapped, freebind)
        factory.local = (address, port.getHost().port)  # type: ignore[attr-defined]
        self.ports.append((name, port))

    def _tlsOptions(self) -> Any:
        certificate = self.config["sip.tls_certificate"]
        if certificate is None:
            return None
        return net.tlsServerOptions(certificate, self.config["sip.tls_key"], "TLS")
