"""
The relay end to end: sipp agents call each other through the running
service with C{calls.media_handler = "relay"}, on loopback, with the
built-in node and again with the node switched to a real rtpengine
(userspace forwarding), the rest of the configuration unchanged. The
caller advertises 127.0.0.5 in its SDP but signals and sends its media
from 127.0.0.1 (an agent behind NAT): the call is relayed, each agent's
SDP points at the relay, RTP from the test's media sockets crosses the
relay both ways byte for byte, nothing reaches the advertised 127.0.0.5,
and the call carries its statistics, which its record in the store has
too. A re-INVITE keeps the relay's ports. A call on hold (a=inactive)
survives the media timeout without any packet, and is released once
resumed and silent. With the built-in node also:
two well-configured agents keep direct media; a relayed call without
media is released ("media timeout"); and a call gets 503 when the relay
has no ports left.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor

from aetasip.calls.call import EndCause
from aetasip.records.record import CallRecord
from aetasip.store import Store
from aetasip.store.callrecords import RecordQuery
from tests.interop import InteropTestCase, MediaSocket, awaitCalls
from tests.rtpengine import Rtpengine, startedRtpengine
from tests.servers import RunningService, deferLater, freePortBlock
from tests.sipp import SippProcess

CALLER, CALLER_PASSWORD = "45676001", "secret-one"
CALLEE, CALLEE_PASSWORD = "45676002", "secret-two"
ADVERTISED = ("127.0.0.5", 0)

# Ports of the relay in these tests: away from the default range and from sipp's.
RELAY_PORTS = list(freePortBlock(100))


def rtp(seq: int, marker: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq, seq * 160, 0x5151) + marker + b"\xd5" * 150


# The mixin below is a TestCase to the type checker, not to trial (which would run it alone).
if TYPE_CHECKING:
    _TestCase = InteropTestCase
else:
    _TestCase = object


class RelayFixture(_TestCase):
    """
    The service with the relay node L{node} and the agents calling through
    it (CALLER, the test's media sockets, CALLEE), for the relay tests and
    any other test of relayed calls: mixed in before L{InteropTestCase}.
    """

    def node(self) -> dict[str, Any]:
        """The options of the relay node C{local} (C{relay.nodes.local})."""
        raise NotImplementedError

    async def serve(  # type: ignore[override]
        self, accounts: Any = ((CALLER, CALLER_PASSWORD), (CALLEE, CALLEE_PASSWORD)), **settings: Any
    ) -> RunningService:
        base = {"calls__media_handler": "relay", "relay__nodes": {"local": self.node()}}
        return await super().serve(accounts, **{**base, **settings})

    def socket(self, host: str = "127.0.0.1") -> tuple[MediaSocket, int]:  # type: ignore[override]
        protocol = MediaSocket()
        return protocol, super().socket(protocol, host)

    @property
    def handler(self) -> Any:
        return self.running.sip.proxy.media.handler

    async def callee(self, scenario: str, mediaPort: int, *args: str) -> SippProcess:  # type: ignore[override]
        return await super().callee(CALLEE, scenario, *args, inf=[(str(mediaPort),)])

    def caller(  # type: ignore[override]
        self, scenario: str, advertised: tuple[str, int], *args: str, moveTo: int = 0
    ) -> SippProcess:
        """
        The caller, whose SDP gives C{advertised} (it signals from
        127.0.0.1), and C{moveTo} in its re-INVITE (relay_uac_reinvite.xml).
        """
        host, port = advertised
        return super().caller("caller", scenario, (CALLER, CALLEE, str(port), host, str(moveTo)), *args)


class RelayCalls(RelayFixture):
    """
    The calls through a relay node, whatever its kind: a subclass says
    which node (L{node}) and where its media ports are (L{assertRelayPort}).
    """

    timeout = 90
    #: Whether the node measures loss and jitter of plain RTP (rtpengine does not).
    measuresLoss = True

    def assertRelayPort(self, port: int) -> None:
        raise NotImplementedError

    async def test_natted_caller_is_relayed_with_media_both_ways(self) -> None:
        await self.serve()
        calls = self.watchCalls()

        callerSocket, _ = self.socket()
        calleeSocket, calleePort = self.socket()
        advertised, advertisedPort = self.socket("127.0.0.5")
        callee = await self.callee("relay_uas.xml", calleePort)
        caller = self.caller("relay_uac.xml", ("127.0.0.5", advertisedPort), "-d", "3000")

        # Each agent's SDP points at the relay, on ports of its range.
        calleeSendsTo = await self.mediaOf("callee")
        callerSendsTo = await self.mediaOf("caller")
        for host, port in (calleeSendsTo, callerSendsTo):
            self.assertEqual(host, "127.0.0.1")
            self.assertRelayPort(port)
        self.assertNotEqual(calleeSendsTo, callerSendsTo)

        # The callee speaks first: nothing may go to the caller's advertised address before it latched.
        for seq in range(3):
            calleeSocket.transport.write(rtp(seq, b"B"), calleeSendsTo)  # type: ignore[union-attr]
        await deferLater(0.3)
        self.assertEqual(callerSocket.received + advertised.received, [])
        # Then both ways, 20 packets each, byte for byte.
        sent: dict[str, list[bytes]] = {"A": [], "B": []}
        for seq in range(10, 30):
            for name, sock, to in (("A", callerSocket, callerSendsTo), ("B", calleeSocket, calleeSendsTo)):
                packet = rtp(seq, name.encode())
                sent[name].append(packet)
                sock.transport.write(packet, to)  # type: ignore[union-attr]
            await deferLater(0.02)
        await deferLater(0.3)
        self.assertEqual([d for d, _ in calleeSocket.received], sent["A"])
        self.assertEqual([d for d, _ in callerSocket.received], sent["B"][-len(callerSocket.received) :])
        self.assertGreaterEqual(len(callerSocket.received), 19)  # the first may cross the caller's latching
        self.assertEqual({a for _, a in calleeSocket.received}, {calleeSendsTo})
        self.assertEqual(advertised.received, [])

        finishedCaller, finishedCallee = await caller.done, await callee.done
        self.assertEqual(finishedCaller.code, 0, finishedCaller.detail)
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        # The SDP the callee got lost its ICE line and kept the rest.
        (invite,) = finishedCallee.received("INVITE")
        self.assertNotIn("a=candidate", invite.text)
        self.assertIn("a=ebuacip:plength 8 20", invite.text)

        (call,) = calls
        self.assertEqual(call.endCause, EndCause.CALLER_BYE)
        record = call.media["relay"]
        self.assertEqual((record["node"], record["relayed"]), ("local", {"1": True}))
        self.assertIn("127.0.0.5", record["legs"]["caller"]["reason"])
        stats = record["stats"]
        self.assertEqual(stats.caller.latched, ("127.0.0.1", callerSocket.transport.getHost().port))  # type: ignore[union-attr]
        self.assertEqual(stats.caller.received.packets, 20)
        self.assertEqual(stats.callee.received.packets, 23)
        self.assertEqual(stats.callee.sent.packets, 20)
        # rtpengine (10.5, no transcoding) does not measure loss: unknown, not 0.
        self.assertEqual(stats.caller.received.lost, 0 if self.measuresLoss else None)
        self.assertEqual(await self.handler.nodes["local"].sessions(), [])

        # The call's record has the relay's node and figures.
        record = await self.record(CALLER)
        self.assertEqual((record.callID, record.endCause, record.relayNode), (call.callID, "caller BYE", "local"))
        assert record.media is not None
        self.assertEqual(record.media["caller"]["received"]["packets"], 20)
        self.assertEqual(record.media["callee"]["received"]["packets"], 23)
        self.assertEqual(record.media["callee"]["sent"]["packets"], 20)
        self.assertGreater(record.media["caller"]["sent"]["packets"], 0)

    async def record(self, number: str) -> CallRecord:
        """The one closed record of a call of C{number}, once written."""
        assert self.server is not None
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        for _ in range(200):
            found = store.callRecords(RecordQuery(number=number))
            if len(found) == 1 and not found[0].open:
                return found[0]
            await deferLater(0.05)
        self.fail(f"no closed record of a call of {number}: {found}")

    async def test_a_re_invite_moves_the_media_through_the_same_relay_ports(self) -> None:
        """
        The caller (relayed: relay.mode always) moves its media to another
        socket with a re-INVITE: the SDP both get keeps the relay's ports,
        and the callee's RTP reaches the new socket only.
        """
        await self.serve(relay__mode="always")
        first, firstPort = self.socket()
        second, secondPort = self.socket()
        calleeSocket, calleePort = self.socket()
        callee = await self.callee("relay_uas_reinvite.xml", calleePort)
        caller = self.caller("relay_uac_reinvite.xml", ("127.0.0.1", firstPort), "-d", "1500", moveTo=secondPort)
        callerSendsTo, calleeSendsTo = await self.mediaOf("caller"), await self.mediaOf("callee")
        for seq in range(5):
            first.transport.write(rtp(seq, b"A"), callerSendsTo)  # type: ignore[union-attr]
            calleeSocket.transport.write(rtp(seq, b"B"), calleeSendsTo)  # type: ignore[union-attr]
            await deferLater(0.02)
        await deferLater(0.2)
        self.assertEqual(len(first.received), 5)
        self.assertEqual(len(calleeSocket.received), 5)

        self.assertEqual(await self.mediaOf("caller2"), callerSendsTo)
        self.assertEqual(await self.mediaOf("callee2"), calleeSendsTo)
        for seq in range(5, 10):
            second.transport.write(rtp(seq, b"A"), callerSendsTo)  # type: ignore[union-attr]
            calleeSocket.transport.write(rtp(seq, b"B"), calleeSendsTo)  # type: ignore[union-attr]
            await deferLater(0.02)
        await deferLater(0.2)
        self.assertEqual([d for d, _ in second.received], [rtp(seq, b"B") for seq in range(5, 10)])
        self.assertEqual(len(first.received), 5)
        self.assertEqual([d for d, _ in calleeSocket.received][5:], [rtp(seq, b"A") for seq in range(5, 10)])
        finishedCaller, finishedCallee = await caller.done, await callee.done
        self.assertEqual(finishedCaller.code, 0, finishedCaller.detail)
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        self.assertEqual(len(finishedCallee.received("INVITE")), 2)

    async def test_a_held_call_survives_the_media_timeout_until_resumed(self) -> None:
        """
        Neither agent sends anything, not even RTCP. The caller puts the
        call on hold (a re-INVITE with a=inactive, answered a=inactive)
        and stays there past relay.media_timeout (2 s): the call goes on.
        It resumes (a=sendrecv): 2 s of silence from then on and the call
        ends, "media timeout", both agents getting a BYE.
        """
        await self.serve(relay__media_timeout=2, relay__mode="always")
        ended = self.watchCalls("ended")
        _, calleePort = self.socket()
        callee = await self.callee("relay_uas_hold.xml", calleePort)
        caller = self.caller("relay_uac_hold.xml", ("127.0.0.5", 7078), "-d", "5000")
        (call,) = await awaitCalls(ended, 20)
        self.assertEqual(call.endCause, EndCause.MEDIA_TIMEOUT)
        # Held for 5 s (past the 2 s timeout), then 2 s to 2.5 s of silence (the check's period).
        self.assertGreater(call.endedAt - call.answeredAt, 7.0)
        self.assertLess(call.endedAt - call.answeredAt, 9.5)
        finishedCaller, finishedCallee = await caller.done, await callee.done
        # Both scenarios went through: the resume was answered 200 (the call was still there), and both got a BYE.
        self.assertEqual(finishedCaller.code, 0, finishedCaller.detail)
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        self.assertEqual(len(finishedCallee.received("INVITE")), 3)
        self.assertTrue(finishedCaller.received("BYE") and finishedCallee.received("BYE"))

    async def test_an_answer_the_relay_cannot_take_ends_the_branch(self) -> None:
        """
        No one-way audio: the callee's 200 carries SDP the relay refuses;
        the proxy ACKs it and sends the callee a BYE, the caller gets 500
        with a Warning, and the call ends with the cause "media failure".
        """
        await self.serve(relay__mode="always")
        ended = self.watchCalls("ended")
        _, calleePort = self.socket()
        callee = await self.callee("relay_uas_bad_answer.xml", calleePort)
        caller = self.caller("relay_uac.xml", ("127.0.0.1", 7078), "-d", "500")
        finishedCaller = await caller.done
        self.assertNotEqual(finishedCaller.code, 0)
        self.assertIn("SIP/2.0 500 Media Relay Failed", finishedCaller.responses("INVITE"), finishedCaller.detail)
        # (relay_uac.xml does not ACK a failure: the 500 comes again.)
        refusal = next(m for m in finishedCaller.received() if m.firstLine.startswith("SIP/2.0 500"))
        self.assertIn("Warning: 399 aetasip", refusal.text)
        self.assertIn("Bad SDP", refusal.text)
        finishedCallee = await callee.done
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        (bye,) = finishedCallee.received("BYE")
        self.assertIn("media failure", bye.text)
        (call,) = await awaitCalls(ended)
        self.assertEqual((call.endCause, call.status), (EndCause.MEDIA_FAILURE, 500))


class RelayInteropTests(RelayCalls, InteropTestCase):
    """Through the built-in node."""

    def node(self) -> dict[str, Any]:
        return {"kind": "builtin", "address": "127.0.0.1", "ports": RELAY_PORTS}

    def assertRelayPort(self, port: int) -> None:
        self.assertTrue(RELAY_PORTS[0] <= port <= RELAY_PORTS[1] and port % 2 == 0, port)

    async def test_well_configured_agents_keep_direct_media(self) -> None:
        await self.serve()
        _, calleePort = self.socket()
        callee = await self.callee("relay_uas.xml", calleePort)
        # Both advertise the address they are seen from.
        caller = self.caller("relay_uac.xml", ("127.0.0.1", 7078), "-d", "500")
        self.assertEqual(await self.mediaOf("callee"), ("127.0.0.1", 7078))
        self.assertEqual(await self.mediaOf("caller"), ("127.0.0.1", calleePort))
        self.assertEqual(await self.handler.nodes["local"].sessions(), [])
        finishedCaller, finishedCallee = await caller.done, await callee.done
        self.assertEqual(finishedCaller.code, 0, finishedCaller.detail)
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        (invite,) = finishedCallee.received("INVITE")
        self.assertIn("a=candidate", invite.text)

    async def test_relayed_call_without_media_is_released(self) -> None:
        await self.serve(relay__media_timeout=2, relay__mode="always")
        _, calleePort = self.socket()
        callee = await self.callee("relay_uas.xml", calleePort)
        caller = self.caller("relay_uac.xml", ("127.0.0.1", 7078), "-d", "30000")
        await self.mediaOf("caller")
        ended = self.watchCalls("ended")
        (call,) = await awaitCalls(ended)
        self.assertEqual(call.endCause, EndCause.MEDIA_TIMEOUT)
        self.assertIn("no media for", call.endDetail)
        # Both agents got a BYE from the proxy: the callee's scenario ends with it.
        finishedCallee = await callee.done
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        self.assertTrue(finishedCallee.received("BYE"), finishedCallee.detail)
        await deferLater(0.5)
        self.killed(caller)
        finishedCaller = await caller.done
        self.assertTrue(finishedCaller.received("BYE"), finishedCaller.detail)

    async def test_no_relay_ports_left_gets_503(self) -> None:
        # Two port pairs, one taken by another program: a call needs two.
        low, high = freePortBlock(4)
        taken = reactor.listenUDP(low + 2, MediaSocket(), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(taken.stopListening)
        await self.serve(relay__nodes={"local": {"kind": "builtin", "address": "127.0.0.1", "ports": [low, high]}})
        _, calleePort = self.socket()
        await self.callee("relay_uas.xml", calleePort)
        caller = self.caller("relay_uac.xml", ("127.0.0.5", 7078), "-d", "500")
        finished = await caller.done
        self.assertNotEqual(finished.code, 0)
        self.assertIn("SIP/2.0 503 No relay ports left", finished.responses("INVITE"), finished.detail)


class RtpengineRelayInteropTests(RelayCalls, InteropTestCase):
    """The same calls with the node switched to a real rtpengine (userspace)."""

    engine: Rtpengine
    measuresLoss = False

    def setUp(self) -> None:
        self.engine = startedRtpengine(self)
        super().setUp()

    def node(self) -> dict[str, Any]:
        return {"kind": "rtpengine", "ng": [self.engine.ngAddress]}

    def assertRelayPort(self, port: int) -> None:
        self.assertTrue(self.engine.portMin <= port <= self.engine.portMax and port % 2 == 0, port)
