"""
L{TestLineService}: the test line's agent on a loopback UDP socket of
its own, reached by the proxy like a registered agent. The service adds
a binding of each line's number to the location service
(L{LocationService.addStatic}: never expired, stored nor announced) and
the numbers to routing's directory as accounts of kind C{test}
(L{LinesDirectory}), so calls to them go through routing (blocking's
exemption of the test number), the call records and the relay as any
call does; nothing reaches into the proxy.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from aetasip.location import Binding, LocationService
from aetasip.routing import Account, Directory, Group
from aetasip.testline.agent import LineAgent
from aetasip.testline.media import Address
from aetasip.testline.session import LineSettings

log = Logger()

ACCOUNT_KIND = "test"


class LinesDirectory:
    """
    A L{Directory} that also knows the test lines' numbers, as accounts of
    kind C{test} (an account of the store with the same number wins: both
    ring). Either way the number is marked as a test line of the service
    (L{Account.testLine}), which outgoing-call blocking lets through, as it
    does the test number.
    """

    def __init__(self, below: Directory, numbers: list[str]) -> None:
        self.below = below
        self.numbers = {number: Account(number, ACCOUNT_KIND, testLine=True) for number in numbers}

    def account(self, number: str) -> Account | None:
        known = self.below.account(number)
        if known is None:
            return self.numbers.get(number)
        if number in self.numbers and not known.testLine:
            return attrs.evolve(known, testLine=True)
        return known

    def group(self, prefix: str) -> Group | None:
        return self.below.group(prefix)

    def huntingSeries(self, prefix: str) -> list[str]:
        return self.below.huntingSeries(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.below, name)


class _Datagrams(DatagramProtocol):
    noisy = False  # a port per session: no start and stop lines in the log

    def __init__(self, receive: Any) -> None:
        self.receive = receive

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.receive(datagram, (addr[0], addr[1]))


class _MediaPort:
    """One session's RTP port (see L{aetasip.testline.session.MediaPort})."""

    def __init__(self, reactor: Any, address: str, receive: Any) -> None:
        self.protocol = _Datagrams(receive)
        self.listening = reactor.listenUDP(0, self.protocol, interface=address)
        self.port: int = self.listening.getHost().port
        self.failed = False

    def send(self, datagram: bytes, address: Address) -> None:
        if self.protocol.transport is not None:
            try:
                self.protocol.transport.write(datagram, address)
            except OSError as e:
                if not self.failed:  # once per session: 50 packets a second would flood the log
                    self.failed = True
                    log.warn("Test line RTP to {address} failed: {error}", address=address, error=e)

    def close(self) -> None:
        self.listening.stopListening()


class TestLineService(service.Service):
    """
    Runs the L{LineAgent} while the service runs.

    @param sip: the L{aetasip.sipservice.SIPService}, started before this
        service (its UDP sockets are bound): the agent is reached from one
        of them.
    """

    name = "testline"

    def __init__(
        self, reactor: Any, sip: Any, location: LocationService, settings: LineSettings, mediaAddress: str
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.sip = sip
        self.location = location
        self.settings = settings
        self.mediaAddress = mediaAddress
        self.agent: LineAgent | None = None
        self._listening: Any = None
        self._bindings: list[Binding] = []

    def _proxySocket(self) -> tuple[str, int] | None:
        """
        The proxy's UDP socket the agent talks to: IPv4 loopback or
        wildcard first; on a service without UDP (TCP and TLS only) a
        loopback socket SIP opens for it. Callers on any transport reach
        the line through the proxy, which answers them on their own
        connections.
        """
        locals_ = self.sip.udpLocals()
        for wanted in ("127.0.0.1", "0.0.0.0", "::1", "::"):
            for local in locals_:
                if local[0] == wanted:
                    return local  # type: ignore[no-any-return]
        if locals_:
            return locals_[0]  # type: ignore[no-any-return]
        return self.sip.loopbackUDP()  # type: ignore[no-any-return]

    def startService(self) -> None:
        super().startService()
        local = self._proxySocket()
        if local is None:
            log.error("Test line off: SIP has no UDP socket to reach it from, and no loopback address to open one on")
            return
        # Loopback when the proxy listens on every address; else its own address (a local one).
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(local[0], local[0])
        self._proxyHost = host
        self._proxyPort = local[1]
        protocol = _Datagrams(self._received)
        self._listening = self.reactor.listenUDP(0, protocol, interface=host)
        port = self._listening.getHost().port
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.agent = LineAgent(
            self.reactor,
            lambda data, address: protocol.transport.write(data, address) if protocol.transport else None,
            lambda receive: _MediaPort(self.reactor, self.mediaAddress, receive),
            self.settings,
            hostport,
        )
        for number in self.settings.lines:
            binding = Binding(
                aor=number,
                contact=f"sip:{number}@{hostport}",
                expiresAt=math.inf,
                callID="aetasip-testline",
                cseq=1,
                transport="udp",
                source=(host, port),
                local=local,
                userAgent=self.settings.serverHeader,
            )
            self.location.addStatic(binding)
            self._bindings.append(binding)
        log.info(
            "Test line on {hostport}: {lines}",
            hostport=hostport,
            lines=", ".join(f"{n} ({kind})" for n, kind in self.settings.lines.items()),
        )

    def _received(self, datagram: bytes, source: Address) -> None:
        # Only the proxy talks to the agent: nothing on this host reaches it around routing.
        if source[1] != self._proxyPort or not _sameHost(source[0], self._proxyHost):
            return
        if self.agent is not None:
            self.agent.datagramReceived(datagram, source)

    def stopService(self) -> Any:
        super().stopService()
        for binding in self._bindings:
            self.location.removeStatic(binding)
        self._bindings = []
        if self.agent is not None:
            self.agent.stop()
        listening, self._listening = self._listening, None
        if listening is None:
            return None
        d = maybeDeferred(listening.stopListening)
        d.addCallback(lambda _: log.info("Test line stopped"))
        return d


def _sameHost(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


__all__ = ["LinesDirectory", "TestLineService"]
