"""
Mail through a real SMTP server on loopback (L{tests.smtpserver}, aiosmtpd
with STARTTLS and AUTH required): a message of the persistent outbox is
delivered with its attachment, parsed back; an outage is retried with a
growing delay and the message is sent exactly once when the server
returns; a wrong password or an untrusted certificate is a logged failure
that is tried again; bad mail settings are refused.
"""

from __future__ import annotations

import email
import email.policy
import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from aetasip import config
from aetasip.records.mailmessages import compose
from aetasip.records.mailsettings import MailSettings
from aetasip.records.outbox import Outbox, SMTPSender
from aetasip.store import AsyncStore, Store
from aetasip.store.outbox import FAILED, QUEUED, SENT
from tests.certificates import TestCA
from tests.servers import deferLater, freePort
from tests.smtpserver import SMTPServer

USER, PASSWORD = "aetasip", "smtp-secret"
FROM = "noc@sip.example.net"
CONTACT = "tech@studio.example.org"
CSV = "begin,duration,calling,called\r\n2026-03-31T23:30:03Z,3597,45675001,45675002\r\n"


class MailTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.ca = TestCA(os.path.abspath(self.mktemp()))
        cert, key = self.ca.issue("localhost")
        self.server = SMTPServer(self, freePort(), cert, key, USER, PASSWORD)
        self.settings = MailSettings(
            host="localhost",
            port=self.server.port,
            caCertificate=self.ca.caPath,
            username=USER,
            password=PASSWORD,
            fromAddress=FROM,
            timeout=10,
            retryDelay=0.3,
            retryMaxDelay=1.0,
            maxAttempts=3,
        )
        store = Store(f"sqlite:///{os.path.abspath(self.mktemp())}.db")
        store.open()
        self.store = AsyncStore(store)
        self.store.start()
        self.addCleanup(self.store.stop)

    def outbox(self, **changes: Any) -> Outbox:
        import attrs

        settings = attrs.evolve(self.settings, **changes)
        return Outbox(self.store, settings, SMTPSender(settings, reactor), reactor)

    def queue(self, subject: str = "Call log 2026Q1, group 4567 / Journal des appels 2026Q1, groupe 4567") -> Any:
        message = compose(
            FROM,
            CONTACT,
            subject,
            "English text.\n\n----- Français -----\n\nTexte français, accentué.\n",
            time.time(),
            [("calls-4567-2026Q1.csv", "text/csv", CSV.encode())],
        )
        return self.store.queueMail(CONTACT, subject, message, "quarterly 4567 2026Q1", time.time())

    async def test_delivered_with_starttls_and_auth_attachment_parsed_back(self) -> None:
        await self.server.start()
        mailID = await self.queue()
        result = await self.outbox().sendDue()
        self.assertEqual(result.sent, [mailID])
        ((envelope, raw),) = self.server.messages()
        self.assertEqual(envelope, {"from": FROM, "to": [CONTACT], "tls": True, "login": USER})
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(message["From"], FROM)
        self.assertEqual(message["To"], CONTACT)
        self.assertIn("Journal des appels", message["Subject"])
        body = message.get_body(("plain",))
        assert body is not None
        self.assertIn("Texte français, accentué.", body.get_content())
        (attachment,) = list(message.iter_attachments())
        self.assertEqual(attachment.get_filename(), "calls-4567-2026Q1.csv")
        self.assertEqual(attachment.get_content_type(), "text/csv")
        self.assertEqual(attachment.get_content(), CSV)
        (sent,) = await self.store.outbox()
        self.assertEqual((sent.state, sent.attempts), (SENT, 1))
        self.assertIsNotNone(sent.sentAt)

    async def test_an_outage_then_recovery_sends_exactly_once(self) -> None:
        """
        The server is down: the attempt fails and is logged; the message
        is not due again before the retry delay; once the server is back
        it is sent, once, and later passes send nothing more.
        """
        mailID = await self.queue()
        outbox = self.outbox()
        first = await outbox.sendDue()
        self.assertEqual(first.failed, [mailID])
        (waiting,) = await self.store.outbox()
        self.assertEqual((waiting.state, waiting.attempts), (QUEUED, 1))
        self.assertNotEqual(waiting.lastError, "")
        # Not due yet: nothing is tried.
        self.assertEqual(await outbox.sendDue(), type(first)())
        await self.server.start()
        await deferLater(0.4)
        again = await outbox.sendDue()
        self.assertEqual(again.sent, [mailID])
        for _ in range(3):
            await deferLater(0.4)
            self.assertEqual((await outbox.sendDue()).sent, [])
        self.assertEqual(len(self.server.messages()), 1)
        (sent,) = await self.store.outbox()
        self.assertEqual((sent.state, sent.attempts), (SENT, 2))

    async def test_two_senders_never_send_one_message_twice(self) -> None:
        """The service and aetasip-admin pass over the outbox together: each message goes once."""
        await self.server.start()
        ids = [await self.queue(f"Notice {n}") for n in range(4)]
        one, two = self.outbox(), self.outbox()
        results = [await d for d in [one.sendDue(), two.sendDue()]]
        self.assertEqual(sorted(results[0].sent + results[1].sent), ids)
        self.assertEqual(len(self.server.messages()), 4)

    async def test_wrong_password_is_retried_then_given_up(self) -> None:
        await self.server.start()
        mailID = await self.queue()
        outbox = self.outbox(password="wrong", retryDelay=0.05, retryMaxDelay=0.05)
        attempts = []
        for _ in range(3):
            attempts.append(await outbox.sendDue())
            await deferLater(0.1)
        self.assertEqual([a.failed for a in attempts[:2]], [[mailID], [mailID]])
        self.assertEqual(attempts[2].givenUp, [mailID])
        (failed,) = await self.store.outbox()
        self.assertEqual((failed.state, failed.attempts), (FAILED, 3))
        self.assertIn("535", failed.lastError)
        self.assertEqual(self.server.messages(), [])

    async def test_an_untrusted_certificate_is_refused(self) -> None:
        """Without the test CA (the system's trust roots), STARTTLS fails: nothing is sent."""
        await self.server.start()
        mailID = await self.queue()
        result = await self.outbox(caCertificate=None).sendDue()
        self.assertEqual(result.failed, [mailID])
        self.assertEqual(self.server.messages(), [])

    async def test_nothing_is_sent_without_a_server_configured(self) -> None:
        await self.queue()
        result = await self.outbox(host=None).sendDue()
        self.assertEqual((result.sent, result.failed), ([], []))
        (waiting,) = await self.store.outbox()
        self.assertEqual((waiting.state, waiting.attempts), (QUEUED, 0))


class MailSettingsTests(TestCase):
    def test_defaults_and_checks(self) -> None:
        settings = MailSettings.fromConfig(config.build({}))
        self.assertEqual(settings.missing(), "mail.smtp_host is not set")
        self.assertEqual((settings.port, settings.starttls), (587, True))
        with self.assertRaises(config.ConfigError):
            config.build({"mail.from_address": "not an address"})
        with self.assertRaises(config.ConfigError) as raised:
            config.build({"mail.username": "u"})
        self.assertIn("mail.password", str(raised.exception))
        with self.assertRaises(config.ConfigError):
            config.build({"mail.smtp_host": "bad host!"})
