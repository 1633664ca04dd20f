"""
The test line's side of the SDP offer/answer (RFC 3264), sans-IO: the
first audio stream of the offer is answered with the first of its
formats (in the caller's order of preference) the line can send; every
other stream is declined (port 0). No format in common: L{NotAcceptable}
(the caller gets 488).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs

from aetasip.relay import sdp
from aetasip.testline.codecs import FORMATS, Format

_STATIC = {
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    14: ("MPA", 90000, 1),
}
"""RFC 3551 table 4: the static audio payload types an offer may give without rtpmap."""

_OPPOSITE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class NotAcceptable(ValueError):
    """No audio stream, or none of its formats can be sent: 488."""


@attrs.frozen
class Choice:
    """
    What was agreed for the audio stream.

    @ivar format: the L{Format} sent.
    @ivar payloadType: the payload type the caller gave it.
    @ivar remote: where the caller's SDP wants its RTP, C{(address, port)}.
    @ivar direction: our direction (C{sendrecv}, C{sendonly}, …).
    @ivar index: the position of the stream among the offer's m= sections.
    """

    format: Format
    payloadType: int
    remote: tuple[str, int]
    direction: str
    index: int
    family: str


def _rtpmaps(media: sdp.Media) -> dict[int, tuple[str, int, int]]:
    found: dict[int, tuple[str, int, int]] = {}
    for line in media.lines:
        if line.type != b"a" or not line.value.lower().startswith(b"rtpmap:"):
            continue
        try:
            number, encoding = line.value[7:].decode("ascii").split(None, 1)
            parts = encoding.strip().split("/")
            channels = int(parts[2]) if len(parts) > 2 else 1
            found[int(number)] = (parts[0], int(parts[1]), channels)
        except (ValueError, IndexError, UnicodeDecodeError):
            continue  # a malformed rtpmap names no format we could send
    return found


def choose(offer: bytes, formats: Sequence[Format] = FORMATS) -> Choice:
    """
    The format of the offer's first usable audio stream the line sends.

    @raise sdp.SDPError: for SDP that cannot be read (400).
    @raise NotAcceptable: when nothing matches (488).
    """
    parsed = sdp.parse(offer)
    for index, media in enumerate(parsed.media):
        if media.kind != "audio" or not media.relayable or media.proto.upper() != "RTP/AVP":
            continue
        connection = parsed.connectionOf(media)
        if connection is None:
            continue
        rtpmaps = _rtpmaps(media)
        for written in media.formats.split():
            if not written.isdigit():
                continue
            number = int(written)
            described = rtpmaps.get(number, _STATIC.get(number) if number < 96 else None)
            if described is None:
                continue
            for candidate in formats:
                if candidate.matches(*described):
                    direction = _OPPOSITE.get(parsed.directionOf(media), "sendrecv")
                    return Choice(
                        candidate, number, (connection.address, media.port), direction, index, connection.family
                    )
        raise NotAcceptable("no audio format in common")
    raise NotAcceptable("no RTP/AVP audio stream")


def answer(offer: bytes, choice: Choice, address: str, port: int, version: int = 1) -> bytes:
    """
    The SDP answer to C{offer}: the chosen stream at C{address}:C{port},
    every other stream declined with port 0 (RFC 3264 6).
    """
    parsed = sdp.parse(offer)
    family = "IP6" if ":" in address else "IP4"
    session = int.from_bytes(os.urandom(4), "big")
    lines = [
        "v=0",
        f"o=aetasip {session} {version} IN {family} {address}",
        "s=aetasip test line",
        f"c=IN {family} {address}",
        "t=0 0",
    ]
    for index, media in enumerate(parsed.media):
        if index != choice.index:
            lines.append(f"m={media.kind} 0 {media.proto} {media.formats.split()[0] if media.formats else '0'}")
            continue
        fmt = choice.format
        lines.append(f"m=audio {port} RTP/AVP {choice.payloadType}")
        lines.append(f"a=rtpmap:{choice.payloadType} {fmt.rtpmap()}")
        if fmt.fmtp:
            lines.append(f"a=fmtp:{choice.payloadType} {fmt.fmtp}")
        lines.append(f"a=ptime:{fmt.ptime}")
        lines.append(f"a={choice.direction}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
