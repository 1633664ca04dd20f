"""
Log noise: starting and stopping the whole service tree (SIP, STUN, the
relay with an rtpengine node's ng socket, the test line, the web
service) and sending mail log no "Starting protocol ..." or "Starting
factory ..." line per socket: each service says once that it started
and stopped. Under twistd, Twisted's ports' own lines ("... starting on
5060", "(UDP Port 5060 Closed)") are filtered out (aetasip.quietlog).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from io import StringIO
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.mail.smtp import SMTPConnectError
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from aetasip.quietlog import quiet, twistdObserver
from aetasip.records.mailsettings import MailSettings
from aetasip.records.outbox import SMTPSender
from aetasip.store.outbox import OutboxMail
from tests.servers import RunningService, freePort, freePortBlock, socketPath, startTwistd, twistdConfig

TWISTED_NOISE = re.compile(r"^(Starting|Stopping) (protocol|factory) ")
PORT_NOISE = re.compile(r" starting on |^\((UDP |TCP |UNIX )?Port .* Closed\)$")


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
                    "local": {"kind": "builtin", "address": "127.0.0.1", "ports": list(freePortBlock(100))},
                    "far": {"kind": "rtpengine", "ng": [f"127.0.0.1:{freePort()}"]},
                },
                "testline.media_address": "127.0.0.1",
                "notify.urls": [f"http://127.0.0.1:{freePort()}/hook"],
                "notify.secret": "webhook-secret",
                "web.admin_listen": "127.0.0.1:0",
            },
        )
        await server.start()
        await server.stop()
        lines = self.lines()
        self.assertEqual([line for line in lines if TWISTED_NOISE.match(line)], [])
        for said in (
            "Store open: ",
            "Webhooks: ",
            "Authentication backends: sql",
            "Directory: ",
            "Mail outbox: ",
            "Quarterly call logs: ",
            "Call records of server ",
            "Cluster: server ",
            "Calls: at most ",
            "Relay: mode ",
            "Relay node local: built-in, on 127.0.0.1 ports ",
            "Relay node far: rtpengine at 127.0.0.1:",
            "SIP ready on ",
            "Test line on ",
            "STUN listening on ",
            "Web service on ",
            "Control socket on ",
            "Admin API on ",
            "Admin API stopped",
            "Control socket stopped",
            "Web service stopped",
            "STUN stopped",
            "Test line stopped",
            "Cluster stopped",
            "Calls stopped",
            "Relay stopped",
            "Relay node local stopped",
            "Relay node far stopped",
            "Call records stopped",
            "SIP stopped on ",
            "Quarterly call logs stopped",
            "Mail outbox stopped",
            "Directory stopped",
            "Authentication stopped",
            "Webhooks stopped",
            "Store closed: ",
        ):
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


class QuietObserverTests(TestCase):
    """
    L{quiet} drops the lines Twisted's own ports and noisy factories log,
    and nothing else.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.observer = quiet(self.events.append)
        globalLogPublisher.addObserver(self.observer)
        self.addCleanup(globalLogPublisher.removeObserver, self.observer)

    def lines(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    async def test_ports_start_and_close_silently(self) -> None:
        udp = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")  # type: ignore[attr-defined]
        factory = Factory.forProtocol(Protocol)
        tcp = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        unix = reactor.listenUNIX(socketPath(self.mktemp() + "-dir"), factory)  # type: ignore[attr-defined]
        for port in (udp, tcp, unix):
            await port.stopListening()
        self.assertEqual(self.lines(), [])

    def test_other_lines_pass(self) -> None:
        from twisted.logger import Logger
        from twisted.python import log as legacy

        legacy.msg("an old-style line")
        legacy.err(Failure(ValueError("(UDP Port 5060 Closed)")), "a failure")
        Logger(namespace="aetasip.test").info("SIP ready on udp:127.0.0.1:5060, starting on time")
        lines = self.lines()
        self.assertIn("an old-style line", lines)
        self.assertIn("SIP ready on udp:127.0.0.1:5060, starting on time", lines)
        self.assertTrue(any(line.startswith("a failure") for line in lines), lines)
        self.flushLoggedErrors(ValueError)


class TwistdLogTests(TestCase):
    """
    C{twistd -n aetasip}, as an operator runs it: its log has one line for
    each service's start and stop, and none of Twisted's per socket.
    """

    timeout = 60

    async def test_one_line_per_service_start_and_stop(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        sip = freePort()
        path = twistdConfig(
            directory,
            sip={"listen": ["127.0.0.1"], "udp_ports": [sip], "tcp_ports": [sip]},
            store={"url": f"sqlite:///{os.path.join(directory, 'aetasip.db')}"},
            stun={"enabled": True, "listen": ["127.0.0.1"], "port": freePort()},
            web={"listen": "127.0.0.1:0", "control_socket": socketPath(directory)},
            testline={"media_address": "127.0.0.1"},
            notify={"urls": [f"http://127.0.0.1:{freePort()}/hook?token=x"], "secret": "webhook-secret"},
        )
        process = startTwistd(directory, path)
        for _ in range(300):
            if b"SIP ready on" in process.output or process.ended.called:
                break
            await deferLater(0.1)
        self.assertFalse(process.ended.called, process.output.decode())
        process.transport.signalProcess("TERM")  # type: ignore[union-attr]
        # A clean stop: twistd ends by the signal it stopped on, once the service has stopped.
        self.assertEqual(await process.ended, -signal.SIGTERM, process.output.decode())
        lines = [line.split("] ", 1)[-1] for line in process.output.decode().splitlines()]
        self.assertEqual([line for line in lines if PORT_NOISE.search(line) or TWISTED_NOISE.match(line)], [])
        for said in (
            "Store open: ",
            "Webhooks: ",
            "Authentication backends: sql",
            "Directory: accounts and groups for routing read from the store every ",
            "Mail outbox: mail.smtp_host is not set, mail waits in the store",
            "Quarterly call logs: ",
            "Call records of server ",
            "Cluster: server ",
            "STUN listening on 127.0.0.1:",
            "Test line on 127.0.0.1:",
            "Web service on http://127.0.0.1:",
            "Control socket on ",
            f"SIP ready on udp:127.0.0.1:{sip}, tcp:127.0.0.1:{sip}",
            "Control socket stopped",
            "Web service stopped",
            "STUN stopped",
            "Test line stopped",
            "Cluster stopped",
            "Call records stopped",
            f"SIP stopped on udp:127.0.0.1:{sip}, tcp:127.0.0.1:{sip}",
            "Directory stopped",
            "Quarterly call logs stopped",
            "Mail outbox stopped",
            "Authentication stopped",
            "Webhooks stopped",
            "Store closed: ",
        ):
            self.assertEqual(len([line for line in lines if line.startswith(said)]), 1, (said, lines))


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as _deferLater

    return _deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


class TwistdObserverTests(TestCase):
    """
    L{twistdObserver} logs where twistd would have from its options
    (C{--logfile}, C{-n}, C{--syslog}), without Twisted's per-socket lines.
    """

    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def emit(self, observer: Any, text: str) -> None:
        observer({"log_format": "{text}", "text": text, "log_namespace": "aetasip.test", "log_level": LogLevel.info,
                  "log_time": 0.0})  # fmt: skip

    def test_logfile_rotated_on_sigusr1(self) -> None:
        path = os.path.abspath(self.mktemp())
        observer = twistdObserver({"logfile": path, "nodaemon": False})
        self.emit(observer, "SIP ready on udp:127.0.0.1:5060")
        observer({"log_namespace": "log_legacy", "log_text": "(UDP Port 5060 Closed)", "log_format": "{log_text}"})
        with open(path) as f:
            self.assertEqual(
                [line.split("] ", 1)[1] for line in f.read().splitlines()], ["SIP ready on udp:127.0.0.1:5060"]
            )
        handler = signal.getsignal(signal.SIGUSR1)
        self.assertTrue(callable(handler))
        calls: list[Any] = []
        self.patch(reactor, "callFromThread", lambda f, *a: calls.append(f))
        handler(signal.SIGUSR1, None)  # type: ignore[operator]
        (rotate,) = calls
        rotate()
        self.assertTrue(os.path.exists(path + ".1"))

    def test_rotation_left_to_whoever_handles_sigusr1(self) -> None:
        def mine(number: int, frame: Any) -> None:
            pass

        signal.signal(signal.SIGUSR1, mine)
        twistdObserver({"logfile": os.path.abspath(self.mktemp()), "nodaemon": False})
        self.assertIs(signal.getsignal(signal.SIGUSR1), mine)

    def test_foreground_logs_to_stdout(self) -> None:
        out = StringIO()
        self.patch(sys, "stdout", out)
        for options in ({"nodaemon": True, "logfile": ""}, {"nodaemon": True, "logfile": "-"}):
            self.emit(twistdObserver(options), "Web service stopped")
        self.assertEqual(out.getvalue().count("Web service stopped\n"), 2, out.getvalue())
        self.assertEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)

    def test_daemon_cannot_log_to_stdout(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            twistdObserver({"nodaemon": False, "logfile": "-"})
        self.assertIn("Daemons cannot log to stdout", str(raised.exception))

    def test_syslog(self) -> None:
        sent: list[tuple[Any, ...]] = []
        from twisted.python import syslog

        self.patch(syslog.SyslogObserver, "openlog", lambda self, *a: sent.append(("open", *a)))
        self.patch(syslog.SyslogObserver, "syslog", lambda self, *a: sent.append(a))
        observer = twistdObserver({"syslog": True, "prefix": "aetasip-test", "nodaemon": True, "logfile": ""})
        self.emit(observer, "STUN stopped")
        observer(
            {
                "log_namespace": "log_legacy",
                "log_text": "SIPDatagramProtocol starting on 5060",
                "log_format": "{log_text}",
            }
        )
        self.assertEqual(sent[0][:2], ("open", "aetasip-test"))
        self.assertEqual([entry[-1] for entry in sent[1:]], ["[-] STUN stopped"])
