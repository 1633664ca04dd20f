#!/usr/bin/env python3
"""
Highest clean rate of authenticated calls through aetasip's proxy.

Starts aetasip (pinned to one core with taskset) on loopback with a fresh
SQLite store of 1,000 caller accounts and one callee; the callee (sipp,
register_and_wait.xml with call_uas_answer.xml for every call) registers
and answers; then sipp runs call_uac.xml (INVITE, 407, ACK, INVITE with
digest, 100/180/200, ACK, BYE, 200) at rising rates until a step is not
clean (see sipprate.py). Both sipp run on the other core.

    python3 benchmarks/call_rate.py [--start 200] [--duration 10]
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from sipprate import HERE, SIPP_BUFFER, arguments, freePort, openStore, pinned, raiseRate

ACCOUNTS = 1000
CALLEE = "30000000"


def provision(workdir: str) -> None:
    """The callers and the callee, and their sipp injection files."""
    store = openStore(workdir)
    with open(os.path.join(workdir, "callers.csv"), "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(ACCOUNTS):
            number, password = str(20000000 + i), f"bench-{i}"
            store.addAccount(number, "premium", password, "aetasip")
            f.write(f"{number};[authentication username={number} password={password}];{CALLEE}\n")
    store.addAccount(CALLEE, "premium", "callee", "aetasip")
    with open(os.path.join(workdir, "callee.csv"), "w") as f:
        f.write(f"SEQUENTIAL\n{CALLEE};[authentication username={CALLEE} password=callee]\n")
    store.close()


def startCallee(workdir: str, port: int, core: str = "1") -> subprocess.Popen[bytes]:
    """The callee, on C{core}: registers, then answers every call for up to an hour."""
    command = [
        "sipp", "-sf", os.path.join(HERE, "register_and_wait.xml"), "-oocsf", os.path.join(HERE, "call_uas_answer.xml"),
        "-inf", os.path.join(workdir, "callee.csv"), "-m", "1", "-d", "3600000", "-i", "127.0.0.1",
        "-p", str(freePort()), "-buff_size", str(SIPP_BUFFER), "-nostdin", f"127.0.0.1:{port}",
    ]  # fmt: skip
    return subprocess.Popen(pinned(core, command), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sippArgs(workdir: str, port: int, sippPort: int) -> list[str]:
    return ["-sf", os.path.join(HERE, "call_uac.xml"), "-inf", os.path.join(workdir, "callers.csv"),
            "-i", "127.0.0.1", "-p", str(sippPort), f"127.0.0.1:{port}"]  # fmt: skip


if __name__ == "__main__":
    args = arguments(__doc__ or "", start=200, maxRate=5000)
    helper = functools.partial(startCallee, core=args.sipp_core)
    sys.exit(raiseRate(args, "authenticated call", provision, sippArgs, helper))
