"""
What the sipp rate benchmarks share: a free loopback port, aetasip started
pinned to one core on a fresh store, one bounded sipp step, and the loop
that raises the rate until a step is not clean.

A step is clean when at most 0.1% of its calls fail and sipp kept the rate
(the step took at most 10% longer than planned). Every loop is bounded
(--max-rate, --duration per step, --steps); traffic goes only to 127.0.0.1.
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
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)


# sipp's socket buffers, as large as the server's (sip.udp_buffer_size): a
# burst must not be lost in the load generator's own socket.
SIPP_BUFFER = 4 * 1024 * 1024


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


def pinned(core: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", core, *command] if shutil.which("taskset") else command


def openStore(workdir: str):  # type: ignore[no-untyped-def]
    """The benchmark's fresh SQLite store, opened (the checkout's code)."""
    sys.path.insert(0, TOP)
    from aetasip.store import Store

    store = Store(f"sqlite:///{workdir}/bench.db")
    store.open()
    return store


def writeConfig(workdir: str, port: int, observers: list[str] | None, tree: str = TOP) -> str:
    """
    The benchmark's configuration file for C{tree}'s aetasip: SIP on
    127.0.0.1:C{port}, the store in C{workdir}, no STUN, no web service
    (its port 8080 may be taken by another server on the machine), the
    call observers C{observers} (C{None}: the service's). Only the
    sections the tree knows: an older tree has no web service and no call
    observers, nothing to turn off there.
    """
    conf = os.path.join(workdir, "bench.conf.py")
    with open(conf, "w") as f:
        f.write(
            f"sip = {{'listen': ['127.0.0.1'], 'udp_ports': [{port}], 'tcp_ports': [{port}]}}\n"
            f"store = {{'url': 'sqlite:///{workdir}/bench.db'}}\n"
            "stun = {'enabled': False}\n"
        )
        if os.path.isdir(os.path.join(tree, "aetasip", "web")):
            f.write("web = {'listen': None}\n")
        if observers is not None and os.path.isdir(os.path.join(tree, "aetasip", "calls")):
            f.write(f"calls = {{'observers': {observers!r}}}\n")
    return conf


def startServer(workdir: str, port: int, core: str, observers: list[str] | None = None) -> subprocess.Popen[bytes]:
    """
    aetasip on 127.0.0.1:C{port} (UDP and TCP), pinned to C{core}, with the
    call observers C{observers} (default: the service's, call records on).
    """
    conf = writeConfig(workdir, port, observers)
    logPath = os.path.join(workdir, "server.log")
    command = pinned(core, ["twistd", "-n", "--pidfile=", "-l", logPath, "aetasip", "--config", conf])
    # The checkout's code and twisted/plugins come first (Twisted finds plugin
    # directories on sys.path), so the benchmark measures this tree.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [TOP, os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen(command, cwd=workdir, env=env)
    deadline = time.time() + 30
    while time.time() < deadline and server.poll() is None:
        if os.path.exists(logPath):
            with open(logPath, errors="replace") as log:
                if "SIP ready" in log.read():
                    return server
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("aetasip did not start; see " + logPath)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def step(sippArgs: list[str], rate: int, duration: float, core: str, errors: str) -> tuple[int, int, float]:
    """
    Run sipp (C{sippArgs}: scenario, injection file, ports, target) at
    C{rate} calls/s for C{duration} seconds' worth of calls.

    @return: (successful, failed, seconds taken); sipp's error messages go
        to the file C{errors}.
    """
    command = [
        "sipp", *sippArgs, "-r", str(rate), "-m", str(int(rate * duration)), "-l", str(max(rate * 3, 100)),
        "-recv_timeout", "8000", "-buff_size", str(SIPP_BUFFER), "-timeout", f"{int(duration * 3 + 10)}s", "-nostdin", "-nd",
        "-trace_err", "-error_file", errors,
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(pinned(core, command), capture_output=True, text=True, timeout=duration * 4 + 30)
    elapsed = time.monotonic() - started

    def counter(name: str) -> int:
        found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", result.stdout)
        return int(found[-1]) if found else 0

    return counter("Successful call"), counter("Failed call"), elapsed


def cpuSeconds(pid: int) -> float:
    """User + system CPU time of process C{pid} so far (Linux /proc), or 0."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat(5), counted after the ")" ending the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def arguments(description: str, start: int, maxRate: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=start, help="first rate, calls/s")
    parser.add_argument("--factor", type=float, default=1.25, help="rate multiplier between steps")
    parser.add_argument("--max-rate", type=int, default=maxRate)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--steps", type=int, default=20, help="most steps")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--sipp-core", default="1")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, sipp errors)")
    parser.add_argument(
        "--observers",
        default=None,
        help="call observers, comma-separated ('' for none); default: the service's (call records on)",
    )
    return parser.parse_args()


def raiseRate(
    args: argparse.Namespace,
    what: str,
    provision: Callable[[str], None],
    sippArgs: Callable[[str, int, int], list[str]],
    helper: Callable[[str, int], subprocess.Popen[bytes]] | None = None,
) -> int:
    """
    C{provision(workdir)} fills the store, the server starts, C{helper(workdir,
    port)} (if any) starts what must run beside it, then the rate rises,
    each step running sipp with C{sippArgs(workdir, serverPort, sippPort)};
    prints each step and the highest clean rate of C{what}.
    """
    for tool in ("sipp", "twistd"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (README: install the test needs)", file=sys.stderr)
            return 2
    workdir = tempfile.mkdtemp(prefix="aetasip-bench-")
    server = side = None
    try:
        provision(workdir)
        port = freePort()
        observers = None if args.observers is None else [name for name in args.observers.split(",") if name]
        server = startServer(workdir, port, args.server_core, observers)
        if helper is not None:
            side = helper(workdir, port)
            time.sleep(2)
        # The same agents in every step (same address and port): a new port
        # would make each account look registered by a second agent.
        arguments = sippArgs(workdir, port, freePort())
        best = 0
        rate = args.start
        for _ in range(args.steps):
            if rate > args.max_rate:
                break
            errors = os.path.join(workdir, f"errors-{rate}.log")
            cpu = cpuSeconds(server.pid)
            ok, failed, elapsed = step(arguments, rate, args.duration, args.sipp_core, errors)
            cpu = cpuSeconds(server.pid) - cpu
            total = ok + failed
            kept = elapsed <= args.duration * 1.1 + 1.0
            clean = total >= int(rate * args.duration) and failed <= total * 0.001 and kept
            verdict = "clean" if clean else "NOT clean"
            load = f"server CPU {100 * cpu / elapsed:.0f}%, {1e6 * cpu / max(total, 1):.0f} us/call"
            print(f"rate {rate:6d}/s: {ok} ok, {failed} failed, {elapsed:.1f} s, {load} -> {verdict}", flush=True)
            if not clean:
                reportErrors(errors)
                break
            best = rate
            rate = int(rate * args.factor)
        print(f"highest clean {what} rate: {best} calls/s")
        return 0
    finally:
        stop(side)
        stop(server)
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
