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
    @ivar sampleRate: the rate of the samples fed to the encoder.
    """

    name: str
    clockRate: int
    channels: int
    staticType: int | None
    codec: str
    sampleRate: int

    def matches(self, name: str, clockRate: int, channels: int) -> bool:
        return name.lower() == self.name.lower() and clockRate == self.clockRate and channels == self.channels

    def rtpmap(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clockRate}{suffix}"


PCMU = Format("PCMU", 8000, 1, 0, "pcm_mulaw", 8000)
PCMA = Format("PCMA", 8000, 1, 8, "pcm_alaw", 8000)

FORMATS: tuple[Format, ...] = (PCMA, PCMU)
"""What the test line can send (more come with G.722, L16, Opus, MPEG audio)."""

PTIME_MS = 20


class Encoder:
    """
    Encodes samples of one L{Format} with FFmpeg (PyAV), one packet time
    (L{PTIME_MS}) at a time.
    """

    def __init__(self, format: Format) -> None:
        self.format = format
        context = av.CodecContext.create(format.codec, "w")
        context.sample_rate = format.sampleRate  # type: ignore[attr-defined]
        context.format = "s16"  # type: ignore[attr-defined]
        context.layout = "mono" if format.channels == 1 else "stereo"  # type: ignore[attr-defined]
        context.open()
        self._context = context
        self._pts = 0

    @property
    def framesPerPacket(self) -> int:
        """Sample frames (at the encoder's rate) in one packet."""
        return self.format.sampleRate * PTIME_MS // 1000

    @property
    def timestampStep(self) -> int:
        """The RTP timestamp increment of one packet."""
        return self.format.clockRate * PTIME_MS // 1000

    def encode(self, samples: Samples) -> bytes:
        """
        The payload of one packet for C{samples} (L{framesPerPacket}
        frames, int16, shape C{(frames, channels)}).
        """
        layout = "mono" if self.format.channels == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = self.format.sampleRate
        frame.pts = self._pts
        self._pts += len(samples)
        return b"".join(bytes(packet) for packet in self._context.encode(frame))  # type: ignore[attr-defined]
