"""
The port pairs of the built-in relay node: even/odd UDP ports (RTP, RTCP)
bound from its range (L{PortRange}), and the open files limit a full
range needs (L{raiseFileLimit}).
"""

from __future__ import annotations

import resource
import socket

from twisted.logger import Logger

log = Logger()


class NoPortsLeft(Exception):
    """Every port pair of the range is in use: the offer is refused (503)."""


class PortRange:
    """
    Binds even/odd UDP port pairs of C{[low, high]} on C{interface},
    round robin (a port just freed is the last to be used again, so late
    packets of an old call do not reach a new one). A port another program
    holds is skipped.
    """

    def __init__(self, interface: str, low: int, high: int) -> None:
        if low % 2:
            low += 1
        self.interface = interface
        self.family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self.low = low
        self.high = high
        self.pairs = max(0, (high - low + 1) // 2)
        self._next = 0
        self.used: set[int] = set()

    @property
    def free(self) -> int:
        return self.pairs - len(self.used)

    def allocate(self) -> tuple[int, socket.socket, socket.socket]:
        """
        @return: the even port and the two bound non-blocking sockets.
        @raise NoPortsLeft: no free pair (in use here or by another program).
        """
        for _ in range(self.pairs):
            even = self.low + 2 * self._next
            self._next = (self._next + 1) % self.pairs
            if even in self.used:
                continue
            pair: list[socket.socket] = []
            for port in (even, even + 1):
                try:
                    sock = socket.socket(self.family, socket.SOCK_DGRAM)
                except OSError as e:
                    # Out of file descriptors: no pair can be had now.
                    for opened in pair:
                        opened.close()
                    raise NoPortsLeft(f"cannot open a socket: {e.strerror}") from None
                try:
                    sock.bind((self.interface, port))
                except OSError:
                    sock.close()
                    break
                sock.setblocking(False)
                pair.append(sock)
            if len(pair) == 2:
                self.used.add(even)
                return even, pair[0], pair[1]
            for sock in pair:
                sock.close()
        raise NoPortsLeft(f"no free RTP port pair in {self.low}-{self.high}")

    def release(self, even: int) -> None:
        self.used.discard(even)


def raiseFileLimit(needed: int, node: object) -> None:
    """
    Raise this process's soft limit of open files to C{needed} (two
    sockets per port pair, and room for the rest of the service), within
    the hard limit: systemd starts services with a soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warn(
            "Relay node {node}: the open files limit ({hard}) is below the {needed} its port range may need "
            "(LimitNOFILE= in the systemd unit): calls will get 503 before the range is full",
            node=node,
            hard=hard,
            needed=needed,
        )
