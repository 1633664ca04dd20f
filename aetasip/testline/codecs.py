"""
The payload formats the test line sends, and their encoders: FFmpeg's,
through PyAV (never a hand-written codec).

A L{Format} is what SDP names (encoding name, RTP clock rate, channels)
with its static payload type where RFC 3551 gives one; L{Encoder} turns
the programme's samples into one RTP payload per packet time.
"""

from __future__ import annotations

import attrs
import av
import numpy as np

from aetasip.testline.programme import Samples


@attrs.frozen
class Format:
    """
    One payload format.

    @ivar name: the encoding name as in C{a=rtpmap} (compared without case).
    @ivar clockRate: the RTP clock rate.
    @ivar channels: channels in the stream.
    @ivar staticType: its RFC 3551 static payload type, or C{None}.
    @ivar codec: the FFmpeg encoder's name.
    @ivar sampleRate: the rate of the samples fed to the encoder (G.722's
        is twice its RTP clock rate, RFC 3551 4.5.2).
    @ivar ptime: milliseconds of audio per packet.
    @ivar fmtp: the C{a=fmtp} parameters of the answer, or C{None}.
    @ivar bitRate: the encoder's bit rate, for those that take one.
    @ivar header: what precedes the encoded audio in each payload.
    @ivar encodedChannels: channels of the audio encoded, when not
        C{channels} (Opus is C{opus/48000/2} in SDP whether it carries
        mono or stereo, RFC 7587 7).
    """

    name: str
    clockRate: int
    channels: int
    staticType: int | None
    codec: str
    sampleRate: int
    ptime: int = 20
    fmtp: str | None = None
    bitRate: int = 0
    header: bytes = b""
    encodedChannels: int = 0

    @property
    def audioChannels(self) -> int:
        """Channels of the audio encoded (and of the programme read for it)."""
        return self.encodedChannels or self.channels

    def matches(self, name: str, clockRate: int, channels: int) -> bool:
        if name.lower() != self.name.lower() or clockRate != self.clockRate:
            return False
        # MPEG audio says its channels in its frames: MPA/90000 names every mode (RFC 3551 4.5.13).
        return channels == self.channels or self.name == "MPA"

    def rtpmap(self) -> str:
        if self.name == "MPA":
            # Its frames say the mode; an explicit MPA/90000/1 is answered in kind.
            return f"{self.name}/{self.clockRate}" + ("/1" if self.channels == 1 else "")
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clockRate}{suffix}"


PCMU = Format("PCMU", 8000, 1, 0, "pcm_mulaw", 8000)
PCMA = Format("PCMA", 8000, 1, 8, "pcm_alaw", 8000)
G722 = Format("G722", 8000, 1, 9, "g722", 16000)
# L16 is network byte order (RFC 3551 4.5.11). 5 ms packets keep 48 kHz stereo
# (960 bytes) within an Ethernet MTU.
L16 = tuple(
    Format("L16", rate, channels, None, "pcm_s16be", rate, ptime=5) for rate in (48000, 32000) for channels in (2, 1)
)
# RFC 7587: always opus/48000/2 in SDP. The line sends stereo when the caller's
# fmtp says it prefers to receive it (stereo=1), else mono (stereo=0 is the default).
OPUS = Format("opus", 48000, 2, None, "libopus", 48000, fmtp="sprop-stereo=1", bitRate=128_000)
OPUS_MONO = Format("opus", 48000, 2, None, "libopus", 48000, fmtp="sprop-stereo=0", bitRate=64_000, encodedChannels=1)

# MPEG-1 Layer II, 48 kHz stereo at 256 kbit/s: one 1152-sample frame (24 ms) per
# packet behind RFC 2250's 4-byte header (MBZ, fragment offset 0), on a 90 kHz clock.
# An offer naming one channel (MPA/90000/1) gets single-channel frames at 128 kbit/s.
MPA = Format("MPA", 90000, 2, 14, "mp2", 48000, ptime=24, bitRate=256_000, header=b"\x00\x00\x00\x00")
MPA_MONO = attrs.evolve(MPA, channels=1, bitRate=128_000)

FORMATS: tuple[Format, ...] = (PCMA, PCMU, G722, *L16, OPUS, MPA)
"""What the test line can send."""


class Encoder:
    """
    Encodes samples of one L{Format} with FFmpeg (PyAV), one packet time
    (L{Format.ptime}) at a time.
    """

    def __init__(self, format: Format) -> None:
        self.format = format
        context = av.CodecContext.create(format.codec, "w")
        context.sample_rate = format.sampleRate  # type: ignore[attr-defined]
        context.format = "s16"  # type: ignore[attr-defined]
        context.layout = "mono" if format.audioChannels == 1 else "stereo"  # type: ignore[attr-defined]
        if format.bitRate:
            context.bit_rate = format.bitRate
        context.open()
        self._context = context
        self._pts = 0

    @property
    def framesPerPacket(self) -> int:
        """Sample frames (at the encoder's rate) in one packet."""
        return self.format.sampleRate * self.format.ptime // 1000

    @property
    def timestampStep(self) -> int:
        """The RTP timestamp increment of one packet."""
        return self.format.clockRate * self.format.ptime // 1000

    def encode(self, samples: Samples) -> bytes:
        """
        The payload of one packet for C{samples} (L{framesPerPacket}
        frames, int16, shape C{(frames, channels)}); C{b""} when the
        encoder holds them back (its start-up delay): no packet then.
        """
        layout = "mono" if self.format.audioChannels == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = self.format.sampleRate
        frame.pts = self._pts
        self._pts += len(samples)
        encoded = b"".join(bytes(packet) for packet in self._context.encode(frame))  # type: ignore[attr-defined]
        return self.format.header + encoded if encoded else b""
