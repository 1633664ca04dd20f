"""
Calls between two real, independent SIP agents (sipp) through the running
service: the callee registers, the caller authenticates (407) and calls;
ringing, answer, ACK and BYE go through the proxy. Over UDP, and with the
callee on TCP on the other SIP port (two Record-Route entries).
"""

from __future__ import annotations

import io
import os

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from aetasip import admin
from tests.servers import RunningService, deferLater, freePort, requireTool, run

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


class SippCallTests(TestCase):
    timeout = 120

    def setUp(self):  # type: ignore[no-untyped-def]
        self.sipp = requireTool(self, "sipp", "sip-tester")
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.server = RunningService(self.directory)
        self.addCleanup(self.server.stop)
        for number, password in (("45675001", "secret-one"), ("45675002", "secret-two")):
            code = admin.main(["--store", self.server.storeURL, "account", "add", number, "--password", password],
                              io.StringIO(), io.StringIO())  # fmt: skip
            self.assertEqual(code, 0)
        self.uas = os.path.join(self.directory, "uas.csv")
        with open(self.uas, "w") as f:
            f.write("SEQUENTIAL\n45675002;[authentication username=45675002 password=secret-two]\n")
        self.uac = os.path.join(self.directory, "uac.csv")
        with open(self.uac, "w") as f:
            f.write("SEQUENTIAL\n45675001;[authentication username=45675001 password=secret-one];45675002\n")
        return self.server.start()

    def sipp_(self, name: str, *args: str) -> Deferred[tuple[str, str, int]]:
        errors = os.path.join(self.directory, f"{name}.err")
        return Deferred.fromCoroutine(
            run(self.sipp, *args, "-i", "127.0.0.1", "-nostdin", "-trace_err", "-error_file", errors)
        )

    def errors(self, name: str) -> str:
        path = os.path.join(self.directory, f"{name}.err")
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f.read()

    async def callee(self, answer: str, serverPort: int, transport: str) -> tuple[Deferred[tuple[str, str, int]], int]:
        """Register the callee, then answer with the scenario C{answer}."""
        port = freePort()
        if transport == "t1":
            # On TCP the binding is the connection: one process registers and answers.
            done = self.sipp_("uas", "-sf", os.path.join(BENCHMARKS, "register_and_wait.xml"),
                              "-oocsf", os.path.join(BENCHMARKS, answer), "-inf", self.uas, "-m", "1",
                              "-t", "t1", "-d", "8000", "-p", str(port), f"127.0.0.1:{serverPort}")  # fmt: skip
            for _ in range(100):
                if self.server.sip.location.lookup("45675002"):
                    break
                await deferLater(0.05)
            return done, port
        _, _, code = await self.sipp_("reg", "-sf", os.path.join(BENCHMARKS, "register.xml"), "-inf", self.uas,
                                          "-m", "1", "-p", str(port), f"127.0.0.1:{serverPort}")  # fmt: skip
        self.assertEqual(code, 0, self.errors("reg"))
        done = self.sipp_("uas", "-sf", os.path.join(BENCHMARKS, answer), "-m", "1", "-p", str(port))
        await deferLater(0.5)
        return done, port

    async def caller(self, scenario: str, serverPort: int) -> int:
        _, _, code = await self.sipp_("uac", "-sf", os.path.join(BENCHMARKS, scenario), "-inf", self.uac,
                                          "-m", "1", "-p", str(freePort()), "-timeout", "20s",
                                          f"127.0.0.1:{serverPort}")  # fmt: skip
        return code

    async def test_call_over_udp(self) -> None:
        first, _ = self.server.ports
        answered, _ = await self.callee("call_uas_answer.xml", first, "u1")
        self.assertEqual(await self.caller("call_uac.xml", first), 0, self.errors("uac"))
        _, _, code = await answered
        self.assertEqual(code, 0, self.errors("uas"))

    async def test_call_to_a_tcp_callee_on_the_other_port(self) -> None:
        first, second = self.server.ports
        answered, _ = await self.callee("call_uas_answer.xml", second, "t1")
        (binding,) = self.server.sip.location.lookup("45675002")
        self.assertEqual((binding.transport, binding.local[1]), ("tcp", second))
        self.assertEqual(await self.caller("call_uac.xml", first), 0, self.errors("uac") + self.errors("uas"))
        await answered

    async def test_busy_callee(self) -> None:
        first, _ = self.server.ports
        answered, _ = await self.callee("call_uas_busy.xml", first, "u1")
        self.assertEqual(await self.caller("call_uac_busy.xml", first), 0, self.errors("uac"))
        _, _, code = await answered
        self.assertEqual(code, 0, self.errors("uas"))
