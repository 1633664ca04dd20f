#!/usr/bin/env python3
"""
Machine instructions one authenticated call costs the whole running
service, counted by valgrind's callgrind: twistd with every service the
configuration starts, its sockets, transports, logging and timers, not
only the SIP core that call_instructions.py builds.

Starts `twistd -n aetasip` under callgrind on 127.0.0.1 with a fresh
SQLite store (50 callers, one callee, as call_rate.py), a sipp callee
that registers and answers, and sipp running call_uac.xml (INVITE, 407,
ACK, INVITE with digest, 100/180/200, ACK, BYE, 200) for N calls at a low
steady rate over T seconds; then again for 3N calls over the same T
seconds in a new process, and prints the difference per call: start-up,
imports, shut-down and the service's work per second (timers, pings,
announcements, which at a low rate under valgrind would otherwise weigh
like a large share of each call) cancel out. --tree measures another checkout (a
before/after of two trees in the same run of the machine):

    git worktree add -f /tmp/before afe7132
    python3 benchmarks/service_instructions.py --tree /tmp/before
    python3 benchmarks/service_instructions.py

Instruction counts do not depend on what else the machine runs, unlike
call_rate.py's timings. --keep DIR keeps the callgrind files and logs
(callgrind_annotate DIR/large.out). About 5 minutes for the default.
Traffic stays on 127.0.0.1; every sipp run is bounded in calls and time.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from call_instructions import countsOf  # noqa: E402
from sipprate import SIPP_BUFFER, freePort, writeConfig  # noqa: E402

CALLEE = "30000000"

PROVISION = """
import sys
from aetasip.store import Store
workdir, accounts, callee = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = Store(f"sqlite:///{workdir}/bench.db")
store.open()
for i in range(accounts):
    store.addAccount(str(20000000 + i), "premium", f"bench-{i}", "aetasip")
store.addAccount(callee, "premium", "callee", "aetasip")
store.close()
"""


def provision(tree: str, workdir: str, accounts: int) -> None:
    """The store (made by C{tree}'s own code: schemas differ) and sipp's injection files."""
    env = dict(os.environ, PYTHONPATH=tree)
    subprocess.run([sys.executable, "-c", PROVISION, workdir, str(accounts), CALLEE], check=True, env=env, cwd=workdir)
    with open(os.path.join(workdir, "callers.csv"), "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(accounts):
            number = str(20000000 + i)
            f.write(f"{number};[authentication username={number} password=bench-{i}];{CALLEE}\n")
    with open(os.path.join(workdir, "callee.csv"), "w") as f:
        f.write(f"SEQUENTIAL\n{CALLEE};[authentication username={CALLEE} password=callee]\n")


def run(
    tree: str,
    workdir: str,
    calls: int,
    seconds: int,
    observers: str | None,
    out: str,
    register: bool = False,
    cacheSim: bool = False,
) -> dict[str, int]:
    """The counts of one service process that carries C{calls} calls (or REGISTERs)."""
    port = freePort()
    names = None if observers is None else [name for name in observers.split(",") if name]
    conf = writeConfig(workdir, port, names, tree)
    log = os.path.join(workdir, f"server-{calls}.log")
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--cache-sim={'yes' if cacheSim else 'no'}",
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "-l", log, "aetasip", "--config", conf,
    ]  # fmt: skip
    # The tree's code and twisted/plugins first; one OpenBLAS thread (its idle
    # workers would spin under valgrind); a fixed hash seed.
    env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    server = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    callee = None
    try:
        deadline = time.monotonic() + 300
        while "SIP ready" not in _read(log):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"aetasip did not start; see {log}")
            time.sleep(0.5)
        if not register:
            callee = subprocess.Popen(
                ["sipp", "-sf", os.path.join(HERE, "register_and_wait.xml"),
                 "-oocsf", os.path.join(HERE, "call_uas_answer.xml"), "-inf", os.path.join(workdir, "callee.csv"),
                 "-m", "1", "-d", "3600000", "-i", "127.0.0.1", "-p", str(freePort()), "-buff_size", str(SIPP_BUFFER),
                 "-nostdin", "-recv_timeout", "60000", f"127.0.0.1:{port}"],
                cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(5)
        limit = seconds * 4 + 120
        result = subprocess.run(
            ["sipp", "-sf", os.path.join(HERE, "register.xml" if register else "call_uac.xml"), "-inf", os.path.join(workdir, "callers.csv"),
             "-i", "127.0.0.1", "-p", str(freePort()), "-r", str(calls), "-rp", str(seconds * 1000), "-m", str(calls), "-l", str(calls),
             "-recv_timeout", "30000", "-timeout", f"{int(limit)}s", "-nostdin", "-nd",
             "-buff_size", str(SIPP_BUFFER), f"127.0.0.1:{port}"],
            cwd=workdir, capture_output=True, text=True, timeout=limit + 30,
        )  # fmt: skip
        done = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", result.stdout)
        if not done or int(done[-1]) != calls:
            raise RuntimeError(
                f"{calls} calls planned, {done[-1] if done else 0} succeeded (sipp: {result.stderr[-300:]})"
            )
    finally:
        if callee is not None:
            callee.kill()
            callee.wait()
        server.send_signal(signal.SIGTERM)
        server.wait(120)
    return countsOf(out)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", default=os.path.dirname(HERE), help="the checkout to measure (default: this one)")
    parser.add_argument("--calls", type=int, default=60, help="N: the small run's calls (the large one makes 3N)")
    parser.add_argument(
        "--accounts",
        type=int,
        default=50,
        help="callers, taken in turn: each run looks up each caller in the store once, every"
        " later call of theirs finds the credential cache warm (as in call_rate.py's steady state)",
    )
    parser.add_argument("--seconds", type=int, default=30, help="T: how long each run sends its calls")
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="also simulate the caches (callgrind --cache-sim=yes) and print the misses per call",
    )
    parser.add_argument("--register", action="store_true", help="REGISTER with digest (register.xml) instead of calls")
    parser.add_argument("--observers", default=None, help="call observers, comma-separated ('' for none)")
    parser.add_argument("--keep", metavar="DIR", help="keep callgrind files and logs in DIR")
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="aetasip-svc-callgrind-")
    os.makedirs(directory, exist_ok=True)
    tree = os.path.abspath(args.tree)
    totals = []
    for name, calls in (("small", args.calls), ("large", 3 * args.calls)):
        workdir = tempfile.mkdtemp(prefix=f"aetasip-svc-{name}-", dir=directory)
        provision(tree, workdir, args.accounts)
        out = os.path.join(directory, f"{name}.out")
        try:
            totals.append(run(tree, workdir, calls, args.seconds, args.observers, out, args.register, args.cache_sim))
        except RuntimeError as e:
            # A call lost on a loaded machine (valgrind is slow): its retransmissions
            # would count, so the run is made again rather than kept.
            print(f"{name} run failed ({e}); once more", file=sys.stderr)
            workdir = tempfile.mkdtemp(prefix=f"aetasip-svc-{name}-", dir=directory)
            provision(tree, workdir, args.accounts)
            totals.append(run(tree, workdir, calls, args.seconds, args.observers, out, args.register, args.cache_sim))
    perCall = {name: (totals[1][name] - totals[0][name]) / (2 * args.calls) for name in totals[0]}
    what = "REGISTER" if args.register else "call"
    runs = f"runs of {args.calls} and {3 * args.calls} in {args.seconds} s each"
    print(f"{tree}: {perCall['Ir']:,.0f} instructions per {what} ({runs})")
    if args.cache_sim:
        first = sum(perCall.get(name, 0) for name in ("I1mr", "D1mr", "D1mw"))
        last = sum(perCall.get(name, 0) for name in ("ILmr", "DLmr", "DLmw"))
        print(f"  simulated cache misses per {what}: first level {first:,.0f}, last level {last:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
