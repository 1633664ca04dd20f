#!/usr/bin/env python3
"""
CPU cost of one authenticated call in aetasip's SIP core, without sockets.

Builds the real SIPService on a Clock (no reactor, no network) and feeds
it, as bytes, the messages of benchmarks/call_rate.py's scenario: INVITE,
407, ACK, INVITE with digest MD5, 100, 180 and 200 from the callee, ACK
and BYE through the Record-Route, 200 for the BYE. Only the time spent
inside the core (receiving a message and everything it causes, timers
included) is counted; building the agents' messages is not. Prints
microseconds per call and what that means in calls/s for one core.

It is the quick, quiet figure for work on the hot path; call_rate.py with
sipp over loopback remains the figure that counts (it adds the sockets, the
reactor and the kernel).

    python3 benchmarks/call_cpu.py [--calls 20000] [--repeat 3] [--profile out.prof] [--records]

With --records the call records observer (on by default in the service)
is attached, writing to a SQLite store in the same thread; the service
writes in the store's thread, so the time of those writes is printed
apart (wall and CPU time per call) and left out of the core's figure.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import heapq
import os
import re
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.base import DelayedCall
from twisted.internet.defer import succeed

from aetasip import config
from aetasip.auth import credentialsFromPassword
from aetasip.sip.transaction import Peer
from aetasip.sipelement import makeSIPService
from aetasip.tap import tuneGarbageCollector

REALM = "aetasip"
SERVER = ("127.0.0.1", 5060)
CALLEE = ("127.0.0.1", 7000)
CALLEE_NUMBER = "30000000"
CALLERS = 1000
SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class Accounts:
    """An auth backend answering at once, like a warm credentials cache."""

    def __init__(self) -> None:
        self.accounts = {
            str(20000000 + i): credentialsFromPassword(str(20000000 + i), "premium", REALM, f"bench-{i}")
            for i in range(CALLERS)
        }
        self.accounts[CALLEE_NUMBER] = credentialsFromPassword(CALLEE_NUMBER, "premium", REALM, "callee")

    def credentials(self, number: str) -> Any:
        return succeed(self.accounts.get(number))


class Socket:
    """The service's UDP socket: keeps what it sends, by destination."""

    def __init__(self) -> None:
        self.transport = self
        self.sent: list[tuple[tuple[str, int], bytes]] = []

    def sendTo(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((addr, data))

    write = sendTo  # what older trees call on a UDP port, for before/after figures


class HeapClock:
    """
    An IReactorTime on a heap, as the reactor keeps its timers.
    (twisted.internet.task.Clock sorts its whole list on every callLater:
    quadratic with the ~30,000 timers of 32 s transactions at 800 calls/s.)
    """

    def __init__(self, now: float) -> None:
        self.now = now
        self.heap: list[tuple[float, int, DelayedCall]] = []
        self.sequence = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> DelayedCall:
        call = DelayedCall(self.now + delay, f, args, kw, lambda c: None, self._push, seconds=self.seconds)
        self._push(call)
        return call

    def _push(self, call: DelayedCall) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (call.getTime(), self.sequence, call))

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [call for _, _, call in self.heap if call.active()]

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self.heap
        while heap and heap[0][0] <= self.now:
            when, _, call = heapq.heappop(heap)
            # Cancelled, or moved (reset) and pushed again under its new time.
            if call.cancelled or call.called or call.getTime() != when:
                continue
            call.called = 1
            call.func(*call.args, **call.kw)


class SameThreadSink:
    """The store as the records' sink, written in this thread (so its time is counted)."""

    def __init__(self, directory: str) -> None:
        from aetasip.store import Store

        self.store = Store(f"sqlite:///{directory}/records.db")
        self.store.open()

    def recover(self, server: str, now: float) -> Any:
        return succeed(self.store.closeOpenCallRecords(server, now))

    wall = 0.0
    cpu = 0.0

    def write(self, records: Any, server: str, now: float) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        self.store.writeCallRecords(records, server, now)
        self.wall += time.perf_counter() - wall
        self.cpu += time.thread_time() - cpu
        return succeed(None)

    def heartbeat(self, server: str, now: float) -> Any:
        return succeed(self.store.recordHeartbeat(server, now))


class Bench:
    def __init__(self, records: bool = False) -> None:
        settings = config.build({"sip.domains": ["127.0.0.1"], "sip.realm": REALM})
        self.clock = HeapClock(1_800_000_000.0)
        observers = None
        if records:
            import tempfile

            from aetasip.calls.call import CallObservers
            from aetasip.records.cdr import CDRService

            self.sink = SameThreadSink(tempfile.mkdtemp(prefix="aetasip-cpu-"))
            self.cdr = CDRService(self.sink, "bench", self.clock)
            self.cdr.startService()
            observers = CallObservers([self.cdr])
        self.service = makeSIPService(settings, Accounts(), reactor=self.clock, observers=observers)
        self.core = self.service.core
        self.service.location.start()
        self.socket = Socket()
        self.service._udpByLocal[SERVER] = self.socket  # type: ignore[assignment]
        self.elapsed = 0.0
        self.messages = 0
        self.calls = 0
        self.register()

    def deliver(self, data: bytes, source: tuple[str, int], replies: list[bytes] | None = None) -> list[bytes]:
        """
        Feed C{data} from C{source}; return the list what goes back to it
        through its transaction lands in (C{replies} when given).
        """
        replies = [] if replies is None else replies
        peer = Peer("udp", source, SERVER, replies.append)
        start = time.perf_counter()
        self.core.receive(data, peer)
        self.elapsed += time.perf_counter() - start
        self.messages += 1
        return replies

    def forwarded(self) -> list[tuple[tuple[str, int], bytes]]:
        sent, self.socket.sent = self.socket.sent, []
        return sent

    def register(self, number: str = CALLEE_NUMBER, password: str = "callee", source: tuple[str, int] = CALLEE,
                 i: int = 0) -> None:  # fmt: skip
        """C{number} registers from C{source}: REGISTER, 401, REGISTER with digest MD5, 200."""
        host, port = source
        head = (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-reg{i}-{{n}};rport\r\n"
            f"From: <sip:{number}@127.0.0.1>;tag=reg{i}\r\nTo: <sip:{number}@127.0.0.1>\r\n"
            f"Call-ID: reg{i}@bench\r\nCSeq: {{n}} REGISTER\r\nContact: <sip:{number}@{host}:{port}>\r\n"
            "Max-Forwards: 70\r\nExpires: 3600\r\n"
        )
        (challenge,) = self.deliver((head.format(n=1) + "Content-Length: 0\r\n\r\n").encode(), source)
        nonce = re.search(rb'nonce="([^"]+)"', challenge).group(1).decode()  # type: ignore[union-attr]
        ha1 = md5(f"{number}:{REALM}:{password}")
        response = md5(f"{ha1}:{nonce}:{md5('REGISTER:sip:127.0.0.1')}")
        auth = (
            f'Authorization: Digest username="{number}", realm="{REALM}", nonce="{nonce}", '
            f'uri="sip:127.0.0.1", response="{response}", algorithm=MD5\r\n'
        )
        (ok,) = self.deliver((head.format(n=2) + auth + "Content-Length: 0\r\n\r\n").encode(), source)
        assert ok.startswith(b"SIP/2.0 200"), ok

    def registration(self, i: int) -> None:
        """What register_rate.py measures: caller i % 1,000 registers from its own port."""
        index = i % CALLERS
        self.register(str(20000000 + index), f"bench-{index}", ("127.0.0.1", 10000 + index), i)

    def call(self, i: int) -> None:
        index = i % CALLERS
        number = str(20000000 + index)
        caller = ("127.0.0.1", 10000 + index)
        tag = f"caller{i}"
        callID = f"{i}-bench@127.0.0.1"
        common = (
            f"From: <sip:{number}@127.0.0.1>;tag={tag}\r\nTo: <sip:{CALLEE_NUMBER}@127.0.0.1>\r\nCall-ID: {callID}\r\n"
        )
        via1 = f"Via: SIP/2.0/UDP 127.0.0.1:{caller[1]};branch=z9hG4bK-{i}-1;rport\r\n"
        contact = f"Contact: <sip:{number}@127.0.0.1:{caller[1]};transport=UDP>\r\n"
        ruri = f"sip:{CALLEE_NUMBER}@127.0.0.1:5060"
        invite = (
            f"INVITE {ruri} SIP/2.0\r\n{via1}{common}CSeq: 1 INVITE\r\n{contact}Max-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
        ).encode() + SDP
        (challenge,) = self.deliver(invite, caller)
        assert challenge.startswith(b"SIP/2.0 407"), challenge
        toTag = re.search(rb"\r\nTo: [^\r]*;tag=([^\r;]+)", challenge).group(1).decode()  # type: ignore[union-attr]
        nonce = re.search(rb'nonce="([^"]+)"', challenge).group(1).decode()  # type: ignore[union-attr]
        ack = (
            f"ACK {ruri} SIP/2.0\r\n{via1}From: <sip:{number}@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:{CALLEE_NUMBER}@127.0.0.1>;tag={toTag}\r\nCall-ID: {callID}\r\nCSeq: 1 ACK\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        assert self.deliver(ack, caller) == []
        ha1 = md5(f"{number}:{REALM}:bench-{index}")
        response = md5(f"{ha1}:{nonce}:{md5('INVITE:' + ruri)}")
        auth = (
            f'Proxy-Authorization: Digest username="{number}", realm="{REALM}", nonce="{nonce}", '
            f'uri="{ruri}", response="{response}", algorithm=MD5\r\n'
        )
        via2 = f"Via: SIP/2.0/UDP 127.0.0.1:{caller[1]};branch=z9hG4bK-{i}-2;rport\r\n"
        invite = (
            f"INVITE {ruri} SIP/2.0\r\n{via2}{common}CSeq: 2 INVITE\r\n{contact}{auth}Max-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
        ).encode() + SDP
        upstream = self.deliver(invite, caller)
        assert len(upstream) == 1 and upstream[0].startswith(b"SIP/2.0 100"), upstream
        ((destination, forwarded),) = self.forwarded()
        assert destination == CALLEE, destination
        # The callee answers what it got: every Via, Record-Route, From, To, Call-ID, CSeq.
        head = forwarded.split(b"\r\n\r\n", 1)[0].decode()
        copied = "".join(
            line + "\r\n"
            for line in head.split("\r\n")[1:]
            if line.split(":", 1)[0] in ("Via", "Record-Route", "From", "Call-ID", "CSeq")
        )
        to = f"To: <sip:{CALLEE_NUMBER}@127.0.0.1>;tag=callee{i}\r\n"
        calleeContact = "Contact: <sip:127.0.0.1:7000;transport=UDP>\r\n"
        for status in ("100 Trying", "180 Ringing"):
            self.deliver(f"SIP/2.0 {status}\r\n{copied}{to}Content-Length: 0\r\n\r\n".encode(), CALLEE)
        ok = (
            f"SIP/2.0 200 OK\r\n{copied}{to}{calleeContact}Content-Type: application/sdp\r\n"
            f"Content-Length: {len(SDP)}\r\n\r\n"
        ).encode() + SDP
        self.deliver(ok, CALLEE)
        assert [data[:11] for data in upstream] == [b"SIP/2.0 100", b"SIP/2.0 180", b"SIP/2.0 200"], upstream
        up = upstream[-1].split(b"\r\n\r\n", 1)[0].decode()
        routes = [line.split(":", 1)[1].strip() for line in up.split("\r\n") if line.startswith("Record-Route:")]
        route = "".join(f"Route: {r}\r\n" for r in reversed(routes))
        target = "sip:127.0.0.1:7000;transport=UDP"
        dialog = (
            f"From: <sip:{number}@127.0.0.1>;tag={tag}\r\n{to}Call-ID: {callID}\r\n"
            f"Max-Forwards: 70\r\n{route}Content-Length: 0\r\n\r\n"
        )
        ack = f"ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{caller[1]};branch=z9hG4bK-{i}-3;rport\r\n"
        self.deliver((ack + "CSeq: 2 ACK\r\n" + dialog).encode(), caller)
        bye = f"BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{caller[1]};branch=z9hG4bK-{i}-4;rport\r\n"
        byeReplies = self.deliver((bye + "CSeq: 3 BYE\r\n" + dialog).encode(), caller)
        sent = self.forwarded()
        assert [d[:3] for _, d in sent] == [b"ACK", b"BYE"], sent
        head = sent[1][1].split(b"\r\n\r\n", 1)[0].decode()
        copied = "".join(
            line + "\r\n"
            for line in head.split("\r\n")[1:]
            if line.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")
        )
        self.deliver(f"SIP/2.0 200 OK\r\n{copied}Content-Length: 0\r\n\r\n".encode(), CALLEE)
        assert len(byeReplies) == 1 and byeReplies[0].startswith(b"SIP/2.0 200"), byeReplies

    def run(self, calls: int, rate: float, register: bool = False) -> None:
        """
        C{calls} calls (or registrations), the clock moving as at C{rate}
        calls/s (timers fire, transactions end).
        """
        step = 1.0 / rate
        for i in range(self.calls, self.calls + calls):
            if register:
                self.registration(i)
            else:
                self.call(i)
            start = time.perf_counter()
            self.clock.advance(step)
            self.elapsed += time.perf_counter() - start
        self.calls += calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000, help="calls per run (bounded: at most 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is kept")
    parser.add_argument("--rate", type=float, default=800.0, help="calls/s the clock advances at")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of one run to FILE")
    parser.add_argument(
        "--register", action="store_true", help="time REGISTER with digest (register_rate.py's scenario) instead"
    )
    parser.add_argument("--records", action="store_true", help="with the call records observer (see above)")
    args = parser.parse_args()
    calls = max(1, min(args.calls, 1_000_000))
    best = None
    for _ in range(max(1, args.repeat)):
        bench = Bench(args.records)
        tuneGarbageCollector()  # as twistd aetasip does once started
        bench.run(min(calls, 1000), args.rate, args.register)  # warm up: caches, first allocations
        bench.elapsed, bench.messages = 0.0, 0
        if args.records:
            bench.sink.wall = bench.sink.cpu = 0.0
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            bench.run(calls, args.rate, args.register)
            profiler.disable()
            profiler.dump_stats(args.profile)
        else:
            bench.run(calls, args.rate, args.register)
        store = ""
        if args.records:
            store = f" (records' store writes apart: {1e6 * bench.sink.wall / calls:.0f} us/call, {1e6 * bench.sink.cpu / calls:.0f} us CPU)"
            bench.elapsed -= bench.sink.wall
            bench.sink.wall = bench.sink.cpu = 0.0
        perCall = bench.elapsed / calls
        print(
            f"{calls} calls, {bench.messages} messages: {perCall * 1e6:.0f} us/call -> {1 / perCall:.0f} calls/s on one core"
            + store
        )
        best = perCall if best is None else min(best, perCall)
    assert best is not None
    print(f"best: {best * 1e6:.0f} us/call -> {1 / best:.0f} calls/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
