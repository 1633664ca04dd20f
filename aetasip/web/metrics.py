"""
C{/metrics}: a Prometheus collector that reads, at each scrape, the
counters the running service already keeps (the SIP core's, flood
control's, the authentication limits', STUN's), the bindings of the
location service and the calls in progress (through L{ICallControl}).

Names follow what operators already graph for Kamailio
(C{kamailio_usrloc_registered_users}, C{kamailio_dialog_active_dialogs}):
C{aetasip_registered_users}, C{aetasip_active_dialogs}, ...
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from aetasip import __version__
from aetasip.interfaces import ICallControl

PREFIX = "aetasip"


class ServiceCollector(Collector):
    """
    The service's figures, read live at each scrape (nothing is copied or
    counted twice).

    @ivar core: the L{aetasip.element.core.SIPCore}: C{counters} and C{flood}.
    @ivar limits: the authentication's L{aetasip.auth.limits.FailureLimits}, or C{None}.
    @ivar location: the L{aetasip.location.LocationService}.
    @ivar calls: the L{ICallControl} of the calls in progress.
    @ivar stunCounters: the STUN server's L{aetasip.stun.server.Counters}, or C{None}.
    """

    def __init__(self, core: Any, limits: Any, location: Any, calls: ICallControl, stunCounters: Any = None) -> None:
        self.core = core
        self.limits = limits
        self.location = location
        self.calls = calls
        self.stunCounters = stunCounters

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(PREFIX, "The aetasip version.")
        info.add_metric([], {"version": __version__})
        yield info
        yield from self._registrations()
        yield from self._calls()
        yield from self._sip()
        yield from self._stun()

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

    def _calls(self) -> Iterator[Metric]:
        active = self.calls.active()
        yield GaugeMetricFamily(f"{PREFIX}_active_dialogs", "Calls in progress (set up or answered).", len(active))
        byState = GaugeMetricFamily(f"{PREFIX}_active_calls", "Calls in progress, by state.", labels=["state"])
        states = Counter(call.state for call in active)
        for state in ("attempting", "ringing", "answered"):
            byState.add_metric([state], states.get(state, 0))
        yield byState

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
        flood = self.core.flood
        if flood is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_flood_dropped_messages", "Messages dropped from sources banned for flooding.",
                flood.counters["dropped"],
            )  # fmt: skip
            yield CounterMetricFamily(f"{PREFIX}_flood_bans", "Sources banned for flooding.", flood.counters["bans"])
        if self.limits is not None:
            counters = self.limits.counters
            yield CounterMetricFamily(f"{PREFIX}_auth_failures", "Failed digest authentications.", counters["failures"])
            yield CounterMetricFamily(
                f"{PREFIX}_auth_bans", "Sources banned for failing authentication.", counters["bans"]
            )
            yield CounterMetricFamily(
                f"{PREFIX}_auth_refused_requests", "Requests refused from sources banned for failing authentication.",
                counters["refused"],
            )  # fmt: skip

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


def makeRegistry(collector: Collector) -> CollectorRegistry:
    """
    A registry of its own holding C{collector} (not the process-wide
    default: two services in one process, as in tests, do not mix).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
