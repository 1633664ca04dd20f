"""
Relay nodes on a real rtpengine (L{aetasip.relay.rtpengine}): offers and
answers rewritten to rtpengine's address, RTP through it both ways
between loopback sockets, latching of a NATed leg to its signalling
source, a hijack attempt, delete and statistics, failover between two
daemons, and a silent ng port.

The NATed caller advertises 127.0.0.9 in its SDP: a socket there checks
that nothing is ever sent to the advertised address.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from typing import Any, NamedTuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from aetasip.relay.errors import UnknownSession
from aetasip.relay.ngclient import RelayUnavailable
from aetasip.relay.rtpengine import RtpengineNode
from aetasip.relay.stats import RelayStats
from tests.rtpengine import Rtpengine, rtpenginePath, startedNode, startedRtpengine
from tests.servers import deferLater

CALL = "call-1@aetasip.test"
CALLER_TAG = "caller-tag"
CALLEE_TAG = "callee-tag"
SIGNALLING = ("127.0.0.1", 5060)


def sdp(host: str, port: int, ice: bool = True) -> bytes:
    """An SDP with G.711 A-law and DTMF events; with ICE candidates for an offerer."""
    candidates = (
        f"a=candidate:1 1 UDP 2130706431 {host} {port} typ host\r\n"
        "a=ice-ufrag:abcd\r\n"
        "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    )
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        f"{candidates if ice else ''}"
        "a=sendrecv\r\n"
    ).encode()


def mediaAddress(body: bytes) -> tuple[str, int]:
    text = body.decode()
    host = re.search(r"^c=IN IP[46] (\S+)\r$", text, re.M)
    port = re.search(r"^m=audio (\d+) ", text, re.M)
    assert host is not None and port is not None, text
    return host.group(1), int(port.group(1))


def rtp(sequence: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, sequence & 0xFFFF, sequence * 160, ssrc) + b"\xd5" * 160


async def waitFor(condition: Any, seconds: float = 5.0) -> None:
    """Until C{condition()} holds, at most C{seconds} (a loaded machine is slow, not wrong)."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await deferLater(0.02)


class MediaPeer(DatagramProtocol):
    """A UDP socket that keeps what it receives, with the source."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, address: Any) -> None:
        self.received.append((datagram, (address[0], address[1])))


class Fork(NamedTuple):
    """A call forked to branches b1 and b2, answered by b2: the parties' sockets and the relay's ports."""

    caller: MediaPeer
    first: MediaPeer
    second: MediaPeer
    toFirst: tuple[str, int]
    toSecond: tuple[str, int]
    toCaller: tuple[str, int]


class RtpengineCalls(TestCase):
    """A real rtpengine, a node on it, and calls between loopback media sockets."""

    timeout = 60

    def setUp(self) -> None:
        self.engine = startedRtpengine(self)
        self.node = self.makeNode([self.engine.ngAddress])

    def makeNode(self, addresses: list[str], **options: Any) -> RtpengineNode:
        options.setdefault("timeout", 0.5)
        options.setdefault("retries", 1)
        node: RtpengineNode = startedNode(self, addresses, **options)
        return node

    def peer(self, host: str = "127.0.0.1", port: int = 0) -> tuple[MediaPeer, int]:
        protocol = MediaPeer()
        listening = reactor.listenUDP(port, protocol, interface=host)  # type: ignore[attr-defined]
        self.addCleanup(listening.stopListening)
        return protocol, listening.getHost().port

    async def call(self, callerNAT: bool = False) -> dict[str, Any]:
        """
        Offer and answer through the node: the caller advertises 127.0.0.9
        when behind NAT (its real socket is on 127.0.0.1), the callee its
        real address.
        """
        caller, callerPort = self.peer()
        callee, calleePort = self.peer()
        advertised, advertisedPort = self.peer("127.0.0.9")
        callerSDP = sdp("127.0.0.9", advertisedPort) if callerNAT else sdp("127.0.0.1", callerPort)
        offered = await self.node.offer(CALL, CALLER_TAG, "branch-1", "caller", callerSDP, SIGNALLING, callerNAT)
        answered = await self.node.answer(
            CALL,
            CALLER_TAG,
            CALLEE_TAG,
            "branch-1",
            "callee",
            sdp("127.0.0.1", calleePort, ice=False),
            SIGNALLING,
            False,
        )
        return {
            "caller": caller,
            "callerPort": callerPort,
            "callee": callee,
            "calleePort": calleePort,
            "advertised": advertised,
            "offered": offered,
            "answered": answered,
            "toCallee": mediaAddress(offered),
            "toCaller": mediaAddress(answered),
        }

    async def offerThrough(self, node: RtpengineNode, sender: str, port: int, callID: str = CALL) -> bytes:
        """C{sender}'s offer of branch 1 through C{node}: its media on C{port} of 127.0.0.1."""
        return await node.offer(callID, CALLER_TAG, "1", sender, sdp("127.0.0.1", port), SIGNALLING, False)

    async def answerThrough(self, node: RtpengineNode, sender: str, port: int, callID: str = CALL) -> bytes:
        """C{sender}'s answer of branch 1 (no ICE) through C{node}: its media on C{port} of 127.0.0.1."""
        answer = sdp("127.0.0.1", port, ice=False)
        return await node.answer(callID, CALLER_TAG, CALLEE_TAG, "1", sender, answer, SIGNALLING, False)

    async def forkedCall(self) -> Fork:
        """The caller's offer to two branches, b1 and b2, and b2's answer, through the node."""
        caller, callerPort = self.peer()
        first, _ = self.peer()
        second, secondPort = self.peer()
        offer = sdp("127.0.0.1", callerPort)
        toFirst = mediaAddress(await self.node.offer(CALL, CALLER_TAG, "b1", "caller", offer, SIGNALLING, False))
        toSecond = mediaAddress(await self.node.offer(CALL, CALLER_TAG, "b2", "caller", offer, SIGNALLING, False))
        answered = await self.node.answer(
            CALL, CALLER_TAG, "second-tag", "b2", "callee", sdp("127.0.0.1", secondPort, ice=False), SIGNALLING, False
        )
        return Fork(caller, first, second, toFirst, toSecond, mediaAddress(answered))

    async def exchange(self, call: dict[str, Any], count: int = 10) -> None:
        """
        C{count} packets each way (the caller first, as a NATed agent must),
        20 ms apart; then wait (at most 5 s) until both sides got as many.
        """
        callerSocket = call["caller"].transport
        calleeSocket = call["callee"].transport
        expected = (len(call["caller"].received) + count, len(call["callee"].received) + count)
        for sequence in range(count):
            callerSocket.write(rtp(sequence, 0x1111), call["toCaller"])
            calleeSocket.write(rtp(sequence, 0x2222), call["toCallee"])
            await deferLater(0.02)
        await waitFor(
            lambda: len(call["caller"].received) >= expected[0] and len(call["callee"].received) >= expected[1]
        )
        await deferLater(0.05)

    async def natedCallerStartsLate(self, call: dict[str, Any], stranger: MediaPeer | None = None) -> float:
        """
        The callee talks first (0.5 s), then the NATed caller starts (a
        stranger's 3 packets just before it, when given): seconds from the
        caller's first packet until it hears the callee. All within
        rtpengine's learning window (3 s after the last signalling).
        """
        for sequence in range(25):
            call["callee"].transport.write(rtp(sequence, 0x2222), call["toCallee"])
            await deferLater(0.02)
        if stranger is not None:
            for sequence in range(3):
                stranger.transport.write(rtp(sequence, 0x6666), call["toCaller"])  # type: ignore[union-attr]
            await deferLater(0.02)
        started = time.monotonic()
        heard = None
        for sequence in range(100):
            call["caller"].transport.write(rtp(sequence, 0x1111), call["toCaller"])
            call["callee"].transport.write(rtp(25 + sequence, 0x2222), call["toCallee"])
            await deferLater(0.02)
            if heard is None and call["caller"].received:
                heard = time.monotonic() - started
            if heard is not None and sequence >= 10:
                break
        self.assertIsNotNone(heard, "the caller heard nothing")
        assert heard is not None
        return heard


class RtpengineNodeTests(RtpengineCalls):
    async def test_offer_and_answer_point_at_rtpengine(self) -> None:
        call = await self.call()
        for body, key in ((call["offered"], "toCallee"), (call["answered"], "toCaller")):
            host, port = call[key]
            self.assertEqual(host, "127.0.0.1")
            self.assertTrue(self.engine.portMin <= port <= self.engine.portMax, port)
            self.assertNotIn(b"a=candidate", body)
            self.assertNotIn(b"a=ice-", body)
            self.assertIn(b"a=rtpmap:8 PCMA/8000", body)
            self.assertIn(b"a=rtpmap:101 telephone-event/8000", body)
        self.assertNotEqual(call["toCallee"], call["toCaller"])

    async def test_rtp_both_ways(self) -> None:
        call = await self.call()
        await self.exchange(call)
        calleeGot = [d for d, _ in call["callee"].received]
        callerGot = [d for d, _ in call["caller"].received]
        self.assertEqual(calleeGot, [rtp(i, 0x1111) for i in range(10)])
        self.assertEqual(callerGot, [rtp(i, 0x2222) for i in range(10)])
        # Each party hears the relay, from the port it sends to.
        self.assertEqual({s for _, s in call["callee"].received}, {call["toCallee"]})
        self.assertEqual({s for _, s in call["caller"].received}, {call["toCaller"]})

    async def test_nated_caller_is_latched_from_its_signalling_source(self) -> None:
        call = await self.call(callerNAT=True)
        # The callee talks first: nothing may go to the advertised address.
        for sequence in range(5):
            call["callee"].transport.write(rtp(sequence, 0x2222), call["toCallee"])
        await deferLater(0.3)
        self.assertEqual(call["advertised"].received, [])
        await self.exchange(call)
        self.assertEqual(call["advertised"].received, [])
        self.assertEqual([d for d, _ in call["callee"].received], [rtp(i, 0x1111) for i in range(10)])
        self.assertIn(rtp(9, 0x2222), [d for d, _ in call["caller"].received])
        stats = await self.node.query(CALL, CALLER_TAG)
        assert stats is not None
        self.assertEqual(stats.caller.latched, ("127.0.0.1", call["callerPort"]))
        self.assertEqual(stats.callee.latched, ("127.0.0.1", call["calleePort"]))

    async def test_hijack_from_a_stranger_does_not_take_the_latch(self) -> None:
        """
        A stranger sending to the relay's ports, before and after the legs
        latched, gets nothing back and does not move the latch: media keeps
        going to the legs' own addresses. Once rtpengine has learnt, its
        packets are dropped and counted. (While it learns, rtpengine 10.5
        forwards them to the parties: see the module's docstring.)
        """
        call = await self.call(callerNAT=True)
        # Another host than the caller's signalling source (127.0.0.1).
        stranger, _ = self.peer("127.0.0.3")
        stranger.transport.write(rtp(99, 0x6666), call["toCaller"])  # type: ignore[union-attr]
        await self.exchange(call, count=5)
        for sequence in range(20):
            stranger.transport.write(rtp(100 + sequence, 0x6666), call["toCaller"])  # type: ignore[union-attr]
            stranger.transport.write(rtp(100 + sequence, 0x6666), call["toCallee"])  # type: ignore[union-attr]
        await deferLater(0.3)
        before = (len(call["caller"].received), len(call["callee"].received))
        await self.exchange(call, count=5)
        self.assertEqual(stranger.received, [])
        self.assertEqual([d for d, _ in call["callee"].received[before[1] :]], [rtp(i, 0x1111) for i in range(5)])
        self.assertEqual([d for d, _ in call["caller"].received[before[0] :]], [rtp(i, 0x2222) for i in range(5)])
        stats = await self.node.query(CALL, CALLER_TAG)
        assert stats is not None
        self.assertEqual(stats.caller.latched, ("127.0.0.1", call["callerPort"]))
        self.assertEqual(stats.callee.latched, ("127.0.0.1", call["calleePort"]))
        # Once rtpengine has learnt, a stranger's packets are dropped and
        # counted. rtpengine 10.5 still forwards the first one that comes
        # after a silence of the call (seen every run): at most one a side.
        await deferLater(3.5)
        before = {side: len(call[side].received) for side in ("caller", "callee")}
        for sequence in range(10):
            stranger.transport.write(rtp(200 + sequence, 0x6666), call["toCaller"])  # type: ignore[union-attr]
            stranger.transport.write(rtp(200 + sequence, 0x6666), call["toCallee"])  # type: ignore[union-attr]
        await self.exchange(call, count=3)
        for side in ("caller", "callee"):
            fromStranger = [d for d, _ in call[side].received[before[side] :] if d[8:12] == b"\x00\x00\x66\x66"]
            self.assertLessEqual(len(fromStranger), 1, side)
        self.assertEqual(stranger.received, [])
        later = await self.node.query(CALL, CALLER_TAG)
        assert later is not None
        self.assertGreaterEqual(later.caller.dropped - stats.caller.dropped, 9)
        self.assertGreaterEqual(later.callee.dropped - stats.callee.dropped, 9)
        self.assertEqual(later.caller.latched, ("127.0.0.1", call["callerPort"]))

    async def test_media_of_a_nated_leg_flows_at_once_in_the_learning_window(self) -> None:
        """
        rtpengine's endpoint learning (about 3 s after signalling) delays
        only its confirmation of the latch (strict source), not media: the
        NATed caller hears the callee from its first packet on, the callee
        hears it, and nothing goes to the advertised address.
        """
        signalled = time.monotonic()
        call = await self.call(callerNAT=True)
        heard = await self.natedCallerStartsLate(call)
        self.assertLess(heard, 0.5)
        self.assertLess(time.monotonic() - signalled, 3.0, "out of the learning window: the test proves nothing")
        fromCaller = [d for d, _ in call["callee"].received if d[8:12] == b"\x00\x00\x11\x11"]
        self.assertEqual(fromCaller[:5], [rtp(i, 0x1111) for i in range(5)])
        self.assertEqual(call["advertised"].received, [])

    async def test_a_stranger_sending_first_does_not_take_a_nated_leg(self) -> None:
        """
        A stranger's packets to the NATed caller's port before the caller's
        own: the caller still gets the latch (the per-call heuristic learning
        ranks its signalling host first), at once, and the stranger hears
        at most what the callee sent in the instant before the caller's
        first packet arrived. Immediate learning (C{--endpoint-learning=immediate}, or
        its per-call flag) would give the leg to whoever sends first.
        """
        call = await self.call(callerNAT=True)
        stranger, _ = self.peer("127.0.0.3")
        heard = await self.natedCallerStartsLate(call, stranger)
        self.assertLess(heard, 0.5)
        # Until the caller's first packet reaches rtpengine, the stranger is
        # its only (lowest-ranked) candidate for the leg: a callee packet
        # relayed in that instant goes to it (seen once under load; the
        # built-in relay sends nothing there). Only that instant: a handful.
        self.assertLessEqual(len(stranger.received), 3, stranger.received)
        stats = await self.node.query(CALL, CALLER_TAG)
        assert stats is not None
        self.assertEqual(stats.caller.latched, ("127.0.0.1", call["callerPort"]))

    async def test_a_stranger_is_dropped_from_its_first_packet_on_well_configured_legs(self) -> None:
        """
        Legs whose SDP is true (not behind NAT) are not learnt but taken
        from their SDP (rtpengine's C{asymmetric}) with C{strict source}: a
        stranger sending first, before the parties, neither reaches them
        nor takes their media.
        """
        call = await self.call()
        stranger, _ = self.peer("127.0.0.1")
        for sequence in range(5):
            stranger.transport.write(rtp(sequence, 0x6666), call["toCaller"])  # type: ignore[union-attr]
            stranger.transport.write(rtp(sequence, 0x6666), call["toCallee"])  # type: ignore[union-attr]
        await deferLater(0.2)
        await self.exchange(call, count=5)
        self.assertEqual(stranger.received, [])
        self.assertEqual([d for d, _ in call["callee"].received], [rtp(i, 0x1111) for i in range(5)])
        self.assertEqual([d for d, _ in call["caller"].received], [rtp(i, 0x2222) for i in range(5)])
        stats = await self.node.query(CALL, CALLER_TAG)
        assert stats is not None
        self.assertEqual((stats.caller.dropped, stats.callee.dropped), (5, 5))

    async def test_a_fork_that_lost_gives_its_ports_back(self) -> None:
        caller, first, second, toFirst, toSecond, toCaller = await self.forkedCall()
        await self.node.deleteBranch(CALL, CALLER_TAG, "b1")
        # rtpengine closed the first fork's port: it can be bound again
        # (its media thread may close it just after the reply: a second at most).
        for attempt in range(20):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(toFirst)
                except OSError:
                    if attempt == 19:
                        raise
                    await deferLater(0.1)
                else:
                    break
        for sequence in range(5):
            caller.transport.write(rtp(sequence, 0x1111), toCaller)  # type: ignore[union-attr]
            second.transport.write(rtp(sequence, 0x2222), toSecond)  # type: ignore[union-attr]
            await deferLater(0.02)
        await waitFor(lambda: len(second.received) >= 5 and len(caller.received) >= 5)
        self.assertEqual([d for d, _ in second.received], [rtp(i, 0x1111) for i in range(5)])
        self.assertEqual([d for d, _ in caller.received], [rtp(i, 0x2222) for i in range(5)])
        self.assertEqual(first.received, [])
        # The answered branch is never released on its own.
        await self.node.deleteBranch(CALL, CALLER_TAG, "b2")
        self.assertIsNotNone(await self.node.query(CALL, CALLER_TAG))

    async def test_query_statistics(self) -> None:
        call = await self.call()
        await self.exchange(call, count=8)
        stats = await self.node.query(CALL, CALLER_TAG)
        assert stats is not None
        self.assertEqual(stats.node, "fr")
        for leg in (stats.caller, stats.callee):
            self.assertEqual((leg.received.packets, leg.received.bytes), (8, 8 * 172))
            self.assertEqual((leg.sent.packets, leg.sent.bytes), (8, 8 * 172))
            self.assertIsNotNone(leg.received.lastPacketAt)
            self.assertLessEqual(abs(leg.received.lastPacketAt - reactor.seconds()), 5)  # type: ignore[attr-defined,operator]
            self.assertEqual(leg.dropped, 0)
        self.assertIsNone(await self.node.query("no-such-call", CALLER_TAG))

    async def test_plain_rtp_loss_and_jitter_are_not_measured(self) -> None:
        """
        rtpengine 10.5 forwarding without transcoding does not measure
        plain RTP: loss and jitter are unknown (None), never a misleading
        0, while packets and bytes are counted.
        """
        call = await self.call()
        await self.exchange(call, count=8)
        stats = await self.node.query(CALL, CALLER_TAG)
        assert stats is not None
        for leg in (stats.caller, stats.callee):
            self.assertEqual(leg.received.packets, 8)
            self.assertEqual((leg.received.lost, leg.received.jitter, leg.received.mos), (None, None, None))

    async def test_delete_releases_and_returns_final_statistics(self) -> None:
        call = await self.call()
        await self.exchange(call, count=4)
        final = await self.node.delete(CALL, CALLER_TAG)
        assert isinstance(final, RelayStats)
        self.assertEqual(final.caller.received.packets, 4)
        self.assertEqual(final.callee.received.packets, 4)
        self.assertIsNone(await self.node.query(CALL, CALLER_TAG))
        before = len(call["callee"].received)
        call["caller"].transport.write(rtp(50, 0x1111), call["toCaller"])
        await deferLater(0.2)
        self.assertEqual([(d[:12].hex(), s) for d, s in call["callee"].received[before:]], [])
        # Deleting again, or a call never seen, is harmless.
        self.assertIsNone(await self.node.delete(CALL, CALLER_TAG))
        self.assertIsNone(await self.node.delete("never", "seen"))

    async def test_sessions(self) -> None:
        await self.call()
        sessions = await self.node.sessions()
        self.assertEqual([(c, t) for c, t, _ in sessions], [(CALL, CALLER_TAG)])
        self.assertEqual(sessions[0][2].node, "fr")
        # A node that forgot its calls (restarted) still lists them.
        other = self.makeNode([self.engine.ngAddress])
        self.assertEqual([(c, t) for c, t, _ in await other.sessions()], [(CALL, CALLER_TAG)])
        await other.delete(CALL, CALLER_TAG)
        self.assertEqual(await self.node.sessions(), [])

    async def test_reinvite_from_the_callee(self) -> None:
        call = await self.call()
        moved, movedPort = self.peer()
        offered = await self.node.offer(
            CALL, CALLER_TAG, "branch-1", "callee", sdp("127.0.0.1", movedPort), SIGNALLING, False
        )
        answered = await self.node.answer(
            CALL,
            CALLER_TAG,
            CALLEE_TAG,
            "branch-1",
            "caller",
            sdp("127.0.0.1", call["callerPort"], ice=False),
            SIGNALLING,
            False,
        )
        # The caller keeps sending where it did; the callee's new socket gets it.
        self.assertEqual(mediaAddress(offered), call["toCaller"])
        toRelay = mediaAddress(answered)
        for sequence in range(5):
            call["caller"].transport.write(rtp(sequence, 0x1111), call["toCaller"])
            moved.transport.write(rtp(sequence, 0x3333), toRelay)  # type: ignore[union-attr]
            await deferLater(0.02)
        await waitFor(lambda: len(moved.received) >= 5 and len(call["caller"].received) >= 5)
        await deferLater(0.1)
        self.assertEqual([d for d, _ in moved.received], [rtp(i, 0x1111) for i in range(5)])
        self.assertIn(rtp(4, 0x3333), [d for d, _ in call["caller"].received])

    async def test_forked_call_answered_by_one_branch(self) -> None:
        caller, first, second, toFirst, toSecond, toCaller = await self.forkedCall()
        self.assertNotEqual(toFirst, toSecond)
        for sequence in range(5):
            caller.transport.write(rtp(sequence, 0x1111), toCaller)  # type: ignore[union-attr]
            second.transport.write(rtp(sequence, 0x2222), toSecond)  # type: ignore[union-attr]
            await deferLater(0.02)
        await waitFor(lambda: len(second.received) >= 5 and len(caller.received) >= 5)
        await deferLater(0.1)
        self.assertEqual([d for d, _ in second.received], [rtp(i, 0x1111) for i in range(5)])
        self.assertEqual(first.received, [])
        self.assertEqual([d for d, _ in caller.received], [rtp(i, 0x2222) for i in range(5)])
        self.assertEqual({s for _, s in caller.received}, {toCaller})
        stats = await self.node.query(CALL, CALLER_TAG)
        assert stats is not None
        self.assertEqual(stats.callee.received.packets, 5)

    async def test_answer_without_offer_is_refused(self) -> None:
        with self.assertRaises(UnknownSession):
            await self.node.answer(
                CALL, CALLER_TAG, CALLEE_TAG, "b", "callee", sdp("127.0.0.1", 4000), SIGNALLING, False
            )

    async def test_bad_sdp_is_refused(self) -> None:
        with self.assertRaises(Exception) as raised:
            await self.node.offer(CALL, CALLER_TAG, "b", "caller", b"garbage", SIGNALLING, False)
        self.assertNotIsInstance(raised.exception, RelayUnavailable)
        self.assertEqual(await self.node.sessions(), [])


class ImmediateLearningDaemonTests(RtpengineCalls):
    """
    A daemon an operator started with C{--endpoint-learning=immediate}:
    the node's per-call C{endpoint-learning-heuristic} wins, so a stranger
    sending first still does not take a NATed leg.
    """

    def setUp(self) -> None:
        self.engine = startedRtpengine(self, options=("--endpoint-learning=immediate",))
        self.node = self.makeNode([self.engine.ngAddress])

    async def test_a_stranger_sending_first_does_not_take_a_nated_leg(self) -> None:
        await RtpengineNodeTests.test_a_stranger_sending_first_does_not_take_a_nated_leg(self)  # type: ignore[arg-type]


class SwitchoverTests(RtpengineCalls):
    """
    Two servers of a cluster on one rtpengine: the first (C{self.node})
    sends the offer and dies; the survivor, a node that never saw the
    call, takes the answer, re-INVITEs and the hang-up. rtpengine still
    has the call: media goes on through the ports the offer gave.
    """

    async def survivorCall(self) -> tuple[RtpengineNode, dict[str, Any]]:
        caller, callerPort = self.peer()
        callee, calleePort = self.peer()
        offered = await self.offerThrough(self.node, "caller", callerPort)
        survivor = self.makeNode([self.engine.ngAddress])
        answered = await self.answerThrough(survivor, "callee", calleePort)
        return survivor, {
            "caller": caller,
            "callerPort": callerPort,
            "callee": callee,
            "calleePort": calleePort,
            "toCallee": mediaAddress(offered),
            "toCaller": mediaAddress(answered),
        }

    async def test_the_survivor_answers_a_call_offered_by_the_dead_server(self) -> None:
        survivor, call = await self.survivorCall()
        host, port = call["toCaller"]
        self.assertEqual(host, "127.0.0.1")
        self.assertTrue(self.engine.portMin <= port <= self.engine.portMax, port)
        self.assertNotEqual(call["toCaller"], call["toCallee"])
        await self.exchange(call)
        self.assertEqual([d for d, _ in call["callee"].received], [rtp(i, 0x1111) for i in range(10)])
        self.assertEqual([d for d, _ in call["caller"].received], [rtp(i, 0x2222) for i in range(10)])
        # The callee hears the relay from the port the dead server's offer gave it.
        self.assertEqual({s for _, s in call["callee"].received}, {call["toCallee"]})
        self.assertEqual({s for _, s in call["caller"].received}, {call["toCaller"]})
        stats = await survivor.query(CALL, CALLER_TAG)
        assert stats is not None
        self.assertEqual((stats.caller.received.packets, stats.callee.received.packets), (10, 10))
        # The answer repeated (a retransmitted 2xx) keeps the same ports.
        again = await self.answerThrough(survivor, "callee", call["calleePort"])
        self.assertEqual(mediaAddress(again), call["toCaller"])

    async def test_reinvites_and_hangup_through_the_survivor(self) -> None:
        survivor, call = await self.survivorCall()
        await self.exchange(call, count=3)
        # The caller re-INVITEs (a new socket); the same relay ports.
        moved, movedPort = self.peer()
        offered = await self.offerThrough(survivor, "caller", movedPort)
        answered = await self.answerThrough(survivor, "callee", call["calleePort"])
        self.assertEqual(mediaAddress(offered), call["toCallee"])
        self.assertEqual(mediaAddress(answered), call["toCaller"])
        call["caller"] = moved
        await self.exchange(call, count=5)
        self.assertEqual([d for d, _ in moved.received], [rtp(i, 0x2222) for i in range(5)])
        self.assertEqual([d for d, _ in call["callee"].received][-5:], [rtp(i, 0x1111) for i in range(5)])
        # The hang-up through the survivor releases the ports, with the final statistics.
        final = await survivor.delete(CALL, CALLER_TAG)
        assert isinstance(final, RelayStats)
        self.assertEqual(final.callee.received.packets, 8)
        self.assertIsNone(await self.node.query(CALL, CALLER_TAG))
        before = len(call["callee"].received)
        moved.transport.write(rtp(50, 0x1111), call["toCaller"])  # type: ignore[union-attr]
        await deferLater(0.2)
        self.assertEqual(call["callee"].received[before:], [])

    async def test_a_callee_reinvite_reaches_a_node_that_never_saw_the_call(self) -> None:
        _survivor, call = await self.survivorCall()
        # A third server (another switch): its first message of the call is the callee's re-INVITE.
        third = self.makeNode([self.engine.ngAddress])
        moved, movedPort = self.peer()
        offered = await self.offerThrough(third, "callee", movedPort)
        answered = await self.answerThrough(third, "caller", call["callerPort"])
        # rtpengine knew the callee by its tag: the caller keeps its port, the callee's new socket gets media.
        self.assertEqual(mediaAddress(offered), call["toCaller"])
        call["callee"], call["toCallee"] = moved, mediaAddress(answered)
        await self.exchange(call, count=5)
        self.assertEqual([d for d, _ in moved.received], [rtp(i, 0x1111) for i in range(5)])
        self.assertEqual([d for d, _ in call["caller"].received][-5:], [rtp(i, 0x2222) for i in range(5)])
        # rtpengine still knows the call's two parties by their SIP tags, and no other.
        backend = third.pool.backends[0]
        reply = await third.pool.requestTo(backend, "query", {"call-id": CALL, "from-tag": CALLER_TAG})
        self.assertEqual(sorted(reply.body["tags"]), [CALLEE_TAG, CALLER_TAG])
        final = await third.delete(CALL, CALLER_TAG)
        assert final is not None
        self.assertEqual((final.caller.received.packets, final.callee.received.packets), (5, 5))

    async def test_the_survivors_handler_relays_what_the_dead_server_relayed(self) -> None:
        """
        Through the media handlers: the survivor, configured never to
        relay (its own decision would leave the answer direct), sees the
        call on rtpengine and relays the answer; the hang-up there deletes
        the session, with its statistics on the call.
        """
        from aetasip.calls.call import Call, Leg
        from aetasip.relay.handler import RelayHandler
        from tests.routingdirectory import MemoryDirectory
        from tests.test_relay_handler import Control

        def handler(mode: str) -> RelayHandler:
            relay = RelayHandler(
                {"fr": self.makeNode([self.engine.ngAddress])}, "fr", {}, mode, MemoryDirectory(), Control(), 0
            )
            return relay

        def call() -> Call:
            made = Call(
                reactor.seconds,  # type: ignore[attr-defined]
                CALL,
                CALLER_TAG,
                "45675001",
                "premium",
                "d",
                Leg(SIGNALLING, "udp", ("0", 1)),
                "2",
            )
            made.addTarget("45675002", Leg(SIGNALLING, "udp", ("0", 1), None, "sip:45675002@127.0.0.1:5060"))
            return made

        caller, callerPort = self.peer()
        callee, calleePort = self.peer()
        offered = await handler("always").offer(call(), "1", "caller", sdp("127.0.0.1", callerPort))
        survivor = handler("never")
        taken = call()
        answered = await survivor.answer(taken, "1", "callee", sdp("127.0.0.1", calleePort, ice=False))
        self.assertEqual(taken.media["relay"]["relayed"], {"1": True})
        media = {
            "caller": caller,
            "callee": callee,
            "toCallee": mediaAddress(offered),
            "toCaller": mediaAddress(answered),
        }
        self.assertTrue(self.engine.portMin <= media["toCaller"][1] <= self.engine.portMax)
        await self.exchange(media, count=4)
        self.assertEqual([d for d, _ in callee.received], [rtp(i, 0x1111) for i in range(4)])
        self.assertEqual([d for d, _ in caller.received], [rtp(i, 0x2222) for i in range(4)])
        taken.answered(taken.targets[0], CALLEE_TAG)
        taken.end("caller BYE")
        await survivor.callEnded(taken)
        stats = taken.media["relay"]["stats"]
        self.assertEqual((stats.caller.received.packets, stats.callee.received.packets), (4, 4))
        self.assertIsNone(await self.node.query(CALL, CALLER_TAG))

    async def test_an_answer_no_rtpengine_knows_is_refused(self) -> None:
        survivor = self.makeNode([self.engine.ngAddress])
        with self.assertRaises(UnknownSession) as raised:
            await survivor.answer(
                "never-offered", CALLER_TAG, CALLEE_TAG, "1", "callee", sdp("127.0.0.1", 4000), SIGNALLING, False
            )
        self.assertIn("Unknown call-id", str(raised.exception))
        self.assertEqual(await survivor.sessions(), [])


class HeldCallTests(RtpengineCalls):
    """
    A call on hold for longer than rtpengine's own timeouts (here
    C{--timeout=3 --silent-timeout=4}), through the relay's media handler
    (media timeout 1 s, so it checks every 0.5 s): the node's keep-alive
    keeps the session and its ports, and the call resumes with media both
    ways; without it rtpengine deletes the session and the handler ends
    the call (media failure) rather than leave it silent.
    """

    timeout = 60

    def setUp(self) -> None:
        self.engine = startedRtpengine(self, options=("--timeout=3", "--silent-timeout=4"))

    async def heldCall(self, keepalive: float, hold: bytes) -> tuple[Any, Any, dict[str, Any]]:
        from aetasip import config
        from aetasip.calls.call import Call, Leg
        from aetasip.relay.handler import RelayHandler
        from aetasip.relay.rtpengine import makeNode
        from tests.routingdirectory import MemoryDirectory
        from tests.test_relay_handler import Control

        node = makeNode(
            "fr",
            {"kind": "rtpengine", "ng": [self.engine.ngAddress], "keepalive": keepalive},
            config.build({}),
            reactor,
        )
        control = Control()
        handler = RelayHandler({"fr": node}, "fr", {}, "always", MemoryDirectory(), control, 1.0, reactor)
        handler.startService()
        self.addCleanup(handler.stopService)
        self.node = node
        caller, callerPort = self.peer()
        callee, calleePort = self.peer()
        call = Call(
            reactor.seconds, CALL, CALLER_TAG, "45675001", "premium", "d", Leg(SIGNALLING, "udp", ("0", 1)), "2"
        )  # type: ignore[attr-defined]
        call.addTarget("45675002", Leg(SIGNALLING, "udp", ("0", 1), None, "sip:45675002@127.0.0.1:5060"))
        callerSDP, calleeSDP = sdp("127.0.0.1", callerPort), sdp("127.0.0.1", calleePort, ice=False)
        offered = await handler.offer(call, "1", "caller", callerSDP)
        answered = await handler.answer(call, "1", "callee", calleeSDP)
        call.answered(call.targets[0], CALLEE_TAG)
        media = {
            "caller": caller,
            "callee": callee,
            "callerPort": callerPort,
            "calleePort": calleePort,
            "toCallee": mediaAddress(offered),
            "toCaller": mediaAddress(answered),
        }
        await self.exchange(media, count=3)
        # On hold: neither party is to send, and neither sends anything.
        held = await handler.offer(call, "1", "caller", hold(callerSDP))
        await handler.answer(call, "1", "callee", hold(calleeSDP))
        # The same port (rtpengine keeps c=0.0.0.0 as the holder wrote it).
        self.assertEqual(mediaAddress(held)[1], media["toCallee"][1])
        await deferLater(7.5)
        return handler, control, media

    async def test_a_call_held_past_rtpengine_timeouts_keeps_its_session(self) -> None:
        holds = {
            "inactive": lambda body: body.replace(b"a=sendrecv", b"a=inactive"),
            # RFC 2543 hold: rtpengine times it out after --timeout, not --silent-timeout.
            "c=0.0.0.0": lambda body: re.sub(rb"c=IN IP4 \S+", b"c=IN IP4 0.0.0.0", body),
        }
        for name, hold in holds.items():
            handler, control, media = await self.heldCall(1.0, hold)
            self.assertEqual(control.released, [], name)
            stats = await self.node.query(CALL, CALLER_TAG)
            self.assertIsNotNone(stats, name)
            (call,) = handler._calls
            # Resumed: the same relay ports carry media both ways again.
            callerSDP, calleeSDP = (
                sdp("127.0.0.1", media["callerPort"]),
                sdp("127.0.0.1", media["calleePort"], ice=False),
            )
            resumed = await handler.offer(call, "1", "caller", callerSDP)
            await handler.answer(call, "1", "callee", calleeSDP)
            self.assertEqual(mediaAddress(resumed), media["toCallee"], name)
            before = (len(media["caller"].received), len(media["callee"].received))
            await self.exchange(media, count=5)
            self.assertEqual(len(media["caller"].received) - before[0], 5, name)
            self.assertEqual(len(media["callee"].received) - before[1], 5, name)
            call.end("caller BYE")
            await handler.callEnded(call)
            await handler.stopService()

    async def test_without_keepalive_the_session_is_lost_and_the_call_ends(self) -> None:
        from aetasip.calls.call import EndCause

        _handler, control, _media = await self.heldCall(0, lambda body: body.replace(b"a=sendrecv", b"a=inactive"))
        ((_call, cause, detail),) = control.released
        self.assertEqual((cause, detail), (EndCause.MEDIA_FAILURE, "relay node fr lost the call's media session"))


class AdoptedHeldCallTests(RtpengineCalls):
    """
    A call adopted from its answer (offered through a server that died)
    and then on hold past rtpengine's timeouts (C{--timeout=3
    --silent-timeout=4}): the survivor has no offer to send again, and
    keeps the session with its answer alone.
    """

    timeout = 60

    def setUp(self) -> None:
        # rtpengine stamps activity in whole seconds: --timeout=3 drops a
        # silent call 2 to 3 s after its last packet or request, which
        # leaves a keep-alive every 1 s (checked every 0.5 s) a margin on
        # a loaded machine (--timeout=2 did not: a CI run lost the call).
        self.engine = startedRtpengine(self, options=("--timeout=3", "--silent-timeout=4"))
        self.node = self.makeNode([self.engine.ngAddress])

    async def test_the_answer_alone_keeps_the_session(self) -> None:
        caller, callerPort = self.peer()
        callee, calleePort = self.peer()
        offered = await self.offerThrough(self.node, "caller", callerPort)
        survivor = self.makeNode([self.engine.ngAddress], keepalive=1.0)
        answered = await self.answerThrough(survivor, "callee", calleePort)
        media = {
            "caller": caller,
            "callee": callee,
            "toCallee": mediaAddress(offered),
            "toCaller": mediaAddress(answered),
        }
        await self.exchange(media, count=3)
        sent = 0
        for _ in range(15):  # 7.5 s without media, as the handler's media watch would call it
            await deferLater(0.5)
            sent += await survivor.keepAlive(CALL, CALLER_TAG, None)
        self.assertGreaterEqual(sent, 5)
        self.assertIsNotNone(await survivor.query(CALL, CALLER_TAG))
        await self.exchange(media, count=5)
        self.assertEqual(len(caller.received), 8)
        self.assertEqual(len(callee.received), 8)
        # Without the keep-alive rtpengine would have dropped it: the same wait, another call.
        other = self.makeNode([self.engine.ngAddress], keepalive=0)
        await self.offerThrough(self.node, "caller", callerPort, "call-2")
        await self.answerThrough(other, "callee", calleePort, "call-2")
        await deferLater(7.5)
        self.assertIsNone(await other.query("call-2", CALLER_TAG))


class FailoverTests(TestCase):
    timeout = 60

    def makeNode(self, addresses: list[str]) -> RtpengineNode:
        node: RtpengineNode = startedNode(self, addresses, timeout=0.2, retries=1)
        return node

    async def test_failover_to_the_second_rtpengine(self) -> None:
        first = startedRtpengine(self)
        second = startedRtpengine(self)
        node = self.makeNode([first.ngAddress, second.ngAddress])
        first.stop()
        ports = set()
        for i in range(4):
            body = await node.offer(f"call-{i}", CALLER_TAG, "b", "caller", sdp("127.0.0.1", 4000), SIGNALLING, False)
            ports.add(mediaAddress(body)[1])
        self.assertTrue(all(second.portMin <= port <= second.portMax for port in ports), ports)
        self.assertEqual([b.up for b in node.pool.backends], [False, True])
        self.assertEqual(len(await node.sessions()), 4)

    async def test_down_rtpengine_comes_back(self) -> None:
        engine = Rtpengine(rtpenginePath(self))
        self.addCleanup(engine.cleanup)
        node = startedNode(self, [engine.ngAddress], timeout=0.2, retries=0, recheck_interval=0.3)
        with self.assertRaises(RelayUnavailable):
            await node.offer("c", CALLER_TAG, "b", "caller", sdp("127.0.0.1", 4000), SIGNALLING, False)
        self.assertFalse(node.pool.backends[0].up)
        engine.start()
        for _ in range(50):
            if node.pool.backends[0].up:
                break
            await deferLater(0.1)
        self.assertTrue(node.pool.backends[0].up)
        body = await node.offer("c", CALLER_TAG, "b", "caller", sdp("127.0.0.1", 4000), SIGNALLING, False)
        self.assertIn(b"c=IN IP4 127.0.0.1", body)

    async def test_ng_over_ipv6(self) -> None:
        engine = startedRtpengine(self, ngHost="::1")
        node = self.makeNode([engine.ngAddress])
        body = await node.offer(CALL, CALLER_TAG, "b", "caller", sdp("127.0.0.1", 4000), SIGNALLING, False)
        self.assertTrue(engine.portMin <= mediaAddress(body)[1] <= engine.portMax)
        self.assertIsNotNone(await node.delete(CALL, CALLER_TAG))

    async def test_silent_port_times_out(self) -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        node = self.makeNode([f"127.0.0.1:{silent.getsockname()[1]}"])
        started = reactor.seconds()  # type: ignore[attr-defined]
        with self.assertRaises(RelayUnavailable):
            await node.offer(CALL, CALLER_TAG, "b", "caller", sdp("127.0.0.1", 4000), SIGNALLING, False)
        elapsed = reactor.seconds() - started  # type: ignore[attr-defined]
        self.assertTrue(0.35 <= elapsed < 2.0, elapsed)
        # Two tries of the offer (and the start-up ping) reached the port, nothing answered.
        silent.setblocking(False)
        received = []
        while True:
            try:
                received.append(silent.recv(65535))
            except BlockingIOError:
                break
        self.assertGreaterEqual(sum(b"5:offer" in d for d in received), 1)
        # Later calls fail at once while it is down.
        with self.assertRaises(RelayUnavailable):
            await node.offer("c2", CALLER_TAG, "b", "caller", sdp("127.0.0.1", 4000), SIGNALLING, False)
        self.assertEqual(await node.sessions(), [])
        self.assertIsNone(await node.delete("c2", CALLER_TAG))


_ = Deferred
