"""
SIP over UDP with real sockets: keep-alives (RFC 5626: CRLF ping/pong and
STUN Binding on the SIP port), oversized and hostile datagrams, and the
service answering on both SIP ports.
"""

from __future__ import annotations

import os
import socket
import struct

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from tests.servers import RunningService
from tests.sipagent import Agent, Reply

COOKIE = 0x2112A442


class Client(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.waiting: Deferred[bytes] | None = None

    def datagramReceived(self, data: bytes, addr: object) -> None:
        self.received.append(data)
        if self.waiting is not None:
            d, self.waiting = self.waiting, None
            d.callback(data)

    def next(self, timeout: float = 3.0) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.waiting = d
        d.addTimeout(timeout, reactor)  # type: ignore[arg-type]
        return d


class UDPTransportTests(TestCase):
    timeout = 30

    def setUp(self):  # type: ignore[no-untyped-def]
        directory = self.mktemp()
        os.makedirs(directory)
        self.server = RunningService(directory)
        self.addCleanup(self.server.stop)
        self.client = Client()
        self.port = reactor.listenUDP(0, self.client, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)
        return self.server.start()

    def send(self, data: bytes, which: int = 0) -> None:
        self.client.transport.write(data, ("127.0.0.1", self.server.ports[which]))  # type: ignore[union-attr]

    async def test_stun_binding_on_the_sip_port_returns_the_public_mapping(self) -> None:
        transaction = os.urandom(12)
        self.send(struct.pack("!HHI", 0x0001, 0, COOKIE) + transaction, which=1)
        response = await self.client.next()
        kind, length, cookie = struct.unpack("!HHI", response[:8])
        self.assertEqual((kind, cookie, response[8:20]), (0x0101, COOKIE, transaction))
        attributes = response[20 : 20 + length]
        found = {}
        while attributes:
            kind, size = struct.unpack("!HH", attributes[:4])
            found[kind] = attributes[4 : 4 + size]
            attributes = attributes[4 + size + (-size % 4) :]
        family, xport = struct.unpack("!xBH", found[0x0020][:4])
        address = socket.inet_ntoa(
            bytes(a ^ b for a, b in zip(found[0x0020][4:8], struct.pack("!I", COOKIE), strict=True))
        )
        self.assertEqual((family, xport ^ (COOKIE >> 16), address), (1, self.port.getHost().port, "127.0.0.1"))

    async def test_crlf_ping_gets_a_pong_and_a_lone_crlf_nothing(self) -> None:
        self.send(b"\r\n")
        self.send(b"\r\n\r\n")
        self.assertEqual(await self.client.next(), b"\r\n")
        self.assertEqual(self.client.received, [b"\r\n"])

    async def test_hostile_datagrams_get_no_answer_and_the_service_keeps_answering(self) -> None:
        for junk in [
            b"\x00" * 20,
            b"\x01\x01\x00\x00" + struct.pack("!I", COOKIE) + b"x" * 12,
            os.urandom(1400),
            b"INVITE sip:x SIP/2.0\r\n" + b"A" * 70000,
            b"SIP/2.0 200 OK\r\n\r\n",
        ]:
            if len(junk) < 65000:
                self.send(junk)
        agent = Agent("45675001", "x", source=("127.0.0.1", self.port.getHost().port))
        self.send(agent.register())
        reply = Reply(await self.client.next())
        self.assertEqual(reply.code, 401)
        self.assertEqual(len(self.client.received), 1)

    async def test_both_sip_ports_answer(self) -> None:
        agent = Agent("45675001", "x", source=("127.0.0.1", self.port.getHost().port))
        for which in (0, 1):
            self.send(agent.register(), which)
            self.assertEqual(Reply(await self.client.next()).code, 401)
