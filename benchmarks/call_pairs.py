#!/usr/bin/env python3
"""
Server CPU per call of two trees, measured in alternating pairs: the
before/after figure of issue 8's speed criterion on a machine whose
speed drifts (the same tree varies by up to 30% from run to run here).

Runs each tree's own benchmarks/call_rate.py for one fixed step (--rate
calls/s for --duration seconds, call records off where the tree has
them), one tree then the other, --pairs times (each goes first in every
other pair), and prints each pair, its ratio,
and the median of the ratios: a drift slower than a pair cancels out in
its ratio, which a median of each tree's figures alone does not do.

    git worktree add -f /tmp/before afe7132
    python3 benchmarks/call_pairs.py --before /tmp/before --pairs 8

--together runs the two trees' steps at the same time instead, each
server pinned to a core of its own (swapped in every other pair) and the
four sipp free to run on either: both then see the same machine, second
for second, and the drift that a pair taken one after the other still
catches (on a shared VM it moves single pairs by +-15%) weighs on both.
Its rate is per tree (default 400 calls/s, so both fit on two cores with
their sipp).

--register compares register_rate.py's REGISTER with digest instead.
Every step is bounded in calls and time, traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def knowsObservers(tree: str, script: str) -> bool:
    """Has C{tree}'s C{script} the --observers option (trees with call records)?"""
    command = [sys.executable, os.path.join("benchmarks", script), "--help"]
    return "--observers" in subprocess.run(command, cwd=tree, capture_output=True, text=True).stdout


def command(tree: str, script: str, rate: int, duration: int, cores: tuple[str, str] | None) -> list[str]:
    """The command of one step of C{tree}'s C{script}; C{cores}: its server's and its sipp's."""
    command = [sys.executable, os.path.join("benchmarks", script)]
    command += ["--start", str(rate), "--steps", "1", "--duration", str(duration)]
    if cores is not None:
        command += ["--server-core", cores[0], "--sipp-core", cores[1]]
    if knowsObservers(tree, script):
        command.append("--observers=")
    return command


def usPerCall(output: str) -> float | None:
    """Server CPU per call (us) of a clean step, from its output; else C{None}."""
    match = re.search(r"(\d+) us/call -> clean", output)
    return float(match.group(1)) if match else None


def step(tree: str, script: str, rate: int, duration: int) -> float | None:
    """Server CPU per call (us) of one clean step of C{tree}'s C{script}, or C{None}."""
    run = command(tree, script, rate, duration, None)
    result = subprocess.run(run, cwd=tree, capture_output=True, text=True, timeout=duration * 10 + 300)
    return usPerCall(result.stdout)


def together(trees: list[str], script: str, rate: int, duration: int, pair: int) -> list[float | None]:
    """
    One step of each tree at the same time: the first tree's server on core
    0 in odd pairs (1 in even ones), the other's on the other core, every
    sipp on both cores.
    """
    cores = [("0", "0,1"), ("1", "0,1")] if pair % 2 else [("1", "0,1"), ("0", "0,1")]
    running = [
        subprocess.Popen(
            command(tree, script, rate, duration, core), cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        for tree, core in zip(trees, cores, strict=True)
    ]
    figures = []
    for process in running:
        try:
            output, _ = process.communicate(timeout=duration * 10 + 300)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        figures.append(usPerCall(output.decode(errors="replace")))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the reference checkout")
    parser.add_argument("--after", default=TOP, help="the checkout compared (default: this one)")
    parser.add_argument("--pairs", type=int, default=6, help="pairs (bounded: 1 to 30)")
    parser.add_argument("--rate", type=int, default=0, help="calls/s of the step (default: 700, REGISTER 3000)")
    parser.add_argument("--duration", type=int, default=8, help="seconds of the step (bounded: 4 to 60)")
    parser.add_argument("--register", action="store_true", help="REGISTER with digest instead of calls")
    parser.add_argument("--together", action="store_true", help="both trees' steps at the same time (see above)")
    args = parser.parse_args()
    script = "register_rate.py" if args.register else "call_rate.py"
    default = (1500 if args.register else 400) if args.together else (3000 if args.register else 700)
    rate = max(10, min(args.rate or default, 5000))
    duration = max(4, min(args.duration, 60))
    ratios = []
    for pair in range(1, max(1, min(args.pairs, 30)) + 1):
        # Each tree goes first in every other pair: a run that is slower for
        # coming second (the same tree against itself gave +7.5% once) weighs
        # on both alike.
        trees = [os.path.abspath(args.before), os.path.abspath(args.after)]
        if args.together:
            before, after = together(trees, script, rate, duration, pair)
        else:
            figures = [step(tree, script, rate, duration) for tree in (trees if pair % 2 else trees[::-1])]
            before, after = figures if pair % 2 else figures[::-1]
        if before is None or after is None:
            print(f"pair {pair}: a step was not clean (before {before}, after {after}); left out", flush=True)
            continue
        ratios.append(after / before)
        print(f"pair {pair}: {before:.0f} -> {after:.0f} us/call ({after / before - 1:+.1%})", flush=True)
    if not ratios:
        print("no clean pair")
        return 1
    mode = ", together" if args.together else ""
    print(
        f"median of {len(ratios)} ratios: {statistics.median(ratios) - 1:+.1%} ({script}, {rate}/s, {duration} s{mode})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
