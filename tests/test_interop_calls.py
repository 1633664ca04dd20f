"""
Calls as objects, seen by real agents (sipp) through the running service:
a callee killed mid-call (its codec lost power) is found dead by the
proxy's in-dialog OPTIONS probes and the caller gets a BYE ("dead
dialog"); a call survives a restart of the service, whose signed
Record-Route lets the callee's BYE through the new process; a media
handler rewrites every SDP (initial INVITE, 183, 200, re-INVITE, a late
offer answered in the ACK) and the agents see what it wrote; and a
stranger who copied a call's Call-ID, tags and Route gets 403 and the call
goes on. Everything on loopback, SDP included; scenarios are
C{tests/scenarios/calls_*.xml} and reused ones.
"""

from __future__ import annotations

import re
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from aetasip.calls.call import EndCause
from tests.interop import InteropTestCase, Recorder, within
from tests.servers import RunningService, deferLater
from tests.sipp import SipMessage, SippProcess, SippRun

CALLER, CALLER_PASSWORD = "45676001", "secret-one"
CALLEE, CALLEE_PASSWORD = "45676002", "secret-two"

# What the test media handler writes: offers get one loopback address and
# port, answers another (the agents' own SDP says 127.0.0.1 and sipp's
# media port, 6000).
OFFER_MEDIA = ("127.0.0.2", 41000)
ANSWER_MEDIA = ("127.0.0.3", 42000)

_TOKEN = re.compile(r";dlg=[A-Za-z0-9_-]+(?=[;>])")


class RewritingMedia:
    """
    An L{aetasip.interfaces.IMediaHandler} that points every offer at
    L{OFFER_MEDIA} and every answer at L{ANSWER_MEDIA} (the C{c=} line and
    the port of C{m=audio}), a little later (a real relay allocates ports
    first), and remembers what it saw.
    """

    name = "rewriting"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, bytes]] = []
        self.ended: list[Any] = []

    def offer(self, call: Any, key: str, sender: str, sdp: bytes) -> Deferred[bytes]:
        return self._rewrite("offer", key, sender, sdp, OFFER_MEDIA)

    def answer(self, call: Any, key: str, sender: str, sdp: bytes) -> Deferred[bytes]:
        return self._rewrite("answer", key, sender, sdp, ANSWER_MEDIA)

    def callEnded(self, call: Any) -> None:
        self.ended.append(call)

    def _rewrite(self, kind: str, key: str, sender: str, sdp: bytes, media: tuple[str, int]) -> Deferred[bytes]:
        self.seen.append((kind, key, sender, sdp))
        host, port = media
        text = sdp.decode("utf-8")
        text = re.sub(r"(?m)^c=IN IP4 [^\r\n]+", f"c=IN IP4 {host}", text)
        text = re.sub(r"(?m)^m=audio \d+", f"m=audio {port}", text)
        d: Deferred[bytes] = Deferred()
        reactor.callLater(0.01, d.callback, text.encode("utf-8"))  # type: ignore[attr-defined]
        return d

    def kinds(self) -> list[tuple[str, str, str]]:
        """(kind, sender, o= user) of each SDP seen, in order."""
        return [(kind, sender, origin(sdp.decode())) for kind, _, sender, sdp in self.seen]


def origin(text: str) -> str:
    """The user name of the C{o=} line of the SDP in C{text} ("" if none)."""
    found = re.search(r"(?m)^o=(\S+) ", text)
    return found.group(1) if found else ""


def media(message: SipMessage) -> tuple[str, int] | None:
    """
    The connection address and audio port of the SDP of C{message}, or
    C{None}; its Content-Length must count the body (as rewritten).
    """
    body = message.text.split("\n\n", 1)[1] if "\n\n" in message.text else ""
    (length,) = message.headers("Content-Length")
    assert int(length) == len(body.replace("\n", "\r\n").encode()), message.text
    c = re.search(r"(?m)^c=IN IP4 (\S+)", body)
    m = re.search(r"(?m)^m=audio (\d+) ", body)
    if c is None or m is None:
        return None
    return c.group(1), int(m.group(1))


def response(run: SippRun, code: int, method: str, sent: bool = False) -> list[SipMessage]:
    """The responses C{code} to C{method} that C{run} received (or sent)."""
    return [m for m in run.messages() if m.sent == sent and m.isResponse(code, method)]


class Stranger(DatagramProtocol):
    """A UDP socket of the test's own: sends one datagram, keeps what comes back."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)


class SippCallsTests(InteropTestCase):
    """
    Calls between sipp agents through the service: 45676001 calls
    45676002 on the first loopback SIP port, over UDP.
    """

    async def serve(  # type: ignore[override]
        self, accounts: Any = ((CALLER, CALLER_PASSWORD), (CALLEE, CALLEE_PASSWORD)), **settings: Any
    ) -> RunningService:
        """Provision the two accounts and start the service with C{settings}."""
        return await super().serve(accounts, **settings)

    def observe(self) -> Recorder:
        recorder = Recorder()
        self.running.sip.proxy.observers.add(recorder)
        return recorder

    async def callee(self, scenario: str, *args: str, timeout: int = 30) -> SippProcess:  # type: ignore[override]
        """
        45676002 registers on the first port, then a sipp answers one call
        on the same port with C{scenario}; it is killed, if still running,
        when the test ends.
        """
        return await super().callee(CALLEE, scenario, *args, name=f"callee-{CALLEE}", timeout=timeout)

    def call(self, scenario: str, timeout: int = 20) -> Deferred[SippRun]:
        """
        45676001 calls 45676002 with C{scenario} (see L{Sipp.call}); killed,
        if still running, when the test ends.
        """
        return self.caller(f"caller-{CALLER}", scenario, (CALLER, CALLEE), timeout=timeout).done

    async def test_dead_callee_is_released(self) -> None:
        """
        The callee answers and is killed (SIGKILL: no BYE ever comes). The
        proxy's OPTIONS probes (every 2 s here), which the caller answers
        200, go unanswered on the callee's side: within a few probe
        intervals the caller gets a BYE from the proxy (Reason: dead
        dialog), answers it 200, and the call ends "dead dialog".
        """
        interval = 2
        server = await self.serve(calls__probe_interval=interval)
        recorder = self.observe()
        callee = await self.callee("calls_uas_answer_wait_hang_up.xml", "-d", "60000", timeout=60)
        caller = self.call("calls_uac_wait_bye.xml", timeout=30)
        call, answeredAt = await recorder.wait("answered", 15)
        # The ACK reaches the callee, then the callee vanishes.
        await deferLater(0.3)
        callee.kill()
        killedAt = time.monotonic()
        gone = await callee.done
        self.assertEqual(gone.code, -9, gone.detail)

        ended, endedAt = await recorder.wait("ended", 5 * interval + 5)
        self.assertIs(ended, call)
        self.assertEqual(call.endCause, EndCause.DEAD_DIALOG, call.endDetail)
        self.assertIn("callee", call.endDetail)
        # Found dead at the second probe after the kill at the latest.
        self.assertLess(endedAt - killedAt, 3 * interval + 1)
        self.assertEqual(recorder.names(), ["started", "ringing", "answered", "ended"])

        finished = await caller
        self.assertEqual(finished.code, 0, finished.detail)
        (bye,) = {m.text: m for m in finished.received("BYE")}.values()
        self.assertIn('Reason: SIP;text="dead dialog"', bye.text)
        # From the proxy itself: one Via, the proxy's.
        (via,) = bye.headers("Via")
        self.assertTrue(via.startswith(f"SIP/2.0/UDP 127.0.0.1:{server.ports[0]};"), via)
        self.assertTrue(response(finished, 200, "BYE", sent=True), finished.detail)
        # The caller was probed (and answered) before the release.
        probes = finished.received("OPTIONS")
        self.assertGreaterEqual(len(probes), 1, finished.detail)
        self.assertEqual(len(response(finished, 200, "OPTIONS", sent=True)), len(probes))
        self.assertEqual(server.sip.proxy.calls, {})
        self.assertLess(answeredAt, killedAt)

    async def test_call_survives_a_restart(self) -> None:
        """
        A call is up; the service stops and starts again on the same ports
        and store (so with the same dialog key, the store's secret). The
        callee's BYE carries the signed Route of the first process: the
        new one rebuilds the dialog from it, passes the BYE to the caller
        and the caller's 200 back.
        """
        await self.restartDuringACall()

    async def test_call_survives_a_restart_with_a_configured_key(self) -> None:
        """The same with the key of C{calls.dialog_key}."""
        await self.restartDuringACall(calls__dialog_key="interop-test-dialog-key")

    async def restartDuringACall(self, **settings: Any) -> None:
        server = await self.serve(**settings)
        before = self.observe()
        callee = await self.callee("calls_uas_answer_wait_hang_up.xml", "-d", "4000")
        caller = self.call("calls_uac_wait_bye.xml", timeout=25)
        call, _ = await before.wait("answered", 15)
        await deferLater(0.3)
        await server.stop()
        self.assertEqual(call.endCause, EndCause.SERVER_SHUTDOWN)
        await server.start()
        after = self.observe()

        answered = await callee.done
        finished = await caller
        self.assertEqual(answered.code, 0, answered.detail)
        self.assertEqual(finished.code, 0, finished.detail)
        self.assertEqual(set(answered.responses("BYE")), {"SIP/2.0 200 OK"})
        sent = answered.sent("BYE")[0]
        self.assertEqual(len(_TOKEN.findall(sent.headers("Route")[0])), 1, sent.text)
        received = finished.received("BYE")[0]
        self.assertEqual(len(received.headers("Via")), 2, received.text)
        self.assertEqual(received.headers("Call-ID"), sent.headers("Call-ID"))

        self.assertEqual(after.names(), ["started", "answered", "ended"])
        rebuilt = after.events[-1][1]
        self.assertTrue(rebuilt.recovered)
        self.assertEqual((rebuilt.callID, rebuilt.callerTag), (call.callID, call.callerTag))
        self.assertEqual((rebuilt.caller, rebuilt.callee), (CALLER, CALLEE))
        self.assertEqual(rebuilt.endCause, EndCause.CALLEE_BYE)

    async def test_media_handler_rewrites_every_sdp(self) -> None:
        """
        The offer of the INVITE reaches the callee as the handler rewrote
        it; the answer of the 183 and of the 200 reach the caller
        rewritten; so do the offer of a re-INVITE and its answer.
        """
        server = await self.serve()
        handler = RewritingMedia()
        server.sip.proxy.media.handler = handler
        callee = await self.callee("calls_uas_media.xml")
        finished = await self.call("calls_uac_media.xml")
        answered = await callee.done
        self.assertEqual(finished.code, 0, finished.detail)
        self.assertEqual(answered.code, 0, answered.detail)

        # The agents' own SDP: 127.0.0.1, and not what the handler writes.
        for sent in finished.sent("INVITE") + response(answered, 200, "INVITE", sent=True):
            self.assertNotIn(media(sent), (OFFER_MEDIA, ANSWER_MEDIA, None), sent.text)
        invites = answered.received("INVITE")
        self.assertEqual(len({m.headers("CSeq")[0] for m in invites}), 2, [m.text for m in invites])
        for invite in invites:
            self.assertEqual(media(invite), OFFER_MEDIA, invite.text)
            self.assertEqual(origin(invite.text), "user1")
        (early,) = {m.text: m for m in response(finished, 183, "INVITE")}.values()
        self.assertEqual(media(early), ANSWER_MEDIA, early.text)
        oks = response(finished, 200, "INVITE")
        self.assertEqual(len({m.headers("CSeq")[0] for m in oks}), 2, [m.text for m in oks])
        for ok in oks:
            self.assertEqual(media(ok), ANSWER_MEDIA, ok.text)
            self.assertEqual(origin(ok.text), "callee")
        self.assertEqual(
            handler.kinds(),
            [
                ("offer", "caller", "user1"),
                ("answer", "callee", "callee"),
                ("answer", "callee", "callee"),
                ("offer", "caller", "user1"),
                ("answer", "callee", "callee"),
            ],
        )
        self.assertEqual(len(handler.ended), 1)

    async def test_media_handler_rewrites_a_late_offer(self) -> None:
        """
        An INVITE without SDP: the callee's offer comes in the 200 and
        reaches the caller rewritten; the caller's answer in the ACK
        reaches the callee rewritten.
        """
        server = await self.serve()
        handler = RewritingMedia()
        server.sip.proxy.media.handler = handler
        callee = await self.callee("call_uas_answer.xml")
        finished = await self.call("calls_uac_late_offer.xml")
        answered = await callee.done
        self.assertEqual(finished.code, 0, finished.detail)
        self.assertEqual(answered.code, 0, answered.detail)

        (invite,) = {m.text: m for m in answered.received("INVITE")}.values()
        self.assertIsNone(media(invite), invite.text)
        for ok in response(finished, 200, "INVITE"):
            self.assertEqual(media(ok), OFFER_MEDIA, ok.text)
        (ack,) = {m.text: m for m in answered.received("ACK")}.values()
        self.assertEqual(media(ack), ANSWER_MEDIA, ack.text)
        self.assertEqual(origin(ack.text), "caller")
        self.assertEqual(handler.kinds(), [("offer", "callee", "user1"), ("answer", "caller", "caller")])

    strangerHost = "127.0.0.2"

    async def test_stranger_cannot_end_a_call(self) -> None:
        """
        While a call is up, a socket of the test on another loopback
        address sends BYEs with the call's Call-ID, tags and Route (its
        signed token) to the proxy, as if it were the caller, then the
        callee: 403 each time, and nothing reaches either party; the call
        goes on until the callee hangs up.

        (Another address, 127.0.0.2: the proxy tells a party by the host
        its packets come from, not the port, so that a NAT rebinding does
        not cut calls.)
        """
        server = await self.serve()
        recorder = self.observe()
        callee = await self.callee("calls_uas_answer_wait_hang_up.xml", "-d", "3000")
        calling = self.call("calls_uac_wait_bye.xml", timeout=25)
        call, _ = await recorder.wait("answered", 15)

        # What the callee received and sent so far (sipp writes its trace as it goes).
        await within(5, lambda: any(m.isRequest("ACK") for m in callee.messages()), "the callee got no ACK")
        trace = callee.messages()
        invite = next(m for m in trace if not m.sent and m.isRequest("INVITE"))
        ok = next(m for m in trace if m.sent and m.isResponse(200, "INVITE"))
        route = invite.headers("Record-Route")[0]
        self.assertEqual(len(_TOKEN.findall(route)), 1, route)
        callerAddr, calleeAddr = invite.headers("From")[0], ok.headers("To")[0]
        callerTarget = invite.headers("Contact")[0].strip("<>")
        calleeTarget = ok.headers("Contact")[0].strip("<>")

        stranger = Stranger()
        port = reactor.listenUDP(0, stranger, interface=self.strangerHost)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        host, strangerPort = port.getHost().host, port.getHost().port
        # As the caller to the callee, then as the callee to the caller.
        byes = [(calleeTarget, callerAddr, calleeAddr), (callerTarget, calleeAddr, callerAddr)]
        for n, (target, fromAddr, toAddr) in enumerate(byes):
            bye = (
                f"BYE {target} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{strangerPort};branch=z9hG4bK-stranger-{n};rport\r\n"
                f"Route: {route}\r\n"
                f"From: {fromAddr}\r\n"
                f"To: {toAddr}\r\n"
                f"Call-ID: {invite.headers('Call-ID')[0]}\r\n"
                "CSeq: 10 BYE\r\n"
                "Max-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            port.write(bye.encode(), ("127.0.0.1", server.ports[0]))
            await within(5, lambda: len(stranger.received) > n, "no answer to the stranger")  # noqa: B023
            self.assertTrue(stranger.received[n].startswith(b"SIP/2.0 403 "), stranger.received[n])
        self.assertIn(call.id, server.sip.proxy.calls)
        self.assertEqual(recorder.names(), ["started", "ringing", "answered"])

        answered = await callee.done
        finished = await calling
        self.assertEqual(answered.code, 0, answered.detail)
        self.assertEqual(finished.code, 0, finished.detail)
        # The callee got the call's own requests and the 200 of its BYE: nothing else.
        self.assertEqual(
            {m.firstLine.split(" ", 1)[0] for m in answered.received() if not m.firstLine.startswith("SIP/2.0")},
            {"INVITE", "ACK"},
        )
        # The caller got the callee's BYE (CSeq 1), not the stranger's (CSeq 10).
        self.assertEqual({m.headers("CSeq")[0] for m in finished.received("BYE")}, {"1 BYE"})
        self.assertEqual(call.endCause, EndCause.CALLEE_BYE)
        self.assertEqual(len(stranger.received), 2)
