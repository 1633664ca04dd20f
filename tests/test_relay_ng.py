"""
The ng control protocol (L{aetasip.relay.ng}) with bytes, and its UDP
client and failover pool (L{aetasip.relay.ngclient}) with a
L{twisted.internet.task.Clock} and a transport that records datagrams.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from aetasip.relay.ng import (
    Cookies,
    NgError,
    NgProtocolError,
    PendingRequests,
    decodeMessage,
    encodeMessage,
    interpretReply,
    parseAddress,
)
from aetasip.relay.ngclient import Backend, NgClient, NgPool, NgTimeout, RelayUnavailable

ENGINE = ("127.0.0.1", 2223)
OTHER = ("127.0.0.1", 2224)


class MessageTests(TestCase):
    def test_ping_on_the_wire(self) -> None:
        self.assertEqual(encodeMessage(b"5323_1", {"command": "ping"}), b"5323_1 d7:command4:pinge")
        cookie, body = decodeMessage(b"5323_1 d6:result4:ponge")
        self.assertEqual((cookie, body), (b"5323_1", {"result": b"pong"}))
        self.assertEqual(interpretReply("ping", body).result, "pong")

    def test_bad_cookies_are_refused(self) -> None:
        self.assertRaises(ValueError, encodeMessage, b"", {})
        self.assertRaises(ValueError, encodeMessage, b"a b", {})

    def test_garbled_datagrams(self) -> None:
        for datagram in (b"", b"nocookie", b" d6:result2:oke", b"c1 ", b"c1 garbage", b"c1 l2:oke", b"c1 i5e"):
            with self.subTest(datagram=datagram):
                self.assertRaises(NgProtocolError, decodeMessage, datagram)

    def test_error_result(self) -> None:
        error = self.assertRaises(
            NgError, interpretReply, "offer", {"result": b"error", "error-reason": b"Unknown call-id"}
        )
        self.assertEqual(error.reason, "Unknown call-id")
        self.assertEqual(
            self.assertRaises(NgError, interpretReply, "offer", {"result": b"error"}).reason, "no reason given"
        )

    def test_warning_is_a_success(self) -> None:
        reply = interpretReply("delete", {"result": b"ok", "warning": b"Call-ID not found or tags didn't match"})
        self.assertEqual((reply.result, reply.warning), ("ok", "Call-ID not found or tags didn't match"))

    def test_replies_without_a_good_result(self) -> None:
        for command, body in (
            ("offer", {}),
            ("offer", {"result": 1}),
            ("offer", {"result": [b"ok"]}),
            ("offer", {"result": b"pong"}),
            ("ping", {"result": b"ok"}),
        ):
            with self.subTest(command=command, body=body):
                self.assertRaises(NgProtocolError, interpretReply, command, body)

    def test_cookies_are_unique(self) -> None:
        first, second = Cookies(), Cookies()
        cookies = [next(first) for _ in range(3)] + [next(second) for _ in range(3)]
        self.assertEqual(len(set(cookies)), 6)
        self.assertEqual(next(Cookies(b"x")), b"x_1")

    def test_addresses(self) -> None:
        self.assertEqual(parseAddress("127.0.0.1:2223"), ("127.0.0.1", 2223))
        self.assertEqual(parseAddress("[::1]:2223"), ("::1", 2223))
        for text in ("127.0.0.1", "::1:2223", "[127.0.0.1]:1", "host:1", "127.0.0.1:0", "127.0.0.1:99999", ""):
            with self.subTest(text=text):
                self.assertRaises(ValueError, parseAddress, text)


class PendingRequestsTests(TestCase):
    def setUp(self) -> None:
        self.pending = PendingRequests(limit=2)

    def test_reply_matches_its_request(self) -> None:
        request = self.pending.add("query", {"call-id": "c1"}, ENGINE)
        cookie, body = decodeMessage(request.datagram)
        self.assertEqual((cookie, body), (request.cookie, {"call-id": b"c1", "command": b"query"}))
        matched = self.pending.receive(request.cookie + b" d6:result2:ok4:tagsdee", ENGINE)
        assert matched is not None and matched.reply is not None
        self.assertIs(matched.request, request)
        self.assertEqual(matched.reply.body["tags"], {})
        self.assertEqual(len(self.pending), 0)
        # The same reply again (a retransmission answered twice) is dropped.
        self.assertIsNone(self.pending.receive(request.cookie + b" d6:result2:oke", ENGINE))
        self.assertEqual(self.pending.dropped, 1)

    def test_hostile_datagrams_are_dropped(self) -> None:
        request = self.pending.add("offer", {}, ENGINE)
        for datagram, source in (
            (request.cookie + b" d6:result2:oke", OTHER),  # someone else answers
            (request.cookie + b" d6:result2:oke", ("127.0.0.2", ENGINE[1])),
            (b"forged d6:result2:oke", ENGINE),  # unknown cookie
            (b"\x00\xff garbage", ENGINE),
            (b"", ENGINE),
            (request.cookie, ENGINE),
        ):
            self.assertIsNone(self.pending.receive(datagram, source))
        self.assertEqual(self.pending.dropped, 6)
        self.assertEqual(len(self.pending), 1)

    def test_garbled_reply_to_a_cookie_fails_that_request(self) -> None:
        request = self.pending.add("offer", {}, ENGINE)
        matched = self.pending.receive(request.cookie + b" d6:result", ENGINE)
        self.assertIsNone(matched)  # undecodable: its cookie cannot be trusted
        matched = self.pending.receive(request.cookie + b" d3:sdp3:v=0e", ENGINE)
        assert matched is not None
        self.assertIsInstance(matched.error, NgProtocolError)

    def test_dual_stack_source(self) -> None:
        request = self.pending.add("ping", {}, ENGINE)
        self.assertIsNotNone(self.pending.receive(request.cookie + b" d6:result4:ponge", ("::ffff:127.0.0.1", 2223)))

    def test_bounded(self) -> None:
        self.pending.add("ping", {}, ENGINE)
        self.pending.add("ping", {}, ENGINE)
        self.assertTrue(self.pending.full)
        self.assertRaises(OverflowError, self.pending.add, "ping", {}, ENGINE)


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, datagram: bytes, address: Any) -> None:
        self.sent.append((datagram, address))


def pump(clock: Clock, seconds: float) -> None:
    """Let C{seconds} pass in steps, as timers set by timers need."""
    for _ in range(round(seconds / 0.25)):
        clock.advance(0.25)


def makeClient(clock: Clock, **options: Any) -> tuple[NgClient, RecordingTransport]:
    client = NgClient(clock, **options)
    transport = RecordingTransport()
    client.makeConnection(transport)  # type: ignore[arg-type]
    return client, transport


def answer(client: NgClient, datagram: bytes, address: Any, body: bytes = b"d6:result2:oke") -> None:
    cookie = datagram.partition(b" ")[0]
    client.datagramReceived(cookie + b" " + body, address)


class NgClientTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client, self.transport = makeClient(self.clock, timeout=1.0, retries=2, maxPending=3)

    def test_reply(self) -> None:
        d = self.client.request(ENGINE, "query", {"call-id": "c"})
        [(datagram, address)] = self.transport.sent
        self.assertEqual(address, ENGINE)
        answer(self.client, datagram, ENGINE, b"d7:warning4:hmm.6:result2:oke")
        reply = self.successResultOf(d)
        self.assertEqual(reply.warning, "hmm.")
        pump(self.clock, 10)
        self.assertEqual(len(self.transport.sent), 1)

    def test_retries_with_the_same_cookie_then_times_out(self) -> None:
        d = self.client.request(ENGINE, "offer", {"sdp": b"v=0"})
        pump(self.clock, 1.0)
        pump(self.clock, 1.0)
        self.assertNoResult(d)
        datagrams = [datagram for datagram, _ in self.transport.sent]
        self.assertEqual(len(datagrams), 3)
        self.assertEqual(len(set(datagrams)), 1)
        pump(self.clock, 1.0)
        failure = self.failureResultOf(d, NgTimeout)
        self.assertEqual(failure.value.address, ENGINE)
        self.assertEqual(len(self.client.pending), 0)
        # The late reply is dropped.
        answer(self.client, datagrams[0], ENGINE)
        self.assertEqual(self.client.pending.dropped, 1)

    def test_reply_to_a_retransmission(self) -> None:
        d = self.client.request(ENGINE, "ping", {})
        pump(self.clock, 1.5)
        answer(self.client, self.transport.sent[-1][0], ENGINE, b"d6:result4:ponge")
        self.assertEqual(self.successResultOf(d).result, "pong")

    def test_error_reply(self) -> None:
        d = self.client.request(ENGINE, "query", {"call-id": "c"})
        answer(self.client, self.transport.sent[0][0], ENGINE, b"d6:result5:error12:error-reason15:Unknown call-ide")
        self.assertEqual(self.failureResultOf(d, NgError).value.reason, "Unknown call-id")

    def test_bounded_pending(self) -> None:
        waiting = [self.client.request(ENGINE, "ping", {}) for _ in range(3)]
        self.failureResultOf(self.client.request(ENGINE, "ping", {}), RelayUnavailable)
        for d in waiting:
            self.assertNoResult(d)
        pump(self.clock, 3.0)
        for d in waiting:
            self.failureResultOf(d, NgTimeout)
        self.assertEqual(len(self.clock.getDelayedCalls()), 0)

    def test_cancel_stops_retries(self) -> None:
        d = self.client.request(ENGINE, "ping", {})
        d.cancel()
        self.failureResultOf(d)
        pump(self.clock, 10)
        self.assertEqual(len(self.transport.sent), 1)
        self.assertEqual(len(self.client.pending), 0)

    def test_send_error_is_a_lost_datagram(self) -> None:
        def refuse(datagram: bytes, address: Any) -> None:
            raise OSError("Network is unreachable")

        self.transport.write = refuse  # type: ignore[method-assign]
        d = self.client.request(ENGINE, "ping", {})
        pump(self.clock, 3.0)
        self.failureResultOf(d, NgTimeout)
        self.flushLoggedErrors()

    def test_not_started(self) -> None:
        self.failureResultOf(NgClient(self.clock).request(ENGINE, "ping", {}), RelayUnavailable)


class NgPoolTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client, self.transport = makeClient(self.clock, timeout=1.0, retries=1)
        self.first = Backend(ENGINE, self.client)
        self.second = Backend(OTHER, self.client)
        self.pool = NgPool("fr", [self.first, self.second], self.clock, recheckInterval=5.0)
        self.addCleanup(self.pool.stop)

    def new(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self.pool.requestNew("offer", {"call-id": "c"}))

    def answerLast(self, body: bytes = b"d6:result2:oke") -> None:
        datagram, address = self.transport.sent[-1]
        answer(self.client, datagram, address, body)

    def test_new_sessions_take_turns(self) -> None:
        addresses = []
        for _ in range(4):
            d = self.new()
            self.answerLast()
            backend, _ = self.successResultOf(d)
            addresses.append(backend.address)
        self.assertEqual(addresses, [ENGINE, OTHER, ENGINE, OTHER])

    def test_failover_marks_down_then_ping_brings_back(self) -> None:
        d = self.new()
        pump(self.clock, 2.0)  # the first never answers
        self.assertEqual(self.transport.sent[-1][1], OTHER)
        self.answerLast()
        backend, _ = self.successResultOf(d)
        self.assertIs(backend, self.second)
        self.assertFalse(self.first.up)
        # While down, new sessions skip it without waiting.
        d = self.new()
        self.assertEqual(self.transport.sent[-1][1], OTHER)
        self.answerLast()
        self.assertIs(self.successResultOf(d)[0], self.second)
        # A ping after the recheck interval; no answer, another later.
        pump(self.clock, 5.0)
        datagram, address = self.transport.sent[-1]
        self.assertEqual((address, decodeMessage(datagram)[1]), (ENGINE, {"command": b"ping"}))
        pump(self.clock, 2.0)
        self.assertFalse(self.first.up)
        sent = len(self.transport.sent)
        pump(self.clock, 5.0)
        self.assertEqual(len(self.transport.sent), sent + 1)
        self.assertEqual(self.transport.sent[-1][1], ENGINE)
        self.answerLast(b"d6:result4:ponge")
        self.assertTrue(self.first.up)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_all_down(self) -> None:
        d = self.new()
        pump(self.clock, 4.0)
        self.failureResultOf(d, RelayUnavailable)
        self.assertEqual((self.first.up, self.second.up), (False, False))
        sent = len(self.transport.sent)
        self.failureResultOf(self.new(), RelayUnavailable)
        self.assertEqual(len(self.transport.sent), sent)

    def test_refusal_is_not_failover(self) -> None:
        d = self.new()
        self.answerLast(b"d6:result5:error12:error-reason4:fulle")
        self.failureResultOf(d, NgError)
        self.assertTrue(self.first.up)
        self.assertEqual(len(self.transport.sent), 1)

    def test_stop_cancels_rechecks(self) -> None:
        d = self.new()
        pump(self.clock, 4.0)
        self.failureResultOf(d)
        self.pool.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
