"""
L{aetasip.peers.KnownPeers}: the addresses in-dialog requests may go to.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aetasip import peers
from aetasip.peers import KnownPeers


class KnownPeersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.peers = KnownPeers(self.clock, lifetime=100.0)

    def test_known_until_the_lifetime_after_last_seen(self) -> None:
        self.peers.add(("198.51.100.7", 5060))
        self.assertIn(("198.51.100.7", 5060), self.peers)
        self.assertNotIn(("198.51.100.7", 5062), self.peers)
        self.assertNotIn(("198.51.100.8", 5060), self.peers)
        self.clock.advance(60)
        self.peers.add(("198.51.100.7", 5060))
        self.clock.advance(99)
        self.assertIn(("198.51.100.7", 5060), self.peers)
        self.clock.advance(1)
        self.assertNotIn(("198.51.100.7", 5060), self.peers)

    def test_ipv6_brackets_and_case_do_not_matter(self) -> None:
        self.peers.add(("2001:DB8::7", 5060))
        self.assertIn(("[2001:db8::7]", 5060), self.peers)
        self.assertIn(("2001:db8::7", 5060), self.peers)

    def test_anything_else_is_unknown(self) -> None:
        for thing in (None, "198.51.100.7", ("198.51.100.7",), 5060):
            self.assertNotIn(thing, self.peers)

    def test_expired_addresses_are_swept(self) -> None:
        self.peers.add(("198.51.100.7", 5060))
        self.clock.advance(101)
        self.peers.add(("198.51.100.8", 5060))
        self.peers.sweep()
        self.assertEqual(len(self.peers), 1)

    def test_sweeping_keeps_memory_bounded_without_a_timer(self) -> None:
        self.patch(peers, "_SWEEP_EVERY", 10)
        for i in range(25):
            self.peers.add(("198.51.100.7", 10000 + i))
            self.clock.advance(30)
        # At most what arrived within a lifetime (and one sweep's worth).
        self.assertLessEqual(len(self.peers), 14)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_registered_agents_become_known(self) -> None:
        binding = SimpleNamespace(source=("203.0.113.9", 5062))
        self.peers.registrationEvent(SimpleNamespace(kind="expired", binding=binding))
        self.assertNotIn(("203.0.113.9", 5062), self.peers)
        for kind in ("registered", "refreshed"):
            self.peers.registrationEvent(SimpleNamespace(kind=kind, binding=binding))
            self.assertIn(("203.0.113.9", 5062), self.peers)
