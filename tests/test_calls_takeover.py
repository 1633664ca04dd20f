"""
Calls still ringing when the server that forwarded them failed (issue 13):
the branch of a forwarded INVITE is derived from the caller's request and
the target with the cluster's key, so the server that took over CANCELs
the callee's transaction, passes the callee's responses up without a
transaction (ACKing its final non-2xx), and bounds the call's life with
Timer C. Sans-IO: bytes through the SIP core on a Clock; the survivor is
a second service on the same key, clock and location.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed

from aetasip.calls.call import EndCause
from aetasip.calls.context import TIMER_C
from aetasip.calls.control import CallControl
from aetasip.calls.token import DialogSigner, forwardBranch, verifiedCaller
from aetasip.sip.client import newBranch
from aetasip.sip.message import Request, Response
from aetasip.sip.parser import parse
from tests.sipagent import Agent
from tests.test_calls import C_SOURCE, KEY, CallTestCase
from tests.test_proxy import A_SOURCE, B_SOURCE, invite, reply
from tests.test_proxy_methods import B_CONTACT

CALLER_VIA = "SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-a2;rport=5060;received=198.51.100.7"


def incoming(via: str = CALLER_VIA, cseq: int = 2, callID: str = "call-ab@test") -> Request:
    """An INVITE as the proxy holds it: its top Via stamped with where it came from."""
    data = invite(cseq=cseq).replace(b"Call-ID: call-ab@test", f"Call-ID: {callID}".encode())
    request = parse(data)
    assert isinstance(request, Request)
    request.set("via", via)
    return request


def branchOf(signer: DialogSigner, request: Request, number: str, contact: str, loop: str) -> str:
    """L{forwardBranch} for the INVITE C{request}."""
    tag = request.fromAddr.tag or ""
    return forwardBranch(signer, request.topVia, request.callID, tag, request.cseq[0], number, contact, loop)


def responseTo(request: Request, branch: str, code: int = 486) -> Response:
    message = parse(
        (
            f"SIP/2.0 {code} Busy Here\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport\r\n"
            f"Via: {request.get('via')}\r\nFrom: {request.get('from')}\r\nTo: {request.get('to')};tag=b\r\n"
            f"Call-ID: {request.callID}\r\nCSeq: {request.cseq[0]} INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Response)
    return message


class BranchTests(CallTestCase):
    """The derived branch: what it depends on, and what verifies."""

    def test_same_length_as_a_random_branch_and_deterministic(self) -> None:
        signer = DialogSigner(KEY)
        branch = branchOf(signer, incoming(), "45675002", "sip:b@10.0.0.9", "")
        self.assertEqual(len(branch), len(newBranch()))
        self.assertTrue(branch.startswith("z9hG4bK"))
        self.assertEqual(branch, branchOf(DialogSigner(KEY), incoming(), "45675002", "sip:b@10.0.0.9", ""))
        self.assertEqual(branchOf(signer, incoming(), "45675002", "sip:b@10.0.0.9", "loop"), f"{branch}.loop")

    def test_each_fork_and_each_transaction_has_its_own(self) -> None:
        signer = DialogSigner(KEY)
        branch = branchOf(signer, incoming(), "45675002", "sip:b@10.0.0.9", "")
        others = {
            branchOf(signer, incoming(), "45675002", "sip:b@10.0.0.10", ""),
            branchOf(signer, incoming(), "45675003", "sip:b@10.0.0.9", ""),
            branchOf(signer, incoming(cseq=3), "45675002", "sip:b@10.0.0.9", ""),
            branchOf(signer, incoming(callID="other@test"), "45675002", "sip:b@10.0.0.9", ""),
            branchOf(signer, incoming(CALLER_VIA.replace("-a2", "-a3")), "45675002", "sip:b@10.0.0.9", ""),
            branchOf(DialogSigner(b"another key"), incoming(), "45675002", "sip:b@10.0.0.9", ""),
        }
        self.assertEqual(len(others), 6)
        self.assertNotIn(branch, others)

    def test_a_response_verifies_and_an_edited_one_does_not(self) -> None:
        signer = DialogSigner(KEY)
        request = incoming()
        branch = branchOf(signer, request, "45675002", "sip:b@10.0.0.9", "0123456789ab")
        caller = verifiedCaller(signer, responseTo(request, branch))
        self.assertIsNotNone(caller)
        assert caller is not None
        self.assertEqual((caller.branch, caller.params["received"]), ("z9hG4bK-a2", "198.51.100.7"))
        flipped = branch[:10] + ("0" if branch[10] != "0" else "1") + branch[11:]
        elsewhere = incoming(CALLER_VIA.replace("198.51.100.7", "192.0.2.99"))
        for forged in (
            responseTo(request, flipped),
            responseTo(request, newBranch()),
            responseTo(request, "z9hG4bK" + "zz" * 8),
            responseTo(incoming(cseq=3), branch),
            # The caller's address is signed: a copy cannot be sent elsewhere.
            responseTo(elsewhere, branch),
        ):
            self.assertIsNone(verifiedCaller(signer, forged), forged)
        self.assertIsNone(verifiedCaller(DialogSigner(b"another key"), responseTo(request, branch)))

    def test_the_forwarded_invite_carries_it(self) -> None:
        sent, _ = self.call()
        ours = sent.vias[0]
        self.assertEqual(sent.vias[1].branch, "z9hG4bK-a2")
        base, _, loop = (ours.branch or "").partition(".")
        self.assertEqual(len(loop), 12)
        request = incoming()
        self.assertEqual(base, branchOf(DialogSigner(KEY), request, "45675002", B_CONTACT, ""))


class RingingElsewhereTests(CallTestCase):
    """A calls B, B rings, the server dies; the survivor gets what follows."""

    def switched(self, rang: Any = True) -> Request:
        """The INVITE B got from the server that died; the survivor has A's CANCEL answered from C{rang}."""
        sent, _ = self.call()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.before = len(self.recorder.events)
        self.makeHarness(clock=self.h.clock)
        CallControl(self.h.service.proxy).lookForCallsRingingElsewhere(lambda *args: succeed(rang))
        return sent

    def cancel(self) -> int:
        data = invite(branch="z9hG4bK-a2", cseq=2).replace(b"INVITE sip", b"CANCEL sip")
        start = len(self.h.sent)
        self.h.send(data.replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL"), A_SOURCE)
        return start

    def test_the_callers_cancel_reaches_the_callee(self) -> None:
        """
        The CANCEL the survivor sends B matches B's INVITE transaction:
        the same top Via (branch and sent-by), Request-URI, Call-ID, From,
        To and CSeq number (RFC 3261 9.1). B's 487 is ACKed, and goes no
        further: the caller had its 487 from the survivor.
        """
        sent = self.switched(("45675002",))
        start = self.cancel()
        self.assertEqual([(r.code, r.get("cseq")) for r in self.repliesTo(A_SOURCE, start)], [
            (200, "2 CANCEL"), (487, "2 INVITE"),
        ])  # fmt: skip
        (cancel,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.getAll("via"), [sent.getAll("via")[0]])
        self.assertEqual(
            (cancel.uri, cancel.callID, cancel.get("from"), cancel.get("to"), cancel.cseq),
            (sent.uri, sent.callID, sent.get("from"), sent.get("to"), (2, "CANCEL")),
        )
        # Sent again until B answers it (a client transaction).
        self.h.clock.advance(0.6)
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["CANCEL", "CANCEL"])
        start = len(self.h.sent)
        self.h.send(reply(cancel, 200, "OK"), B_SOURCE)
        self.h.send(reply(sent, 487, "Request Terminated"), B_SOURCE)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        (ack,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, ack.cseq, ack.toAddr.tag), ("ACK", (2, "ACK"), "b"))
        self.assertEqual(ack.getAll("via"), [sent.getAll("via")[0]])
        self.h.clock.advance(2)
        self.assertEqual(self.requestsTo(B_SOURCE, start + 1), [])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.recovered, call.endCause), (True, EndCause.CANCELLED))

    def test_a_487_with_the_cancels_via_alone_is_acked(self) -> None:
        """sipp answers the INVITE 487 with the CANCEL's Via: no caller's Via to verify, but our CANCEL's branch."""
        sent = self.switched(("45675002",))
        start = self.cancel()
        (cancel,) = self.requestsTo(B_SOURCE, start)
        self.h.send(reply(cancel, 200, "OK"), B_SOURCE)
        start = len(self.h.sent)
        self.h.send(reply(cancel, 487, "Request Terminated").replace(b"2 CANCEL", b"2 INVITE"), B_SOURCE)
        (ack,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, ack.getAll("via")), ("ACK", [sent.getAll("via")[0]]))
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        # Not for a branch it did not cancel.
        start = len(self.h.sent)
        terminated = reply(cancel, 487, "Request Terminated").replace(b"2 CANCEL", b"2 INVITE")
        self.h.send(terminated.replace(b"z9hG4bK", b"z9hG4bKx", 1), B_SOURCE)
        self.assertEqual(self.h.sent[start:], [])

    def test_a_store_saying_only_that_it_rang_cancels_the_dialled_number(self) -> None:
        sent = self.switched(True)
        start = self.cancel()
        (cancel,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual(cancel.getAll("via"), [sent.getAll("via")[0]])

    def test_a_busy_callee_reaches_the_caller(self) -> None:
        """
        B's 486 after the switch: to A without the dead server's Via, ACKed
        to B hop by hop; A's ACK goes nowhere; the record ends 'rejected'.
        A copy of the 486 (the ACK lost) is ACKed again and not passed on.
        """
        sent = self.switched(("45675002",))
        start = len(self.h.sent)
        self.h.send(reply(sent, 486, "Busy Here"), B_SOURCE)
        (busy,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((busy.code, busy.get("cseq"), busy.all("via")), (486, "2 INVITE", [CALLER_VIA]))
        (ack,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, ack.cseq, ack.toAddr.tag, ack.callID), ("ACK", (2, "ACK"), "b", "call-ab@test"))
        self.assertEqual(ack.getAll("via"), [sent.getAll("via")[0]])
        self.assertEqual(self.recorder.names()[self.before :], ["started", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual(
            (call.recovered, call.endCause, call.status, call.caller, call.dialled),
            (True, EndCause.REJECTED, 486, "45675001", "45675002"),
        )
        start = len(self.h.sent)
        ackFromA = invite(branch="z9hG4bK-a2", cseq=2).replace(b"INVITE sip", b"ACK sip")
        self.h.send(ackFromA.replace(b"CSeq: 2 INVITE", b"CSeq: 2 ACK").replace(b"<sip:45675002@sip.example.net>\r\n",
                    b"<sip:45675002@sip.example.net>;tag=b\r\n"), A_SOURCE)  # fmt: skip
        self.assertEqual(self.h.sent[start:], [])
        self.h.send(reply(sent, 486, "Busy Here"), B_SOURCE)
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["ACK"])
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        self.assertEqual(len(self.recorder.events), self.before + 2)

    def test_a_ringing_callee_is_passed_on_but_not_its_trying(self) -> None:
        sent = self.switched()
        start = len(self.h.sent)
        self.h.send(reply(sent, 100, "Trying"), B_SOURCE)
        self.assertEqual(self.h.sent[start:], [])
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        (ringing,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((ringing.code, ringing.all("via")), (180, [CALLER_VIA]))

    def test_forged_responses_go_nowhere(self) -> None:
        sent = self.switched()
        start = len(self.h.sent)
        ours = sent.getAll("via")[0]
        branch = sent.vias[0].branch or ""
        flipped = branch[:10] + ("0" if branch[10] != "0" else "1") + branch[11:]
        self.h.send(reply(sent, 486, "Busy Here").replace(branch.encode(), flipped.encode()), B_SOURCE)
        # Sent to another caller address than the one signed.
        self.h.send(reply(sent, 486, "Busy Here").replace(b"received=198.51.100.7", b"received=192.0.2.99"), B_SOURCE)
        # Nor is a Via of somebody else's taken for ours.
        self.h.send(reply(sent, 486, "Busy Here").replace(ours.split(";")[0].encode(), b"SIP/2.0/UDP 192.0.2.50:5060"),
                    B_SOURCE)  # fmt: skip
        self.assertEqual(self.h.sent[start:], [])
        self.assertEqual(len(self.recorder.events), self.before)

    def test_timer_c_ends_an_adopted_call(self) -> None:
        """
        B rings again after the switch: the survivor adopts the call and
        runs Timer C, started again by each 1xx; when it fires, B gets a
        CANCEL matching its INVITE, A a 408, the record 'no answer'; B's
        487 is ACKed and its late 200 ended with ACK and BYE.
        """
        sent = self.switched()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.h.clock.advance(TIMER_C - 10)
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        start = len(self.h.sent)
        self.h.clock.advance(TIMER_C - 1)
        self.assertEqual(self.h.sent[start:], [])
        self.h.clock.advance(1)
        (timeout,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((timeout.code, timeout.get("cseq"), timeout.all("via")), (408, "2 INVITE", [CALLER_VIA]))
        (cancel,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual((cancel.method, cancel.cseq, cancel.toAddr.tag), ("CANCEL", (2, "CANCEL"), None))
        self.assertEqual(cancel.getAll("via"), [sent.getAll("via")[0]])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.recovered, call.endCause, call.status), (True, EndCause.NO_ANSWER, 408))
        start = len(self.h.sent)
        self.h.send(reply(cancel, 200, "OK"), B_SOURCE)
        self.h.send(reply(sent, 487, "Request Terminated"), B_SOURCE)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["ACK"])
        start = len(self.h.sent)
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["ACK", "BYE"])
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])

    def test_a_final_response_stops_timer_c(self) -> None:
        sent = self.switched()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.assertEqual(len(self.h.service.proxy.router.takeover._ringing), 1)
        self.h.send(reply(sent, 603, "Decline"), B_SOURCE)
        start = len(self.h.sent)
        self.h.clock.advance(TIMER_C + 1)
        self.assertEqual(self.h.sent[start:], [])
        self.assertEqual(self.h.service.proxy.router.takeover._ringing, {})

    def test_the_callers_cancel_stops_timer_c(self) -> None:
        sent = self.switched(("45675002",))
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.assertEqual(len(self.h.service.proxy.router.takeover._ringing), 1)
        start = len(self.h.sent)
        self.cancel()
        self.assertEqual(self.h.service.proxy.router.takeover._ringing, {})
        self.h.clock.advance(TIMER_C + 1)
        self.assertNotIn(408, [r.code for r in self.repliesTo(A_SOURCE, start)])


class ForkedElsewhereTests(CallTestCase):
    """B registered twice, both ringing when the server dies."""

    def withC(self, clock: Any = None) -> None:
        """A service (a new one on C{clock}) where B registered from C too."""
        self.makeHarness(clock=clock, registrar__conflict="allow")
        agent = Agent("45675002", "secret2", source=C_SOURCE, contact="sip:45675002@10.0.0.66")
        self.assertEqual(self.h.register(agent).code, 200)

    def switched(self) -> tuple[Request, Request]:
        """The INVITEs B and C got from the server that died; the survivor's records say B's number rang."""
        self.withC()
        start = len(self.h.sent)
        sent, _ = self.call()
        (other,) = [r for r in self.requestsTo(C_SOURCE, start) if r.method == "INVITE"]
        self.withC(self.h.clock)
        CallControl(self.h.service.proxy).lookForCallsRingingElsewhere(lambda *args: succeed(("45675002",)))
        return sent, other

    def test_the_callers_cancel_reaches_every_fork(self) -> None:
        sent, other = self.switched()
        self.assertNotEqual(sent.vias[0].branch, other.vias[0].branch)
        data = invite(branch="z9hG4bK-a2", cseq=2).replace(b"INVITE sip", b"CANCEL sip")
        start = len(self.h.sent)
        self.h.send(data.replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL"), A_SOURCE)
        (toB,) = self.requestsTo(B_SOURCE, start)
        (toC,) = self.requestsTo(C_SOURCE, start)
        self.assertEqual((toB.method, toB.getAll("via"), toB.uri), ("CANCEL", [sent.getAll("via")[0]], sent.uri))
        self.assertEqual((toC.method, toC.getAll("via"), toC.uri), ("CANCEL", [other.getAll("via")[0]], other.uri))

    def test_a_busy_fork_ends_the_call_and_the_other_is_cancelled(self) -> None:
        """As the caller's transaction ends with the 486, the fork still ringing gets a CANCEL."""
        sent, other = self.switched()
        start = len(self.h.sent)
        self.h.send(reply(sent, 486, "Busy Here"), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [486])
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["ACK"])
        (cancel,) = self.requestsTo(C_SOURCE, start)
        self.assertEqual((cancel.method, cancel.getAll("via"), cancel.uri), (
            "CANCEL", [other.getAll("via")[0]], other.uri,
        ))  # fmt: skip
        # Its 487 is ACKed, and the caller hears no more.
        start = len(self.h.sent)
        self.h.send(reply(other, 487, "Request Terminated"), C_SOURCE)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        self.assertEqual([r.method for r in self.requestsTo(C_SOURCE, start)], ["ACK"])
