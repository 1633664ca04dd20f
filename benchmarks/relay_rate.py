"""
RTP relay benchmark: N concurrent G.711 calls (50 packets/s each way)
through the built-in relay node and through rtpengine (userspace), in the
same run, with the same load generator; N raised step by step until more
than 0.1% of the packets are lost. Prints each step, then per node the
highest clean packet rate (what the relay received per second), the
latency it adds (median, p99) over a reference measured in the same step
(the same load sent directly between the generator's sockets) and its CPU
per packet; then the built-in/rtpengine ratio of rates and the added
latency of both at the loads both carried.

    python3 benchmarks/relay_rate.py                         # builtin, then rtpengine: 50, 100, 150 … calls
    python3 benchmarks/relay_rate.py --nodes builtin --calls 100,250,400 --seconds 8

The relay runs on core 0: the built-in node forwards in this process,
pinned there; rtpengine is its own process pinned there (this process then
only sets its calls up over ng). The load generator (L{benchmarks/rtp_load.py})
runs in a process of its own pinned to core 1. A step the generator could
not keep pace with (another process took its core) is measured once more.
Loopback only; every step is bounded in calls and time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from twisted.internet import defer, protocol, task

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.relay_nodes import NODES, closeCalls, openCalls  # noqa: E402

CPU = Any

LOSS_LIMIT = 0.001


class Generator(protocol.ProcessProtocol):
    """The load generator process: one JSON command, one JSON answer."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: list[defer.Deferred[dict[str, Any]]] = []
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.waiting.pop(0).callback(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode("utf-8", "replace"))

    def processEnded(self, reason: Any) -> None:
        for waiting in self.waiting:
            waiting.errback(RuntimeError("the load generator died"))
        self.ended.callback(None)

    def ask(self, command: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.waiting.append(d)
        assert self.transport is not None
        self.transport.write(json.dumps(command).encode() + b"\n")
        return d


async def ask(generator: Generator, command: dict[str, Any]) -> dict[str, Any]:
    answer = await generator.ask(command)
    if "error" in answer:
        raise SystemExit(f"load generator: {answer['error']}")
    return answer


async def step(generator: Generator, node: Any, cpu: CPU, calls: int, seconds: float, warmup: float) -> dict[str, Any]:
    ports = (await ask(generator, {"bind": calls}))["ports"]
    # The reference: the same load straight from socket to socket.
    direct = [[["127.0.0.1", b], ["127.0.0.1", a]] for a, b in ports]
    reference = await ask(generator, {"run": {"targets": direct, "seconds": min(seconds, 3.0), "warmup": 0.5}})
    targets = await openCalls(node, ports)
    before = cpu()
    relayed = await ask(
        generator, {"run": {"targets": [[list(a), list(b)] for a, b in targets], "seconds": seconds, "warmup": warmup}}
    )
    used = cpu() - before
    stats = await closeCalls(node, calls)
    await ask(generator, {"close": True})
    dropped = sum(s.caller.dropped + s.callee.dropped for s in stats if s is not None)
    return {
        "calls": calls,
        "reference": reference,
        "relayed": relayed,
        "cpu": used / (seconds + warmup),
        # CPU per packet the relay received over the whole run (warm-up included).
        "cpuPerPacket": used / (relayed["rate"] * (seconds + warmup)) * 1e6 if relayed["rate"] else None,
        "dropped": dropped,
    }


def kept(result: dict[str, Any]) -> bool:
    """The generator sent (and the relay got) at least 95% of the nominal rate."""
    return bool(result["relayed"]["rate"] >= 0.95 * result["calls"] * 100)


def added(result: dict[str, Any]) -> tuple[float, float]:
    """The latency (median, p99) in µs the relay added to the direct path in this step."""
    relayed, reference = result["relayed"]["latency_us"], result["reference"]["latency_us"]
    return relayed["median"] - reference["median"], relayed["p99"] - reference["p99"]


def report(name: str, result: dict[str, Any]) -> tuple[bool, float]:
    relayed, reference = result["relayed"], result["reference"]
    sent = relayed["sent"]
    loss = relayed["lost"] / sent if sent else 1.0
    rate = relayed["rate"]
    # The rate is what the generator really sent (and the relay received); a
    # generator starved of CPU by other work falls behind, which is shown.
    keptRate = kept(result)
    clean = loss <= LOSS_LIMIT and keptRate
    addedMedian, addedP99 = added(result)
    print(
        f"{name:>9} {result['calls']:>5} calls {rate:>9,.0f} pkt/s  loss {100 * loss:6.3f}%  "
        f"latency median {relayed['latency_us']['median']:7.0f} us (direct {reference['latency_us']['median']:5.0f}, "
        f"+{addedMedian:5.0f})  p99 {relayed['latency_us']['p99']:7.0f} us (direct {reference['latency_us']['p99']:5.0f}, "
        f"+{addedP99:6.0f})  relay CPU {100 * result['cpu']:5.1f}%  late sends {relayed['late_sends']}  "
        f"{'clean' if clean else 'LOSSY' if keptRate else 'generator could not keep the rate'}",
        flush=True,
    )
    return clean, rate


async def measure(reactor: Any, name: str, options: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """The steps of node C{name}, up to its first lossy one; by calls."""
    relayCore, generatorCore = options.cores
    low, high = options.ports
    node, stop, cpu = NODES[name](reactor, (low, high), relayCore)
    generator = Generator()
    argv = [sys.executable, os.path.join(HERE, "rtp_load.py")]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        argv = [shutil.which("taskset") or "taskset", "-c", str(generatorCore), *argv]
    reactor.spawnProcess(generator, argv[0], argv, env=dict(os.environ))
    steps: dict[int, dict[str, Any]] = {}
    try:
        for calls in options.calls:
            if 4 * calls > high - low + 1:
                print(f"{calls} calls need {4 * calls} ports: stopping (--ports)")
                break
            for _attempt in range(2):
                result = await step(generator, node, cpu, calls, options.seconds, options.warmup)
                clean, _rate = report(name, result)
                if options.verbose:
                    print("   ", json.dumps(result["relayed"]), json.dumps(result["reference"]))
                if kept(result):
                    break
            result["clean"] = clean
            steps[calls] = result
            if not clean:
                break
    finally:
        generator.transport.closeStdin()  # type: ignore[union-attr]
        await generator.ended
        await stop()
    return steps


def best(steps: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    clean = [result for result in steps.values() if result["clean"]]
    return clean[-1] if clean else None


async def main(reactor: Any, options: argparse.Namespace) -> None:
    relayCore, generatorCore = options.cores
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {relayCore})
    low, high = options.ports
    print(
        f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; relay on core {relayCore}, "
        f"generator on core {generatorCore}; {options.seconds:g} s per step after {options.warmup:g} s; "
        f"RTP ports {low}-{high}"
    )
    measured = {name: await measure(reactor, name, options) for name in options.nodes}
    print()
    for name, steps in measured.items():
        top = best(steps)
        if top is None:
            print(f"{name}: no clean step")
            continue
        medianAdded, p99Added = added(top)
        perPacket = top["cpuPerPacket"]
        print(
            f"{name}: highest clean rate {top['relayed']['rate']:,.0f} packets/s received ({top['calls']} calls); "
            f"added latency median {medianAdded:,.0f} us, p99 {p99Added:,.0f} us"
            + (f"; relay CPU {perPacket:.1f} us/packet" if perPacket else "")
            + ("" if top is not steps.get(options.calls[-1]) else " (never lossy: a floor)")
        )
    if "builtin" in measured and "rtpengine" in measured:
        ours, theirs = best(measured["builtin"]), best(measured["rtpengine"])
        if ours is not None and theirs is not None:
            print(f"builtin/rtpengine rate ratio: {ours['relayed']['rate'] / theirs['relayed']['rate']:.2f}")
        for calls in options.calls:
            if calls in measured["builtin"] and calls in measured["rtpengine"]:
                a, b = added(measured["builtin"][calls]), added(measured["rtpengine"][calls])
                print(
                    f"{calls:>5} calls, added latency median/p99: builtin +{a[0]:,.0f}/+{a[1]:,.0f} us, "
                    f"rtpengine +{b[0]:,.0f}/+{b[1]:,.0f} us"
                )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nodes",
        type=lambda text: [n for n in text.split(",") if n],
        default=["builtin", "rtpengine"],
        help="nodes measured, in turn: " + ", ".join(NODES) + " (default: both)",
    )
    parser.add_argument(
        "--calls",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[50, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, 1000],
        help="the steps, in calls (each: 100 packets/s into the relay)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per step")
    parser.add_argument(
        "--cores",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=(0, 1),
        help="the relay's core and the generator's (default 0,1)",
    )
    parser.add_argument("--verbose", action="store_true", help="print the generator's raw figures")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument(
        "--ports",
        type=lambda text: tuple(int(p) for p in text.split("-")),
        default=(20000, 29999),
        help="the built-in relay's port range (below the ephemeral ports the generator gets); rtpengine gets as "
        "many, at most 10,000",
    )
    options = parser.parse_args()
    unknown = [n for n in options.nodes if n not in NODES]
    if unknown or not options.nodes:
        parser.error("--nodes: choose among " + ", ".join(NODES))
    if not options.calls or min(options.calls) < 1 or max(options.calls) > 5000:
        parser.error("--calls: from 1 to 5000 calls")
    if not 1 <= options.seconds <= 60 or not 0 <= options.warmup <= 10:
        parser.error("--seconds from 1 to 60, --warmup from 0 to 10")
    if len(options.ports) != 2 or not 1024 <= options.ports[0] < options.ports[1] <= 65535:
        parser.error("--ports: LOW-HIGH")
    return options


if __name__ == "__main__":
    arguments = parse()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
