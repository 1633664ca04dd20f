"""
Registration with a real SIP agent against accounts in a real directory:
sipp runs benchmarks/register.xml (REGISTER, 401, REGISTER with digest,
200) over UDP against the service tree configured with
C{auth.backends = ["ldap"]}, on a slapd of the test's own (L{tests.slapd}):
plain LDAP, StartTLS, a stopped directory (503) and its return.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import TestCase

from tests.servers import RunningService, requireTool
from tests.sipp import Sipp
from tests.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, privateSlapd, useCheckoutPlugins


class SippLDAPRegistrationTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.sipp = requireTool(self, "sipp", "sip-tester")
        useCheckoutPlugins(self)
        self.directory = privateSlapd(self)
        self.workspace = os.path.abspath(self.mktemp())
        os.makedirs(self.workspace)
        self.server: RunningService | None = None

    async def startServer(self, **ldap: Any) -> RunningService:
        settings = {
            "auth__backends": ["ldap"],
            "ldap__urls": [self.directory.url],
            "ldap__bind_dn": SERVICE_DN,
            "ldap__bind_password": SERVICE_PASSWORD,
            "ldap__base": PEOPLE,
            "ldap__ha1_md5_attribute": "sipHA1MD5",
            "ldap__ha1_sha256_attribute": "sipHA1SHA256",
            "ldap__kind_attribute": "sipAccountKind",
            "ldap__timeout": 2,
            **{f"ldap__{key}": value for key, value in ldap.items()},
        }
        self.server = RunningService(self.workspace, **settings)
        self.addCleanup(self.stopServer)
        await self.server.start()
        return self.server

    async def stopServer(self) -> None:
        server, self.server = self.server, None
        if server is not None and server.service is not None:
            backend = server.sip.registrar.auth
            await server.stop()
            backend.stop()

    async def register(self, number: str, password: str) -> tuple[str, int]:
        """Register C{number} with sipp over UDP; return what sipp said and its exit code."""
        assert self.server is not None
        result = await Sipp(self.sipp, self.workspace).register(number, password, self.server.ports[0])
        return result.detail, result.code

    async def test_register_with_the_password_in_the_directory(self) -> None:
        server = await self.startServer()
        detail, code = await self.register("45675001", "secret-one")
        self.assertEqual(code, 0, detail)
        (binding,) = server.sip.location.lookup("45675001")
        self.assertEqual((binding.transport, binding.userAgent), ("udp", "sipp-aetasip"))

    async def test_register_with_ha1_in_the_directory(self) -> None:
        await self.startServer(password_attribute=None)
        detail, code = await self.register("45675003", "secret-three")
        self.assertEqual(code, 0, detail)

    async def test_wrong_password_is_refused(self) -> None:
        server = await self.startServer()
        detail, code = await self.register("45675001", "not-the-password")
        self.assertNotEqual(code, 0)
        self.assertIn("403", detail)
        self.assertEqual(server.sip.location.lookup("45675001"), [])

    async def test_register_over_starttls(self) -> None:
        server = await self.startServer(starttls=True, ca_certificate=self.directory.ca.caPath)
        detail, code = await self.register("45675001", "secret-one")
        self.assertEqual(code, 0, detail)
        self.assertEqual(server.sip.registrar.auth.directory.searches, 1)

    async def test_stopped_directory_gives_503_until_it_returns(self) -> None:
        await self.startServer(cache_ttl=0)
        detail, code = await self.register("45675001", "secret-one")
        self.assertEqual(code, 0, detail)
        self.directory.stop()
        detail, code = await self.register("45675003", "secret-three")
        self.assertNotEqual(code, 0)
        self.assertIn("SIP/2.0 503", detail)
        self.assertIn("Retry-After:", detail)
        self.directory.start()
        detail, code = await self.register("45675003", "secret-three")
        self.assertEqual(code, 0, detail)
