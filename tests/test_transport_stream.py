"""
SIP over TCP and TLS with a real client on loopback: Content-Length
framing, CRLF keep-alive ping/pong, a registration over TLS verified
against a test CA, and the binding remembering its connection.
"""

from __future__ import annotations

import os

from twisted.internet import protocol, reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from tests.certificates import TestCA
from tests.servers import RunningService, freePort
from tests.sipagent import Agent, Reply


class StreamClient(protocol.Protocol):
    """Collects bytes; hands out complete responses or pongs as they come."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: list[tuple[Deferred[bytes], str]] = []
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._deliver()

    def _deliver(self) -> None:
        while self.waiting:
            d, kind = self.waiting[0]
            if kind == "pong":
                if not self.buffer.startswith(b"\r\n"):
                    return
                self.buffer = self.buffer[2:]
                self.waiting.pop(0)
                d.callback(b"\r\n")
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[: end + 4]
            length = int(Reply(head).get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            message, self.buffer = self.buffer[: end + 4 + length], self.buffer[end + 4 + length :]
            self.waiting.pop(0)
            d.callback(message)

    def expect(self, kind: str = "message") -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.waiting.append((d, kind))
        self._deliver()
        return d

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)


class StreamTransportTests(TestCase):
    timeout = 30

    def setUp(self):  # type: ignore[no-untyped-def]
        directory = self.mktemp()
        os.makedirs(directory)
        self.ca = TestCA(os.path.join(directory, "ca"))
        cert, key = self.ca.issue("localhost")
        self.tlsPort = freePort()
        self.server = RunningService(directory, sip__tls_certificate=cert, sip__tls_key=key, sip__tls_port=self.tlsPort)
        from aetasip.store import Store

        store = Store(self.server.storeURL)
        store.open()
        store.addAccount("45675001", "premium", "secret1", "aetasip")
        store.close()
        self.addCleanup(self.server.stop)
        return self.server.start()

    async def connect(self, tls: bool) -> StreamClient:
        if tls:
            options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(self.ca.caPEM))
            endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", self.tlsPort, options)
        else:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.ports[0])
        client = StreamClient()
        await connectProtocol(endpoint, client)
        self.addCleanup(self.disconnect, client)
        return client

    def disconnect(self, client: StreamClient) -> Deferred[None]:
        if client.transport is not None and client.transport.connected:  # type: ignore[attr-defined]
            client.transport.loseConnection()
            return client.lost
        return client.lost

    async def registerOver(self, tls: bool) -> tuple[StreamClient, Reply]:
        client = await self.connect(tls)
        agent = Agent("45675001", "secret1", source=("127.0.0.1", 5999), transport="tls" if tls else "tcp")
        client.transport.write(agent.register())  # type: ignore[union-attr]
        challenge = Reply(await client.expect())
        self.assertEqual(challenge.code, 401)
        client.transport.write(agent.register(auth=challenge.challenge()))  # type: ignore[union-attr]
        return client, Reply(await client.expect())

    async def test_register_over_tls_with_a_verified_certificate(self) -> None:
        _, reply = await self.registerOver(tls=True)
        self.assertEqual(reply.code, 200)
        (binding,) = self.server.sip.location.lookup("45675001")
        self.assertEqual(binding.transport, "tls")
        self.assertEqual(binding.local[1], self.tlsPort)
        self.assertIsNotNone(binding.connection)

    async def test_register_over_tcp_keeps_the_connection(self) -> None:
        _, reply = await self.registerOver(tls=False)
        self.assertEqual(reply.code, 200)
        (binding,) = self.server.sip.location.lookup("45675001")
        self.assertEqual((binding.transport, binding.source[0]), ("tcp", "127.0.0.1"))
        self.assertIsNotNone(binding.connection)

    async def test_crlf_ping_gets_a_pong_on_tcp_and_tls(self) -> None:
        for tls in (False, True):
            client = await self.connect(tls)
            client.transport.write(b"\r\n\r\n")  # type: ignore[union-attr]
            self.assertEqual(await client.expect("pong"), b"\r\n")

    async def test_message_split_in_pieces_is_framed(self) -> None:
        client = await self.connect(False)
        data = Agent("45675001", "secret1", transport="tcp").register()
        for i in range(0, len(data), 7):
            client.transport.write(data[i : i + 7])  # type: ignore[union-attr]
        self.assertEqual(Reply(await client.expect()).code, 401)

    async def test_unframable_stream_is_closed_and_the_service_keeps_answering(self) -> None:
        client = await self.connect(False)
        client.transport.write(b"REGISTER sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n")  # type: ignore[union-attr]
        await client.lost
        other = await self.connect(False)
        other.transport.write(Agent("45675001", "secret1", transport="tcp").register())  # type: ignore[union-attr]
        self.assertEqual(Reply(await other.expect()).code, 401)
