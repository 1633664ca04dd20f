"""
Registration with a real, independent SIP agent: sipp runs
benchmarks/register.xml (REGISTER, 401, REGISTER with digest, 200) against
the real service tree on loopback, over UDP and TCP, on both SIP ports.
Accounts are provisioned with aetasip-admin, as an operator would.
"""

from __future__ import annotations

import io
import os
import socket

from twisted.trial.unittest import TestCase

from aetasip import admin, net
from tests.servers import CI, RunningService, freePort, requireTool
from tests.sipp import Sipp


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

    async def register(
        self, number: str, password: str, port: int, transport: str = "u1", host: str = "127.0.0.1"
    ) -> tuple[str, int]:
        """Register C{number} with sipp on C{host}:C{port}; return what sipp said and its exit code."""
        result = await Sipp(self.sipp, self.directory).register(number, password, port, transport, host)
        return result.detail, result.code

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


class SippFileBackendTests(SippRegistrationTests):
    """The same sipp registrations with accounts in an accounts file."""

    def setUp(self):  # type: ignore[no-untyped-def]
        self.sipp = requireTool(self, "sipp", "sip-tester")
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        accounts = os.path.join(self.directory, "accounts")
        with open(accounts, "w") as f:
            f.write("# test accounts\n45675001 premium plain:secret-one\n45675002 premium plain:secret-two\n")
        self.server = RunningService(self.directory, auth__backends=["file"], auth__file=accounts)
        self.addCleanup(self.stopServer)
        return self.server.start()

    async def test_bindings_survive_a_restart_and_show_in_the_cli(self) -> None:
        detail, code = await self.register("45675001", "secret-one", self.server.ports[1], "u1")
        self.assertEqual(code, 0, detail)
        await self.server.stop()
        await self.server.start()
        (binding,) = self.server.sip.location.lookup("45675001")
        self.assertEqual(binding.userAgent, "sipp-aetasip")


class SippIPv6Tests(SippRegistrationTests):
    """sipp registers over IPv6 loopback, UDP and TCP."""

    def setUp(self):  # type: ignore[no-untyped-def]
        self.sipp = requireTool(self, "sipp", "sip-tester")
        if not net.hasIPv6():
            self.fail("IPv6 loopback is not available") if CI else self.skipTest("no IPv6 here")
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        ports = [freePort(socket.AF_INET6, "::1"), freePort(socket.AF_INET6, "::1")]
        self.server = RunningService(self.directory, sip__listen=["::1"], sip__udp_ports=ports, sip__tcp_ports=ports)
        self.server.ports = ports
        self.addCleanup(self.stopServer)
        self.assertEqual(self.admin("account", "add", "45675001", "--password", "secret-one"), 0)
        self.assertEqual(self.admin("account", "add", "45675002", "--password", "secret-two"), 0)
        return self.server.start()

    async def register(
        self, number: str, password: str, port: int, transport: str = "u1", host: str = "::1"
    ) -> tuple[str, int]:
        return await super().register(number, password, port, transport, host)

    async def test_bindings_survive_a_restart_and_show_in_the_cli(self) -> None:
        detail, code = await self.register("45675001", "secret-one", self.server.ports[0], "u1")
        self.assertEqual(code, 0, detail)
        (binding,) = self.server.sip.location.lookup("45675001")
        self.assertEqual(binding.source[0], "::1")
