"""
C{aetasip-admin notify} and C{aetasip-admin report quarterly --send}, run
as a user runs them (a process of their own), mailing through a real SMTP
server on loopback (aiosmtpd, STARTTLS and AUTH): one message per
technical contact, bilingual footer, counts printed; a re-send of a
quarterly log on request; an SMTP server that is down leaves the
messages queued for the service. The dry run and bad input in-process.
"""

from __future__ import annotations

import email
import email.policy
import os
import sys

from twisted.trial.unittest import TestCase

from aetasip.store import Store
from aetasip.store.outbox import QUEUED, SENT
from tests.certificates import TestCA
from tests.servers import freePort, run
from tests.smtpserver import SMTPServer
from tests.test_admin import AdminTestCase
from tests.test_quarterly import provision
from tests.test_store import FakeClock

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FROM = "noc@sip.example.net"
BODY = "Maintenance on 12 December 2026, 02:00-03:00 UTC.\n\nMaintenance le 12 décembre 2026, de 02:00 à 03:00 UTC.\n"


class AdminMailTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.directory = directory
        ca = TestCA(os.path.join(directory, "ca"))
        cert, key = ca.issue("localhost")
        self.smtp = SMTPServer(self, freePort(), cert, key, "aetasip", "pw")
        self.url = f"sqlite:///{os.path.join(directory, 'store.db')}"
        clock = FakeClock()
        store = Store(self.url, clock=clock)
        store.open()
        provision(store, clock)  # groups 4567, 4568 and 4569, each its own contact
        store.addGroup("4570", "TECH@studio.example.org")  # the contact of 4567 again
        store.close()
        self.config = os.path.join(directory, "aetasip.py")
        with open(self.config, "w") as f:
            f.write(
                f"store = {{'url': {self.url!r}}}\n"
                "mail = {"
                f"'smtp_host': 'localhost', 'smtp_port': {self.smtp.port}, 'ca_certificate': {ca.caPath!r}, "
                f"'username': 'aetasip', 'password': 'pw', 'from_address': {FROM!r}, 'timeout': 10"
                "}\n"
                "server = {'name': 'sip1.example.net'}\n"
            )
        self.body = os.path.join(directory, "body.txt")
        with open(self.body, "w", encoding="utf-8") as f:
            f.write(BODY)

    async def admin(self, *args: str) -> tuple[str, str, int]:
        return await run(
            sys.executable,
            "-m",
            "aetasip.admin",
            "--config",
            self.config,
            *args,
            env=dict(os.environ, PYTHONPATH=TOP),
        )

    def outbox(self) -> list:
        store = Store(self.url)
        store.open()
        try:
            return store.outbox()
        finally:
            store.close()

    async def test_notify_every_contact_once(self) -> None:
        await self.smtp.start()
        out, err, code = await self.admin("notify", "--subject", "Maintenance / Maintenance", "--body-file", self.body)
        self.assertEqual((code, err), (0, ""), out)
        self.assertEqual(out, "Queued 3 messages.\nSent 3 of 3.\n")
        received = self.smtp.messages()
        self.assertEqual(
            sorted(envelope["to"][0] for envelope, _ in received),
            ["late@studio.example.org", "other@studio.example.org", "tech@studio.example.org"],
        )
        for envelope, raw in received:
            self.assertEqual((envelope["from"], envelope["tls"], envelope["login"]), (FROM, True, "aetasip"))
            message = email.message_from_bytes(raw, policy=email.policy.default)
            self.assertEqual(message["Subject"], "Maintenance / Maintenance")
            text = message.get_content().replace("\r\n", "\n")
            self.assertTrue(text.startswith(BODY.rstrip()), text)
            self.assertIn("technical contact of group", text)
            self.assertIn("en tant que contact technique d", text)
            if envelope["to"] == ["tech@studio.example.org"]:
                self.assertIn("technical contact of groups 4567, 4570.", text)
                self.assertIn("contact technique des groupes 4567, 4570.", text)
        self.assertEqual({mail.state for mail in self.outbox()}, {SENT})

    async def test_notify_one_group(self) -> None:
        await self.smtp.start()
        out, err, code = await self.admin("notify", "-s", "Hello", "-b", self.body, "--group", "4568")
        self.assertEqual((code, out), (0, "Queued 1 messages.\nSent 1 of 1.\n"), err)
        ((envelope, _),) = self.smtp.messages()
        self.assertEqual(envelope["to"], ["other@studio.example.org"])

    async def test_mail_down_leaves_the_messages_for_the_service(self) -> None:
        out, err, code = await self.admin("notify", "-s", "Hello", "-b", self.body, "--group", "4568")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith("Queued 1 messages.\nSent 0 of 1.\nNot sent (message 1): "), out)
        self.assertIn("The service tries them again later", out)
        (mail,) = self.outbox()
        self.assertEqual((mail.state, mail.attempts), (QUEUED, 1))

    async def test_report_quarterly_send_and_send_again(self) -> None:
        await self.smtp.start()
        for _ in range(2):
            out, err, code = await self.admin("report", "quarterly", "--group", "4567", "--quarter", "2026Q1", "--send")
            self.assertEqual((code, err), (0, ""), out)
            self.assertEqual(
                out, "Queued the call log of group 4567 for 2026Q1 to tech@studio.example.org.\nSent 1 of 1.\n"
            )
        self.assertEqual(len(self.smtp.messages()), 2)
        self.assertEqual(
            [mail.purpose for mail in self.outbox()], ["quarterly 4567 2026Q1", "quarterly 4567 2026Q1 (again)"]
        )
        out, err, code = await self.admin("report", "quarterly", "--group", "4567", "--quarter", "2026Q1")
        self.assertEqual(
            out.splitlines(),
            [
                "begin,duration,calling,called",
                "2026-03-31T18:00:02Z,3598,45675001,45675002",
                "2026-03-31T23:30:03Z,3597,45675001,45675002",
            ],
        )


class NotifyCommandTests(AdminTestCase):
    """The dry run and bad input, in-process."""

    def setUp(self) -> None:
        super().setUp()
        store = self.openStore()
        store.addGroup("4567", "tech@studio.example.org")
        store.addGroup("4568", "tech@studio.example.org")
        store.addGroup("4569", "other@studio.example.org")
        self.body = os.path.abspath(self.mktemp())
        with open(self.body, "w", encoding="utf-8") as f:
            f.write(BODY)

    def test_dry_run(self) -> None:
        out = self.succeed("notify", "--subject", "S", "--body-file", self.body, "--dry-run")
        self.assertEqual(out.splitlines()[0], "Would queue 2 messages:")
        self.assertIn("tech@studio.example.org   4567, 4568", out)
        self.assertEqual(self.openStore().outbox(), [])

    def test_without_a_from_address_nothing_is_queued(self) -> None:
        self.assertRefused(1, ["notify", "--subject", "S", "--body-file", self.body], "mail.from_address is not set")

    def test_bad_input(self) -> None:
        empty = os.path.abspath(self.mktemp())
        open(empty, "w").close()
        binary = os.path.abspath(self.mktemp())
        with open(binary, "wb") as f:
            f.write(b"\xff\xfe\x00bad")
        for args, fragment in [
            (["--subject", "S"], "required"),
            (["--subject", "", "--body-file", self.body], "--subject"),
            (["--subject", "a\nb", "--body-file", self.body], "--subject"),
            (["--subject", "S", "--body-file", "/nonexistent"], "No such file"),
            (["--subject", "S", "--body-file", empty], "is empty"),
            (["--subject", "S", "--body-file", binary], "not UTF-8"),
            (["--subject", "S", "--body-file", self.body, "--group", "12"], "12"),
        ]:
            self.assertRefused(2, ["notify", *args], fragment)
        self.assertRefused(1, ["notify", "-s", "S", "-b", self.body, "--group", "9999", "--dry-run"], "no group 9999")
        self.assertRefused(2, ["report", "quarterly", "--group", "4567", "--quarter", "2026Q9"], "invalid quarter")
        self.assertRefused(1, ["report", "quarterly", "--group", "9999", "--quarter", "2026Q1"], "no group 9999")
