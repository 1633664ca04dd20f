"""
C{/metrics}: a Prometheus collector that reads, at each scrape, the
counters the running service already keeps (the SIP core's and its
transaction layers', flood control's, the authentication limits',
STUN's, the webhook's, the store's latency), the bindings of the
location service and the calls in progress (through L{ICallControl});
L{CallCounters} (an L{ICallObserver}) and L{RegistrationCounters} (an
L{IRegistrationListener}) count what happened; the relay nodes' sessions
(L{IRelay.sessions}) and the mail outbox are read before the scrape is
answered (L{ServiceCollector.refresh}), at most every
L{REFRESH_INTERVAL} seconds.

Names follow what operators already graph for Kamailio
(C{kamailio_usrloc_registered_users}, C{kamailio_dialog_active_dialogs},
C{kamailio_tmx_active_transactions}, replies by code):
C{aetasip_registered_users}, C{aetasip_active_dialogs},
C{aetasip_active_transactions}, C{aetasip_sip_replies_total{method,code}}, ...
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet.defer import Deferred, DeferredList
from zope.interface import implementer

from aetasip import __version__
from aetasip.calls.call import EndCause
from aetasip.interfaces import ICallControl, ICallObserver, IRegistrationListener
from aetasip.records.record import UNKNOWN_END, relayOf
from aetasip.relay.stats import RelayStats

PREFIX = "aetasip"

REFRESH_INTERVAL = 1.0
"""Seconds during which a scrape reuses the relay sessions and outbox read for the one before."""

REFRESH_TIMEOUT = 2.0
"""Seconds a relay node or the store has to answer a scrape."""

END_CAUSES = (*(v for k, v in vars(EndCause).items() if not k.startswith("_")), UNKNOWN_END)
REGISTRATION_EVENTS = ("registered", "refreshed", "unregistered", "expired", "conflict")


def _received(stats: RelayStats) -> tuple[int, int, int]:
    """
    Packets, bytes and packets lost the relay received from both legs of a
    call (a loss the node did not measure, such as rtpengine's for plain
    RTP, counts as none).
    """
    caller, callee = stats.caller.received, stats.callee.received
    lost = (caller.lost or 0) + (callee.lost or 0)
    return caller.packets + callee.packets, caller.bytes + callee.bytes, lost


@implementer(ICallObserver)
class CallCounters:
    """
    Counts calls as they start, are answered and end (by end cause), and
    the relay's final figures of the relayed ones, by node.
    """

    def __init__(self) -> None:
        self.started = 0
        self.answered = 0
        self.ended: Counter[str] = Counter()
        # node -> [calls, packets, bytes, lost]
        self.relayed: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    def callStarted(self, call: Any) -> None:
        self.started += 1

    def callRinging(self, call: Any) -> None:
        pass

    def callAnswered(self, call: Any) -> None:
        self.answered += 1

    def callEnded(self, call: Any) -> None:
        self.ended[call.endCause if call.endCause in END_CAUSES else "other"] += 1
        node, stats = relayOf(call.media)
        if node is not None:
            totals = self.relayed[node]
            totals[0] += 1
            if stats is not None:
                packets, octets, lost = _received(stats)
                totals[1] += packets
                totals[2] += octets
                totals[3] += lost


@implementer(IRegistrationListener)
class RegistrationCounters:
    """Counts registration events by kind."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()

    def registrationEvent(self, event: Any) -> None:
        self.events[event.kind] += 1


class ServiceCollector(Collector):
    """
    The service's figures, read live at each scrape (nothing is copied or
    counted twice).

    @ivar core: the L{aetasip.element.core.SIPCore}: C{counters} and C{flood}.
    @ivar limits: the authentication's L{aetasip.auth.limits.FailureLimits}, or C{None}.
    @ivar location: the L{aetasip.location.LocationService}.
    @ivar calls: the L{ICallControl} of the calls in progress.
    @ivar stunCounters: the STUN server's L{aetasip.stun.server.Counters}, or C{None}.
    @ivar transactions: the server transaction layer (final responses by
        method and code, transactions in progress), or C{None}.
    @ivar clients: the client transaction layer, or C{None}.
    @ivar callCounters: the L{CallCounters} the proxy tells, or C{None}.
    @ivar registrations: the L{RegistrationCounters} the location tells, or C{None}.
    @ivar relays: the relay nodes (L{IRelay}) by name.
    @ivar notifier: the webhook's L{aetasip.notify.NotifierService}, or C{None}.
    @ivar store: the L{aetasip.store.AsyncStore} (its latency, the mail outbox), or C{None}.
    @ivar reactor: the clock and timeouts of L{refresh}; without it, nothing is refreshed.
    """

    def __init__(
        self,
        core: Any,
        limits: Any,
        location: Any,
        calls: ICallControl,
        stunCounters: Any = None,
        *,
        transactions: Any = None,
        clients: Any = None,
        callCounters: CallCounters | None = None,
        registrations: RegistrationCounters | None = None,
        relays: dict[str, Any] | None = None,
        notifier: Any = None,
        store: Any = None,
        reactor: Any = None,
    ) -> None:
        self.core = core
        self.limits = limits
        self.location = location
        self.calls = calls
        self.stunCounters = stunCounters
        self.transactions = transactions
        self.clients = clients
        self.callCounters = callCounters
        self.registrations = registrations
        self.relays = relays or {}
        self.notifier = notifier
        self.store = store
        self.reactor = reactor
        self._refreshedAt: float | None = None
        self._relaySessions: dict[str, list[RelayStats] | None] = {}
        self._mail: dict[str, int] | None = None

    # -- what is read before a scrape

    async def refresh(self) -> None:
        """
        Read the relay nodes' sessions and the outbox's counts, each within
        L{REFRESH_TIMEOUT} seconds (a node that does not answer is down), unless
        read less than L{REFRESH_INTERVAL} seconds ago.
        """
        if self.reactor is None:
            return
        now = self.reactor.seconds()
        if self._refreshedAt is not None and now - self._refreshedAt < REFRESH_INTERVAL:
            return
        self._refreshedAt = now
        names = list(self.relays)
        asked: list[Deferred[Any]] = [self._timed(self.relays[name].sessions()) for name in names]
        if self.store is not None:
            asked.append(self._timed(self.store.mailCounts()))
        results = await DeferredList(asked, consumeErrors=True)
        for name, (ok, value) in zip(names, results[: len(names)], strict=True):
            self._relaySessions[name] = [stats for _, _, stats in value] if ok else None
        if self.store is not None:
            ok, value = results[-1]
            self._mail = value if ok else None

    def _timed(self, d: Deferred[Any]) -> Deferred[Any]:
        return d.addTimeout(REFRESH_TIMEOUT, self.reactor)

    # -- the scrape

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(PREFIX, "The aetasip version.")
        info.add_metric([], {"version": __version__})
        yield info
        yield from self._registrations()
        yield from self._calls()
        yield from self._sip()
        yield from self._auth()
        yield from self._relay()
        yield from self._stun()
        yield from self._queues()
        yield from self._store()

    def _registrations(self) -> Iterator[Metric]:
        bindings = self.location.bindings()
        yield GaugeMetricFamily(
            f"{PREFIX}_registered_users", "Numbers with at least one current binding.", len({b.aor for b in bindings})
        )
        contacts = GaugeMetricFamily(
            f"{PREFIX}_registered_contacts", "Current bindings, by transport.", labels=["transport"]
        )
        byTransport = Counter(b.transport for b in bindings)
        for transport in ("udp", "tcp", "tls"):
            contacts.add_metric([transport], byTransport.get(transport, 0))
        yield contacts
        if self.registrations is not None:
            events = CounterMetricFamily(
                f"{PREFIX}_registration_events", "Registration changes, by kind.", labels=["kind"]
            )
            for kind in REGISTRATION_EVENTS:
                events.add_metric([kind], self.registrations.events.get(kind, 0))
            yield events

    def _calls(self) -> Iterator[Metric]:
        active = self.calls.active()
        yield GaugeMetricFamily(f"{PREFIX}_active_dialogs", "Calls in progress (set up or answered).", len(active))
        byState = GaugeMetricFamily(f"{PREFIX}_active_calls", "Calls in progress, by state.", labels=["state"])
        states = Counter(call.state for call in active)
        for state in ("attempting", "ringing", "answered"):
            byState.add_metric([state], states.get(state, 0))
        yield byState
        counters = self.callCounters
        if counters is None:
            return
        yield CounterMetricFamily(f"{PREFIX}_calls_started", "Calls routed (first branches sent).", counters.started)
        yield CounterMetricFamily(f"{PREFIX}_calls_answered", "Calls answered.", counters.answered)
        ended = CounterMetricFamily(f"{PREFIX}_calls_ended", "Calls ended, by end cause.", labels=["end_cause"])
        for cause in (*END_CAUSES, "other"):
            ended.add_metric([cause], counters.ended.get(cause, 0))
        yield ended

    def _sip(self) -> Iterator[Metric]:
        counters = self.core.counters
        yield CounterMetricFamily(f"{PREFIX}_sip_received_requests", "SIP requests received.", counters["requests"])
        yield CounterMetricFamily(f"{PREFIX}_sip_received_replies", "SIP responses received.", counters["responses"])
        yield CounterMetricFamily(
            f"{PREFIX}_sip_bad_messages", "Malformed SIP requests received (answered 400).", counters["bad"]
        )
        yield CounterMetricFamily(
            f"{PREFIX}_sip_dropped_messages", "SIP messages dropped unparsable.", counters["dropped"]
        )
        if self.transactions is not None:
            layer = self.transactions
            replies = CounterMetricFamily(
                f"{PREFIX}_sip_replies",
                "Final SIP responses sent, by request method and status code (REGISTER and INVITE outcomes).",
                labels=["method", "code"],
            )
            for (method, code), count in sorted(layer.finalResponses.items()):
                replies.add_metric([method, str(code)], count)
            yield replies
            active = GaugeMetricFamily(
                f"{PREFIX}_active_transactions", "SIP transactions in progress, by side.", labels=["side"]
            )
            active.add_metric(["server"], len(layer.transactions))
            if self.clients is not None:
                active.add_metric(["client"], len(self.clients.transactions))
            yield active
            yield CounterMetricFamily(
                f"{PREFIX}_sip_absorbed_retransmissions", "Retransmitted requests answered from their transaction.",
                layer.retransmissionsAbsorbed,
            )  # fmt: skip
            yield CounterMetricFamily(
                f"{PREFIX}_sip_withheld_replies", "Responses not sent: larger than the request that asked for them.",
                layer.withheld,
            )  # fmt: skip
        flood = self.core.flood
        if flood is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_flood_dropped_messages", "Messages dropped from sources banned for flooding.",
                flood.counters["dropped"],
            )  # fmt: skip
            yield CounterMetricFamily(f"{PREFIX}_flood_bans", "Sources banned for flooding.", flood.counters["bans"])

    def _auth(self) -> Iterator[Metric]:
        if self.limits is None:
            return
        counters = self.limits.counters
        yield CounterMetricFamily(f"{PREFIX}_auth_failures", "Failed digest authentications.", counters["failures"])
        yield CounterMetricFamily(f"{PREFIX}_auth_bans", "Sources banned for failing authentication.", counters["bans"])
        yield CounterMetricFamily(
            f"{PREFIX}_auth_refused_requests", "Requests refused from sources banned for failing authentication.",
            counters["refused"],
        )  # fmt: skip

    def _relay(self) -> Iterator[Metric]:
        if not self.relays:
            return
        up = GaugeMetricFamily(
            f"{PREFIX}_relay_up", "Whether the relay node answered the last scrape's query.", labels=["node"]
        )
        sessions = GaugeMetricFamily(f"{PREFIX}_relay_sessions", "Relay sessions in progress.", labels=["node"])
        calls = CounterMetricFamily(f"{PREFIX}_relay_calls", "Relayed calls ended.", labels=["node"])
        packets = CounterMetricFamily(
            f"{PREFIX}_relay_packets", "RTP packets the relay received from the parties.", labels=["node"]
        )
        octets = CounterMetricFamily(f"{PREFIX}_relay_bytes", "Their UDP payload bytes.", labels=["node"])
        lost = CounterMetricFamily(
            f"{PREFIX}_relay_lost_packets", "RTP packets missing from the sequences the relay received.",
            labels=["node"],
        )  # fmt: skip
        ended = self.callCounters.relayed if self.callCounters is not None else {}
        for name in self.relays:
            live = self._relaySessions.get(name)
            up.add_metric([name], 0 if live is None else 1)
            sessions.add_metric([name], len(live or ()))
            done = ended.get(name, [0, 0, 0, 0])
            figures = [done[1], done[2], done[3]]
            for stats in live or ():
                for i, value in enumerate(_received(stats)):
                    figures[i] += value
            calls.add_metric([name], done[0])
            packets.add_metric([name], figures[0])
            octets.add_metric([name], figures[1])
            lost.add_metric([name], figures[2])
        yield from (up, sessions, calls, packets, octets, lost)

    def _stun(self) -> Iterator[Metric]:
        if self.stunCounters is None:
            return
        values = self.stunCounters.asDict()
        yield CounterMetricFamily(f"{PREFIX}_stun_requests", "STUN Binding requests received.", values["requests"])
        yield CounterMetricFamily(f"{PREFIX}_stun_responses", "STUN Binding responses sent.", values["responses"])
        yield CounterMetricFamily(
            f"{PREFIX}_stun_rate_limited", "STUN requests refused by the rate limit.", values["rate_limited"]
        )
        errors = CounterMetricFamily(f"{PREFIX}_stun_errors", "STUN error responses sent, by code.", labels=["code"])
        for name, count in values.items():
            if name.startswith("errors_"):
                errors.add_metric([name.removeprefix("errors_")], count)
        yield errors

    def _queues(self) -> Iterator[Metric]:
        if self.notifier is not None:
            counters = self.notifier.counters()
            yield GaugeMetricFamily(
                f"{PREFIX}_webhook_queued_events", "Registration events waiting for the webhook.", counters["queued"]
            )
            events = CounterMetricFamily(
                f"{PREFIX}_webhook_events", "Registration events, by what became of them.", labels=["outcome"]
            )
            for outcome in ("delivered", "dropped", "abandoned", "lost"):
                events.add_metric([outcome], counters[outcome])
            yield events
            yield CounterMetricFamily(
                f"{PREFIX}_webhook_failed_attempts", "Webhook deliveries that failed (and were tried again).",
                counters["failed"],
            )  # fmt: skip
        if self._mail is not None:
            mail = GaugeMetricFamily(
                f"{PREFIX}_mail_outbox_messages", "Messages of the mail outbox, by state.", labels=["state"]
            )
            for state in ("queued", "sent", "failed"):
                mail.add_metric([state], self._mail.get(state, 0))
            yield mail

    def _store(self) -> Iterator[Metric]:
        if self.store is None:
            return
        latency = self.store.latency
        yield HistogramMetricFamily(
            f"{PREFIX}_store_request_duration_seconds",
            "Store requests by time to answer (the wait for a store thread included).",
            buckets=latency.cumulative(),
            sum_value=latency.total,
        )
        yield CounterMetricFamily(f"{PREFIX}_store_failed_requests", "Store requests that failed.", latency.failures)


def makeRegistry(collector: Collector) -> CollectorRegistry:
    """
    A registry of its own holding C{collector} (not the process-wide
    default: two services in one process, as in tests, do not mix).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
