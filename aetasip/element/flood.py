"""
Flood control before parsing, in the spirit of Kamailio's C{pike}: the
request density of each source over a sliding window, and a ban, expiring
by itself, for a source that exceeds it. A banned source's messages are
dropped unparsed and unanswered.

IPv6 sources count by /64 (one host holds a whole /64). Trusted networks
(the operator's own, the backup server) are never counted. Keep-alives
(CRLF, STUN on the SIP port) never reach it: only SIP messages count, so a
registered agent's normal traffic, a re-registration every few minutes and
its calls, stays far below the limit.

Sans-IO: time comes from the C{now} callable.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from aetasip.config import Config, Key, declare, integer, listOf, network, number
from aetasip.net import sourceGroup

log = Logger()

declare(
    Key(
        "flood.limit",
        40,
        integer(0, 1_000_000),
        "SIP messages one source (an IPv6 /64) may send within flood.window seconds; beyond, it is banned "
        "(0: no flood control).",
    ),
    Key("flood.window", 2, number(0.1, 60), "Seconds of the sliding window flood.limit counts over."),
    Key(
        "flood.ban_time",
        300,
        integer(1, 604800),
        "Seconds a flooding source's messages are dropped unparsed; the ban then expires by itself.",
    ),
    Key(
        "flood.trusted",
        ["127.0.0.0/8", "::1/128"],
        listOf(network, "IP networks or addresses"),
        "Sources never counted nor banned: the operator's networks, the backup server, load generators.",
    ),
)


class FloodControl:
    """
    Counts the SIP messages of each source and bans those that send too many.

    @ivar counters: C{messages} counted, C{dropped} (from banned sources),
        C{bans} made.
    """

    def __init__(
        self,
        now: Callable[[], float],
        limit: int = 40,
        window: float = 2.0,
        banTime: float = 300,
        trusted: Iterable[str] = (),
        maxTracked: int = 100_000,
    ) -> None:
        self.now = now
        self.limit = limit
        self.window = window
        self.banTime = banTime
        self.maxTracked = maxTracked
        self._trusted = [ipaddress.ip_network(net, strict=False) for net in trusted]
        self._trustedHosts: dict[str, bool] = {}
        # Source group to [window start, count of the previous window, count
        # of this one]; least recently rolled over first.
        self._sources: OrderedDict[str, list[float]] = OrderedDict()
        # Source group to [end of the ban, messages dropped].
        self._bans: dict[str, list[float]] = {}
        self.counters = {"messages": 0, "dropped": 0, "bans": 0}

    @classmethod
    def fromConfig(cls, config: Config, now: Callable[[], float]) -> FloodControl:
        return cls(
            now, config["flood.limit"], config["flood.window"], config["flood.ban_time"], config["flood.trusted"]
        )

    def allow(self, host: str) -> bool:
        """May a message from C{host} be parsed and handled? Counts it."""
        trusted = self._trustedHosts.get(host)
        if trusted is None:
            trusted = self._isTrusted(host)
        if trusted or not self.limit:
            return True
        counters = self.counters
        counters["messages"] += 1
        group = sourceGroup(host) if ":" in host else host
        now = self.now()
        bans = self._bans
        if bans:
            ban = bans.get(group)
            if ban is not None:
                if ban[0] > now:
                    ban[1] += 1
                    counters["dropped"] += 1
                    return False
                del bans[group]
                log.info("Ban of {source} over: {dropped} messages were dropped", source=group, dropped=int(ban[1]))
        window = self.window
        sources = self._sources
        entry = sources.get(group)
        if entry is None:
            entry = sources[group] = [now, 0.0, 0.0]
            if len(sources) > self.maxTracked:
                sources.popitem(last=False)
        elif now - entry[0] >= window:
            periods = (now - entry[0]) // window
            entry[1] = entry[2] if periods == 1 else 0.0
            entry[2] = 0.0
            entry[0] += periods * window
            sources.move_to_end(group)
        entry[2] += 1
        # The sliding estimate: this window's count and the share of the
        # previous window's that the sliding window still covers.
        estimate = entry[2] + entry[1] * (1 - (now - entry[0]) / window)
        if estimate > self.limit:
            bans[group] = [now + self.banTime, 1]
            del sources[group]
            counters["bans"] += 1
            counters["dropped"] += 1
            log.warn(
                "Banned {source} for {seconds} s: more than {limit} SIP messages in {window} s",
                source=group,
                seconds=self.banTime,
                limit=self.limit,
                window=window,
            )
            return False
        return True

    def banned(self) -> dict[str, float]:
        """The sources banned now and when their bans end."""
        now = self.now()
        return {source: ban[0] for source, ban in self._bans.items() if ban[0] > now}

    def _isTrusted(self, host: str) -> bool:
        """Is C{host} in a trusted network? Remembered in C{_trustedHosts} (the hot path looks there first)."""
        try:
            address: Any = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if getattr(address, "ipv4_mapped", None) is not None:
            address = address.ipv4_mapped
        known = any(address in net for net in self._trusted)
        if len(self._trustedHosts) >= 10_000:
            self._trustedHosts.clear()
        self._trustedHosts[host] = known
        return known
