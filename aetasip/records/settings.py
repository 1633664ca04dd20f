"""
The C{records} section of the configuration: call records.
"""

from __future__ import annotations

from typing import Any

from aetasip.config import Key, declare, integer, number, optional, shortText

declare(
    Key(
        "records.server",
        None,
        optional(shortText(64)),
        "This server's name in its call records; None: server.name (the host name), cut to 64 characters. Every "
        "server writing to the same store needs its own: at start-up a server closes the records it left open when "
        "it died ('unknown end').",
    ),
    Key(
        "records.heartbeat_interval",
        10,
        number(1, 3600),
        "Seconds between two notes in the store that this server and its open calls are alive: after a crash, "
        "its open calls are closed at the last such note (or the last record written, if later).",
    ),
    Key(
        "records.queue_limit",
        100_000,
        integer(100, 10_000_000),
        "Call records kept in memory while the store cannot be written (an outage); past this, new records are "
        "dropped, counted and logged. Records wait in order and are written when the store returns.",
    ),
)


def recordServer(config: Any) -> str:
    """The name of this server in its call records (C{records.server}, else C{server.name})."""
    name = config["records.server"]
    return str(name if name is not None else config["server.name"][:64])
