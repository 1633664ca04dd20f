"""
The floating address of a cluster is bound on every server, held or not
(Linux C{IP_FREEBIND}), so that both listen on it and the active one's
replies leave from it. Nothing is sent to or from the address here: it
is a documentation address on no interface.
"""

from __future__ import annotations

import json
import os
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from aetasip import net
from tests.servers import RunningService, freePort

FLOATING = "198.51.100.254"


class FreeBindTests(TestCase):
    def test_an_address_on_no_interface_is_refused_without_freebind(self) -> None:
        self.assertRaises(CannotListenError, net.listenUDP, reactor, FLOATING, 0, DatagramProtocol())
        self.assertRaises(CannotListenError, net.listenTCP, reactor, FLOATING, 0, Factory.forProtocol(Protocol))

    def test_freebind_binds_it_for_udp_and_tcp(self) -> None:
        udp = net.listenUDP(reactor, FLOATING, 0, DatagramProtocol(), freebind=True)
        self.addCleanup(udp.stopListening)
        tcp = net.listenTCP(reactor, FLOATING, 0, Factory.forProtocol(Protocol), freebind=True)
        self.addCleanup(tcp.stopListening)
        self.assertEqual(udp.getHost().host, FLOATING)  # type: ignore[attr-defined]
        self.assertEqual(tcp.getHost().host, FLOATING)  # type: ignore[attr-defined]


class ServiceTests(TestCase):
    timeout = 30

    async def test_a_standby_listens_on_the_floating_address_and_says_standby(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        port = freePort()
        service = RunningService(
            directory,
            sip__listen=["127.0.0.1", FLOATING],
            sip__udp_ports=[port],
            sip__tcp_ports=[port],
            cluster__address=FLOATING,
            cluster__announce_interval=1,
        )
        await service.start()
        self.addCleanup(service.stop)
        self.assertIn(f"udp:{FLOATING}:{port}", service.sip.describePorts())
        self.assertIn(f"tcp:{FLOATING}:{port}", service.sip.describePorts())
        web = service.service.getServiceNamed("web")
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(f"{web.url}/health", pool=pool)
        body: dict[str, Any] = json.loads(await response.content())
        self.assertEqual((response.code, body["role"], body["draining"]), (200, "standby", False))
        # The standby announced itself (SQLite: one server, it does the shared work).
        cluster = service.service.getServiceNamed("cluster")
        node = await cluster.announcer.store.getNode(cluster.announcer.name)
        self.assertEqual((node.role, node.address, node.holdsWork), ("standby", FLOATING, True))
        self.assertFalse(service.sip.pinger.isActive())
