"""
L{Role}: whether this server is the active one, the holder of the
floating service address (C{cluster.address}), or a standby.

keepalived (VRRP) moves the address; a server only looks, every
C{cluster.check_interval} seconds, whether the address is on one of its
interfaces (L{addressIsLocal}, from C{getifaddrs} through psutil: a bind
test would succeed everywhere with C{net.ipv4.ip_nonlocal_bind}). Without
a floating address the server is always active. Sans-IO: the look is an
injected function, time the injected clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

ACTIVE = "active"
STANDBY = "standby"


def addressIsLocal(address: str) -> bool:
    """Whether C{address} is configured on an interface of this host."""
    import psutil

    wanted = ipaddress.ip_address(address)
    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            try:
                if ipaddress.ip_address(entry.address.partition("%")[0]) == wanted:
                    return True
            except ValueError:
                continue  # a link-layer address
    return False


class Role:
    """
    This server's role, looked at on a clock.

    @ivar listeners: called with C{True} (active) or C{False} (standby)
        each time the role changes, and once when it is first known.
    """

    def __init__(
        self,
        clock: IReactorTime,
        address: str | None,
        interval: float = 1.0,
        isLocal: Callable[[str], bool] = addressIsLocal,
    ) -> None:
        self.clock = clock
        self.address = address
        self.interval = interval
        self.isLocal = isLocal
        self.listeners: list[Callable[[bool], None]] = []
        self._active: bool | None = None if address is not None else True
        self._call: IDelayedCall | None = None
        self._failing = False

    @property
    def active(self) -> bool:
        """Whether this server is active (a standby until the first look)."""
        return bool(self._active)

    @property
    def name(self) -> str:
        return ACTIVE if self.active else STANDBY

    def isActive(self) -> bool:
        return self.active

    def start(self) -> None:
        if self.address is None:
            self._tell(True)
            return
        self.check()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def check(self) -> None:
        """Look at the address now (and again after the interval)."""
        self._call = None
        assert self.address is not None
        try:
            local = self.isLocal(self.address)
            self._failing = False
        except Exception:
            if not self._failing:
                self._failing = True
                log.failure("Cannot tell whether {address} is local; keeping the role", address=self.address)
            local = bool(self._active)
        if local != self._active:
            previous = self._active
            self._active = local
            if previous is not None or local:
                log.info(
                    "This server is now {role}: the service address {address} is {where}",
                    role=ACTIVE if local else STANDBY,
                    address=self.address,
                    where="here" if local else "elsewhere",
                )
            self._tell(local)
        self._call = self.clock.callLater(self.interval, self.check)

    def _tell(self, active: bool) -> None:
        for listener in self.listeners:
            try:
                listener(active)
            except Exception:
                log.failure("A listener of the role failed")
