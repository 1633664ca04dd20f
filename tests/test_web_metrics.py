"""
C{/metrics} scraped over HTTP and parsed with the Prometheus text parser,
after real traffic: sipp registers (REGISTER outcomes by code,
registration events, the webhook's deliveries to a real HTTP server) and
calls (INVITE outcomes by code, calls by end cause), and a relayed call
with RTP through the built-in relay (sessions while it lasts, packets
and losses once it ended); the collector alone for a relay node that
does not answer and for the store's latency.
"""

from __future__ import annotations

import os
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from aetasip.store.latency import LatencyHistogram
from aetasip.web.metrics import CallCounters, ServiceCollector, makeRegistry
from tests import test_interop_relay as relay
from tests.interop import InteropTestCase
from tests.servers import RunningService, deferLater, requireTool
from tests.sipp import Sipp
from tests.test_notify import Receiver

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(server: RunningService, pool: HTTPConnectionPool) -> Samples:
    url = server.service.getServiceNamed("web").url + "/metrics"
    response = await treq.get(url, pool=pool)
    assert response.code == 200, response.code
    return parse((await response.content()).decode())


class TrafficMetricsTests(TestCase):
    timeout = 90

    async def setUp(self) -> None:  # type: ignore[override]
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), self.directory)
        self.receiver = Receiver().start()
        self.addCleanup(self.receiver.stop)
        self.server = RunningService(
            self.directory,
            **{"notify.urls": [self.receiver.url], "notify.secret": "s3cret", "notify.retry_delay": 0.05},
        )
        self.server.addAccounts(("45675001", "secret-one"), ("45675002", "secret-two"))
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        await self.server.start()
        self.addCleanup(self.server.stop)

    async def test_registrations_and_calls_by_outcome(self) -> None:
        before = await scrape(self.server, self.pool)
        self.assertEqual(before[("aetasip_calls_started_total", ())], 0)
        self.assertEqual(before[("aetasip_registration_events_total", (("kind", "registered"),))], 0)
        self.assertEqual(before[("aetasip_mail_outbox_messages", (("state", "queued"),))], 0)
        self.assertEqual(before[("aetasip_webhook_queued_events", ())], 0)
        port = self.server.ports[0]
        callee = await self.sipp.callee("45675002", "secret-two", "call_uas_answer.xml", port, self.server.sip.location)
        caller = await self.sipp.call("45675001", "secret-one", "45675002", "call_uac.xml", port)
        self.assertEqual(caller.code, 0, caller.detail)
        self.assertEqual((await callee.done).code, 0)
        refused = await self.sipp.call("45675001", "secret-one", "45679999", "call_uac_refused.xml", port)
        self.assertEqual(refused.code, 0, refused.detail)
        for _ in range(50):
            if self.receiver.recorder.delivered:
                break
            await deferLater(0.1)
        after = await scrape(self.server, self.pool)
        replies = {labels: value for (name, labels), value in after.items() if name == "aetasip_sip_replies_total"}
        self.assertEqual(replies[(("code", "401"), ("method", "REGISTER"))], 1)
        self.assertEqual(replies[(("code", "200"), ("method", "REGISTER"))], 1)
        self.assertEqual(replies[(("code", "407"), ("method", "INVITE"))], 2)
        self.assertEqual(replies[(("code", "200"), ("method", "INVITE"))], 1)
        self.assertEqual(replies[(("code", "404"), ("method", "INVITE"))], 1)
        self.assertEqual(replies[(("code", "200"), ("method", "BYE"))], 1)
        self.assertEqual(after[("aetasip_registration_events_total", (("kind", "registered"),))], 1)
        self.assertEqual(after[("aetasip_registered_users", ())], 1)
        self.assertEqual(after[("aetasip_calls_started_total", ())], 2)
        self.assertEqual(after[("aetasip_calls_answered_total", ())], 1)
        self.assertEqual(after[("aetasip_calls_ended_total", (("end_cause", "caller BYE"),))], 1)
        self.assertEqual(after[("aetasip_calls_ended_total", (("end_cause", "rejected"),))], 1)  # 404
        self.assertEqual(after[("aetasip_calls_ended_total", (("end_cause", "no answer"),))], 0)
        self.assertEqual(after[("aetasip_active_dialogs", ())], 0)
        self.assertIn(("aetasip_active_transactions", (("side", "server"),)), after)
        self.assertIn(("aetasip_active_transactions", (("side", "client"),)), after)
        self.assertEqual(after[("aetasip_webhook_events_total", (("outcome", "delivered"),))], 1)
        # The store answered the registrations' credentials and the call records.
        self.assertGreater(after[("aetasip_store_request_duration_seconds_count", ())], 0)
        self.assertEqual(
            after[("aetasip_store_request_duration_seconds_bucket", (("le", "+Inf"),))],
            after[("aetasip_store_request_duration_seconds_count", ())],
        )
        self.assertNotIn(("aetasip_relay_sessions", (("node", "local"),)), after)


class RelayMetricsTests(relay.RelayFixture, InteropTestCase):
    """
    A relayed call with RTP through the built-in node, seen by /metrics
    (with the interop relay tests' fixtures, not their tests).
    """

    timeout = 90
    node = relay.RelayInteropTests.node
    assertRelayPort = relay.RelayInteropTests.assertRelayPort

    async def test_relay_sessions_packets_and_losses(self) -> None:
        server = await self.serve()
        pool = HTTPConnectionPool(reactor, persistent=False)
        idle = await scrape(server, pool)
        self.assertEqual(idle[("aetasip_relay_up", (("node", "local"),))], 1)
        self.assertEqual(idle[("aetasip_relay_sessions", (("node", "local"),))], 0)
        callerSocket, _ = self.socket()
        calleeSocket, calleePort = self.socket()
        _, advertisedPort = self.socket("127.0.0.5")
        callee = await self.callee("relay_uas.xml", calleePort)
        caller = self.caller("relay_uac.xml", ("127.0.0.5", advertisedPort), "-d", "3000")
        calleeSendsTo, callerSendsTo = await self.mediaOf("callee"), await self.mediaOf("caller")
        # 20 packets each way; the caller skips one sequence number: one lost.
        for seq in range(10, 31):
            if seq != 20:
                callerSocket.transport.write(relay.rtp(seq, b"A"), callerSendsTo)  # type: ignore[union-attr]
            if seq != 30:
                calleeSocket.transport.write(relay.rtp(seq, b"B"), calleeSendsTo)  # type: ignore[union-attr]
            await deferLater(0.02)
        await deferLater(1.1)  # past the scrapes' refresh interval
        during = await scrape(server, pool)
        self.assertEqual(during[("aetasip_relay_sessions", (("node", "local"),))], 1)
        self.assertEqual(during[("aetasip_active_dialogs", ())], 1)
        self.assertEqual(during[("aetasip_relay_packets_total", (("node", "local"),))], 40)
        self.assertEqual(during[("aetasip_relay_lost_packets_total", (("node", "local"),))], 1)
        self.assertEqual((await caller.done).code, 0)
        self.assertEqual((await callee.done).code, 0)
        await deferLater(1.1)
        after = await scrape(server, pool)
        self.assertEqual(after[("aetasip_relay_sessions", (("node", "local"),))], 0)
        self.assertEqual(after[("aetasip_relay_calls_total", (("node", "local"),))], 1)
        self.assertEqual(after[("aetasip_relay_packets_total", (("node", "local"),))], 40)
        self.assertEqual(after[("aetasip_relay_lost_packets_total", (("node", "local"),))], 1)
        self.assertEqual(after[("aetasip_relay_bytes_total", (("node", "local"),))], 40 * 163)
        self.assertEqual(after[("aetasip_calls_ended_total", (("end_cause", "caller BYE"),))], 1)


class Silent:
    """A relay node that never answers."""

    def sessions(self) -> Deferred[Any]:
        return Deferred()


class CollectorTests(SynchronousTestCase):
    def collector(self, **parts: Any) -> ServiceCollector:
        core = type("Core", (), {"counters": {"requests": 0, "responses": 0, "bad": 0, "dropped": 0}, "flood": None})
        location = type("Location", (), {"bindings": lambda self: []})()
        calls = type("Calls", (), {"active": lambda self: []})()
        return ServiceCollector(core, None, location, calls, **parts)  # type: ignore[arg-type]

    def test_a_relay_node_that_does_not_answer_is_down(self) -> None:
        clock = Clock()
        collector = self.collector(relays={"far": Silent()}, callCounters=CallCounters(), reactor=clock)
        refreshed = Deferred.fromCoroutine(collector.refresh())
        clock.advance(2.0)
        self.successResultOf(refreshed)
        from prometheus_client import generate_latest

        samples = parse(generate_latest(makeRegistry(collector)).decode())
        self.assertEqual(samples[("aetasip_relay_up", (("node", "far"),))], 0)
        self.assertEqual(samples[("aetasip_relay_sessions", (("node", "far"),))], 0)

    def test_store_latency_buckets(self) -> None:
        histogram = LatencyHistogram()
        for seconds in (0.0005, 0.003, 0.003, 0.2, 30.0):
            histogram.observe(seconds)
        histogram.observe(0.001, failed=True)
        cumulative = dict(histogram.cumulative())
        self.assertEqual(
            (cumulative["0.001"], cumulative["0.005"], cumulative["0.25"], cumulative["+Inf"]), (2, 4, 5, 6)
        )
        self.assertEqual(histogram.failures, 1)
        self.assertAlmostEqual(histogram.total, 30.2075)
