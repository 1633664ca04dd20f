#!/usr/bin/env python3
"""
Highest clean REGISTER+digest rate of aetasip.

Starts aetasip (pinned to one core with taskset) on loopback with a fresh
SQLite store of 1,000 accounts, then runs benchmarks/register.xml with
sipp (pinned to the other core) at rising rates until a step is not clean
(see sipprate.py). Prints each step and the highest clean rate.

    python3 benchmarks/register_rate.py [--start 1000] [--duration 10]
"""

from __future__ import annotations

import os
import sys

from sipprate import HERE, arguments, openStore, raiseRate

ACCOUNTS = 1000


def provision(workdir: str) -> None:
    """1,000 accounts, and the sipp injection file that uses them in turn."""
    store = openStore(workdir)
    with open(os.path.join(workdir, "accounts.csv"), "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(ACCOUNTS):
            number, password = str(20000000 + i), f"bench-{i}"
            store.addAccount(number, "premium", password, "aetasip")
            f.write(f"{number};[authentication username={number} password={password}]\n")
    store.close()


def sippArgs(workdir: str, port: int, sippPort: int) -> list[str]:
    return ["-sf", os.path.join(HERE, "register.xml"), "-inf", os.path.join(workdir, "accounts.csv"),
            "-i", "127.0.0.1", "-p", str(sippPort), f"127.0.0.1:{port}"]  # fmt: skip


if __name__ == "__main__":
    sys.exit(raiseRate(arguments(__doc__ or "", start=1000, maxRate=40000), "REGISTER+digest", provision, sippArgs))
