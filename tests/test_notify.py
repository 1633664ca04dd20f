"""
Registration webhooks (L{aetasip.notify}) against a real C{twisted.web}
receiver on loopback, over HTTP and HTTPS (a test CA): delivery of every
event kind, the signature checked the way README.rst tells receivers to,
retries after a 500, a refused connection and a timeout, queue overflow,
shutdown, and SIP never waiting for a receiver. The backoff schedule is
checked on a Clock; one test runs the whole service with a REGISTER over
UDP.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredQueue, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from aetasip import admin, config, tap
from aetasip.config import ConfigError
from aetasip.location import Binding, RegistrationEvent
from aetasip.notify import NotifierService, payload
from tests.certificates import TestCA
from tests.servers import RunningService, freePort
from tests.sipagent import Agent, Harness, Reply

reactor: Any = _reactor
SECRET = "webhook-secret"
NOW = 1_800_000_000.0


# The receiver's check, exactly as README.rst documents it.
def verify(secret: bytes, headers: Mapping[str, str], body: bytes, tolerance: int = 300) -> bool:
    timestamp = headers["X-Aetasip-Timestamp"]
    signature = headers["X-Aetasip-Signature"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old, or from the future: a replay
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(signature, "sha256=" + mac.hexdigest())


# -- the receiver --------------------------------------------------------------


class Received:
    """One POST as the receiver saw it."""

    def __init__(self, request: Request) -> None:
        self.headers = {k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.body = request.content.read() if request.content is not None else b""
        self.json = json.loads(self.body)
        self.status: int | None = None


class Recorder(Resource):
    """
    Records every POST. Answers 200, or the statuses of C{script} first,
    or holds requests unanswered while C{hang} is set, or stops in the
    middle of the answer's body while C{stallBody} is set.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.script: list[int] = []
        self.hang = False
        self.stallBody = False
        self.held: list[tuple[Request, Received]] = []

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [r.json for r in self.received if r.status == 200]

    def render_POST(self, request: Request) -> bytes | int:
        received = Received(request)
        self.received.append(received)
        if self.hang or self.stallBody:
            request.notifyFinish().addErrback(lambda _: None)
            self.held.append((request, received))
            if self.stallBody:
                request.setHeader(b"Content-Length", b"100")
                request.write(b"partial")
            return NOT_DONE_YET
        received.status = self.script.pop(0) if self.script else 200
        request.setResponseCode(received.status)
        return b"ok" if received.status == 200 else b"try again"

    def release(self) -> None:
        """Answer the held requests with 200 and stop holding."""
        self.hang = False
        held, self.held = self.held, []
        for request, received in held:
            if not request._disconnected:
                received.status = 200
                request.write(b"ok")
                request.finish()


class Receiver:
    """A twisted.web server on 127.0.0.1 (TLS with C{certificate}), tracking its connections."""

    def __init__(self, certificate: tuple[str, str] | None = None) -> None:
        self.recorder = Recorder()
        self.certificate = certificate
        self.connections: set[HTTPChannel] = set()
        self.gone: list[Deferred[None]] = []
        self.port: Any = None

    def start(self, portNumber: int = 0) -> Receiver:
        receiver = self

        class TrackingSite(Site):
            protocol = HTTPChannel  # type: ignore[assignment]

            def buildProtocol(self, addr: Any) -> Any:
                channel = super().buildProtocol(addr)
                original = channel.connectionLost
                receiver.connections.add(channel)

                def connectionLost(reason: Any) -> None:
                    receiver.connections.discard(channel)
                    original(reason)
                    if not receiver.connections:
                        waiters, receiver.gone = receiver.gone, []
                        for waiter in waiters:
                            waiter.callback(None)

                channel.connectionLost = connectionLost
                return channel

        site = TrackingSite(self.recorder)
        if self.certificate is None:
            self.port = reactor.listenTCP(portNumber, site, interface="127.0.0.1")
        else:
            certPath, keyPath = self.certificate
            with open(certPath) as c, open(keyPath) as k:
                options = PrivateCertificate.loadPEM(c.read() + k.read()).options()
            self.port = reactor.listenSSL(portNumber, site, options, interface="127.0.0.1")
        return self

    @property
    def url(self) -> str:
        scheme = "http" if self.certificate is None else "https"
        return f"{scheme}://127.0.0.1:{self.port.getHost().port}/hooks/registrations?token=t0k3n"

    async def stop(self) -> None:
        self.recorder.hang = self.recorder.stallBody = False
        await self.port.stopListening()
        if self.connections:
            gone: Deferred[None] = Deferred()
            self.gone.append(gone)
            for channel in list(self.connections):
                channel.transport.abortConnection()  # type: ignore[union-attr]
            await gone


# -- helpers -------------------------------------------------------------------


def binding(number: str = "45675001", port: int = 40000, userAgent: str = "AETA Scoop5 S/5.10") -> Binding:
    return Binding(
        aor=number,
        contact=f"sip:{number}@192.0.2.10:{port}",
        expiresAt=NOW + 3600,
        callID=f"call-{number}-{port}",
        cseq=1,
        transport="udp",
        source=("203.0.113.7", port),
        local=("127.0.0.1", 5060),
        userAgent=userAgent,
    )


def event(kind: str = "registered", number: str = "45675001", **kwargs: Any) -> RegistrationEvent:
    return RegistrationEvent(kind, binding(number), NOW + 10, **kwargs)


def settings(urls: list[str], **changes: Any) -> config.Config:
    base = {
        "server.name": "sip-test.example.net",
        "notify.urls": urls,
        "notify.secret": SECRET,
        "notify.timeout": 2.0,
        "notify.retry_delay": 0.05,
        "notify.max_backoff": 0.2,
        "notify.shutdown_grace": 0,
    }
    base.update({k.replace("__", "."): v for k, v in changes.items()})
    return config.build(base)


class NotifyTestCase(TestCase):
    timeout = 15

    def setUp(self) -> None:
        self.logged: list[str] = []

        def record(e: dict[str, Any]) -> None:
            if str(e.get("log_namespace")).startswith("aetasip.notify"):  # notify, notifydelivery
                self.logged.append(formatEvent(e))

        observer = cast(ILogObserver, record)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def receiver(self, certificate: tuple[str, str] | None = None, port: int = 0) -> Receiver:
        receiver = Receiver(certificate).start(port)
        self.addCleanup(receiver.stop)
        return receiver

    def notifier(self, urls: list[str], **changes: Any) -> NotifierService:
        notifier = NotifierService(settings(urls, **changes))
        notifier.startService()
        self.addCleanup(notifier.stopService)
        return notifier

    async def waitFor(self, condition: Callable[[], object], what: str, seconds: float = 5.0) -> None:
        deadline = reactor.seconds() + seconds
        while not condition():
            if reactor.seconds() > deadline:
                self.fail(f"gave up waiting for {what}; log: {self.logged}")
            await deferLater(reactor, 0.01, lambda: None)

    def assertLogged(self, fragment: str) -> None:
        self.assertTrue(any(fragment in line for line in self.logged), f"{fragment!r} not in {self.logged}")


# -- delivery ------------------------------------------------------------------


class DeliveryTests(NotifyTestCase):
    async def test_every_kind_is_delivered_with_its_fields(self) -> None:
        receiver = self.receiver()
        kinds = ["registered", "refreshed", "unregistered", "expired", "conflict"]
        notifier = self.notifier([receiver.url], notify__events=kinds)
        for kind in kinds[:-1]:
            notifier.registrationEvent(event(kind))
        other = binding(port=40002, userAgent="ScoopFone/2.1")
        notifier.registrationEvent(event("conflict", other=other, outcome="rejected"))
        await self.waitFor(lambda: notifier.counters()["delivered"] == 5, "five events")

        documents = receiver.recorder.delivered
        self.assertEqual([d["event"] for d in documents], kinds)
        registered = documents[0]
        self.assertEqual(
            {k: v for k, v in registered.items() if k != "id"},
            {
                "event": "registered",
                "number": "45675001",
                "contact": "sip:45675001@192.0.2.10:40000",
                "source": {"address": "203.0.113.7", "port": 40000, "transport": "udp"},
                "user_agent": "AETA Scoop5 S/5.10",
                "expires_in": 3590,
                "expires_at": "2027-01-15T09:00:00.000Z",
                "time": "2027-01-15T08:00:10.000Z",
                "server": "sip-test.example.net",
            },
        )
        for ended in documents[2:4]:
            self.assertEqual((ended["expires_in"], ended["expires_at"]), (0, ended["time"]))
        conflict = documents[4]
        self.assertEqual(conflict["outcome"], "rejected")
        self.assertEqual(
            conflict["other"],
            {
                "contact": "sip:45675001@192.0.2.10:40002",
                "source": {"address": "203.0.113.7", "port": 40002, "transport": "udp"},
                "user_agent": "ScoopFone/2.1",
            },
        )
        self.assertNotIn("other", registered)
        self.assertEqual(len({d["id"] for d in documents}), 5)
        for received in receiver.recorder.received:
            self.assertEqual(received.headers["Content-Type"], "application/json")
            self.assertEqual(received.headers["X-Aetasip-Event"], received.json["event"])
            self.assertEqual(received.headers["X-Aetasip-Delivery"], received.json["id"])
            self.assertTrue(received.headers["User-Agent"].startswith("aetasip/"))
        self.assertEqual(notifier.counters()["delivered"], 5)
        self.assertEqual(notifier.counters()["queued"], 0)

    async def test_signature_verifies_as_documented(self) -> None:
        receiver = self.receiver()
        self.notifier([receiver.url]).registrationEvent(event())
        await self.waitFor(lambda: receiver.recorder.delivered, "the event")
        (received,) = receiver.recorder.received
        self.assertTrue(verify(SECRET.encode(), received.headers, received.body))
        self.assertFalse(verify(b"another secret", received.headers, received.body))
        self.assertFalse(verify(SECRET.encode(), received.headers, received.body.replace(b"45675001", b"45675002")))
        old = dict(received.headers, **{"X-Aetasip-Timestamp": str(int(time.time()) - 3600)})
        self.assertFalse(verify(SECRET.encode(), old, received.body))

    async def test_every_url_gets_every_event(self) -> None:
        first, second = self.receiver(), self.receiver()
        notifier = self.notifier([first.url, second.url])
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["delivered"] == 2, "both receivers")
        self.assertEqual(first.recorder.delivered, second.recorder.delivered)
        self.assertEqual(notifier.counters()["delivered"], 2)

    async def test_refreshed_is_sent_only_when_enabled(self) -> None:
        receiver = self.receiver()
        notifier = self.notifier([receiver.url])
        notifier.registrationEvent(event("refreshed"))
        notifier.registrationEvent(event("registered"))
        await self.waitFor(lambda: notifier.counters()["delivered"] == 1, "the registered event")
        self.assertEqual([d["event"] for d in receiver.recorder.delivered], ["registered"])
        self.assertEqual(notifier.counters()["delivered"], 1)

        enabled = self.notifier([receiver.url], notify__events=["registered", "refreshed"])
        enabled.registrationEvent(event("refreshed"))
        enabled.registrationEvent(event("registered"))
        await self.waitFor(lambda: enabled.counters()["delivered"] == 2, "both events")
        self.assertEqual([d["event"] for d in receiver.recorder.delivered], ["registered", "refreshed", "registered"])


class PayloadTests(SynchronousTestCase):
    def test_an_expiry_announced_late_says_when_the_binding_lapsed(self) -> None:
        """
        After a restart (or by the server that took over a dead one's
        registrations), 'expired' comes later than the expiry: C{time} is
        when it is sent, C{expires_at} when the registration lapsed.
        """
        lapsed = binding()
        late = payload(RegistrationEvent("expired", lapsed, lapsed.expiresAt + 600.25), "sip1", "x")
        self.assertEqual((late["expires_in"], late["expires_at"]), (0, "2027-01-15T09:00:00.000Z"))
        self.assertEqual(late["time"], "2027-01-15T09:10:00.250Z")
        # An unregistration ends when it is made, whatever expiry it had.
        gone = payload(RegistrationEvent("unregistered", lapsed, NOW + 10), "sip1", "x")
        self.assertEqual(gone["expires_at"], gone["time"])


class HTTPSTests(NotifyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = TestCA(self.mktemp())

    async def test_receiver_certified_by_the_configured_ca(self) -> None:
        receiver = self.receiver(self.ca.issue("localhost", ("127.0.0.1",)))
        self.assertTrue(receiver.url.startswith("https://"))
        notifier = self.notifier([receiver.url], notify__ca_certificate=self.ca.caPath)
        notifier.registrationEvent(event())
        await self.waitFor(lambda: receiver.recorder.delivered, "the event over HTTPS")
        (received,) = receiver.recorder.received
        self.assertTrue(verify(SECRET.encode(), received.headers, received.body))

    async def test_certificate_for_another_name_is_refused(self) -> None:
        receiver = self.receiver(self.ca.issue("other.example.net", ()))
        notifier = self.notifier([receiver.url], notify__ca_certificate=self.ca.caPath, notify__max_attempts=2)
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["abandoned"] == 1, "the event to be given up")
        self.assertEqual(receiver.recorder.received, [])
        self.assertEqual(notifier.counters()["failed"], 2)
        self.assertLogged("not delivered: TLS: certificate does not match the host 127.0.0.1 (attempt 1 of 2")

    async def test_certificate_of_an_untrusted_ca_is_refused(self) -> None:
        stranger = TestCA(self.mktemp())
        receiver = self.receiver(stranger.issue("localhost", ("127.0.0.1",)))
        notifier = self.notifier([receiver.url], notify__ca_certificate=self.ca.caPath, notify__max_attempts=1)
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["abandoned"] == 1, "the event to be given up")
        self.assertEqual(receiver.recorder.received, [])
        self.assertLogged("abandoned after 1 attempts: TLS: ")
        self.assertLogged("certificate verify failed")


# -- failures ------------------------------------------------------------------


class RetryTests(NotifyTestCase):
    async def test_retried_after_a_500(self) -> None:
        receiver = self.receiver()
        receiver.recorder.script = [500, 503]
        notifier = self.notifier([receiver.url])
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["delivered"] == 1, "the event")
        self.assertEqual([r.status for r in receiver.recorder.received], [500, 503, 200])
        self.assertEqual(len({r.json["id"] for r in receiver.recorder.received}), 1)
        counters = notifier.counters()
        self.assertEqual((counters["delivered"], counters["failed"]), (1, 2))
        self.assertLogged("HTTP 500 Internal Server Error (attempt 1 of 10; retrying in 0.05 s)")
        self.assertLogged("HTTP 503 Service Unavailable (attempt 2 of 10; retrying in 0.1 s)")
        self.assertFalse(any("token" in line for line in self.logged), "the URL's query is not logged")

    async def test_retried_after_a_refused_connection(self) -> None:
        port = freePort()
        notifier = self.notifier([f"http://127.0.0.1:{port}/hook"])
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["failed"] >= 2, "two refused attempts")
        self.assertLogged("connection refused")
        receiver = self.receiver(port=port)
        await self.waitFor(lambda: notifier.counters()["delivered"] == 1, "the event once the receiver listens")
        self.assertEqual([d["number"] for d in receiver.recorder.delivered], ["45675001"])

    async def test_hanging_receiver_times_out_and_is_retried(self) -> None:
        receiver = self.receiver()
        receiver.recorder.hang = True
        notifier = self.notifier([receiver.url], notify__timeout=0.3)
        started = time.monotonic()
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["failed"] == 1, "the timeout")
        self.assertGreaterEqual(time.monotonic() - started, 0.29)
        self.assertLogged("no answer within 0.3 s")
        receiver.recorder.hang = False
        await self.waitFor(lambda: notifier.counters()["delivered"] == 1, "the retry")
        self.assertEqual(len({r.json["id"] for r in receiver.recorder.received}), 1)
        self.assertEqual(notifier.counters()["delivered"], 1)

    async def test_receiver_stalling_in_the_body_times_out(self) -> None:
        receiver = self.receiver()
        receiver.recorder.stallBody = True
        notifier = self.notifier([receiver.url], notify__timeout=0.3)
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["failed"] == 1, "the timeout")
        self.assertLogged("no answer within 0.3 s")
        receiver.recorder.stallBody = False
        await self.waitFor(lambda: notifier.counters()["delivered"] == 1, "the retry")

    async def test_event_is_abandoned_after_max_attempts(self) -> None:
        receiver = self.receiver()
        receiver.recorder.script = [500] * 3
        notifier = self.notifier([receiver.url], notify__max_attempts=3)
        notifier.registrationEvent(event(number="45675001"))
        notifier.registrationEvent(event(number="45675002"))
        await self.waitFor(lambda: notifier.counters()["delivered"] == 1, "the next event")
        self.assertEqual([d["number"] for d in receiver.recorder.delivered], ["45675002"])
        counters = notifier.counters()
        self.assertEqual((counters["abandoned"], counters["failed"], counters["delivered"]), (1, 3, 1))
        self.assertLogged("registered event of 45675001 abandoned after 3 attempts: HTTP 500")

    async def test_full_queue_drops_the_oldest(self) -> None:
        receiver = self.receiver()
        receiver.recorder.hang = True
        notifier = self.notifier([receiver.url], notify__queue_size=3)
        for n in range(1, 7):
            notifier.registrationEvent(event(number=f"4567500{n}"))
        # The first is being sent; 2 and 3 made room for 5 and 6.
        counters = notifier.counters()
        self.assertEqual((counters["dropped"], counters["queued"]), (2, 4))
        self.assertLogged("queue full (3 events waiting), dropping the oldest")
        await self.waitFor(lambda: receiver.recorder.held, "the first request")
        receiver.recorder.release()
        await self.waitFor(lambda: notifier.counters()["delivered"] == 4, "the rest")
        self.assertEqual(
            [d["number"] for d in receiver.recorder.delivered], ["45675001", "45675004", "45675005", "45675006"]
        )
        self.assertEqual(notifier.counters(), dict(notifier.counters(), delivered=4, dropped=2, queued=0))
        self.assertLogged("delivering again; 2 events were dropped meanwhile")


class ShutdownTests(NotifyTestCase):
    async def test_stop_gives_up_after_the_grace_period_and_counts_the_lost(self) -> None:
        receiver = self.receiver()
        receiver.recorder.hang = True
        notifier = NotifierService(settings([receiver.url], notify__shutdown_grace=0.3))
        notifier.startService()
        for n in range(1, 4):
            notifier.registrationEvent(event(number=f"4567500{n}"))
        await self.waitFor(lambda: receiver.recorder.held, "the first request")
        started = time.monotonic()
        await notifier.stopService()
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertEqual(notifier.counters()["lost"], 3)
        self.assertEqual(notifier.counters()["queued"], 0)
        self.assertLogged("3 events not delivered at shutdown")
        notifier.registrationEvent(event())
        self.assertEqual(notifier.counters()["lost"], 4)

    async def test_stop_delivers_what_is_queued_without_waiting_for_the_backoff(self) -> None:
        receiver = self.receiver()
        receiver.recorder.script = [500]
        notifier = NotifierService(
            settings([receiver.url], notify__retry_delay=60, notify__max_backoff=60, notify__shutdown_grace=5)
        )
        notifier.startService()
        notifier.registrationEvent(event())
        await self.waitFor(lambda: notifier.counters()["failed"] == 1, "the first attempt")
        self.assertLogged("retrying in 60 s")
        started = time.monotonic()
        await notifier.stopService()
        self.assertLess(time.monotonic() - started, 2)
        self.assertEqual(len(receiver.recorder.delivered), 1)
        self.assertEqual(notifier.counters()["lost"], 0)


class SIPNeverWaitsTests(NotifyTestCase):
    async def test_register_is_answered_while_the_receiver_hangs(self) -> None:
        receiver = self.receiver()
        receiver.recorder.hang = True
        notifier = self.notifier([receiver.url], notify__timeout=5.0)
        h = Harness()
        h.location.listeners.append(notifier)
        started = time.monotonic()
        first = h.register(Agent("45675001", "secret1"))
        second = h.register(Agent("45675002", "secret2", source=("127.0.0.1", 40002)))
        self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual((first.code, second.code), (200, 200))
        self.assertEqual(notifier.counters()["queued"], 2)
        await self.waitFor(lambda: receiver.recorder.held, "the request the receiver holds")
        # The receiver still holds the first event: SIP did not wait for it.
        self.assertEqual(notifier.counters()["delivered"], 0)
        receiver.recorder.release()
        await self.waitFor(lambda: notifier.counters()["delivered"] == 2, "both events")
        self.assertEqual([d["number"] for d in receiver.recorder.delivered], ["45675001", "45675002"])
        self.assertEqual(receiver.recorder.delivered[0]["user_agent"], "test-agent/1.0")


# -- the backoff schedule, on a Clock -----------------------------------------


class _Body:
    code = 200
    phrase = b"OK"
    headers = Headers()
    length = 0

    def deliverBody(self, protocol: Any) -> None:
        from twisted.python.failure import Failure

        protocol.makeConnection(None)
        protocol.connectionLost(Failure(ResponseDone()))


@implementer(IAgent)
class RefusingAgent:
    """An IAgent refusing every connection until C{accept} is set; records request times."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.headers: list[Headers] = []
        self.accept = False

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: Any = None) -> Any:
        self.times.append(self.clock.seconds())
        self.headers.append(headers or Headers())
        return succeed(_Body()) if self.accept else fail(ConnectionRefusedError())


class BackoffTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.agent = RefusingAgent(self.clock)

    def notifier(self, **changes: Any) -> NotifierService:
        cfg = settings(["http://hooks.example.net/aetasip"], **changes)
        notifier = NotifierService(cfg, reactor=self.clock, agent=self.agent)
        notifier.startService()
        return notifier

    def test_delays_double_up_to_the_cap_then_the_event_is_given_up(self) -> None:
        notifier = self.notifier(notify__retry_delay=1, notify__max_backoff=5, notify__max_attempts=6)
        notifier.registrationEvent(event())
        self.clock.pump([0.5] * 60)
        self.assertEqual([t - NOW for t in self.agent.times], [0, 1, 3, 7, 12, 17])
        counters = notifier.counters()
        self.assertEqual((counters["failed"], counters["abandoned"], counters["queued"]), (6, 1, 0))

    def test_each_attempt_is_signed_at_its_own_time(self) -> None:
        notifier = self.notifier(notify__retry_delay=30, notify__max_backoff=60)
        notifier.registrationEvent(event())
        self.agent.accept = True
        self.clock.advance(30)
        self.assertEqual(notifier.counters()["delivered"], 1)
        stamps = [h.getRawHeaders(b"X-Aetasip-Timestamp")[0] for h in self.agent.headers]  # type: ignore[index]
        self.assertEqual(stamps, [str(int(NOW)).encode(), str(int(NOW) + 30).encode()])
        signatures = {h.getRawHeaders(b"X-Aetasip-Signature")[0] for h in self.agent.headers}  # type: ignore[index]
        self.assertEqual(len(signatures), 2)

    def test_stop_while_waiting_to_retry(self) -> None:
        notifier = self.notifier(notify__retry_delay=30, notify__shutdown_grace=0)
        notifier.registrationEvent(event())
        stopped = notifier.stopService()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(notifier.counters()["lost"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ConfigurationTests(SynchronousTestCase):
    def test_urls_must_be_http_or_https(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            NotifierService(settings(["ftp://example.net/x"]), reactor=Clock())
        self.assertEqual(
            str(raised.exception),
            "configuration key notify.urls = ['ftp://example.net/x']: expected a list of http:// or https:// URLs",
        )

    def test_a_secret_is_required(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            NotifierService(settings(["https://example.net/x"], notify__secret=None), reactor=Clock())
        self.assertEqual(raised.exception.key, "notify.secret")

    def test_ca_file_must_hold_certificates(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        with self.assertRaises(ConfigError) as raised:
            NotifierService(settings(["https://example.net/x"], notify__ca_certificate=path), reactor=Clock())
        self.assertEqual(raised.exception.key, "notify.ca_certificate")

    def test_missing_secret_stops_the_start_with_one_line(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        cfg = config.build(
            {
                "store.url": f"sqlite:///{os.path.join(directory, 'aetasip.db')}",
                "notify.urls": ["https://hooks.example.net/aetasip"],
            }
        )
        with self.assertRaises(SystemExit) as raised:
            tap.makeService({"config": cfg})
        self.assertEqual(
            str(raised.exception.code),
            "aetasip: configuration key notify.secret = None: "
            "expected a non-empty string (the signing key) when notify.urls is set",
        )

    def test_events_are_checked(self) -> None:
        with self.assertRaises(ConfigError):
            config.build({"notify.events": ["registred"]})


# -- end to end ----------------------------------------------------------------


class UDPClient(DatagramProtocol):
    def __init__(self) -> None:
        self.replies: DeferredQueue[Reply] = DeferredQueue()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.replies.put(Reply(data))


class EndToEndTests(NotifyTestCase):
    timeout = 30

    async def test_register_over_udp_reaches_the_receiver_signed(self) -> None:
        receiver = self.receiver()
        directory = self.mktemp()
        os.makedirs(directory)
        server = RunningService(
            directory,
            server__name="sip-e2e.example.net",
            notify__urls=[receiver.url],
            notify__secret=SECRET,
            notify__timeout=2.0,
        )
        out, err = io.StringIO(), io.StringIO()
        code = admin.main(
            ["--store", server.storeURL, "account", "add", "45675001", "--kind", "premium", "--password", "pw-1"],
            out,
            err,
        )
        self.assertEqual(code, 0, err.getvalue())
        await server.start()
        self.addCleanup(server.stop)
        names = [child.name for child in server.service]
        self.assertLess(names.index("notifier"), names.index("sip"))

        client = UDPClient()
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        agent = Agent("45675001", "pw-1", source=("127.0.0.1", port.getHost().port))
        target = ("127.0.0.1", server.ports[0])

        async def exchange(data: bytes) -> Reply:
            client.transport.write(data, target)  # type: ignore[union-attr]
            reply: Reply = await client.replies.get().addTimeout(5, reactor)
            return reply

        challenge = await exchange(agent.register())
        self.assertEqual(challenge.code, 401)
        ok = await exchange(agent.register(auth=challenge.challenge()))
        self.assertEqual(ok.code, 200)

        await self.waitFor(lambda: receiver.recorder.delivered, "the registered event")
        (received,) = receiver.recorder.received
        self.assertTrue(verify(SECRET.encode(), received.headers, received.body))
        document = received.json
        self.assertEqual(document["event"], "registered")
        self.assertEqual(document["number"], "45675001")
        self.assertEqual(document["server"], "sip-e2e.example.net")
        self.assertEqual(document["source"], {"address": "127.0.0.1", "port": port.getHost().port, "transport": "udp"})
        self.assertEqual(document["user_agent"], "test-agent/1.0")
        self.assertEqual(document["expires_in"], 3600)
