"""
Calls between two real, independent SIP agents (sipp) through the running
service, as their users see them: the callee registers, the caller
authenticates (407) and calls; ringing, answer, ACK and BYE go through the
proxy (Record-Route). A call over UDP; a BYE from the callee; a CANCEL
while the callee rings; numbers unknown (404) or not registered (480);
busy (486) and unavailable (480) callees, and one that never answers
(408); a callee on TCP and a caller on TCP, each on the other SIP port;
a re-INVITE inside the dialog (RFC 3665 3.8); a callee that vanishes while
it rings, and the service stopped during a call. Scenarios are in
C{tests/scenarios/} and C{benchmarks/}.
"""

from __future__ import annotations

import io
import os
import re
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.trial.unittest import TestCase

from aetasip import admin
from tests.servers import RunningService, deferLater, requireTool
from tests.sipp import Callee, Sipp, SippRun

CALLER, CALLER_PASSWORD = "45675001", "secret-one"
CALLEE, CALLEE_PASSWORD = "45675002", "secret-two"
# An account that never registers.
ABSENT = "45675003"


_TOKEN = re.compile(r";dlg=[A-Za-z0-9_-]+(?=[;>])")


def signedRoutes(values: list[str]) -> list[str]:
    """Route or Record-Route values without their dialog tokens, each of which must be there."""
    for value in values:
        for entry in value.split(","):
            assert _TOKEN.search(entry), f"no dialog token in {entry!r}"
    return [_TOKEN.sub("", value) for value in values]


class SippCallTests(TestCase):
    """
    One call at a time between sipp agents, through the service on its two
    loopback SIP ports; the caller is 45675001, the callee 45675002.
    """

    timeout = 120

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        directory = self.mktemp()
        os.makedirs(directory)
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), directory)
        self.server = RunningService(directory)
        self.addCleanup(self.stopServer)
        for number, password in ((CALLER, CALLER_PASSWORD), (CALLEE, CALLEE_PASSWORD), (ABSENT, "secret-three")):
            code = admin.main(
                ["--store", self.server.storeURL, "account", "add", number, "--password", password],
                io.StringIO(),
                io.StringIO(),
            )
            self.assertEqual(code, 0)
        return self.server.start()

    def stopServer(self) -> Deferred[None] | None:
        if self.server.service is not None:
            return self.server.stop()
        return None

    def callee(self, scenario: str, serverPort: int, transport: str = "u1", messages: bool = False) -> Deferred[Callee]:
        """45675002 registers on C{serverPort} and answers one call with C{scenario}."""
        return Deferred.fromCoroutine(
            self.sipp.callee(
                CALLEE, CALLEE_PASSWORD, scenario, serverPort, self.server.sip.location, transport, messages=messages
            )
        )

    def call(
        self,
        scenario: str,
        serverPort: int,
        dialled: str = CALLEE,
        transport: str = "u1",
        timeout: int = 20,
        messages: bool = False,
    ) -> Deferred[SippRun]:
        """45675001 calls C{dialled} with C{scenario}."""
        return self.sipp.call(
            CALLER, CALLER_PASSWORD, dialled, scenario, serverPort, transport, timeout=timeout, messages=messages
        )

    async def assertCall(self, caller: SippRun, callee: Callee | None = None) -> SippRun | None:
        """Both sides of the call ran their scenario to the end; return the callee's run."""
        answered = await callee.done if callee is not None else None
        self.assertEqual(caller.code, 0, caller.detail + (answered.detail if answered is not None else ""))
        if answered is not None:
            self.assertEqual(answered.code, 0, answered.detail)
        return answered

    async def test_call_over_udp(self) -> None:
        first, _ = self.server.ports
        callee = await self.callee("call_uas_answer.xml", first)
        await self.assertCall(await self.call("call_uac.xml", first), callee)

    async def test_callee_hangs_up(self) -> None:
        """
        The callee ends the call: its BYE follows the route set (Route: the
        proxy, from the Record-Route of the INVITE) to the caller's Contact;
        the caller receives it through the proxy and answers 200.
        """
        first, _ = self.server.ports
        callee = await self.callee("call_uas_answer_then_hang_up.xml", first, messages=True)
        caller = await self.call("call_uac_callee_hangs_up.xml", first, messages=True)
        answered = await self.assertCall(caller, callee)
        assert answered is not None
        # (UDP: a message may have been retransmitted; the first tells.)
        sentBye = answered.sent("BYE")[0]
        self.assertEqual(signedRoutes(sentBye.headers("Route")), [f"<sip:127.0.0.1:{first};lr>"])
        contact = caller.sent("INVITE")[-1].headers("Contact")[0].strip("<>")
        self.assertEqual(sentBye.firstLine, f"BYE {contact} SIP/2.0")
        receivedBye = caller.received("BYE")[0]
        vias = receivedBye.headers("Via")
        self.assertEqual(len(vias), 2, receivedBye.text)
        self.assertTrue(vias[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{first};"), vias)
        self.assertEqual(receivedBye.headers("Route"), [])
        self.assertEqual(set(answered.responses("BYE")), {"SIP/2.0 200 OK"})

    async def test_caller_cancels_while_the_callee_rings(self) -> None:
        """
        CANCEL before the answer: the caller gets 200 for the CANCEL and 487
        for the INVITE, and ACKs; the callee gets the CANCEL, answers it 200,
        sends 487 and gets the ACK.
        """
        first, _ = self.server.ports
        callee = await self.callee("call_uas_ring_cancelled.xml", first)
        caller = await self.call("call_uac_cancel.xml", first, messages=True)
        await self.assertCall(caller, callee)
        self.assertEqual(set(caller.responses("CANCEL")), {"SIP/2.0 200 OK"})
        self.assertEqual(caller.finalResponse(), "SIP/2.0 487 Request Terminated")
        self.assertEqual(self.server.sip.proxy._contexts, {})

    async def test_caller_cancels_after_the_callee_vanished(self) -> None:
        """
        The callee rings (180) and is switched off; the caller gives up
        (CANCEL) and gets 200 for it. Nothing answers the CANCEL the proxy
        sends on, so 64*T1 (32 s) later the proxy must consider the branch
        over (RFC 3261 9.1, 16.7 step 2: a timeout counts as 408) and give
        the caller a final response, 487 or 408.
        """
        first, _ = self.server.ports
        callee = await self.callee("call_uas_ring_then_vanish.xml", first)
        caller = await self.call("call_uac_cancel.xml", first, timeout=45, messages=True)
        await self.assertCall(caller, callee)
        self.assertEqual(set(caller.responses("CANCEL")), {"SIP/2.0 200 OK"})
        self.assertIn(caller.finalResponse(), ("SIP/2.0 487 Request Terminated", "SIP/2.0 408 Request Timeout"))
        self.assertEqual(self.server.sip.proxy._contexts, {})

    async def test_number_not_registered(self) -> None:
        """45675003 is an account but has no registration: 480."""
        caller = await self.call("call_uac_refused.xml", self.server.ports[0], dialled=ABSENT, messages=True)
        await self.assertCall(caller)
        self.assertEqual(caller.finalResponse(), "SIP/2.0 480 Temporarily Unavailable")

    async def test_unknown_number(self) -> None:
        caller = await self.call("call_uac_refused.xml", self.server.ports[0], dialled="45679999", messages=True)
        await self.assertCall(caller)
        self.assertEqual(caller.finalResponse(), "SIP/2.0 404 Not Found")

    async def test_busy_callee(self) -> None:
        first, _ = self.server.ports
        callee = await self.callee("call_uas_busy.xml", first)
        await self.assertCall(await self.call("call_uac_busy.xml", first), callee)

    async def test_callee_unavailable(self) -> None:
        """RFC 3665 4.4: the callee answers 480, the caller gets that 480."""
        first, _ = self.server.ports
        callee = await self.callee("call_uas_unavailable.xml", first)
        caller = await self.call("call_uac_refused.xml", first, messages=True)
        await self.assertCall(caller, callee)
        self.assertEqual(caller.finalResponse(), "SIP/2.0 480 Temporarily Unavailable")

    async def test_callee_never_answers(self) -> None:
        """
        RFC 3665 4.3: the registered callee takes the INVITE and never
        answers, not even 100. The proxy's INVITE client transaction times
        out (Timer B, 64*T1 = 32 s) and the caller gets 408 (RFC 3261 16.7:
        a timeout counts as a 408 response).
        """
        first, _ = self.server.ports
        callee = await self.callee("call_uas_silent.xml", first)
        started = time.monotonic()
        caller = await self.call("call_uac_refused.xml", first, timeout=60, messages=True)
        elapsed = time.monotonic() - started
        await self.assertCall(caller, callee)
        self.assertEqual(caller.finalResponse(), "SIP/2.0 408 Request Timeout")
        self.assertGreater(elapsed, 30)

    async def test_call_to_a_tcp_callee_on_the_other_port(self) -> None:
        first, second = self.server.ports
        callee = await self.callee("call_uas_answer.xml", second, "t1")
        (binding,) = self.server.sip.location.lookup(CALLEE)
        self.assertEqual((binding.transport, binding.local[1]), ("tcp", second))
        await self.assertCall(await self.call("call_uac.xml", first), callee)

    async def test_tcp_caller_to_a_udp_callee_on_the_other_port(self) -> None:
        """
        The caller on TCP to the first port, the callee on UDP on the second:
        the proxy Record-Routes twice (one entry per leg, RFC 5658) and the
        ACK and BYE cross over.
        """
        first, second = self.server.ports
        callee = await self.callee("call_uas_answer.xml", second, "u1")
        (binding,) = self.server.sip.location.lookup(CALLEE)
        self.assertEqual((binding.transport, binding.local[1]), ("udp", second))
        caller = await self.call("call_uac.xml", first, transport="t1", messages=True)
        await self.assertCall(caller, callee)
        ok = next(m for m in caller.received() if m.isResponse(200, "INVITE"))
        self.assertEqual(
            signedRoutes(ok.headers("Record-Route")),
            [f"<sip:127.0.0.1:{second};lr>, <sip:127.0.0.1:{first};transport=tcp;lr>"],
        )
        (bye,) = caller.sent("BYE")
        self.assertEqual(
            signedRoutes(bye.headers("Route")),
            [f"<sip:127.0.0.1:{first};transport=tcp;lr>, <sip:127.0.0.1:{second};lr>"],
        )
        self.assertEqual(set(caller.responses("BYE")), {"SIP/2.0 200 OK"})

    async def test_reinvite_in_the_dialog(self) -> None:
        """
        RFC 3665 3.8: once the call is up, the caller sends a re-INVITE
        along the route set; the proxy passes it (no new challenge) to the
        callee, which answers 200; ACK and BYE follow the same way.
        """
        first, _ = self.server.ports
        callee = await self.callee("call_uas_reinvite.xml", first, messages=True)
        caller = await self.call("call_uac_reinvite.xml", first, messages=True)
        answered = await self.assertCall(caller, callee)
        assert answered is not None
        reinvite = caller.sent("INVITE")[-1]
        self.assertIn("CSeq: 3 INVITE", reinvite.text)
        self.assertEqual(signedRoutes(reinvite.headers("Route")), [f"<sip:127.0.0.1:{first};lr>"])
        received = answered.received("INVITE")[-1]
        self.assertIn("CSeq: 3 INVITE", received.text)
        self.assertEqual(len(received.headers("Via")), 2, received.text)
        self.assertEqual(received.headers("Proxy-Authorization"), [])
        self.assertEqual(caller.responses("INVITE")[-1], "SIP/2.0 200 OK")

    async def test_stopping_the_service_during_a_call_leaves_no_timer(self) -> None:
        """
        The service stops while a call rings: nothing of the proxy stays
        scheduled in the reactor (a restart in the same process, or a
        test, would otherwise find old calls' timers firing).
        """
        first, _ = self.server.ports
        callee = await self.callee("call_uas_ring_then_vanish.xml", first)
        caller = self.call("call_uac.xml", first, timeout=5)
        proxy = self.server.sip.proxy
        for _ in range(200):
            if proxy._contexts:
                break
            await deferLater(0.05)
        self.assertNotEqual(proxy._contexts, {}, "the call never reached the proxy")
        await self.server.stop()
        clock: IReactorTime = reactor  # type: ignore[assignment]
        pending: list[IDelayedCall] = [
            call
            for call in clock.getDelayedCalls()
            if getattr(getattr(call, "func", None), "__module__", "").startswith("aetasip.")
        ]
        left = [repr(call) for call in pending]
        for call in pending:
            call.cancel()
        # The caller never gets its answer: sipp gives up after 5 s.
        await caller
        await callee.done
        self.assertEqual(left, [])
