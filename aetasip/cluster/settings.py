"""
The C{cluster} section of the configuration: the floating service address
whose holder is the active server, and how often servers look at it and
announce themselves.
"""

from __future__ import annotations

import attrs

from aetasip.config import Config, Key, declare, ipAddress, number, optional

declare(
    Key(
        "cluster.address",
        None,
        optional(ipAddress),
        "The floating service address (moved between the servers by keepalived): the server that has it on "
        "an interface is active and sends OPTIONS keep-alive pings and dead-call probes; the others are "
        "standbys. List it in sip.listen too: it is bound even where it is not local (IP_FREEBIND). None: "
        "this server is always active.",
    ),
    Key(
        "cluster.check_interval",
        1.0,
        number(0.1, 60),
        "Seconds between two looks at whether the floating address is local.",
    ),
    Key(
        "cluster.announce_interval",
        5.0,
        number(1, 300),
        "Seconds between two announcements of this server in the store (role, calls in progress; shown by "
        "'aetasip-admin node status'), and two looks at its drain flag. Announced with them: the other servers "
        "take this one for dead after three of its own intervals, so servers may differ.",
    ),
)


@attrs.frozen
class ClusterSettings:
    """The C{cluster} section, read once."""

    address: str | None
    checkInterval: float
    announceInterval: float

    @classmethod
    def fromConfig(cls, config: Config) -> ClusterSettings:
        return cls(config["cluster.address"], config["cluster.check_interval"], config["cluster.announce_interval"])
