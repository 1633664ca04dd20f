"""
Log noise: starting and stopping the whole service tree (SIP, STUN, the
relay with an rtpengine node's ng socket, the test line, the web
service) and sending mail log no "Starting protocol ..." or "Starting
factory ..." line per socket: each service says once that it started
and stopped.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.mail.smtp import SMTPConnectError
from twisted.trial.unittest import TestCase

from aetasip.records.mailsettings import MailSettings
from aetasip.records.outbox import SMTPSender
from aetasip.store.outbox import OutboxMail
from tests.servers import RunningService, freePort

TWISTED_NOISE = re.compile(r"^(Starting|Stopping) (protocol|factory) ")


class LogNoiseTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    async def test_the_tree_starts_and_stops_without_a_line_per_socket(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        server = RunningService(
            directory,
            **{
                "stun.enabled": True,
                "stun.listen": ["127.0.0.1"],
                "stun.port": freePort(),
                "calls.media_handler": "relay",
                "relay.nodes": {
                    "local": {"kind": "builtin", "address": "127.0.0.1", "ports": [48_300, 48_399]},
                    "far": {"kind": "rtpengine", "ng": [f"127.0.0.1:{freePort()}"]},
                },
                "testline.media_address": "127.0.0.1",
            },
        )
        await server.start()
        await server.stop()
        lines = self.lines()
        self.assertEqual([line for line in lines if TWISTED_NOISE.match(line)], [])
        for said in ("STUN listening on", "Web service on", "SIP ready on", "Web service stopped"):
            self.assertEqual(len([line for line in lines if line.startswith(said)]), 1, (said, lines))

    async def test_sending_mail_logs_no_factory_lines(self) -> None:
        port = freePort()  # nothing listens there: the connection is refused
        settings = MailSettings("127.0.0.1", port, starttls=False, fromAddress="noreply@example.net", timeout=5)
        mail = OutboxMail(
            1, "studio@example.net", "S", b"Subject: S\n\nbody\n", "test", "queued", 1, 0.0, "", 0.0, None
        )
        with self.assertRaises(SMTPConnectError):
            await SMTPSender(settings, reactor).send(mail)
        self.assertEqual([line for line in self.lines() if TWISTED_NOISE.match(line)], [])
