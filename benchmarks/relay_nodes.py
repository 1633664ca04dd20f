"""
The relay nodes the relay benchmark drives, apart from the load it sends
(L{benchmarks/rtp_load.py}): each node kind is a maker in L{NODES}
returning an L{aetasip.interfaces.IRelay}, its stopper and a reader of the
CPU seconds its forwarding used, and L{openCalls} sets calls up on any of
them through the same offer/answer as the service's media handler.

    - C{builtin}: the built-in node, forwarding in the benchmark's own
      process (pinned to the relay's core);
    - C{rtpengine}: a real rtpengine (Debian C{rtpengine-daemon}),
      userspace forwarding (C{--table=-1}), its own process pinned to the
      relay's core, reached through the service's rtpengine node (ng
      protocol) as C{relay.nodes} makes it.

A call's caller is "behind NAT" (latched from its signalling host), its
callee is not; both media sockets are the load generator's, on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults


def sdp(host: str, port: int, origin: str) -> bytes:
    return (
        f"v=0\r\no={origin} 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\n"
    ).encode()


def mediaOf(body: bytes) -> tuple[str, int]:
    """The connection address and audio port of an SDP body."""
    host = re.search(rb"(?m)^c=IN IP[46] (\S+)", body)
    port = re.search(rb"(?m)^m=audio (\d+) ", body)
    if host is None or port is None:
        raise ValueError(f"no media in {body!r}")
    return host.group(1).decode(), int(port.group(1))


async def openCalls(node: Any, ports: list[list[int]], tag: str = "bench") -> list[list[tuple[str, int]]]:
    """
    Set one call up on C{node} per C{[callerPort, calleePort]}; return,
    per call, where the caller and where the callee must send.
    """
    targets = []
    for index, (_callerPort, calleePort) in enumerate(ports):
        callID = f"{tag}-{index}"
        # The caller advertises 127.0.0.5 (it is "behind NAT"): the relay latches its real port.
        offered = await node.offer(
            callID, "a", "1", "caller", sdp("127.0.0.5", 7078, "caller"), ("127.0.0.1", 5062), True
        )
        answered = await node.answer(
            callID, "a", "b", "1", "callee", sdp("127.0.0.1", calleePort, "callee"), ("127.0.0.1", 5064), False
        )
        targets.append([mediaOf(answered), mediaOf(offered)])
    return targets


async def closeCalls(node: Any, count: int, tag: str = "bench") -> list[Any]:
    """
    Delete the calls L{openCalls} set up, 50 at a time (350 deletes at once
    make rtpengine, busy forwarding, miss its ng timeout); return their
    final statistics, C{None} for a call whose delete failed (printed).
    """
    results: list[Any] = []
    for first in range(0, count, 50):
        batch = [
            Deferred.fromCoroutine(_delete(node, f"{tag}-{index}")) for index in range(first, min(count, first + 50))
        ]
        results.extend(await gatherResults(batch))
    failed = sum(1 for r in results if isinstance(r, Exception))
    if failed:
        print(f"  {failed} deletes failed, e.g. {next(r for r in results if isinstance(r, Exception))}")
    return [None if isinstance(r, Exception) else r for r in results]


async def _delete(node: Any, callID: str) -> Any:
    try:
        return await node.delete(callID, "a")
    except Exception as e:
        return e


Stop = Callable[[], Awaitable[object]]
CPU = Callable[[], float]


def ownCPU() -> float:
    """CPU seconds (user and system) this process used so far."""
    times = os.times()
    return times.user + times.system


def processCPU(pid: int) -> CPU:
    """A reader of the CPU seconds (user and system, all threads) process C{pid} used so far."""
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return read


def pinnedTo(core: int) -> tuple[str, ...]:
    """The command prefix running a program on C{core} (none on a 1-core machine)."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ("taskset", "-c", str(core))
    return ()


def makeBuiltin(reactor: Any, ports: tuple[int, int], core: int) -> tuple[Any, Stop, CPU]:
    """The built-in node, in this process (already on C{core}), on 127.0.0.1 and C{ports}."""
    from aetasip.relay.builtin import BuiltinRelay

    node = BuiltinRelay("builtin", "127.0.0.1", ports, reactor=reactor)
    node.startService()

    def stop() -> Deferred[None]:
        return node.stopService()

    return node, stop, ownCPU


def makeRtpengine(reactor: Any, ports: tuple[int, int], core: int) -> tuple[Any, Stop, CPU]:
    """
    rtpengine in userspace on C{core}, with as many media ports as
    C{ports} holds (a free block below 32000), and the rtpengine relay
    node of the service in front of it.
    """
    from aetasip import config
    from aetasip.relay.rtpengine import makeNode
    from tests.rtpengine import Rtpengine

    executable = shutil.which("rtpengine")
    if executable is None:
        raise SystemExit("rtpengine is not installed (Debian package rtpengine-daemon)")
    engine = Rtpengine(executable, mediaPorts=min(10_000, ports[1] - ports[0] + 1), prefix=pinnedTo(core))
    engine.start()
    assert engine.process is not None
    options = {"kind": "rtpengine", "ng": [engine.ngAddress], "max_pending": 10_000}
    node = makeNode("rtpengine", options, config.build({}), reactor)
    node.startService()

    async def stop() -> None:
        await node.stopService()
        engine.cleanup()

    return node, stop, processCPU(engine.process.pid)


NODES: dict[str, Callable[[Any, tuple[int, int], int], tuple[Any, Stop, CPU]]] = {
    "builtin": makeBuiltin,
    "rtpengine": makeRtpengine,
}
"""Node kind -> maker C{(reactor, (lowPort, highPort), core) -> (IRelay, stop, cpu)}."""
