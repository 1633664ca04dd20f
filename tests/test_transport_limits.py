"""
Fault 5 of the audit, driven with bytes and a Clock: SIP over TCP had no
limit on connections (total or per source), any byte reset a one-hour
idle timer (half-sent headers held ~66 KB each indefinitely), no write
back-pressure, and connections were found by a linear scan.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from aetasip.transport import SIPStreamFactory, SIPStreamProtocol, StreamLimits, StreamSettings

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.7:5060;branch=z9hG4bK-t1\r\n"
    b"From: <sip:1@x>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: t1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class RecordingCore:
    """Stands for the SIP core: records what the connections hand it."""

    def __init__(self) -> None:
        self.connections: dict[tuple[str, int], Any] = {}
        self.received: list[bytes] = []

    def connectionMade(self, connection: Any) -> None:
        self.connections[connection.source] = connection

    def connectionLost(self, connection: Any) -> None:
        self.connections.pop(connection.source, None)

    def receive(self, data: bytes, peer: Any, stream: bool = False) -> None:
        self.received.append(data)


class StreamLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.core = RecordingCore()
        self.settings = StreamSettings(
            maxSize=65535,
            idleTimeout=3600,
            unboundTimeout=120,
            messageTimeout=10,
            maxBacklog=100_000,
            limits=StreamLimits(maxTotal=6, maxPerSource=3),
            clock=self.clock,
        )
        self.factory = SIPStreamFactory(self.core, "tcp", ("127.0.0.1", 5060), self.settings)

    def connect(self, host: str = "198.51.100.7", port: int = 40000) -> tuple[SIPStreamProtocol, StringTransport]:
        address = IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
        protocol = self.factory.buildProtocol(address)
        assert isinstance(protocol, SIPStreamProtocol)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        self.addCleanup(self.close, protocol, transport)
        return protocol, transport

    @staticmethod
    def close(protocol: SIPStreamProtocol, transport: StringTransport) -> None:
        protocol.connectionLost(None)

    def lost(self, protocol: SIPStreamProtocol, transport: StringTransport) -> None:
        """Let the protocol learn what its transport did."""
        protocol.connectionLost(None)

    def test_connections_per_source_are_capped(self) -> None:
        accepted = [self.connect(port=40000 + i) for i in range(3)]
        _, transport = self.connect(port=40010)
        self.assertTrue(transport.disconnected)
        self.assertNotIn(("198.51.100.7", 40010), self.core.connections)
        # Another source still gets in; one closing makes room again.
        _, other = self.connect("203.0.113.9")
        self.assertFalse(other.disconnecting)
        self.lost(*accepted[0])
        _, again = self.connect(port=40011)
        self.assertFalse(again.disconnecting)
        self.assertEqual(self.settings.limits.counters["refused"], 1)

    def test_ipv6_sources_count_by_64(self) -> None:
        for i in range(3):
            self.connect(f"2001:db8:1:2::{i + 1}")
        _, transport = self.connect("2001:db8:1:2:ffff::1")
        self.assertTrue(transport.disconnected)

    def test_connections_in_all_are_capped(self) -> None:
        for i in range(6):
            _, transport = self.connect(f"198.51.100.{i + 1}")
            self.assertFalse(transport.disconnecting)
        _, transport = self.connect("198.51.100.99")
        self.assertTrue(transport.disconnected)

    def test_a_trickled_message_is_cut_off(self) -> None:
        """Slowloris: one byte a second no longer keeps a half-sent message alive."""
        protocol, transport = self.connect()
        for byte in OPTIONS[:60]:
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(1)
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.core.received, [])
        self.assertLessEqual(self.clock.seconds(), 10)

    def test_a_message_in_pieces_within_the_deadline_passes(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(OPTIONS[:50])
        self.clock.advance(9)
        protocol.dataReceived(OPTIONS[50:])
        self.clock.advance(5)
        self.assertEqual(self.core.received, [OPTIONS])
        self.assertFalse(transport.disconnecting)

    def test_a_connection_without_binding_idles_briefly(self) -> None:
        protocol, transport = self.connect()
        protocol.dataReceived(OPTIONS)
        self.clock.advance(119)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_a_connection_with_a_binding_idles_long(self) -> None:
        protocol, transport = self.connect()
        protocol.markBound()
        self.clock.advance(3599)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        self.clock.advance(3599)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_a_peer_that_never_reads_is_closed(self) -> None:
        protocol, transport = self.connect()
        self.assertIs(transport.producer, protocol)
        # The kernel and Twisted buffers are full: the transport pauses us.
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        for _ in range(99):
            protocol.write(b"x" * 1000)
        self.assertFalse(transport.disconnecting)
        protocol.write(b"x" * 2000)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.factory.counters["backlogged"], 1)

    def test_a_peer_that_reads_again_is_kept(self) -> None:
        protocol, transport = self.connect()
        protocol.pauseProducing()
        protocol.write(b"x" * 90_000)
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        protocol.write(b"x" * 90_000)
        self.assertFalse(transport.disconnecting)

    def test_connections_are_found_by_their_source(self) -> None:
        protocol, _ = self.connect(port=40123)
        self.assertIs(self.core.connections[("198.51.100.7", 40123)], protocol)
