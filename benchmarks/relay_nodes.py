"""
The relay nodes the relay benchmark can drive, apart from the load it
sends (L{benchmarks/rtp_load.py}): each node kind is a maker in L{NODES}
returning an L{aetasip.interfaces.IRelay} (and its stopper), and
L{openCalls} sets calls up on any of them through the same offer/answer as
the service's media handler, so that an rtpengine node plugs in by adding
its maker here.

A call's caller is "behind NAT" (latched from its signalling host), its
callee is not; both media sockets are the load generator's, on 127.0.0.1.
"""

from __future__ import annotations

import re
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
    """Delete the calls L{openCalls} set up; return their final statistics."""
    return list(await gatherResults([node.delete(f"{tag}-{index}", "a") for index in range(count)]))


def makeBuiltin(reactor: Any, ports: tuple[int, int]) -> tuple[Any, Callable[[], Awaitable[object]]]:
    """The built-in node, in this process, on 127.0.0.1 and C{ports}."""
    from aetasip.relay.builtin import BuiltinRelay

    node = BuiltinRelay("builtin", "127.0.0.1", ports, reactor=reactor)
    node.startService()

    def stop() -> Deferred[None]:
        return node.stopService()

    return node, stop


NODES: dict[str, Callable[[Any, tuple[int, int]], tuple[Any, Callable[[], Awaitable[object]]]]] = {
    "builtin": makeBuiltin,
}
"""Node kind -> maker C{(reactor, (lowPort, highPort)) -> (IRelay, stop)}."""
