"""
Server transactions (RFC 3261 section 17.2, RFC 6026), driven with request
bytes and a L{Clock}: what goes out, when, and which requests reach the
transaction user.
"""

from __future__ import annotations

from itertools import pairwise

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.message import Request
from aetasip.sip.parser import parse
from aetasip.sip.responses import makeResponse
from aetasip.sip.transaction import T1, T2, T4, Peer, ServerTransaction, ServerTransactionLayer

SOURCE = ("192.0.2.10", 5060)
LOCAL = ("127.0.0.1", 5060)


def request(
    method: str = "OPTIONS",
    branch: str | None = "z9hG4bK-t1",
    sentBy: str = "192.0.2.10:5060",
    cseq: int = 1,
    cseqMethod: str | None = None,
    callID: str = "call-1@192.0.2.10",
    fromTag: str = "f1",
    toTag: str | None = None,
    transport: str = "UDP",
    requestURI: str = "sip:45675001@sip.example.net",
) -> Request:
    """A request as a client writes it; no C{branch} means an RFC 2543 client."""
    via = f"Via: SIP/2.0/{transport} {sentBy}"
    if branch is not None:
        via += f";branch={branch}"
    to = "To: <sip:45675001@sip.example.net>"
    if toTag is not None:
        to += f";tag={toTag}"
    lines = [
        f"{method} {requestURI} SIP/2.0",
        via,
        "Max-Forwards: 70",
        f"From: <sip:45675002@sip.example.net>;tag={fromTag}",
        to,
        f"Call-ID: {callID}",
        f"CSeq: {cseq} {cseqMethod or method}",
        "Content-Length: 0",
    ]
    message = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def ack(invite: Request, branch: str | None = "z9hG4bK-t1", toTag: str | None = "srv") -> Request:
    """The ACK of a final response to C{invite} (same branch: a non-2xx ACK)."""
    number, _ = invite.cseq
    return request(
        "ACK", branch=branch, cseq=number, callID=invite.callID, fromTag=invite.fromAddr.tag or "", toTag=toTag
    )


class Recorder:
    """A peer's C{send}: what went out, and when."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> None:
        self.sent.append((self.clock.seconds(), data))

    @property
    def codes(self) -> list[int]:
        return [int(data[8:11]) for _, data in self.sent]

    @property
    def times(self) -> list[float]:
        return [time for time, _ in self.sent]


class TransactionTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.layer = ServerTransactionLayer(self.clock)
        self.out = Recorder(self.clock)
        self.requests: dict[int, Request] = {}
        self.addCleanup(self.layer.stop)

    def peer(self, transport: str = "udp") -> Peer:
        return Peer(transport, SOURCE, LOCAL, self.out)

    def receive(self, message: Request, transport: str = "udp") -> ServerTransaction | None:
        return self.layer.receive(message, self.peer(transport))

    def start(self, message: Request, transport: str = "udp") -> ServerTransaction:
        """Receive C{message}, which must start a new transaction."""
        transaction = self.receive(message, transport)
        assert transaction is not None, f"{message.method} matched an existing transaction"
        return transaction

    def original(self, transaction: ServerTransaction) -> Request:
        """The request of C{transaction}, also once it released it."""
        request = transaction.request or self.requests.get(id(transaction))
        assert request is not None
        return request

    def answered(self, method: str, branch: str, code: int) -> ServerTransaction:
        """A new transaction of C{method} and C{branch}, answered C{code}."""
        transaction = self.start(request(method, branch=branch))
        self.respond(transaction, code)
        return transaction

    def respond(self, transaction: ServerTransaction, code: int) -> None:
        # A completed UDP transaction has released its request: answer with
        # the first response's headers then (only the status matters here).
        if transaction.request is not None:
            self.requests[id(transaction)] = transaction.request
        transaction.respond(makeResponse(self.requests[id(transaction)], code, toTag="srv"))


class NonInviteTests(TransactionTestCase):
    def test_abandoned_transaction_absorbs_retransmissions_silently_then_ends(self) -> None:
        """RFC 4320: a proxy whose next hop never answered sends no 408."""
        transaction = self.start(request())
        transaction.abandon()
        self.assertEqual(transaction.state, "completed")
        self.assertIsNone(self.receive(request()))
        self.assertEqual(self.out.sent, [])
        self.clock.advance(64 * 0.5 + 1)
        self.assertEqual(transaction.state, "terminated")
        self.assertNotIn(transaction.key, self.layer.transactions)
        transaction.respond(makeResponse(request(), 200))
        self.assertEqual(self.out.sent, [])

    def test_new_request_starts_a_transaction_in_trying(self) -> None:
        transaction = self.start(request())
        self.assertEqual(transaction.state, "trying")
        self.assertIn(transaction.key, self.layer.transactions)
        self.assertEqual(self.out.sent, [])

    def test_retransmission_in_trying_is_absorbed_without_output(self) -> None:
        self.start(request())
        self.assertIsNone(self.receive(request()))
        self.assertEqual(self.out.sent, [])
        self.assertEqual(self.layer.retransmissionsAbsorbed, 1)

    def test_retransmission_in_proceeding_resends_the_last_provisional(self) -> None:
        transaction = self.start(request())
        self.respond(transaction, 100)
        self.respond(transaction, 183)
        self.assertEqual(transaction.state, "proceeding")
        self.assertIsNone(self.receive(request()))
        self.assertEqual(self.out.codes, [100, 183, 183])
        self.assertEqual(self.out.sent[-1][1], self.out.sent[-2][1])

    def test_retransmission_in_completed_resends_the_final_response(self) -> None:
        transaction = self.start(request())
        self.respond(transaction, 200)
        self.assertEqual(transaction.state, "completed")
        self.assertIsNone(self.receive(request()))
        self.assertIsNone(self.receive(request()))
        self.assertEqual(self.out.codes, [200, 200, 200])
        self.assertEqual(len({data for _, data in self.out.sent}), 1)

    def test_response_given_as_bytes_is_sent_as_it_is(self) -> None:
        transaction = self.start(request())
        data = makeResponse(transaction.request, 404, toTag="srv").toBytes()
        transaction.respond(data)
        self.assertEqual(transaction.state, "completed")
        self.assertEqual(self.out.sent, [(0.0, data)])

    def test_udp_completed_transaction_is_kept_for_timer_j(self) -> None:
        transaction = self.start(request())
        self.respond(transaction, 200)
        self.clock.advance(64 * T1 - 1)
        self.assertIsNone(self.receive(request()))
        self.assertEqual(self.out.codes, [200, 200])
        self.assertIs(self.layer.transactions[transaction.key], transaction)

    def test_udp_completed_transaction_is_forgotten_after_timer_j(self) -> None:
        transaction = self.start(request())
        self.respond(transaction, 200)
        self.clock.advance(64 * T1 - 0.1)
        self.assertEqual(transaction.state, "completed")
        self.clock.advance(0.1)
        self.assertEqual(transaction.state, "terminated")
        self.assertEqual(self.layer.transactions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retransmission_after_timer_j_is_a_new_transaction(self) -> None:
        first = self.start(request())
        self.respond(first, 200)
        self.clock.advance(64 * T1)
        second = self.receive(request())
        self.assertIsNotNone(second)
        self.assertIsNot(second, first)
        self.assertEqual(self.out.codes, [200])

    def test_timer_j_runs_per_transaction(self) -> None:
        early = self.start(request(branch="z9hG4bK-early"))
        self.respond(early, 200)
        self.clock.advance(10)
        late = self.start(request(branch="z9hG4bK-late"))
        self.respond(late, 200)
        self.clock.advance(64 * T1 - 10)
        self.assertEqual(early.state, "terminated")
        self.assertEqual(late.state, "completed")
        self.clock.advance(10)
        self.assertEqual(late.state, "terminated")
        self.assertEqual(self.layer.transactions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliable_transports_forget_at_once_after_the_final_response(self) -> None:
        for transport in ("tcp", "tls"):
            transaction = self.start(request(branch=f"z9hG4bK-{transport}", transport=transport.upper()), transport)
            self.respond(transaction, 200)
            self.assertEqual(transaction.state, "terminated")
            self.assertNotIn(transaction.key, self.layer.transactions)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reliable_transport_keeps_a_proceeding_transaction(self) -> None:
        transaction = self.start(request(transport="TCP"), "tcp")
        self.respond(transaction, 100)
        self.assertIsNone(self.receive(request(transport="TCP"), "tcp"))
        self.assertEqual(self.out.codes, [100, 100])

    def test_respond_after_the_final_response_is_ignored(self) -> None:
        transaction = self.start(request())
        self.respond(transaction, 200)
        self.respond(transaction, 500)
        self.respond(transaction, 100)
        self.assertEqual(transaction.state, "completed")
        self.assertIsNone(transaction.request)
        self.assertEqual(self.out.codes, [200])
        self.receive(request())
        self.assertEqual(self.out.codes, [200, 200])


class InviteTests(TransactionTestCase):
    def invite(self, transport: str = "udp", code: int | None = None) -> ServerTransaction:
        """An INVITE transaction, answered with C{code} if given."""
        transaction = self.start(request("INVITE", transport=transport.upper()), transport)
        if code is not None:
            self.respond(transaction, code)
        return transaction

    def test_invite_starts_in_proceeding(self) -> None:
        transaction = self.invite()
        self.assertEqual(transaction.state, "proceeding")
        self.assertIsNone(self.receive(request("INVITE")))
        self.assertEqual(self.out.sent, [])

    def test_retransmitted_invite_in_proceeding_resends_the_provisional(self) -> None:
        self.invite(code=180)
        self.assertIsNone(self.receive(request("INVITE")))
        self.assertEqual(self.out.codes, [180, 180])

    def test_non_2xx_final_response_completes(self) -> None:
        for number, code in enumerate((300, 486, 503, 603)):
            transaction = self.start(request("INVITE", branch=f"z9hG4bK-{number}"))
            self.respond(transaction, code)
            self.assertEqual(transaction.state, "completed")

    def test_timer_g_doubles_from_t1_up_to_t2_until_timer_h(self) -> None:
        transaction = self.invite(code=100)
        self.respond(transaction, 486)
        self.clock.pump([T1] * 70)
        # Sent at 0, then 0.5, 1.5, 3.5, 7.5, 11.5 ... every T2 until Timer H at 64*T1.
        expected = [0.0, T1, 3 * T1, 7 * T1]
        while expected[-1] + T2 < 64 * T1:
            expected.append(expected[-1] + T2)
        self.assertEqual(self.out.times, [0.0, *expected])
        self.assertEqual(self.out.codes, [100] + [486] * len(expected))
        intervals = [b - a for a, b in pairwise(expected)]
        self.assertEqual(intervals[:4], [T1, 2 * T1, 4 * T1, T2])

    def test_ack_confirms_and_stops_timer_g(self) -> None:
        transaction = self.invite(code=100)
        self.respond(transaction, 486)
        self.clock.advance(T1)
        self.assertEqual(len(self.out.sent), 3)
        self.assertIsNone(self.receive(ack(self.original(transaction))))
        self.assertEqual(transaction.state, "confirmed")
        self.clock.advance(T4 - 0.1)
        self.assertEqual(len(self.out.sent), 3)

    def test_a_final_response_before_any_provisional_is_not_retransmitted(self) -> None:
        """
        The client still retransmits its INVITE (Timer A, no provisional
        stopped it): each gets the response from the transaction, and no
        Timer G multiplies what a spoofed INVITE costs its victim.
        """
        transaction = self.invite(code=407)
        self.clock.pump([T1] * 10)
        self.assertEqual(self.out.codes, [407])
        self.assertIsNone(self.receive(request("INVITE")))
        self.assertEqual(self.out.codes, [407, 407])
        self.clock.pump([T1] * 60)
        self.assertEqual(self.out.codes, [407, 407])
        self.assertEqual(transaction.state, "terminated")

    def test_acks_and_invites_in_confirmed_are_absorbed(self) -> None:
        transaction = self.invite(code=486)
        self.receive(ack(self.original(transaction)))
        self.assertIsNone(self.receive(ack(self.original(transaction))))
        self.assertIsNone(self.receive(request("INVITE")))
        self.assertEqual(transaction.state, "confirmed")
        self.assertEqual(self.out.codes, [486])

    def test_confirmed_terminates_after_timer_i(self) -> None:
        transaction = self.invite(code=486)
        self.receive(ack(self.original(transaction)))
        self.clock.advance(T4 - 0.1)
        self.assertIn(transaction.key, self.layer.transactions)
        self.clock.advance(0.1)
        self.assertEqual(transaction.state, "terminated")
        self.assertEqual(self.layer.transactions, {})
        # Timer H, which the ACK made moot, still ends in its queue, harmlessly.
        self.clock.advance(64 * T1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retransmitted_invite_in_completed_resends_the_final_response(self) -> None:
        self.invite(code=486)
        self.assertIsNone(self.receive(request("INVITE")))
        self.assertEqual(self.out.codes, [486, 486])

    def test_without_ack_timer_h_terminates(self) -> None:
        transaction = self.invite(code=486)
        self.clock.advance(64 * T1 - 0.1)
        self.assertEqual(transaction.state, "completed")
        self.clock.advance(0.1)
        self.assertEqual(transaction.state, "terminated")
        self.assertEqual(self.layer.transactions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        sent = len(self.out.sent)
        self.clock.advance(60)
        self.assertEqual(len(self.out.sent), sent)

    def test_reliable_transports_do_not_retransmit_the_final_response(self) -> None:
        transaction = self.invite("tcp", code=486)
        self.clock.advance(64 * T1 - 0.1)
        self.assertEqual(self.out.codes, [486])
        self.assertEqual(transaction.state, "completed")
        self.clock.advance(0.1)
        self.assertEqual(transaction.state, "terminated")

    def test_ack_on_reliable_transports_terminates_at_once(self) -> None:
        transaction = self.invite("tls", code=486)
        self.receive(ack(self.original(transaction)), "tls")
        self.assertEqual(transaction.state, "terminated")
        self.assertEqual(self.layer.transactions, {})
        # Timer H, which the ACK made moot, still ends in its queue, harmlessly.
        self.clock.advance(64 * T1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.out.codes, [486])

    def test_2xx_enters_accepted(self) -> None:
        transaction = self.invite(code=200)
        self.assertEqual(transaction.state, "accepted")
        self.clock.advance(64 * T1)
        # The 2xx is retransmitted by the transaction user, never by the transaction.
        self.assertEqual(self.out.codes, [200])

    def test_retransmitted_invite_in_accepted_is_absorbed(self) -> None:
        transaction = self.invite(code=200)
        self.clock.advance(2)
        self.assertIsNone(self.receive(request("INVITE")))
        self.assertEqual(self.out.codes, [200])
        self.assertEqual(transaction.state, "accepted")

    def test_accepted_terminates_after_64_t1(self) -> None:
        transaction = self.invite(code=200)
        self.clock.advance(64 * T1 - 0.1)
        self.assertEqual(transaction.state, "accepted")
        self.clock.advance(0.1)
        self.assertEqual(transaction.state, "terminated")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Now the same INVITE is new again.
        self.assertIsNotNone(self.receive(request("INVITE")))

    def test_ack_for_a_2xx_is_stray(self) -> None:
        transaction = self.invite(code=200)
        # An ACK for a 2xx is a transaction of its own: a new branch.
        stray = ack(self.original(transaction), branch="z9hG4bK-ack2xx")
        self.assertTrue(self.layer.receiveAck(stray))
        self.assertIsNone(self.receive(stray))
        self.assertEqual(transaction.state, "accepted")

    def test_ack_in_accepted_goes_to_the_transaction_user(self) -> None:
        # RFC 6026 section 8.7: an ACK matching an Accepted transaction is
        # passed to the TU, never swallowed.
        transaction = self.invite(code=200)
        late = ack(self.original(transaction))
        self.assertIsNone(self.receive(late))
        self.assertTrue(self.layer.receiveAck(late))
        self.assertEqual(transaction.state, "accepted")

    def test_ack_for_a_non_2xx_is_not_stray(self) -> None:
        transaction = self.invite(code=486)
        self.assertFalse(self.layer.receiveAck(ack(self.original(transaction))))
        self.assertEqual(transaction.state, "confirmed")
        # Its retransmission is taken too, and goes no further.
        self.assertFalse(self.layer.receiveAck(ack(self.original(transaction))))
        self.assertEqual(transaction.state, "confirmed")

    def test_ack_matching_nothing_is_stray_and_starts_nothing(self) -> None:
        orphan = request("ACK", branch="z9hG4bK-orphan", toTag="x")
        self.assertTrue(self.layer.receiveAck(orphan))
        self.assertIsNone(self.receive(orphan))
        self.assertEqual(self.layer.transactions, {})

    def test_respond_after_the_final_response_is_ignored(self) -> None:
        transaction = self.invite(code=486)
        self.respond(transaction, 200)
        self.assertEqual(transaction.state, "completed")
        self.assertEqual(self.out.codes, [486])


class MatchingTests(TransactionTestCase):
    """RFC 3261 section 17.2.3."""

    def test_same_branch_sent_by_and_method_match(self) -> None:
        transaction = self.start(request("REGISTER", cseq=7))
        self.assertIsNone(self.receive(request("REGISTER", cseq=7)))
        self.assertEqual(list(self.layer.transactions.values()), [transaction])

    def test_cancel_with_the_invite_branch_is_another_transaction(self) -> None:
        invite = self.start(request("INVITE"))
        cancel = self.start(request("CANCEL"))
        self.assertIsNot(cancel, invite)
        self.assertEqual(cancel.state, "trying")
        self.assertEqual(invite.state, "proceeding")
        self.assertEqual(len(self.layer.transactions), 2)

    def test_ack_matches_the_invite_transaction(self) -> None:
        invite = self.start(request("INVITE"))
        self.respond(invite, 404)
        self.assertIsNone(self.receive(ack(self.original(invite))))
        self.assertEqual(invite.state, "confirmed")

    def test_other_sent_by_port_does_not_match(self) -> None:
        first = self.start(request(sentBy="192.0.2.10:5060"))
        second = self.receive(request(sentBy="192.0.2.10:5062"))
        self.assertIsNotNone(second)
        self.assertIsNot(second, first)

    def test_other_sent_by_host_does_not_match(self) -> None:
        first = self.start(request(sentBy="192.0.2.10:5060"))
        second = self.receive(request(sentBy="192.0.2.11:5060"))
        self.assertIsNotNone(second)
        self.assertIsNot(second, first)

    def test_other_branch_does_not_match(self) -> None:
        self.start(request(branch="z9hG4bK-a"))
        self.assertIsNotNone(self.receive(request(branch="z9hG4bK-b")))

    def test_ack_from_another_sent_by_does_not_confirm(self) -> None:
        invite = self.start(request("INVITE"))
        self.respond(invite, 486)
        other = request("ACK", sentBy="192.0.2.10:5062", toTag="srv")
        self.assertIsNone(self.receive(other))
        self.assertTrue(self.layer.receiveAck(other))
        self.assertEqual(invite.state, "completed")

    def test_rfc2543_retransmission_matches(self) -> None:
        transaction = self.start(request("REGISTER", branch=None))
        self.respond(transaction, 200)
        self.assertIsNone(self.receive(request("REGISTER", branch=None)))
        self.assertEqual(self.out.codes, [200, 200])

    def test_rfc2543_branch_without_magic_cookie_matches_on_the_dialog(self) -> None:
        transaction = self.start(request("REGISTER", branch="1"))
        self.respond(transaction, 200)
        self.assertIsNone(self.receive(request("REGISTER", branch="1")))
        self.assertEqual(self.out.codes, [200, 200])

    def test_rfc2543_requests_differing_in_one_identifier_do_not_match(self) -> None:
        self.start(request("REGISTER", branch=None))
        variants = {
            "call-id": request("REGISTER", branch=None, callID="call-2@192.0.2.10"),
            "cseq": request("REGISTER", branch=None, cseq=2),
            "from tag": request("REGISTER", branch=None, fromTag="f2"),
            "to tag": request("REGISTER", branch=None, toTag="t9"),
            "via": request("REGISTER", branch=None, sentBy="192.0.2.10:5062"),
            "method": request("OPTIONS", branch=None),
        }
        for name, variant in variants.items():
            self.assertIsNotNone(self.receive(variant), f"a request with another {name} matched")

    def test_rfc2543_ack_for_a_non_2xx_response_confirms_the_invite(self) -> None:
        # The ACK carries the To tag of our response, which the INVITE had not.
        invite = self.start(request("INVITE", branch=None))
        self.respond(invite, 486)
        ackRequest = ack(self.original(invite), branch=None, toTag="srv")
        self.assertFalse(self.layer.receiveAck(ackRequest))
        self.assertEqual(invite.state, "confirmed")
        self.clock.advance(10)
        self.assertEqual(self.out.codes, [486])

    def test_rfc2543_ack_for_a_2xx_goes_to_the_transaction_user(self) -> None:
        invite = self.start(request("INVITE", branch=None))
        self.respond(invite, 200)
        self.assertTrue(self.layer.receiveAck(ack(self.original(invite), branch=None, toTag="srv")))
        self.assertEqual(invite.state, "accepted")

    def test_rfc2543_reinvite_retransmission_matches(self) -> None:
        invite = self.start(request("INVITE", branch=None, toTag="dialog", cseq=2))
        self.respond(invite, 180)
        self.assertIsNone(self.receive(request("INVITE", branch=None, toTag="dialog", cseq=2)))
        self.assertEqual(self.out.codes, [180, 180])


class AbsorbAckTests(TransactionTestCase):
    """
    L{ServerTransactionLayer.absorbAck}: the ACK of a final non-2xx
    response, known by its top Via alone, confirms its INVITE transaction;
    anything else is left to L{ServerTransactionLayer.receive}.
    """

    def test_the_ack_of_a_non_2xx_confirms(self) -> None:
        invite = self.start(request("INVITE"))
        self.respond(invite, 100)
        self.respond(invite, 486)
        self.assertTrue(self.layer.absorbAck(ack(self.original(invite)).topVia))
        self.assertEqual(invite.state, "confirmed")
        # Timer G stopped: no 486 again.
        self.clock.pump([T1] * 20)
        self.assertEqual(self.out.codes, [100, 486])

    def test_anything_else_is_left_to_receive(self) -> None:
        answered = self.answered("INVITE", "z9hG4bK-ok", 200)
        proceeding = self.answered("INVITE", "z9hG4bK-ringing", 180)
        refused = self.answered("INVITE", "z9hG4bK-no", 486)
        old = self.answered("INVITE", "1", 486)
        for via in [
            ack(self.original(answered), branch="z9hG4bK-ok").topVia,  # Accepted: the ACK goes end to end
            ack(self.original(proceeding), branch="z9hG4bK-ringing").topVia,  # no final response yet
            request("ACK", branch="z9hG4bK-no", sentBy="192.0.2.10:5062").topVia,  # another sent-by
            request("ACK", branch="z9hG4bK-unknown").topVia,
            request("ACK", branch="1").topVia,  # RFC 2543: matched on the dialog by receive
            request("ACK", branch=None).topVia,
            request("ACK", branch="z9hG4bK").topVia,  # a bare magic cookie
        ]:
            self.assertFalse(self.layer.absorbAck(via), via)
        self.assertEqual(
            [t.state for t in (answered, proceeding, refused, old)],
            ["accepted", "proceeding", "completed", "completed"],
        )


class StopTests(TransactionTestCase):
    def test_stop_cancels_every_timer(self) -> None:
        # Completed, rejected (Completed, Timer G), Accepted and Confirmed transactions.
        self.answered("REGISTER", "z9hG4bK-reg", 200)
        self.answered("INVITE", "z9hG4bK-486", 486)
        self.answered("INVITE", "z9hG4bK-200", 200)
        confirmed = self.answered("INVITE", "z9hG4bK-ack", 603)
        self.receive(ack(self.original(confirmed), branch="z9hG4bK-ack"))
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.layer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.layer.transactions, {})
        sent = len(self.out.sent)
        self.clock.advance(100)
        self.assertEqual(len(self.out.sent), sent)

    def test_answer_after_stop_leaves_no_timer(self) -> None:
        # A REGISTER answered by a slow backend while the service stops.
        register = self.start(request("REGISTER", branch="z9hG4bK-reg"))
        invite = self.start(request("INVITE", branch="z9hG4bK-inv"))
        self.layer.stop()
        self.respond(register, 200)
        self.respond(invite, 486)
        self.assertEqual(self.out.codes, [200, 486])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_twice_is_harmless(self) -> None:
        self.respond(self.start(request()), 200)
        self.layer.stop()
        self.layer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
