"""
Delivery of webhook events to one receiver URL (L{Destination}): its
bounded queue, its delivery loop (one signed POST at a time, a timeout
on each, retries with a doubling delay, events given up after
C{notify.max_attempts}) and its counters. L{aetasip.notify} encodes the
events and runs one L{Destination} per URL of C{notify.urls}.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import urlsplit

import attrs
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from aetasip import __version__
from aetasip.config import ConfigError

log = Logger()

COUNTERS = ("delivered", "failed", "dropped", "abandoned", "lost", "queued")

_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """
    The C{X-Aetasip-Signature} value of a POST: C{"sha256="} and the hex
    HMAC-SHA256, keyed with C{secret}, of the C{X-Aetasip-Timestamp} value,
    a dot, and the exact body bytes.
    """
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


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


def shownURL(url: str) -> str:
    """C{url} for the log: no credentials, no query (it may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


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
        self.shown = shownURL(url)
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


def within(d: Deferred[Any], seconds: float, clock: IReactorTime) -> Deferred[bool]:
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
