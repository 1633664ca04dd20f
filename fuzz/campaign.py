#!/usr/bin/env python3
"""
A coverage-guided fuzz campaign (atheris) over the SIP parser, the whole
SIP element and the STUN server: no exception out of the core, no failure
logged, no input slower than 10 ms of CPU time.

    python3 fuzz/campaign.py -atheris_runs=1000000 [CORPUS_DIR]
    python3 fuzz/campaign.py --recheck slow-*

The seeds (RFC 4475 torture messages, a REGISTER, an INVITE, STUN
requests) are written to the corpus directory when it is empty. A failing
input is written by libFuzzer to crash-* in the working directory (replay
it with the same command and the file as argument). Under atheris the code
is instrumented for coverage, several times slower: an input still slow
when measured again is written to slow-* and the time limit is judged by
C{--recheck}, which measures those inputs without instrumentation and
exits 1 if one takes more than 10 ms.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def recheck(paths: list[str]) -> int:
    from fuzz.targets import Failed, Targets

    targets = Targets()
    gc.disable()
    failed = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        targets.timer.suspects.append(("element", targets._onFreshElement, (data, targets._peer(), False)))
        targets.timer.suspects.append(("parse", targets._timedParse, (data,)))
        try:
            targets.timer.recheck()
        except Failed as e:
            failed += 1
            print(f"{path}: {e}"[:300])
    print(f"recheck: {len(paths)} inputs, {failed} slower than 10 ms, slowest {targets.timer.slowest * 1000:.2f} ms")
    return 1 if failed else 0


def main() -> None:
    if sys.argv[1:2] == ["--recheck"]:
        raise SystemExit(recheck(sys.argv[2:]))

    import atheris

    with atheris.instrument_imports(include=["aetasip"]):
        from fuzz.targets import STUN_SEEDS, Targets, seeds
    from aetasip.tap import tuneGarbageCollector

    targets = Targets(strict=False)
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
        for data in targets.timer.slowInputs:
            with open(f"slow-{hashlib.sha1(data).hexdigest()}", "wb") as f:
                f.write(data)
        print(
            f"fuzz: {targets.inputs} SIP element inputs, {len(targets.timer.slowInputs)} slow under instrumentation "
            f"(slow-*: run --recheck on them), slowest otherwise {targets.timer.slowest * 1000:.2f} ms of CPU, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )

    import atexit

    atexit.register(report)
    atheris.Setup(sys.argv, targets.all)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
