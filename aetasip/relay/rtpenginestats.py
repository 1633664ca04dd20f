"""
rtpengine's statistics of a call (the reply to C{query} or C{delete}) as
L{aetasip.relay.stats.RelayStats}, the same fields the built-in relay
fills.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aetasip.relay.ng import Address
from aetasip.relay.stats import RelayStats, StreamStats


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else None


def _flags(item: Mapping[str, Any]) -> set[str]:
    return {f.decode("ascii", "replace") for f in item.get("flags") or [] if isinstance(f, bytes)}


def _monologues(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    tags = body.get("tags")
    return [m for m in tags.values() if isinstance(m, dict)] if isinstance(tags, dict) else []


def guessCaller(body: Mapping[str, Any]) -> str:
    """The tag of the offerer of a call the node does not remember: tagged, no via-branch, oldest."""
    monologues = [m for m in _monologues(body) if _text(m.get("tag"))]
    if not monologues:
        return ""
    monologues.sort(key=lambda m: ("via-branch" in m, _int(m.get("created"))))
    return _text(monologues[0].get("tag")) or ""


def rFactorFromMOS(mos: float) -> float:
    """
    The ITU-T G.107 R factor whose MOS is C{mos} (the inverse of
    G.107 B-4, by bisection: rtpengine reports MOS only).
    """
    mos = min(max(mos, 1.0), 4.5)
    low, high = 6.5, 100.0  # MOS(R) rises monotonically over this range
    for _ in range(40):
        middle = (low + high) / 2
        estimate = 1 + 0.035 * middle + 7e-6 * middle * (middle - 60) * (100 - middle)
        if estimate < mos:
            low = middle
        else:
            high = middle
    return round((low + high) / 2, 1) if mos > 1.0 else 0.0


def _received(monologue: Mapping[str, Any], ssrcs: Mapping[str, Any]) -> tuple[StreamStats, Address | None, int]:
    """What rtpengine received from one party: RTP stream counters, the latched address, the drops."""
    stream = StreamStats()
    latched: Address | None = None
    dropped = 0
    measured = False
    for media in _dicts(monologue.get("medias")):
        for item in _dicts(media.get("streams")):
            if "RTP" not in _flags(item):
                # RTCP: no packets of the stream, but a sign of life (as the built-in node counts it).
                rtcp = item.get("stats")
                last = _int(item.get("last packet"))
                if isinstance(rtcp, dict) and _int(rtcp.get("packets")) and last:
                    if stream.lastPacketAt is None or last > stream.lastPacketAt:
                        stream.lastPacketAt = float(last)
                continue
            counters = item.get("stats")
            if not isinstance(counters, dict):
                counters = {}
            packets = _int(counters.get("packets"))
            stream.packets += packets
            stream.bytes += _int(counters.get("bytes"))
            dropped += _int(counters.get("errors"))
            if packets:
                last = _int(item.get("last packet"))
                if last and (stream.lastPacketAt is None or last > stream.lastPacketAt):
                    stream.lastPacketAt = float(last)
                endpoint = item.get("endpoint")
                if latched is None and isinstance(endpoint, dict):
                    host = _text(endpoint.get("address"))
                    if host and _int(endpoint.get("port")):
                        latched = (host, _int(endpoint.get("port")))
            quality = ssrcs.get(str(_int(item.get("SSRC")))) if "SSRC" in item else None
            if isinstance(quality, dict):
                # From the RTCP reports of the party receiving this
                # stream: loss, jitter (ms) and MOS (times ten).
                measured = True
                stream.lost = (stream.lost or 0) + _int(quality.get("cumulative loss"))
                average = quality.get("average MOS")
                if isinstance(average, dict):
                    stream.jitter = max(stream.jitter or 0.0, float(_int(average.get("jitter"))))
                    if _int(average.get("MOS")):
                        mos = _int(average.get("MOS")) / 10
                        stream.mos = mos if stream.mos is None else min(stream.mos, mos)
                        stream.rFactor = rFactorFromMOS(stream.mos)
    if not measured and stream.packets:
        # Plain RTP that nobody reported on: rtpengine did not measure it.
        stream.lost = stream.jitter = None
    return stream, latched, dropped


def relayStats(node: str, body: Mapping[str, Any], callerTag: str, calleeTag: str | None) -> RelayStats:
    """
    The L{RelayStats} of a C{query} or C{delete} reply.

    rtpengine counts what it receives from each party (packets, bytes,
    the time of the last one, the address it latched to, packets it could
    not forward — strict-source drops among them); what it sent to a
    party is what it received from the other. Loss, jitter and MOS come
    from the parties' RTCP reports, when they send any (the R factor is
    derived from the MOS). rtpengine 10.5 does not measure them itself
    when forwarding without transcoding: for plain RTP its C{query} gives
    per stream only packets, bytes, errors, the last packet's time and
    the SSRC, and its C{SSRC} section lists only SSRCs that RTCP reports
    named. A stream with packets and no report therefore has C{lost} and
    C{jitter} C{None} (not measured), never a misleading 0.
    """
    monologues = _monologues(body)
    byTag = {_text(m.get("tag")): m for m in monologues}
    caller = byTag.get(callerTag)
    callee = byTag.get(calleeTag) if calleeTag is not None else None
    if callee is None and caller is not None:
        others = [m for m in monologues if m is not caller]
        partners = {_text(s.get("tag")) for s in _dicts(caller.get("subscriptions"))}
        preferred = [m for m in others if _text(m.get("tag")) in partners] or others
        if preferred:
            callee = max(preferred, key=lambda m: _received(m, {})[0].packets)
    ssrcs = body.get("SSRC")
    if not isinstance(ssrcs, dict):
        ssrcs = {}
    stats = RelayStats(node)
    for leg, monologue in ((stats.caller, caller), (stats.callee, callee)):
        if monologue is not None:
            leg.received, leg.latched, leg.dropped = _received(monologue, ssrcs)
    for leg, other in ((stats.caller, stats.callee), (stats.callee, stats.caller)):
        leg.sent = StreamStats(
            packets=other.received.packets, bytes=other.received.bytes, lastPacketAt=other.received.lastPacketAt
        )
    return stats


def partnerOf(body: Mapping[str, Any], tag: str) -> str | None:
    """
    The tag in dialogue with C{tag} in rtpengine's C{query} reply: its
    C{offer/answer} subscription (rtpengine 10 and later), else its
    C{in dialogue with} (older daemons); C{None} when there is none.
    """
    monologue = None
    for candidate in _monologues(body):
        if _text(candidate.get("tag")) == tag:
            monologue = candidate
    if monologue is None:
        return None
    for subscription in monologue.get("subscriptions") or []:
        if isinstance(subscription, Mapping) and _text(subscription.get("type")) in (None, "offer/answer"):
            partner = _text(subscription.get("tag"))
            if partner:
                return partner
    return _text(monologue.get("in dialogue with")) or None
