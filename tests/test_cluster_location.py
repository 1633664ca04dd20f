"""
Bindings kept current on every server of a cluster: L{LocationService.apply}
and L{LocationSync} sans-IO, then two servers (two location services, two
stores) on a real PostgreSQL, which announces every change of a binding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.cluster.locationsync import BATCH_DELAY, RETRY_DELAY, LocationSync
from aetasip.cluster.service import ClusterService
from aetasip.location import LocationService
from aetasip.store import AsyncStore, Store
from tests.postgres import postgresqlURL, server
from tests.test_location import NOW, Listener, binding


def change(aor: str, origin: str = "other") -> str:
    return json.dumps({"origin": origin, "aor": aor})


class ApplyTests(SynchronousTestCase):
    """
    L{LocationService.apply}: the store's rows of some numbers, as another
    server left them, applied to memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.location = LocationService(self.clock)
        self.listener = Listener()
        self.location.listeners.append(self.listener)
        self.location.start()
        self.addCleanup(self.location.stop)

    def test_a_new_row_is_added_as_remote_silently(self) -> None:
        self.location.apply([binding()], ["45675001"])
        [found] = self.location.lookup("45675001")
        self.assertTrue(found.remote)
        self.assertEqual(found.storedExpiresAt, found.expiresAt)
        self.assertEqual(self.listener.kinds, [])

    def test_a_row_changed_elsewhere_is_adopted(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.location._dirty.clear()
        mine.storedExpiresAt = mine.expiresAt
        moved = binding(expires=7200, source=("203.0.113.9", 41000), cseq=7)
        self.location.apply([moved], ["45675001"])
        [found] = self.location.lookup("45675001")
        self.assertIs(found, mine)
        self.assertEqual((found.source, found.cseq, found.expiresAt), (("203.0.113.9", 41000), 7, NOW + 7200))
        self.assertTrue(found.remote)

    def test_a_moved_agent_loses_its_connection_here(self) -> None:
        mine = binding(transport="tcp", connection=object())
        mine.storedExpiresAt = mine.expiresAt
        self.location.apply([mine], ["45675001"])
        self.location.apply([binding(expires=7200, transport="tcp", source=("203.0.113.9", 41000))], ["45675001"])
        [found] = self.location.lookup("45675001")
        self.assertIsNone(found.connection)

    def test_the_row_this_server_wrote_does_not_undo_a_later_refresh(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.location._dirty.clear()
        mine.storedExpiresAt = mine.expiresAt
        written = binding()
        # Refreshed here since, not written (half the interval still stored).
        mine.expiresAt = NOW + 4000
        self.location.apply([written], ["45675001"])
        self.assertEqual(mine.expiresAt, NOW + 4000)
        self.assertFalse(mine.remote)

    def test_a_row_deleted_elsewhere_leaves_memory_silently(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.location._dirty.clear()
        self.location.apply([], ["45675001"])
        self.assertEqual(self.location.lookup("45675001"), [])
        self.assertEqual(self.listener.kinds, ["registered"])

    def test_only_the_numbers_read_are_changed(self) -> None:
        self.location.apply([binding(), binding(aor="45675002")], None)
        self.location.apply([], ["45675002"])
        self.assertEqual(len(self.location.lookup("45675001")), 1)
        self.assertEqual(self.location.lookup("45675002"), [])

    def test_a_full_read_removes_every_number_missing(self) -> None:
        self.location.apply([binding(), binding(aor="45675002")], None)
        self.location.apply([binding(aor="45675002")], None)
        self.assertEqual(self.location.lookup("45675001"), [])
        self.assertEqual(len(self.location.lookup("45675002")), 1)

    def test_an_unwritten_local_change_wins(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.location.apply([], ["45675001"])
        self.assertEqual(self.location.lookup("45675001"), [mine])
        self.location.apply([binding(expires=10, cseq=99)], ["45675001"])
        self.assertEqual(mine.cseq, 1)

    def test_an_unwritten_removal_wins(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.location.remove(mine)
        self.location.apply([binding()], ["45675001"])
        self.assertEqual(self.location.lookup("45675001"), [])

    def test_a_row_refreshed_elsewhere_after_it_expired_here_stays(self) -> None:
        mine = binding(expires=10)
        self.location.add(mine)
        self.clock.advance(11)
        self.assertEqual(self.location.lookup("45675001"), [])
        self.location.apply([binding(expires=3600, now=NOW + 11)], ["45675001"])
        [found] = self.location.lookup("45675001")
        self.assertTrue(found.remote)
        self.assertNotIn(("45675001", mine.contact), self.location._deleted)

    def test_an_expired_row_is_not_added(self) -> None:
        self.location.apply([binding(expires=-1)], None)
        self.assertEqual(len(self.location), 0)

    def test_a_remote_binding_expires_silently_without_a_deletion(self) -> None:
        self.location.apply([binding(expires=10)], ["45675001"])
        self.clock.advance(11)
        self.assertEqual(len(self.location), 0)
        self.assertEqual(self.listener.kinds, [])
        self.assertEqual(self.location._deleted, {})

    def test_a_local_expiry_deletes_only_up_to_its_expiry(self) -> None:
        mine = binding(expires=10)
        self.location.add(mine)
        self.clock.advance(11)
        self.assertEqual(self.location._deleted, {("45675001", mine.contact): NOW + 10})
        self.assertEqual(self.listener.kinds, ["registered", "expired"])

    def test_registering_here_makes_a_remote_binding_local(self) -> None:
        self.location.apply([binding()], ["45675001"])
        [found] = self.location.lookup("45675001")
        self.location.refresh(found)
        self.assertFalse(found.remote)


class FakeLocation:
    """What L{LocationSync} calls: each reload recorded, answered by the test."""

    def __init__(self) -> None:
        self.origin: str | None = None
        self.reloads: list[list[str] | None] = []
        self.answers: list[Deferred[None]] = []

    def reload(self, numbers: Any) -> Deferred[None]:
        self.reloads.append(None if numbers is None else sorted(numbers))
        d: Deferred[None] = Deferred()
        self.answers.append(d)
        return d


class SyncTests(SynchronousTestCase):
    """L{LocationSync} on a L{Clock}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.location = FakeLocation()
        self.sync = LocationSync(self.location, self.clock, origin="mine")  # type: ignore[arg-type]

    def test_the_origin_is_given_to_the_location(self) -> None:
        self.assertEqual(self.location.origin, "mine")
        self.assertNotEqual(
            LocationSync(FakeLocation(), self.clock).origin, LocationSync(FakeLocation(), self.clock).origin
        )  # type: ignore[arg-type]

    def test_own_changes_are_ignored(self) -> None:
        self.sync.notified(change("45675001", origin="mine"))
        self.clock.advance(10)
        self.assertEqual(self.location.reloads, [])

    def test_changes_are_gathered_into_one_read(self) -> None:
        self.sync.notified(change("45675001"))
        self.sync.notified(change("45675002", origin=""))
        self.sync.notified(change("45675001"))
        self.clock.advance(BATCH_DELAY * 0.9)
        self.assertEqual(self.location.reloads, [])
        self.clock.advance(BATCH_DELAY * 0.1)
        self.assertEqual(self.location.reloads, [["45675001", "45675002"]])

    def test_reads_do_not_overlap(self) -> None:
        self.sync.notified(change("45675001"))
        self.clock.advance(BATCH_DELAY)
        self.sync.notified(change("45675002"))
        self.clock.advance(10)
        self.assertEqual(len(self.location.reloads), 1)
        self.location.answers[0].callback(None)
        self.clock.advance(BATCH_DELAY)
        self.assertEqual(self.location.reloads, [["45675001"], ["45675002"]])

    def test_a_connection_reads_everything_at_once(self) -> None:
        self.sync.connected()
        self.clock.advance(0)
        self.assertEqual(self.location.reloads, [None])

    def test_a_failed_read_is_tried_again(self) -> None:
        self.sync.notified(change("45675001"))
        self.clock.advance(BATCH_DELAY)
        self.location.answers[0].errback(RuntimeError("store down"))
        self.clock.advance(RETRY_DELAY * 0.9)
        self.assertEqual(len(self.location.reloads), 1)
        self.clock.advance(RETRY_DELAY * 0.1)
        self.assertEqual(self.location.reloads, [["45675001"], ["45675001"]])

    def test_an_unreadable_notification_reads_everything(self) -> None:
        self.sync.notified("not json")
        self.sync.notified(json.dumps({"origin": 3, "aor": "1"}))
        self.clock.advance(BATCH_DELAY)
        self.assertEqual(self.location.reloads, [None])

    def test_stop_cancels_the_read_to_come(self) -> None:
        self.sync.notified(change("45675001"))
        self.sync.stop()
        self.clock.advance(10)
        self.assertEqual(self.location.reloads, [])


class Node:
    """One server of the cluster: its store, location service and sync."""

    def __init__(self, testCase: TestCase, url: str, name: str) -> None:
        store = Store(url)
        store.open()
        self.store = AsyncStore(store)
        self.store.start()
        testCase.addCleanup(self.store.stop)
        self.location = LocationService(reactor, self.store, flushInterval=0.05)
        self.events = Listener()
        self.location.listeners.append(self.events)
        testCase.addCleanup(self.location.stop)
        self.service = ClusterService(self.location, self.store, url, name, reactor=reactor)
        assert self.service.sync is not None and self.service.listener is not None
        self.sync = self.service.sync
        self.listener = self.service.listener

    @inlineCallbacks
    def start(self) -> Any:
        yield self.location.start()
        self.service.startService()
        yield waitFor(lambda: self.listener.listening and self.sync.reloads >= 1 and not self.sync._reading)

    def stop(self) -> Deferred[None]:
        return self.service.stopService()

    def contacts(self, aor: str = "45675001") -> list[tuple[str, tuple[str, int], float]]:
        return [(b.contact, b.source, b.expiresAt) for b in self.location.lookup(aor)]


@inlineCallbacks
def waitFor(condition: Callable[[], bool], timeout: float = 5.0) -> Any:
    """Wait for C{condition}; return the seconds it took, or fail after C{timeout}."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        yield deferLater(reactor, 0.01, lambda: None)
    return time.monotonic() - started


class PostgreSQLClusterTests(TestCase):
    """
    Two servers on one real PostgreSQL database: what one changes, the
    other has in memory within a second.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.url = postgresqlURL(self)
        self.a = Node(self, self.url, "a")
        self.b = Node(self, self.url, "b")
        yield self.a.start()
        yield self.b.start()
        self.addCleanup(self.a.stop)
        self.addCleanup(self.b.stop)

    def now(self) -> float:
        return reactor.seconds()

    @inlineCallbacks
    def test_an_added_binding_reaches_the_other_server_within_a_second(self) -> Any:
        mine = binding(now=self.now())
        self.a.location.add(mine)
        took = yield waitFor(lambda: self.b.contacts() != [])
        self.assertLess(took, 1.0)
        self.assertEqual(self.b.contacts(), self.a.contacts())
        [copy] = self.b.location.lookup("45675001")
        self.assertTrue(copy.remote)
        # Announced once, by the server that registered it.
        self.assertEqual(self.a.events.kinds, ["registered"])
        self.assertEqual(self.b.events.kinds, [])

    @inlineCallbacks
    def test_a_refresh_from_a_new_source_reaches_the_other_server(self) -> Any:
        mine = binding(now=self.now())
        self.a.location.add(mine)
        yield waitFor(lambda: self.b.contacts() != [])
        mine.source = ("203.0.113.9", 41000)
        mine.expiresAt = self.now() + 7200
        self.a.location.refresh(mine, moved=True)
        took = yield waitFor(lambda: self.b.contacts() == self.a.contacts())
        self.assertLess(took, 1.0)
        self.assertEqual(self.b.contacts()[0][1], ("203.0.113.9", 41000))

    @inlineCallbacks
    def test_a_removal_reaches_the_other_server(self) -> Any:
        mine = binding(now=self.now())
        self.a.location.add(mine)
        yield waitFor(lambda: self.b.contacts() != [])
        self.a.location.remove(mine)
        took = yield waitFor(lambda: self.b.contacts() == [])
        self.assertLess(took, 1.0)

    @inlineCallbacks
    def test_an_expiry_reaches_the_other_server_and_deletes_the_row(self) -> Any:
        self.a.location.add(binding(now=self.now(), expires=1.5))
        yield waitFor(lambda: self.b.contacts() != [])
        yield waitFor(lambda: "expired" in self.a.events.kinds and self.b.location.bindings() == [], timeout=4)
        yield self.a.location.flush()
        rows = yield self.a.store.allBindings()
        self.assertEqual(rows, [])
        self.assertEqual(self.a.events.kinds, ["registered", "expired"])
        self.assertEqual(self.b.events.kinds, [])

    @inlineCallbacks
    def test_a_deletion_by_the_admin_reaches_both_servers(self) -> Any:
        self.a.location.add(binding(now=self.now()))
        yield self.a.location.flush()
        yield waitFor(lambda: self.b.contacts() != [])
        admin = Store(self.url)
        admin.open()
        self.addCleanup(admin.close)
        admin.deleteBindings([("45675001", binding().contact)])
        yield waitFor(lambda: self.a.contacts() == [] and self.b.contacts() == [])

    @inlineCallbacks
    def test_a_server_does_not_read_its_own_changes_back(self) -> Any:
        before = self.a.sync.reloads
        for n in range(5):
            self.a.location.add(binding(aor=f"4567500{n}", now=self.now()))
        yield waitFor(lambda: all(self.b.contacts(f"4567500{n}") for n in range(5)))
        self.assertEqual(self.a.sync.reloads, before)
        # And what B read does not bounce back to A.
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.a.sync.reloads, before)
        self.assertLessEqual(self.b.sync.reloads, 6)

    @inlineCallbacks
    def test_an_expiry_here_keeps_a_row_refreshed_elsewhere(self) -> Any:
        # A registered it and lets it expire; meanwhile the agent registered
        # again with B (after a switch), which wrote a later expiry.
        mine = binding(now=self.now(), expires=1.0)
        self.a.location.add(mine)
        yield waitFor(lambda: self.b.contacts() != [])
        [copy] = self.b.location.lookup("45675001")
        copy.expiresAt = self.now() + 3600
        copy.source = ("203.0.113.9", 41000)
        self.b.location.refresh(copy, moved=True)
        yield waitFor(lambda: self.a.contacts() != [] and self.a.contacts()[0][1] == ("203.0.113.9", 41000))
        yield deferLater(reactor, 1.5, lambda: None)
        self.assertEqual(len(self.a.contacts()), 1)
        rows = yield self.a.store.allBindings()
        self.assertEqual([(b.source) for b in rows], [("203.0.113.9", 41000)])

    @inlineCallbacks
    def test_a_lost_connection_reads_everything_again(self) -> Any:
        # A change whose notification B missed (it was not listening) is
        # found when B listens again. B's listener may reconnect within
        # one turn of the reactor, so the missed notification is made
        # certain by dropping what B's listener hears until it is cut.
        listener = self.b.service.listener
        heard = listener.notified
        missed: list[str] = []
        listener.notified = lambda channel, payload: missed.append(payload)
        self.a.location.add(binding(now=self.now()))
        yield self.a.location.flush()
        yield waitFor(lambda: missed != [])
        self.assertEqual(self.b.contacts(), [])
        before = self.b.sync.reloads
        postgres = server(self)
        with postgres.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'aetasip-listen' "
                # This test's database only: other tests' listeners (trial -j2) are not ours.
                "AND datname = %s",
                (self.url.rsplit("/", 1)[1].split("?")[0],),
            )
        listener.notified = heard
        yield waitFor(lambda: self.b.contacts() != [], timeout=10)
        self.assertGreater(self.b.sync.reloads, before)


class SQLiteTests(TestCase):
    """On SQLite (one server), no trigger and nothing to listen to."""

    def test_no_notification_trigger_on_sqlite(self) -> None:
        store = Store(f"sqlite:///{self.mktemp()}.db")
        store.open()
        self.addCleanup(store.close)
        store.saveBindings([binding()], origin="x")
        store.expireBindings([("45675001", binding().contact, NOW + 10)])
        self.assertEqual(len(store.allBindings()), 1)
        store.expireBindings([("45675001", binding().contact, NOW + 3600)])
        self.assertEqual(store.allBindings(), [])
