"""
Failed-authentication limits: how fast a source may guess passwords.

A SIP service on the Internet is brute-forced at 100-150 guesses a second
(sipvicious' svcrack, SIPVicious-like bots). Kamailio answers with an
C{htable} of failed authentications; this is the same: failures are counted
per (source, account) and per source, over a window, and a source that
reaches a limit is banned for a while. A banned request is answered 403
without a challenge (no nonce, no backend lookup), and the ban expires by
itself.

Nothing is counted per account alone: a codec registering correctly from
its own address is never locked out by an attacker guessing its password
elsewhere. IPv6 sources count by /64 (one host holds a whole /64).

Sans-IO: time comes from the C{now} callable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from aetasip.config import Config, Key, declare, integer
from aetasip.net import sourceGroup

log = Logger()

declare(
    Key(
        "auth.failures_per_account",
        10,
        integer(1, 1_000_000),
        "Failed authentications (wrong password, unknown number, another user's credentials) one source may make "
        "for one number within auth.failure_window before that source is banned for that number.",
    ),
    Key(
        "auth.failures_per_source",
        30,
        integer(1, 1_000_000),
        "Failed authentications one source (an IPv6 /64) may make, whatever the numbers, within "
        "auth.failure_window before it is banned. Several codecs behind one NAT share it.",
    ),
    Key("auth.failure_window", 300, integer(1, 86400), "Seconds over which failed authentications are counted."),
    Key(
        "auth.ban_time",
        600,
        integer(1, 604800),
        "Seconds a source banned for failed authentications is refused (403, no challenge); the ban then expires.",
    ),
)


class FailureLimits:
    """
    Counts failed authentications and bans the sources that make too many.

    @ivar counters: C{failures} counted, C{bans} made, C{refused} requests
        of banned sources.
    """

    def __init__(
        self,
        now: Callable[[], float],
        perAccount: int = 10,
        perSource: int = 30,
        window: float = 300,
        banTime: float = 600,
        maxTracked: int = 100_000,
    ) -> None:
        self.now = now
        self.perAccount = perAccount
        self.perSource = perSource
        self.window = window
        self.banTime = banTime
        self.maxTracked = maxTracked
        # Key (a source group, or a source group and a number) to
        # [window start, failures]; and to the end of its ban. Oldest first.
        self._failures: OrderedDict[Any, list[float]] = OrderedDict()
        self._bans: OrderedDict[Any, float] = OrderedDict()
        self.counters = {"failures": 0, "bans": 0, "refused": 0}

    @classmethod
    def fromConfig(cls, config: Config, now: Callable[[], float]) -> FailureLimits:
        return cls(
            now,
            config["auth.failures_per_account"],
            config["auth.failures_per_source"],
            config["auth.failure_window"],
            config["auth.ban_time"],
        )

    def banned(self, host: str, number: str) -> bool:
        """Is the source C{host} banned, altogether or for C{number}?"""
        bans = self._bans
        if not bans:
            return False
        group = sourceGroup(host)
        now = self.now()
        for key in (group, (group, number)):
            until = bans.get(key)
            if until is not None:
                if until > now:
                    self.counters["refused"] += 1
                    return True
                del bans[key]
        return False

    def failed(self, host: str, number: str) -> None:
        """A failed authentication from C{host} for C{number}: count it, maybe ban."""
        self.counters["failures"] += 1
        group = sourceGroup(host)
        # No line per failure, even at debug level: an attack makes thousands
        # (the counters count them, a ban logs one warning).
        if self._count((group, number)) >= self.perAccount:
            self._ban((group, number), f"{self.perAccount} failed authentications for {number}")
        if self._count(group) >= self.perSource:
            self._ban(group, f"{self.perSource} failed authentications")

    def succeeded(self, host: str, number: str) -> None:
        """A successful authentication: the pair's failures are forgiven."""
        if self._failures:
            self._failures.pop((sourceGroup(host), number), None)

    def _count(self, key: Any) -> int:
        now = self.now()
        failures = self._failures
        entry = failures.get(key)
        if entry is None or now - entry[0] > self.window:
            entry = [now, 0]
            failures.pop(key, None)
            failures[key] = entry
            while len(failures) > self.maxTracked:
                failures.popitem(last=False)
        entry[1] += 1
        return int(entry[1])

    def _ban(self, key: Any, why: str) -> None:
        bans = self._bans
        bans.pop(key, None)
        bans[key] = self.now() + self.banTime
        self._failures.pop(key, None)
        while len(bans) > self.maxTracked:
            bans.popitem(last=False)
        self.counters["bans"] += 1
        source = key if isinstance(key, str) else key[0]
        # One line per ban, not one per failure.
        log.warn(
            "Banned {source} for {seconds} s after {why} within {window} s",
            source=source,
            seconds=self.banTime,
            why=why,
            window=self.window,
        )
