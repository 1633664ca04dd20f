#!/usr/bin/env python3
"""
Machine instructions one call costs in aetasip's SIP core, counted by
valgrind's callgrind: deterministic like call_opcodes.py, but it includes
the work in C (the interpreter itself, regular expressions, hashing,
allocation, the garbage collector) that bytecodes leave out.

Runs benchmarks/call_cpu.py's call (or, with --register, its REGISTER
with digest) under callgrind twice, for N and 3N calls, each in a process
of its own, and prints the difference per call (start-up, imports and
call_cpu.py's warm-up cancel out). --tree measures another checkout with
that tree's own call_cpu.py (a before/after of two trees):

    git worktree add -f /tmp/before afe7132
    python3 benchmarks/call_instructions.py --tree /tmp/before
    python3 benchmarks/call_instructions.py

--cache also simulates the caches, with a last level the size of one
core's L2 (512 KiB), and prints the misses per call: two trees can run
the same instructions at different speeds when one touches more memory
(code objects, objects) per call than the L2 holds.

--keep DIR keeps the callgrind files (callgrind_annotate DIR/large.out
shows where the instructions go). Needs valgrind; about 2 minutes for the
default on the development VM.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


# The simulated caches of --cache: valgrind's first level (the host's), and
# a last level the size of one core's L2 (512 KiB, 8-way, on the development
# VM's AMD EPYC) rather than the shared L3 valgrind would take.
CACHE_OPTIONS = ["--cache-sim=yes", "--LL=524288,8,64"]


def count(tree: str, calls: int, options: list[str], out: str, cache: bool = False) -> dict[str, int]:
    """The events (see L{countsOf}) of a call_cpu.py run of C{calls} calls, in a process of its own."""
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        *(CACHE_OPTIONS if cache else []),
        sys.executable,
        __file__,
        "--tree",
        tree,
        "--child",
        str(calls),
        *options,
    ]
    # One OpenBLAS thread (numpy, imported by the test line): its idle
    # workers spin under valgrind, which runs threads in turn, and would
    # add their spinning to the count.
    environment = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    subprocess.run(command, check=True, capture_output=True, env=environment)
    return countsOf(out)


def countsOf(out: str) -> dict[str, int]:
    """
    Every event counted in the callgrind file C{out}, by name: C{Ir}
    (instructions), and with --cache-sim=yes the simulated cache misses
    (C{D1mr}, C{D1mw}, C{ILmr}, C{DLmr}, C{DLmw}...).
    """
    names = ["Ir"]
    with open(out) as data:
        for line in data:
            if line.startswith("events:"):
                names = line.split()[1:]
            match = re.match(r"(?:summary|totals):((?: \d+)+)", line)
            if match:
                return dict(zip(names, map(int, match.group(1).split()), strict=False))
    raise RuntimeError(f"no total in {out}")


def ran(calls: int) -> int:
    """Calls a call_cpu.py run of C{calls} makes: its warm-up, then the measured ones."""
    return min(calls, 1000) + calls


def child(tree: str, calls: int, options: list[str]) -> None:
    # The tree's own call_cpu.py (older trees build the service otherwise);
    # it puts its tree first on the path.
    sys.path.insert(0, os.path.join(tree, "benchmarks"))
    sys.argv = ["call_cpu.py", "--repeat", "1", "--calls", str(calls), *options]
    import call_cpu

    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            call_cpu.main()
        finally:
            sys.stdout = stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="N (bounded: 50 to 5,000)")
    parser.add_argument("--tree", default=os.path.dirname(HERE), help="the checkout to measure (default: this one)")
    parser.add_argument("--register", action="store_true", help="REGISTER with digest instead of a call")
    parser.add_argument("--records", action="store_true", help="with the call records observer (trees that have it)")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files in DIR")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="also simulate the caches, the last level sized as one core's L2, and print the misses per call",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tree = os.path.abspath(args.tree)
    options = (["--register"] if args.register else []) + (["--records"] if args.records else [])
    if args.child is not None:
        child(tree, args.child, options)
        return 0
    calls = max(50, min(args.calls, 5000))
    directory = args.keep or tempfile.mkdtemp(prefix="aetasip-callgrind-")
    os.makedirs(directory, exist_ok=True)
    small = count(tree, calls, options, os.path.join(directory, "small.out"), args.cache)
    large = count(tree, 3 * calls, options, os.path.join(directory, "large.out"), args.cache)
    if not args.keep:
        for name in ("small.out", "large.out"):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    extra = ran(3 * calls) - ran(calls)
    what = "registration" if args.register else "call"
    perCall = {name: (large[name] - small[name]) / extra for name in large}
    print(f"{perCall['Ir']:,.0f} instructions per {what} ({tree}; {calls} and {3 * calls} {what}s)")
    if args.cache:
        first = sum(perCall[name] for name in ("I1mr", "D1mr", "D1mw"))
        code = perCall["ILmr"]
        data = perCall["DLmr"] + perCall["DLmw"]
        print(
            f"  simulated misses per {what}: first level {first:,.0f}; L2-sized level {code + data:,.0f} ({code:,.0f} code, {data:,.0f} data)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
