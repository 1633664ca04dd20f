"""
The operator's commands on a running service, end to end: sipp agents
call through the service on loopback, and C{aetasip-admin}, run as its
own process as an operator runs it, sees and ends what they do through
the control socket:

    - a caller of the test line 15000 is listed by C{testline status} and
      gets a BYE when C{testline release} ends its session (one, or all);
    - a relayed call is listed by C{relay show} with the packets the relay
      counted, and C{call release} ends it with a BYE to both parties;
    - C{call release} of a call still ringing cancels it: the caller gets
      487, the callee a CANCEL.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from aetasip.calls.call import EndCause
from tests.interop import InteropTestCase
from tests.servers import RunningService, deferLater, freePortBlock, run
from tests.sipp import SippProcess

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLER, CALLER_PASSWORD = "45676001", "secret-one"
CALLEE, CALLEE_PASSWORD = "45676002", "secret-two"
RELAY_PORTS = list(freePortBlock(40))


class MediaSocket(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append(datagram)


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq, seq * 160, 0x5151) + b"\xd5" * 160


class OperatorCommandTests(InteropTestCase):
    async def serve(
        self, accounts: Any = ((CALLER, CALLER_PASSWORD), (CALLEE, CALLEE_PASSWORD)), **settings: Any
    ) -> RunningService:
        server = await super().serve(accounts, testline__ring_time=0.2, **settings)
        self.calls = self.watchCalls()
        return server

    async def admin(self, *args: str) -> tuple[int, str, str]:
        """C{aetasip-admin --config FILE ARGS} as a process of its own: its status, output and errors."""
        config = os.path.abspath(os.path.join(self.directory, "admin.conf.py"))
        with open(config, "w") as f:
            f.write(f"web = {{'control_socket': {self.running.controlSocket!r}}}\n")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TOP, os.environ.get("PYTHONPATH", "")]))
        out, err, code = await run(sys.executable, "-m", "aetasip.admin", "--config", config, *args, env=env)
        return code, out, err

    def waitingCaller(self, name: str, dialled: str) -> SippProcess:
        """A caller of C{dialled} that waits for a BYE (calls_uac_wait_bye.xml)."""
        return self.caller(name, "calls_uac_wait_bye.xml", (CALLER, dialled))

    async def confirmedSessions(self, count: int) -> list[Any]:
        agent = self.server.service.getServiceNamed("testline").agent  # type: ignore[union-attr]
        for _ in range(200):
            sessions = list(agent.sessions.values())
            if len(sessions) == count and all(s.state == "confirmed" for s in sessions):
                return sessions
            await deferLater(0.05)
        self.fail(f"not {count} confirmed test-line sessions: {agent.sessions}")

    async def test_testline_status_and_release(self) -> None:
        # No media timeout: these sipp callers send no RTP.
        await self.serve(testline__media_address="127.0.0.1", testline__media_timeout=0)
        first = self.waitingCaller("first", "15000")
        second = self.waitingCaller("second", "15001")
        await self.confirmedSessions(2)
        await deferLater(0.5)  # some programme sent

        code, out, err = await self.admin("testline", "status")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(
            lines[0].split(),
            ["CALL-ID", "LINE", "KIND", "CALLER", "STATE", "CODEC", "DURATION", "PKTS", "OUT", "PKTS", "IN",
             "MEDIA", "TO"],
        )  # fmt: skip
        self.assertEqual(len(lines), 3, out)
        byLine = {line.split()[1]: line.split() for line in lines[1:]}
        self.assertEqual(byLine["15000"][2:6], ["programme", CALLER, "confirmed", "PCMU/8000"])
        self.assertEqual(byLine["15001"][2:6], ["echo", CALLER, "confirmed", "PCMU/8000"])
        self.assertGreater(int(byLine["15000"][7]), 0)  # packets of the programme sent

        code, out, err = await self.admin("testline", "status", "--json")
        sessions = {s["number"]: s for s in json.loads(out)}
        programmeCall = sessions["15000"]["callId"]

        code, out, err = await self.admin("testline", "release", programmeCall)
        self.assertEqual(
            (code, out, err),
            (0, f"Released test-line session {programmeCall} ({CALLER} on 15000): BYE sent.\n", ""),
        )
        finished = await first.done
        self.assertEqual(finished.code, 0, finished.detail)
        (bye,) = finished.received("BYE")
        self.assertIn("operator release", bye.text)
        await deferLater(0.3)
        code, out, _ = await self.admin("testline", "status", "--json")
        self.assertEqual([s["number"] for s in json.loads(out)], ["15001"])

        code, out, err = await self.admin("testline", "release", "--all")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("on 15001): BYE sent.", out)
        finished = await second.done
        self.assertEqual(finished.code, 0, finished.detail)
        self.assertEqual(len(finished.received("BYE")), 1)
        await deferLater(0.3)
        self.assertEqual(await self.admin("testline", "status"), (0, "No test-line sessions.\n", ""))
        self.assertEqual([c.endCause for c in self.calls], [EndCause.OPERATOR_RELEASE] * 2)

    async def test_relay_show_and_call_release(self) -> None:
        await self.serve(
            calls__media_handler="relay",
            relay__mode="always",
            relay__nodes={"local": {"kind": "builtin", "address": "127.0.0.1", "ports": RELAY_PORTS}},
        )
        callerMedia, calleeMedia = MediaSocket(), MediaSocket()
        callerPort = self.socket(callerMedia)
        calleePort = self.socket(calleeMedia)
        callee = await self.callee(CALLEE, "relay_uas.xml", inf=[(str(calleePort),)])
        caller = self.caller(
            "caller", "relay_uac.xml", (CALLER, CALLEE, str(callerPort), "127.0.0.1", "0"), "-d", "30000"
        )
        calleeSendsTo = await self.mediaOf("callee")
        callerSendsTo = await self.mediaOf("caller")
        for _ in range(100):
            if self.calls and self.calls[0].state == "answered":
                break
            await deferLater(0.05)
        (call,) = self.calls
        for seq in range(20):
            callerMedia.transport.write(rtp(seq), callerSendsTo)  # type: ignore[union-attr]
            calleeMedia.transport.write(rtp(100 + seq), calleeSendsTo)  # type: ignore[union-attr]
            await deferLater(0.02)
        await deferLater(0.3)

        code, out, err = await self.admin("call", "list")
        self.assertEqual((code, err), (0, ""))
        (row,) = out.splitlines()[1:]
        self.assertEqual(row.split()[:5], [call.callID, CALLER, CALLEE, CALLEE, "answered"])
        self.assertEqual(row.split()[-1], "local")

        code, out, err = await self.admin("relay", "show", "--json")
        self.assertEqual((code, err), (0, ""))
        (session,) = json.loads(out)
        self.assertEqual(
            (session["callId"], session["node"], session["call"]["caller"]), (call.callID, "local", CALLER)
        )
        self.assertEqual(session["caller"]["received"]["packets"], 20)
        self.assertEqual(session["callee"]["received"]["packets"], 20)
        self.assertEqual(session["caller"]["latched"], f"127.0.0.1:{callerPort}")
        self.assertEqual(session["callee"]["sent"]["packets"], 20)

        code, out, err = await self.admin("relay", "show", call.callID)
        self.assertEqual((code, err), (0, ""))
        header, callerRow, calleeRow = out.splitlines()
        self.assertEqual(header.split()[:5], ["CALL-ID", "NODE", "LEG", "NUMBER", "LATCHED"])
        self.assertEqual(callerRow.split()[:6], [call.callID, "local", "caller", CALLER,
                                                 f"127.0.0.1:{callerPort}", "20"])  # fmt: skip
        self.assertEqual(calleeRow.split()[:4], ["callee", CALLEE, f"127.0.0.1:{calleePort}", "20"])
        self.assertEqual(await self.admin("relay", "show", "other@call"), (0, "No relay session for other@call.\n", ""))

        code, out, err = await self.admin("call", "release", call.callID)
        self.assertEqual(
            (code, out, err),
            (0, f"Released call {call.callID} ({CALLER} -> {CALLEE}): BYE sent to both parties.\n", ""),
        )
        finishedCallee = await callee.done
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        self.assertEqual(len(finishedCallee.received("BYE")), 1)
        await deferLater(0.3)
        finishedCaller = await self.killed(caller)
        self.assertEqual(len(finishedCaller.received("BYE")), 1, finishedCaller.detail)
        self.assertEqual(call.endCause, EndCause.OPERATOR_RELEASE)
        self.assertEqual(await self.admin("call", "list"), (0, "No calls in progress.\n", ""))
        self.assertEqual(await self.admin("relay", "show"), (0, "No relay sessions.\n", ""))

    async def test_call_release_cancels_a_ringing_call(self) -> None:
        await self.serve()
        callee = await self.callee(CALLEE, "call_uas_ring_cancelled.xml")
        caller = self.caller("caller", "call_uac_refused.xml", (CALLER, CALLEE))
        for _ in range(100):
            if self.calls and self.calls[0].state == "ringing":
                break
            await deferLater(0.05)
        (call,) = self.calls
        code, out, err = await self.admin("call", "release", call.callID)
        self.assertEqual((code, out, err), (0, f"Released call {call.callID} ({CALLER} -> {CALLEE}): cancelled.\n", ""))
        finishedCaller, finishedCallee = await caller.done, await callee.done
        self.assertEqual(finishedCaller.code, 0, finishedCaller.detail)
        self.assertTrue(finishedCaller.finalResponse().startswith("SIP/2.0 487"), finishedCaller.finalResponse())
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        self.assertEqual(len(finishedCallee.received("CANCEL")), 1)
        self.assertEqual(call.endCause, EndCause.OPERATOR_RELEASE)
