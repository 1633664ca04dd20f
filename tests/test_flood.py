"""
Flood control before parsing (L{aetasip.element.flood}), with a Clock:
per-source density over a sliding window, expiring bans, IPv6 by /64,
trusted networks, counters and one log line per ban.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from aetasip.element.flood import FloodControl
from tests.sipagent import Agent, Harness

ATTACKER = "203.0.113.66"


class FloodControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.flood = FloodControl(
            self.clock.seconds, limit=40, window=2, banTime=300, trusted=["10.1.0.0/16", "2001:db8:ff::/48"]
        )
        self.events: list[dict[str, Any]] = []
        observer: Any = self.events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def send(self, host: str, count: int, interval: float = 0.0) -> list[bool]:
        allowed = []
        for _ in range(count):
            allowed.append(self.flood.allow(host))
            self.clock.advance(interval)
        return allowed

    def test_a_source_over_the_density_is_banned_then_forgiven(self) -> None:
        allowed = self.send(ATTACKER, 100)
        self.assertEqual(allowed.count(True), 40)
        self.assertEqual(self.flood.counters["bans"], 1)
        self.assertEqual(self.flood.counters["dropped"], 60)
        self.clock.advance(299)
        self.assertFalse(self.flood.allow(ATTACKER))
        self.clock.advance(1)
        self.assertTrue(self.flood.allow(ATTACKER))
        warnings = [e for e in self.events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["source"], ATTACKER)

    def test_the_window_slides(self) -> None:
        # 30 at the end of one window and 30 at the start of the next: 60 in
        # less than 2 s, which fixed windows would let through.
        self.clock.advance(1.9)
        self.send(ATTACKER, 30)
        self.clock.advance(0.2)
        self.assertIn(False, self.send(ATTACKER, 30))

    def test_steady_traffic_under_the_density_passes(self) -> None:
        # 15 messages a second for a minute: a busy site behind one NAT.
        self.assertNotIn(False, self.send(ATTACKER, 900, interval=1 / 15))
        self.assertEqual(self.flood.counters["bans"], 0)

    def test_ipv6_sources_count_by_64(self) -> None:
        for i in range(40):
            self.assertTrue(self.flood.allow(f"2001:db8:1:2::{i + 1:x}"))
        self.assertFalse(self.flood.allow("2001:db8:1:2:ffff::1"))
        self.assertTrue(self.flood.allow("2001:db8:1:3::1"))

    def test_trusted_networks_are_never_counted(self) -> None:
        self.assertNotIn(False, self.send("10.1.2.3", 1000))
        self.assertNotIn(False, self.send("2001:db8:ff:1::9", 1000))
        self.assertEqual(self.flood.counters["messages"], 0)

    def test_memory_is_bounded(self) -> None:
        flood = FloodControl(self.clock.seconds, maxTracked=100)
        for i in range(1000):
            flood.allow(f"198.51.{i // 250}.{i % 250}")
        self.assertLessEqual(len(flood._sources), 100)
        # What it remembers of each source's trust is bounded too.
        for i in range(20_000):
            flood.allow(f"198.{i // 62500}.{i // 250 % 250}.{i % 250}")
        self.assertLessEqual(len(flood._trustedHosts), 10_000)

    def test_a_limit_of_0_is_no_flood_control(self) -> None:
        flood = FloodControl(self.clock.seconds, limit=0, trusted=["10.1.0.0/16"])
        self.assertNotIn(False, [flood.allow(ATTACKER) for _ in range(1000)])
        self.assertTrue(flood.allow("10.1.2.3"))
        self.assertEqual(flood.counters, {"messages": 0, "dropped": 0, "bans": 0})


class FloodThroughTheCoreTests(SynchronousTestCase):
    """The SIP core drops a banned source's messages unparsed; others go on."""

    def test_a_flooder_is_silenced_and_an_agent_elsewhere_registers(self) -> None:
        h = Harness(flood__trusted=[])
        garbage = b"REGISTER sip:sip.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n\r\n"
        answered = sum(len(h.send(garbage, (ATTACKER, 5060))) for _ in range(200))
        self.assertEqual(answered, 40)
        self.assertEqual(h.core.flood.counters["dropped"], 160)
        agent = Agent("45675001", "secret1", source=("198.51.100.7", 5060))
        self.assertEqual(h.register(agent).code, 200)


class LogLimitTests(SynchronousTestCase):
    """A source sending bad requests gets five log lines a minute, then one summary."""

    def test_bad_requests_are_logged_five_a_minute_then_summed_up(self) -> None:
        h = Harness(flood__limit=0)
        events: list[dict[str, Any]] = []
        observer: Any = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        bad = (
            b"OPTIONS sip:sip.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK{n}\r\n"
            b"From: <sip:1@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: a b\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
        for n in range(100):
            self.assertEqual(h.sendOne(bad.replace(b"{n}", str(n).encode()), (ATTACKER, 5060)).code, 400)
        lines = [e for e in events if e.get("log_format", "").startswith("Bad request from")]
        self.assertEqual(len(lines), 5)
        h.clock.advance(60)
        h.sendOne(bad.replace(b"{n}", b"x"), (ATTACKER, 5060))
        lines = [e for e in events if e.get("log_format", "").startswith("Bad request from")]
        self.assertEqual(lines[-1]["held"], " (95 more from it were not logged)")
