"""
RTP relay throughput and added latency: N concurrent G.711 calls (20 ms
packets, 50 per second each way, 172-byte datagrams) through a relay node
(any L{aetasip.interfaces.IRelay}), N raised step by step until more than
0.1% of the packets are lost. Prints each step, then per node the highest
clean packet rate (packets per second the relay received and forwarded)
and the latency of that step (median, p99) minus the direct path's.

The same load runs first on the direct path (no relay: the SDP is left
alone and the agents' sockets talk to each other). That is the reference
measured in the same run: the generator and the loopback kernel path
alone. A relay's step whose rate the generator could not keep is marked
"generator-bound", and a relay figure near the direct ceiling says the
generator, not the relay, was the limit.

    python3 benchmarks/relay_rate.py                         # direct, then rtpengine
    python3 benchmarks/relay_rate.py --calls 100,200,300 --duration 5

The relay (rtpengine: userspace forwarding, --table=-1, its own process on
127.0.0.1) is pinned to core 0 and the generator to core 1 (taskset)
when the machine has two cores or more. The generator is one process that
paces every socket's packets evenly over time (not in bursts every 20 ms)
and stamps each packet with its send time. Every loop is bounded: a step
runs its warm-up, its measured seconds and half a second of drain, no
more; there are at most as many steps as --calls lists. Traffic stays on
127.0.0.1.

Another node joins the comparison by one entry in L{NODES}: a name and an
async function making the node (and a cleanup).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PACKET = struct.Struct("!BBHIIqB")  # RTP header, send time (ns), measured flag
PADDING = b"\xd5" * (172 - PACKET.size)
PACKETS_PER_SECOND = 50
LOSS_LIMIT = 0.001


# -- the generator (a child process) ---------------------------------------------


def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """
    Send from every leg's socket to its destination, paced evenly, for
    the warm-up and the measured seconds; receive on all of them; count
    and time the packets sent during the measured seconds.
    """
    sockets = [socket.socket(fileno=fd) for fd, _, _ in spec["legs"]]
    destinations = [(host, port) for _, host, port in spec["legs"]]
    poller = select.epoll()
    byFD = {}
    for s in sockets:
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        poller.register(s.fileno(), select.EPOLLIN)
        byFD[s.fileno()] = s
    count = len(sockets)
    rate = count * PACKETS_PER_SECOND
    sequences = [0] * count
    latencies = array.array("q")
    sent = sentMeasured = received = receivedMeasured = sendErrors = 0
    worstLag = 0.0
    pack = PACKET.pack
    clock = time.monotonic
    clockNS = time.monotonic_ns
    cpuStart = time.process_time()
    start = clock() + 0.1
    measureFrom = start + spec["warmup"]
    stop = measureFrom + spec["duration"]
    drained = stop + 0.5
    while True:
        now = clock()
        if now >= drained:
            break
        if now < stop:
            due = int((now - start) * rate) if now > start else 0
            # Catching up is bounded: at most 5 ms worth of packets per turn.
            burst = min(due - sent, max(1, rate // 200))
            lag = (due - sent) / rate
            if lag > worstLag:
                worstLag = lag
            measuring = 1 if now >= measureFrom else 0
            stamp = clockNS()  # one per burst: its packets leave within microseconds
            for _ in range(burst):
                leg = sent % count
                sequence = sequences[leg]
                sequences[leg] = sequence + 1
                try:
                    sockets[leg].sendto(
                        pack(0x80, 8, sequence & 0xFFFF, (sequence * 160) & 0xFFFFFFFF, leg, stamp, measuring)
                        + PADDING,
                        destinations[leg],
                    )
                except OSError:
                    sendErrors += 1
                sent += 1
                sentMeasured += measuring
        for fd, _ in poller.poll(0.0005 if now < stop else 0.01):
            s = byFD[fd]
            for _ in range(64):
                try:
                    data = s.recv(2048)
                except OSError:
                    break
                received += 1
                if len(data) >= PACKET.size and data[PACKET.size - 1]:
                    receivedMeasured += 1
                    latencies.append(clockNS() - int.from_bytes(data[12:20], "big"))
    cpu = time.process_time() - cpuStart
    ordered = sorted(latencies)

    def percentile(p: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000 if ordered else None

    return {
        "sent": sentMeasured,
        "received": receivedMeasured,
        "sendErrors": sendErrors,
        "worstLag": worstLag,
        "cpu": cpu,
        "packets": sent + received,
        "sentTotal": sent,
        "median": percentile(0.5),
        "p99": percentile(0.99),
    }


# -- nodes under test --------------------------------------------------------------


class DirectPath:
    """The reference: no relay, the SDP untouched (an IRelay that relays nothing)."""

    name = "direct"

    async def offer(self, callID: str, fromTag: str, branch: str, sender: str, sdp: bytes, *rest: Any) -> bytes:
        return sdp

    async def answer(self, callID: str, fromTag: str, toTag: str, branch: str, sender: str, sdp: bytes, *rest: Any):
        return sdp

    async def delete(self, callID: str, fromTag: str) -> None:
        return None


NodeUnderTest = tuple[Any, Callable[[], None], Callable[[], float] | None]
"""A node, its cleanup, and a reader of the CPU seconds its relay used so far (or None)."""


async def directNode(args: argparse.Namespace) -> NodeUnderTest:
    return DirectPath(), lambda: None, None


def processCPU(pid: int) -> Callable[[], float]:
    """CPU seconds (user and system, all threads) used by process C{pid} so far."""
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return read


async def rtpengineNode(args: argparse.Namespace) -> NodeUnderTest:
    from aetasip import config
    from aetasip.relay.rtpengine import RtpengineService
    from tests.rtpengine import Rtpengine

    executable = shutil.which("rtpengine")
    if executable is None:
        raise SystemExit("rtpengine is not installed (Debian package rtpengine-daemon)")
    engine = Rtpengine(executable, mediaPorts=4 * max(args.calls) + 100, prefix=pinnedTo(0))
    engine.start()
    service = RtpengineService(
        config.build({"rtpengine.nodes": {"bench": [engine.ngAddress]}, "rtpengine.max_pending": 10_000})
    )
    service.startService()

    def cleanup() -> None:
        service.stopService()
        engine.cleanup()

    assert engine.process is not None
    return service.nodes["bench"], cleanup, processCPU(engine.process.pid)


NODES: dict[str, Callable[[argparse.Namespace], Awaitable[NodeUnderTest]]] = {
    "direct": directNode,
    "rtpengine": rtpengineNode,
}


def pinnedTo(core: int) -> tuple[str, ...]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ("taskset", "-c", str(core))
    return ()


# -- one step ------------------------------------------------------------------------


def sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    ).encode()


def mediaAddress(body: bytes) -> tuple[str, int]:
    text = body.decode("ascii", "replace")
    host = re.search(r"^c=IN IP[46] (\S+)\r?$", text, re.M)
    port = re.search(r"^m=audio (\d+) ", text, re.M)
    if host is None or port is None:
        raise ValueError(f"no media address in {text!r}")
    return host.group(1), int(port.group(1))


async def step(
    node: Any, cpu: Callable[[], float] | None, calls: int, args: argparse.Namespace, run: int
) -> dict[str, Any]:
    from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
    from twisted.internet.threads import deferToThread

    sockets: list[socket.socket] = []
    legs: list[tuple[int, str, int]] = []
    callIDs = []

    async def setUp(i: int) -> None:
        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        callee = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sockets.extend((caller, callee))
        caller.bind(("127.0.0.1", 0))
        callee.bind(("127.0.0.1", 0))
        callID = f"bench-{run}-{i}"
        callIDs.append(callID)
        source = ("127.0.0.1", 5060)
        offered = await node.offer(callID, "a", "b", "caller", sdp(caller.getsockname()[1]), source, False)
        answered = await node.answer(callID, "a", "z", "b", "callee", sdp(callee.getsockname()[1]), source, False)
        legs.append((caller.fileno(), *mediaAddress(answered)))
        legs.append((callee.fileno(), *mediaAddress(offered)))

    try:
        for first in range(0, calls, 50):
            await gatherResults(
                [ensureDeferred(setUp(i)) for i in range(first, min(calls, first + 50))], consumeErrors=True
            )
        spec = json.dumps({"legs": legs, "warmup": args.warmup, "duration": args.duration})
        command = [*pinnedTo(1), sys.executable, os.path.abspath(__file__), "--generate"]

        def runGenerator() -> str:
            done = subprocess.run(
                command,
                input=spec,
                capture_output=True,
                text=True,
                pass_fds=[fd for fd, _, _ in legs],
                timeout=args.warmup + args.duration + 60,
                check=True,
            )
            return done.stdout

        cpuBefore = cpu() if cpu is not None else 0.0
        output: str = await deferToThread(runGenerator)
        cpuUsed = cpu() - cpuBefore if cpu is not None else None
        result: dict[str, Any] = json.loads(output)
    finally:
        for callID in callIDs:
            try:
                await Deferred.fromCoroutine(_delete(node, callID))
            except Exception as e:
                print(f"  delete {callID}: {e}", file=sys.stderr)
        for s in sockets:
            s.close()
    result["calls"] = calls
    # The relay's CPU over the whole generator run (warm-up and drain
    # included), per packet it received.
    relayed = result["sentTotal"]
    result["relayCPU"] = cpuUsed / relayed * 1e6 if cpuUsed is not None and relayed else None
    result["generatorCPU"] = result["cpu"] / result["packets"] * 1e6 if result["packets"] else None
    result["rate"] = result["received"] / args.duration
    result["loss"] = 1 - result["received"] / result["sent"] if result["sent"] else 1.0
    # The generator kept the pace when it sent at least 99% of the packets
    # due in the measured seconds (a moment behind is caught up, at most
    # 5 ms worth of packets at a time).
    result["kept"] = result["sent"] >= 0.99 * 2 * calls * PACKETS_PER_SECOND * args.duration
    return result


async def _delete(node: Any, callID: str) -> None:
    await node.delete(callID, "a")


def show(name: str, result: dict[str, Any]) -> None:
    def us(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    print(
        f"{name:>10} {result['calls']:>6} calls {result['rate']:>9,.0f} pkt/s received"
        f"  loss {100 * result['loss']:6.3f}%  latency median {us(result['median'])} us"
        f" p99 {us(result['p99'])} us  worst lag {1000 * result['worstLag']:.1f} ms"
        + (f"  relay CPU {result['relayCPU']:.1f} us/pkt" if result["relayCPU"] is not None else "")
        + f"  generator CPU {result['generatorCPU']:.1f} us/pkt"
        + ("" if result["kept"] else "  generator-bound"),
        flush=True,
    )


async def main(reactor: Any, args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.2f} on {os.cpu_count()} cores (figures hold on an otherwise idle machine)")
    best: dict[str, dict[str, Any] | None] = {}
    steps: dict[str, dict[int, dict[str, Any]]] = {}
    run = 0
    for name in args.nodes:
        node, cleanup, cpu = await NODES[name](args)
        best[name] = None
        steps[name] = {}
        try:
            for calls in args.calls:
                for _attempt in range(2):
                    # A step the generator could not keep pace with (another
                    # process took its core) is measured once more.
                    run += 1
                    result = await step(node, cpu, calls, args, run)
                    show(name, result)
                    if result["kept"]:
                        break
                steps[name][calls] = result
                if result["loss"] > LOSS_LIMIT or not result["kept"]:
                    break
                best[name] = result
        finally:
            cleanup()
    print()
    reference = steps.get("direct", {})
    for name, result in best.items():
        if result is None:
            print(f"{name}: no clean step")
            continue
        line = (
            f"{name}: highest clean rate {result['rate']:,.0f} packets/s received"
            f" ({result['calls']} calls, loss {100 * result['loss']:.3f}%),"
            f" latency median {result['median']:,.0f} us, p99 {result['p99']:,.0f} us"
        )
        if result.get("relayCPU"):
            line += (
                f"; relay CPU {result['relayCPU']:.1f} us/packet"
                f" (~{1e6 / result['relayCPU']:,.0f} packets/s per busy core)"
            )
        base = reference.get(result["calls"])
        if name != "direct" and base is not None and base["median"] is not None:
            line += (
                f"; added to the direct path: median {result['median'] - base['median']:,.0f} us,"
                f" p99 {result['p99'] - base['p99']:,.0f} us"
            )
        print(line)
    # The same loads side by side: latency each relay adds to the direct path.
    for calls in args.calls:
        measured = {name: steps[name][calls] for name in steps if calls in steps[name]}
        base = measured.get("direct")
        if base is None or base["median"] is None or len(measured) < 2:
            continue
        added = [
            f"{name} +{r['median'] - base['median']:,.0f}/+{r['p99'] - base['p99']:,.0f} us"
            + ("" if r["loss"] <= LOSS_LIMIT else f" (lost {100 * r['loss']:.2f}%)")
            for name, r in measured.items()
            if name != "direct" and r["median"] is not None
        ]
        print(f"{calls:>5} calls, added latency (median/p99): " + ", ".join(added))
    direct = best.get("direct")
    for name, result in best.items():
        if name != "direct" and result is not None and direct is not None:
            ceiling = "" if direct is not steps["direct"].get(args.calls[-1]) else " (direct never failed: a floor)"
            print(f"{name}/direct rate ratio: {result['rate'] / direct['rate']:.2f}{ceiling}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--calls",
        default="50,100,150,200,250,300,350,400,500,600,800,1000",
        help="calls (two streams each) per step, rising; stops at the first step losing >0.1%%",
    )
    parser.add_argument("--nodes", default="direct,rtpengine", help="nodes to measure: " + ", ".join(NODES))
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before measuring")
    args = parser.parse_args()
    if args.generate:
        return args
    try:
        args.calls = sorted({int(c) for c in args.calls.split(",")})
    except ValueError:
        parser.error("--calls: numbers separated by commas")
    if not args.calls or args.calls[0] < 1 or args.calls[-1] > 5000:
        parser.error("--calls: from 1 to 5000 calls")
    args.nodes = [n for n in args.nodes.split(",") if n]
    unknown = [n for n in args.nodes if n not in NODES]
    if unknown or not args.nodes:
        parser.error(f"--nodes: choose among {', '.join(NODES)}")
    if not 1 <= args.duration <= 60 or not 0 <= args.warmup <= 10:
        parser.error("--duration from 1 to 60 s, --warmup from 0 to 10 s")
    return args


if __name__ == "__main__":
    options = arguments()
    if options.generate:
        print(json.dumps(generate(json.load(sys.stdin))))
    else:
        from twisted.internet.defer import ensureDeferred
        from twisted.internet.task import react

        react(lambda reactor: ensureDeferred(main(reactor, options)))
