"""
Registration with a real, independent SIP agent: sipp runs
benchmarks/register.xml (REGISTER, 401, REGISTER with digest, 200) against
the real service tree on loopback, over UDP and TCP, on both SIP ports.
Accounts are provisioned with aetasip-admin, as an operator would.
"""

from __future__ import annotations

import io
import os

from twisted.trial.unittest import TestCase

from aetasip import admin
from tests.servers import RunningService, freePort, requireTool, run

SCENARIO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "register.xml")


class SippRegistrationTests(TestCase):
    timeout = 120

    def setUp(self):  # type: ignore[no-untyped-def]
        self.sipp = requireTool(self, "sipp", "sip-tester")
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.server = RunningService(self.directory)
        self.addCleanup(self.stopServer)
        for number, password in (("45675001", "secret-one"), ("45675002", "secret-two")):
            self.assertEqual(self.admin("account", "add", number, "--kind", "premium", "--password", password), 0)
        return self.server.start()

    def stopServer(self):  # type: ignore[no-untyped-def]
        if self.server.service is not None:
            return self.server.stop()
        return None

    def admin(self, *argv: str) -> int:
        out, err = io.StringIO(), io.StringIO()
        code = admin.main(["--store", self.server.storeURL, *argv], out, err)
        self.adminOutput = out.getvalue() + err.getvalue()
        return code

    async def register(self, number: str, password: str, port: int, transport: str = "u1") -> tuple[str, int]:
        inf = os.path.join(self.directory, f"{number}.csv")
        with open(inf, "w") as f:
            f.write(f"SEQUENTIAL\n{number};[authentication username={number} password={password}]\n")
        errors = os.path.join(self.directory, f"{number}-{transport}-{port}.err")
        out, err, code = await run(
            self.sipp,
            "-sf", SCENARIO,
            "-inf", inf,
            "-m", "1",
            "-t", transport,
            "-i", "127.0.0.1",
            "-p", str(freePort()),
            "-timeout", "20s",
            "-recv_timeout", "5000",
            "-nostdin",
            "-trace_err", "-error_file", errors,
            f"127.0.0.1:{port}",
        )  # fmt: skip
        detail = out[-600:] + err[-600:]
        if os.path.exists(errors):
            with open(errors) as f:
                detail += f.read()
        return detail, code

    async def test_register_over_udp_on_both_ports(self) -> None:
        first, second = self.server.ports
        detail, code = await self.register("45675001", "secret-one", first, "u1")
        self.assertEqual(code, 0, detail)
        detail, code = await self.register("45675002", "secret-two", second, "u1")
        self.assertEqual(code, 0, detail)
        (binding,) = self.server.sip.location.lookup("45675001")
        self.assertEqual((binding.transport, binding.local[1]), ("udp", first))
        (binding,) = self.server.sip.location.lookup("45675002")
        self.assertEqual((binding.transport, binding.local[1]), ("udp", second))

    async def test_register_over_tcp_on_both_ports(self) -> None:
        first, second = self.server.ports
        detail, code = await self.register("45675001", "secret-one", first, "t1")
        self.assertEqual(code, 0, detail)
        detail, code = await self.register("45675002", "secret-two", second, "t1")
        self.assertEqual(code, 0, detail)
        (binding,) = self.server.sip.location.lookup("45675002")
        self.assertEqual((binding.transport, binding.local[1]), ("tcp", second))

    async def test_wrong_password_is_refused(self) -> None:
        detail, code = await self.register("45675001", "not-the-password", self.server.ports[0])
        self.assertNotEqual(code, 0)
        self.assertIn("403", detail)
        self.assertEqual(self.server.sip.location.lookup("45675001"), [])

    async def test_bindings_survive_a_restart_and_show_in_the_cli(self) -> None:
        detail, code = await self.register("45675001", "secret-one", self.server.ports[1], "u1")
        self.assertEqual(code, 0, detail)
        await self.server.stop()
        self.assertEqual(self.admin("location", "show"), 0)
        self.assertIn("45675001", self.adminOutput)
        self.assertIn("sipp-aetasip", self.adminOutput)
        await self.server.start()
        (binding,) = self.server.sip.location.lookup("45675001")
        self.assertEqual(binding.userAgent, "sipp-aetasip")
        self.assertEqual(binding.local[1], self.server.ports[1])
