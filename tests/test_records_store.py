"""
Call records in the store (L{aetasip.store.callrecords}), on SQLite here
and on PostgreSQL in L{tests.test_records_postgresql}: records written
again as a call moves on, the calls a dead server left open closed at its
last heartbeat, a call that went on after a restart amending its record,
and the queries of C{aetasip-admin cdr}, the quarterly logs, the portal
and the admin API, with quarter boundaries at fixed dates.
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from aetasip.records.periods import Quarter, parseTime
from aetasip.records.record import UNKNOWN_END, CallRecord
from aetasip.store import Store
from aetasip.store.callrecords import RecordQuery
from tests.test_store import SQLiteURLs

# 31 March 2026, 23:00 UTC: one hour before the end of 2026Q1.
LATE_MARCH = parseTime("2026-03-31T23:00:00Z")


def aRecord(recordID: str, started: float, **fields: object) -> CallRecord:
    base = CallRecord(
        id=recordID,
        server="main",
        callID=f"call-{recordID}@codec",
        callerTag=f"tag-{recordID}",
        caller="45675001",
        callerKind="premium",
        domain="sip.example.net",
        source=("127.0.0.1", 5062),
        transport="udp",
        dialled="45675002",
        startedAt=started,
    )
    return attrs.evolve(base, **fields)  # type: ignore[arg-type]


def answered(recordID: str, started: float, answer: float, end: float, **fields: object) -> CallRecord:
    return aRecord(
        recordID,
        started,
        **{
            "resolved": ("45675002",),
            "callee": "45675002",
            "calleeSource": ("127.0.0.1", 5064),
            "calleeTransport": "udp",
            "calleeTag": "callee-tag",
            "ringingAt": started + 0.5,
            "answeredAt": answer,
            "endedAt": end,
            "duration": round(end - answer, 3),
            "status": 200,
            "endCause": "caller BYE",
            **fields,
        },
    )


class CallRecordStoreTests(SQLiteURLs, SynchronousTestCase):
    """Writing, recovering and reading call records."""

    def setUp(self) -> None:
        self.store: Store = self.openStore()

    def test_a_record_is_written_again_as_the_call_moves_on(self) -> None:
        """
        The record of a call written at its start, then at its answer and
        its end, by its id: one row, as it was last written, every field
        kept (times to the millisecond, media statistics as data).
        """
        opened = aRecord("a1", 1000.123)
        self.store.writeCallRecords([opened], "main", 1000.2)
        self.assertEqual(self.store.callRecords(), [opened])
        media = {"caller": {"received": {"packets": 12, "lost": 1, "jitter": 2.5, "mos": 4.3}}}
        ended = answered("a1", 1000.123, 1002.456, 1062.789, relayNode="relay-1", media=media, endDetail="x")
        self.store.writeCallRecords([ended], "main", 1063.0)
        (found,) = self.store.callRecords()
        self.assertEqual(found, ended)
        self.assertEqual(found.duration, 60.333)

    def test_open_calls_of_a_dead_server_are_closed_at_its_last_heartbeat(self) -> None:
        """
        The server wrote two calls (one answered, one ringing) and noted
        it was alive at 1100, then died. When it starts again, both are
        closed with "unknown end" at 1100; a call of another server and an
        ended call are left alone.
        """
        up = aRecord("up", 1000.0, answeredAt=1001.0, status=200, callee="45675002")
        ringing = aRecord("ringing", 1090.0, ringingAt=1090.5)
        other = aRecord("other", 1000.0, server="backup")
        done = answered("done", 1000.0, 1001.0, 1010.0)
        self.store.writeCallRecords([up, ringing, other, done], "main", 1050.0)
        self.store.writeCallRecords([other], "backup", 1050.0)
        self.store.recordHeartbeat("main", 1100.0)

        closed = self.store.closeOpenCallRecords("main", 5000.0)
        self.assertEqual({record.id for record in closed}, {"up", "ringing"})
        records = {record.id: record for record in self.store.callRecords()}
        self.assertEqual(records["up"].endedAt, 1100.0)
        self.assertEqual(records["up"].endCause, UNKNOWN_END)
        self.assertEqual(records["up"].duration, 99.0)
        self.assertEqual(records["up"].status, 200)
        self.assertEqual(records["ringing"].endedAt, 1100.0)
        self.assertEqual(records["ringing"].duration, 0.0)
        # What the caller got in the end is unknown: no status is made up.
        self.assertEqual(records["ringing"].status, 0)
        self.assertIsNone(records["other"].endCause)
        self.assertEqual(records["done"], done)
        # Nothing more to close; the new heartbeat starts at the start.
        self.assertEqual(self.store.closeOpenCallRecords("main", 5001.0), [])

    def test_a_call_written_after_the_last_heartbeat_ends_at_its_own_time(self) -> None:
        """A call answered after the last heartbeat ends when it was last known: at its answer."""
        self.store.recordHeartbeat("main", 1000.0)
        self.store.writeCallRecords([aRecord("late", 1004.0, answeredAt=1005.0, status=200)], "main", 1000.0)
        (closed,) = self.store.closeOpenCallRecords("main", 2000.0)
        self.assertEqual((closed.endedAt, closed.duration), (1005.0, 0.0))

    def test_a_call_that_went_on_after_a_restart_amends_its_record(self) -> None:
        """
        A call closed by a shutdown (or a crash) went on through its
        signed Route; when the rebuilt call ends its end amends the first
        record (end, duration, cause) and no second record is made.
        """
        first = answered("first", 1000.0, 1001.0, 1100.0, endCause="server shutdown")
        self.store.writeCallRecords([first], "main", 1100.0)
        rebuilt = aRecord(
            "rebuilt",
            1105.0,
            callID=first.callID,
            callerTag=first.callerTag,
            recovered=True,
            answeredAt=1105.0,
            status=200,
            callee="45675002",
            calleeTag="t2",
        )
        self.store.writeCallRecords([rebuilt], "main", 1105.0)
        self.assertEqual([record.id for record in self.store.callRecords()], ["first"])
        self.store.writeCallRecords(
            [attrs.evolve(rebuilt, endedAt=1500.0, duration=395.0, endCause="callee BYE")], "main", 1500.0
        )
        (found,) = self.store.callRecords()
        self.assertEqual(
            (found.id, found.endedAt, found.duration, found.endCause), ("first", 1500.0, 499.0, "callee BYE")
        )
        self.assertIn("restart", found.endDetail)

    def test_a_hostile_call_is_recorded_and_does_not_block_the_batch(self) -> None:
        """
        What a caller or callee sent (a 300-digit dialled number, NUL, a
        reason phrase of 10,000 characters) is cut to fit the columns:
        PostgreSQL would refuse the whole batch otherwise.
        """
        from twisted.internet.task import Clock

        from aetasip.calls.call import CallObservers, EndCause
        from aetasip.records.record import recordOf
        from tests.test_records_cdr import aCall

        clock = Clock()
        clock.advance(1000)
        call = aCall(clock, CallObservers())
        call.dialled = "1" * 300 + "\x00"
        call.callID = "x\x00" * 3000
        call.resolve("2" * 100)
        call.end(EndCause.REJECTED, 486, "=HYPERLINK(" + "A" * 10_000)
        hostile = recordOf(call, "hostile", "main")
        self.store.writeCallRecords([hostile, aRecord("fine", 1000.0)], "main", 1001.0)
        found = {record.id: record for record in self.store.callRecords()}
        self.assertEqual(set(found), {"hostile", "fine"})
        self.assertEqual(found["hostile"].dialled, "1" * 64)
        self.assertEqual(found["hostile"].callID, "x" * 500)
        self.assertEqual(found["hostile"].resolved, ("2" * 64,))
        self.assertEqual(len(found["hostile"].endDetail), 2000)

    def test_a_call_taken_over_by_a_backup_server_amends_the_open_record(self) -> None:
        """
        The main server died with the call open; the backup rebuilt it and
        it ended there: the open record is amended (and so not closed
        later as "unknown end" when the main server starts again).
        """
        first = aRecord("first", 1000.0, answeredAt=1001.0, status=200, callee="45675002")
        self.store.writeCallRecords([first], "main", 1001.0)
        rebuilt = answered(
            "rebuilt", 1200.0, 1200.0, 1500.0, callID=first.callID, callerTag=first.callerTag, recovered=True,
            server="backup", endCause="callee BYE",
        )  # fmt: skip
        self.store.writeCallRecords([rebuilt], "backup", 1500.0)
        (found,) = self.store.callRecords()
        self.assertEqual(
            (found.id, found.endCause, found.endedAt, found.duration), ("first", "callee BYE", 1500.0, 499.0)
        )
        self.assertEqual(self.store.closeOpenCallRecords("main", 2000.0), [])
        # A record left open by the server itself is its own to close at start, not amended.
        mine = aRecord("mine", 3000.0, server="backup", callID="c2", callerTag="t2")
        self.store.writeCallRecords([mine], "backup", 3000.0)
        again = answered("again", 3100.0, 3100.0, 3200.0, callID="c2", callerTag="t2", recovered=True, server="backup")
        self.store.writeCallRecords([again], "backup", 3200.0)
        self.assertEqual({r.id for r in self.store.callRecords()}, {"first", "mine", "again"})

    def test_a_dead_servers_open_calls_end_with_failover_once(self) -> None:
        """
        The server that took over from a dead one closes the records it
        left open, with the end cause 'failover' at its last announcement
        (never before a call's own answer); a second attempt (another
        server, or the same again) closes nothing.
        """
        talking = aRecord("talking", 1000.0, answeredAt=1001.0, status=200, callee="45675002", server="sip-a")
        late = aRecord("late", 1000.0, answeredAt=1208.0, status=200, callee="45675002", server="sip-a")
        done = answered("done", 900.0, 901.0, 950.0, server="sip-a")
        other = aRecord("other", 1000.0, server="sip-b", callID="c-b", callerTag="t-b")
        self.store.writeCallRecords([talking, late, done], "sip-a", 1001.0)
        self.store.writeCallRecords([other], "sip-b", 1001.0)
        closed = self.store.closeFailedOverCallRecords("sip-a", 1205.0, "sip-b")
        self.assertEqual(sorted((r.id, r.endCause, r.endedAt, r.duration) for r in closed), [
            ("late", "failover", 1208.0, 0.0), ("talking", "failover", 1205.0, 204.0),
        ])  # fmt: skip
        self.assertIn("sip-b took over", closed[0].endDetail)
        self.assertEqual(self.store.closeFailedOverCallRecords("sip-a", 1205.0, "sip-c"), [])
        found = {r.id: r for r in self.store.callRecords()}
        self.assertEqual(found["talking"].endCause, "failover")
        self.assertEqual((found["done"].endCause, found["other"].endCause), ("caller BYE", None))
        # Nothing left open for the dead server's own restart to close.
        self.assertEqual(self.store.closeOpenCallRecords("sip-a", 2000.0), [])

    def test_a_bye_reaching_the_survivor_amends_a_failover_record(self) -> None:
        talking = aRecord("talking", 1000.0, answeredAt=1001.0, status=200, callee="45675002", server="sip-a")
        self.store.writeCallRecords([talking], "sip-a", 1001.0)
        self.store.closeFailedOverCallRecords("sip-a", 1100.0, "sip-b")
        rebuilt = answered(
            "rebuilt", 1300.0, 1300.0, 1400.0, callID=talking.callID, callerTag=talking.callerTag, recovered=True,
            server="sip-b", endCause="callee BYE",
        )  # fmt: skip
        self.store.writeCallRecords([rebuilt], "sip-b", 1400.0)
        (found,) = self.store.callRecords()
        self.assertEqual(
            (found.id, found.endCause, found.endedAt, found.duration), ("talking", "callee BYE", 1400.0, 399.0)
        )
        self.assertIn("went on at sip-b after sip-a failed", found.endDetail)

    def test_a_closed_record_is_not_written_over(self) -> None:
        """
        A record another server closed (the call's BYE reached it, or it
        took over from a server it thought dead) stays as it closed it
        when its own server writes it later (say 'server shutdown').
        """
        talking = aRecord("talking", 1000.0, answeredAt=1001.0, status=200, callee="45675002", server="sip-a")
        self.store.writeCallRecords([talking], "sip-a", 1001.0)
        rebuilt = answered(
            "rebuilt", 1300.0, 1300.0, 1400.0, callID=talking.callID, callerTag=talking.callerTag, recovered=True,
            server="sip-b",
        )  # fmt: skip
        self.store.writeCallRecords([rebuilt], "sip-b", 1400.0)
        self.assertEqual(
            self.store.closedCallRecords("sip-a", [(talking.callID, talking.callerTag), ("x", "y")]),
            {(talking.callID, talking.callerTag)},
        )
        shutdown = answered("talking", 1000.0, 1001.0, 1500.0, server="sip-a", endCause="server shutdown")
        self.store.writeCallRecords([shutdown], "sip-a", 1500.0)
        (found,) = self.store.callRecords()
        self.assertEqual((found.endCause, found.endedAt), ("caller BYE", 1400.0))

    def test_a_call_another_server_ended_first_is_recorded_once(self) -> None:
        """
        During a drain, the drained server's Timer C ends a ringing call
        ("no answer", the caller got its 408) before the callee's refusal
        reaches the survivor, which rebuilt the call: the call keeps its
        one record, as the server that ended it first closed it.
        """
        ringing = aRecord("ringing", 1000.0, ringingAt=1000.5, status=180, server="sip-a")
        self.store.writeCallRecords([ringing], "sip-a", 1001.0)
        timedOut = attrs.evolve(ringing, endedAt=1181.0, status=408, endCause="no answer")
        self.store.writeCallRecords([timedOut], "sip-a", 1181.0)
        refused = aRecord(
            "refused", 1182.0, callID=ringing.callID, callerTag=ringing.callerTag, recovered=True, server="sip-b",
            endedAt=1182.0, status=486, endCause="rejected",
        )  # fmt: skip
        self.store.writeCallRecords([refused], "sip-b", 1182.0)
        (found,) = self.store.callRecords()
        self.assertEqual((found.id, found.endCause, found.status, found.endedAt), ("ringing", "no answer", 408, 1181.0))
        # Another call rebuilt there, whose record no server closed, is recorded as before.
        other = attrs.evolve(refused, id="other", callID="c-other")
        self.store.writeCallRecords([other], "sip-b", 1183.0)
        self.assertEqual({r.id for r in self.store.callRecords()}, {"ringing", "other"})

    def test_a_rebuilt_call_with_no_earlier_record_is_recorded(self) -> None:
        rebuilt = answered("rebuilt", 1105.0, 1105.0, 1200.0, recovered=True)
        self.store.writeCallRecords([rebuilt], "main", 1200.0)
        self.assertEqual(self.store.callRecords(), [rebuilt])


class RecordQueryTests(SQLiteURLs, SynchronousTestCase):
    """
    The queries on call records, with fixed dates around the end of
    2026Q1 (31 March, midnight UTC).
    """

    def setUp(self) -> None:
        self.store: Store = self.openStore()
        self.store.addGroup("4567", "tech@example.net", quarterlyLog=True)
        self.store.allocate("4567", 2, realm="aetasip")  # 45675001, 45675002
        hour = 3600.0
        self.records = [
            # In Q1, answered, inside the group.
            answered("q1", LATE_MARCH - 10 * hour, LATE_MARCH - 10 * hour + 3, LATE_MARCH - 9 * hour),
            # Spans midnight of 31 March: answered in Q1, ended in Q2.
            answered("span", LATE_MARCH + 0.5 * hour, LATE_MARCH + 0.5 * hour + 2, LATE_MARCH + 2 * hour),
            # In Q2, from outside the group to a member.
            answered("q2", LATE_MARCH + 5 * hour, LATE_MARCH + 5 * hour + 1, LATE_MARCH + 6 * hour, caller="33330001"),
            # Unanswered (a missed call) in Q1, to the second member.
            aRecord(
                "missed",
                LATE_MARCH + 0.1 * hour,
                endedAt=LATE_MARCH + 0.1 * hour + 30,
                status=480,
                endCause="no answer",
                callee="45675002",
                resolved=("45675002",),
            ),
            # Nothing to do with the group.
            answered("stranger", LATE_MARCH, LATE_MARCH + 1, LATE_MARCH + 2, caller="33330001", dialled="33330002",
                     callee="33330002", resolved=("33330002",)),
        ]  # fmt: skip
        self.store.writeCallRecords(self.records, "main", LATE_MARCH)

    def ids(self, **query: object) -> list[str]:
        return [record.id for record in self.store.callRecords(RecordQuery(**query))]  # type: ignore[arg-type]

    def test_all_records_oldest_first(self) -> None:
        self.assertEqual(self.ids(), ["q1", "stranger", "missed", "span", "q2"])

    def test_by_number(self) -> None:
        self.assertEqual(self.ids(number="33330001"), ["stranger", "q2"])
        self.assertEqual(self.ids(number="45675002"), ["q1", "missed", "span", "q2"])
        self.assertEqual(self.ids(number="99"), [])
        self.assertEqual(self.ids(caller="45675001"), ["q1", "missed", "span"])
        self.assertEqual(self.ids(caller="45675002"), [])

    def test_by_group(self) -> None:
        self.assertEqual(self.ids(group="4567"), ["q1", "missed", "span", "q2"])
        self.assertEqual(self.ids(group="9999"), [])

    def test_answered_only(self) -> None:
        self.assertEqual(self.ids(group="4567", answeredOnly=True), ["q1", "span", "q2"])

    def test_a_call_spanning_the_quarter_boundary_is_in_both_quarters(self) -> None:
        q1, q2 = Quarter(2026, 1), Quarter(2026, 2)
        self.assertEqual(Quarter.parse("2026Q1").end, q2.start)
        self.assertEqual(self.ids(group="4567", answeredOnly=True, start=q1.start, end=q1.end), ["q1", "span"])
        self.assertEqual(self.ids(group="4567", answeredOnly=True, start=q2.start, end=q2.end), ["span", "q2"])
        self.assertEqual(self.ids(group="4567", start=q1.start, end=q1.end), ["q1", "missed", "span"])
        q4 = Quarter(2025, 4)
        self.assertEqual(self.ids(start=q4.start, end=q4.end), [])

    def test_from_and_to(self) -> None:
        self.assertEqual(self.ids(start=LATE_MARCH + 4 * 3600), ["q2"])
        self.assertEqual(self.ids(end=LATE_MARCH), ["q1"])
        self.assertEqual(self.ids(limit=2), ["q1", "stranger"])

    def test_made_or_missed_newest_first_paged(self) -> None:
        # 45675002 made none; "missed" was routed to it and not answered; q1, span and q2 it answered.
        self.assertEqual(self.ids(madeOrMissed="45675002"), ["missed"])
        self.assertEqual(self.ids(madeOrMissed="45675001"), ["q1", "missed", "span"])
        self.assertEqual(self.ids(madeOrMissed="45675001", newestFirst=True), ["span", "missed", "q1"])
        self.assertEqual(self.ids(madeOrMissed="45675001", newestFirst=True, limit=2), ["span", "missed"])
        self.assertEqual(self.ids(madeOrMissed="45675001", newestFirst=True, offset=2, limit=2), ["q1"])
        self.assertEqual(self.ids(madeOrMissed="33330002"), [])
