"""
The addresses the proxy may send to outside a transaction it started from
a binding: in-dialog requests, 2xx ACKs and stray 2xx retransmissions go
where their Route, Request-URI or Via say, and those are written by the
agents. Without a check anyone could make the service send SIP to any
host (a relay, and a reflector). Kamailio's default configuration relays
them; here only the parties of this service's calls are reached:

  - registered agents, at the address their REGISTER came from (kept
    while they register, and a day after);
  - the callers and callees of calls the proxy forwarded (a day after the
    last request between them, for callers that do not register).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

# How long an address stays known after it was last seen in a call or a
# registration: live links last hours, and may carry nothing in between.
LIFETIME = 86400.0

# Expired entries are dropped every this many additions (no timer needed).
_SWEEP_EVERY = 4096


def normalHost(host: str) -> str:
    """An address as a dictionary key: no IPv6 brackets, lower case."""
    return host[1:-1].lower() if host.startswith("[") else host.lower()


class KnownPeers:
    """
    A set of C{(host, port)} addresses, each known until some time.

    Also a registration listener (L{aetasip.location.LocationService}):
    registered and refreshed agents become known.
    """

    def __init__(self, clock: IReactorTime, lifetime: float = LIFETIME) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self._until: dict[tuple[str, int], float] = {}
        self._added = 0

    def add(self, address: tuple[str, int]) -> None:
        """C{address} is a party of a call or a registered agent, now."""
        self._until[(normalHost(address[0]), address[1])] = self.clock.seconds() + self.lifetime
        self._added += 1
        if self._added % _SWEEP_EVERY == 0:
            self.sweep()

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, tuple) or len(address) != 2:
            return False
        until = self._until.get((normalHost(address[0]), address[1]))
        return until is not None and until > self.clock.seconds()

    def __len__(self) -> int:
        return len(self._until)

    def sweep(self) -> None:
        """Forget the addresses whose time is over."""
        now = self.clock.seconds()
        self._until = {address: until for address, until in self._until.items() if until > now}

    def registrationEvent(self, event: Any) -> None:
        if event.kind in ("registered", "refreshed"):
            self.add(event.binding.source)
