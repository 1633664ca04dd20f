"""
The location service: bindings in memory, expiry, events to listeners, and
write-behind to the store (a real SQLite file in a thread, as in service).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.location import Binding, LocationService, RegistrationEvent
from aetasip.store import AsyncStore, Store
from tests.sipagent import Agent, Harness

NOW = 1_800_000_000.0


def binding(
    aor: str = "45675001",
    contact: str = "sip:45675001@192.168.1.10:5060",
    expires: float = 3600,
    now: float = NOW,
    **fields: Any,
) -> Binding:
    values: dict[str, Any] = {
        "callID": f"call-{aor}@test",
        "cseq": 1,
        "transport": "udp",
        "source": ("198.51.100.7", 40000),
        "local": ("0.0.0.0", 5060),
        "registeredAt": now,
    }
    values.update(fields)
    return Binding(aor=aor, contact=contact, expiresAt=now + expires, **values)


class Listener:
    def __init__(self) -> None:
        self.events: list[RegistrationEvent] = []

    def registrationEvent(self, event: RegistrationEvent) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]


class BrokenListener:
    def __init__(self) -> None:
        self.calls = 0

    def registrationEvent(self, event: RegistrationEvent) -> None:
        self.calls += 1
        raise ZeroDivisionError("listener bug")


class MemoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.location = LocationService(self.clock)
        self.listener = Listener()
        self.location.listeners.append(self.listener)
        self.location.start()
        self.addCleanup(self.location.stop)

    def test_added_binding_is_found_by_its_number(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.assertEqual(self.location.lookup("45675001"), [mine])
        self.assertEqual(self.location.lookup("45675002"), [])
        self.assertEqual(self.location.bindings(), [mine])
        self.assertEqual(len(self.location), 1)

    def test_a_number_may_have_several_contacts(self) -> None:
        first = binding(contact="sip:45675001@192.168.1.10:5060")
        second = binding(contact="sip:45675001@192.168.1.11:5060")
        other = binding(aor="45675002", contact="sip:45675002@192.168.1.12:5060")
        for each in (first, second, other):
            self.location.add(each)
        self.assertEqual(self.location.lookup("45675001"), [first, second])
        self.assertEqual(self.location.lookup("45675002"), [other])
        self.assertEqual(len(self.location), 3)

    def test_removed_binding_is_gone(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.location.remove(mine)
        self.assertEqual(self.location.lookup("45675001"), [])
        self.assertEqual(len(self.location), 0)

    def test_removing_an_unknown_binding_does_nothing(self) -> None:
        self.location.remove(binding())
        self.assertEqual(self.listener.events, [])

    def test_events_come_in_order_with_their_kind_time_and_binding(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.clock.advance(5)
        mine.expiresAt = self.clock.seconds() + 3600
        self.location.refresh(mine)
        self.clock.advance(5)
        self.location.remove(mine)
        self.assertEqual(self.listener.kinds, ["registered", "refreshed", "unregistered"])
        self.assertEqual([event.time for event in self.listener.events], [NOW, NOW + 5, NOW + 10])
        for event in self.listener.events:
            self.assertIs(event.binding, mine)
            self.assertIsNone(event.other)
            self.assertEqual(event.outcome, "")

    def test_remove_with_another_kind_reports_it(self) -> None:
        mine = binding()
        self.location.add(mine)
        self.location.remove(mine, "replaced")
        self.assertEqual(self.listener.kinds, ["registered", "replaced"])

    def test_emit_reports_conflicts(self) -> None:
        mine, theirs = binding(), binding(contact="sip:45675001@192.168.1.99:5060")
        self.location.emit("conflict", theirs, mine, "rejected")
        (event,) = self.listener.events
        self.assertEqual(
            (event.kind, event.binding, event.other, event.outcome), ("conflict", theirs, mine, "rejected")
        )

    def test_expired_binding_is_no_longer_found_even_before_the_sweep(self) -> None:
        self.location.add(binding(expires=10.5))
        self.clock.advance(10.5)
        self.assertEqual(self.location.lookup("45675001"), [])
        self.assertEqual(self.location.bindings(), [])

    def test_sweep_emits_expired_at_expiry(self) -> None:
        mine = binding(expires=10)
        self.location.add(mine)
        self.clock.pump([1] * 9)
        self.assertEqual(self.listener.kinds, ["registered"])
        self.assertEqual(len(self.location), 1)
        self.clock.advance(1)
        self.assertEqual(self.listener.kinds, ["registered", "expired"])
        self.assertEqual(self.listener.events[-1].time, NOW + 10)
        self.assertIs(self.listener.events[-1].binding, mine)
        self.assertEqual(len(self.location), 0)

    def test_sweep_runs_once_a_second(self) -> None:
        self.location.add(binding(expires=10.2))
        self.clock.pump([0.1] * 102)
        self.assertEqual(self.listener.kinds, ["registered"])
        self.clock.pump([0.1] * 8)
        self.assertEqual(self.listener.kinds, ["registered", "expired"])

    def test_sweep_expires_only_the_due_bindings(self) -> None:
        short = binding(contact="sip:45675001@192.168.1.10:5060", expires=10)
        long = binding(contact="sip:45675001@192.168.1.11:5060", expires=20)
        self.location.add(long)
        self.location.add(short)
        self.clock.pump([1] * 10)
        self.assertEqual(self.location.lookup("45675001"), [long])
        self.clock.pump([1] * 10)
        self.assertEqual(self.location.lookup("45675001"), [])
        self.assertEqual([event.binding for event in self.listener.events[2:]], [short, long])

    def test_refreshed_binding_is_not_expired_by_its_old_expiry(self) -> None:
        mine = binding(expires=10)
        self.location.add(mine)
        self.clock.pump([1] * 5)
        mine.expiresAt = self.clock.seconds() + 60
        self.location.refresh(mine)
        self.clock.pump([1] * 30)
        self.assertEqual(self.listener.kinds, ["registered", "refreshed"])
        self.assertEqual(self.location.lookup("45675001"), [mine])
        self.clock.pump([1] * 30)
        self.assertEqual(self.listener.kinds, ["registered", "refreshed", "expired"])
        self.assertEqual(self.listener.events[-1].time, NOW + 65)

    def test_binding_refreshed_to_a_shorter_expiry_expires_then(self) -> None:
        mine = binding(expires=3600)
        self.location.add(mine)
        mine.expiresAt = NOW + 30
        self.location.refresh(mine)
        self.clock.pump([1] * 30)
        self.assertEqual(self.listener.kinds, ["registered", "refreshed", "expired"])

    def test_removed_binding_is_not_expired_later(self) -> None:
        mine = binding(expires=10)
        self.location.add(mine)
        self.location.remove(mine)
        self.clock.pump([1] * 20)
        self.assertEqual(self.listener.kinds, ["registered", "unregistered"])

    def test_a_failing_listener_does_not_stop_the_others(self) -> None:
        broken, after = BrokenListener(), Listener()
        self.location.listeners[:] = [broken, after]
        mine = binding(expires=10)
        self.location.add(mine)
        self.location.refresh(mine)
        self.clock.pump([1] * 10)
        self.assertEqual(after.kinds, ["registered", "refreshed", "expired"])
        self.assertEqual(broken.calls, 3)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)
        self.assertEqual(len(self.location), 0)

    def test_stop_cancels_the_sweep(self) -> None:
        self.location.add(binding(expires=10))
        self.successResultOf(self.location.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ListenerInRegistrarTests(SynchronousTestCase):
    def test_a_failing_listener_does_not_stop_the_registrar(self) -> None:
        harness = Harness()
        broken = BrokenListener()
        harness.location.listeners.insert(0, broken)
        agent = Agent("45675001", "secret1")
        reply = harness.register(agent)
        self.assertEqual(reply.code, 200)
        self.assertEqual(len(harness.location.lookup("45675001")), 1)
        self.assertEqual([event.kind for event in harness.events], ["registered"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        harness.service.transactions.stop()
        self.successResultOf(harness.location.stop())


class SpyStore:
    """
    An L{AsyncStore} as the location service sees it: every write recorded
    and counted while under way; C{failNext} makes the next save fail at
    once, C{holdNext} keeps it pending until the test fires L{held}.
    """

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.saves: list[list[tuple[str, str]]] = []
        self.deletes: list[list[tuple[str, str]]] = []
        self.inFlight = 0
        self.failNext = False
        self.holdNext = False
        self.held: Deferred[None] | None = None

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        self.inFlight += 1

        def done(result: object) -> object:
            self.inFlight -= 1
            return result

        return d.addBoth(done)

    def saveBindings(self, toSave: Sequence[Binding], **origin: str) -> Deferred[None]:
        self.saves.append([(b.aor, b.contact) for b in toSave])
        if self.failNext:
            self.failNext = False
            return fail(RuntimeError("database is down"))
        if self.holdNext:
            self.holdNext = False
            self.held = Deferred()
            return self._track(self.held)
        return self._track(self.store.saveBindings(toSave, **origin))

    def deleteBindings(self, keys: Sequence[tuple[str, str]], **origin: str) -> Deferred[None]:
        self.deletes.append(list(keys))
        return self._track(self.store.deleteBindings(keys, **origin))

    def expireBindings(self, keys: Sequence[tuple[str, str, float]], **origin: str) -> Deferred[None]:
        self.deletes.append([(aor, contact) for aor, contact, _ in keys])
        return self._track(self.store.expireBindings(keys, **origin))

    def loadBindings(self, now: float) -> Deferred[list[Binding]]:
        return self.store.loadBindings(now)

    def expireOrphanBindings(self, live: Sequence[str], now: float, **origin: str) -> Deferred[list[Binding]]:
        return self.store.expireOrphanBindings(live, now, **origin)


class PersistenceTests(TestCase):
    """
    The location service on a L{Clock} and a real SQLite store in a thread.
    Writes start on the clock; L{rows} lets the reactor finish them.
    """

    # A write that never completes would hang stop() in the cleanups.
    timeout = 10

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        store = Store(f"sqlite:///{self.mktemp()}.db")
        store.open()
        self.asyncStore = AsyncStore(store)
        self.asyncStore.start()
        self.addCleanup(self.asyncStore.stop)
        self.spy = SpyStore(self.asyncStore)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.location = self.service()
        return self.location.start()

    def service(self) -> LocationService:
        location = LocationService(self.clock, self.spy, flushInterval=1.0)
        self.addCleanup(location.stop)
        return location

    @inlineCallbacks
    def rows(self) -> Any:
        """
        The stored bindings as C{(aor, contact, expiresAt)}, once the writes
        under way (and those queued behind them) are done.
        """
        while self.spy.inFlight:
            yield deferLater(reactor, 0.001, lambda: None)
        stored = yield self.asyncStore.allBindings()
        return [(b.aor, b.contact, b.expiresAt) for b in stored]

    @inlineCallbacks
    def test_changes_are_written_within_the_flush_interval(self) -> Any:
        mine = binding()
        self.location.add(mine)
        self.clock.advance(0.875)
        self.assertEqual(self.spy.saves, [])
        self.assertEqual((yield self.rows()), [])
        self.clock.advance(0.125)
        self.assertEqual(self.spy.saves, [[(mine.aor, mine.contact)]])
        self.assertEqual((yield self.rows()), [(mine.aor, mine.contact, mine.expiresAt)])

    @inlineCallbacks
    def test_every_field_is_written(self) -> Any:
        mine = binding(
            instance='"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"',
            regID=1,
            path=["<sip:edge.example.net;lr>"],
            userAgent="codec/2.1",
            q=0.7,
            transport="tls",
        )
        self.location.add(mine)
        self.clock.advance(1)
        yield self.rows()
        (stored,) = yield self.asyncStore.allBindings()
        fields = ["aor", "contact", "expiresAt", "callID", "cseq", "transport", "source", "local"]
        fields += ["instance", "regID", "path", "userAgent", "q", "registeredAt"]
        for name in fields:
            self.assertEqual(getattr(stored, name), getattr(mine, name), name)

    @inlineCallbacks
    def test_repeated_refreshes_are_written_once(self) -> Any:
        mine = binding()
        self.location.add(mine)
        for cseq in range(2, 7):
            self.clock.advance(0.125)
            mine.cseq = cseq
            mine.expiresAt = self.clock.seconds() + 3600
            self.location.refresh(mine)
        self.clock.advance(1 - 5 * 0.125)
        self.assertEqual(self.spy.saves, [[(mine.aor, mine.contact)]])
        yield self.rows()
        (stored,) = yield self.asyncStore.allBindings()
        self.assertEqual((stored.cseq, stored.expiresAt), (6, mine.expiresAt))

    @inlineCallbacks
    def test_a_refresh_from_a_new_nat_source_is_written(self) -> Any:
        """
        Fault 6 of the audit: a refresh from a new NAT source port was kept
        in memory only, and lost on restart, even a clean one.
        """
        harness = Harness(store=self.spy, clock=self.clock)
        agent = Agent("45675001", "secret1", source=("198.51.100.7", 40000), contact="sip:45675001@10.0.0.7:5060")
        self.assertEqual(harness.register(agent).code, 200)
        self.clock.advance(1)
        yield self.rows()
        # The NAT gave the codec a new port; the refresh follows soon after.
        self.clock.advance(30)
        agent.source = ("198.51.100.7", 40123)
        self.assertEqual(harness.register(agent).code, 200)
        yield harness.location.stop()
        yield self.rows()
        restarted = self.service()
        yield restarted.start()
        (restored,) = restarted.lookup("45675001")
        self.assertEqual(restored.source, ("198.51.100.7", 40123))

    @inlineCallbacks
    def test_a_new_service_restores_unexpired_bindings_and_announces_the_others(self) -> Any:
        kept = binding(contact="sip:45675001@192.168.1.10:5060", expires=3600, userAgent="codec/2.1")
        lapsed = binding(contact="sip:45675001@192.168.1.11:5060", expires=60)
        other = binding(aor="45675002", contact="sip:45675002@192.168.1.12:5060", expires=600)
        for each in (kept, lapsed, other):
            self.location.add(each)
        yield self.location.stop()
        self.clock.advance(120)
        restarted = self.service()
        listener = Listener()
        restarted.listeners.append(listener)
        yield restarted.start()
        self.assertEqual(
            [(b.contact, b.expiresAt, b.userAgent) for b in restarted.lookup("45675001")],
            [(kept.contact, kept.expiresAt, "codec/2.1")],
        )
        self.assertEqual([b.contact for b in restarted.lookup("45675002")], [other.contact])
        self.assertEqual(len(restarted), 2)
        # What lapsed while the service was down is announced, once: a
        # webhook receiver told 'registered' hears the end too.
        ((kind, contact, expiresAt),) = [(e.kind, e.binding.contact, e.binding.expiresAt) for e in listener.events]
        self.assertEqual((kind, contact, expiresAt), ("expired", lapsed.contact, lapsed.expiresAt))
        # The expired row is gone from the store too.
        self.assertEqual(sorted(row[1] for row in (yield self.rows())), sorted([kept.contact, other.contact]))
        # Started again: nothing more to announce.
        yield restarted.stop()
        again = self.service()
        listener = Listener()
        again.listeners.append(listener)
        yield again.start()
        self.assertEqual((len(again), listener.events), (2, []))

    @inlineCallbacks
    def test_restored_bindings_expire_on_time(self) -> Any:
        self.location.add(binding(expires=60))
        yield self.location.stop()
        restarted = self.service()
        listener = Listener()
        restarted.listeners.append(listener)
        yield restarted.start()
        self.clock.pump([1] * 60)
        self.assertEqual(listener.kinds, ["expired"])
        self.clock.advance(1)
        self.assertEqual((yield self.rows()), [])

    @inlineCallbacks
    def test_removed_binding_is_deleted_from_the_store(self) -> Any:
        mine = binding()
        self.location.add(mine)
        self.clock.advance(1)
        self.assertEqual(len((yield self.rows())), 1)
        self.location.remove(mine)
        self.clock.advance(1)
        self.assertEqual(self.spy.deletes, [[(mine.aor, mine.contact)]])
        self.assertEqual((yield self.rows()), [])

    @inlineCallbacks
    def test_expired_binding_is_deleted_from_the_store(self) -> Any:
        self.location.add(binding(expires=5))
        self.clock.advance(1)
        self.assertEqual(len((yield self.rows())), 1)
        self.clock.pump([1] * 6)
        self.assertEqual((yield self.rows()), [])

    @inlineCallbacks
    def test_binding_added_and_removed_before_a_flush_is_never_saved(self) -> Any:
        mine = binding()
        self.location.add(mine)
        self.location.remove(mine)
        self.clock.advance(1)
        self.assertEqual((yield self.rows()), [])
        self.assertEqual(self.spy.saves, [])

    @inlineCallbacks
    def test_stop_writes_pending_changes(self) -> Any:
        mine = binding()
        self.location.add(mine)
        yield self.location.stop()
        self.assertEqual(self.spy.saves, [[(mine.aor, mine.contact)]])
        self.assertEqual((yield self.rows()), [(mine.aor, mine.contact, mine.expiresAt)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_stop_waits_for_the_write_under_way(self) -> Any:
        mine = binding()
        self.spy.holdNext = True
        self.location.add(mine)
        self.clock.advance(1)
        other = binding(aor="45675002", contact="sip:45675002@192.168.1.12:5060")
        self.location.add(other)
        stopped = self.location.stop()
        self.assertNoResult(stopped)
        assert self.spy.held is not None
        self.spy.held.callback(None)
        yield stopped
        self.assertEqual(self.spy.saves, [[(mine.aor, mine.contact)], [(other.aor, other.contact)]])

    @inlineCallbacks
    def test_failed_write_keeps_the_bindings_and_retries(self) -> Any:
        mine = binding()
        self.spy.failNext = True
        self.location.add(mine)
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.location.lookup(mine.aor), [mine])
        self.assertEqual((yield self.rows()), [])
        self.clock.advance(1)
        self.assertEqual((yield self.rows()), [(mine.aor, mine.contact, mine.expiresAt)])
        self.assertEqual(len(self.spy.saves), 2)

    @inlineCallbacks
    def test_failed_write_is_retried_at_stop(self) -> Any:
        mine = binding()
        self.spy.failNext = True
        self.location.add(mine)
        self.clock.advance(1)
        self.flushLoggedErrors(RuntimeError)
        yield self.location.stop()
        self.assertEqual((yield self.rows()), [(mine.aor, mine.contact, mine.expiresAt)])

    @inlineCallbacks
    def test_failed_write_retries_the_deletions_too(self) -> Any:
        mine = binding()
        self.location.add(mine)
        self.clock.advance(1)
        yield self.rows()
        self.location.remove(mine)
        self.location.add(binding(aor="45675002", contact="sip:45675002@192.168.1.12:5060"))
        self.spy.failNext = True
        self.clock.advance(1)
        yield self.rows()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(1)
        self.assertEqual([row[0] for row in (yield self.rows())], ["45675002"])
        self.assertEqual(len(self.spy.deletes), 2)

    @inlineCallbacks
    def test_binding_removed_during_a_failed_write_stays_deleted(self) -> Any:
        mine = binding()
        self.spy.holdNext = True
        self.location.add(mine)
        self.clock.advance(1)
        assert self.spy.held is not None
        self.location.remove(mine)
        self.spy.held.errback(RuntimeError("database is down"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(1)
        self.assertEqual((yield self.rows()), [])
        self.assertEqual(self.spy.saves, [[(mine.aor, mine.contact)]])

    @inlineCallbacks
    def test_changes_during_a_write_are_written_after_it(self) -> Any:
        first = binding()
        self.spy.holdNext = True
        self.location.add(first)
        self.clock.advance(1)
        second = binding(aor="45675002", contact="sip:45675002@192.168.1.12:5060")
        self.location.add(second)
        self.clock.advance(1)
        # One write at a time: the second waits for the first.
        self.assertEqual(len(self.spy.saves), 1)
        assert self.spy.held is not None
        self.spy.held.callback(None)
        self.assertEqual(self.spy.saves, [[(first.aor, first.contact)], [(second.aor, second.contact)]])
        self.assertEqual([row[0] for row in (yield self.rows())], ["45675002"])

    @inlineCallbacks
    def test_refresh_with_a_new_contact_replaces_the_row(self) -> Any:
        mine = binding(contact="sip:45675001@192.168.1.10:5060")
        self.location.add(mine)
        self.clock.advance(1)
        yield self.rows()
        self.location.refresh(mine, contact="sip:45675001@192.168.1.20:5062")
        self.clock.advance(1)
        self.assertEqual(self.spy.deletes, [[(mine.aor, "sip:45675001@192.168.1.10:5060")]])
        self.assertEqual((yield self.rows()), [(mine.aor, "sip:45675001@192.168.1.20:5062", mine.expiresAt)])

    @inlineCallbacks
    def test_new_contact_before_the_first_write_is_saved_once(self) -> Any:
        mine = binding(contact="sip:45675001@192.168.1.10:5060")
        self.location.add(mine)
        self.location.refresh(mine, contact="sip:45675001@192.168.1.20:5062")
        self.clock.advance(1)
        self.assertEqual([row[1] for row in (yield self.rows())], ["sip:45675001@192.168.1.20:5062"])
        self.assertEqual(self.spy.saves, [[(mine.aor, "sip:45675001@192.168.1.20:5062")]])

    @inlineCallbacks
    def test_binding_that_moved_then_unregistered_is_deleted(self) -> Any:
        mine = binding(contact="sip:45675001@192.168.1.10:5060")
        self.location.add(mine)
        self.clock.advance(1)
        yield self.rows()
        self.location.refresh(mine, contact="sip:45675001@192.168.1.20:5062")
        self.location.remove(mine)
        self.clock.advance(1)
        self.assertEqual((yield self.rows()), [])

    @inlineCallbacks
    def test_binding_that_moved_then_unregistered_before_a_write_is_never_written(self) -> Any:
        mine = binding(contact="sip:45675001@192.168.1.10:5060")
        self.location.add(mine)
        self.location.refresh(mine, contact="sip:45675001@192.168.1.20:5062")
        self.location.remove(mine)
        self.clock.advance(1)
        self.assertEqual((yield self.rows()), [])
        self.assertEqual(self.spy.saves, [])


class RefreshWriteTests(TestCase):
    """
    A refresh is written only when the stored expiry no longer covers half
    of the new interval: an agent re-registering in a loop is no write storm,
    and a restart still never expires a binding before its next refresh.
    """

    timeout = 10
    setUp = PersistenceTests.setUp
    service = PersistenceTests.service
    rows = PersistenceTests.rows

    @inlineCallbacks
    def test_quick_refreshes_are_not_written_again(self) -> Any:
        mine = binding(expires=3600)
        self.location.add(mine)
        self.clock.advance(1)
        yield self.rows()
        for _ in range(10):
            self.clock.advance(1)
            mine.expiresAt = self.clock.seconds() + 3600
            self.location.refresh(mine)
        self.clock.advance(1)
        self.assertEqual(len(self.spy.saves), 1)

    @inlineCallbacks
    def test_refresh_late_in_the_interval_is_written(self) -> Any:
        mine = binding(expires=600)
        self.location.add(mine)
        self.clock.advance(1)
        yield self.rows()
        self.clock.advance(400)
        mine.expiresAt = self.clock.seconds() + 600
        self.location.refresh(mine)
        self.clock.advance(1)
        self.assertEqual(len(self.spy.saves), 2)
        self.assertEqual((yield self.rows()), [(mine.aor, mine.contact, mine.expiresAt)])
