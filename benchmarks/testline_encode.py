"""
What one test line session costs: the CPU time to make 10 s of RTP
packets (programme, FFmpeg encoder through PyAV, packetiser) for each
format the line sends, and from it how many sessions one core could feed
in real time. The reference, measured in the same run, is the generated
programme alone (no encoding), so figures from a loaded machine compare.

    python3 benchmarks/testline_encode.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aetasip.testline.codecs import FORMATS, Encoder
from aetasip.testline.programme import Programme
from aetasip.testline.rtp import Packetiser


def session(fmt, seconds: float, encode: bool = True) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds to make C{seconds} of packets of C{fmt}."""
    encoder = Encoder(fmt)
    programme = Programme(fmt.sampleRate, fmt.channels)
    packetiser = Packetiser(fmt.staticType or 96)
    packets = int(seconds * 1000 / fmt.ptime)
    started = time.process_time()
    for _ in range(packets):
        samples = programme.read(encoder.framesPerPacket)
        if encode:
            packetiser.packet(encoder.encode(samples), encoder.timestampStep)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per format (default 10)")
    seconds = parser.parse_args().seconds
    print(f"{'format':<16} {'ptime':>5} {'CPU ms per s':>13} {'sessions/core':>14}")
    reference = session(FORMATS[0], seconds, encode=False)
    print(f"{'(programme only)':<16} {20:>5} {reference / seconds * 1000:>13.2f} {seconds / reference:>14.0f}")
    for fmt in FORMATS:
        used = session(fmt, seconds)
        print(f"{fmt.rtpmap():<16} {fmt.ptime:>5} {used / seconds * 1000:>13.2f} {seconds / used:>14.0f}")


if __name__ == "__main__":
    main()
