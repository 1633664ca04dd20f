#!/usr/bin/env python3
"""
Highest clean rate of authenticated calls through aetasip's proxy.

Starts aetasip (pinned to one core with taskset) on loopback with a fresh
SQLite store of 1,000 caller accounts and one callee; the callee (sipp,
register_and_wait.xml with call_uas_answer.xml for every call) registers
and answers; then sipp runs call_uac.xml (INVITE, 407, ACK, INVITE with
digest, 100/180/200, ACK, BYE, 200) at rising rates. Both sipp run on the
other core. A step is clean when at most 0.1% of its calls fail and sipp
kept the rate. Prints each step and the highest clean rate.

Every loop is bounded: --max-rate, --duration per step, and at most
--steps steps; traffic goes only to 127.0.0.1.

    python3 benchmarks/call_rate.py [--start 200] [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
ACCOUNTS = 1000
PASSWORD = "bench-{}"


def freePort() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port")


CALLEE = "30000000"


def provision(workdir: str) -> str:
    """Create the accounts; return the callers' sipp injection file."""
    sys.path.insert(0, TOP)
    from aetasip.store import Store

    store = Store(f"sqlite:///{workdir}/bench.db")
    store.open()
    csv = os.path.join(workdir, "accounts.csv")
    with open(csv, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(ACCOUNTS):
            number = str(20000000 + i)
            store.addAccount(number, "premium", PASSWORD.format(i), "aetasip")
            f.write(f"{number};[authentication username={number} password={PASSWORD.format(i)}];{CALLEE}\n")
    store.addAccount(CALLEE, "premium", "callee", "aetasip")
    with open(os.path.join(workdir, "callee.csv"), "w") as f:
        f.write(f"SEQUENTIAL\n{CALLEE};[authentication username={CALLEE} password=callee]\n")
    store.close()
    return csv


def startServer(workdir: str, port: int, cores: tuple[str, str]) -> subprocess.Popen[bytes]:
    conf = os.path.join(workdir, "bench.conf.py")
    with open(conf, "w") as f:
        f.write(
            f"sip = {{'listen': ['127.0.0.1'], 'udp_ports': [{port}], 'tcp_ports': [{port}]}}\n"
            f"store = {{'url': 'sqlite:///{workdir}/bench.db'}}\n"
            "stun = {'enabled': False}\n"
        )
    command = ["twistd", "-n", "--pidfile=", "-l", os.path.join(workdir, "server.log"), "aetasip", "--config", conf]
    if shutil.which("taskset"):
        command = ["taskset", "-c", cores[0], *command]
    # The checkout's code and twisted/plugins come first (Twisted finds plugin
    # directories on sys.path), so the benchmark measures this tree.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [TOP, os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen(command, cwd=workdir, env=env)
    logPath = os.path.join(workdir, "server.log")
    deadline = time.time() + 30
    while time.time() < deadline and server.poll() is None:
        if os.path.exists(logPath):
            with open(logPath, errors="replace") as log:
                if "SIP ready" in log.read():
                    return server
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("aetasip did not start; see " + os.path.join(workdir, "server.log"))


def step(
    csv: str, port: int, sippPort: int, rate: int, duration: float, core: str, errors: str
) -> tuple[int, int, float]:
    """
    Run sipp at C{rate} calls/s; return (successful, failed, seconds).
    sipp's error messages go to the file C{errors}.
    """
    calls = int(rate * duration)
    command = [
        "sipp",
        "-sf",
        os.path.join(HERE, "call_uac.xml"),
        "-inf",
        csv,
        "-i",
        "127.0.0.1",
        "-p",
        str(sippPort),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        str(max(rate * 3, 100)),
        "-recv_timeout",
        "8000",
        "-timeout",
        f"{int(duration * 3 + 10)}s",
        "-nostdin",
        "-nd",
        "-trace_err",
        "-error_file",
        errors,
        f"127.0.0.1:{port}",
    ]
    if shutil.which("taskset"):
        command = ["taskset", "-c", core, *command]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration * 4 + 30)
    elapsed = time.monotonic() - started
    screen = result.stdout

    def counter(name: str) -> int:
        found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
        return int(found[-1]) if found else 0

    return counter("Successful call"), counter("Failed call"), elapsed


def startCallee(workdir: str, port: int, core: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """The callee: registers, then answers every call until the run ends."""
    stayUp = int((args.duration * 4 + 30) * args.steps * 1000)
    command = [
        "sipp", "-sf", os.path.join(HERE, "register_and_wait.xml"), "-oocsf", os.path.join(HERE, "call_uas_answer.xml"),
        "-inf", os.path.join(workdir, "callee.csv"), "-m", "1", "-d", str(stayUp), "-i", "127.0.0.1",
        "-p", str(freePort()), "-nostdin", f"127.0.0.1:{port}",
    ]  # fmt: skip
    if shutil.which("taskset"):
        command = ["taskset", "-c", core, *command]
    callee = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    return callee


def reportErrors(path: str) -> None:
    """Print the most frequent of sipp's error messages."""
    if not os.path.exists(path):
        return
    counts: dict[str, int] = {}
    with open(path, errors="replace") as f:
        for line in f:
            # Lines are "date<TAB>time<TAB>timestamp: message"; keep the message.
            message = line.split(": ", 1)[-1].strip()
            if message and not message.startswith("The following events"):
                message = re.sub(r"\d+", "N", message)[:160]
                counts[message] = counts.get(message, 0) + 1
    for message, count in sorted(counts.items(), key=lambda item: -item[1])[:5]:
        print(f"    {count} x {message}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=200, help="first rate, calls/s")
    parser.add_argument("--factor", type=float, default=1.25, help="rate multiplier between steps")
    parser.add_argument("--max-rate", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--steps", type=int, default=20, help="most steps")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--sipp-core", default="1")
    args = parser.parse_args()
    for tool in ("sipp", "twistd"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (README: install the test needs)", file=sys.stderr)
            return 2

    workdir = tempfile.mkdtemp(prefix="aetasip-bench-")
    server = callee = None
    try:
        csv = provision(workdir)
        port = freePort()
        # The same agents in every step (same address and port): a new port
        # would make each account look registered by a second agent.
        sippPort = freePort()
        server = startServer(workdir, port, (args.server_core, args.sipp_core))
        callee = startCallee(workdir, port, args.sipp_core, args)
        best = 0
        rate = args.start
        for _ in range(args.steps):
            if rate > args.max_rate:
                break
            errors = os.path.join(workdir, f"errors-{rate}.log")
            ok, failed, elapsed = step(csv, port, sippPort, rate, args.duration, args.sipp_core, errors)
            total = ok + failed
            kept = elapsed <= args.duration * 1.1 + 1.0
            clean = total >= int(rate * args.duration) and failed <= total * 0.001 and kept
            print(
                f"rate {rate:6d}/s: {ok} ok, {failed} failed, {elapsed:.1f} s -> {'clean' if clean else 'NOT clean'}",
                flush=True,
            )
            if not clean:
                reportErrors(errors)
                break
            best = rate
            rate = int(rate * args.factor)
        print(f"highest clean authenticated call rate: {best} calls/s")
        return 0
    finally:
        if callee is not None:
            callee.terminate()
            try:
                callee.wait(10)
            except subprocess.TimeoutExpired:
                callee.kill()
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
