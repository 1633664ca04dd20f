"""
L{CDRService}: a record per call attempt made from the L{Call} at each
of its events, field by field (relay statistics included); written in
order, in batches, never blocking a call; a sink outage queues them
(bounded, counted) and they are written when it returns; the calls left
open by a dead process are closed before anything is written; the
heartbeat. On a L{Clock}, with a sink the test controls.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from aetasip.calls.call import Call, CallObservers, EndCause, Leg
from aetasip.interfaces import ICallObserver, ICallRecordSink
from aetasip.records.cdr import BATCH, FIRST_RETRY, LAST_RETRY, WRITE_DELAY, CDRService
from aetasip.records.record import CallRecord, recordOf
from aetasip.records.sink import StoreRecordSink
from aetasip.relay.stats import LegStats, RelayStats, StreamStats


@implementer(ICallRecordSink)
class Sink:
    """A sink that keeps what it is given; C{down} makes it fail, C{hold} keeps writes waiting."""

    def __init__(self) -> None:
        self.records: dict[str, CallRecord] = {}
        self.writes: list[list[CallRecord]] = []
        self.operations: list[str] = []
        self.down = False
        self.hold = False
        self.held: list[Deferred[None]] = []
        self.closed: list[CallRecord] = []

    def recover(self, server: str, now: float) -> Deferred[list[CallRecord]]:
        self.operations.append(f"recover {server} {now}")
        if self.down:
            return fail(ConnectionError("store down"))
        return succeed(self.closed)

    def write(self, records: list[CallRecord], server: str, now: float) -> Deferred[None]:
        self.operations.append(f"write {len(records)} {now}")
        if self.down:
            return fail(ConnectionError("store down"))
        self.writes.append(list(records))
        for record in records:
            self.records[record.id] = record
        if self.hold:
            d: Deferred[None] = Deferred()
            self.held.append(d)
            return d
        return succeed(None)

    def heartbeat(self, server: str, now: float) -> Deferred[None]:
        self.operations.append(f"heartbeat {now}")
        if self.down:
            return fail(ConnectionError("store down"))
        return succeed(None)


def aCall(clock: Clock, observers: CallObservers, n: int = 1) -> Call:
    return Call(
        clock.seconds,
        f"call-{n}@codec",
        f"from-{n}",
        "45675001",
        "premium",
        "sip.example.net",
        Leg(("127.0.0.1", 5062), "udp", ("127.0.0.1", 5060)),
        "5002",
        observers,
    )


class CDRTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_775_000_000.0)
        self.sink = Sink()
        self.cdr = CDRService(self.sink, "main", self.clock, heartbeatInterval=10, queueLimit=5, writeDelay=0)
        self.observers = CallObservers([self.cdr])
        self.cdr.startService()
        self.clock.advance(0)
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.cdr.running:
            self.cdr.stopService()

    def test_interfaces(self) -> None:
        verifyObject(ICallObserver, self.cdr)
        verifyObject(ICallRecordSink, self.sink)
        verifyObject(ICallRecordSink, StoreRecordSink(object()))

    def answeredCall(self) -> Call:
        call = aCall(self.clock, self.observers)
        call.start()
        call.resolve("45675002")
        target = call.addTarget("45675002", Leg(("127.0.0.1", 5064), "udp", ("127.0.0.1", 5060)))
        self.clock.advance(0.25)
        call.ringing()
        self.clock.advance(2.0)
        call.answered(target, "callee-tag")
        return call

    def test_an_answered_call_field_by_field(self) -> None:
        """
        The record written when the call starts is open; when it ends it
        has every field of the call, times to the millisecond.
        """
        self.clock.advance(0)
        call = aCall(self.clock, self.observers)
        started = self.clock.seconds()
        call.start()
        self.clock.advance(0)
        (first,) = self.sink.records.values()
        self.assertTrue(first.open)
        self.assertEqual((first.caller, first.dialled, first.startedAt), ("45675001", "5002", started))
        call.resolve("45675002")
        target = call.addTarget("45675002", Leg(("127.0.0.1", 5064), "tcp", ("127.0.0.1", 5060)))
        self.clock.advance(0.2504)
        call.ringing()
        self.clock.advance(1.5)
        call.answered(target, "callee-tag")
        self.clock.advance(60.1234)
        call.end(EndCause.CALLER_BYE)
        self.clock.advance(0)
        (record,) = self.sink.records.values()
        self.assertEqual(record.id, first.id)
        expected = CallRecord(
            id=first.id,
            server="main",
            callID="call-1@codec",
            callerTag="from-1",
            calleeTag="callee-tag",
            caller="45675001",
            callerKind="premium",
            domain="sip.example.net",
            source=("127.0.0.1", 5062),
            transport="udp",
            dialled="5002",
            resolved=("45675002",),
            callee="45675002",
            calleeSource=("127.0.0.1", 5064),
            calleeTransport="tcp",
            startedAt=round(started, 3),
            ringingAt=round(started + 0.2504, 3),
            answeredAt=round(started + 1.7504, 3),
            endedAt=round(started + 61.8738, 3),
            duration=60.123,
            status=200,
            endCause="caller BYE",
            endDetail="",
            recovered=False,
            relayNode=None,
            media=None,
        )
        self.assertEqual(record, expected)

    def test_relay_statistics(self) -> None:
        """The relay's node and figures, kept on the call by the media handler, are in the record."""
        call = self.answeredCall()
        # As aetasip.relay.handler keeps it.
        call.media["relay"] = {"node": "relay-a", "legs": {}, "relayed": {"1": True}}
        call.media["relay"]["stats"] = RelayStats(
            "relay-a",
            caller=LegStats(("127.0.0.1", 6000), StreamStats(500, 80000, 3, 1.25, 93.1, 4.4, 1.0)),
            callee=LegStats(("127.0.0.1", 6002), StreamStats(498, 79680, 0, 0.5, None, None, None), dropped=7),
        )
        call.end(EndCause.CALLEE_BYE)
        record = recordOf(call, "r", "main")
        self.assertEqual(record.relayNode, "relay-a")
        assert record.media is not None
        self.assertEqual(record.media["caller"]["received"]["packets"], 500)
        self.assertEqual(record.media["caller"]["received"]["mos"], 4.4)
        self.assertEqual(record.media["caller"]["latched"], ["127.0.0.1", 6000])
        self.assertEqual(record.media["callee"]["dropped"], 7)
        self.assertNotIn("node", record.media)

    def test_relayed_without_statistics(self) -> None:
        """A relayed call whose node gave no statistics still names its node; a direct call names none."""
        call = self.answeredCall()
        call.media["relay"] = {"node": "relay-a", "legs": {}, "relayed": {"1": True}}
        call.end(EndCause.CALLEE_BYE)
        record = recordOf(call, "r", "main")
        self.assertEqual((record.relayNode, record.media), ("relay-a", None))
        call.media["relay"]["relayed"] = {"1": False}
        self.assertEqual(recordOf(call, "r", "main").relayNode, None)

    def test_unanswered_calls_are_records(self) -> None:
        """A missed call (no answer, 480) is a record with the number that was tried."""
        call = aCall(self.clock, self.observers)
        call.start()
        call.resolve("45675002")
        call.addTarget("45675002", Leg(("127.0.0.1", 5064), "udp", ("127.0.0.1", 5060)))
        self.clock.advance(30)
        call.end(EndCause.NO_ANSWER, 480)
        self.clock.advance(0)
        (record,) = self.sink.records.values()
        self.assertEqual((record.callee, record.status, record.endCause), ("45675002", 480, "no answer"))
        self.assertIsNone(record.answeredAt)
        self.assertEqual(record.duration, 0.0)

    def test_a_ringing_call_is_written_with_the_numbers_it_rings(self) -> None:
        """
        What another server of a cluster needs should this one fail while
        the call rings (its caller's CANCEL then reaches that server,
        which CANCELs the numbers the call rang): written when it rings.
        """
        call = aCall(self.clock, self.observers)
        call.start()
        self.clock.advance(0)
        (started,) = self.sink.records.values()
        self.assertEqual(started.resolved, ())
        call.resolve("45675003")
        call.ringing()
        self.clock.advance(0)
        (ringing,) = self.sink.records.values()
        self.assertEqual((ringing.id, ringing.resolved, ringing.endCause), (started.id, ("45675003",), None))
        self.assertIsNotNone(ringing.ringingAt)

    def test_a_call_ended_elsewhere_leaves_its_record_to_that_server(self) -> None:
        """
        Its BYE went to another server after a switch, which amends the
        record; written here too it could come first, and make that one a
        second record: the record stays as it was last written here (open).
        """
        call = self.answeredCall()
        self.clock.advance(0)
        call.endedElsewhere = True
        call.end(EndCause.CALLEE_BYE, detail="ended at sip2 after a switch")
        self.clock.advance(0)
        (record,) = self.sink.records.values()
        self.assertTrue(record.open)
        self.assertIsNotNone(record.answeredAt)
        self.assertEqual(self.cdr._recordIDs, {})

    def test_the_calls_left_open_are_closed_before_any_write(self) -> None:
        """Recovery is the sink's first operation; then the heartbeat runs."""
        self.assertEqual(self.sink.operations[0], f"recover main {self.clock.seconds()}")
        self.clock.advance(10)
        self.assertEqual(self.sink.operations[-1], f"heartbeat {self.clock.seconds()}")

    def test_versions_waiting_are_replaced_by_the_newest(self) -> None:
        """
        While a write is under way, a call's new versions replace each
        other in the queue: the next write has only the last.
        """
        self.sink.hold = True
        call = self.answeredCall()  # started (written, held), answered (waits)
        call.end(EndCause.CALLER_BYE)  # replaces the answered version
        self.clock.advance(0)
        self.assertEqual(len(self.sink.writes), 1)
        self.sink.hold = False
        self.sink.held.pop().callback(None)
        self.clock.advance(0)
        self.assertEqual(len(self.sink.writes), 2)
        (last,) = self.sink.writes[1]
        self.assertEqual(last.endCause, "caller BYE")
        self.assertEqual(self.cdr.pending, {})

    def test_a_short_call_is_one_write(self) -> None:
        """
        Records gather for L{WRITE_DELAY} before a write: a call that
        starts, is answered and ends meanwhile is written once, as ended.
        """
        cdr = CDRService(self.sink, "main", self.clock)
        cdr.startService()
        self.addCleanup(cdr.stopService)
        self.clock.advance(0)
        self.sink.writes.clear()
        call = aCall(self.clock, CallObservers([cdr]))
        call.start()
        target = call.addTarget("45675002", Leg(("127.0.0.1", 5064), "udp", ("127.0.0.1", 5060)))
        self.clock.advance(0.2)
        call.answered(target, "t")
        self.clock.advance(0.2)
        call.end(EndCause.CALLER_BYE)
        self.assertEqual(self.sink.writes, [])
        self.clock.advance(WRITE_DELAY)
        ((record,),) = self.sink.writes
        self.assertEqual((record.endCause, record.duration), ("caller BYE", 0.2))

    def test_batches(self) -> None:
        """Records are written in order, at most L{BATCH} per write."""
        self.cdr.queueLimit = 2 * BATCH
        self.sink.hold = True
        calls = [aCall(self.clock, self.observers, n) for n in range(BATCH + 11)]
        for call in calls:
            call.start()
        self.clock.advance(0)
        self.sink.hold = False
        self.sink.held.pop().callback(None)
        self.clock.advance(0)
        self.assertEqual([len(w) for w in self.sink.writes], [BATCH, 11])
        written = [record.callID for write in self.sink.writes for record in write]
        self.assertEqual(written, [call.callID for call in calls])

    def test_an_outage_queues_records_and_writes_them_when_the_store_returns(self) -> None:
        """
        The sink fails: records wait, attempts are spaced from
        L{FIRST_RETRY} doubling to L{LAST_RETRY}; the queue is bounded
        (5 here): the sixth call is dropped and counted. When the sink
        returns every waiting record is written, in order, at once.
        """
        self.sink.down = True
        calls = [aCall(self.clock, self.observers, n) for n in range(6)]
        for call in calls[:3]:
            call.start()
        self.clock.advance(0)
        writes = [op for op in self.sink.operations if op.startswith("write")]
        self.assertEqual(len(writes), 1)
        self.assertEqual(self.cdr.failures, 1)
        for call in calls[3:]:
            call.start()
        self.assertEqual(len(self.cdr.pending), 5)
        self.assertEqual(self.cdr.dropped, 1)
        # Ending a call whose record waits replaces it: nothing more is dropped.
        calls[0].end(EndCause.CANCELLED, 487)
        self.assertEqual(self.cdr.dropped, 1)

        delays = []
        last = self.clock.seconds()
        while len(delays) < 8:
            before = len(self.sink.operations)
            self.clock.advance(min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds())
            if len(self.sink.operations) > before:
                delays.append(round(self.clock.seconds() - last, 3))
                last = self.clock.seconds()
        self.assertEqual(delays[:7], [FIRST_RETRY, 1.0, 2.0, 4.0, 8.0, 16.0, LAST_RETRY])
        self.sink.down = False
        self.clock.advance(LAST_RETRY)
        self.assertEqual(self.cdr.pending, {})
        written = [record.callID for write in self.sink.writes for record in write]
        self.assertEqual(written, [call.callID for call in calls[:5]])
        self.assertEqual(self.sink.records[next(iter(self.sink.records))].endCause, "cancelled")
        self.assertEqual(self.cdr.written, 5)
        # The outage is logged once.
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_recovery_is_retried_before_anything_is_written(self) -> None:
        """A store down at start: recovery is tried again; records wait for it."""
        sink = Sink()
        sink.down = True
        cdr = CDRService(sink, "main", self.clock, writeDelay=0)
        cdr.startService()
        self.addCleanup(cdr.stopService)
        aCall(self.clock, CallObservers([cdr])).start()
        self.clock.advance(0)
        self.clock.advance(FIRST_RETRY)
        self.assertEqual([op.split()[0] for op in sink.operations], ["recover", "recover"])
        sink.down = False
        self.clock.advance(1.0)
        self.assertEqual([op.split()[0] for op in sink.operations], ["recover", "recover", "recover", "write"])
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_stop_writes_what_waits(self) -> None:
        """The ends of the calls stopped with the service are written when it stops."""
        call = self.answeredCall()
        self.clock.advance(0)
        call.end(EndCause.SERVER_SHUTDOWN)
        self.assertEqual(len(self.cdr.pending), 1)
        d = self.cdr.stopService()
        self.successResultOf(d)
        (record,) = self.sink.records.values()
        self.assertEqual(record.endCause, "server shutdown")
        self.assertEqual(self.cdr.pending, {})

    def test_a_failing_sink_never_disturbs_the_call(self) -> None:
        """A sink that raises: the call goes on and ends; the record waits."""

        class Raising(Sink):
            def write(self, records: list[CallRecord], server: str, now: float) -> Any:
                raise RuntimeError("broken")

        cdr = CDRService(Raising(), "main", self.clock, writeDelay=0)
        cdr.startService()
        call = aCall(self.clock, CallObservers([cdr]))
        call.start()
        self.clock.advance(0)
        call.end(EndCause.CALLER_BYE)
        self.assertTrue(call.ended)
        self.assertEqual(len(cdr.pending), 1)
        self.assertEqual(cdr.failures, 1)
        # Stopping tries once more; the record stays open for the next start to close.
        self.successResultOf(cdr.stopService())
        self.assertEqual(len(cdr.pending), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class RefusedRecordTests(SynchronousTestCase):
    """A record the store refuses (while it answers) is dropped alone, after a few tries; the others are written."""

    def test_a_refused_record_does_not_hold_the_others(self) -> None:
        class Refusing(Sink):
            def write(self, records: list[CallRecord], server: str, now: float) -> Deferred[None]:
                if any(record.callID == "call-3@codec" for record in records):
                    self.operations.append(f"refused {len(records)}")
                    return fail(ValueError("value too long"))
                return super().write(records, server, now)

        clock = Clock()
        sink = Refusing()
        cdr = CDRService(sink, "main", clock, writeDelay=0)
        cdr.startService()
        observers = CallObservers([cdr])
        for n in range(1, 9):
            aCall(clock, observers, n).start()
        for _ in range(200):
            clock.advance(LAST_RETRY)
            if not cdr.pending:
                break
        self.assertEqual(cdr.pending, {})
        self.assertEqual(
            sorted(r.callID for r in sink.records.values()), [f"call-{n}@codec" for n in range(1, 9) if n != 3]
        )
        self.assertEqual((cdr.refused, cdr.dropped), (1, 0))
        # Each refusal after a good write is logged; the last one with the record dropped.
        self.assertGreaterEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.successResultOf(cdr.stopService())
