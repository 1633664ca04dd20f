"""
What a server of a cluster does when another one dies, on a real
PostgreSQL: the active server closes the dead one's open call records
with the end cause 'failover' at its last announcement, and announces the
expiry of the bindings it had registered, once; a standby (drained) server
stops counting the calls whose records another server closed.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from aetasip import __version__
from aetasip.cluster.service import SILENT_INTERVALS, ClusterService
from aetasip.location import LocationService
from aetasip.store import AsyncStore, Store
from aetasip.store.nodes import NodeState
from tests.postgres import postgresqlURL
from tests.test_cluster_admin import run
from tests.test_cluster_location import waitFor
from tests.test_location import Listener, binding
from tests.test_records_store import answered, aRecord


@attrs.define
class FakeCall:
    callID: str
    callerTag: str


class FakeCalls:
    """The L{aetasip.interfaces.ICallControl} calls the cluster service makes."""

    def __init__(self) -> None:
        self.calls: list[FakeCall] = []

    def active(self) -> list[FakeCall]:
        return list(self.calls)

    def lookForCallsRingingElsewhere(self, lookup: Any) -> None:
        self.ringingElsewhere = lookup

    def probe(self, enabled: bool) -> None:
        pass


class TakeoverTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.url = postgresqlURL(self)
        self.sync = Store(self.url)
        self.sync.open()
        self.addCleanup(self.sync.close)

    def server(self, name: str, address: str | None = None, calls: Any = None) -> ClusterService:
        opened = Store(self.url)
        opened.open()
        store = AsyncStore(opened)
        store.start()
        self.addCleanup(store.stop)
        location = LocationService(reactor, store, flushInterval=0.05)
        self.addCleanup(location.stop)
        # Started by the tests that need it, after the service gave it its origin.
        service = ClusterService(
            location, store, self.url, name, address=address, announceInterval=1.0, calls=calls, reactor=reactor
        )
        return service

    def dead(self, name: str, origin: str, silentFor: float, recordsServer: str = "", interval: float = 0.0) -> None:
        """A server that announced itself C{silentFor} seconds ago (every C{interval} s), then died."""
        now = reactor.seconds()
        self.sync.announceNode(
            NodeState(
                name=name, origin=origin, role="active", address="", version=__version__, startedAt=now - 600,
                lastSeen=now - silentFor, calls=1, holdsWork=True, draining=False, recordsServer=recordsServer,
                announceInterval=interval,
            )
        )  # fmt: skip

    @inlineCallbacks
    def test_each_server_is_judged_by_its_own_interval(self) -> Any:
        """
        The survivor announces every second; a server announcing every 30 s
        silent for 10 s is alive, one announcing every 0.5 s silent for 2 s
        is dead, and one that did not say (an earlier version) is judged by
        the survivor's interval.
        """
        now = reactor.seconds()
        for name in ("slow", "fast", "old"):
            record = aRecord(name, now - 100, answeredAt=now - 99, status=200, server=f"rec-{name}")
            self.sync.writeCallRecords([record], f"rec-{name}", now - 99)
        self.dead("slow", "5" * 16, silentFor=10, recordsServer="rec-slow", interval=30)
        self.dead("fast", "f" * 16, silentFor=2, recordsServer="rec-fast", interval=0.5)
        self.dead("old", "0" * 16, silentFor=5, recordsServer="rec-old")
        survivor = self.server("sip-b")
        yield survivor.lookAtPeers()
        causes = {r.id: r.endCause for r in self.sync.callRecords()}
        self.assertEqual(causes, {"slow": None, "fast": "failover", "old": "failover"})
        self.assertEqual(survivor.liveOrigins, {survivor.announcer.origin, "5" * 16})
        # Its own interval is in its announcement.
        yield survivor.announcer.announce()
        self.assertEqual(self.sync.getNode("sip-b").announceInterval, 1.0)  # type: ignore[union-attr]
        # node status says the same (its configuration's interval, 5 s, for the one that did not say).
        self.dead("slow", "5" * 16, silentFor=20, interval=30)
        self.dead("fast", "f" * 16, silentFor=20, interval=1)
        self.dead("old", "0" * 16, silentFor=20)
        code, out, _ = run("--store", self.url, "node", "status")
        roles = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
        self.assertEqual(code, 0)
        self.assertEqual(roles["slow"][0], "active")
        self.assertEqual(roles["fast"][:2], ["active?", "(silent)"])
        self.assertEqual(roles["old"][:2], ["active?", "(silent)"])

    @inlineCallbacks
    def test_the_active_server_closes_a_dead_servers_calls_with_failover(self) -> Any:
        now = reactor.seconds()
        talking = aRecord("talking", now - 100, answeredAt=now - 99, status=200, callee="45675002", server="rec-a")
        self.sync.writeCallRecords([talking], "rec-a", now - 99)
        self.dead("sip-a", "a" * 16, silentFor=SILENT_INTERVALS * 1.0 + 2, recordsServer="rec-a")
        survivor = self.server("sip-b")
        yield survivor.lookAtPeers()
        (found,) = self.sync.callRecords()
        self.assertEqual(found.endCause, "failover")
        # At its last announcement (made a few ms after "now").
        self.assertLess(abs(found.endedAt - (now - SILENT_INTERVALS - 2)), 0.5)
        # Looked at again: nothing is closed twice.
        yield survivor.lookAtPeers()
        self.assertEqual(len(survivor.takenOver), 1)

    @inlineCallbacks
    def test_a_live_or_standby_view_closes_nothing(self) -> Any:
        now = reactor.seconds()
        self.sync.writeCallRecords([aRecord("alive", now - 10, server="sip-a")], "sip-a", now - 10)
        self.dead("sip-a", "a" * 16, silentFor=1.0)
        yield self.server("sip-b").lookAtPeers()
        self.dead("sip-a", "a" * 16, silentFor=60.0)
        # A standby (the address is elsewhere) leaves it to the active server.
        yield self.server("sip-c", address="203.0.113.10").lookAtPeers()
        (found,) = self.sync.callRecords()
        self.assertIsNone(found.endCause)

    @inlineCallbacks
    def test_a_dead_servers_binding_expiry_is_announced_once(self) -> Any:
        self.dead("sip-a", "deadbeef" * 2, silentFor=60.0)
        self.sync.saveBindings([binding(now=reactor.seconds(), expires=1.5)], origin="deadbeef" * 2)
        servers = [self.server("sip-b"), self.server("sip-c")]
        listeners = []
        for server in servers:
            listener = Listener()
            server.sync.location.listeners.append(listener)  # type: ignore[union-attr]
            listeners.append(listener)
            yield server.sync.location.start()  # type: ignore[union-attr]
            yield server.lookAtPeers()
            [found] = server.sync.location.lookup("45675001")  # type: ignore[union-attr]
            self.assertTrue(found.remote)
        # Both are active (no floating address): one deletes the row first, the other finds nothing.
        yield waitFor(lambda: self.sync.allBindings() == [] and sum(len(x.kinds) for x in listeners) == 1, timeout=5)
        self.assertEqual(sorted(k for x in listeners for k in x.kinds), ["expired"])

    @inlineCallbacks
    def test_a_dead_servers_binding_that_expired_unseen_is_announced_once(self) -> Any:
        """Expired before any server looked (say all were down): found at the next look, announced once."""
        self.dead("sip-a", "deadbeef" * 2, silentFor=60.0)
        self.sync.saveBindings([binding(now=reactor.seconds(), expires=-5)], origin="deadbeef" * 2)
        self.sync.saveBindings([binding(aor="45675002", now=reactor.seconds(), expires=-5)], origin="")
        servers = [self.server("sip-b"), self.server("sip-c")]
        listeners = []
        for server in servers:
            listener = Listener()
            server.location.listeners.append(listener)
            listeners.append(listener)
        yield gatherResults([server.lookAtPeers() for server in servers])
        self.assertEqual(self.sync.allBindings(), [])
        events = sorted(e.binding.aor for x in listeners for e in x.events)
        self.assertEqual(events, ["45675001", "45675002"])

    @inlineCallbacks
    def test_a_live_servers_binding_expires_silently_elsewhere(self) -> Any:
        self.dead("sip-a", "cafe" * 4, silentFor=0.0)
        self.sync.saveBindings([binding(now=reactor.seconds(), expires=1.5)], origin="cafe" * 4)
        survivor = self.server("sip-b")
        listener = Listener()
        survivor.sync.location.listeners.append(listener)  # type: ignore[union-attr]
        yield survivor.sync.location.start()  # type: ignore[union-attr]
        yield survivor.lookAtPeers()
        yield waitFor(lambda: survivor.sync.location.lookup("45675001") == [], timeout=4)  # type: ignore[union-attr]
        self.assertEqual(listener.kinds, [])
        self.assertEqual(len(self.sync.allBindings()), 1)

    @inlineCallbacks
    def test_a_drained_server_stops_counting_calls_ended_elsewhere(self) -> Any:
        now = reactor.seconds()
        calls = FakeCalls()
        gone, staying = FakeCall("gone@x", "t1"), FakeCall("staying@x", "t2")
        calls.calls = [gone, staying]
        for call in calls.calls:
            self.sync.writeCallRecords(
                [aRecord(call.callID, now - 50, callID=call.callID, callerTag=call.callerTag, server="sip-a")],
                "sip-a",
                now - 50,
            )
        drained = self.server("sip-a", address="203.0.113.10", calls=calls)
        self.assertEqual(drained.callsInProgress(), 2)
        # The BYE of one reached the active server, which rebuilt the call and ended it.
        rebuilt = answered(
            "rebuilt", now - 5, now - 5, now, callID=gone.callID, callerTag=gone.callerTag, recovered=True,
            server="sip-b",
        )  # fmt: skip
        self.sync.writeCallRecords([rebuilt], "sip-b", now)
        yield drained.lookAtPeers()
        self.assertEqual(drained.callsInProgress(), 1)

    @inlineCallbacks
    def test_a_cancel_of_a_call_that_rang_on_a_dead_server(self) -> Any:
        """
        The CANCEL reaching the survivor is answered from the record the
        dead server left (from the caller's address, unanswered), which
        its rebuilt end then amends: 'cancelled'.
        """
        now = reactor.seconds()
        ringing = aRecord("ringing", now - 20, ringingAt=now - 19, status=180, server="rec-a")
        talking = aRecord("talking", now - 30, answeredAt=now - 29, status=200, server="rec-a")
        self.sync.writeCallRecords([ringing, talking], "rec-a", now - 19)
        self.dead("sip-a", "a" * 16, silentFor=SILENT_INTERVALS * 1.0 + 2, recordsServer="rec-a")
        calls = FakeCalls()
        survivor = self.server("sip-b", calls=calls)
        lookup = calls.ringingElsewhere
        source = ringing.source
        # The numbers it rang (its callee's phone gets a CANCEL): none
        # resolved in its record, the number dialled.
        self.assertEqual(ringing.resolved, ())
        self.assertEqual((yield lookup(ringing.callID, ringing.callerTag, source)), (ringing.dialled,))
        # Closed as 'failover' by the takeover: still a call that rang there.
        yield survivor.lookAtPeers()
        self.assertEqual(
            {r.id: r.endCause for r in self.sync.callRecords()}, {"ringing": "failover", "talking": "failover"}
        )
        self.assertTrue((yield lookup(ringing.callID, ringing.callerTag, source)))
        # Not from another address, not an answered call, not another tag.
        self.assertFalse((yield lookup(ringing.callID, ringing.callerTag, (source[0], source[1] + 1))))
        self.assertFalse((yield lookup(talking.callID, talking.callerTag, source)))
        self.assertFalse((yield lookup(ringing.callID, "other", source)))
        # Nor a call of its own records.
        self.assertFalse((yield self.server("rec-a", calls=FakeCalls()).store.ringingElsewhere(
            ringing.callID, ringing.callerTag, source, "rec-a"
        )))  # fmt: skip
        cancelled = aRecord(
            "rebuilt", now, callID=ringing.callID, callerTag=ringing.callerTag, recovered=True, server="sip-b",
            endedAt=now, endCause="cancelled", status=487, endDetail="the caller cancelled while the callee rang",
        )  # fmt: skip
        self.sync.writeCallRecords([cancelled], "sip-b", now)
        found = {r.id: r for r in self.sync.callRecords()}
        self.assertEqual(sorted(found), ["ringing", "talking"])
        self.assertEqual((found["ringing"].endCause, found["ringing"].status), ("cancelled", 487))
        self.assertIn("went on at sip-b after rec-a failed", found["ringing"].endDetail)
        self.assertFalse((yield lookup(ringing.callID, ringing.callerTag, source)))
        # A call resolved to other numbers (a hunt, a short number): those.
        resolved = aRecord("resolved", now - 20, ringingAt=now - 19, status=180, server="rec-a", resolved=("1", "2"))
        self.sync.writeCallRecords([resolved], "rec-a", now - 19)
        self.assertEqual((yield lookup(resolved.callID, resolved.callerTag, resolved.source)), ("1", "2"))

    @inlineCallbacks
    def test_a_single_server_restarted_announces_what_lapsed_while_it_was_down(self) -> Any:
        """
        No floating address, one server (always active): the rows of its
        earlier run (another origin) that expired while it was down are
        deleted and announced 'expired' at its first look, once, as on
        SQLite at start; those still valid stay, announced when they lapse.
        """
        now = reactor.seconds()
        self.sync.announceNode(
            NodeState(
                name="sip-a", origin="e" * 16, role="stopped", address="", version=__version__, startedAt=now - 900,
                lastSeen=now - 300, calls=0, holdsWork=True, draining=False,
            )
        )  # fmt: skip
        self.sync.saveBindings([binding(now=now, expires=-60)], origin="e" * 16)
        self.sync.saveBindings([binding(aor="45675002", now=now, expires=600)], origin="e" * 16)
        restarted = self.server("sip-a")
        listener = Listener()
        restarted.location.listeners.append(listener)
        yield restarted.sync.location.start()  # type: ignore[union-attr]
        yield restarted.lookAtPeers()
        yield restarted.lookAtPeers()
        self.assertEqual([(e.kind, e.binding.aor) for e in listener.events], [("expired", "45675001")])
        self.assertEqual([b.aor for b in self.sync.allBindings()], ["45675002"])
        self.assertEqual([b.aor for b in restarted.location.lookup("45675002")], ["45675002"])
