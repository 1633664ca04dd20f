"""
The built-in relay node (L{aetasip.relay.builtin}) on loopback, with real
UDP sockets: offer and answer rewritten, symmetric latching of a party
behind NAT, a hijack attempt from a third socket, nothing sent to the
address a party behind NAT advertises, re-INVITEs, port exhaustion and
release, and the statistics.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from aetasip.relay.builtin import BuiltinRelay, NoPortsLeft
from aetasip.relay.errors import UnknownSession
from aetasip.relay.quality import RTPStream, mos, rFactor
from tests.servers import deferLater


class Socket(DatagramProtocol):
    """A party's media socket on loopback: keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))

    @property
    def port(self) -> int:
        return int(self.transport.getHost().port)  # type: ignore[union-attr]

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.transport.write(data, to)  # type: ignore[union-attr]


def rtp(seq: int, ts: int, ssrc: int = 0x1234, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def sdp(host: str, port: int, version: int = 1, extra: str = "") -> bytes:
    return (
        f"v=0\r\no=- 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"a=ebuacip:plength 8 20\r\n{extra}a=sendrecv\r\n"
    ).encode()


def media(body: bytes) -> tuple[str, int]:
    text = body.decode()
    c = re.search(r"(?m)^c=IN IP4 (\S+)", text)
    m = re.search(r"(?m)^m=audio (\d+) ", text)
    assert c is not None and m is not None, text
    return c.group(1), int(m.group(1))


# A range unlikely to be used by anything else on the machine.
LOW = 47_000


class RelayNodeTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.relay = BuiltinRelay("local", "127.0.0.1", (LOW, LOW + 99), reactor=reactor)
        self.addCleanup(self.relay.stopService)
        self.sockets: list[Any] = []

    def socket(self, host: str = "127.0.0.1") -> Socket:
        protocol = Socket()
        port = reactor.listenUDP(0, protocol, interface=host)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return protocol

    async def until(self, condition: Any, seconds: float = 3.0) -> None:
        for _ in range(int(seconds / 0.02)):
            if condition():
                return
            await deferLater(0.02)
        self.fail("not within time")

    async def setUpCall(self, callerNAT: bool = True) -> tuple[Socket, Socket, tuple[str, int], tuple[str, int]]:
        """
        The caller sends from 127.0.0.1 but advertises 127.0.0.5 (behind
        NAT); the callee advertises where it is. Returns the caller's and
        callee's sockets and where each must send (from the SDP it got).
        """
        caller, callee = self.socket(), self.socket()
        offered = await self.relay.offer(
            "call-1", "tagA", "1", "caller", sdp("127.0.0.5", 7078), ("127.0.0.1", 5062), callerNAT
        )
        answered = await self.relay.answer(
            "call-1", "tagA", "tagB", "1", "callee", sdp("127.0.0.1", callee.port), ("127.0.0.1", 5064), False
        )
        return caller, callee, media(answered), media(offered)

    async def test_offer_and_answer_point_at_the_relay_and_keep_the_rest(self) -> None:
        callee = self.socket()
        body = sdp("127.0.0.5", 7078, extra="a=candidate:1 1 UDP 2130706431 127.0.0.5 7078 typ host\r\n")
        offered = await self.relay.offer("c", "t", "1", "caller", body, ("127.0.0.1", 5062), True)
        host, port = media(offered)
        self.assertEqual(host, "127.0.0.1")
        self.assertTrue(LOW <= port <= LOW + 99 and port % 2 == 0)
        self.assertEqual(
            offered,
            body.replace(b"127.0.0.5\r\nt=", b"127.0.0.1\r\nt=")
            .replace(b"m=audio 7078", f"m=audio {port}".encode())
            .replace(b"a=candidate:1 1 UDP 2130706431 127.0.0.5 7078 typ host\r\n", b""),
        )
        answered = await self.relay.answer(
            "c", "t", "u", "1", "callee", sdp("127.0.0.1", callee.port), ("127.0.0.1", 5064), False
        )
        self.assertNotEqual(media(answered)[1], port)

    async def test_media_both_ways_with_latching(self) -> None:
        caller, callee, callerSendsTo, calleeSendsTo = await self.setUpCall()
        # Nothing can go to the caller before it latched: its SDP address is not where it is.
        callee.send(rtp(1, 160), calleeSendsTo)
        await deferLater(0.2)
        self.assertEqual(caller.received, [])
        # The caller's first packet latches it, and goes to the callee.
        first = rtp(1, 160, ssrc=0xAAAA)
        caller.send(first, callerSendsTo)
        await self.until(lambda: callee.received)
        self.assertEqual(callee.received[0], (first, ("127.0.0.1", calleeSendsTo[1])))
        back = rtp(2, 320) + b"\x00srtp-tag"
        callee.send(back, calleeSendsTo)
        await self.until(lambda: caller.received)
        self.assertEqual(caller.received, [(back, ("127.0.0.1", callerSendsTo[1]))])
        stats = await self.relay.query("call-1", "tagA")
        assert stats is not None
        self.assertEqual(stats.caller.latched, ("127.0.0.1", caller.port))
        self.assertEqual(stats.callee.latched, ("127.0.0.1", callee.port))
        self.assertEqual((stats.caller.received.packets, stats.caller.sent.packets), (1, 1))
        self.assertEqual((stats.callee.received.packets, stats.callee.sent.packets), (2, 1))

    async def test_nothing_is_sent_to_the_address_a_natted_party_advertises(self) -> None:
        advertised = self.socket("127.0.0.5")
        caller, callee = self.socket(), self.socket()
        offered = await self.relay.offer(
            "c", "t", "1", "caller", sdp("127.0.0.5", advertised.port), ("127.0.0.1", 5062), True
        )
        answered = await self.relay.answer(
            "c", "t", "u", "1", "callee", sdp("127.0.0.1", callee.port), ("127.0.0.1", 5064), False
        )
        for seq in range(5):
            callee.send(rtp(seq, seq * 160), media(offered))
        await deferLater(0.3)
        self.assertEqual(advertised.received, [])
        caller.send(rtp(1, 0), media(answered))
        callee.send(rtp(9, 9 * 160), media(offered))
        await self.until(lambda: caller.received)
        self.assertEqual(advertised.received, [])

    async def test_a_third_socket_cannot_hijack_the_media(self) -> None:
        caller, callee, callerSendsTo, calleeSendsTo = await self.setUpCall()
        caller.send(rtp(1, 160), callerSendsTo)
        callee.send(rtp(1, 160), calleeSendsTo)
        await self.until(lambda: callee.received and caller.received)
        # Another port of the parties' host, and another host, try to take over both ways.
        sameHost, stranger = self.socket(), self.socket("127.0.0.9")
        for attacker in (sameHost, stranger):
            attacker.send(rtp(50, 8000, payload=b"evil"), callerSendsTo)
            attacker.send(rtp(50, 8000, payload=b"evil"), calleeSendsTo)
        callee.send(rtp(2, 320), calleeSendsTo)
        await self.until(lambda: len(caller.received) == 2)
        await deferLater(0.2)
        self.assertEqual(len(callee.received), 1)
        self.assertEqual([d for d, _ in caller.received], [rtp(1, 160), rtp(2, 320)])
        self.assertEqual(sameHost.received + stranger.received, [])
        stats = await self.relay.query("call-1", "tagA")
        assert stats is not None
        self.assertEqual((stats.caller.dropped, stats.callee.dropped), (2, 2))
        self.assertEqual(stats.caller.latched, ("127.0.0.1", caller.port))

    async def test_a_stranger_cannot_latch_a_natted_party_first(self) -> None:
        caller, callee, callerSendsTo, calleeSendsTo = await self.setUpCall()
        stranger = self.socket("127.0.0.9")
        stranger.send(rtp(1, 160), callerSendsTo)
        callee.send(rtp(1, 160), calleeSendsTo)
        await deferLater(0.2)
        self.assertEqual(stranger.received + callee.received, [])
        caller.send(rtp(1, 160), callerSendsTo)
        await self.until(lambda: callee.received)

    async def test_re_invite_moves_the_media(self) -> None:
        caller, callee, callerSendsTo, calleeSendsTo = await self.setUpCall()
        caller.send(rtp(1, 160), callerSendsTo)
        callee.send(rtp(1, 160), calleeSendsTo)
        await self.until(lambda: callee.received and caller.received)
        # The callee moves its media to another socket (a re-INVITE with a new address).
        moved = self.socket()
        offered = await self.relay.offer(
            "call-1", "tagA", "1", "callee", sdp("127.0.0.1", moved.port, 2), ("127.0.0.1", 5064), False
        )
        self.assertEqual(media(offered), ("127.0.0.1", callerSendsTo[1]))
        answered = await self.relay.answer(
            "call-1", "tagA", "tagB", "1", "caller", sdp("127.0.0.5", 7078, 2), ("127.0.0.1", 5062), True
        )
        self.assertEqual(media(answered), ("127.0.0.1", calleeSendsTo[1]))
        caller.send(rtp(2, 320), callerSendsTo)
        await self.until(lambda: moved.received)
        self.assertEqual(len(callee.received), 1)
        # The caller stays latched across the re-INVITE (hold, resume, codec change).
        moved.send(rtp(2, 320), calleeSendsTo)
        await self.until(lambda: len(caller.received) == 2)

    async def test_ports_run_out_and_come_back(self) -> None:
        small = BuiltinRelay("small", "127.0.0.1", (LOW + 200, LOW + 203), reactor=reactor)
        self.addCleanup(small.stopService)
        await small.offer("a", "t", "1", "caller", sdp("127.0.0.1", 7000), ("127.0.0.1", 5060), False)
        with self.assertRaises(NoPortsLeft):
            await small.offer("b", "t", "1", "caller", sdp("127.0.0.1", 7002), ("127.0.0.1", 5060), False)
        stats = await small.delete("a", "t")
        self.assertIsNotNone(stats)
        self.assertIsNone(await small.delete("a", "t"))
        await small.offer("b", "t", "1", "caller", sdp("127.0.0.1", 7002), ("127.0.0.1", 5060), False)
        self.assertEqual(small.ports.free, 0)

    async def test_a_failed_branch_gives_its_ports_back(self) -> None:
        callee = self.socket()
        await self.relay.offer("c", "t", "1", "caller", sdp("127.0.0.1", 7000), ("127.0.0.1", 5060), False)
        await self.relay.offer("c", "t", "2", "caller", sdp("127.0.0.1", 7000), ("127.0.0.1", 5060), False)
        self.assertEqual(self.relay.ports.free, 47)
        await self.relay.deleteBranch("c", "t", "1")
        await self.relay.deleteBranch("c", "t", "9")
        self.assertEqual(self.relay.ports.free, 48)
        answered = await self.relay.answer(
            "c", "t", "u", "2", "callee", sdp("127.0.0.1", callee.port), ("127.0.0.1", 5064), False
        )
        self.assertEqual(media(answered)[0], "127.0.0.1")
        self.assertEqual(self.relay.ports.free, 48)

    async def test_an_answer_without_its_offer_is_refused(self) -> None:
        """
        An answer whose offer went through another relay (a server that
        died): new ports would leave the call silent, the other party
        sending to the dead ones.
        """
        answer = sdp("127.0.0.1", 7000)
        with self.assertRaises(UnknownSession):
            await self.relay.answer("c", "t", "u", "1", "callee", answer, ("127.0.0.1", 5064), False)
        self.assertEqual((self.relay.ports.free, await self.relay.sessions()), (50, []))
        # Nor on a branch whose offer it never saw, or whose ports went back.
        await self.relay.offer("c", "t", "1", "caller", sdp("127.0.0.1", 7002), ("127.0.0.1", 5060), False)
        await self.relay.offer("c", "t", "2", "caller", sdp("127.0.0.1", 7002), ("127.0.0.1", 5060), False)
        await self.relay.deleteBranch("c", "t", "2")
        for branch in ("2", "3"):
            with self.assertRaises(UnknownSession):
                await self.relay.answer("c", "t", "u", branch, "callee", answer, ("127.0.0.1", 5064), False)
        self.assertEqual(self.relay.ports.free, 48)
        answered = await self.relay.answer("c", "t", "u", "1", "callee", answer, ("127.0.0.1", 5064), False)
        self.assertEqual(media(answered)[0], "127.0.0.1")

    async def test_a_port_used_by_another_program_is_skipped(self) -> None:
        taken = Socket()
        port = reactor.listenUDP(LOW + 300, taken, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        small = BuiltinRelay("small", "127.0.0.1", (LOW + 300, LOW + 305), reactor=reactor)
        self.addCleanup(small.stopService)
        offered = await small.offer("a", "t", "1", "caller", sdp("127.0.0.1", 7000), ("127.0.0.1", 5060), False)
        self.assertEqual(media(offered)[1], LOW + 304)
        with self.assertRaises(NoPortsLeft):
            await small.offer("b", "t", "1", "caller", sdp("127.0.0.1", 7002), ("127.0.0.1", 5060), False)

    async def test_bad_sdp_fails_the_offer(self) -> None:
        from aetasip.relay.sdp import SDPError

        with self.assertRaises(SDPError):
            await self.relay.offer("a", "t", "1", "caller", b"v=0\r\nm=audio x\r\n", ("127.0.0.1", 5060), False)
        self.assertEqual(self.relay.ports.free, 50)

    async def test_sessions_and_stats(self) -> None:
        caller, callee, callerSendsTo, _ = await self.setUpCall()
        for seq in (1, 2, 3, 5, 6):  # 4 is lost
            caller.send(rtp(seq, seq * 160), callerSendsTo)
            await deferLater(0.02)
        await self.until(lambda: len(callee.received) == 5)
        ((callID, fromTag, stats),) = await self.relay.sessions()
        self.assertEqual((callID, fromTag, stats.node), ("call-1", "tagA", "local"))
        self.assertEqual(stats.caller.received.lost, 1)
        self.assertEqual(stats.caller.received.bytes, 5 * 172)
        self.assertIsNotNone(stats.caller.received.mos)
        final = await self.relay.delete("call-1", "tagA")
        assert final is not None
        self.assertEqual(final.caller.received.packets, 5)
        self.assertEqual(await self.relay.sessions(), [])
        self.assertEqual(self.relay.ports.free, 50)


class FileLimitTests(TestCase):
    def test_the_soft_limit_is_raised_for_the_port_range(self) -> None:
        from aetasip.relay import ports

        limits = {"now": (1024, 4096)}
        fake = type(
            "FakeResource",
            (),
            {
                "RLIMIT_NOFILE": 7,
                "RLIM_INFINITY": -1,
                "getrlimit": staticmethod(lambda which: limits["now"]),
                "setrlimit": staticmethod(lambda which, value: limits.update(now=value)),
            },
        )
        self.patch(ports, "resource", fake)
        ports.raiseFileLimit(2500, "local")
        self.assertEqual(limits["now"], (2500, 4096))
        ports.raiseFileLimit(9000, "local")
        self.assertEqual(limits["now"], (4096, 4096))
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class QualityTests(TestCase):
    def test_loss_from_sequence_numbers_with_wrap_and_reorder(self) -> None:
        stream = RTPStream()
        now = 0.0
        for seq in [65533, 65534, 65535, 0, 2, 1, 3, 6]:
            stream.packet(rtp(seq, seq * 160), now)
            now += 0.02
        self.assertEqual(stream.packets, 8)
        self.assertEqual(stream.lost, 2)  # 4 and 5

    def test_jitter_of_a_regular_stream_is_zero_and_grows_with_irregularity(self) -> None:
        regular, irregular = RTPStream(), RTPStream()
        for i in range(200):
            regular.packet(rtp(i, i * 160), i * 0.02)
            irregular.packet(rtp(i, i * 160), i * 0.02 + (0.01 if i % 2 else 0.0))
        self.assertAlmostEqual(regular.jitterMs, 0.0, places=6)
        # Alternating 10 ms deviations: |D| = 10 ms each packet, so J converges to 10 ms.
        self.assertAlmostEqual(irregular.jitterMs, 10.0, places=1)

    def test_a_new_ssrc_starts_a_new_sequence(self) -> None:
        stream = RTPStream()
        for seq in range(1, 11):
            stream.packet(rtp(seq, seq), 0.0)
        for seq in range(40000, 40010):
            stream.packet(rtp(seq, seq, ssrc=99), 0.0)
        self.assertEqual(stream.lost, 0)

    def test_e_model(self) -> None:
        self.assertAlmostEqual(rFactor(0, 0), 93.2 - 0.48, places=2)
        self.assertGreater(mos(rFactor(0, 0)), 4.3)
        self.assertLess(rFactor(5, 0), rFactor(1, 0))
        self.assertLess(rFactor(0, 100), rFactor(0, 10))
        self.assertEqual(mos(0), 1.0)
        self.assertEqual(mos(120), 4.5)
