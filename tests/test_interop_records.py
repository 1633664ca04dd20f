"""
Call records of real calls: sipp agents call through the running service
(its default observers: the records are on) and the records in the store
are checked field by field — answered, busy, cancelled, unanswered (a
missed call, a hunt nobody answers), hunting, rejected by blocking, and a
dead call; then the crash case: a C{twistd} process killed with SIGKILL
in the middle of a call, whose record the next start closes ("unknown
end", at the last heartbeat).
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any, ClassVar

from twisted.internet.defer import Deferred

from aetasip.records.record import UNKNOWN_END, CallRecord
from aetasip.store import Store
from aetasip.store.callrecords import RecordQuery
from tests.servers import RunningService, TwistdProcess, deferLater, freePort, requireTool, startTwistd, twistdConfig
from tests.sipp import Sipp, SippRun, address, authentication, injectionFile
from tests.test_interop_calls import within
from tests.test_interop_routing import RoutingTestCase

SERVER = "records-test"


def sourcePort(run: SippRun) -> int:
    """The port the caller sent its INVITE from (its Via)."""
    invite = run.sent("INVITE")[0]
    found = re.search(r"SIP/2.0/UDP 127\.0\.0\.1:(\d+)", invite.headers("Via")[0])
    assert found is not None, invite.text
    return int(found.group(1))


class RecordsTestCase(RoutingTestCase):
    """
    Group 4567 with hunting (45675001-5003, series 45676001-6003) and
    group 4599 with incoming calls blocked (45995005); hunting members
    ring 2 s each; calls are probed every second.
    """

    settings: ClassVar[dict[str, Any]] = {
        "routing__hunting_ring_time": 2,
        "calls__probe_interval": 1,
        "records__server": SERVER,
        "records__heartbeat_interval": 1,
    }

    def provision(self) -> None:
        self.admin("group", "add", "4567", "--contact", "tech@studio.example", "--hunting")
        printed = self.admin("group", "allocate", "4567", "--count", "3")
        self.passwords.update(re.findall(r"^(\d{8})\s+(\S+)$", printed, re.MULTILINE))
        self.admin("group", "add", "4599", "--contact", "tech@other.example", "--incoming-block")
        self.account("45995005", group="4599")

    def setUp(self) -> Any:
        self.started = time.time()
        return super().setUp()

    def store(self) -> Store:
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        return store

    async def record(self, **query: Any) -> CallRecord:
        """The one closed record C{query} selects, once it is written."""
        store = self.store()
        found: list[CallRecord] = []

        def closed() -> bool:
            found[:] = store.callRecords(RecordQuery(**query))
            return len(found) == 1 and not found[0].open

        await within(10, closed, f"no closed record for {query}")
        return found[0]

    def assertCommon(self, record: CallRecord, caller: str, dialled: str, run: SippRun | None = None) -> None:
        """The fields of every record of a call from C{caller} over UDP on the first port."""
        now = time.time()
        self.assertEqual(record.server, SERVER)
        self.assertEqual((record.caller, record.callerKind, record.dialled), (caller, "premium", dialled))
        self.assertEqual((record.domain, record.transport), ("127.0.0.1", "udp"))
        self.assertEqual(record.source[0], "127.0.0.1")
        if run is not None:
            self.assertEqual(record.source[1], sourcePort(run))
            invite = run.sent("INVITE")[0]
            self.assertEqual(record.callID, invite.headers("Call-ID")[0])
            self.assertEqual(record.callerTag, invite.headers("From")[0].split("tag=")[1])
        self.assertFalse(record.recovered)
        self.assertIsNone(record.relayNode)
        self.assertIsNone(record.media)
        assert record.endedAt is not None
        self.assertTrue(self.started <= record.startedAt <= record.endedAt <= now, (self.started, record, now))
        for moment in (record.ringingAt, record.answeredAt):
            if moment is not None:
                self.assertTrue(record.startedAt <= moment <= record.endedAt, record)
        # Millisecond precision.
        self.assertEqual(record.startedAt, round(record.startedAt, 3))

    def assertUnanswered(self, record: CallRecord, status: int, cause: str) -> None:
        self.assertEqual((record.status, record.endCause), (status, cause))
        self.assertIsNone(record.answeredAt)
        self.assertIsNone(record.calleeTag)
        self.assertEqual(record.duration, 0.0)


class RecordsOfCallsTests(RecordsTestCase):
    async def test_answered(self) -> None:
        callee = await self.callee("45675002")
        run = await self.call("45675001", "45675002")
        await self.assertAnswered(run, callee)
        record = await self.record(number="45675001")
        self.assertCommon(record, "45675001", "45675002", run)
        self.assertEqual((record.status, record.endCause, record.endDetail), (200, "caller BYE", ""))
        self.assertEqual((record.resolved, record.callee), (("45675002",), "45675002"))
        self.assertEqual((record.calleeSource, record.calleeTransport), (("127.0.0.1", callee.port), "udp"))
        ok = next(m for m in run.received() if m.isResponse(200, "INVITE"))
        self.assertEqual(record.calleeTag, ok.headers("To")[0].split("tag=")[1])
        assert record.answeredAt is not None and record.endedAt is not None and record.ringingAt is not None
        self.assertLessEqual(record.ringingAt, record.answeredAt)
        self.assertAlmostEqual(record.duration, record.endedAt - record.answeredAt, places=2)
        # call_uac.xml hangs up 0.1 s after its ACK.
        self.assertLess(record.duration, 2)

    async def test_busy(self) -> None:
        callee = await self.callee("45675002", "call_uas_busy.xml")
        run = await self.call("45675001", "45675002", "call_uac_busy.xml")
        self.assertEqual(run.code, 0, run.detail)
        await callee.done
        record = await self.record(number="45675001")
        self.assertCommon(record, "45675001", "45675002", run)
        self.assertUnanswered(record, 486, "rejected")
        self.assertEqual((record.callee, record.calleeSource), ("45675002", ("127.0.0.1", callee.port)))

    async def test_cancelled(self) -> None:
        callee = await self.callee("45675002", "call_uas_ring_cancelled.xml")
        run = await self.call("45675001", "45675002", "call_uac_cancel.xml")
        self.assertEqual(run.code, 0, run.detail)
        await callee.done
        record = await self.record(number="45675001")
        self.assertCommon(record, "45675001", "45675002", run)
        self.assertUnanswered(record, 487, "cancelled")
        self.assertIsNotNone(record.ringingAt)

    async def test_missed_call_to_a_number_not_registered(self) -> None:
        """The callee is not there: a record all the same, so that it sees who tried to reach it."""
        run = await self.call("45675001", "45675003", "call_uac_refused.xml")
        self.assertEqual(run.code, 0, run.detail)
        record = await self.record(number="45675003")
        self.assertCommon(record, "45675001", "45675003", run)
        self.assertUnanswered(record, 480, "rejected")
        self.assertEqual((record.resolved, record.callee, record.calleeSource), (("45675003",), "45675003", None))

    async def test_hunt_nobody_answers(self) -> None:
        """The only registered member rings 2 s and is cancelled: no answer."""
        callee = await self.callee("45676002", "call_uas_ring_cancelled.xml")
        run = await self.call("45675001", "45676000", "call_uac_refused.xml")
        self.assertEqual(run.code, 0, run.detail)
        await callee.done
        record = await self.record(number="45675001")
        self.assertCommon(record, "45675001", "45676000", run)
        self.assertEqual(record.endCause, "no answer")
        self.assertEqual(record.status, int(run.finalResponse().split()[1]))
        self.assertIsNone(record.answeredAt)
        self.assertEqual(record.callee, "45676002")
        assert record.endedAt is not None
        self.assertGreaterEqual(record.endedAt - record.startedAt, 2)

    async def test_hunting(self) -> None:
        """45676001 busy, 45676002 absent, 45676003 answers: the record names the member that answered."""
        busy = await self.callee("45676001", "call_uas_busy.xml")
        answering = await self.callee("45676003")
        run = await self.call("45675001", "45676000")
        await self.assertAnswered(run, answering)
        await busy.done
        record = await self.record(number="45675001")
        self.assertCommon(record, "45675001", "45676000", run)
        self.assertEqual((record.status, record.endCause), (200, "caller BYE"))
        self.assertEqual(record.callee, "45676003")
        self.assertEqual(record.resolved[-1], "45676003")
        self.assertIn("45676001", record.resolved)
        self.assertEqual(record.calleeSource, ("127.0.0.1", answering.port))
        # Also found by the dialled hunting number, and by the group.
        self.assertEqual((await self.record(number="45676000")).id, record.id)
        self.assertEqual([r.id for r in self.store().callRecords(RecordQuery(group="4567"))], [record.id])

    async def test_rejected_by_blocking(self) -> None:
        await self.registered("45995005")
        run = await self.call("45675001", "45995005", "call_uac_refused.xml")
        self.assertEqual(run.finalResponse(), "SIP/2.0 403 Incoming calls blocked for this group")
        record = await self.record(number="45995005")
        self.assertCommon(record, "45675001", "45995005", run)
        self.assertUnanswered(record, 403, "rejected")
        self.assertEqual(record.endDetail, "Incoming calls blocked for this group")
        self.assertIsNone(record.calleeSource)

    async def test_dead_call(self) -> None:
        """The callee vanishes mid-call (SIGKILL): the probes find it dead; the record says so."""
        port = freePort()
        registered = await self.sipp.register("45675002", self.passwords["45675002"], self.server.ports[0], port=port)
        self.assertEqual(registered.code, 0, registered.detail)
        callee = self.sipp.start(
            "callee-dead", "calls_uas_answer_wait_hang_up.xml", "-d", "60000", port=port, timeout=60, messages=True
        )
        self.addCleanup(lambda: (callee.kill(), callee.done)[1])
        await deferLater(0.5)
        inf = injectionFile(
            self.sipp.directory,
            "caller-dead",
            [("45675001", authentication("45675001", self.passwords["45675001"]), "45675002")],
        )
        caller = self.sipp.start(
            "caller-dead",
            "calls_uac_wait_bye.xml",
            remote=address("127.0.0.1", self.server.ports[0]),
            inf=inf,
            timeout=30,
            messages=True,
        )
        self.addCleanup(lambda: (caller.kill(), caller.done)[1])
        store = self.store()
        await within(15, lambda: any(r.answered for r in store.callRecords()), "the call was not answered")
        await deferLater(0.5)
        callee.kill()
        killedAt = time.time()
        run = await caller.done
        self.assertEqual(run.code, 0, run.detail)
        record = await self.record(number="45675001")
        self.assertCommon(record, "45675001", "45675002", run)
        self.assertEqual((record.status, record.endCause), (200, "dead dialog"))
        self.assertIn("callee", record.endDetail)
        assert record.endedAt is not None and record.answeredAt is not None
        self.assertTrue(killedAt < record.endedAt < killedAt + 5, (killedAt, record.endedAt))
        self.assertAlmostEqual(record.duration, record.endedAt - record.answeredAt, places=2)

    async def test_call_across_a_restart(self) -> None:
        """
        The service stops (the record ends "server shutdown") and starts
        again while the call goes on; the callee's BYE reaches the new
        process through its signed Route, and the record is amended: one
        record, ended by the callee, lasting the whole call.
        """
        port = freePort()
        registered = await self.sipp.register("45675002", self.passwords["45675002"], self.server.ports[0], port=port)
        self.assertEqual(registered.code, 0, registered.detail)
        callee = self.sipp.start("callee-restart", "calls_uas_answer_wait_hang_up.xml", "-d", "4000", port=port)
        self.addCleanup(lambda: (callee.kill(), callee.done)[1])
        await deferLater(0.5)
        inf = injectionFile(
            self.sipp.directory,
            "caller-restart",
            [("45675001", authentication("45675001", self.passwords["45675001"]), "45675002")],
        )
        caller = self.sipp.start(
            "caller-restart",
            "calls_uac_wait_bye.xml",
            remote=address("127.0.0.1", self.server.ports[0]),
            inf=inf,
            timeout=30,
        )
        self.addCleanup(lambda: (caller.kill(), caller.done)[1])
        store = self.store()
        await within(15, lambda: any(r.answered for r in store.callRecords()), "the call was not answered")
        await self.server.stop()
        (stopped,) = store.callRecords()
        self.assertEqual(stopped.endCause, "server shutdown")
        await self.server.start()
        self.assertEqual((await callee.done).code, 0)
        self.assertEqual((await caller.done).code, 0)
        await within(10, lambda: store.callRecords()[0].endCause == "callee BYE", "the record was not amended")
        (record,) = store.callRecords()
        self.assertEqual(record.id, stopped.id)
        self.assertIn("restart", record.endDetail)
        assert record.endedAt is not None and record.answeredAt is not None and stopped.endedAt is not None
        self.assertGreater(record.endedAt, stopped.endedAt)
        self.assertAlmostEqual(record.duration, record.endedAt - record.answeredAt, places=2)
        self.assertGreater(record.duration, 3)


class CrashTests(RecordsTestCase):
    """
    The service as its own C{twistd} process, on the same store and
    ports as the in-process one (stopped first).
    """

    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        # Provisioned, not started in-process: the service runs as twistd.
        directory = self.mktemp()
        os.makedirs(directory)
        self.started = time.time()
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), directory)
        self.server = RunningService(directory, **self.settings)
        self.passwords = {}
        self.provision()
        self.storeURL = f"sqlite:///{os.path.abspath(os.path.join(directory, 'aetasip.db'))}"
        self.assertTrue(os.path.exists(self.storeURL[len("sqlite:///") :]))

    def twistd(self) -> TwistdProcess:
        first, second = self.server.ports
        config = twistdConfig(
            self.sipp.directory,
            sip={"listen": ["127.0.0.1"], "udp_ports": [first, second], "tcp_ports": [first, second]},
            store={"url": self.storeURL},
            stun={"enabled": False},
            web={"listen": "127.0.0.1:0"},
            records={"server": SERVER, "heartbeat_interval": 1},
            calls={"probe_interval": 30},
        )
        process = startTwistd(self.sipp.directory, config)
        self.addCleanup(self.ended, process)
        return process

    @staticmethod
    def ended(process: TwistdProcess) -> Deferred[int] | None:
        if process.ended.called:
            return None
        process.transport.signalProcess("TERM")  # type: ignore[union-attr]
        return process.ended

    async def test_kill_9_mid_call(self) -> None:
        """
        A call is answered through a twistd process, which is then killed
        (SIGKILL). Its record stays open in the store; the next start
        closes it with "unknown end" at the last heartbeat before the
        kill (noted every second), never after it.
        """
        store = self.store()
        first = self.twistd()
        # Registered with the new process, the callee waits 60 s then hangs up.
        port = freePort()
        for _ in range(10):
            if first.ended.called:
                self.fail(f"twistd ended:\n{first.output.decode()}")
            registered = await self.sipp.register(
                "45675002", self.passwords["45675002"], self.server.ports[0], port=port
            )
            if registered.code == 0:
                break
            await deferLater(0.5)
        self.assertEqual(registered.code, 0, registered.detail + first.output.decode())
        callee = self.sipp.start("callee", "calls_uas_answer_wait_hang_up.xml", "-d", "60000", port=port, timeout=60)
        self.addCleanup(lambda: (callee.kill(), callee.done)[1])
        await deferLater(0.5)
        inf = injectionFile(
            self.sipp.directory,
            "caller-crash",
            [("45675001", authentication("45675001", self.passwords["45675001"]), "45675002")],
        )
        caller = self.sipp.start(
            "caller-crash", "calls_uac_wait_bye.xml", remote=address("127.0.0.1", self.server.ports[0]), inf=inf,
            timeout=60,
        )  # fmt: skip
        self.addCleanup(lambda: (caller.kill(), caller.done)[1])
        await within(15, lambda: any(r.answered for r in store.callRecords()), "the call was not answered")
        # A few heartbeats while the call is up.
        await deferLater(2.5)
        (up,) = store.callRecords()
        self.assertTrue(up.open)
        assert first.transport is not None and first.transport.pid is not None
        os.kill(first.transport.pid, signal.SIGKILL)
        killedAt = time.time()
        self.assertEqual(await first.ended, -9)
        # Still open: nobody closed it.
        (left,) = store.callRecords()
        self.assertTrue(left.open)

        second = self.twistd()
        record = await self.record(number="45675001")
        self.assertEqual(record.id, up.id)
        self.assertEqual((record.endCause, record.status), (UNKNOWN_END, 200))
        self.assertIn("crash", record.endDetail)
        assert record.endedAt is not None and record.answeredAt is not None
        self.assertTrue(killedAt - 2.5 < record.endedAt <= killedAt, (killedAt, record.endedAt))
        # Heartbeats went on while the call was up (every second, for 2.5 s).
        self.assertGreater(record.endedAt, record.answeredAt + 1)
        self.assertAlmostEqual(record.duration, record.endedAt - record.answeredAt, places=2)
        # A clean stop: twistd ends by the signal it stopped on, once the service has stopped.
        self.assertEqual(await self.ended(second), -signal.SIGTERM)
        self.assertNotIn(b"Traceback", second.output)
