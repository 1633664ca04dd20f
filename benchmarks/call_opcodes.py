#!/usr/bin/env python3
"""
Python bytecodes one call executes in aetasip's SIP core: the figure that
holds on a busy machine, where times of a few percent drown in noise.

Runs benchmarks/call_cpu.py's call (INVITE, 407, ACK, INVITE with digest,
100/180/200, ACK, BYE, 200, fed as bytes to the real SIPService on a
clock) twice, for N and 3N calls, under a C{sys.settrace} that counts
opcode events, and prints the difference per call of the difference (each
run is call_cpu.py's warm-up of up to 1,000 calls plus its N calls):
start-up and imports cancel out. Deterministic but for random tags and nonces.
It counts Python only: work in C (hashing, regular expressions, the
kernel) is not in it, so call_rate.py stays the figure that counts.

    python3 benchmarks/call_opcodes.py [--calls 300]

About 60 s for the default on the development VM (tracing is slow).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from types import FrameType
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def count(calls: int) -> int:
    """Opcodes executed by a call_cpu.py run of C{calls} calls, in a process of its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(calls)], check=True, capture_output=True, text=True
    ).stdout
    return int(out.strip().splitlines()[-1])


def ran(calls: int) -> int:
    """Calls a call_cpu.py run of C{calls} makes: its warm-up, then the measured ones."""
    return min(calls, 1000) + calls


def child(calls: int) -> None:
    sys.path.insert(0, HERE)
    sys.argv = ["call_cpu.py", "--repeat", "1", "--calls", str(calls)]
    import call_cpu

    executed = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal executed
        frame.f_trace_opcodes = True
        if event == "opcode":
            executed += 1
        return tracer

    sys.settrace(tracer)
    try:
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                call_cpu.main()
            finally:
                sys.stdout = stdout
    finally:
        sys.settrace(None)
    print(executed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="N (bounded: 50 to 5,000)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return 0
    calls = max(50, min(args.calls, 5000))
    small, large = count(calls), count(3 * calls)
    extra = ran(3 * calls) - ran(calls)
    print(f"{(large - small) / extra:,.0f} Python bytecodes per call ({calls} and {3 * calls} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
