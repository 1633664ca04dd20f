"""
Media statistics of a relayed call, the same whichever node relays it
(the built-in relay counts them itself; rtpengine's C{query} gives them):
what the call keeps for its record and the portal shows.
"""

from __future__ import annotations

import attrs


@attrs.define
class StreamStats:
    """
    One direction of one leg's media (RTP), as the relay received it.

    @ivar packets: RTP packets received.
    @ivar bytes: their UDP payload bytes.
    @ivar lost: packets missing from the sequence numbers (RFC 3550 A.3);
        C{None} when the node could not measure it (rtpengine, for a
        stream no party sent RTCP reports about).
    @ivar jitter: interarrival jitter in milliseconds (RFC 3550 6.4.1);
        C{None} when not measured, like C{lost}.
    @ivar rFactor: the ITU-T G.107 E-model R factor (0-100), or C{None}
        before there is anything to estimate.
    @ivar mos: the MOS estimated from C{rFactor} (1.0-4.5), or C{None}.
    @ivar lastPacketAt: clock time of the last packet, or C{None}.
    """

    packets: int = 0
    bytes: int = 0
    lost: int | None = 0
    jitter: float | None = 0.0
    rFactor: float | None = None
    mos: float | None = None
    lastPacketAt: float | None = None


@attrs.define
class LegStats:
    """
    One leg (C{caller} or C{callee}) of a relayed call.

    @ivar latched: the address its media was latched to, or C{None}.
    @ivar received: what the relay received from this leg.
    @ivar sent: what the relay sent to this leg.
    @ivar dropped: packets from a source that is not the leg's (hijack
        attempts, or media before latching from a stranger).
    """

    latched: tuple[str, int] | None = None
    received: StreamStats = attrs.Factory(StreamStats)
    sent: StreamStats = attrs.Factory(StreamStats)
    dropped: int = 0


@attrs.define
class RelayStats:
    """
    A relayed call's media, by leg.

    @ivar node: the relay node's name.
    """

    node: str
    caller: LegStats = attrs.Factory(LegStats)
    callee: LegStats = attrs.Factory(LegStats)
