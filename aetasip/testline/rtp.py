"""
RTP packets (RFC 3550 section 5.1), sans-IO: the fixed header the test
line writes, and what it reads of the caller's packets.
"""

from __future__ import annotations

import os
import struct

import attrs

_HEADER = struct.Struct("!BBHII")
VERSION = 2


class NotRTP(ValueError):
    """A datagram that is no RTP packet."""


@attrs.frozen
class RTPHeader:
    """What the test line reads of a received packet."""

    payloadType: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse(datagram: bytes) -> RTPHeader:
    """
    The header and payload of C{datagram}.

    @raise NotRTP: too short, not version 2, or CSRC list, extension or
        padding longer than the packet.
    """
    if len(datagram) < _HEADER.size:
        raise NotRTP("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(datagram)
    if first >> 6 != VERSION:
        raise NotRTP("not RTP version 2")
    offset = _HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:
        if len(datagram) < offset + 4:
            raise NotRTP("truncated header extension")
        (words,) = struct.unpack_from("!H", datagram, offset + 2)
        offset += 4 + 4 * words
    end = len(datagram)
    if first & 0x20:
        if end == 0 or datagram[-1] == 0:
            raise NotRTP("bad padding")
        end -= datagram[-1]
    if offset > end:
        raise NotRTP("header longer than the packet")
    return RTPHeader(second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc, datagram[offset:end])


def isRTCP(datagram: bytes) -> bool:
    """RTCP multiplexed on the RTP port (RFC 5761 4): packet types 192-223."""
    return len(datagram) >= 2 and 192 <= datagram[1] <= 223


class Packetiser:
    """
    Numbers the packets of one outgoing stream: sequence numbers and
    timestamps start at random values (RFC 3550 5.1), the SSRC is random,
    and the first packet carries the marker bit (RFC 3551 4.1: the
    beginning of a talkspurt).

    @ivar payloadType: the RTP payload type negotiated.
    """

    def __init__(
        self, payloadType: int, ssrc: int | None = None, sequence: int | None = None, timestamp: int | None = None
    ) -> None:
        self.payloadType = payloadType
        self.ssrc = ssrc if ssrc is not None else int.from_bytes(os.urandom(4), "big")
        self.sequence = sequence if sequence is not None else int.from_bytes(os.urandom(2), "big")
        self.timestamp = timestamp if timestamp is not None else int.from_bytes(os.urandom(4), "big")
        self._first = True

    def marker(self) -> None:
        """The next packet starts a talkspurt again (a new format)."""
        self._first = True

    def packet(self, payload: bytes, samples: int) -> bytes:
        """
        The next packet carrying C{payload}, which holds C{samples} samples
        (per channel) at the payload format's RTP clock rate.
        """
        marker = 0x80 if self._first else 0
        self._first = False
        header = _HEADER.pack(VERSION << 6, marker | self.payloadType, self.sequence, self.timestamp, self.ssrc)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        return header + payload
