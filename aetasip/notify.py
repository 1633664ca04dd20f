"""
Registration webhooks: each registration event POSTed as signed JSON to
every URL of C{notify.urls}.

SIP never waits for a receiver: L{NotifierService.registrationEvent} encodes
the event and appends it to a bounded queue per URL, then returns. One
delivery loop per URL sends the events in order, one at a time, with a
timeout on every request, retrying failures after 1, 2, 4 … seconds up to
C{notify.max_backoff}, and gives an event up after C{notify.max_attempts}.
When a queue is full its oldest event is dropped. Every outcome is counted
(L{NotifierService.counters}) and every failure logged with its reason.

Each POST carries::

    Content-Type: application/json
    X-Aetasip-Event: registered
    X-Aetasip-Delivery: <the event's id, the same on every retry>
    X-Aetasip-Timestamp: <POSIX seconds of this attempt>
    X-Aetasip-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

See L{signature} and README.rst for how a receiver checks it.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import hmac
import json
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import attrs
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.application import service
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from aetasip import __version__
from aetasip.config import ConfigError, Key, choice, declare, integer, listOf, number, optional, readableFile, text
from aetasip.interfaces import IRegistrationListener
from aetasip.location import Binding, RegistrationEvent

log = Logger()

# The notify.* configuration keys (documented in tap-config.py too); NotifierService
# checks further what one key alone cannot tell.
declare(
    Key(
        "notify.urls",
        [],
        listOf(text, "http:// or https:// URLs"),
        "URLs every registration event is POSTed to, as signed JSON (empty: no webhooks).",
    ),
    Key(
        "notify.secret",
        None,
        optional(text),
        "HMAC-SHA256 key signing each POST (X-Aetasip-Signature); required when notify.urls is set.",
    ),
    Key(
        "notify.events",
        ["registered", "unregistered", "expired", "conflict"],
        listOf(
            choice("registered", "refreshed", "unregistered", "expired", "conflict"),
            "'registered', 'refreshed', 'unregistered', 'expired' or 'conflict'",
        ),
        "Events sent. 'refreshed' (every re-REGISTER of a codec) is off by default: it is by far the most frequent.",
    ),
    Key(
        "notify.ca_certificate",
        None,
        optional(readableFile),
        "PEM file of the CA certificates trusted for https:// URLs (default: the system's trust store).",
    ),
    Key(
        "notify.timeout",
        10,
        number(0.1, 300),
        "Seconds a POST may take, from connecting to the end of the answer.",
    ),
    Key(
        "notify.queue_size",
        1000,
        integer(1, 1000000),
        "Events waiting per URL; when full, the oldest are dropped (and counted).",
    ),
    Key(
        "notify.max_attempts",
        10,
        integer(1, 1000),
        "Attempts per event and URL (the first included) before it is given up; any answer but 2xx is a failure.",
    ),
    Key(
        "notify.retry_delay",
        1,
        number(0.01, 3600),
        "Seconds before the first retry; the delay doubles at each further retry up to notify.max_backoff.",
    ),
    Key("notify.max_backoff", 60, number(0.01, 86400), "Longest delay between two attempts, in seconds."),
    Key(
        "notify.shutdown_grace",
        5,
        number(0, 300),
        "Seconds a stopping service keeps delivering queued events; what is left then is logged as lost.",
    ),
)

COUNTERS = ("delivered", "failed", "dropped", "abandoned", "lost", "queued")

_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """
    The C{X-Aetasip-Signature} value of a POST: C{"sha256="} and the hex
    HMAC-SHA256, keyed with C{secret}, of the C{X-Aetasip-Timestamp} value,
    a dot, and the exact body bytes.
    """
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def isoTime(when: float) -> str:
    """C{when} (POSIX time) in ISO 8601, UTC, to the millisecond: C{2027-01-15T08:00:00.000Z}."""
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _agent(binding: Binding) -> dict[str, Any]:
    return {
        "contact": binding.contact,
        "source": {"address": binding.source[0], "port": binding.source[1], "transport": binding.transport},
        "user_agent": binding.userAgent,
    }


def payload(event: RegistrationEvent, serverName: str, eventID: str) -> dict[str, Any]:
    """
    The JSON document of C{event}. C{expires_in} is 0 once the binding is
    gone (C{unregistered}, C{expired}); C{expires_at} is then when it went:
    the event's time, or for C{expired} the moment the binding lapsed
    (earlier when its expiry is announced late: after a restart, or by the
    server that took over a dead one's registrations).
    """
    binding = event.binding
    ended = event.kind in ("unregistered", "expired")
    remaining = 0 if ended else max(0, round(binding.expiresAt - event.time))
    if event.kind == "expired":
        endedAt = min(event.time, binding.expiresAt)
    elif ended:
        endedAt = event.time
    else:
        endedAt = binding.expiresAt
    document: dict[str, Any] = {
        "id": eventID,
        "event": event.kind,
        "number": binding.aor,
        **_agent(binding),
        "expires_in": remaining,
        "expires_at": isoTime(endedAt),
        "time": isoTime(event.time),
        "server": serverName,
    }
    if event.kind == "conflict":
        document["other"] = _agent(event.other) if event.other is not None else None
        document["outcome"] = event.outcome
    return document


class RequestTimedOut(Exception):
    """The receiver did not answer within C{notify.timeout}."""

    def __str__(self) -> str:
        return f"no answer within {self.args[0]:g} s"


class HTTPStatusError(Exception):
    """The receiver answered, but not with 2xx."""

    def __init__(self, code: int, phrase: bytes) -> None:
        super().__init__(code, phrase)
        self.code = code
        self.phrase = phrase.decode("latin-1")

    def __str__(self) -> str:
        return f"HTTP {self.code} {self.phrase}".rstrip()


def describe(reason: BaseException, timeout: float) -> str:
    """Why an attempt failed, in a few words for the log."""
    if isinstance(reason, (ResponseNeverReceived, RequestTransmissionFailed, ResponseFailed)):
        causes = [r.value for r in reason.reasons if not isinstance(r.value, error.ConnectionDone)]
        return "; ".join(describe(c, timeout) for c in causes) or "connection closed without an answer"
    if isinstance(reason, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (error.ConnectingCancelledError, error.TCPTimedOutError, error.TimeoutError)):
        return f"could not connect within {timeout:g} s"
    if isinstance(reason, error.DNSLookupError):
        return "host name not found"
    if isinstance(reason, SSL.Error):
        queue = reason.args[0] if reason.args and isinstance(reason.args[0], list) else []
        details = [str(part[2]) for part in queue if isinstance(part, tuple) and len(part) == 3]
        return "TLS: " + ("; ".join(details) or "handshake failed")
    if type(reason).__module__.startswith("service_identity"):
        names = [getattr(e, "mismatched_id", None) for e in getattr(reason, "errors", ())]
        shown = ", ".join(str(getattr(n, "hostname", None) or getattr(n, "ip", None) or n) for n in names if n)
        return f"TLS: certificate does not match the host {shown}".rstrip()
    return str(reason) or type(reason).__name__


def _shown(url: str) -> str:
    """C{url} for the log: no credentials, no query (it may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _checkURL(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:
        return False


def trustRoot(path: str | None) -> Any:
    """
    The trust root for C{https://} receivers: the certificates of the PEM
    file C{path}, or the platform's when C{None}.

    @raise ConfigError: when C{path} holds no certificate.
    """
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            blocks = _CERTIFICATE.findall(f.read())
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except (OSError, SSL.Error):
        certificates = []
    if not certificates:
        raise ConfigError("notify.ca_certificate", path, "a PEM file of CA certificates")
    return trustRootFromCertificates(certificates)


@attrs.frozen
class Policy:
    """How events are delivered: the C{notify.*} keys."""

    secret: bytes
    timeout: float
    queueSize: int
    maxAttempts: int
    retryDelay: float
    maxBackoff: float

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after the failed attempt number C{attempt} (from 1)."""
        return float(min(self.retryDelay * 2.0 ** min(attempt - 1, 64), self.maxBackoff))


@attrs.frozen
class Pending:
    """One encoded event, shared by the queues of every URL."""

    id: str
    kind: str
    number: str
    body: bytes


class _Discard(Protocol):
    """Reads an answer's body to its end and forgets it."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[None]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


class Destination:
    """
    One receiver URL: its queue, its delivery loop and its counters.

    @ivar queue: the events waiting, oldest first (not the one being sent).
    @ivar current: the event being sent or waiting for its retry, or C{None}.
    """

    def __init__(self, url: str, policy: Policy, clock: IReactorTime, client: HTTPClient) -> None:
        self.url = url
        self.shown = _shown(url)
        self.policy = policy
        self.clock = clock
        self.client = client
        self.queue: collections.deque[Pending] = collections.deque()
        self.current: Pending | None = None
        self.delivered = self.failed = self.dropped = self.abandoned = self.lost = 0
        self._droppedSinceDelivery = 0
        self._active = self._closed = False
        self._loop: Deferred[None] | None = None
        self._idle: list[Deferred[None]] = []
        self._retry: IDelayedCall | None = None

    def counters(self) -> dict[str, int]:
        """
        C{delivered} events, C{failed} attempts, events C{dropped} from a full
        queue, C{abandoned} after the last attempt, C{lost} at shutdown, and
        C{queued} now (the one being sent included).
        """
        queued = len(self.queue) + (self.current is not None)
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "abandoned": self.abandoned,
            "lost": self.lost,
            "queued": queued,
        }

    def enqueue(self, event: Pending) -> None:
        """Queue C{event}, dropping the oldest one when the queue is full. Never blocks."""
        if self._closed:
            self.lost += 1
            return
        if len(self.queue) >= self.policy.queueSize:
            self.queue.popleft()
            self.dropped += 1
            if not self._droppedSinceDelivery:
                log.warn(
                    "Webhook {url}: queue full ({size} events waiting), dropping the oldest",
                    url=self.shown,
                    size=self.policy.queueSize,
                )
            self._droppedSinceDelivery += 1
        self.queue.append(event)
        self._kick()

    def start(self) -> None:
        self._active = True
        self._kick()

    def hurry(self) -> None:
        """Retry now rather than at the end of the current backoff delay."""
        if self._retry is not None and self._retry.active():
            self._retry.reset(0)

    def whenIdle(self) -> Deferred[None]:
        """A Deferred firing once nothing is queued or being sent."""
        if self._loop is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def close(self) -> int:
        """
        Stop delivering: the request in progress is cancelled, the queue is
        emptied and events enqueued from now on are lost.

        @return: how many events were lost.
        """
        self._active, self._closed = False, True
        lost = len(self.queue) + (self.current is not None)
        self.lost += lost
        self.queue.clear()
        if self._loop is not None:
            self._loop.cancel()
        return lost

    def _kick(self) -> None:
        if self._active and self._loop is None and self.queue:
            loop = ensureDeferred(self._run())
            self._loop = loop
            loop.addErrback(self._crashed)
            loop.addBoth(self._ended)

    def _crashed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("Webhook {url}: delivery loop failed", failure, url=self.shown)

    def _ended(self, _: object) -> None:
        self._loop = None
        waiters, self._idle = self._idle, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    async def _run(self) -> None:
        while self.queue:
            self.current = self.queue.popleft()
            try:
                await self._deliver(self.current)
            finally:
                self.current = None

    async def _deliver(self, event: Pending) -> None:
        policy = self.policy
        for attempt in range(1, policy.maxAttempts + 1):
            try:
                await self._post(event)
            except Exception as e:
                if self._closed or isinstance(e, CancelledError):
                    raise CancelledError() from e
                self.failed += 1
                reason = describe(e, policy.timeout)
                if attempt == policy.maxAttempts:
                    self.abandoned += 1
                    log.error(
                        "Webhook {url}: {kind} event of {number} abandoned after {attempts} attempts: {reason}",
                        url=self.shown,
                        kind=event.kind,
                        number=event.number,
                        attempts=attempt,
                        reason=reason,
                    )
                    return
                delay = policy.backoff(attempt)
                log.warn(
                    "Webhook {url}: {kind} event of {number} not delivered: {reason} "
                    "(attempt {attempt} of {attempts}; retrying in {delay:g} s)",
                    url=self.shown,
                    kind=event.kind,
                    number=event.number,
                    reason=reason,
                    attempt=attempt,
                    attempts=policy.maxAttempts,
                    delay=delay,
                )
                await self._sleep(delay)
            else:
                self.delivered += 1
                if self._droppedSinceDelivery:
                    log.warn(
                        "Webhook {url}: delivering again; {count} events were dropped meanwhile",
                        url=self.shown,
                        count=self._droppedSinceDelivery,
                    )
                    self._droppedSinceDelivery = 0
                return

    def _sleep(self, seconds: float) -> Deferred[None]:
        def cancel(_: Deferred[None]) -> None:
            if call.active():
                call.cancel()

        done: Deferred[None] = Deferred(cancel)
        call = self.clock.callLater(seconds, done.callback, None)
        self._retry = call
        return done

    def _post(self, event: Pending) -> Deferred[None]:
        timestamp = str(int(self.clock.seconds()))
        headers = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"User-Agent": [f"aetasip/{__version__}".encode()],
                b"X-Aetasip-Event": [event.kind.encode()],
                b"X-Aetasip-Delivery": [event.id.encode()],
                b"X-Aetasip-Timestamp": [timestamp.encode()],
                b"X-Aetasip-Signature": [signature(self.policy.secret, timestamp, event.body).encode()],
            }
        )
        exchange: Deferred[Any] = self.client.post(self.url, data=event.body, headers=headers, unbuffered=True)
        exchange.addCallback(self._answered)
        # Cancelled at the deadline: the connection is aborted, whatever stage it is at.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            exchange.cancel()

        deadline = self.clock.callLater(self.policy.timeout, expire)

        def settle(result: object) -> object:
            if deadline.active():
                deadline.cancel()
            if expired and isinstance(result, Failure):
                raise RequestTimedOut(self.policy.timeout)
            return result

        return exchange.addBoth(settle)

    @staticmethod
    def _answered(response: IResponse) -> Deferred[None]:
        body = _Discard()
        response.deliverBody(body)
        if 200 <= response.code < 300:
            return body.done
        status = HTTPStatusError(response.code, response.phrase)

        def failed(_: object) -> None:
            raise status

        return body.done.addBoth(failed)


def _within(d: Deferred[Any], seconds: float, clock: IReactorTime) -> Deferred[bool]:
    """Fires with C{True} when C{d} fires within C{seconds}, else C{False}; C{d} is left alone."""
    result: Deferred[bool] = Deferred()

    def late() -> None:
        result.callback(False)

    call = clock.callLater(seconds, late)

    def done(outcome: object) -> object:
        if call.active():
            call.cancel()
            result.callback(True)
        return outcome

    d.addBoth(done)
    return result


@implementer(IRegistrationListener)
class NotifierService(service.Service):
    """
    Sends registration events to the webhook receivers of C{notify.urls}.

    Append it to L{aetasip.location.LocationService.listeners}.

    @param config: the L{aetasip.config.Config}.
    @param reactor: the reactor (time and network), or a C{Clock} with
        C{agent} for tests.
    @param agent: the L{IAgent} making requests; by default an L{Agent}
        verifying HTTPS receivers against C{notify.ca_certificate} (or the
        platform's trust) with C{service_identity} host name checks.
    @raise ConfigError: for a bad URL, a missing secret or CA file.
    """

    name = "notifier"

    def __init__(self, config: Any, reactor: Any = None, agent: IAgent | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        urls = list(config["notify.urls"])
        if not all(_checkURL(url) for url in urls):
            raise ConfigError("notify.urls", urls, "a list of http:// or https:// URLs")
        secret = config["notify.secret"]
        if urls and not secret:
            raise ConfigError("notify.secret", secret, "a non-empty string (the signing key) when notify.urls is set")
        self.clock: IReactorTime = reactor
        self.serverName: str = config["server.name"]
        self.events = frozenset(config["notify.events"])
        self.grace: float = config["notify.shutdown_grace"]
        timeout = config["notify.timeout"]
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            policy = BrowserLikePolicyForHTTPS(trustRoot(config["notify.ca_certificate"]))
            agent = Agent(reactor, contextFactory=policy, connectTimeout=timeout, pool=self._pool)
        client = HTTPClient(agent)
        delivery = Policy(
            secret=(secret or "").encode("utf-8"),
            timeout=timeout,
            queueSize=config["notify.queue_size"],
            maxAttempts=config["notify.max_attempts"],
            retryDelay=config["notify.retry_delay"],
            maxBackoff=config["notify.max_backoff"],
        )
        self.destinations = [Destination(url, delivery, reactor, client) for url in urls]

    def counters(self) -> dict[str, int]:
        """The counters of L{Destination.counters}, summed over every URL."""
        totals = dict.fromkeys(COUNTERS, 0)
        for destination in self.destinations:
            for name, value in destination.counters().items():
                totals[name] += value
        return totals

    def registrationEvent(self, event: RegistrationEvent) -> None:
        """Encode C{event} and queue it for every URL; returns at once."""
        if event.kind not in self.events or not self.destinations:
            return
        eventID = uuid.uuid4().hex
        body = json.dumps(payload(event, self.serverName, eventID), separators=(",", ":")).encode("ascii")
        pending = Pending(eventID, event.kind, event.binding.aor, body)
        for destination in self.destinations:
            destination.enqueue(pending)

    def startService(self) -> None:
        super().startService()
        log.info(
            "Webhooks: {events} events to {receivers}",
            events=", ".join(sorted(self.events)),
            receivers=", ".join(destination.shown for destination in self.destinations),
        )
        for destination in self.destinations:
            destination.start()

    def stopService(self) -> Deferred[None]:
        """
        Keep delivering for up to C{notify.shutdown_grace} seconds (retries
        waiting for their delay are sent at once), then give up, log how
        many events were lost, and close the connections.
        """
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        for destination in self.destinations:
            destination.hurry()
        idle = gatherResults([destination.whenIdle() for destination in self.destinations])
        if self.grace > 0:
            await _within(idle, self.grace, self.clock)
        lost = sum(destination.close() for destination in self.destinations)
        if lost:
            log.warn("Webhooks: {lost} events not delivered at shutdown", lost=lost)
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        log.info("Webhooks stopped")
