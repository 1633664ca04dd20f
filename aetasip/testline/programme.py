"""
The default programme of the test line, generated: a 1 kHz reference
tone at the EBU alignment level (-18 dBFS, EBU R68), alternating with a
channel-identification sequence in the manner of GLITS (the same tone,
the left channel interrupted once and the right channel twice for 250 ms
in each 4 seconds), so an engineer hears the level and which channel is
which, and a test can check both.

Sans-IO: L{Programme.read} gives the next samples; nothing here knows
time, sockets or codecs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

TONE_HZ = 1000
LEVEL_DBFS = -18.0
TONE_SECONDS = 8.0
IDENT_SECONDS = 4.0
GAP_SECONDS = 0.25

Samples = npt.NDArray[np.int16]
"""Interleaved signed 16-bit samples, shape C{(frames, channels)}."""


def amplitude(dbfs: float) -> float:
    """The peak of a sine at C{dbfs} (0 dBFS: a full-scale sine)."""
    return float(32767 * 10 ** (dbfs / 20))


class Programme:
    """
    The generated programme at one sample rate and channel count, looped
    for ever: L{TONE_SECONDS} of tone, then L{IDENT_SECONDS} of
    identification sequence.

    @ivar position: the index of the next sample frame.
    """

    def __init__(self, rate: int, channels: int = 1) -> None:
        if channels not in (1, 2):
            raise ValueError(f"{channels} channels: the programme is mono or stereo")
        self.rate = rate
        self.channels = channels
        self.position = 0
        self._cycle = round((TONE_SECONDS + IDENT_SECONDS) * rate)
        self._toneEnd = round(TONE_SECONDS * rate)
        self._gap = round(GAP_SECONDS * rate)
        self._peak = amplitude(LEVEL_DBFS)

    def read(self, frames: int) -> Samples:
        """The next C{frames} sample frames."""
        n = np.arange(self.position, self.position + frames, dtype=np.int64)
        self.position += frames
        # A whole number of tone periods fits in one second: the phase from the index
        # within the second never drifts, however long the call.
        tone = np.sin(2 * np.pi * TONE_HZ * (n % self.rate) / self.rate) * self._peak
        inCycle = n % self._cycle
        identAt = inCycle - self._toneEnd  # < 0 during the tone section
        left = tone * ~self._silent(identAt, 1)
        if self.channels == 1:
            return np.round(left).astype(np.int16).reshape(-1, 1)
        right = tone * ~self._silent(identAt, 2)
        return np.round(np.stack([left, right], axis=1)).astype(np.int16)

    def _silent(self, identAt: npt.NDArray[np.int64], gaps: int) -> npt.NDArray[np.bool_]:
        """Where a channel with C{gaps} interruptions is silent (each gap followed by as much tone)."""
        silent = np.zeros(identAt.shape, dtype=bool)
        for k in range(gaps):
            start = 2 * k * self._gap
            silent |= (identAt >= start) & (identAt < start + self._gap)
        return silent

    def inTone(self, frame: int) -> bool:
        """Is sample frame C{frame} in the continuous tone section?"""
        return frame % self._cycle < self._toneEnd
