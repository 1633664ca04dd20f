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


def relayStats(media: dict[str, Any]) -> RelayStats | None:
    """The relay statistics a media handler keeps on a call, if any."""
    for value in media.values():
        if isinstance(value, RelayStats):
            return value
    return None


def recordOf(call: Any, recordID: str, server: str) -> CallRecord:
    """
    The record of C{call} (an L{aetasip.calls.call.Call}) as it is now.
    """
    target = call.answeredBy if call.answeredBy is not None else (call.targets[-1] if call.targets else None)
    stats = relayStats(call.media)
    ended = call.endCause is not None
    return CallRecord(
        id=recordID,
        server=server,
        callID=call.callID,
        callerTag=call.callerTag,
        calleeTag=call.calleeTag,
        caller=call.caller,
        callerKind=call.callerKind,
        domain=call.domain,
        source=tuple(call.callerLeg.source),
        transport=call.callerLeg.transport,
        dialled=call.dialled,
        resolved=tuple(call.resolved),
        callee=call.callee,
        calleeSource=None if target is None else tuple(target.leg.source),
        calleeTransport=None if target is None else target.leg.transport,
        startedAt=round(call.started, 3),
        ringingAt=_ms(call.ringingAt),
        answeredAt=_ms(call.answeredAt),
        endedAt=_ms(call.endedAt) if ended else None,
        duration=round(call.duration, 3) if ended else 0.0,
        status=call.status,
        endCause=call.endCause,
        endDetail=call.endDetail,
        recovered=call.recovered,
        relayNode=None if stats is None else stats.node,
        media=None if stats is None else mediaData(stats),
    )


def mediaData(stats: RelayStats) -> dict[str, Any]:
    """C{stats} as plain data (JSON-able), without the node's name."""
    data: dict[str, Any] = json.loads(json.dumps(attrs.asdict(stats)))
    data.pop("node", None)
    return data


def mediaJSON(media: dict[str, Any] | None) -> str | None:
    return None if media is None else json.dumps(media, sort_keys=True)
