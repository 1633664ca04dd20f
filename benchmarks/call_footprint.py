#!/usr/bin/env python3
"""
The Python code one call runs in aetasip's SIP core: how many distinct
functions (code objects), how many bytes of bytecode they hold, and how
many Python calls a call makes. Deterministic, like call_opcodes.py.

Runs benchmarks/call_cpu.py's call (or, with --register, its REGISTER
with digest): a warm-up, then N calls with a profile hook that notes
every Python function entered. The benchmark's own functions are left
out. --tree measures another checkout with that tree's own call_cpu.py:

    git worktree add -f /tmp/before afe7132
    python3 benchmarks/call_footprint.py --tree /tmp/before
    python3 benchmarks/call_footprint.py

Why it matters: bytecode (with its inline caches) is data the processor
reads, as are the functions, globals and constants around it. When what a
call touches outgrows a core's L2 cache (512 KiB here), the same number of
instructions runs slower: `call_instructions.py --cache` counts those
misses, this script shows which modules and functions make the code side
of them.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import types
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def footprint(tree: str, calls: int, register: bool) -> collections.Counter[types.CodeType]:
    """How often each code object of C{tree} (and its libraries) ran in C{calls} calls, after a warm-up."""
    sys.path.insert(0, os.path.join(tree, "benchmarks"))
    import call_cpu

    # Older trees' Bench has no call records to leave out, nor a tuned collector.
    bench = call_cpu.Bench(False) if "records" in call_cpu.Bench.__init__.__code__.co_varnames else call_cpu.Bench()
    if hasattr(call_cpu, "tuneGarbageCollector"):
        call_cpu.tuneGarbageCollector()
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            bench.run(1000, 800.0, register)
            entered: collections.Counter[types.CodeType] = collections.Counter()

            def hook(frame: Any, event: str, arg: Any) -> None:
                if event == "call":
                    entered[frame.f_code] += 1

            sys.setprofile(hook)
            try:
                bench.run(calls, 800.0, register)
            finally:
                sys.setprofile(None)
        finally:
            sys.stdout = stdout
    benchmarks = os.path.join(tree, "benchmarks")
    return collections.Counter({code: n for code, n in entered.items() if not code.co_filename.startswith(benchmarks)})


def where(code: types.CodeType, tree: str) -> str:
    """A short name for the file of C{code}: relative to the tree, or to site-packages."""
    name = code.co_filename
    if name.startswith(tree + os.sep):
        return name[len(tree) + 1 :]
    return name.rpartition("site-packages" + os.sep)[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls watched (bounded: 10 to 5,000)")
    parser.add_argument("--tree", default=os.path.dirname(HERE), help="the checkout to measure (default: this one)")
    parser.add_argument("--register", action="store_true", help="REGISTER with digest instead of a call")
    parser.add_argument("--top", type=int, default=15, help="modules and functions listed (bounded: 0 to 200)")
    args = parser.parse_args()
    tree = os.path.abspath(args.tree)
    calls = max(10, min(args.calls, 5000))
    top = max(0, min(args.top, 200))
    entered = footprint(tree, calls, args.register)
    what = "registration" if args.register else "call"
    size = sum(len(code.co_code) for code in entered)
    print(
        f"{tree}: {len(entered)} functions, {size:,} bytes of bytecode, "
        f"{sum(entered.values()) / calls:,.0f} Python calls per {what}"
    )
    if top:
        modules: collections.Counter[str] = collections.Counter()
        for code in entered:
            modules[where(code, tree)] += len(code.co_code)
        print("bytecode bytes by module:")
        for module, bytes_ in modules.most_common(top):
            print(f"  {bytes_:7,} {module}")
        print(f"largest functions (bytecode bytes, entries per {what}):")
        for code in sorted(entered, key=lambda code: -len(code.co_code))[:top]:
            print(
                f"  {len(code.co_code):7,} {entered[code] / calls:6.2f} "
                f"{where(code, tree)}:{code.co_firstlineno} {code.co_name}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
