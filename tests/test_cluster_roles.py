"""
Roles in a cluster: the active server (holding the floating address) and
standbys (L{Role}, sans-IO); the shared work done by one server at a time
(a PostgreSQL advisory lock, on a real PostgreSQL): the quarterly call
log due at a switch made exactly once; /health saying the role, and a
drained server answering not-ready.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.cluster.listener import NotificationListener
from aetasip.cluster.roles import Role, addressIsLocal
from aetasip.cluster.service import WORK_LOCK, ClusterService
from aetasip.location import LocationService
from aetasip.records.quarterly import QuarterlyLogService
from aetasip.store import AsyncStore, Store
from aetasip.web.health import healthReport
from tests.postgres import postgresqlURL, server
from tests.test_cluster_location import waitFor
from tests.test_quarterly import FROM, JUST_AFTER_Q1, provision
from tests.test_store import FakeClock


class RoleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.local = False
        self.changes: list[bool] = []

    def role(self, address: str | None = "192.0.2.80") -> Role:
        role = Role(self.clock, address, 1.0, lambda a: self.local)
        role.listeners.append(self.changes.append)
        role.start()
        self.addCleanup(role.stop)
        return role

    def test_without_a_floating_address_a_server_is_active(self) -> None:
        role = self.role(None)
        self.assertEqual((role.active, role.name, self.changes), (True, "active", [True]))

    def test_a_server_without_the_address_is_a_standby(self) -> None:
        role = self.role()
        self.assertEqual((role.active, role.name), (False, "standby"))
        self.assertEqual(self.changes, [False])

    def test_the_address_arriving_makes_it_active_within_the_interval(self) -> None:
        role = self.role()
        self.local = True
        self.clock.advance(0.99)
        self.assertFalse(role.active)
        self.clock.advance(0.01)
        self.assertEqual((role.active, self.changes), (True, [False, True]))
        self.local = False
        self.clock.advance(1)
        self.assertEqual((role.name, self.changes), ("standby", [False, True, False]))
        self.clock.advance(5)
        self.assertEqual(self.changes, [False, True, False])

    def test_a_failing_look_keeps_the_role(self) -> None:
        role = Role(self.clock, "192.0.2.80", 1.0, lambda a: 1 / 0)  # type: ignore[arg-type,return-value]
        role.start()
        self.addCleanup(role.stop)
        self.clock.pump([1, 1, 1])
        self.assertFalse(role.active)
        # Said once, not every second.
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_local_addresses_are_found_on_the_interfaces(self) -> None:
        self.assertTrue(addressIsLocal("127.0.0.1"))
        self.assertTrue(addressIsLocal("::1"))
        self.assertFalse(addressIsLocal("198.51.100.254"))


class FakeCalls:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.probing: list[bool] = []
        self.ended: list[tuple[Any, str, str]] = []

    def active(self) -> list[Any]:
        return self.calls

    def find(self, callID: str) -> list[Any]:
        return [call for call in self.calls if getattr(call, "callID", None) == callID]

    def endedElsewhere(self, call: Any, cause: str, detail: str) -> None:
        self.ended.append((call, cause, detail))
        self.calls.remove(call)

    def lookForCallsRingingElsewhere(self, lookup: Any) -> None:
        self.ringingElsewhere = lookup

    def probe(self, enabled: bool) -> None:
        self.probing.append(enabled)


class FakeOutbox:
    """What L{QuarterlyLogService} needs of an outbox."""

    class settings:
        fromAddress = FROM

    def __init__(self) -> None:
        self.passes = 0

    def sendDue(self) -> Any:
        from twisted.internet.defer import succeed

        self.passes += 1
        return succeed(None)


class Server:
    """One aetasip server of the cluster, as far as roles and shared work go."""

    def __init__(
        self, testCase: TestCase, url: str, name: str, clock: FakeClock, floating: str | None = "192.0.2.80"
    ) -> None:
        store = Store(url, clock=clock)
        store.open()
        self.store = AsyncStore(store)
        self.store.start()
        testCase.addCleanup(self.store.stop)
        self.location = LocationService(reactor, self.store)
        testCase.addCleanup(self.location.stop)
        self.calls = FakeCalls()
        self.quarterly = QuarterlyLogService(self.store, FakeOutbox(), name, Clock())
        self.quarterly.clock.advance(JUST_AFTER_Q1)
        self.address = [False]
        self.cluster = ClusterService(
            self.location, self.store, url, name, floating, 0.05, 60, self.calls, None, [self.quarterly], reactor
        )
        self.cluster.role.isLocal = lambda a: self.address[0]

    @inlineCallbacks
    def start(self) -> Any:
        yield self.location.start()
        self.cluster.startService()
        assert self.cluster.listener is not None
        yield waitFor(lambda: self.cluster.listener is not None and self.cluster.listener.listening)

    def stop(self) -> Any:
        if self.cluster.running:
            return self.cluster.stopService()
        return None


class SharedWorkTests(TestCase):
    """Two servers on one real PostgreSQL database."""

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.url = postgresqlURL(self)
        self.clock = FakeClock()
        admin = Store(self.url, clock=self.clock)
        admin.open()
        provision(admin, self.clock)
        admin.close()
        self.clock.now = JUST_AFTER_Q1
        self.a = Server(self, self.url, "a", self.clock)
        self.b = Server(self, self.url, "b", self.clock)
        yield self.a.start()
        yield self.b.start()
        self.addCleanup(self.a.stop)
        self.addCleanup(self.b.stop)

    def quarterlyMails(self) -> list[str]:
        store = Store(self.url)
        store.open()
        try:
            return [mail.purpose for mail in store.outbox()]
        finally:
            store.close()

    @inlineCallbacks
    def test_only_the_active_server_does_the_shared_work(self) -> Any:
        self.a.address[0] = True
        yield waitFor(lambda: self.a.cluster.holdsWork())
        self.assertEqual(self.a.calls.probing[-1], True)
        self.assertEqual(self.b.calls.probing[-1], False)
        self.assertFalse(self.b.cluster.holdsWork())
        # Taking the work, A made the log due; B, asked, does nothing.
        yield waitFor(lambda: self.quarterlyMails() == ["quarterly 4567 2026Q1"])
        self.assertEqual((yield self.b.quarterly.check()), [])

    @inlineCallbacks
    def test_a_log_due_at_a_switch_is_made_exactly_once(self) -> Any:
        # Neither holds the address when the quarter ends: nothing is made.
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.quarterlyMails(), [])
        self.a.address[0] = True
        yield waitFor(lambda: self.a.cluster.holdsWork())
        yield waitFor(lambda: self.quarterlyMails() != [])
        # A dies (its connection, and so its lock, goes); B gets the address.
        yield self.a.stop()
        self.b.address[0] = True
        took = yield waitFor(lambda: self.b.cluster.holdsWork())
        self.assertLess(took, 2.0)
        yield self.b.quarterly.check()
        self.assertEqual(self.quarterlyMails(), ["quarterly 4567 2026Q1"])

    @inlineCallbacks
    def test_the_work_moves_when_the_holder_loses_the_database(self) -> Any:
        self.a.address[0] = True
        yield waitFor(lambda: self.a.cluster.holdsWork())
        # Both think they hold the address (a split brain): the lock still
        # lets one work at a time.
        self.b.address[0] = True
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertFalse(self.b.cluster.holdsWork())
        # What A hears of its lock from now on (it may lose it and take it
        # back within one poll of waitFor).
        listener = self.a.cluster.listener
        heard: list[bool] = []
        changed = listener.lockChanged

        def recorded(held: bool) -> None:
            heard.append(held)
            changed(held)

        listener.lockChanged = recorded
        with server(self).connect() as admin:
            (killed,) = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' "
                f"AND objid = {WORK_LOCK & 0xFFFFFFFF} AND granted "
                # This test's database only: others (trial -j2) hold the same lock.
                "AND database = (SELECT oid FROM pg_database WHERE datname = %s)",
                (self.url.rsplit("/", 1)[1].split("?")[0],),
            ).fetchone()
        self.assertEqual(killed, 1)
        # A hears it lost the lock; then one of them (B, waiting for it, or
        # A, reconnected) holds it, never both.
        yield waitFor(lambda: False in heard, timeout=10)
        yield waitFor(lambda: self.a.cluster.holdsWork() + self.b.cluster.holdsWork() == 1, timeout=10)
        for _ in range(20):
            self.assertLessEqual(self.a.cluster.holdsWork() + self.b.cluster.holdsWork(), 1)
            yield deferLater(reactor, 0.05, lambda: None)

    @inlineCallbacks
    def test_the_lock_is_one_server_at_a_time(self) -> Any:
        held: dict[str, bool] = {}

        def listener(name: str) -> NotificationListener:
            made = NotificationListener(
                self.url,
                ["aetasip_nodes"],
                lambda c, p: None,
                lambda: None,
                lambda r: None,
                reactor,
                lockKey=WORK_LOCK + 1,
                lockChanged=lambda h: held.__setitem__(name, h),
            )
            made.start()
            self.addCleanup(made.stop)
            return made

        one, two = listener("one"), listener("two")
        one.wantLock(True)
        two.wantLock(True)
        yield waitFor(lambda: any(held.values()))
        yield deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(sorted(held.items()), [("one", True)] if held.get("one") else [("two", True)])
        holder, other = (one, two) if held.get("one") else (two, one)
        holder.wantLock(False)
        yield waitFor(lambda: other.lockHeld)
        self.assertFalse(holder.lockHeld)


class HealthTests(TestCase):
    """C{/health} of a server of a cluster, and of one draining."""

    timeout = 30

    @inlineCallbacks
    def test_role_and_drain_in_the_health_report(self) -> Any:
        url = postgresqlURL(self)
        clock = FakeClock(JUST_AFTER_Q1)
        node = Server(self, url, "a", clock)
        yield node.start()
        self.addCleanup(node.stop)

        class SIP:
            running = True
            ports = [object()]

            class ready:
                called = True

            def describePorts(self) -> list[str]:
                return ["udp:192.0.2.80:5060"]

        services = [node.cluster]
        status, body = yield healthReport(services, SIP(), node.store, reactor)
        self.assertEqual((status, body["role"], body["draining"], body["status"]), (200, "standby", False, "ok"))
        node.address[0] = True
        yield waitFor(lambda: node.cluster.role.active)
        node.calls.calls.append(object())
        status, body = yield healthReport(services, SIP(), node.store, reactor)
        self.assertEqual((status, body["role"], body["calls"]), (200, "active", 1))
        # The operator drains it: the store's flag, heard at once on PostgreSQL.
        yield node.store.requestDrain("a", True)
        yield waitFor(lambda: node.cluster.draining)
        status, body = yield healthReport(services, SIP(), node.store, reactor)
        self.assertEqual((status, body["status"], body["draining"]), (503, "draining", True))
        self.assertIn("draining on an operator's request (1 calls in progress)", body["down"])
        yield node.store.requestDrain("a", False)
        yield waitFor(lambda: not node.cluster.draining)
