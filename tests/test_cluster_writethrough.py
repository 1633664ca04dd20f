"""
In a cluster with a floating address the registrar answers a REGISTER
only once its bindings are in the store: a registration answered 200 is
never lost with the active server. On a store failure the agent gets 500
with Retry-After. A single server keeps writing behind (within a second).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.auth import credentialsFromPassword
from aetasip.cluster.service import ClusterService
from aetasip.location import Binding
from aetasip.registrar import STORE_RETRY_AFTER
from aetasip.store import AsyncStore, Store
from tests.postgres import postgresqlURL
from tests.sipagent import Agent, Harness
from tests.test_cluster_location import waitFor


class SlowStore:
    """The location's store methods; each write waits for the test to answer it."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, list[Any], Deferred[None]]] = []

    def loadBindings(self, now: float) -> Deferred[list[Binding]]:
        return succeed([])

    def expireOrphanBindings(self, live: list[str], now: float, **kwargs: Any) -> Deferred[list[Binding]]:
        return succeed([])

    def _write(self, what: str, items: list[Any], **kwargs: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append((what, list(items), d))
        return d

    def saveBindings(self, bindings: list[Binding], **kwargs: Any) -> Deferred[None]:
        return self._write("save", bindings)

    def deleteBindings(self, keys: list[Any], **kwargs: Any) -> Deferred[None]:
        return self._write("delete", keys)

    def expireBindings(self, keys: list[Any], **kwargs: Any) -> Deferred[None]:
        return self._write("expire", keys)


class WriteThroughTests(SynchronousTestCase):
    """The registrar and the location on a L{Clock}, with a store the test answers."""

    def setUp(self) -> None:
        self.store = SlowStore()
        self.h = Harness(store=self.store)
        self.h.location.writeThrough = True
        self.agent = Agent("45675001", "secret1")

    def registerAndWait(self) -> list[Any]:
        challenge = self.h.sendOne(self.agent.register(), self.agent.source)
        return self.h.send(self.agent.register(auth=challenge.challenge()), self.agent.source)

    def test_the_200_waits_for_the_store(self) -> None:
        self.assertEqual(self.registerAndWait(), [])
        [(what, saved, written)] = self.store.writes
        self.assertEqual((what, [b.aor for b in saved]), ("save", ["45675001"]))
        before = len(self.h.sent)
        written.callback(None)
        [(_, reply)] = self.h.sent[before:]
        self.assertTrue(reply.startswith(b"SIP/2.0 200 OK\r\n"), reply)
        # Nothing left for the timed flush to write.
        self.h.clock.advance(5)
        self.assertEqual(len(self.store.writes), 1)

    def test_a_store_failure_answers_500_with_retry_after(self) -> None:
        self.assertEqual(self.registerAndWait(), [])
        before = len(self.h.sent)
        self.store.writes[0][2].errback(RuntimeError("store down"))
        [(_, reply)] = self.h.sent[before:]
        self.assertTrue(reply.startswith(b"SIP/2.0 500 Registration not stored\r\n"), reply)
        self.assertIn(f"Retry-After: {STORE_RETRY_AFTER}\r\n".encode(), reply)
        self.flushLoggedErrors(RuntimeError)
        # The binding is kept and written when the store is back.
        self.assertEqual(len(self.h.location.lookup("45675001")), 1)
        self.h.clock.advance(self.h.location.flushInterval)
        self.assertEqual([w[0] for w in self.store.writes], ["save", "save"])

    def test_an_unregistration_waits_for_the_store_too(self) -> None:
        self.registerAndWait()
        self.store.writes[0][2].callback(None)
        challenge = self.h.sendOne(self.agent.register(expires=0), self.agent.source)
        self.assertEqual(self.h.send(self.agent.register(auth=challenge.challenge(), expires=0), self.agent.source), [])
        (what, keys, written) = self.store.writes[-1]
        self.assertEqual(keys, [("45675001", self.agent.contact)])
        self.assertEqual(what, "delete")
        before = len(self.h.sent)
        written.callback(None)
        self.assertTrue(self.h.sent[before][1].startswith(b"SIP/2.0 200 OK\r\n"))

    def test_registrations_during_a_write_are_written_together(self) -> None:
        self.registerAndWait()
        other = Agent("45675002", "secret2", ("127.0.0.1", 40002))
        challenge = self.h.sendOne(other.register(), other.source)
        self.h.send(other.register(auth=challenge.challenge()), other.source)
        third = Agent("45675003", "secret3", ("127.0.0.1", 40003))
        self.h.auth.accounts["45675003"] = credentialsFromPassword("45675003", "premium", "aetasip", "secret3")
        challenge = self.h.sendOne(third.register(), third.source)
        self.h.send(third.register(auth=challenge.challenge()), third.source)
        # One write under way; the two others wait for it, then go in one.
        self.assertEqual(len(self.store.writes), 1)
        self.store.writes[0][2].callback(None)
        self.assertEqual(len(self.store.writes), 2)
        self.assertEqual(sorted(b.aor for b in self.store.writes[1][1]), ["45675002", "45675003"])
        before = len(self.h.sent)
        self.store.writes[1][2].callback(None)
        self.assertEqual([out[:15] for _, out in self.h.sent[before:]], [b"SIP/2.0 200 OK\r"] * 2)

    def test_a_refresh_that_needs_no_write_is_answered_at_once(self) -> None:
        self.registerAndWait()
        self.store.writes[0][2].callback(None)
        self.h.clock.advance(10)
        [reply] = self.registerAndWait()
        self.assertEqual(reply.code, 200)
        self.assertEqual(len(self.store.writes), 1)

    def test_a_refresh_at_half_the_interval_is_written_through(self) -> None:
        """
        An agent refreshing at half its interval: on a single server the
        stored expiry (half the interval left) is enough; in a cluster it
        would lapse just as the agent refreshes, so the refresh is written.
        """
        self.registerAndWait()
        self.store.writes[0][2].callback(None)
        self.h.clock.advance(1800)
        self.assertEqual(self.registerAndWait(), [])
        self.assertEqual(len(self.store.writes), 2)
        self.h.location.writeThrough = False
        self.assertFalse(self.h.location.writeThrough)
        self.store.writes[1][2].callback(None)
        self.h.clock.advance(1800)
        [reply] = self.registerAndWait()
        self.assertEqual(reply.code, 200)
        self.assertEqual(len(self.store.writes), 2)

    def test_a_single_server_answers_at_once_and_writes_behind(self) -> None:
        self.h.location.writeThrough = False
        [reply] = self.registerAndWait()
        self.assertEqual(reply.code, 200)
        self.assertEqual(self.store.writes, [])
        self.h.clock.advance(self.h.location.flushInterval)
        self.assertEqual(len(self.store.writes), 1)


class PostgreSQLTests(TestCase):
    """On a real PostgreSQL: the row is there when the 200 is sent."""

    timeout = 30

    def setUp(self) -> None:
        self.url = postgresqlURL(self)
        store = Store(self.url)
        store.open()
        self.store = AsyncStore(store)
        self.store.start()
        self.addCleanup(self.store.stop)
        self.reader = Store(self.url)
        self.reader.open()
        self.addCleanup(self.reader.close)

    def cluster(self, h: Harness, address: str | None) -> ClusterService:
        # Not started: only what it sets on the location matters here.
        return ClusterService(h.location, self.store, self.url, "sip1", address=address)

    @inlineCallbacks
    def test_a_cluster_with_an_address_writes_before_the_200(self) -> Any:
        h = Harness(store=self.store)
        self.addCleanup(h.location.stop)
        self.cluster(h, "203.0.113.10")
        self.assertTrue(h.location.writeThrough)
        agent = Agent("45675001", "secret1")
        challenge = h.sendOne(agent.register(), agent.source)
        before = len(h.sent)
        rows: list[list[str]] = []

        def send(out: bytes) -> None:
            # At the moment the 200 leaves: is the binding in the store?
            rows.append([b.aor for b in self.reader.allBindings()])
            h.sent.append((agent.source, out))

        from aetasip.sip.transaction import Peer

        peer = Peer("udp", agent.source, ("127.0.0.1", 5060), send)
        h.core.receive(agent.register(auth=challenge.challenge()), peer, stream=False)
        yield waitFor(lambda: len(h.sent) > before)
        self.assertTrue(h.sent[-1][1].startswith(b"SIP/2.0 200 OK\r\n"))
        self.assertEqual(rows, [["45675001"]])

    def test_without_an_address_the_registrar_writes_behind(self) -> None:
        h = Harness(store=self.store)
        self.addCleanup(h.location.stop)
        self.cluster(h, None)
        self.assertFalse(h.location.writeThrough)
        [reply] = [h.register(Agent("45675001", "secret1"))]
        self.assertEqual(reply.code, 200)
        self.assertEqual(self.reader.allBindings(), [])
