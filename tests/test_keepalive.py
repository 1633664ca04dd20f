"""
OPTIONS pings keep the NAT bindings of UDP agents open.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aetasip.keepalive import OptionsPinger
from aetasip.location import Binding, LocationService
from aetasip.sip.message import Request
from aetasip.sip.parser import parse


class OptionsPingerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.location = LocationService(self.clock)
        self.location.start()
        self.sent: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        self.pinger = OptionsPinger(self.clock, self.location, self.senderFor, 10, "sip.example.net")
        self.addCleanup(self.pinger.stop)
        self.addCleanup(self.location.stop)

    def senderFor(self, local: tuple[str, int]):  # type: ignore[no-untyped-def]
        if local[1] == 9999:
            return None
        return lambda data, destination: self.sent.append((local, destination, data))

    def bind(self, number: str, transport: str = "udp", local: tuple[str, int] = ("0.0.0.0", 5070)) -> Binding:
        binding = Binding(
            aor=number,
            contact=f"sip:{number}@192.168.1.10:5060",
            expiresAt=self.clock.seconds() + 3600,
            callID="c",
            cseq=1,
            transport=transport,
            source=("198.51.100.7", 40000 + int(number[-2:])),
            local=local,
        )
        self.location.add(binding)
        return binding

    def test_each_udp_binding_is_pinged_once_per_interval_from_its_socket(self) -> None:
        for i in range(20):
            self.bind(f"456750{i:02d}")
        self.pinger.start()
        self.clock.pump([1] * 10)
        self.assertEqual(len(self.sent), 20)
        self.assertEqual(
            {destination for _, destination, _ in self.sent}, {("198.51.100.7", 40000 + i) for i in range(20)}
        )
        self.assertEqual({local for local, _, _ in self.sent}, {("0.0.0.0", 5070)})
        self.clock.pump([1] * 10)
        self.assertEqual(len(self.sent), 40)

    def test_a_standby_does_not_ping(self) -> None:
        """Only the active server of a cluster pings: the NAT mappings point at its address."""
        for i in range(5):
            self.bind(f"456750{i:02d}")
        active = [False]
        self.pinger.isActive = lambda: active[0]
        self.pinger.start()
        self.clock.pump([1] * 10)
        self.assertEqual(self.sent, [])
        active[0] = True
        self.clock.pump([1] * 10)
        self.assertEqual(len(self.sent), 5)

    def test_pings_are_spread_over_the_interval(self) -> None:
        for i in range(50):
            self.bind(f"456750{i:02d}")
        self.pinger.start()
        perSecond = []
        for _ in range(10):
            before = len(self.sent)
            self.clock.advance(1)
            perSecond.append(len(self.sent) - before)
        self.assertEqual(sum(perSecond), 50)
        self.assertLess(max(perSecond), 50)

    def test_the_ping_is_a_valid_options_request_to_the_contact(self) -> None:
        binding = self.bind("45675001")
        self.pinger.ping(binding)
        request = parse(self.sent[0][2])
        assert isinstance(request, Request)
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual(request.uri, "sip:45675001@192.168.1.10:5060")
        self.assertEqual(request.topVia.host, "sip.example.net")
        self.assertEqual(request.topVia.port, 5070)
        self.assertIn("rport", request.topVia.params)

    def test_tcp_bindings_and_unknown_sockets_are_not_pinged(self) -> None:
        self.bind("45675001", transport="tcp")
        self.bind("45675002", local=("127.0.0.1", 9999))
        self.pinger.start()
        self.clock.pump([1] * 10)
        self.assertEqual(self.sent, [])

    def test_interval_zero_never_pings(self) -> None:
        pinger = OptionsPinger(self.clock, self.location, self.senderFor, 0, "x")
        self.bind("45675001")
        pinger.start()
        self.clock.pump([1] * 100)
        self.assertEqual(self.sent, [])
