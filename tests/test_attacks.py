"""
Attacks against the running service on loopback (issue 9): TCP slowloris
and connection floods, sipvicious' svmap, svwar and svcrack, and a flood
of bad REGISTERs, each while honest agents on other sources keep working.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from aetasip.store import Store
from tests.servers import RunningService, deferLater
from tests.sipagent import Agent, Reply

PASSWORD = "Sx9-fq2Lw7"


def provision(service: RunningService, numbers: list[str]) -> None:
    store = Store(service.storeURL)
    store.open()
    for number in numbers:
        store.addAccount(number, "premium", PASSWORD, "aetasip")
    store.close()


class Holder(protocol.Protocol):
    """A TCP client that sends what it is told and notes when it is closed."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


def udpExchange(data: bytes, port: int, source: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    """
    Send C{data} over UDP from C{source}; return the first answer. Blocking
    and bounded: run it in a thread (the service shares the reactor).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        return sock.recvfrom(65535)[0]


class TCPAttackTests(TestCase):
    timeout = 60

    def setUp(self):  # type: ignore[no-untyped-def]
        directory = self.mktemp()
        os.makedirs(directory)
        self.server = RunningService(
            directory,
            sip__tcp_max_per_source=20,
            sip__tcp_max_connections=200,
            sip__tcp_message_timeout=2,
            sip__tcp_unbound_timeout=30,
        )
        provision(self.server, ["45675001"])
        self.addCleanup(self.server.stop)
        return self.server.start()

    async def hold(self, count: int, payload: bytes) -> list[Holder]:
        holders = []
        for _ in range(count):
            holder = Holder()
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.ports[0])
            await connectProtocol(endpoint, holder)
            holder.transport.write(payload)  # type: ignore[union-attr]
            holders.append(holder)
            self.addCleanup(self.drop, holder)
        return holders

    @staticmethod
    def drop(holder: Holder) -> Deferred[None]:
        if holder.transport is not None and holder.transport.connected:  # type: ignore[attr-defined]
            holder.transport.abortConnection()  # type: ignore[attr-defined]
        return holder.closed

    async def registerOverTCP(self, source: str) -> int:
        """A full REGISTER over a new TCP connection from C{source}; its final status."""
        agent = Agent("45675001", PASSWORD, source=(source, 5999), transport="tcp")
        holder = Holder()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.ports[0], bindAddress=(source, 0))
        await connectProtocol(endpoint, holder)
        self.addCleanup(self.drop, holder)
        holder.transport.write(agent.register())  # type: ignore[union-attr]
        challenge = await self.response(holder)
        holder.received = b""
        holder.transport.write(agent.register(auth=challenge.challenge()))  # type: ignore[union-attr]
        return (await self.response(holder)).code

    async def response(self, holder: Holder) -> Reply:
        for _ in range(100):
            if b"\r\n\r\n" in holder.received:
                return Reply(holder.received)
            await deferLater(0.02)
        raise AssertionError("no response")

    async def test_slowloris_is_cut_off_and_others_register(self) -> None:
        # Half-sent headers on as many connections as one source may open.
        holders = await self.hold(20, b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;bra")
        self.assertEqual(await self.registerOverTCP("127.0.0.2"), 200)
        # Each is closed by the server once its message is overdue.
        for holder in holders:
            await holder.closed

    async def test_a_connection_flood_leaves_the_service_answering(self) -> None:
        holders = await self.hold(60, b"")
        await deferLater(0.5)
        open_ = [h for h in holders if h.transport.connected]  # type: ignore[union-attr]
        self.assertEqual(len(open_), 20)
        self.assertEqual(self.server.sip.streamSettings.limits.counters["refused"], 40)
        self.assertEqual(await self.registerOverTCP("127.0.0.3"), 200)
        options = (
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-o1;rport\r\n"
            b"From: <sip:45675001@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: flood-o1\r\n"
            b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        reply = Reply(await deferToThread(udpExchange, options, self.server.ports[0]))
        self.assertEqual(reply.code, 200)
