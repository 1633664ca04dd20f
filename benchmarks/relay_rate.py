"""
RTP relay benchmark: N concurrent G.711 calls (50 packets/s each way)
through a relay node, N raised step by step until more than 0.1% of the
packets are lost; prints each step, the highest clean packet rate (what
the relay received per second) and the latency the relay adds (median,
p99) over a reference measured in the same step: the same load sent
directly between the generator's sockets.

    python3 benchmarks/relay_rate.py                         # built-in node, 50, 100, 150 … calls
    python3 benchmarks/relay_rate.py --calls 100,250,400 --seconds 8

The node under test runs in this process, pinned to core 0 (the built-in
node forwards in this process's reactor; a node kind of
L{benchmarks.relay_nodes.NODES} that drives another program only sets its
calls up from here). The load generator (L{benchmarks/rtp_load.py}) runs in
a process of its own pinned to core 1. Loopback only; every step is bounded
in calls and time.
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


def cpuSeconds() -> float:
    times = os.times()
    return times.user + times.system


async def step(
    reactor: Any, generator: Generator, node: Any, calls: int, seconds: float, warmup: float
) -> dict[str, Any]:
    ports = (await ask(generator, {"bind": calls}))["ports"]
    # The reference: the same load straight from socket to socket.
    direct = [[["127.0.0.1", b], ["127.0.0.1", a]] for a, b in ports]
    reference = await ask(generator, {"run": {"targets": direct, "seconds": min(seconds, 3.0), "warmup": 0.5}})
    targets = await openCalls(node, ports)
    before = cpuSeconds()
    relayed = await ask(
        generator, {"run": {"targets": [[list(a), list(b)] for a, b in targets], "seconds": seconds, "warmup": warmup}}
    )
    cpu = cpuSeconds() - before
    stats = await closeCalls(node, calls)
    await ask(generator, {"close": True})
    dropped = sum(s.caller.dropped + s.callee.dropped for s in stats if s is not None)
    return {
        "calls": calls,
        "reference": reference,
        "relayed": relayed,
        "cpu": cpu / (seconds + warmup),
        "dropped": dropped,
    }


def report(result: dict[str, Any]) -> tuple[bool, float]:
    relayed, reference = result["relayed"], result["reference"]
    sent = relayed["sent"]
    loss = relayed["lost"] / sent if sent else 1.0
    rate = relayed["rate"]
    nominal = result["calls"] * 100
    # The rate is what the generator really sent (and the relay received); a
    # generator starved of CPU by other work falls behind, which is shown.
    kept = rate >= 0.95 * nominal
    clean = loss <= LOSS_LIMIT and kept
    added = relayed["latency_us"]["median"] - reference["latency_us"]["median"]
    addedP99 = relayed["latency_us"]["p99"] - reference["latency_us"]["p99"]
    print(
        f"{result['calls']:>6} calls {rate:>9,.0f} pkt/s  loss {100 * loss:6.3f}%  "
        f"latency median {relayed['latency_us']['median']:7.0f} us (direct {reference['latency_us']['median']:5.0f}, "
        f"+{added:5.0f})  p99 {relayed['latency_us']['p99']:7.0f} us (direct {reference['latency_us']['p99']:5.0f}, "
        f"+{addedP99:6.0f})  relay CPU {100 * result['cpu']:5.1f}%  late sends {relayed['late_sends']}  "
        f"{'clean' if clean else 'LOSSY' if kept else 'generator could not keep the rate'}",
        flush=True,
    )
    return clean, rate


async def main(reactor: Any, options: argparse.Namespace) -> None:
    relayCore, generatorCore = options.cores
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {relayCore})
    low, high = (int(p) for p in options.ports.split("-"))
    node, stop = NODES[options.node](reactor, (low, high))
    generator = Generator()
    argv = [sys.executable, os.path.join(HERE, "rtp_load.py")]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        argv = [shutil.which("taskset") or "taskset", "-c", str(generatorCore), *argv]
    reactor.spawnProcess(generator, argv[0], argv, env=dict(os.environ))
    print(f"node {options.node}: RTP ports {low}-{high}; {options.seconds:g} s per step after {options.warmup:g} s")
    best: tuple[int, float, dict[str, Any]] | None = None
    try:
        for calls in options.calls:
            if 4 * calls > high - low + 1:
                print(f"{calls} calls need {4 * calls} ports: stopping (--ports)")
                break
            result = await step(reactor, generator, node, calls, options.seconds, options.warmup)
            clean, rate = report(result)
            if options.verbose:
                print("   ", json.dumps(result["relayed"]), json.dumps(result["reference"]))
            if not clean:
                break
            best = (calls, rate, result)
    finally:
        generator.transport.closeStdin()  # type: ignore[union-attr]
        await generator.ended
        await stop()
    if best is None:
        print("no clean step")
        return
    calls, rate, result = best
    relayed, reference = result["relayed"], result["reference"]
    print(
        f"highest clean rate: {rate:,.0f} packets/s received ({calls} calls); added latency median "
        f"{relayed['latency_us']['median'] - reference['latency_us']['median']:.0f} us, p99 "
        f"{relayed['latency_us']['p99'] - reference['latency_us']['p99']:.0f} us"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", choices=sorted(NODES), default="builtin")
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
        "--ports", default="20000-29999", help="the relay's port range (below the ephemeral ports the generator gets)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
