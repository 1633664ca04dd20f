"""
RTP relay benchmark: G.711 calls (50 packets/s each way) through the
built-in relay node and through rtpengine (userspace), in the same run,
with the same load generator.

By default it measures both nodes at the same fixed rates (``--rates``,
packets/s into the relay: 5,000, 10,000, 20,000) and prints them side by
side: the relay's CPU time per forwarded packet (its process's CPU over
the run, divided by the packets its own statistics say it received and
forwarded), the one-way forwarding latency through it (median, p90, p99,
p99.9, from the send to the receiving socket's read, on one clock) next
to the same load sent directly between the generator's sockets in the
same step, and the loss; then per rate the built-in/rtpengine ratio of
CPU per packet, and the rate one core would carry at that cost (a
projection: 1 s / CPU per packet).

With ``--ramp`` it raises the number of calls (``--calls``) until more
than 0.1% of the packets are lost, and prints the highest clean rate; the
load generator (one Python process) tops out between 25,000 packets/s
(sent and received, its core shared with other work) and 40,000 (alone on
the second core of this machine), near or below what either node carries,
which is why CPU per packet at a fixed rate is the default.

    python3 benchmarks/relay_rate.py                          # both nodes at 5k, 10k, 20k packets/s
    python3 benchmarks/relay_rate.py --rates 2000,20000 --seconds 8
    python3 benchmarks/relay_rate.py --ramp --calls 100,250,400

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
    # What the relay itself received (and forwarded) over the whole run, warm-up included.
    forwarded = sum(s.caller.received.packets + s.callee.received.packets for s in stats if s is not None)
    return {
        "calls": calls,
        "reference": reference,
        "relayed": relayed,
        "cpu": used / (seconds + warmup),
        "forwarded": forwarded,
        "cpuPerPacket": used / forwarded * 1e6 if forwarded else None,
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


def start(reactor: Any, name: str, options: argparse.Namespace) -> tuple[Any, Any, Any, Generator]:
    """Node C{name} on its core and the load generator (rtp_load.py) on the other."""
    relayCore, generatorCore = options.cores
    node, stop, cpu = NODES[name](reactor, tuple(options.ports), relayCore)
    generator = Generator()
    argv = [sys.executable, os.path.join(HERE, "rtp_load.py")]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        argv = [shutil.which("taskset") or "taskset", "-c", str(generatorCore), *argv]
    reactor.spawnProcess(generator, argv[0], argv, env=dict(os.environ))
    return node, stop, cpu, generator


async def measure(reactor: Any, name: str, options: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """The steps of node C{name}, up to its first lossy one; by calls."""
    low, high = options.ports
    node, stop, cpu, generator = start(reactor, name, options)
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


async def measureRates(reactor: Any, name: str, options: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """Node C{name} at each of C{options.rates}; by rate."""
    node, stop, cpu, generator = start(reactor, name, options)
    steps: dict[int, dict[str, Any]] = {}
    try:
        for rate in options.rates:
            calls = max(1, rate // 100)
            for _attempt in range(2):
                result = await step(generator, node, cpu, calls, options.seconds, options.warmup)
                if kept(result):
                    break
            result["rate"] = rate
            steps[rate] = result
            print(f"  {name:>9} {line(result)}", flush=True)
            if options.verbose:
                print("   ", json.dumps(result["relayed"]), json.dumps(result["reference"]))
    finally:
        generator.transport.closeStdin()  # type: ignore[union-attr]
        await generator.ended
        await stop()
    return steps


def line(result: dict[str, Any]) -> str:
    """One step's figures: CPU per packet, latency through the relay and direct, loss."""
    relayed, reference = result["relayed"], result["reference"]
    latency, direct = relayed["latency_us"], reference["latency_us"]
    sent = relayed["sent"]
    loss = relayed["lost"] / sent if sent else 1.0
    perPacket = result["cpuPerPacket"]
    return (
        f"{relayed['rate']:>8,.0f} pkt/s  CPU {perPacket if perPacket else float('nan'):5.1f} us/pkt "
        f"({100 * result['cpu']:4.1f}% of a core)  one-way latency us median/p90/p99/p99.9 "
        f"{latency['median']:5.0f}/{latency['p90']:5.0f}/{latency['p99']:6.0f}/{latency['p999']:6.0f} "
        f"(direct {direct['median']:4.0f}/{direct['p90']:4.0f}/{direct['p99']:5.0f}/{direct['p999']:5.0f})  "
        f"loss {100 * loss:.3f}%" + ("" if kept(result) else "  (the generator could not keep the rate)")
    )


def middle(results: list[dict[str, Any]], figure: Any) -> float:
    """The median of C{figure(result)} over repeated steps."""
    values = sorted(v for v in (figure(r) for r in results) if v is not None)
    return values[len(values) // 2] if values else float("nan")


async def compareRates(reactor: Any, options: argparse.Namespace) -> None:
    measured: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name in options.nodes}
    for round in range(options.repeat):
        for name in options.nodes:
            print(f"{name} (round {round + 1} of {options.repeat}):", flush=True)
            for rate, result in (await measureRates(reactor, name, options)).items():
                measured[name].setdefault(rate, []).append(result)
    print()
    print(f"Medians over {options.repeat} round(s); one-way latency in us (median/p90/p99/p99.9), added to direct:")
    for rate in options.rates:
        for name in options.nodes:
            results = measured[name].get(rate, [])
            if not results:
                continue
            cells = []
            for key in ("median", "p90", "p99", "p999"):
                through = middle(results, lambda r, key=key: r["relayed"]["latency_us"][key])
                # Added in each round (the relay's step against its own direct reference), then the median.
                extra = middle(
                    results, lambda r, key=key: r["relayed"]["latency_us"][key] - r["reference"]["latency_us"][key]
                )
                cells.append(f"{through:,.0f} ({extra:+,.0f})")
            print(
                f"{rate:>7,} pkt/s {name:>9}: CPU {middle(results, lambda r: r['cpuPerPacket']):5.1f} us/pkt, "
                f"{100 * middle(results, lambda r: r['cpu']):4.1f}% of a core; latency " + " / ".join(cells)
            )
    low, high = min(options.rates), max(options.rates)
    slopes = {}
    for name in options.nodes:
        if low == high or low not in measured[name] or high not in measured[name]:
            continue
        cpuLow = middle(measured[name][low], lambda r: r["cpu"])
        cpuHigh = middle(measured[name][high], lambda r: r["cpu"])
        rateLow = middle(measured[name][low], lambda r: r["forwarded"] / (options.seconds + options.warmup))
        rateHigh = middle(measured[name][high], lambda r: r["forwarded"] / (options.seconds + options.warmup))
        if rateHigh > rateLow:
            slopes[name] = (cpuHigh - cpuLow) / (rateHigh - rateLow) * 1e6
            print(
                f"{name}: marginal CPU {slopes[name]:.1f} us/pkt between {low:,} and {high:,} pkt/s "
                f"(one core, at that cost: {1e6 / slopes[name]:,.0f} pkt/s)"
                if slopes[name] > 0
                else f"{name}: no marginal CPU measured (noise)"
            )
    if "builtin" in slopes and "rtpengine" in slopes and slopes["rtpengine"] > 0:
        print(f"builtin/rtpengine marginal CPU per packet: {slopes['builtin'] / slopes['rtpengine']:.2f}")
    for rate in options.rates:
        if rate in measured.get("builtin", {}) and rate in measured.get("rtpengine", {}):
            ours = middle(measured["builtin"][rate], lambda r: r["cpuPerPacket"])
            theirs = middle(measured["rtpengine"][rate], lambda r: r["cpuPerPacket"])
            print(f"{rate:>7,} pkt/s: builtin/rtpengine CPU per packet {ours / theirs:.2f}")


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
    if not options.ramp:
        await compareRates(reactor, options)
        return
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
    parser.add_argument(
        "--rates",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[5000, 10000, 20000],
        help="the fixed rates measured, in packets/s into the relay (default 5000,10000,20000)",
    )
    parser.add_argument("--ramp", action="store_true", help="raise --calls until loss instead")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of --rates per node (medians are printed)")
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
    if not 1 <= options.repeat <= 10:
        parser.error("--repeat: from 1 to 10")
    if not options.rates or min(options.rates) < 100 or max(options.rates) > 500_000:
        parser.error("--rates: from 100 to 500000 packets/s")
    if max(options.rates) // 100 * 4 > options.ports[1] - options.ports[0] + 1:
        parser.error("--rates: the highest needs more relay ports than --ports holds (4 per call)")
    return options


if __name__ == "__main__":
    arguments = parse()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
