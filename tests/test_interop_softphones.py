"""
Calls between two real softphones, baresip and linphonec, through the
running service with its default configuration (both digest challenges,
MD5 and SHA-256): each registers, calls the other by number, and hangs
up; the call the proxy keeps says who called whom, who answered and who
ended it. Everything on loopback.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from aetasip.calls.call import EndCause
from tests.servers import RunningService, deferLater, requireTool
from tests.softphones import Baresip, Linphonec, Softphone
from tests.test_interop_calls import Recorder, within

LINPHONE, LINPHONE_PASSWORD = "45677001", "lin-secret-1"
BARESIP, BARESIP_PASSWORD = "45677002", "bare-secret-2"


class SoftphoneCallTests(TestCase):
    timeout = 120

    async def start(self, linphoneAnswers: bool = False) -> tuple[Linphonec, Baresip, Recorder]:
        """The service with both accounts, a recorder of its calls, both phones registered."""
        baresip = requireTool(self, "baresip", "baresip-core")
        linphonec = requireTool(self, "linphonec", "linphone-cli")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        server = RunningService(directory)
        server.addAccounts((LINPHONE, LINPHONE_PASSWORD), (BARESIP, BARESIP_PASSWORD))
        await server.start()
        self.addCleanup(server.stop)
        self.server = server
        recorder = Recorder()
        server.sip.proxy.observers.add(recorder)
        address = ("127.0.0.1", server.ports[0])
        phones: list[Softphone] = []
        lin = Linphonec(
            linphonec,
            os.path.join(directory, "linphone"),
            LINPHONE,
            LINPHONE_PASSWORD,
            address,
            autoAnswer=linphoneAnswers,
        )
        phones.append(lin)
        bare = Baresip(baresip, os.path.join(directory, "baresip"), BARESIP, BARESIP_PASSWORD, address)
        phones.append(bare)
        for phone in phones:
            self.addCleanup(self.stopped, phone)
        location = server.sip.location
        for phone in phones:
            await within(
                20,
                lambda phone=phone: bool(location.lookup(phone.number)),
                f"{phone.name} registered\n{phone.text()[-2000:]}",
            )
        return lin, bare, recorder

    async def event(self, recorder: Recorder, name: str, seconds: float, *phones: Softphone) -> Any:
        """The call of the first event C{name}; failing, what the phones printed."""
        try:
            call, _ = await recorder.wait(name, seconds)
        except AssertionError as e:
            said = "\n".join(f"--- {phone.name}:\n{phone.text()[-3000:]}" for phone in phones)
            raise AssertionError(f"{e}; events {recorder.names()}\n{said}") from None
        return call

    @staticmethod
    def stopped(phone: Softphone) -> Deferred[None]:
        return phone.stop()

    def assertCall(self, call: Any, caller: Softphone, callee: Softphone) -> None:
        self.assertEqual((call.caller, call.dialled, call.resolved), (caller.number, callee.number, [callee.number]))
        self.assertEqual(call.callerLeg.source, ("127.0.0.1", caller.sipPort))
        self.assertIsNotNone(call.answeredBy)
        self.assertEqual(call.answeredBy.number, callee.number)
        self.assertEqual(call.answeredBy.leg.source, ("127.0.0.1", callee.sipPort))
        self.assertEqual(call.status, 200)

    async def test_linphone_calls_baresip_and_hangs_up(self) -> None:
        lin, bare, recorder = await self.start()
        lin.command(f"call sip:{BARESIP}@127.0.0.1")
        call = await self.event(recorder, "answered", 20, lin, bare)
        self.assertCall(call, lin, bare)
        await within(10, lambda: "Call established" in bare.text(), "baresip established the call")
        await deferLater(1)
        lin.command("terminate")
        ended = await self.event(recorder, "ended", 15, lin, bare)
        self.assertIs(ended, call)
        self.assertEqual((call.endCause, call.state), (EndCause.CALLER_BYE, "ended"))
        self.assertGreaterEqual(call.endedAt - call.answeredAt, 1)
        self.assertEqual(self.server.sip.proxy.calls, {})

    async def test_baresip_calls_linphone_which_hangs_up(self) -> None:
        lin, bare, recorder = await self.start(linphoneAnswers=True)
        # A number alone: baresip completes it with its account's server.
        answer = await bare.command("dial", LINPHONE)
        self.assertTrue(answer["ok"], answer)
        call = await self.event(recorder, "answered", 20, lin, bare)
        self.assertCall(call, bare, lin)
        await within(10, lambda: "Call established" in bare.text(), "baresip established the call")
        await deferLater(1)
        lin.command("terminate")
        await self.event(recorder, "ended", 15, lin, bare)
        self.assertEqual(call.endCause, EndCause.CALLEE_BYE)
        await within(10, lambda: "terminated" in bare.text(), "baresip saw the BYE")
