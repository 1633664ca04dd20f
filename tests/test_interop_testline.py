"""
The test line end to end: sipp callers dial 15000 (the programme) and
15001 (the echo line) through the running service on loopback; the
test's own UDP sockets are the callers' media. The RTP received is
decoded (FFmpeg, through PyAV) and must be the programme's 1 kHz tone at
-18 dBFS, sent back to where the caller's packets come from (symmetric
RTP); the echo line returns the caller's packets, whose round trip is
measured; an offer of unknown codecs gets 488; the maximum duration and
a silent caller end the call with a BYE.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from aetasip.calls.call import EndCause
from aetasip.calls.control import CallControl
from aetasip.testline import rtp
from aetasip.testline.programme import LEVEL_DBFS
from tests.audio import decode, dominantFrequency, levelDBFS
from tests.interop import InteropTestCase
from tests.servers import RunningService, deferLater
from tests.sipp import SippProcess

CALLER, PASSWORD = "45676001", "secret-one"


class MediaSocket(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any, float]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, (addr[0], addr[1]), time.monotonic()))


class TestLineInteropTests(InteropTestCase):
    timeout = 60
    #: The relay's ports, when the calls go through it: the caller's SDP answer names one.
    relayPorts: tuple[int, int] | None = None

    async def serve(  # type: ignore[override]
        self, accounts: Any = ((CALLER, PASSWORD),), **settings: Any
    ) -> RunningService:
        server = await super().serve(accounts, testline__ring_time=0.2, testline__media_address="127.0.0.1", **settings)
        self.calls = self.watchCalls()
        return server

    @property
    def agent(self) -> Any:
        return self.running.service.getServiceNamed("testline").agent

    def socket(self) -> tuple[MediaSocket, int]:  # type: ignore[override]
        protocol = MediaSocket()
        return protocol, super().socket(protocol)

    def caller(self, dialled: str, mediaPort: int, pause: int) -> SippProcess:  # type: ignore[override]
        """relay_uac.xml: offers PCMA at 127.0.0.1:C{mediaPort}, hangs up after C{pause} ms."""
        return super().caller(
            "caller", "relay_uac.xml", (CALLER, dialled, str(mediaPort), "127.0.0.1", "0"), "-d", str(pause), timeout=30
        )

    def waitingCaller(self, scenario: str, dialled: str) -> SippProcess:
        return super().caller("waiting", scenario, (CALLER, dialled), timeout=30)

    async def test_programme_in_callers_codec_symmetric_rtp(self) -> None:
        await self.serve()
        advertised, advertisedPort = self.socket()
        natted, _ = self.socket()
        caller = self.caller("15000", advertisedPort, 4000)
        lineAt = await self.mediaOf("caller")
        self.assertEqual(lineAt[0], "127.0.0.1")
        if self.relayPorts is not None:
            self.assertTrue(self.relayPorts[0] <= lineAt[1] <= self.relayPorts[1], lineAt)
        await deferLater(1.0)
        # Before the caller sends, the programme goes to the address of its SDP.
        self.assertGreater(len(advertised.received), 30)
        self.assertEqual(natted.received, [])
        # The caller's packets come from another socket (a NAT's public side): the programme follows them.
        sender = rtp.Packetiser(8)
        for _ in range(10):
            natted.transport.write(sender.packet(b"\xd5" * 160, 160), lineAt)  # type: ignore[union-attr]
            await deferLater(0.02)
        before = len(advertised.received)
        await deferLater(1.0)
        self.assertLessEqual(len(advertised.received) - before, 2)  # in flight when it latched
        self.assertGreater(len(natted.received), 40)

        packets = sorted((rtp.parse(d) for d, _, _ in advertised.received + natted.received), key=lambda p: p.sequence)
        self.assertEqual({p.payloadType for p in packets}, {8})
        sequences = [p.sequence for p in packets]
        self.assertEqual(sequences, list(range(sequences[0], sequences[0] + len(sequences))))
        samples = decode("PCMA", 8000, [p.payload for p in packets])
        self.assertLess(abs(dominantFrequency(samples, 8000) - 1000), 5)
        self.assertLess(abs(levelDBFS(samples) - LEVEL_DBFS), 0.5)

        finished = await caller.done
        self.assertEqual(finished.code, 0, finished.detail)
        (ok,) = [m for m in finished.received() if m.firstLine.startswith("SIP/2.0 200") and "INVITE" in m.text]
        self.assertIn("a=rtpmap:8 PCMA/8000", ok.text)
        await deferLater(0.2)
        self.assertEqual(self.agent.sessions, {})
        (call,) = self.calls
        self.assertEqual((call.callee, call.endCause), ("15000", EndCause.CALLER_BYE))

    async def test_echo_line_returns_callers_audio(self) -> None:
        await self.serve()
        media, port = self.socket()
        caller = self.caller("15001", port, 2500)
        lineAt = await self.mediaOf("caller")
        sender = rtp.Packetiser(8)
        sentAt = {}
        for n in range(50):
            payload = bytes([n]) * 160
            sentAt[payload] = time.monotonic()
            media.transport.write(sender.packet(payload, 160), lineAt)  # type: ignore[union-attr]
            await deferLater(0.02)
        await deferLater(0.3)
        back = [(rtp.parse(d), at) for d, _, at in media.received]
        self.assertEqual([p.payload for p, _ in back], list(sentAt))
        self.assertNotEqual({p.ssrc for p, _ in back}, {sender.ssrc})
        delays = sorted(at - sentAt[p.payload] for p, at in back)
        median = delays[len(delays) // 2]
        self.assertLess(median, 0.05, f"round trip {median * 1000:.1f} ms")
        finished = await caller.done
        self.assertEqual(finished.code, 0, finished.detail)

    async def test_late_offer_then_hold(self) -> None:
        """
        A caller without SDP in its INVITE gets the line's offer in the
        2xx and answers in the ACK (PCMU): it hears the programme; its
        re-INVITE putting the call on hold (a=sendonly) stops it.
        """
        await self.serve()
        media, port = self.socket()
        process = InteropTestCase.caller(
            self, "caller", "testline_uac_late_offer_hold.xml", (CALLER, "15000", str(port), "127.0.0.1"), "-d", "1500",
            timeout=30,
        )  # fmt: skip
        lineAt = await self.mediaOf("caller")
        if self.relayPorts is not None:
            self.assertTrue(self.relayPorts[0] <= lineAt[1] <= self.relayPorts[1], lineAt)
        # The programme flows; then the hold stops it.
        for _ in range(200):
            sessions = list(self.agent.sessions.values())
            if sessions and not sessions[0].media.sending:
                break
            await deferLater(0.02)
        else:
            self.fail("the call was never held")
        held = len(media.received)
        await deferLater(0.5)
        self.assertLessEqual(len(media.received) - held, 2)  # in flight when it was held
        packets = [rtp.parse(d) for d, _, _ in media.received]
        self.assertGreater(len(packets), 40)
        self.assertEqual({p.payloadType for p in packets}, {0})
        samples = decode("PCMU", 8000, [p.payload for p in sorted(packets, key=lambda p: p.sequence)])
        self.assertLess(abs(dominantFrequency(samples, 8000) - 1000), 5)
        finished = await process.done
        self.assertEqual(finished.code, 0, finished.detail)
        offered, held200 = [
            m for m in finished.received() if m.firstLine.startswith("SIP/2.0 200") and "INVITE" in m.text
        ]
        self.assertIn("a=rtpmap:0 PCMU/8000", offered.text)
        self.assertIn("a=recvonly", held200.text)
        await deferLater(0.2)
        self.assertEqual(self.agent.sessions, {})

    async def test_unknown_codecs_get_488(self) -> None:
        await self.serve()
        finished = await self.waitingCaller("testline_uac_unknown_codecs.xml", "15000").done
        self.assertEqual(finished.code, 0, finished.detail)
        self.assertTrue(finished.finalResponse().startswith("SIP/2.0 488"), finished.finalResponse())
        self.assertEqual(self.agent.sessions, {})

    async def test_maximum_duration_ends_the_call_with_bye(self) -> None:
        await self.serve(testline__max_duration=2, testline__media_timeout=0)
        started = time.monotonic()
        finished = await self.waitingCaller("calls_uac_wait_bye.xml", "15000").done
        self.assertEqual(finished.code, 0, finished.detail)
        (bye,) = finished.received("BYE")
        self.assertIn("duration limit", bye.text)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(self.agent.sessions, {})

    async def test_caller_over_tcp_hears_the_programme_and_gets_the_bye(self) -> None:
        """
        A caller over TCP: the line's responses reach it through the
        proxy, and so does its BYE at the maximum duration (on the
        caller's own connection: nothing can connect back to it).
        """
        await self.serve(testline__max_duration=2, testline__media_timeout=0)
        process = InteropTestCase.caller(
            self, "waiting", "calls_uac_wait_bye.xml", (CALLER, "15000"), timeout=30, transport="t1"
        )
        finished = await process.done
        self.assertEqual(finished.code, 0, finished.detail)
        (bye,) = finished.received("BYE")
        self.assertIn("duration limit", bye.text)
        await deferLater(0.2)
        self.assertEqual(self.agent.sessions, {})
        (call,) = self.calls
        self.assertEqual((call.callerLeg.transport, call.endCause), ("tcp", EndCause.CALLEE_BYE))

    async def test_a_service_without_udp_still_has_its_test_line(self) -> None:
        """SIP over TCP only (sip.udp_ports empty): the proxy reaches the line on a loopback socket of its own."""
        await self.serve(sip__udp_ports=[], testline__max_duration=2, testline__media_timeout=0)
        process = InteropTestCase.caller(
            self, "waiting", "calls_uac_wait_bye.xml", (CALLER, "15001"), timeout=30, transport="t1"
        )
        finished = await process.done
        self.assertEqual(finished.code, 0, finished.detail)
        (bye,) = finished.received("BYE")
        self.assertIn("duration limit", bye.text)
        # No UDP port for the world: the line's socket is on loopback, an ephemeral port.
        self.assertEqual([p for p in self.running.sip.describePorts() if p.startswith("udp:")], [])
        self.assertNotIn(self.running.ports[0], [local[1] for local in self.running.sip.udpLocals()])

    async def test_operator_release_ends_the_session(self) -> None:
        """Released through the calls' control (what the admin API and CLI use): BYE to both legs."""
        server = await self.serve()
        waiting = self.waitingCaller("calls_uac_wait_bye.xml", "15000")
        for _ in range(100):
            if self.agent.sessions and next(iter(self.agent.sessions.values())).state == "confirmed":
                break
            await deferLater(0.05)
        (call,) = self.calls
        CallControl(server.sip.proxy).release(call, EndCause.OPERATOR_RELEASE, "test")
        finished = await waiting.done
        self.assertEqual(finished.code, 0, finished.detail)
        self.assertEqual(len(finished.received("BYE")), 1)
        await deferLater(0.2)
        self.assertEqual(self.agent.sessions, {})
        self.assertEqual(call.endCause, EndCause.OPERATOR_RELEASE)

    async def test_silent_caller_gets_bye(self) -> None:
        await self.serve(testline__media_timeout=1)
        finished = await self.waitingCaller("calls_uac_wait_bye.xml", "15001").done
        self.assertEqual(finished.code, 0, finished.detail)
        (bye,) = finished.received("BYE")
        self.assertIn("media timeout", bye.text)


class RelayedTestLineInteropTests(TestLineInteropTests):
    """The same through the built-in relay (relay.mode always): the relay latches, the line latches on the relay."""

    relayPorts = (48_200, 48_299)

    async def serve(self, accounts: Any = ((CALLER, PASSWORD),), **settings: Any) -> RunningService:
        return await super().serve(
            accounts,
            calls__media_handler="relay",
            relay__mode="always",
            relay__nodes={"local": {"kind": "builtin", "address": "127.0.0.1", "ports": list(self.relayPorts)}},
            **settings,
        )
