"""
The test line's side of the SDP offer/answer (RFC 3264), sans-IO: the
first audio stream of the offer is answered with the first of its
formats (in the caller's order of preference) the line can send; every
other stream is declined (port 0). No format in common: L{NotAcceptable}
(the caller gets 488).

A caller that sends no offer (an INVITE or a re-INVITE without SDP) gets
the line's own offer (L{makeOffer}: every format it sends), and its
answer (in the ACK) is read with the same L{choose}, the payload types
of that offer filling in what the answer leaves out.

Opus (RFC 7587 7) is C{opus/48000/2} in SDP whatever it carries: the
line sends stereo when the other side's C{fmtp} says it prefers to
receive stereo (C{stereo=1}), else mono (C{stereo=0} is the default),
and says which in its C{sprop-stereo}.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs

from aetasip.relay import sdp
from aetasip.testline.codecs import FORMATS, G722, L16, MPA, MPA_MONO, OPUS, OPUS_MONO, PCMA, PCMU, Format

_STATIC = {
    0: ("PCMU", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    14: ("MPA", 90000, 0),
}
"""
RFC 3551 table 4: the static audio payload types an offer may give
without rtpmap (channels 0: MPEG audio's are not said, its frames carry
the mode).
"""

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
            # Without a channel count, one (RFC 8866 6.6); MPEG audio's is then unsaid (0).
            channels = int(parts[2]) if len(parts) > 2 else (0 if parts[0].upper() == "MPA" else 1)
            found[int(number)] = (parts[0], int(parts[1]), channels)
        except (ValueError, IndexError, UnicodeDecodeError):
            continue  # a malformed rtpmap names no format we could send
    return found


def _fmtps(media: sdp.Media) -> dict[int, str]:
    found: dict[int, str] = {}
    for line in media.lines:
        if line.type != b"a" or not line.value.lower().startswith(b"fmtp:"):
            continue
        try:
            number, parameters = line.value[5:].decode("ascii").split(None, 1)
            found[int(number)] = parameters.strip()
        except (ValueError, UnicodeDecodeError):
            continue
    return found


def _parameter(fmtp: str | None, name: str) -> str | None:
    """The value of C{name} in an C{a=fmtp} parameter list (C{a=b; c=d}), or C{None}."""
    for item in (fmtp or "").split(";"):
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _opus(fmtp: str | None) -> Format:
    """Stereo when the receiver says it prefers it (RFC 7587 7: C{stereo=1}), else mono."""
    return OPUS if _parameter(fmtp, "stereo") == "1" else OPUS_MONO


def _mpa(channels: int) -> Format:
    """Mono on an explicit C{MPA/90000/1}, else stereo (its frames say the mode, RFC 2250)."""
    return MPA_MONO if channels == 1 else MPA


def choose(
    offer: bytes, formats: Sequence[Format] = FORMATS, known: dict[int, tuple[str, int, int]] | None = None
) -> Choice:
    """
    The format of the offer's (or answer's) first usable audio stream
    the line sends.

    @param known: payload types an answer may use without C{a=rtpmap}
        (those of the offer it answers).
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
        rtpmaps = {**(known or {}), **_rtpmaps(media)}
        fmtps = _fmtps(media)
        for written in media.formats.split():
            if not written.isdigit():
                continue
            number = int(written)
            described = rtpmaps.get(number, _STATIC.get(number) if number < 96 else None)
            if described is None:
                continue
            for candidate in formats:
                if candidate.matches(*described):
                    if candidate.name == "opus":
                        candidate = _opus(fmtps.get(number))
                    elif candidate.name == "MPA":
                        candidate = _mpa(described[2])
                    direction = _OPPOSITE.get(parsed.directionOf(media), "sendrecv")
                    if connection.unspecified:
                        # c=0.0.0.0: held the old way (RFC 3264 8.4), it receives nothing.
                        direction = {"sendrecv": "recvonly", "sendonly": "inactive"}.get(direction, direction)
                    return Choice(
                        candidate, number, (connection.address, media.port), direction, index, connection.family
                    )
        raise NotAcceptable("no audio format in common")
    raise NotAcceptable("no RTP/AVP audio stream")


OFFERED: tuple[tuple[int, Format], ...] = (
    (8, PCMA),
    (0, PCMU),
    (9, G722),
    (96, L16[0]),
    (97, L16[1]),
    (98, L16[2]),
    (99, L16[3]),
    (111, OPUS),
    (14, MPA),
)
"""The payload types of the line's own offer, in its order of preference."""

OFFERED_MAPS = {number: (fmt.name, fmt.clockRate, fmt.channels) for number, fmt in OFFERED}
"""What those payload types are, for an answer that leaves out its rtpmaps."""


def makeOffer(address: str, port: int, sessionID: int, version: int, first: int | None = None) -> bytes:
    """
    The line's offer (to an INVITE or re-INVITE without SDP): every
    format it sends, in its order of preference, the payload type
    C{first} (the one in use) first.
    """
    family = "IP6" if ":" in address else "IP4"
    offered = sorted(OFFERED, key=lambda item: item[0] != first)
    lines = [
        "v=0",
        f"o=aetasip {sessionID} {version} IN {family} {address}",
        "s=aetasip test line",
        f"c=IN {family} {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(number) for number, _ in offered)}",
    ]
    for number, fmt in offered:
        lines.append(f"a=rtpmap:{number} {fmt.rtpmap()}")
        if fmt.name == "opus":
            # It takes and sends stereo (RFC 7587 7).
            lines.append(f"a=fmtp:{number} stereo=1; sprop-stereo=1")
    lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def answer(
    offer: bytes, choice: Choice, address: str, port: int, version: int = 1, sessionID: int | None = None
) -> bytes:
    """
    The SDP answer to C{offer}: the chosen stream at C{address}:C{port},
    every other stream declined with port 0 (RFC 3264 6). A session's
    later answers keep its C{sessionID} with a higher C{version} (RFC
    3264 8).
    """
    parsed = sdp.parse(offer)
    family = "IP6" if ":" in address else "IP4"
    session = sessionID if sessionID is not None else int.from_bytes(os.urandom(4), "big")
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
