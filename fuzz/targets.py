"""
What the fuzz campaign feeds and checks: the SIP parser, the whole SIP
element (a real SIPService on a Clock, as the transports feed it, UDP and
TCP), and the STUN server. Shared by C{fuzz/campaign.py} (atheris,
coverage-guided) and the bounded slice in the test suite
(C{tests/test_fuzz_slice.py}).

A target raises L{Failed} when an input makes the code misbehave: an
exception out of the parser other than L{ParseError}, a failure the SIP
core caught and logged (it never lets one reach the reactor, so a logged
failure is the bug), or an input slower than L{SLOW} seconds of CPU time.
"""

from __future__ import annotations

import gc
import glob
import os
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from aetasip import config
from aetasip.auth import credentialsFromPassword
from aetasip.sip.errors import ParseError
from aetasip.sip.parser import parse
from aetasip.sip.transaction import Peer
from aetasip.stun.server import ALTERNATE_ADDRESS, ALTERNATE_BOTH, ALTERNATE_PORT, PRIMARY, STUNServer

SLOW = 0.010
"""No input may take more CPU time than this (10 ms)."""

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Failed(Exception):
    """An input made the code misbehave."""


def seeds() -> list[bytes]:
    """The RFC 4475 torture messages and the messages of a call and a registration."""
    found = []
    for path in sorted(glob.glob(os.path.join(TOP, "tests", "torture", "*.dat"))):
        with open(path, "rb") as f:
            found.append(f.read())
    found += [REGISTER, INVITE_WITH_CREDENTIALS, OPTIONS]
    return found


REGISTER = (
    b"REGISTER sip:sip.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-r1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:45675001@sip.example.net>;tag=r1\r\nTo: <sip:45675001@sip.example.net>\r\n"
    b"Call-ID: reg-1@fuzz\r\nCSeq: 1 REGISTER\r\nContact: <sip:45675001@10.0.0.7:5060>;expires=600\r\n"
    b'Authorization: Digest username="45675001", realm="aetasip", nonce="AAAAAGsREObkyD4xQJjNO3zFIgQsQv7oYyINrTqQkTUY", '
    b'uri="sip:sip.example.net", response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, '
    b'nc=00000001, cnonce="c1"\r\nSupported: path, outbound\r\nUser-Agent: fuzz/1.0\r\nContent-Length: 0\r\n\r\n'
)
INVITE_WITH_CREDENTIALS = (
    b"INVITE sip:45675002@sip.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-i1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:45675001@sip.example.net>;tag=a\r\nTo: <sip:45675002@sip.example.net>\r\n"
    b"Call-ID: call-1@fuzz\r\nCSeq: 2 INVITE\r\nContact: <sip:45675001@10.0.0.7:5060>\r\n"
    b"Route: <sip:sip.example.net;lr>\r\nSession-Expires: 1800;refresher=uac\r\nSupported: timer, 100rel\r\n"
    b'Proxy-Authorization: Digest username="45675001", realm="aetasip", nonce="AAAA", uri="sip:45675002@sip.example.net", '
    b'response="00", algorithm=MD5\r\nContent-Type: application/sdp\r\nContent-Length: 31\r\n\r\n'
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=-\r\n"
)
OPTIONS = (
    b"OPTIONS sip:sip.example.net SIP/2.0\r\nVia: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bK-o1\r\n"
    b"From: <sip:1@sip.example.net>;tag=1\r\nTo: <sip:sip.example.net>\r\nCall-ID: o1@fuzz\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)

STUN_SEEDS = [
    b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),
    b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x00\x03\x00\x04\x00\x00\x00\x06",
    b"\x00\x01\x00\x00\x0b\xad\xc0\xde" + bytes(12),
]


class _Timer:
    """
    Checks the CPU time inputs take. On a shared machine a run may be slow
    for someone else's sake (caches, frequency, a busy sibling thread); a
    slow input is slow every time. So a run over L{SLOW} makes its input a
    suspect, measured again later (L{recheck}) on fresh state, five times:
    it fails only if its fastest run is still over L{SLOW}.
    """

    def __init__(self, strict: bool = True) -> None:
        self.slowest = 0.0
        self.strict = strict
        self.suspects: list[tuple[str, Any, tuple[Any, ...]]] = []
        # Inputs still slow when measured again, when not strict: under
        # atheris the code is instrumented for coverage (several times
        # slower), so the campaign keeps them to measure without it.
        self.slowInputs: list[bytes] = []

    def run(self, what: str, function: Any, *args: Any, replay: Any = None) -> Any:
        """
        Run C{function}; a run over L{SLOW} makes C{args} a suspect, to be
        replayed with C{replay} (which returns the CPU time its run took),
        or with C{function} itself when it changes no state.
        """
        start = time.thread_time()
        result = function(*args)
        spent = time.thread_time() - start
        if spent > SLOW:
            self.suspects.append((what, replay or _timed(function), args))
        else:
            self.slowest = max(self.slowest, spent)
        return result

    def recheck(self) -> None:
        """Measure the suspects again; raise L{Failed} for one slow every time."""
        suspects, self.suspects = self.suspects, []
        for what, replay, args in suspects:
            spent = min(replay(*args) for _ in range(5))
            if spent > SLOW and not self.strict:
                self.slowInputs.append(args[0])
                continue
            self.slowest = max(self.slowest, spent)
            if spent > SLOW:
                raise Failed(f"{what} took {spent * 1000:.1f} ms of CPU (fastest of 5 runs) on {args[0]!r}")


def _timed(function: Any) -> Any:
    def timed(*args: Any) -> float:
        start = time.thread_time()
        function(*args)
        return time.thread_time() - start

    return timed


def both(data: bytes) -> None:
    """parse() on UDP and on TCP framing: only ParseError may come out."""
    for stream in (False, True):
        try:
            parse(data, stream)
        except ParseError:
            pass


class Targets:
    """
    The fuzz targets, built once: a SIP element with two registered agents
    and a STUN server.

    @ivar inputs: inputs fed so far.
    """

    def __init__(self, strict: bool = True) -> None:
        """
        @param strict: fail on a slow input at once (see L{_Timer}); the
            instrumented campaign keeps them for a check without
            instrumentation instead.
        """
        from aetasip.tap import makeSIPService

        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.timer = _Timer(strict)
        self.inputs = 0
        settings = config.build({"sip.domains": ["sip.example.net"], "flood.limit": 0})
        self.sip = makeSIPService(settings, _Accounts(), reactor=self.clock)
        self.sip.location.start()
        self.sent = 0
        self.failures: list[str] = []
        globalLogPublisher.addObserver(self._logged)
        self.stun = STUNServer(software="aetasip/fuzz", rateLimit=0)
        addresses = {
            PRIMARY: ("192.0.2.1", 3478),
            ALTERNATE_PORT: ("192.0.2.1", 3479),
            ALTERNATE_ADDRESS: ("192.0.2.2", 3478),
            ALTERNATE_BOTH: ("192.0.2.2", 3479),
        }
        self.stunEndpoints = [self.stun.endpoint(role, addresses) for role in addresses]
        self.stunStream = self.stun.endpoint(PRIMARY, addresses, stream=True)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self._logged)
        self.sip.transactions.stop()
        self.sip.clients.stop()

    def _logged(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None and event.get("log_namespace", "").startswith("aetasip"):
            self.failures.append(str(event["log_failure"].getTraceback()))

    def _send(self, data: bytes) -> None:
        self.sent += len(data)

    # -- the targets --------------------------------------------------------

    def parser(self, data: bytes) -> None:
        """Only ParseError may come out of parse(), on UDP and TCP framing alike."""

        self.timer.run("parse", both, data)

    def element(self, data: bytes) -> None:
        """The whole SIP element: no failure logged, whatever comes in, over UDP or TCP."""
        self.inputs += 1
        stream = self.inputs % 4 == 0
        peer = Peer("tcp" if stream else "udp", ("198.51.100.7", 5060), ("127.0.0.1", 5060), self._send)
        self.timer.run("element", self.sip.core.receive, data, peer, stream, replay=self._onFreshElement)
        if self.inputs % 64 == 0:
            # Let timers run (retransmissions, timeouts) now and then.
            self.timer.run("timers", self.clock.advance, 1.0)
        if self.failures:
            failure, self.failures = self.failures[0], []
            raise Failed(f"the SIP core logged a failure:\n{failure}")

    def _onFreshElement(self, data: bytes, peer: Peer, stream: bool) -> float:
        """C{data} into a new SIP element (the replay of a slow input): the CPU time it took."""
        from aetasip.tap import makeSIPService

        settings = config.build({"sip.domains": ["sip.example.net"], "flood.limit": 0})
        fresh = makeSIPService(settings, _Accounts(), reactor=Clock())
        try:
            start = time.thread_time()
            fresh.core.receive(data, peer, stream)
            return time.thread_time() - start
        finally:
            fresh.transactions.stop()
            fresh.clients.stop()

    def _peer(self, stream: bool = False) -> Peer:
        return Peer("tcp" if stream else "udp", ("198.51.100.7", 5060), ("127.0.0.1", 5060), self._send)

    @staticmethod
    def _timedParse(data: bytes) -> float:
        start = time.thread_time()
        both(data)
        return time.thread_time() - start

    def stunServer(self, data: bytes) -> None:
        """The STUN server answers or drops anything, on every socket of a RFC 5780 set."""
        endpoint = self.stunEndpoints[self.inputs % 4]
        self.timer.run("stun", self.stun.datagram, data, ("198.51.100.7", 40000), endpoint)
        self.timer.run("stun stream", self.stun.stream, data, ("198.51.100.7", 40000), self.stunStream)

    def all(self, data: bytes) -> None:
        if self.inputs % 1000 == 999:
            # The garbage collector runs here, between inputs, when the
            # campaign turned it off (collections are no input's doing);
            # and slow inputs are measured again.
            gc.collect()
            self.timer.recheck()
        if data[:1] in (b"\x00", b"\x01"):
            self.stunServer(data)
            return
        self.parser(data)
        self.element(data)


class _Accounts:
    """Two accounts, answered at once."""

    def __init__(self) -> None:
        self.accounts = {
            number: credentialsFromPassword(number, "premium", "aetasip", "secret")
            for number in ("45675001", "45675002")
        }

    def credentials(self, number: str) -> Any:
        from twisted.internet.defer import succeed

        return succeed(self.accounts.get(number))
