"""
L{CallRecord}: what is kept of one call attempt, made from a
L{aetasip.calls.call.Call} at each of its events; the same record is
written again (by its C{id}) as the call moves on, so that a call open
when the service dies is in the store.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import attrs

from aetasip.relay.stats import RelayStats

UNKNOWN_END = "unknown end"
"""End cause of a call the service left open when it died (C{kill -9}, power)."""

FAILOVER = "failover"
"""
End cause of a call in progress on a server of a cluster that died, set
by the server that took over (unless the call's BYE reaches it: the
record is then amended with its real end).
"""


@attrs.define
class CallRecord:
    """
    One call attempt.

    Times are POSIX seconds (UTC), kept to the millisecond; C{None} until
    the event happens. C{endedAt} and C{endCause} are C{None} while the call
    is open.

    @ivar id: the record's own identifier (32 hex digits).
    @ivar server: the server that handled the call (C{records.server}).
    @ivar caller: the caller's number; C{callerKind} its account kind.
    @ivar domain: the registrar domain the caller used.
    @ivar source: where the caller's INVITE came from; C{transport} over what.
    @ivar dialled: the number as dialled (a short number, a hunting number).
    @ivar resolved: every number the call was resolved to, in order.
    @ivar callee: the number that answered, else the last one resolved.
    @ivar calleeSource: where the answering (else last) branch was sent.
    @ivar duration: seconds from answer to end (0 when never answered).
    @ivar status: the final status code the caller got (200 when answered).
    @ivar endCause: one of L{aetasip.calls.call.EndCause}, or L{UNKNOWN_END}.
    @ivar recovered: the call was rebuilt from its signed Route after a
        restart (its start is unknown).
    @ivar relayNode: the relay node the media went through, if relayed.
    @ivar media: the relay's statistics as plain data (see
        L{aetasip.relay.stats.RelayStats}), if relayed.
    """

    id: str
    server: str
    callID: str
    callerTag: str
    caller: str
    callerKind: str
    domain: str
    source: tuple[str, int]
    transport: str
    dialled: str
    startedAt: float
    calleeTag: str | None = None
    resolved: tuple[str, ...] = ()
    callee: str | None = None
    calleeSource: tuple[str, int] | None = None
    calleeTransport: str | None = None
    ringingAt: float | None = None
    answeredAt: float | None = None
    endedAt: float | None = None
    duration: float = 0.0
    status: int = 0
    endCause: str | None = None
    endDetail: str = ""
    recovered: bool = False
    relayNode: str | None = None
    media: dict[str, Any] | None = None

    @property
    def answered(self) -> bool:
        return self.answeredAt is not None

    @property
    def open(self) -> bool:
        return self.endCause is None


_PROCESS = uuid.uuid4().hex[:16]
_sequence = itertools.count(1)


def newRecordID() -> str:
    """A record id unique across processes: this process's random half, then a counter (32 hex digits)."""
    return f"{_PROCESS}{next(_sequence):016x}"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def relayOf(media: dict[str, Any]) -> tuple[str | None, RelayStats | None]:
    """
    The relay node and its final statistics the relay's media handler
    keeps on a call (C{call.media["relay"]}, see
    L{aetasip.relay.handler}): C{(None, None)} when its media was not
    relayed; the node without statistics when the node could not give
    them.
    """
    relay = media.get("relay")
    if not isinstance(relay, dict) or not any(relay.get("relayed", {}).values()):
        return None, None
    stats = relay.get("stats")
    if not isinstance(stats, RelayStats):
        return relay.get("node"), None
    return stats.node, stats


def _text(value: str | None, length: int = 2000) -> str:
    """
    C{value} as a column takes it: what a caller sent (a dialled number, a
    reason phrase, a tag) may be long or hold NUL, which PostgreSQL
    refuses; one such record must not keep a batch from the store.
    """
    if not value:
        return ""
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:length]


def _optional(value: str | None, length: int = 2000) -> str | None:
    return None if value is None else _text(value, length)


def recordOf(call: Any, recordID: str, server: str) -> CallRecord:
    """
    The record of C{call} (an L{aetasip.calls.call.Call}) as it is now,
    its texts cut to the store's columns.
    """
    target = call.answeredBy if call.answeredBy is not None else (call.targets[-1] if call.targets else None)
    node, stats = relayOf(call.media)
    ended = call.endCause is not None
    return CallRecord(
        id=recordID,
        server=server,
        callID=_text(call.callID, 500),
        callerTag=_text(call.callerTag, 500),
        calleeTag=_optional(call.calleeTag, 500),
        caller=_text(call.caller, 32),
        callerKind=_text(call.callerKind, 16),
        domain=_text(call.domain, 500),
        source=tuple(call.callerLeg.source),
        transport=_text(call.callerLeg.transport, 8),
        dialled=_text(call.dialled, 64),
        resolved=tuple(_text(number, 64) for number in call.resolved),
        callee=_optional(call.callee, 32),
        calleeSource=None if target is None else tuple(target.leg.source),
        calleeTransport=None if target is None else _text(target.leg.transport, 8),
        startedAt=round(call.started, 3),
        ringingAt=_ms(call.ringingAt),
        answeredAt=_ms(call.answeredAt),
        endedAt=_ms(call.endedAt) if ended else None,
        duration=round(call.duration, 3) if ended else 0.0,
        status=call.status,
        endCause=_optional(call.endCause, 32),
        endDetail=_text(call.endDetail),
        recovered=call.recovered,
        relayNode=None if node is None else _text(node, 64),
        media=None if stats is None else mediaData(stats),
    )


def mediaData(stats: RelayStats) -> dict[str, Any]:
    """C{stats} as plain data (JSON-able), without the node's name."""
    data: dict[str, Any] = json.loads(json.dumps(attrs.asdict(stats)))
    data.pop("node", None)
    return data


def mediaJSON(media: dict[str, Any] | None) -> str | None:
    return None if media is None else json.dumps(media, sort_keys=True)
