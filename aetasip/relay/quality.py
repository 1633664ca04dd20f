"""
What the relay measures of an RTP stream it forwards, sans-IO: packets
lost from the sequence numbers (RFC 3550 A.3), interarrival jitter
(RFC 3550 6.4.1 and A.8) and an ITU-T G.107 E-model estimate of the
quality (R factor, MOS) from them.

The relay sees the stream half way: network delay is unknown to it, so
the E-model's delay is estimated from the jitter (a jitter buffer of twice
the jitter plus one 20 ms packet) and the equipment impairment is
G.711's with packet loss concealment (G.113 Appendix I: Ie 0, Bpl 25.1);
codecs broadcast links use (L24, MPEG, Opus) have no G.113 values. The
figure ranks calls; it is not a measurement of what a listener hears.
"""

from __future__ import annotations

import struct

from aetasip.relay.stats import StreamStats

MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16

_HEADER = struct.Struct("!BBHII").unpack_from

STATIC_CLOCK_RATES = {
    0: 8000,
    3: 8000,
    4: 8000,
    5: 8000,
    6: 16000,
    7: 8000,
    8: 8000,
    9: 8000,
    10: 44100,
    11: 44100,
    12: 8000,
    13: 8000,
    14: 90000,
    15: 8000,
    16: 11025,
    17: 22050,
    18: 8000,
}
"""RTP clock rates of the static payload types (RFC 3551 6)."""


class RTPStream:
    """
    The counters of one direction of one stream, updated per packet
    (L{packet}): kept lean, it runs on the relay's hot path.

    @ivar rates: RTP clock rate by payload type (the static ones, and the
        dynamic ones the sender's SDP maps with C{a=rtpmap}).
    """

    __slots__ = (
        "_badSeq",
        "_baseSeq",
        "_cycles",
        "_jitter",
        "_lastPT",
        "_lastTransit",
        "_lostBefore",
        "_maxSeq",
        "_received",
        "_ssrc",
        "bytes",
        "lastPacketAt",
        "packets",
        "rates",
    )

    def __init__(self, rates: dict[int, int] | None = None) -> None:
        self.rates = rates if rates is not None else dict(STATIC_CLOCK_RATES)
        self.packets = 0
        self.bytes = 0
        self.lastPacketAt: float | None = None
        self._ssrc = -1
        self._baseSeq = 0
        self._maxSeq = 0
        self._badSeq = SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._lostBefore = 0
        self._jitter = 0.0  # in seconds
        self._lastTransit: float | None = None
        self._lastPT = -1

    def packet(self, data: bytes, now: float) -> None:
        """One datagram of C{len(data)} bytes received at C{now} (seconds)."""
        self.packets += 1
        self.bytes += len(data)
        self.lastPacketAt = now
        if len(data) < 12:
            return
        first, second, seq, timestamp, ssrc = _HEADER(data)
        if first & 0xC0 != 0x80:
            return  # not RTP (version 2): counted, not measured
        pt = second & 0x7F
        if 72 <= pt <= 76:
            return  # RTCP multiplexed on the RTP port (RFC 5761)
        if ssrc != self._ssrc:
            # A new source (a re-INVITE, a restarted codec): its own sequence.
            self._lostBefore += self._lost()
            self._ssrc = ssrc
            self._restart(seq)
            self._lastTransit = None
        else:
            maxSeq = self._maxSeq
            if (seq - maxSeq) & 0xFFFF < MAX_DROPOUT:
                # The usual case, inline: in sequence (RFC 3550 A.3), or a duplicate.
                if seq < maxSeq:
                    self._cycles += SEQ_MOD
                self._maxSeq = seq
                self._received += 1
            elif not self._sequence(seq):
                return
        rate = self.rates.get(pt)
        if rate is None:
            return
        transit = now - timestamp / rate
        if pt != self._lastPT or self._lastTransit is None:
            self._lastPT = pt
        else:
            d = transit - self._lastTransit
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._lastTransit = transit

    def _restart(self, seq: int) -> None:
        self._baseSeq = seq
        self._maxSeq = seq
        self._badSeq = SEQ_MOD + 1
        self._cycles = 0
        self._received = 1

    def _sequence(self, seq: int) -> bool:
        """RFC 3550 A.3 C{update_seq}, without probation: is the packet in sequence?"""
        delta = (seq - self._maxSeq) & 0xFFFF
        if delta < MAX_DROPOUT:
            if seq < self._maxSeq:
                self._cycles += SEQ_MOD
            self._maxSeq = seq
        elif delta <= SEQ_MOD - MAX_MISORDER:
            if seq == self._badSeq:
                # Two packets in sequence after a big jump: the source restarted.
                self._lostBefore += self._lost()
                self._restart(seq)
                return True
            self._badSeq = (seq + 1) & 0xFFFF
            return False
        # else: a duplicate or a late packet, counted as received
        self._received += 1
        return True

    def _lost(self) -> int:
        if self._ssrc < 0:
            return 0
        expected = self._cycles + self._maxSeq - self._baseSeq + 1
        return max(0, expected - self._received)

    @property
    def lost(self) -> int:
        """Packets missing from the sequence numbers (RFC 3550 A.3), all sources together."""
        return self._lostBefore + self._lost()

    @property
    def jitterMs(self) -> float:
        return self._jitter * 1000.0

    def stats(self) -> StreamStats:
        """These counters as L{StreamStats}, with the E-model estimate."""
        stats = StreamStats(
            self.packets, self.bytes, self.lost, round(self.jitterMs, 3), lastPacketAt=self.lastPacketAt
        )
        if self._ssrc >= 0:
            expected = self.lost + self.packets
            loss = 100.0 * self.lost / expected if expected else 0.0
            stats.rFactor = round(rFactor(loss, self.jitterMs), 1)
            stats.mos = round(mos(stats.rFactor), 2)
        return stats


def rFactor(lossPercent: float, jitterMs: float, ie: float = 0.0, bpl: float = 25.1, burstR: float = 1.0) -> float:
    """
    The ITU-T G.107 transmission rating R, with the default values of
    every other parameter (R0 - Is = 93.2), from the packet loss (percent)
    and the jitter (ms).
    """
    delay = 2.0 * jitterMs + 20.0
    delayImpairment = 0.024 * delay + (0.11 * (delay - 177.3) if delay > 177.3 else 0.0)
    equipment = ie + (95.0 - ie) * lossPercent / (lossPercent / burstR + bpl)
    return max(0.0, min(100.0, 93.2 - delayImpairment - equipment))


def mos(r: float) -> float:
    """The MOS (CQE) of an R factor (G.107 Annex B)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
