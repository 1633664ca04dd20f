#!/usr/bin/env python3
"""
Memory a call leaves behind in aetasip's SIP core while the transactions
of its messages linger (64*T1 = 32 s, RFC 3261 and RFC 6026): what a
busy server keeps, the garbage collector walks and the caches hold.

Runs benchmarks/call_cpu.py's call (or, with --register, its REGISTER)
on its clock at --rate calls/s for --seconds (past the 32 s of lingering,
so that calls end as fast as they start) and prints what that steady
state keeps per call more than the idle core: the memory blocks Python
has allocated (sys.getallocatedblocks) and the
objects the garbage collector tracks, by type with --types. Deterministic
(no sockets, no wall-clock time), so it runs alongside other work; a
before/after of two trees with --tree, in the same run:

    git worktree add -f /tmp/before afe7132
    python3 benchmarks/call_memory.py --tree /tmp/before
    python3 benchmarks/call_memory.py

Each tree runs in a process of its own, with its own call_cpu.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Run in the measured tree's process: its call_cpu.py, its aetasip.
MEASURE = r"""
import collections, gc, json, os, sys
tree, calls, rate, register = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
sys.path[:0] = [tree, os.path.join(tree, "benchmarks")]
os.chdir(tree)
import call_cpu
from aetasip.tap import tuneGarbageCollector
try:
    bench = call_cpu.Bench(False)
except TypeError:  # trees whose Bench takes no records flag
    bench = call_cpu.Bench()
tuneGarbageCollector()
bench.run(1000, rate, register)  # warm-up: caches, first allocations
bench.clock.advance(100.0)  # every timer of the warm-up fires: nothing lingers
gc.collect()
def census():
    return collections.Counter(type(o).__name__ for o in gc.get_objects())
blocks, objects = sys.getallocatedblocks(), census()
bench.run(calls, rate, register)  # longer than 32 s of calls: a steady state
gc.collect()
after = census()
json.dump({
    "blocks": sys.getallocatedblocks() - blocks,
    "kept": {name: after[name] - objects.get(name, 0) for name in after},
}, sys.stdout)
"""


def measure(tree: str, calls: int, rate: float, register: bool) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, tree, str(calls), str(rate), "1" if register else "0"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONHASHSEED="0"),
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{tree}: {result.stderr.strip()[-500:]}")
    # Plugins of the installed tree may complain on stderr about an older one: not ours.
    data: dict[str, object] = json.loads(result.stdout)
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", default=os.path.dirname(HERE), help="the checkout to measure (default: this one)")
    parser.add_argument("--rate", type=float, default=800.0, help="calls/s the clock moves at (bounded: 10 to 5,000)")
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds of calls measured (bounded: 33 to 600)")
    parser.add_argument("--register", action="store_true", help="REGISTER with digest instead of a call")
    parser.add_argument("--types", type=int, default=0, metavar="N", help="also the N types kept most per call")
    args = parser.parse_args()
    rate = max(10.0, min(args.rate, 5000.0))
    calls = int(rate * max(33.0, min(args.seconds, 600.0)))
    tree = os.path.abspath(args.tree)
    data = measure(tree, calls, rate, args.register)
    # In the steady state every call's leftovers stay 32 s: what the run
    # added, divided by the calls of 32 s.
    window = rate * 32
    kept: dict[str, int] = data["kept"]  # type: ignore[assignment]
    blocks: int = data["blocks"]  # type: ignore[assignment]
    what = "REGISTER" if args.register else "call"
    print(
        f"{tree}: {sum(kept.values()) / window:.1f} tracked objects and {blocks / window:.1f} memory blocks"
        f" kept per {what} ({rate:g}/s, 32 s of lingering)"
    )
    for name, count in sorted(kept.items(), key=lambda item: -item[1])[: args.types]:
        print(f"  {count / window:7.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
