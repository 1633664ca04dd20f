"""
The STUN server as a Twisted service: UDP and TCP sockets on every
C{stun.listen} address, on C{stun.port} and, when configured, on the
alternate port and address of RFC 5780, feeding L{STUNServer}.

The sockets are made here rather than by C{listenUDP}/C{listenTCP} so that
an IPv6 socket is IPV6_V6ONLY (it then shares its port with 0.0.0.0), and
then adopted by the reactor. UDP responses are sent with C{sendto} on the
socket itself: the request handler names the socket (CHANGE-REQUEST may ask
for another one), and it skips per-datagram address checks that
L{twisted.internet.udp.Port.write} makes.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from aetasip import __version__
from aetasip.config import Config, ConfigError, Key, boolean, declare, integer, ipAddress, listOf, optional
from aetasip.config import port as portNumber  # 'port' names the sockets below
from aetasip.stun import codec
from aetasip.stun.server import (
    ALTERNATE_ADDRESS,
    ALTERNATE_BOTH,
    ALTERNATE_PORT,
    PRIMARY,
    Address,
    Counters,
    Endpoint,
    STUNServer,
)

log = Logger()

# The stun.* configuration keys (documented in tap-config.py too).
declare(
    Key("stun.enabled", True, boolean, "Run the STUN server."),
    Key(
        "stun.listen",
        ["0.0.0.0", "::"],
        listOf(ipAddress, "IP addresses", allowEmpty=False),
        "Addresses the STUN server listens on.",
    ),
    Key("stun.port", 3478, portNumber, "STUN port, UDP and TCP."),
    Key(
        "stun.alternate_port", None, optional(portNumber), "Second STUN port: enables RFC 5780 NAT behaviour discovery."
    ),
    Key(
        "stun.alternate_address",
        None,
        optional(ipAddress),
        "Second address for RFC 5780 (CHANGE-REQUEST change-IP).",
    ),
    Key("stun.rate_limit", 50, integer(0, 1000000), "Requests per second answered per source address (0: no limit)."),
)

TCP_IDLE_TIMEOUT = 300
"""
Seconds after which a TCP connection that sent nothing is closed: longer
than any keep-alive interval of a client that keeps its connection open.
"""

MAX_DATAGRAM = 4096
"""
Largest datagram read: a STUN message over UDP stays below the path MTU
(RFC 8489 section 6.2.1); a longer one arrives truncated and is dropped.
"""

_SOCKET_BUFFER = 4 * 1024 * 1024
_EPHEMERAL_ATTEMPTS = 20
_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})


def socketSets(config: Config) -> list[dict[int, str]]:
    """
    The sockets to open, as one dict per C{stun.listen} address mapping each
    role (see L{aetasip.stun.server}) to the host to bind.

    The alternate address pairs with the first listen address of its family
    that is not a wildcard: OTHER-ADDRESS must name the real primary
    address, which a wildcard socket does not know.

    @raise ConfigError: when the alternate port or address clash with the
        primary ones, or the alternate address has no address to pair with.
    """
    listen = list(dict.fromkeys(config["stun.listen"]))
    port = config["stun.port"]
    alternatePort = config["stun.alternate_port"]
    alternateAddress = config["stun.alternate_address"]
    if alternatePort is not None and port != 0 and alternatePort == port:
        raise ConfigError("stun.alternate_port", alternatePort, "a port other than stun.port")
    paired = None
    if alternateAddress is not None:
        if alternateAddress in listen:
            raise ConfigError("stun.alternate_address", alternateAddress, "an address that is not in stun.listen")
        version = ipaddress.ip_address(alternateAddress).version
        candidates = [
            host
            for host in listen
            if ipaddress.ip_address(host).version == version and not ipaddress.ip_address(host).is_unspecified
        ]
        if not candidates:
            raise ConfigError(
                "stun.alternate_address",
                alternateAddress,
                f"an address used with a specific (not wildcard) IPv{version} address in stun.listen",
            )
        paired = candidates[0]
    sets = []
    for host in listen:
        roles = {PRIMARY: host}
        if alternatePort is not None:
            roles[ALTERNATE_PORT] = host
        if host == paired:
            roles[ALTERNATE_ADDRESS] = alternateAddress
            if alternatePort is not None:
                roles[ALTERNATE_BOTH] = alternateAddress
        sets.append(roles)
    return sets


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _openSocket(host: str, port: int, stream: bool) -> socket.socket:
    """
    A non-blocking socket bound to (C{host}, C{port}), listening if
    C{stream}.
    """
    family = _family(host)
    sock = socket.socket(family, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if stream:
            # Restart while old connections linger in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            # A fleet's keep-alives arrive in bursts; the kernel caps these at
            # net.core.rmem_max / wmem_max, which is fine.
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.setblocking(False)
        sock.bind((host, port))
        if stream:
            sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def _hasIPv6() -> bool:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", 0))
    except OSError as e:
        if e.errno in _NO_IPV6:
            return False
        raise
    finally:
        sock.close()
    return True


class _BoundSet(NamedTuple):
    """
    The sockets bound for one listen address, by role.
    """

    addresses: dict[int, Address]
    udp: dict[int, socket.socket]
    tcp: dict[int, socket.socket]


class _DatagramHandler(DatagramProtocol):
    """
    Feeds the datagrams of one UDP socket to the server and sends the
    responses from the socket it names.
    """

    noisy = False  # the service logs its start and stop once, not each socket

    def __init__(
        self,
        server: STUNServer,
        endpoint: Endpoint,
        sockets: dict[int, socket.socket],
    ) -> None:
        self._datagram = server.datagram
        self._counters = server.counters
        self._endpoint = endpoint
        self._sockets = sockets

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            reply = self._datagram(data, addr, self._endpoint)
            if reply is not None:
                self._sockets[reply[2]].sendto(reply[0], reply[1])
        except OSError:
            # Full send buffer, unreachable destination, a firewall: the
            # client retransmits.
            self._counters.sendFailures += 1
        except Exception:
            log.failure("STUN datagram from {source} not handled", source=addr)


class _StreamHandler(Protocol, TimeoutMixin):
    """
    One TCP connection: messages framed by their length (RFC 8489 section
    6.2.2), each answered on the connection.
    """

    def __init__(self, factory: _StreamFactory) -> None:
        self._factory = factory
        self._buffer = bytearray()
        self._source: Address = ("", 0)
        self._endpoint: Endpoint | None = None
        self.lost: Deferred[None] = Deferred()

    def callLater(self, period: float, func: Callable[[], object]) -> Any:
        return self._factory.reactor.callLater(period, func)

    def connectionMade(self) -> None:
        factory = self._factory
        factory.connections.add(self)
        factory.server.counters.tcpConnections += 1
        peer: Any = self.transport.getPeer()  # type: ignore[union-attr]
        host: Any = self.transport.getHost()  # type: ignore[union-attr]
        self._source = (peer.host, peer.port)
        self._endpoint = factory.server.endpoint(
            factory.role, factory.addresses, local=(host.host, host.port), stream=True
        )
        self.setTimeout(TCP_IDLE_TIMEOUT)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        buffer = self._buffer
        buffer += data
        server = self._factory.server
        try:
            while len(buffer) >= codec.HEADER_LENGTH:
                size = codec.streamFrameLength(buffer)
                if len(buffer) < size:
                    return
                message = bytes(buffer[:size])
                del buffer[:size]
                assert self._endpoint is not None
                response = server.stream(message, self._source, self._endpoint)
                if response is not None:
                    self.transport.write(response)  # type: ignore[union-attr]
        except codec.NotSTUN:
            # No way to find the next message boundary in a stream.
            server.counters.notSTUN += 1
            buffer.clear()
            self.transport.abortConnection()  # type: ignore[union-attr]
        except Exception:
            log.failure("STUN stream from {source} not handled", source=self._source)
            buffer.clear()
            self.transport.abortConnection()  # type: ignore[union-attr]

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.setTimeout(None)
        self._factory.connections.discard(self)
        self.lost.callback(None)


class _StreamFactory(Factory):
    noisy = False

    def __init__(self, server: STUNServer, role: int, addresses: dict[int, Address], reactor: Any) -> None:
        self.server = server
        self.role = role
        self.addresses = addresses
        self.reactor = reactor
        self.connections: set[_StreamHandler] = set()

    def buildProtocol(self, addr: IAddress | None) -> _StreamHandler:
        return _StreamHandler(self)


class STUNService(Service):
    """
    The STUN server (RFC 8489 Binding, RFC 5780 NAT behaviour discovery) on
    UDP and TCP.

    @ivar server: the L{STUNServer} answering requests.
    @ivar counters: its L{Counters}, for metrics.
    @ivar ports: the reactor's listening ports, UDP and TCP, while running.
    @ivar primaryPort: the bound primary port while running (the real one
        when C{stun.port} is 0).
    @ivar alternatePort: the bound alternate port while running, or L{None}.
    """

    name = "stun"

    def __init__(self, config: Config, reactor: Any = None) -> None:
        """
        @raise ConfigError: for an alternate port or address that cannot
            work (see L{socketSets}).
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor = reactor
        self._config = config
        self._sets = socketSets(config)
        self.server = STUNServer(
            software=f"aetasip/{__version__}",
            rateLimit=config["stun.rate_limit"],
            clock=reactor.seconds,
        )
        self.counters: Counters = self.server.counters
        self.ports: list[IListeningPort] = []
        self.primaryPort: int | None = None
        self.alternatePort: int | None = None
        self._sockets: list[socket.socket] = []
        self._factories: list[_StreamFactory] = []

    def privilegedStartService(self) -> None:
        """
        Bind before the reactor runs (twistd), so that a port in use stops
        the start with one line.
        """
        try:
            self._listen()
        except CannotListenError as e:
            raise SystemExit(
                f"aetasip: cannot listen for STUN on {e.interface or '*'}:{e.port}: {e.socketError}"
            ) from None
        Service.privilegedStartService(self)

    def startService(self) -> None:
        """
        Bind every socket (unless L{privilegedStartService} did), then start
        reading them.

        @raise CannotListenError: when an address or port cannot be bound.
        """
        if not self.ports:
            self._listen()
        Service.startService(self)

    def _listen(self) -> None:
        sets = self._usableSets()
        bound, ports = self._bindAll(sets)
        self.primaryPort = ports[PRIMARY]
        self.alternatePort = ports[ALTERNATE_PORT] if self._config["stun.alternate_port"] is not None else None
        try:
            self._adopt(bound)
        except BaseException:
            for port in self.ports:
                port.stopListening()
            self.ports = []
            self._factories = []
            self._sockets = []
            for _, udp, tcp in bound:
                for sock in (*udp.values(), *tcp.values()):
                    sock.close()
            raise
        log.info(
            "STUN listening on {addresses} (UDP and TCP)",
            addresses=", ".join(
                f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self._bound()
            ),
        )

    def stopService(self) -> Deferred[object]:
        """
        Stop listening and close the TCP connections.
        """
        Service.stopService(self)
        waiting: list[Deferred[Any]] = [maybeDeferred(port.stopListening) for port in self.ports]
        for factory in self._factories:
            for connection in list(factory.connections):
                waiting.append(connection.lost)
                connection.transport.abortConnection()  # type: ignore[union-attr]
        self.ports = []
        self._factories = []

        def closeSockets(result: object) -> object:
            for sock in self._sockets:
                sock.close()
            self._sockets = []
            log.info("STUN stopped")
            return result

        return DeferredList(waiting, consumeErrors=True).addBoth(closeSockets)

    def _bound(self) -> Iterable[tuple[str, int]]:
        for port in self.ports:
            address = port.getHost()
            if address.type == "UDP":  # type: ignore[attr-defined]
                yield address.host, address.port  # type: ignore[attr-defined]

    def _usableSets(self) -> list[dict[int, str]]:
        sets = []
        for roles in self._sets:
            if roles[PRIMARY] == "::" and not _hasIPv6():
                log.warn("STUN: no IPv6 on this host; not listening on [::]")
                continue
            sets.append(roles)
        return sets

    def _bindAll(self, sets: list[dict[int, str]]) -> tuple[list[_BoundSet], dict[int, int]]:
        """
        Bind a UDP and a TCP socket for every role of every set.

        A configured port 0 is chosen by the first bind and reused by the
        others; when another socket holds that number already, all is
        closed and tried again with a new one.

        @return: the sockets of every set, and the bound port numbers by
            port role (L{PRIMARY}, L{ALTERNATE_PORT}).
        """
        primary = self._config["stun.port"]
        alternate = self._config["stun.alternate_port"]
        ephemeral = primary == 0 or alternate == 0
        # With an ephemeral primary port the alternate is ephemeral as well:
        # a fixed one could not be known to be free beside it.
        configured = {PRIMARY: primary, ALTERNATE_PORT: 0 if primary == 0 or alternate is None else alternate}
        for attempt in range(_EPHEMERAL_ATTEMPTS):
            ports = dict(configured)
            opened: list[socket.socket] = []
            bound: list[_BoundSet] = []
            try:
                for roles in sets:
                    addresses: dict[int, Address] = {}
                    udp: dict[int, socket.socket] = {}
                    tcp: dict[int, socket.socket] = {}
                    for role, host in roles.items():
                        which = role & ALTERNATE_PORT
                        for stream, table in ((False, udp), (True, tcp)):
                            try:
                                sock = _openSocket(host, ports[which], stream)
                            except OSError as e:
                                raise CannotListenError(host, ports[which], e) from e
                            opened.append(sock)
                            table[role] = sock
                            ports[which] = sock.getsockname()[1]
                        addresses[role] = (host, ports[which])
                    bound.append(_BoundSet(addresses, udp, tcp))
                return bound, ports
            except CannotListenError as e:
                for sock in opened:
                    sock.close()
                if ephemeral and e.socketError.errno == errno.EADDRINUSE and attempt + 1 < _EPHEMERAL_ATTEMPTS:
                    continue
                raise
        raise AssertionError("unreachable")

    def _adopt(self, bound: list[_BoundSet]) -> None:
        reactor = self._reactor
        for addresses, udp, tcp in bound:
            for role, sock in udp.items():
                endpoint = self.server.endpoint(role, addresses)
                protocol = _DatagramHandler(self.server, endpoint, udp)
                self.ports.append(reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, MAX_DATAGRAM))
                # The reactor reads a duplicate of the descriptor; responses
                # go out on this one, closed once the port has stopped.
                self._sockets.append(sock)
            for role, sock in tcp.items():
                factory = _StreamFactory(self.server, role, addresses, reactor)
                self.ports.append(reactor.adoptStreamPort(sock.fileno(), sock.family, factory))
                self._factories.append(factory)
                sock.close()
