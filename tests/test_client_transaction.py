"""
Client transactions (RFC 3261 17.1) on a Clock: retransmission timers,
timeouts, the ACK of a non-2xx final response, matching, CANCEL.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.client import ClientTransactionLayer, ackFor, cancelFor, newBranch
from aetasip.sip.message import Request, Response
from aetasip.sip.parser import parse


def invite(method: str = "INVITE", branch: str | None = None) -> Request:
    branch = branch or newBranch()
    data = (
        f"{method} sip:45675002@192.0.2.20:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-caller\r\n"
        "Max-Forwards: 69\r\nFrom: <sip:45675001@sip.example.net>;tag=caller\r\n"
        "To: <sip:45675002@sip.example.net>\r\nCall-ID: call-1@test\r\n"
        f"CSeq: 7 {method}\r\nRoute: <sip:edge.example.net;lr>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    request = parse(data)
    assert isinstance(request, Request)
    return request


def response(request: Request, code: int, toTag: str = "callee") -> Response:
    number, method = request.cseq
    data = (
        f"SIP/2.0 {code} Whatever\r\n"
        + "".join(f"Via: {v}\r\n" for v in request.getAll("via"))
        + f"From: {request.get('from')}\r\nTo: {request.get('to')};tag={toTag}\r\n"
        f"Call-ID: {request.callID}\r\nCSeq: {number} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    parsed = parse(data)
    assert isinstance(parsed, Response)
    return parsed


class ClientTransactionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.layer = ClientTransactionLayer(self.clock)
        self.addCleanup(self.layer.stop)
        self.sent: list[tuple[float, bytes]] = []
        self.responses: list[int] = []
        self.timeouts = 0

    def start(self, request: Request, reliable: bool = False):  # type: ignore[no-untyped-def]
        def timeout() -> None:
            self.timeouts += 1

        return self.layer.send(
            request,
            lambda data: self.sent.append((self.clock.seconds(), data)),
            reliable,
            lambda r: self.responses.append(r.code),
            timeout,
        )

    def times(self) -> list[float]:
        return [t for t, _ in self.sent]

    def test_invite_retransmits_with_timer_a_until_timer_b(self) -> None:
        self.start(invite())
        self.clock.pump([0.5] * 80)
        self.assertEqual(self.times(), [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        self.assertEqual(self.timeouts, 1)
        self.assertEqual(self.layer.transactions, {})

    def test_provisional_stops_retransmissions_and_timer_b(self) -> None:
        request = invite()
        self.start(request)
        self.assertTrue(self.layer.receive(response(request, 180)))
        self.clock.pump([1] * 100)
        self.assertEqual(self.times(), [0])
        self.assertEqual((self.responses, self.timeouts), ([180], 0))

    def test_final_responses_over_tcp_reach_the_user_and_end_the_transaction(self) -> None:
        for method, code in (("INVITE", 486), ("BYE", 200), ("INVITE", 200)):
            request = invite(method)
            self.start(request, reliable=True)
            self.layer.receive(response(request, code))
            self.assertEqual(self.responses[-1], code)
        # Timers D and K are zero on reliable transports; Accepted lingers.
        self.assertEqual(len(self.layer.transactions), 1)
        self.clock.advance(32)
        self.assertEqual(self.layer.transactions, {})
        self.assertEqual(self.timeouts, 0)

    def test_a_finished_transaction_lets_go_of_its_user(self) -> None:
        """Its callbacks (which hold what holds it) are dropped: no cycle outlives it."""
        request = invite("BYE")
        transaction = self.start(request)
        self.layer.receive(response(request, 200))
        self.clock.advance(5)
        self.assertEqual(transaction.state, "terminated")
        transaction.onResponse(response(request, 200))
        transaction.onTimeout()
        self.assertEqual((self.responses, self.timeouts), ([200], 0))

    def test_non_2xx_final_is_acked_and_retransmissions_reacked(self) -> None:
        request = invite()
        self.start(request)
        self.layer.receive(response(request, 486))
        ack = parse(self.sent[-1][1])
        assert isinstance(ack, Request)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.uri, request.uri)
        self.assertEqual(ack.cseq, (7, "ACK"))
        self.assertEqual(ack.toAddr.tag, "callee")
        self.assertEqual(ack.getAll("via"), [request.getAll("via")[0]])
        self.assertEqual(ack.getAll("route"), ["<sip:edge.example.net;lr>"])
        self.layer.receive(response(request, 486))
        self.assertEqual([parse(d).method for _, d in self.sent[1:]], ["ACK", "ACK"])  # type: ignore[union-attr]
        self.assertEqual(self.responses, [486])
        self.clock.advance(32)
        self.assertEqual(self.layer.transactions, {})

    def test_2xx_goes_up_with_its_retransmissions_and_no_ack(self) -> None:
        request = invite()
        self.start(request)
        self.layer.receive(response(request, 200))
        self.layer.receive(response(request, 200))
        self.assertEqual(self.responses, [200, 200])
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(32)
        self.assertEqual(self.layer.transactions, {})

    def test_non_invite_timer_e_caps_at_t2_and_timer_f_times_out(self) -> None:
        self.start(invite("OPTIONS"))
        self.clock.pump([0.25] * 140)
        self.assertEqual(self.times()[:6], [0, 0.5, 1.5, 3.5, 7.5, 11.5])
        self.assertEqual(self.timeouts, 1)

    def test_non_invite_after_provisional_retransmits_every_t2(self) -> None:
        request = invite("OPTIONS")
        self.start(request)
        self.clock.advance(0.5)
        self.layer.receive(response(request, 100))
        self.clock.pump([0.5] * 20)
        # Timer E already armed fires once more, then is reset to T2 (17.1.2.2).
        gaps = [b - a for a, b in zip(self.times()[2:], self.times()[3:], strict=False)]
        self.assertTrue(gaps and all(g == 4 for g in gaps), gaps)

    def test_reliable_transports_do_not_retransmit(self) -> None:
        request = invite()
        self.start(request, reliable=True)
        self.clock.pump([1] * 10)
        self.assertEqual(len(self.sent), 1)
        self.layer.receive(response(request, 404))
        self.clock.advance(0)
        self.assertEqual(self.layer.transactions, {})

    def test_unmatched_responses_are_not_taken(self) -> None:
        request = invite()
        self.start(request)
        self.assertFalse(self.layer.receive(response(invite(), 200)))
        other = response(request, 200)
        other.set("cseq", "7 OPTIONS")
        self.assertFalse(self.layer.receive(other))

    def test_cancel_matches_the_invite_downstream(self) -> None:
        request = invite()
        cancel = cancelFor(request)
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.uri, request.uri)
        self.assertEqual(cancel.cseq, (7, "CANCEL"))
        self.assertEqual(cancel.topVia.branch, request.topVia.branch)
        self.assertEqual(cancel.get("to"), request.get("to"))
        self.assertEqual(parse(cancel.toBytes()).method, "CANCEL")  # type: ignore[union-attr]

    def test_ack_for_parses_back(self) -> None:
        request = invite()
        ack = ackFor(request, response(request, 603))
        self.assertEqual(parse(ack.toBytes()).method, "ACK")  # type: ignore[union-attr]

    def test_branches_are_unique_and_rfc3261(self) -> None:
        # More than one 4 KiB draw of randomness.
        branches = {newBranch() for _ in range(1000)}
        self.assertEqual(len(branches), 1000)
        self.assertTrue(all(b.startswith("z9hG4bK") for b in branches))
