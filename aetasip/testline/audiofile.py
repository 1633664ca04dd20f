"""
A programme from an audio file (any format FFmpeg decodes, through
PyAV), resampled to what a session sends and looped for ever.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from aetasip.testline.programme import Samples


class ProgrammeFileError(ValueError):
    """The file cannot be opened or has no audio stream; C{str()} says why."""


def check(path: str) -> None:
    """
    Open C{path} and decode its first audio frame.

    @raise ProgrammeFileError: when that fails.
    """
    FileProgramme(path, 8000, 1).read(1)


class FileProgramme:
    """
    The audio of C{path} at C{rate} and C{channels} (int16 frames), from
    its start again when it ends. Same interface as
    L{aetasip.testline.programme.Programme}.
    """

    def __init__(self, path: str, rate: int, channels: int) -> None:
        self.path = path
        self.rate = rate
        self.channels = channels
        self._resampler: Any = None
        self._upmix = False
        self._pending = np.zeros((0, channels), dtype=np.int16)
        self._container: Any = None
        self._frames: Any = None
        self._open()

    def _open(self) -> None:
        try:
            container = av.open(self.path)
            stream = container.streams.audio[0]
        except (av.FFmpegError, OSError, IndexError) as e:
            raise ProgrammeFileError(f"{self.path}: {_reason(e)}") from None
        if self._container is not None:
            self._container.close()
        if self._resampler is None:
            # A mono file goes to both channels at its level (FFmpeg's upmix would take 3 dB off).
            self._upmix = self.channels == 2 and stream.codec_context.channels == 1
            layout = "mono" if self.channels == 1 or self._upmix else "stereo"
            self._resampler = av.AudioResampler(format="s16", layout=layout, rate=self.rate)
        self._container = container
        self._frames = container.decode(stream)

    def _more(self) -> Samples:
        """The next decoded samples, from the start again at the end of the file."""
        for attempt in range(2):
            try:
                frame = next(self._frames)
            except StopIteration:
                if attempt:
                    break
                self._open()
                continue
            except av.FFmpegError as e:
                raise ProgrammeFileError(f"{self.path}: {_reason(e)}") from None
            frame.pts = None  # let the resampler number its output
            width = 1 if self._upmix else self.channels
            chunks = [f.to_ndarray().reshape(-1, width) for f in self._resampler.resample(frame)]
            samples = np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.int16)
            return np.repeat(samples, 2, axis=1) if self._upmix else samples
        raise ProgrammeFileError(f"{self.path}: no audio")

    def read(self, frames: int) -> Samples:
        """The next C{frames} sample frames."""
        while len(self._pending) < frames:
            self._pending = np.concatenate([self._pending, self._more()])
        out, self._pending = self._pending[:frames], self._pending[frames:]
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _reason(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
