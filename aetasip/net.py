"""
Listening sockets: IPv4 and IPv6 side by side on the same port.

A wildcard IPv6 socket ('::') would also take IPv4 traffic on Linux and
clash with '0.0.0.0'; so sockets are made here with IPV6_V6ONLY set, and
handed to the reactor with C{adoptDatagramPort} / C{adoptStreamPort}.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

from twisted.internet import ssl
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

WILDCARDS = ("0.0.0.0", "::")
# Linux options that set a buffer past net.core.rmem_max / wmem_max (CAP_NET_ADMIN).
_SO_RCVBUFFORCE: int | None = getattr(socket, "SO_RCVBUFFORCE", None)
_SO_SNDBUFFORCE: int | None = getattr(socket, "SO_SNDBUFFORCE", None)
# Linux options binding an address not (yet) on an interface: the floating
# address of a cluster, held by another server until keepalived moves it.
IP_FREEBIND = 15
IPV6_FREEBIND = 78


def family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def hasIPv6() -> bool:
    """Can this host bind an IPv6 socket at all?"""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _socket(address: str, port: int, kind: socket.SocketKind, freebind: bool = False) -> socket.socket:
    fam = family(address)
    sock = socket.socket(fam, kind)
    try:
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if freebind:
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise CannotListenError(address, port, e) from None
    return sock


def setBufferSizes(sock: socket.socket, size: int) -> tuple[int, int]:
    """
    Ask for C{size}-byte receive and send buffers on C{sock}: forced past
    the kernel's maximum (net.core.rmem_max / wmem_max) when the process may
    (CAP_NET_ADMIN), else as much as the maximum allows.

    @return: the (receive, send) sizes the kernel granted (Linux reports
        twice what it books for its own overhead).
    """
    for forced, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            if forced is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, forced, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def listenUDP(
    reactor: Any,
    address: str,
    port: int,
    protocol: Any,
    maxPacketSize: int = 65535,
    bufferSize: int | None = None,
    freebind: bool = False,
) -> IListeningPort:
    """
    Bind a UDP socket on C{address}:C{port} for C{protocol}, with
    C{bufferSize}-byte buffers when given (see L{setBufferSizes}).

    @param freebind: bind C{address} even when it is not on an interface
        (Linux C{IP_FREEBIND}): datagrams sent from the socket leave from it.
    """
    sock = _socket(address, port, socket.SOCK_DGRAM, freebind)
    try:
        if bufferSize is not None:
            setBufferSizes(sock, bufferSize)
        listening = reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, maxPacketSize)
    finally:
        sock.close()  # the reactor holds its own duplicate
    return listening  # type: ignore[no-any-return]


def listenTCP(reactor: Any, address: str, port: int, factory: Any, freebind: bool = False) -> IListeningPort:
    """Bind a listening TCP socket on C{address}:C{port} for C{factory} (see L{listenUDP} for C{freebind})."""
    sock = _socket(address, port, socket.SOCK_STREAM, freebind)
    try:
        listening = reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()
    return listening  # type: ignore[no-any-return]


def unavailableWildcard(address: str, error: CannotListenError) -> bool:
    """
    Is C{error} the failure to bind the IPv6 wildcard on a host without
    IPv6, which is skipped with a warning rather than stopping the start?
    """
    reason = getattr(error.socketError, "errno", None)
    return address == "::" and reason in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def sourceGroup(host: str) -> str:
    """
    What counts as one source for limits and bans: an IPv4 address, or the
    /64 of an IPv6 address (one host or one site holds a whole /64, and can
    pick any address in it). Other text (a test's host name) as it is.
    """
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.strip("[]").partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


def tlsServerOptions(certificate: str, key: str | None, what: str) -> Any:
    """
    The TLS server options of C{certificate} (a PEM file, with the key
    unless C{key} names another one).

    @param what: how the error names the certificate ("TLS", "web").
    @raise SystemExit: with one line when they cannot be read.
    """
    keyFile = key or certificate
    try:
        with open(certificate) as f:
            pem = f.read()
        if keyFile != certificate:
            with open(keyFile) as f:
                pem += "\n" + f.read()
        return ssl.PrivateCertificate.loadPEM(pem).options()
    except Exception as e:
        raise SystemExit(f"aetasip: cannot load the {what} certificate {certificate} and key {keyFile}: {e}") from None
