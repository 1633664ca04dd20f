"""
Checking received audio in the tests: RTP payloads decoded with FFmpeg
(PyAV), the frequency and level of a tone measured with an FFT.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import av
import numpy as np

DECODERS = {
    "PCMA": "pcm_alaw",
    "PCMU": "pcm_mulaw",
    "G722": "g722",
    "L16": "pcm_s16be",
    "OPUS": "libopus",
    "MPA": "mp2",
}


def decode(encoding: str, rate: int, payloads: Iterable[bytes], channels: int = 1) -> np.ndarray:
    """
    The first channel of C{payloads} (in order) as floats in [-1, 1];
    C{rate} is the sample rate (16000 for G.722).
    """
    context = av.CodecContext.create(DECODERS[encoding.upper()], "r")
    context.sample_rate = rate  # type: ignore[attr-defined]
    context.layout = "mono" if channels == 1 else "stereo"  # type: ignore[attr-defined]
    chunks = []
    for payload in payloads:
        if encoding.upper() == "MPA":
            payload = payload[4:]  # RFC 2250's header
        for frame in context.decode(av.Packet(payload)):  # type: ignore[attr-defined]
            array = frame.to_ndarray()
            if frame.format.is_planar:
                first = array[0]
            else:
                first = array.reshape(-1, channels)[:, 0]
            if array.dtype.kind == "f":
                first = first * 32768
            chunks.append(first.astype(np.float64))
    samples = np.concatenate(chunks) if chunks else np.zeros(0)
    return samples / 32768


def dominantFrequency(samples: np.ndarray, rate: int) -> float:
    """The frequency of the strongest FFT bin (Hann window), in Hz."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum[1:]) + 1) * rate / len(samples)


def levelDBFS(samples: np.ndarray) -> float:
    """The level of a sine in dBFS (its RMS + 3.01 dB: 0 dBFS is a full-scale sine)."""
    rms = math.sqrt(float(np.mean(samples**2)))
    return 20 * math.log10(rms * math.sqrt(2)) if rms else -math.inf
