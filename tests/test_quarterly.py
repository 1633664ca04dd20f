"""
Quarterly call logs: made for each group with the option once the
quarter is over, with the answered calls that began or ended in it (a
call spanning midnight of 31 March is in the logs of 2026Q1 and 2026Q2),
never twice (the ledger); and, with a real SMTP server on loopback, a
log due while mail is down is sent exactly once when it returns, across
a restart of the service.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import os

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.records.mailsettings import MailSettings
from aetasip.records.outbox import Outbox, SMTPSender
from aetasip.records.periods import Quarter, parseTime
from aetasip.records.quarterly import QuarterlyLogService, queueDueLogs
from aetasip.store import AsyncStore, Store
from aetasip.store.outbox import SENT
from tests.certificates import TestCA
from tests.servers import deferLater, freePort
from tests.smtpserver import SMTPServer
from tests.test_records_store import LATE_MARCH, answered, aRecord
from tests.test_store import FakeClock

HOUR = 3600.0
FROM = "noc@sip.example.net"
JUST_AFTER_Q1 = parseTime("2026-04-01T00:10:00Z")
JUST_AFTER_Q2 = parseTime("2026-07-01T00:10:00Z")


def provision(store: Store, clock: FakeClock) -> None:
    """
    Groups 4567 (with the option), 4568 (without) and, created after
    2026Q1, 4569 (with it); calls around midnight of 31 March.
    """
    clock.now = parseTime("2026-01-15")
    store.addGroup("4567", "tech@studio.example.org", quarterlyLog=True)
    store.addGroup("4568", "other@studio.example.org")
    store.allocate("4567", 2, realm="aetasip")
    store.allocate("4568", 1, realm="aetasip")
    clock.now = parseTime("2026-04-20")
    store.addGroup("4569", "late@studio.example.org", quarterlyLog=True)
    store.allocate("4569", 1, realm="aetasip")
    store.writeCallRecords(
        [
            answered("q1", LATE_MARCH - 5 * HOUR, LATE_MARCH - 5 * HOUR + 2, LATE_MARCH - 4 * HOUR),
            # Spans midnight of 31 March.
            answered("span", LATE_MARCH + 0.5 * HOUR, LATE_MARCH + 0.5 * HOUR + 3, LATE_MARCH + 1.5 * HOUR),
            # To the group, from outside, in 2026Q2.
            answered(
                "q2",
                LATE_MARCH + 30 * HOUR,
                LATE_MARCH + 30 * HOUR + 1,
                LATE_MARCH + 31 * HOUR,
                caller="45685001",
                dialled="45675002",
                callee="45675002",
            ),
            # Not answered: not in the log.
            aRecord(
                "missed",
                LATE_MARCH - 2 * HOUR,
                endedAt=LATE_MARCH - 2 * HOUR + 20,
                status=480,
                endCause="no answer",
                callee="45675002",
            ),
            # Another group's call.
            answered(
                "other",
                LATE_MARCH - 3 * HOUR,
                LATE_MARCH - 3 * HOUR + 1,
                LATE_MARCH - 2 * HOUR,
                caller="45685001",
                dialled="33330001",
                callee="33330001",
            ),
        ],
        "main",
        LATE_MARCH,
    )


def attachment(raw: bytes) -> tuple[str, list[list[str]]]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    (part,) = list(message.iter_attachments())
    return part.get_filename() or "", list(csv.reader(io.StringIO(part.get_content(), newline="")))


class QuarterlyLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.store = Store(f"sqlite:///{os.path.abspath(self.mktemp())}.db", clock=self.clock)
        self.store.open()
        self.addCleanup(self.store.close)
        provision(self.store, self.clock)

    def test_the_log_of_the_quarter_over_once(self) -> None:
        """
        Just after 2026Q1: one log, 4567's, to its contact, with the
        answered calls of the quarter (the one spanning midnight included),
        from the end of the quarter; not again.
        """
        (queued,) = queueDueLogs(self.store, JUST_AFTER_Q1, FROM, "aetasip")
        self.assertEqual(queued[:2], ("4567", "2026Q1"))
        (mail,) = self.store.outbox()
        self.assertEqual(
            (mail.id, mail.recipient, mail.purpose), (queued[2], "tech@studio.example.org", "quarterly 4567 2026Q1")
        )
        name, rows = attachment(mail.message)
        self.assertEqual(name, "calls-4567-2026Q1.csv")
        self.assertEqual(
            rows,
            [
                ["begin", "duration", "calling", "called"],
                ["2026-03-31T18:00:02Z", "3598", "45675001", "45675002"],
                ["2026-03-31T23:30:03Z", "3597", "45675001", "45675002"],
            ],
        )
        self.assertEqual(self.store.quarterlyLogMade("4567", "2026Q1"), mail.id)
        self.assertEqual(queueDueLogs(self.store, JUST_AFTER_Q1 + 3 * HOUR, FROM, "aetasip"), [])
        self.assertEqual(len(self.store.outbox()), 1)

    def test_the_next_quarter_has_the_call_spanning_its_start(self) -> None:
        queued = queueDueLogs(self.store, JUST_AFTER_Q2, FROM, "aetasip")
        self.assertEqual([(prefix, quarter) for prefix, quarter, _ in queued], [("4567", "2026Q2"), ("4569", "2026Q2")])
        mails = {mail.recipient: mail for mail in self.store.outbox()}
        _, rows = attachment(mails["tech@studio.example.org"].message)
        self.assertEqual([row[2:] for row in rows[1:]], [["45675001", "45675002"], ["45685001", "45675002"]])
        self.assertEqual(rows[1][0], "2026-03-31T23:30:03Z")
        _, empty = attachment(mails["late@studio.example.org"].message)
        self.assertEqual(empty, [["begin", "duration", "calling", "called"]])

    def test_the_message_is_bilingual(self) -> None:
        queueDueLogs(self.store, JUST_AFTER_Q1, FROM, "aetasip")
        (mail,) = self.store.outbox()
        message = email.message_from_bytes(mail.message, policy=email.policy.default)
        self.assertEqual(message["From"], FROM)
        self.assertEqual(message["Subject"], "Call log 2026Q1, group 4567 / Journal des appels 2026Q1, groupe 4567")
        body = message.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        self.assertIn("the 2 answered calls", text)
        self.assertIn("les 2 appels aboutis", text)
        self.assertIn("----- Français -----", text)

    def test_quarters(self) -> None:
        self.assertEqual(Quarter.containing(LATE_MARCH), Quarter(2026, 1))
        self.assertEqual(Quarter.containing(Quarter(2026, 2).start), Quarter(2026, 2))
        self.assertEqual(Quarter.containing(Quarter(2026, 2).start - 0.001), Quarter(2026, 1))
        self.assertEqual(Quarter(2026, 1).previous(), Quarter(2025, 4))
        self.assertEqual(Quarter(2025, 4).next(), Quarter(2026, 1))
        self.assertEqual(str(Quarter.parse("2026-q3")), "2026Q3")


class BoundaryTests(SynchronousTestCase):
    """The service looks a minute after each quarter ends, and every hour."""

    def test_a_look_a_minute_after_each_quarter(self) -> None:
        class Outbox:
            settings = MailSettings(host=None)

        clock = Clock()
        start = LATE_MARCH + 600  # 31 March, 23:10 UTC
        clock.advance(start)
        logs = QuarterlyLogService(None, Outbox(), "aetasip", clock)
        looks: list[float] = []
        logs.check = lambda: looks.append(clock.seconds())  # type: ignore[method-assign]
        logs._loop.f = logs.check
        logs.startService()
        self.assertEqual(looks, [start])
        clock.advance(3060 - 1)
        self.assertEqual(looks, [start])
        clock.advance(1)
        self.assertEqual(looks, [start, Quarter(2026, 2).start + 60])
        clock.advance(540)
        self.assertEqual(looks[-1], start + 3600)
        nextOne = Quarter(2026, 3).start + 60
        self.assertIn(nextOne, [call.getTime() for call in clock.getDelayedCalls()])
        logs.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class QuarterlyMailTests(TestCase):
    """The log through a real SMTP server (aiosmtpd, STARTTLS and AUTH)."""

    timeout = 60

    def setUp(self) -> None:
        clock = FakeClock()
        store = Store(f"sqlite:///{os.path.abspath(self.mktemp())}.db", clock=clock)
        store.open()
        provision(store, clock)
        self.store = AsyncStore(store)
        self.store.start()
        self.addCleanup(self.store.stop)
        ca = TestCA(os.path.abspath(self.mktemp()))
        cert, key = ca.issue("localhost")
        self.smtp = SMTPServer(self, freePort(), cert, key, "aetasip", "pw")
        self.settings = MailSettings(
            host="localhost",
            port=self.smtp.port,
            caCertificate=ca.caPath,
            username="aetasip",
            password="pw",
            fromAddress=FROM,
            timeout=10,
            retryDelay=0.3,
        )

    def service(self) -> tuple[QuarterlyLogService, Outbox]:
        """A new process's services, just after 2026Q1."""
        clock = Clock()
        clock.advance(JUST_AFTER_Q1)
        outbox = Outbox(self.store, self.settings, SMTPSender(self.settings, reactor), reactor)
        return QuarterlyLogService(self.store, outbox, "aetasip", clock), outbox

    async def test_sent_exactly_once_across_an_outage_and_a_restart(self) -> None:
        logs, outbox = self.service()
        queued = await logs.check()
        self.assertEqual([q[:2] for q in queued], [("4567", "2026Q1")])
        # Mail is down: the attempt failed and the message waits.
        (waiting,) = await self.store.outbox()
        self.assertEqual(waiting.attempts, 1)
        # The service restarts: the log is not made again.
        logs, outbox = self.service()
        self.assertEqual(await logs.check(), [])
        await self.smtp.start()
        await deferLater(0.4)
        self.assertEqual((await outbox.sendDue()).sent, [waiting.id])
        logs, outbox = self.service()
        self.assertEqual(await logs.check(), [])
        self.assertEqual((await outbox.sendDue()).sent, [])
        ((envelope, raw),) = self.smtp.messages()
        self.assertEqual(envelope["to"], ["tech@studio.example.org"])
        name, rows = attachment(raw)
        self.assertEqual((name, len(rows)), ("calls-4567-2026Q1.csv", 3))
        (sent,) = await self.store.outbox()
        self.assertEqual(sent.state, SENT)
