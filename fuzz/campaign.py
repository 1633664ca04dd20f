#!/usr/bin/env python3
"""
A coverage-guided fuzz campaign (atheris) over the SIP parser, the whole
SIP element and the STUN server: no exception out of the core, no failure
logged, no input slower than 10 ms of CPU time.

    python3 fuzz/campaign.py -atheris_runs=1000000 [CORPUS_DIR]

The seeds (RFC 4475 torture messages, a REGISTER, an INVITE, STUN
requests) are written to the corpus directory when it is empty. Prints
the inputs run, the slowest input and the time taken; a failing input is
written by libFuzzer to crash-* in the working directory (replay it with
the same command and the file as argument).
"""

from __future__ import annotations

import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import atheris

with atheris.instrument_imports(include=["aetasip"]):
    from fuzz.targets import STUN_SEEDS, Targets, seeds


def main() -> None:
    from aetasip.tap import tuneGarbageCollector

    targets = Targets()
    # The service's collector settings, and no collection during an input
    # (Targets.all collects between inputs): its pauses are no input's doing.
    tuneGarbageCollector()
    gc.disable()
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    for directory in corpus:
        os.makedirs(directory, exist_ok=True)
        if not os.listdir(directory):
            for i, seed in enumerate(seeds() + STUN_SEEDS):
                with open(os.path.join(directory, f"seed-{i:03d}"), "wb") as f:
                    f.write(seed)
    started = time.monotonic()

    def report() -> None:
        targets.timer.recheck()
        print(
            f"fuzz: {targets.inputs} SIP element inputs, slowest input {targets.timer.slowest * 1000:.2f} ms of CPU, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )

    import atexit

    atexit.register(report)
    atheris.Setup(sys.argv, targets.all)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
