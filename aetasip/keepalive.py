"""
OPTIONS pings that keep NAT bindings of UDP agents open.

A codec behind NAT is reached at the public address its REGISTER came
from; that mapping only lives while packets pass. Every
C{registrar.options_ping_interval} seconds each UDP binding gets an
OPTIONS request from the very socket it registered on. The pings are
spread over the interval (each binding in its own second of it) rather
than sent in one burst. Answers are not needed: the outgoing packet
refreshes the mapping, and the replies are dropped as stray responses.
In a cluster only the active server pings (L{OptionsPinger.isActive}):
the agents' NAT mappings point at the floating address it holds.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from aetasip.location import Binding, LocationService

log = Logger()

Sender = Callable[[bytes, tuple[str, int]], None]


class OptionsPinger:
    """
    @param clock: the time source.
    @param location: whose UDP bindings are pinged.
    @param senderFor: gives, for a binding's C{local} address, the function
        sending a datagram from that socket, or C{None}.
    @param interval: seconds between two pings of the same binding.
    @param sentBy: host for the Via header (the service's first domain).
    """

    def __init__(
        self,
        clock: IReactorTime,
        location: LocationService,
        senderFor: Callable[[tuple[str, int]], Sender | None],
        interval: int,
        sentBy: str,
    ) -> None:
        self.clock = clock
        self.location = location
        self.senderFor = senderFor
        self.interval = interval
        self.sentBy = sentBy
        self.sent = 0
        # Whether this server pings now (a standby does not); set by aetasip.tap.
        self.isActive: Callable[[], bool] = lambda: True
        self._tick = 0
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        if self.interval > 0 and self._call is None:
            self._call = self.clock.callLater(1, self._run)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _run(self) -> None:
        self._tick = (self._tick + 1) % self.interval
        if self.isActive():
            for binding in self.location.bindings():
                if binding.transport == "udp" and self._slot(binding) == self._tick:
                    self.ping(binding)
        self._call = self.clock.callLater(1, self._run)

    def _slot(self, binding: Binding) -> int:
        return zlib.crc32(f"{binding.aor} {binding.contact}".encode()) % self.interval

    def ping(self, binding: Binding) -> None:
        send = self.senderFor(binding.local)
        if send is None:
            return
        try:
            send(self.request(binding), binding.source)
            self.sent += 1
        except Exception:
            log.failure("OPTIONS ping to {source} failed", source=binding.source)

    def request(self, binding: Binding) -> bytes:
        token = os.urandom(6).hex()
        port = binding.local[1]
        return (
            f"OPTIONS {binding.contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.sentBy}:{port};branch=z9hG4bK-ping-{token};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:ping@{self.sentBy}>;tag={token}\r\n"
            f"To: <{binding.contact}>\r\n"
            f"Call-ID: ping-{token}@{self.sentBy}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
