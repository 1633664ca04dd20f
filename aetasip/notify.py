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

See L{aetasip.notifydelivery.signature} and README.rst for how a receiver checks it.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IAgent
from zope.interface import implementer

from aetasip.config import ConfigError, Key, choice, declare, integer, listOf, number, optional, readableFile, text
from aetasip.interfaces import IRegistrationListener
from aetasip.location import Binding, RegistrationEvent
from aetasip.notifydelivery import COUNTERS, Destination, Pending, Policy, trustRoot, within

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


def _checkURL(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:
        return False


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
            await within(idle, self.grace, self.clock)
        lost = sum(destination.close() for destination in self.destinations)
        if lost:
            log.warn("Webhooks: {lost} events not delivered at shutdown", lost=lost)
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        log.info("Webhooks stopped")
