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
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip import net
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

    def test_sip_sockets_get_the_configured_buffers(self) -> None:
        """
        Each SIP UDP socket has sip.udp_buffer_size (4 MiB by default) to
        hold what arrives while the server is busy: forced past the kernel's
        maximum when the process may (CAP_NET_ADMIN), capped by it otherwise.
        """
        wanted = 4 * 1024 * 1024
        with open("/proc/sys/net/core/rmem_max") as f:
            allowed = min(wanted, int(f.read()))
        udp = [port for transport, port in self.server.sip.ports if transport == "udp"]
        self.assertEqual(len(udp), 2)
        for port in udp:
            received = port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # type: ignore[attr-defined]
            # Linux reports twice the size asked, its bookkeeping included.
            self.assertGreaterEqual(received, allowed)


class BufferSizeTests(SynchronousTestCase):
    """net.setBufferSizes without the right to force past the kernel's maximum."""

    def test_unprivileged_process_asks_for_what_the_kernel_allows(self) -> None:
        calls: list[tuple[int, int]] = []

        class Socket:
            def setsockopt(self, level: int, option: int, value: int) -> None:
                if option in (getattr(socket, "SO_RCVBUFFORCE", -1), getattr(socket, "SO_SNDBUFFORCE", -1)):
                    raise PermissionError(1, "Operation not permitted")
                calls.append((option, value))

            def getsockopt(self, level: int, option: int) -> int:
                return 425984

        granted = net.setBufferSizes(Socket(), 1 << 20)  # type: ignore[arg-type]
        self.assertEqual(calls, [(socket.SO_RCVBUF, 1 << 20), (socket.SO_SNDBUF, 1 << 20)])
        self.assertEqual(granted, (425984, 425984))

    def test_a_real_socket_gets_at_least_what_the_kernel_allows(self) -> None:
        """Forced when the process may (CAP_NET_ADMIN), else up to net.core.rmem_max."""
        with open("/proc/sys/net/core/rmem_max") as f:
            maximum = int(f.read())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            received, _ = net.setBufferSizes(sock, 8 << 20)
        # Linux reports twice the size it books.
        self.assertGreaterEqual(received, 2 * min(8 << 20, maximum))


class BufferWarningTests(TestCase):
    """An operator learns when the kernel gives less buffer than configured."""

    async def test_capped_buffer_is_logged_once(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        directory = self.mktemp()
        os.makedirs(directory)
        wanted = 256 * 1024 * 1024
        server = RunningService(directory, sip__udp_buffer_size=wanted)
        self.addCleanup(server.stop)
        await server.start()
        granted = [
            port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # type: ignore[attr-defined]
            for transport, port in server.sip.ports
            if transport == "udp"
        ]
        warnings = [e for e in events if "sip.udp_buffer_size" in str(e.get("log_format", ""))]
        if min(granted) < wanted:
            # Without CAP_NET_ADMIN, net.core.rmem_max caps the size: one warning for both sockets.
            self.assertEqual(len(warnings), 1)
            self.assertEqual(warnings[0]["granted"], granted[0])
        else:
            self.assertEqual(warnings, [])


class PeerTableTests(SynchronousTestCase):
    """One Peer per source address, shared by its messages; the table stays bounded."""

    def setUp(self) -> None:
        from aetasip.transport import SIPDatagramProtocol

        self.peers: list[object] = []

        class Core:
            def receive(core, data: bytes, peer: object) -> None:
                self.peers.append(peer)

        self.protocol = SIPDatagramProtocol(Core(), ("127.0.0.1", 5060))

    def test_messages_from_one_source_share_their_peer(self) -> None:
        for source in [("127.0.0.2", 5062), ("127.0.0.2", 5062), ("127.0.0.3", 5062)]:
            self.protocol.datagramReceived(b"OPTIONS sip:x SIP/2.0\r\n\r\n", source)
        first, again, other = self.peers
        self.assertIs(first, again)
        self.assertIsNot(first, other)
        self.assertEqual(
            (first.source, first.local, first.transport), (("127.0.0.2", 5062), ("127.0.0.1", 5060), "udp")
        )  # type: ignore[attr-defined]
        self.assertEqual(other.source, ("127.0.0.3", 5062))  # type: ignore[attr-defined]

    def test_a_flood_of_sources_keeps_the_table_bounded(self) -> None:
        from aetasip.transport import PEERS_KEPT

        for i in range(PEERS_KEPT + 10):
            self.protocol.datagramReceived(b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("127.0.0.2", 1024 + i))
        self.assertLessEqual(len(self.protocol._peers), PEERS_KEPT)
        self.assertEqual([p.source[1] for p in self.peers], [1024 + i for i in range(PEERS_KEPT + 10)])  # type: ignore[attr-defined]
