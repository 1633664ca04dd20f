#!/usr/bin/env python3
"""
The built-in relay on a busy server: RTP forwarding latency through the
built-in node while the same process handles SIP calls. The built-in
node forwards in the service's reactor, so a burst of signalling delays
the media packets waiting behind it; this measures by how much.

This process runs the aetasip service (``makeService``, as ``twistd``
would: SIP on a free loopback port, a fresh SQLite store of 1,000
callers and a callee, call records off, the service's own relay off so
that the SIP load is signalling only) and a built-in relay node, both on
one core; the RTP load generator (``rtp_load.py``) and sipp run on the
other. For each SIP rate of ``--sip-rates`` (calls/s, 0 for none), sipp
runs call_rate.py's authenticated call (INVITE, 407, ACK, INVITE with
digest, 100/180/200, ACK, BYE, 200) against the service while
relay_rate.py's step sends ``--packets`` packets/s of G.711 through the
node (and, for reference, the same load socket to socket). Printed per
step: the calls sipp completed and failed, the CPU of the whole process
(service and relay) per relayed packet, the one-way latency through the
relay (median, p90, p99, p99.9) with the direct figures, the latency the
relay added at the median and p99, the loss, and the garbage collector's
pauses in this process during the step (collections by generation and
the longest), the usual cause of the tail.

    python3 benchmarks/relay_busy.py                         # 10,000 pkt/s; SIP at 0, 100, 200, 300 calls/s
    python3 benchmarks/relay_busy.py --sip-rates 0,250 --packets 5000 --seconds 8

Loopback only; every sipp run and every step is bounded in calls and time.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task, threads

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import call_rate  # noqa: E402
from sipprate import freePort, writeConfig  # noqa: E402
from sipprate import step as sippStep  # noqa: E402

from benchmarks.relay_rate import added, line  # noqa: E402
from benchmarks.relay_rate import start as startRelay  # noqa: E402
from benchmarks.relay_rate import step as relayStep  # noqa: E402


class Pauses:
    """The garbage collector's pauses in this process, by generation, while recording."""

    def __init__(self) -> None:
        self.started = 0.0
        self.byGeneration: dict[int, list[float]] = {}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.byGeneration.setdefault(info["generation"], []).append(time.perf_counter() - self.started)

    def take(self) -> str:
        """What was recorded since the last call, in a few words; then forget it."""
        text = ", ".join(
            f"gen{generation} {len(pauses)}x up to {1000 * max(pauses):.1f} ms"
            for generation, pauses in sorted(self.byGeneration.items())
        )
        self.byGeneration = {}
        return text or "none"


REFERENCE_SECONDS = 3.5
"""How long relay_rate.step sends the direct reference before the relayed load (3 s after 0.5 s)."""


def startService(reactor: Any, workdir: str, port: int) -> Any:
    """The aetasip service, in this process, on 127.0.0.1:C{port}."""
    from aetasip.options import Options
    from aetasip.tap import makeService

    conf = writeConfig(workdir, port, observers=[])
    with open(conf, "a") as f:
        f.write("relay = {'mode': 'never'}\n")
    options = Options()
    options.parseOptions(["--config", conf])
    service = makeService(options, reactor)
    service.startService()
    return service


async def measure(reactor: Any, options: argparse.Namespace) -> list[tuple[int, dict[str, Any], tuple[int, int]]]:
    otherCore = options.cores[1]
    workdir = tempfile.mkdtemp(prefix="aetasip-busy-")
    call_rate.provision(workdir)
    port = freePort()
    service = startService(reactor, workdir, port)
    callee = call_rate.startCallee(workdir, port, str(otherCore))
    await task.deferLater(reactor, 2.0, lambda: None)
    node, stopNode, cpu, generator = startRelay(reactor, "builtin", options)
    callers = call_rate.sippArgs(workdir, port, freePort())
    results = []
    pauses = Pauses()
    gc.callbacks.append(pauses)
    try:
        for rate in options.sip_rates:
            sipp: defer.Deferred[tuple[int, int, float]] = defer.succeed((0, 0, 0.0))
            if rate:
                # The calls cover the reference, the warm-up and the measured seconds, and a margin.
                duration = REFERENCE_SECONDS + options.warmup + options.seconds + 2.0
                errors = os.path.join(workdir, f"errors-{rate}.log")
                sipp = threads.deferToThread(sippStep, callers, rate, duration, str(otherCore), errors)
            pauses.take()
            result = await relayStep(generator, node, cpu, options.packets // 100, options.seconds, options.warmup)
            collections = pauses.take()
            ok, failed, _elapsed = await sipp
            results.append((rate, result, (ok, failed)))
            medianAdded, p99Added = added(result)
            print(
                f"SIP {rate:4d} calls/s ({ok} ok, {failed} failed): {line(result)}; "
                f"added median {medianAdded:+,.0f} us, p99 {p99Added:+,.0f} us; GC {collections}",
                flush=True,
            )
    finally:
        gc.callbacks.remove(pauses)
        generator.transport.closeStdin()  # type: ignore[union-attr]
        await generator.ended
        await stopNode()
        callee.terminate()
        callee.wait(10)
        await service.stopService()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


async def main(reactor: Any, options: argparse.Namespace) -> None:
    relayCore, otherCore = options.cores
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {relayCore})
    print(
        f"load average at start {os.getloadavg()[0]:.2f}; service and built-in relay on core {relayCore}, "
        f"sipp and the RTP generator on core {otherCore}; {options.packets:,} packets/s into the relay, "
        f"{options.seconds:g} s per step after {options.warmup:g} s",
        flush=True,
    )
    await measure(reactor, options)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sip-rates",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[0, 100, 200, 300],
        help="SIP calls/s during each step, 0 for none (default 0,100,200,300)",
    )
    parser.add_argument("--packets", type=int, default=10_000, help="packets/s into the relay (default 10000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument(
        "--cores",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=(0, 1),
        help="the service's and relay's core, and the load's (default 0,1)",
    )
    parser.add_argument(
        "--ports",
        type=lambda text: tuple(int(p) for p in text.split("-")),
        default=(20000, 29999),
        help="the built-in relay's port range (below the ephemeral ports the generator gets)",
    )
    options = parser.parse_args()
    if not options.sip_rates or min(options.sip_rates) < 0 or max(options.sip_rates) > 2000:
        parser.error("--sip-rates: from 0 to 2000 calls/s")
    if not 100 <= options.packets <= 100_000:
        parser.error("--packets: from 100 to 100000 packets/s")
    if not 1 <= options.seconds <= 60 or not 0 <= options.warmup <= 10:
        parser.error("--seconds from 1 to 60, --warmup from 0 to 10")
    if len(options.ports) != 2 or not 1024 <= options.ports[0] < options.ports[1] <= 65535:
        parser.error("--ports: LOW-HIGH")
    if options.packets // 100 * 4 > options.ports[1] - options.ports[0] + 1:
        parser.error("--packets: more relay ports needed than --ports holds (4 per call)")
    for tool in ("sipp",):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (README: install the test needs)")
    return options


if __name__ == "__main__":
    arguments = parse()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
