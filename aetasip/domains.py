"""
The domains the service answers for: one user space for all of them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from aetasip.net import WILDCARDS


def _canonical(host: str) -> str:
    host = host.lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


class LocalDomains:
    """
    Decides whether a host (from a Request-URI or an AOR) is served here:
    the configured C{sip.domains}, the specific listen addresses, and this
    machine's own names and loopback addresses.
    """

    def __init__(self, domains: Iterable[str], listen: Iterable[str] = ()) -> None:
        names = {_canonical(d) for d in domains}
        names.update(_canonical(a) for a in listen if a not in WILDCARDS)
        names.update(["localhost", "127.0.0.1", "::1"])
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.add(_canonical(name))
                try:
                    names.update(_canonical(str(info[4][0])) for info in socket.getaddrinfo(name, None))
                except OSError:
                    pass
        self.names = frozenset(names)

    def __call__(self, host: str) -> bool:
        return host in self.names or _canonical(host) in self.names

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self.names))
