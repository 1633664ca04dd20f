"""
The test line for a caller behind a simulated symmetric NAT (network
namespaces the test builds, as in L{tests.test_interop_relay_nat}), with
no relay: the caller advertises its private address, as a codec without
STUN does; the line sends nothing there, latches on the NAT's public
side when the caller's RTP arrives, and the caller hears the programme.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.trial.unittest import TestCase

from aetasip import admin
from aetasip.testline import rtp
from aetasip.testline.programme import LEVEL_DBFS
from tests import test_interop_relay_nat as relayNAT
from tests.audio import decode, dominantFrequency, levelDBFS
from tests.servers import RunningService, deferLater
from tests.sipp import authentication, injectionFile
from tests.test_interop_relay_nat import PRIVATE, PUBLIC, SERVER
from tests.test_stun_service import insideNamespace

CALLER, CALLER_PASSWORD = "45676001", "secret-one"


class TestLineBehindNATTests(TestCase):
    timeout = 90

    # The namespaces are built as for the relay's test (its class stays in its module: run once).
    setUp = relayNAT.SymmetricNATTests.setUp
    ip = relayNAT.SymmetricNATTests.ip
    namespace = relayNAT.SymmetricNATTests.namespace
    build = relayNAT.SymmetricNATTests.build
    enter = relayNAT.SymmetricNATTests.enter
    socket = relayNAT.SymmetricNATTests.socket
    mediaOf = relayNAT.SymmetricNATTests.mediaOf

    async def test_caller_behind_symmetric_nat_hears_the_programme(self) -> None:
        serverNamespace, clientNamespace = self.build()
        self.enter(serverNamespace)
        server = RunningService(
            self.sipp.directory, sip__listen=[SERVER], testline__media_address=SERVER, testline__ring_time=0.2
        )
        code = admin.main(
            ["--store", server.storeURL, "account", "add", CALLER, "--password", CALLER_PASSWORD],
            io.StringIO(),
            io.StringIO(),
        )
        self.assertEqual(code, 0)
        await server.start()
        self.addCleanup(server.stop)
        agent: Any = server.service.getServiceNamed("testline").agent

        with insideNamespace(clientNamespace):
            caller = self.socket(PRIVATE)
            callerPort = caller.transport.getHost().port  # type: ignore[union-attr]
            calling = self.sipp.start(
                "caller",
                "relay_uac.xml",
                "-d",
                "3000",
                remote=f"{SERVER}:{server.ports[0]}",
                host=PRIVATE,
                port=25_062,
                inf=self.sippInjection(callerPort),
                timeout=40,
                messages=True,
            )
        self.addCleanup(lambda: (calling.kill(), calling.done)[1])
        lineAt = await self.mediaOf("caller")
        self.assertEqual(lineAt[0], SERVER)
        await deferLater(0.5)
        # Nothing reached the caller yet (nothing may go to its private address).
        self.assertEqual(caller.received, [])
        (session,) = agent.sessions.values()
        self.assertEqual(session.media.packetsSent, 0)

        sender = rtp.Packetiser(8)
        for _ in range(50):
            caller.transport.write(sender.packet(b"\xd5" * 160, 160), lineAt)  # type: ignore[union-attr]
            await deferLater(0.02)
        await deferLater(0.2)
        self.assertEqual(session.media.remote[0], PUBLIC)
        self.assertGreater(len(caller.received), 40)
        self.assertEqual({address for _, address in caller.received}, {lineAt})
        samples = decode("PCMA", 8000, [rtp.parse(d).payload for d, _ in caller.received])
        self.assertLess(abs(dominantFrequency(samples, 8000) - 1000), 5)
        self.assertLess(abs(levelDBFS(samples) - LEVEL_DBFS), 0.5)
        finished = await calling.done
        self.assertEqual(finished.code, 0, finished.detail)

    def sippInjection(self, mediaPort: int) -> str:
        return injectionFile(
            self.sipp.directory,
            "caller",
            [(CALLER, authentication(CALLER, CALLER_PASSWORD), "15000", str(mediaPort), PRIVATE)],
        )
