"""
Calls as objects (issue 8): their events, the dialogs that carry their
in-dialog traffic (and nobody else's), the signed Route that outlives a
restart, dead calls, session timers, and the media hook. Sans-IO: bytes
through the SIP core on a Clock.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from aetasip.auth import credentialsFromPassword
from aetasip.calls.call import CallObservers, EndCause
from aetasip.calls.control import CallControl
from aetasip.calls.media import MediaRefused
from aetasip.calls.token import DialogSigner
from aetasip.interfaces import ICallControl
from aetasip.sip.message import Request
from aetasip.sip.parser import parse
from tests.sipagent import Agent, Harness, Reply
from tests.test_proxy import A_SOURCE, B_SOURCE, invite, proxyAuthorization, reply
from tests.test_proxy_methods import A_CONTACT, B_CONTACT, B_REAL, dialogReply, request, withHeaders

C_SOURCE = ("192.0.2.66", 5060)
C_CONTACT = "sip:45675003@10.0.0.66"
STRANGER = ("192.0.2.99", 5060)
SDP = b"v=0\r\no=a 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_B = b"v=0\r\no=b 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
KEY = b"k" * 32


class Recorder:
    """An ICallObserver writing down what it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def callStarted(self, call: Any) -> None:
        self.events.append(("started", call))

    def callRinging(self, call: Any) -> None:
        self.events.append(("ringing", call))

    def callAnswered(self, call: Any) -> None:
        self.events.append(("answered", call))

    def callEnded(self, call: Any) -> None:
        self.events.append(("ended", call))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


class Rewriter:
    """An IMediaHandler that marks the SDP it sees, at once or when told."""

    name = "rewriter"

    def __init__(self, wait: bool = False, refuse: bool = False) -> None:
        self.seen: list[tuple[str, str, str, bytes]] = []
        self.waiting: list[Deferred[bytes]] = []
        self.wait = wait
        self.refuse = refuse
        self.refusal: Exception = RuntimeError("no ports left")
        # How many answers fail (the relay cannot take them), with what.
        self.failAnswers = 0
        self.answerFailure: Exception = MediaRefused(503, "Media relay unavailable")
        self.ended: list[Any] = []
        self.releasing: list[Deferred[None]] = []
        self.slowRelease = False

    def _handle(self, kind: str, key: str, sender: str, sdp: bytes) -> Deferred[bytes]:
        self.seen.append((kind, key, sender, sdp))
        if self.refuse and kind == "offer":
            return fail(self.refusal)
        if self.failAnswers and kind == "answer":
            self.failAnswers -= 1
            return fail(self.answerFailure)
        rewritten = sdp.replace(b"c=IN IP4 ", f"c=IN IP4 relay-{kind}-{sender}.".encode())
        if self.wait:
            d: Deferred[bytes] = Deferred()
            self.waiting.append(d)
            d.addCallback(lambda _: rewritten)
            return d
        return succeed(rewritten)

    def offer(self, call: Any, key: str, sender: str, sdp: bytes) -> Deferred[bytes]:
        return self._handle("offer", key, sender, sdp)

    def answer(self, call: Any, key: str, sender: str, sdp: bytes) -> Deferred[bytes]:
        return self._handle("answer", key, sender, sdp)

    def callEnded(self, call: Any) -> Deferred[None] | None:
        self.ended.append(call)
        if not self.slowRelease:
            return None
        d: Deferred[None] = Deferred()
        d.addCallback(lambda _: call.media.setdefault("final", "statistics"))
        self.releasing.append(d)
        return d

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


class CallTestCase(SynchronousTestCase):
    """A (45675001) and B (45675002) registered from behind their NATs."""

    settings: dict[str, Any] = {}

    def setUp(self) -> None:
        self.recorder = Recorder()
        self.media: Any = None
        self.makeHarness()

    def makeHarness(self, clock: Clock | None = None, **extra: Any) -> Harness:
        settings = {"calls__probe_interval": 0, **self.settings, **extra}
        self.h = Harness(
            observers=CallObservers([self.recorder]), media=self.media, dialogKey=KEY, clock=clock, **settings
        )
        self.h.auth.accounts["45675003"] = credentialsFromPassword("45675003", "premium", "aetasip", "secret3")
        for number, password, source, contact in (
            ("45675001", "secret1", A_SOURCE, A_CONTACT),
            ("45675002", "secret2", B_SOURCE, B_CONTACT),
        ):
            self.assertEqual(self.h.register(Agent(number, password, source=source, contact=contact)).code, 200)
        return self.h

    def sentTo(self, destination: tuple[str, int], start: int) -> list[bytes]:
        return [data for where, data in self.h.sent[start:] if where == destination]

    def requestsTo(self, destination: tuple[str, int], start: int) -> list[Request]:
        requests = [parse(d) for d in self.sentTo(destination, start) if not d.startswith(b"SIP/2.0 ")]
        return [r for r in requests if isinstance(r, Request)]

    def repliesTo(self, destination: tuple[str, int], start: int) -> list[Reply]:
        return [Reply(d) for d in self.sentTo(destination, start) if d.startswith(b"SIP/2.0 ")]

    def call(self, callee: str = "45675002", extra: str = "", body: bytes = b"v=0\n") -> tuple[Request, int]:
        """A calls C{callee}; the INVITE as B got it, and the index before it."""
        challenge = self.h.sendOne(invite(callee), A_SOURCE)
        auth = proxyAuthorization(
            "INVITE", f"sip:{callee}@sip.example.net", challenge.challenge(), "45675001", "secret1"
        )
        data = invite(callee, f"{extra}{auth}\r\n", cseq=2, branch="z9hG4bK-a2")
        if body != b"v=0\n":
            head = data.split(b"\r\n\r\n", 1)[0].replace(b"Content-Length: 4", f"Content-Length: {len(body)}".encode())
            if not body:
                head = head.replace(b"Content-Type: application/sdp\r\n", b"")
            data = head + b"\r\n\r\n" + body
        start = len(self.h.sent)
        self.h.send(data, A_SOURCE)
        invites = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "INVITE"]
        return (invites[0] if invites else Request("NONE", "sip:x")), start

    def answered(self, **kwargs: Any) -> tuple[Request, int]:
        sent, start = self.call(**kwargs)
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 180, 200])
        return sent, start

    def fromA(self, method: str, cseq: int, route: str | None, **kwargs: Any) -> list[Reply]:
        """A sends C{method} in the dialog call-ab@test (tags a, b) to B's real address."""
        source = kwargs.pop("source", A_SOURCE)
        headers = [f"Route: {route}"] if route else []
        headers += kwargs.pop("headers", [])
        data = request(method, B_REAL, cseq, toTag="b", callID="call-ab@test", headers=headers, **kwargs)
        return self.h.send(data, source)

    def fromB(self, method: str, cseq: int, route: str | None, source: tuple[str, int] = B_SOURCE) -> list[Reply]:
        """B sends C{method} in the dialog to A's real address."""
        headers = [f"Route: {route}"] if route else []
        data = request(
            method,
            "sip:45675001@198.51.100.7:5060",
            cseq,
            sender="45675002",
            receiver="45675001",
            fromTag="b",
            toTag="a",
            callID="call-ab@test",
            via="10.0.0.9:5060",
            headers=headers,
        )
        return self.h.send(data, source)


class CallEventTests(CallTestCase):
    """The events of calls, in order, with their causes."""

    def test_answered_call_then_caller_bye(self) -> None:
        sent, _ = self.answered()
        self.h.clock.advance(7)
        self.fromA("BYE", 3, sent.getAll("record-route")[0])
        self.assertEqual(self.recorder.names(), ["started", "ringing", "answered", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual(
            (call.caller, call.dialled, call.callee, call.status), ("45675001", "45675002", "45675002", 200)
        )
        self.assertEqual(call.endCause, EndCause.CALLER_BYE)
        self.assertEqual(call.callerLeg.source, A_SOURCE)
        self.assertEqual(call.domain, "sip.example.net")
        self.assertEqual(call.duration, 7.0)
        self.assertEqual(call.answeredBy.leg.source, B_SOURCE)
        self.assertEqual(self.h.service.proxy.calls, {})
        self.assertEqual(len(self.h.service.proxy.dialogs), 0)

    def test_copies_of_the_answer_go_up_until_the_call_ends(self) -> None:
        """
        The INVITE's client transaction lingers 32 s after the 2xx (RFC
        6026) to pass its copies up; once the call is over they are
        absorbed, and nothing of the service holds the ended call any more
        (tens of thousands of short calls would otherwise stay in memory
        for 32 s each).
        """
        sent, start = self.answered()
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 180, 200, 200])
        start = len(self.h.sent)
        self.fromA("BYE", 3, sent.getAll("record-route")[0])
        (bye,) = self.requestsTo(B_SOURCE, start)
        self.h.send(reply(bye, 200, "OK"), B_SOURCE)
        start = len(self.h.sent)
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual(self.sentTo(A_SOURCE, start), [])
        call = self.recorder.events[-1][1]
        holders = [o for o in gc.get_referrers(call) if o is not self.recorder.events]
        self.assertTrue(all(isinstance(o, tuple) and o in self.recorder.events for o in holders), holders)

    def test_callee_bye(self) -> None:
        sent, _ = self.answered()
        self.fromB("BYE", 1, sent.getAll("record-route")[0])
        self.assertEqual(self.recorder.events[-1][1].endCause, EndCause.CALLEE_BYE)

    def test_update_in_an_early_dialog_belongs_to_the_call(self) -> None:
        """An UPDATE before the answer (no 100rel) finds its call by the token of its Route."""
        sent, _ = self.call()
        self.h.send(reply(sent, 183, "Session Progress", contact=B_CONTACT), B_SOURCE)
        start = len(self.h.sent)
        self.assertEqual(self.fromA("UPDATE", 3, sent.getAll("record-route")[0], contact=A_CONTACT), [])
        (update,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual(update.method, "UPDATE")
        self.assertEqual(self.recorder.names(), ["started", "ringing"])
        (call,) = self.h.service.proxy.calls.values()
        self.assertFalse(call.recovered)
        self.assertEqual([d.state for d in call.dialogs], ["early"])
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual([d.state for d in call.dialogs], ["confirmed"])
        self.assertEqual(self.recorder.names(), ["started", "ringing", "answered"])

    def test_busy_call(self) -> None:
        sent, _ = self.call()
        self.h.send(reply(sent, 486, "Busy Here"), B_SOURCE)
        self.assertEqual(self.recorder.names(), ["started", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status, call.targets[0].status), (EndCause.REJECTED, 486, 486))

    def test_cancelled_call(self) -> None:
        sent, _start = self.call()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        cancel = (
            invite(branch="z9hG4bK-a2", cseq=2)
            .replace(b"INVITE sip", b"CANCEL sip")
            .replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL")
        )
        self.h.send(cancel, A_SOURCE)
        self.h.send(reply(sent, 487, "Request Terminated"), B_SOURCE)
        self.assertEqual(self.recorder.names(), ["started", "ringing", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status), (EndCause.CANCELLED, 487))

    def test_unanswered_call_ends_at_timer_c(self) -> None:
        sent, start = self.call()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.h.clock.advance(182)
        (cancel,) = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "CANCEL"]
        self.h.send(reply(cancel, 200, "OK"), B_SOURCE)
        self.h.send(reply(sent, 487, "Request Terminated"), B_SOURCE)
        self.assertEqual(self.recorder.names(), ["started", "ringing", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status), (EndCause.NO_ANSWER, 487))

    def test_call_refused_by_routing(self) -> None:
        _sent, start = self.call("45679999")
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [404])
        self.assertEqual(self.recorder.names(), ["started", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status, call.targets), (EndCause.REJECTED, 404, []))

    def test_unauthenticated_invite_is_no_call(self) -> None:
        self.assertEqual(self.h.sendOne(invite(), A_SOURCE).code, 407)
        self.assertEqual(self.recorder.events, [])

    def test_forked_call_keeps_every_branch(self) -> None:
        """B registered twice: two branches; one answers, the other is cancelled."""
        self.makeHarness(registrar__conflict="allow")
        self.assertEqual(
            self.h.register(Agent("45675002", "secret2", source=C_SOURCE, contact="sip:45675002@10.0.0.66")).code, 200
        )
        start = len(self.h.sent)
        sent, _ = self.call()
        (other,) = [r for r in self.requestsTo(C_SOURCE, start) if r.method == "INVITE"]
        self.h.send(reply(other, 180, "Ringing"), C_SOURCE)
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        call = self.recorder.events[-1][1]
        self.assertEqual(self.recorder.names(), ["started", "ringing", "answered"])
        self.assertEqual([t.leg.source for t in call.targets], [B_SOURCE, C_SOURCE])
        self.assertEqual(call.answeredBy.leg.source, B_SOURCE)
        self.assertEqual([r.method for r in self.requestsTo(C_SOURCE, start)], ["INVITE", "CANCEL"])


class HuntingEventTests(CallTestCase):
    """A call to a hunting series: one call, its members resolved in turn."""

    def setUp(self) -> None:
        super().setUp()
        addHuntingSeries(self)

    def test_busy_member_then_answer(self) -> None:
        start = len(self.h.sent)
        _sent, _ = self.call("45676000")
        (first,) = [r for r in self.requestsTo(C_SOURCE, start) if r.method == "INVITE"]
        self.h.send(reply(first, 486, "Busy Here"), C_SOURCE)
        (second,) = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "INVITE"]
        self.h.send(reply(second, 180, "Ringing"), B_SOURCE)
        self.h.send(reply(second, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual(self.recorder.names(), ["started", "ringing", "answered"])
        call = self.recorder.events[-1][1]
        self.assertEqual(call.dialled, "45676000")
        self.assertEqual(call.resolved, ["45676000", "45675003", "45675002"])
        self.assertEqual([(t.number, t.status) for t in call.targets], [("45675003", 486), ("45675002", 200)])
        self.assertEqual(call.callee, "45675002")

    def test_nobody_answers(self) -> None:
        start = len(self.h.sent)
        _sent, _ = self.call("45676000")
        (first,) = [r for r in self.requestsTo(C_SOURCE, start) if r.method == "INVITE"]
        self.h.send(reply(first, 480, "Temporarily Unavailable"), C_SOURCE)
        (second,) = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "INVITE"]
        self.h.send(reply(second, 480, "Temporarily Unavailable"), B_SOURCE)
        self.assertEqual(self.recorder.names(), ["started", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status), (EndCause.NO_ANSWER, 480))


class StrangerTests(CallTestCase):
    """Nobody but the two parties of a dialog of ours gets anything through it."""

    def setUp(self) -> None:
        super().setUp()
        self.sent, _ = self.answered()
        self.route = self.sent.getAll("record-route")[0]

    def assertNothingLeft(self, start: int) -> None:
        self.assertEqual([where for where, _ in self.h.sent[start:] if where != STRANGER], [])

    def test_stranger_requests_in_a_dialog_are_refused(self) -> None:
        for method in ("BYE", "INFO", "INVITE"):
            start = len(self.h.sent)
            (refused,) = self.fromA(method, 10, self.route, source=STRANGER)
            self.assertEqual((refused.code, refused.reason), (403, "Not a party to this call"))
            self.assertNothingLeft(start)
        start = len(self.h.sent)
        self.assertEqual(self.fromA("ACK", 2, self.route, source=STRANGER), [])
        self.assertNothingLeft(start)
        self.assertEqual(self.recorder.names()[-1], "answered")

    def test_same_host_other_port_is_a_stranger(self) -> None:
        """Another agent behind A's NAT (or on A's host) cannot end or take over A's call."""
        neighbour = (A_SOURCE[0], A_SOURCE[1] + 1)
        start = len(self.h.sent)
        (refused,) = self.fromA("BYE", 10, self.route, source=neighbour)
        self.assertEqual(refused.code, 403)
        (refused,) = self.fromA("INVITE", 11, self.route, source=neighbour, contact="sip:x@198.51.100.7:5061")
        self.assertEqual(refused.code, 403)
        self.assertEqual([where for where, _ in self.h.sent[start:] if where != neighbour], [])
        # A is still where it was: the probes and B's BYE go there.
        start = len(self.h.sent)
        self.fromB("BYE", 1, self.route)
        self.assertEqual([d[:4] for where, d in self.h.sent[start:] if where == A_SOURCE], [b"BYE "])

    def test_stranger_stray_2xx_is_not_reflected(self) -> None:
        start = len(self.h.sent)
        stray = (
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP sip.example.net:5060;branch=z9hG4bK-gone\r\n"
            "Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-x;received=198.51.100.7;rport=5060\r\n"
            "From: <sip:45675001@sip.example.net>;tag=a\r\nTo: <sip:45675002@sip.example.net>;tag=b\r\n"
            "Call-ID: call-ab@test\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        self.h.send(stray.encode(), STRANGER)
        self.assertNothingLeft(start)
        # From B itself, the retransmission reaches A.
        self.h.send(stray.encode(), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [200])

    def test_unknown_dialog_gets_481(self) -> None:
        start = len(self.h.sent)
        data = request("BYE", B_REAL, 3, toTag="zz", callID="other@test")
        (refused,) = self.h.send(data, A_SOURCE)
        self.assertEqual(refused.code, 481)
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])

    def test_forged_token_gets_403(self) -> None:
        """A Route token edited to point at another host does not verify."""
        signer = DialogSigner(b"not the key" * 3)
        token = signer.sign("INVITE", "call-x@test", "x", "45675001", "45675002", "1", _leg(A_SOURCE), _leg(STRANGER))
        start = len(self.h.sent)
        data = request(
            "BYE",
            "sip:v@192.0.2.99",
            3,
            toTag="y",
            fromTag="x",
            callID="call-x@test",
            headers=[f"Route: <sip:sip.example.net:5060;lr;dlg={token}>"],
        )
        (refused,) = self.h.send(data, A_SOURCE)
        self.assertEqual(refused.code, 403)
        self.assertEqual([where for where, _ in self.h.sent[start:] if where != A_SOURCE], [])

    def test_token_of_another_dialog_is_refused(self) -> None:
        """Our own valid token, pasted into another Call-ID: 403, nothing sent."""
        start = len(self.h.sent)
        data = request("BYE", B_REAL, 3, toTag="b", callID="another@test", headers=[f"Route: {self.route}"])
        (refused,) = self.h.send(data, A_SOURCE)
        self.assertEqual(refused.code, 403)
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])


def _leg(source: tuple[str, int]) -> Any:
    from aetasip.calls.call import Leg

    return Leg(source, "udp", ("127.0.0.1", 5060))


class RestartTests(CallTestCase):
    """A restarted service routes the calls in progress by their signed Route."""

    def test_bye_after_restart_reaches_the_other_party(self) -> None:
        sent, _ = self.answered()
        route = sent.getAll("record-route")[0]
        self.h.service.proxy.stop()
        self.assertEqual(self.recorder.events[-1][1].endCause, EndCause.SERVER_SHUTDOWN)
        # A new service on the same key and clock, knowing no dialog.
        before = len(self.recorder.events)
        self.makeHarness(clock=self.h.clock)
        start = len(self.h.sent)
        self.assertEqual(self.fromB("BYE", 1, route), [])
        (bye,) = self.requestsTo(A_SOURCE, start)
        self.assertEqual((bye.method, bye.uri), ("BYE", "sip:45675001@198.51.100.7:5060"))
        self.assertEqual(bye.callID, "call-ab@test")
        self.assertEqual(bye.getAll("route"), [])
        self.assertEqual([n for n, _ in self.recorder.events[before:]], ["started", "answered", "ended"])
        call = self.recorder.events[-1][1]
        self.assertTrue(call.recovered)
        self.assertEqual((call.caller, call.callee, call.endCause), ("45675001", "45675002", EndCause.CALLEE_BYE))

    def test_an_answer_after_a_switch_reaches_the_caller(self) -> None:
        """
        The server dies while the call rings; the callee's 200 reaches
        the one that took the address over (same key), which has no
        transaction for it: it rebuilds the dialog from the signed
        Record-Route and sends the 200 to the caller, whose ACK then
        reaches the callee.
        """
        sent, _ = self.call()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        route = sent.getAll("record-route")[0]
        before = len(self.recorder.events)
        self.makeHarness(clock=self.h.clock)
        start = len(self.h.sent)
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        (ok,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((ok.code, ok.get("call-id")), (200, "call-ab@test"))
        # Its Via (the dead server's, the same address) taken off: the caller's alone.
        self.assertEqual(len(ok.all("via")), 1)
        # Its Contact fixed to where B's packets come from, as the dead server would have.
        self.assertIn(f"{B_SOURCE[0]}:{B_SOURCE[1]}", ok.get("contact") or "")
        start = len(self.h.sent)
        self.assertEqual(self.fromA("ACK", 2, route), [])
        (ack,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, ack.uri, ack.callID), ("ACK", B_REAL, "call-ab@test"))
        # Then it is a call like any other taken over: its BYE ends it here.
        start = len(self.h.sent)
        self.assertEqual(self.fromB("BYE", 1, route), [])
        self.assertEqual([r.method for r in self.requestsTo(A_SOURCE, start)], ["BYE"])
        self.assertEqual([n for n, _ in self.recorder.events[before:]], ["started", "answered", "ended"])
        self.assertTrue(self.recorder.events[-1][1].recovered)

    def test_a_forged_answer_after_a_switch_goes_nowhere(self) -> None:
        sent, _ = self.call()
        self.makeHarness(clock=self.h.clock)
        before = len(self.recorder.events)
        start = len(self.h.sent)
        forged = reply(sent, 200, "OK", contact=B_CONTACT).replace(b";tag=a", b";tag=x")
        self.h.send(forged, B_SOURCE)
        # A true copy from anyone but the callee makes no call either.
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), STRANGER)
        self.assertEqual(self.h.sent[start:], [])
        self.assertEqual(self.recorder.events[before:], [])
        self.assertEqual(self.h.service.proxy.calls, {})

    def cancelAfterSwitch(self, ringing: Any) -> tuple[Request, str, list[Reply], int]:
        """
        A calls B, B rings, the server dies; A's CANCEL reaches the one
        that took over, whose records say whether the call rang elsewhere.
        """
        sent, _ = self.call()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.makeHarness(clock=self.h.clock)
        asked: list[tuple[str, str, tuple[str, int]]] = []

        def lookup(callID: str, callerTag: str, source: tuple[str, int]) -> Any:
            asked.append((callID, callerTag, source))
            return ringing(source) if callable(ringing) else ringing

        if ringing is not None:
            CallControl(self.h.service.proxy).lookForCallsRingingElsewhere(lookup)
        self.asked = asked
        cancel = (
            invite(branch="z9hG4bK-a2", cseq=2)
            .replace(b"INVITE sip", b"CANCEL sip")
            .replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL")
        )
        start = len(self.h.sent)
        self.h.send(cancel, A_SOURCE)
        return sent, sent.getAll("record-route")[0], self.repliesTo(A_SOURCE, start), start

    def test_a_cancel_of_a_call_ringing_on_a_failed_server(self) -> None:
        """
        The caller stops waiting (200, then 487 for its INVITE), the record
        ends 'cancelled'; the callee's late answer is ACKed and ended, and
        reaches nobody.
        """
        before = len(self.recorder.events)
        sent, route, replies, _ = self.cancelAfterSwitch(succeed(True))
        self.assertEqual(self.asked, [("call-ab@test", "a", A_SOURCE)])
        self.assertEqual([(r.code, r.get("cseq")) for r in replies], [(200, "2 CANCEL"), (487, "2 INVITE")])
        self.assertEqual(
            replies[1].get("via"), "SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-a2;rport=5060;received=198.51.100.7"
        )
        self.assertEqual(self.recorder.names()[-2:], ["started", "ended"])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.recovered, call.endCause, call.status), (True, EndCause.CANCELLED, 487))
        self.assertEqual(
            (call.callID, call.callerTag, call.caller, call.dialled), ("call-ab@test", "a", "45675001", "45675002")
        )
        self.assertEqual(self.recorder.names()[before:], ["started", "ringing", "started", "ended"])
        events = len(self.recorder.events)
        start = len(self.h.sent)
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        ack, bye = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, ack.cseq, ack.uri), ("ACK", (2, "ACK"), B_REAL))
        self.assertEqual((bye.method, bye.cseq, bye.toAddr.tag), ("BYE", (3, "BYE"), "b"))
        self.assertIn("cancelled", bye.get("reason") or "")
        self.assertEqual(len(self.recorder.events), events)
        self.assertEqual(self.h.service.proxy.calls, {})
        # The callee's late requests make no call either.
        self.assertEqual([r.code for r in self.fromB("BYE", 1, route)], [481])

    def test_a_cancel_of_a_call_unknown_elsewhere_gets_481(self) -> None:
        sent, _route, replies, _ = self.cancelAfterSwitch(succeed(False))
        self.assertEqual([r.code for r in replies], [481])
        # The callee's answer then reaches the caller as ever.
        start = len(self.h.sent)
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [200])

    def test_a_cancel_without_a_cluster_gets_481(self) -> None:
        _sent, _route, replies, _ = self.cancelAfterSwitch(None)
        self.assertEqual([r.code for r in replies], [481])

    def test_a_cancel_when_the_store_fails_gets_481(self) -> None:
        _sent, _route, replies, _ = self.cancelAfterSwitch(fail(RuntimeError("store down")))
        self.assertEqual([r.code for r in replies], [481])

    def test_a_cancel_waits_for_the_store(self) -> None:
        answer: Deferred[bool] = Deferred()
        _sent, _route, replies, start = self.cancelAfterSwitch(answer)
        self.assertEqual(replies, [])
        answer.callback(True)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [200, 487])

    def test_reinvite_after_restart_reaches_the_callee(self) -> None:
        sent, _ = self.answered()
        route = sent.getAll("record-route")[0]
        self.makeHarness(clock=self.h.clock)
        start = len(self.h.sent)
        self.assertEqual([r.code for r in self.fromA("INVITE", 3, route, contact=A_CONTACT)], [])
        (reinvite,) = self.requestsTo(B_SOURCE, start)
        self.assertEqual(reinvite.method, "INVITE")

    def test_another_key_does_not_verify(self) -> None:
        sent, _ = self.answered()
        route = sent.getAll("record-route")[0]
        self.h = Harness(dialogKey=b"another key entirely", clock=self.h.clock)
        (refused,) = self.fromB("BYE", 1, route)
        self.assertEqual(refused.code, 403)


class EndedDialogTests(CallTestCase):
    """
    A dialog that ended in this process never comes back from the signed
    token of its Route (that is for a restart or a backup server): its
    late requests get 481 (BYE retransmissions the transaction's answer),
    nothing is forwarded twice, and no "recovered" call is made.
    """

    def setUp(self) -> None:
        super().setUp()
        self.sent, _ = self.answered()
        self.route = self.sent.getAll("record-route")[0]

    def assertNoZombie(self, start: int) -> None:
        self.assertEqual(self.recorder.names(), ["started", "ringing", "answered", "ended"])
        self.assertEqual(self.h.service.proxy.calls, {})
        self.assertEqual(len(self.h.service.proxy.dialogs), 0)

    def byeFromA(self) -> bytes:
        data = request(
            "BYE", B_REAL, 3, toTag="b", callID="call-ab@test", branch="z9hG4bK-bye1", headers=[f"Route: {self.route}"]
        )
        start = len(self.h.sent)
        self.assertEqual(self.h.send(data, A_SOURCE), [])
        (bye,) = self.requestsTo(B_SOURCE, start)
        self.h.send(dialogReply(bye, 200, "OK"), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [200])
        return data

    def test_late_requests_after_a_bye_get_481_and_make_no_call(self) -> None:
        bye = self.byeFromA()
        self.assertEqual(self.recorder.events[-1][1].endCause, EndCause.CALLER_BYE)
        start = len(self.h.sent)
        # The BYE again (its 200 was lost): the transaction's 200 again, nothing to B.
        self.assertEqual([r.code for r in self.h.send(bye, A_SOURCE)], [200])
        # B's own BYE crossing A's, a late re-INVITE and an INFO: 481; an ACK: dropped.
        self.assertEqual([r.code for r in self.fromB("BYE", 1, self.route)], [481])
        self.assertEqual([r.code for r in self.fromA("INVITE", 4, self.route, contact=A_CONTACT)], [481])
        self.assertEqual([r.code for r in self.fromA("INFO", 5, self.route)], [481])
        self.assertEqual(self.fromA("ACK", 4, self.route), [])
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])
        self.assertEqual(self.requestsTo(A_SOURCE, start), [])
        self.assertNoZombie(start)

    def test_late_requests_after_a_release_get_481(self) -> None:
        """The service ended the call (a media timeout, the operator): an agent that missed its BYE."""
        (call,) = self.h.service.proxy.calls.values()
        self.h.service.proxy.release(call, EndCause.MEDIA_TIMEOUT, "no media for 61 s")
        start = len(self.h.sent)
        self.assertEqual([r.code for r in self.fromA("INVITE", 4, self.route, contact=A_CONTACT)], [481])
        self.assertEqual([r.code for r in self.fromB("BYE", 7, self.route)], [481])
        self.assertEqual(self.requestsTo(B_SOURCE, start) + self.requestsTo(A_SOURCE, start), [])
        self.assertNoZombie(start)

    def test_the_memory_is_bounded_in_time(self) -> None:
        """Past ENDED_MEMORY the token is trusted again (as after a restart): the memory does not grow."""
        from aetasip.calls.dialog import ENDED_MEMORY

        self.byeFromA()
        self.h.clock.advance(ENDED_MEMORY - 1)
        self.assertEqual([r.code for r in self.fromA("INFO", 5, self.route)], [481])
        self.h.clock.advance(2)
        start = len(self.h.sent)
        self.assertEqual(self.fromA("INFO", 6, self.route), [])
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["INFO"])
        self.assertEqual(len(self.h.service.proxy.dialogs._ended), 0)

    def test_the_table_of_ended_dialogs_is_bounded_in_size(self) -> None:
        from aetasip.calls.dialog import DialogTable

        table = DialogTable(2, self.h.clock.seconds)
        for n in range(3):
            table.endedHere(f"c{n}", "a", "b")
        self.assertEqual([table.ended(f"c{n}", "b", "a") for n in range(3)], [False, True, True])

    def test_a_restart_still_recovers_the_call(self) -> None:
        """The memory is this process's: a new service (or a stopped one) recovers by the token."""
        self.h.service.proxy.stop()
        self.makeHarness(clock=self.h.clock)
        start = len(self.h.sent)
        self.assertEqual(self.fromA("INFO", 5, self.route), [])
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["INFO"])


class DeadCallTests(CallTestCase):
    """Calls whose agent vanished end by themselves."""

    settings = {"calls__probe_interval": 30}

    def probe(self, start: int) -> tuple[Request, Request]:
        (toA,) = [r for r in self.requestsTo(A_SOURCE, start) if r.method == "OPTIONS"]
        (toB,) = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "OPTIONS"]
        return toA, toB

    def test_probes_go_to_both_legs_in_the_dialog(self) -> None:
        _sent, _ = self.answered()
        start = len(self.h.sent)
        self.h.clock.advance(30)
        toA, toB = self.probe(start)
        self.assertEqual((toB.uri, toB.callID, toB.get("cseq")), (B_REAL, "call-ab@test", "2 OPTIONS"))
        self.assertEqual((toB.fromAddr.tag, toB.toAddr.tag), ("a", "b"))
        self.assertEqual((toA.uri, toA.fromAddr.tag, toA.toAddr.tag), ("sip:45675001@198.51.100.7:5060", "b", "a"))
        # Both answer: the call goes on.
        self.h.send(dialogReply(toA, 200, "OK"), A_SOURCE)
        self.h.send(dialogReply(toB, 200, "OK"), B_SOURCE)
        self.h.clock.advance(30)
        self.assertEqual(self.recorder.names()[-1], "answered")

    def test_a_silent_leg_ends_the_call_with_bye_to_both(self) -> None:
        self.answered()
        start = len(self.h.sent)
        self.h.clock.advance(30)
        toA, _ = self.probe(start)
        self.h.send(dialogReply(toA, 200, "OK"), A_SOURCE)
        start = len(self.h.sent)
        self.h.clock.advance(30)
        byes = {where: parse(d) for where, d in self.h.sent[start:] if d.startswith(b"BYE ")}
        self.assertEqual(set(byes), {A_SOURCE, B_SOURCE})
        toA = byes[A_SOURCE]
        assert isinstance(toA, Request)
        # In B's name, past every CSeq B used.
        self.assertEqual((toA.fromAddr.tag, toA.toAddr.tag, toA.get("cseq")), ("b", "a", "1 BYE"))
        call = self.recorder.events[-1][1]
        self.assertEqual((self.recorder.names()[-1], call.endCause), ("ended", EndCause.DEAD_DIALOG))
        self.assertIn("callee", call.endDetail)
        self.assertEqual(self.h.service.proxy.calls, {})

    def test_a_481_ends_the_call(self) -> None:
        self.answered()
        start = len(self.h.sent)
        self.h.clock.advance(30)
        _, toB = self.probe(start)
        self.h.send(dialogReply(toB, 481, "Call/Transaction Does Not Exist"), B_SOURCE)
        self.assertEqual(self.recorder.events[-1][1].endCause, EndCause.DEAD_DIALOG)

    def test_default_interval_ends_a_dead_call_within_90_seconds(self) -> None:
        self.answered()
        self.h.clock.pump([1.0] * 90)
        self.assertEqual(self.recorder.events[-1][1].endCause, EndCause.DEAD_DIALOG)

    def test_a_standby_sends_no_probe_and_ends_no_call(self) -> None:
        """
        A standby server of a cluster (probing off through the calls'
        control) neither probes nor judges a call dead: its probes would
        leave from the floating address and be answered to the active server.
        """
        self.answered()
        CallControl(self.h.service.proxy).probe(False)
        start = len(self.h.sent)
        self.h.clock.pump([1.0] * 200)
        self.assertEqual([r for r in self.requestsTo(A_SOURCE, start) if r.method == "OPTIONS"], [])
        self.assertEqual(self.recorder.names()[-1], "answered")
        # Active again: probes resume, and a silent party is found again.
        CallControl(self.h.service.proxy).probe(True)
        start = len(self.h.sent)
        self.h.clock.advance(30)
        self.probe(start)
        self.h.clock.pump([1.0] * 60)
        self.assertEqual(self.recorder.events[-1][1].endCause, EndCause.DEAD_DIALOG)

    def test_a_probe_unanswered_when_the_server_became_standby_is_forgiven(self) -> None:
        self.answered()
        start = len(self.h.sent)
        self.h.clock.advance(30)
        self.probe(start)
        CallControl(self.h.service.proxy).probe(False)
        self.h.clock.advance(30)
        CallControl(self.h.service.proxy).probe(True)
        self.h.clock.advance(30)
        self.assertEqual(self.recorder.names()[-1], "answered")

    def test_operator_release(self) -> None:
        self.answered()
        call = self.recorder.events[-1][1]
        control = CallControl(self.h.service.proxy)
        self.assertTrue(verifyObject(ICallControl, control))
        self.assertEqual((control.active(), control.find("call-ab@test")), ([call], [call]))
        self.assertEqual(control.find("other@test"), [])
        start = len(self.h.sent)
        control.release(call, EndCause.OPERATOR_RELEASE, "")
        self.assertEqual({where for where, d in self.h.sent[start:] if d.startswith(b"BYE ")}, {A_SOURCE, B_SOURCE})
        self.assertEqual(call.endCause, EndCause.OPERATOR_RELEASE)

    def test_a_call_ended_elsewhere_ends_here_without_a_word(self) -> None:
        """
        Its BYE went to another server of the cluster (this one drained):
        the call ends with the cause it ended with there, nothing is sent,
        and its dialog is gone (a late request gets 481).
        """
        sent, _ = self.answered()
        route = sent.getAll("record-route")[0]
        (call,) = CallControl(self.h.service.proxy).active()
        start = len(self.h.sent)
        CallControl(self.h.service.proxy).endedElsewhere(call, EndCause.CALLEE_BYE, "ended at sip2 after a switch")
        self.assertEqual(self.h.sent[start:], [])
        self.assertEqual((call.endCause, call.endDetail), (EndCause.CALLEE_BYE, "ended at sip2 after a switch"))
        self.assertEqual(self.recorder.names()[-1], "ended")
        self.assertEqual(self.h.service.proxy.calls, {})
        self.assertEqual([r.code for r in self.fromA("BYE", 3, route)], [481])
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])

    def test_a_ringing_call_is_not_ended_elsewhere(self) -> None:
        self.call()
        (call,) = CallControl(self.h.service.proxy).active()
        CallControl(self.h.service.proxy).endedElsewhere(call, EndCause.CALLER_BYE, "")
        self.assertFalse(call.ended)

    def test_release_while_ringing_cancels(self) -> None:
        sent, start = self.call()
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        call = self.recorder.events[-1][1]
        CallControl(self.h.service.proxy).release(call, EndCause.MEDIA_TIMEOUT, "no RTP")
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["INVITE", "CANCEL"])
        self.assertEqual((call.endCause, call.endDetail), (EndCause.MEDIA_TIMEOUT, "no RTP"))
        self.assertEqual(CallControl(self.h.service.proxy).active(), [])

    def test_stopping_leaves_no_timer(self) -> None:
        self.answered()
        service = self.h.service
        service.proxy.stop()
        service.clients.stop()
        service.transactions.stop()
        service.pinger.stop()
        self.h.location.stop()
        self.assertEqual([c for c in self.h.clock.getDelayedCalls() if c.active()], [])


class SessionTimerTests(CallTestCase):
    """RFC 4028, as the agents ask for it."""

    def test_session_not_refreshed_is_released(self) -> None:
        sent, _ = self.call(extra="Supported: timer\r\nSession-Expires: 120\r\n")
        self.h.send(
            withHeaders(reply(sent, 200, "OK", contact=B_CONTACT), "Session-Expires: 120;refresher=uac"), B_SOURCE
        )
        self.h.clock.advance(119)
        self.assertEqual(self.recorder.names()[-1], "answered")
        self.h.clock.advance(2)
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.endDetail), (EndCause.DEAD_DIALOG, "session timer expired"))

    def test_refresh_keeps_the_session(self) -> None:
        sent, _ = self.call(extra="Supported: timer\r\nSession-Expires: 120\r\n")
        route = sent.getAll("record-route")[0]
        self.h.send(
            withHeaders(reply(sent, 200, "OK", contact=B_CONTACT), "Session-Expires: 120;refresher=uac"), B_SOURCE
        )
        self.h.clock.advance(60)
        start = len(self.h.sent)
        self.fromA("UPDATE", 3, route, contact=A_CONTACT)
        (update,) = self.requestsTo(B_SOURCE, start)
        self.h.send(dialogReply(update, 200, "OK", ["Session-Expires: 120;refresher=uac"]), B_SOURCE)
        self.h.clock.advance(100)
        self.assertEqual(self.recorder.names()[-1], "answered")

    def test_too_short_interval_gets_422(self) -> None:
        _sent, start = self.call(extra="Supported: timer\r\nSession-Expires: 30\r\n")
        (refused,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((refused.code, refused.get("min-se")), (422, "90"))

    def test_too_short_interval_is_raised_for_agents_without_timers(self) -> None:
        sent, _ = self.call(extra="Session-Expires: 30\r\n")
        self.assertEqual((sent.get("session-expires"), sent.get("min-se")), ("90", "90"))


class DurationTests(CallTestCase):
    settings = {"calls__max_duration": 3600}

    def test_longest_call_is_released(self) -> None:
        self.answered()
        self.h.clock.advance(3601)
        self.assertEqual(self.recorder.events[-1][1].endCause, EndCause.DURATION_LIMIT)


class MediaHookTests(CallTestCase):
    """Every SDP passes through the media handler, and the agents see what it made."""

    def setUp(self) -> None:
        self.recorder = Recorder()
        self.media = Rewriter()
        self.makeHarness()

    def answeredCall(self) -> str:
        """A call with SDP both ways, answered by B and ACKed by A: the route of its dialog."""
        sent, _ = self.call(body=SDP)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        route = sent.getAll("record-route")[0]
        self.fromA("ACK", 2, route)
        return route

    def test_offer_and_answer_of_a_call(self) -> None:
        sent, start = self.call(body=SDP)
        self.assertIn(b"c=IN IP4 relay-offer-caller.10.0.0.7", sent.body)
        self.h.send(withSDP(reply(sent, 183, "Session Progress", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        toA = self.repliesTo(A_SOURCE, start)
        self.assertEqual([r.code for r in toA], [100, 183, 200])
        for r in toA[1:]:
            self.assertIn(b"c=IN IP4 relay-answer-callee.10.0.0.9", r.data)
        self.assertEqual(
            [(k, key, s) for k, key, s, _ in self.media.seen],
            [("offer", "1", "caller"), ("answer", "1", "callee"), ("answer", "1", "callee")],
        )
        self.fromA("BYE", 3, sent.getAll("record-route")[0])
        self.assertEqual(len(self.media.ended), 1)

    def test_late_offer(self) -> None:
        sent, start = self.call(body=b"")
        self.assertEqual(sent.body, b"")
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.assertIn(b"relay-offer-callee", self.repliesTo(A_SOURCE, start)[-1].data)
        start = len(self.h.sent)
        self.fromA("ACK", 2, sent.getAll("record-route")[0], contentType="application/sdp", body=SDP)
        (ack,) = self.requestsTo(B_SOURCE, start)
        self.assertIn(b"relay-answer-caller", ack.body)

    def test_reinvite(self) -> None:
        sent, _ = self.call(body=SDP)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        start = len(self.h.sent)
        self.fromA(
            "INVITE", 3, sent.getAll("record-route")[0], contact=A_CONTACT, contentType="application/sdp", body=SDP
        )
        (reinvite,) = self.requestsTo(B_SOURCE, start)
        self.assertIn(b"relay-offer-caller", reinvite.body)
        self.h.send(withSDP(dialogReply(reinvite, 200, "OK", [f"Contact: <{B_CONTACT}>"]), SDP_B), B_SOURCE)
        self.assertIn(b"relay-answer-callee", self.repliesTo(A_SOURCE, start)[-1].data)

    def test_messages_keep_their_order_while_the_handler_works(self) -> None:
        self.media.wait = True
        sent, start = self.call(body=SDP)
        self.assertEqual(sent.method, "NONE")  # the offer is still being worked on
        self.media.release()
        (sent,) = self.requestsTo(B_SOURCE, start)
        self.h.send(withSDP(reply(sent, 183, "Session Progress", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100])
        self.media.release()
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 183, 180])

    def test_refused_offer_answers_503(self) -> None:
        self.media.refuse = True
        _sent, start = self.call(body=SDP)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 503])
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status), (EndCause.REJECTED, 503))

    def test_an_offer_refused_with_a_status_gets_it(self) -> None:
        """A handler's L{MediaRefused} gives the status and reason (400 for SDP it cannot read)."""
        self.media.refuse = True
        self.media.refusal = MediaRefused(400, "Bad SDP: no c= line for the audio section")
        _sent, start = self.call(body=SDP)
        replies = self.repliesTo(A_SOURCE, start)
        self.assertEqual(
            [(r.code, r.reason) for r in replies][1:], [(400, "Bad SDP: no c= line for the audio section")]
        )
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])

    def test_a_reinvite_refused_with_a_status_gets_it(self) -> None:
        sent, _ = self.call(body=SDP)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.media.refuse = True
        self.media.refusal = MediaRefused(400, "Bad SDP: malformed m= line (line 6)")
        start = len(self.h.sent)
        (refused,) = self.fromA(
            "INVITE", 3, sent.getAll("record-route")[0], contact=A_CONTACT, contentType="application/sdp", body=SDP
        )
        self.assertEqual((refused.code, refused.reason), (400, "Bad SDP: malformed m= line (line 6)"))
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])

    def test_a_2xx_whose_answer_fails_is_acked_and_ended(self) -> None:
        """No one-way audio: the callee gets ACK and BYE, the caller a 500 with a Warning."""
        self.media.failAnswers = 1
        sent, start = self.call(body=SDP)
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        ok = withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B)
        self.h.send(ok, B_SOURCE)
        toA = self.repliesTo(A_SOURCE, start)
        self.assertEqual([r.code for r in toA], [100, 180, 500])
        self.assertIn(b"Warning: 399 aetasip", toA[-1].data)
        self.assertIn(b"Media relay unavailable", toA[-1].data)
        ack, bye = [r for r in self.requestsTo(B_SOURCE, start) if r.method != "INVITE"]
        self.assertEqual((ack.method, ack.cseq), ("ACK", (2, "ACK")))
        self.assertEqual((bye.method, bye.cseq), ("BYE", (3, "BYE")))
        self.assertEqual((ack.toAddr.tag, bye.toAddr.tag), ("b", "b"))
        self.assertEqual(ack.uri, bye.uri)
        self.assertIn("media failure", bye.get("reason") or "")
        call = self.recorder.events[-1][1]
        self.assertEqual(self.recorder.names(), ["started", "ringing", "ended"])
        self.assertEqual((call.endCause, call.status), (EndCause.MEDIA_FAILURE, 500))
        self.assertIn("Media relay unavailable", call.endDetail)
        # The 2xx again (the ACK crossed it): ACKed again, nothing more goes up.
        start = len(self.h.sent)
        self.h.send(ok, B_SOURCE)
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["ACK"])
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])

    def test_a_reinvite_whose_2xx_answer_fails_ends_the_call(self) -> None:
        """
        The callee took the new session with its 2xx, the relay cannot
        carry it: ACK to the callee, 500 with a Warning to the caller, BYE
        to both, end cause media failure; the 2xx again is ACKed again.
        """
        route = self.answeredCall()
        self.media.failAnswers = 1
        start = len(self.h.sent)
        self.fromA("INVITE", 3, route, contact=A_CONTACT, contentType="application/sdp", body=SDP)
        (reinvite,) = self.requestsTo(B_SOURCE, start)
        ok = withSDP(dialogReply(reinvite, 200, "OK", [f"Contact: <{B_CONTACT}>"]), SDP_B)
        self.h.send(ok, B_SOURCE)
        ack, bye = [r for r in self.requestsTo(B_SOURCE, start) if r.method != "INVITE"]
        self.assertEqual((ack.method, ack.cseq, ack.toAddr.tag, ack.body), ("ACK", (3, "ACK"), "b", b""))
        self.assertEqual((bye.method, bye.cseq[1]), ("BYE", "BYE"))
        self.assertGreater(bye.cseq[0], 3)
        self.assertIn("media failure", bye.get("reason") or "")
        toA = self.repliesTo(A_SOURCE, start)
        self.assertEqual([(r.code, r.reason) for r in toA], [(500, "Media Relay Failed")])
        self.assertIn(b"Warning: 399 aetasip", toA[0].data)
        (byeToA,) = self.requestsTo(A_SOURCE, start)
        self.assertEqual((byeToA.method, byeToA.fromAddr.tag), ("BYE", "b"))
        call = self.recorder.events[-1][1]
        self.assertEqual(self.recorder.names(), ["started", "answered", "ended"])
        self.assertEqual(call.endCause, EndCause.MEDIA_FAILURE)
        self.assertIn("re-INVITE", call.endDetail)
        start = len(self.h.sent)
        self.h.send(ok, B_SOURCE)
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["ACK"])
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        # The caller's ACK of its 500 stays with its transaction; its late requests get 481.
        self.assertEqual([r.code for r in self.fromA("BYE", 4, route)], [481])
        self.assertEqual(self.h.service.proxy.calls, {})

    def test_the_callee_of_an_ended_branch_cannot_bring_it_back(self) -> None:
        """Its 2xx carried our signed Route: its late re-INVITE or BYE gets 481, no recovered call."""
        self.media.failAnswers = 1
        sent, _ = self.call(body=SDP)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.assertEqual(self.recorder.names(), ["started", "ended"])
        start = len(self.h.sent)
        route = sent.getAll("record-route")[0]
        self.assertEqual([r.code for r in self.fromB("BYE", 1, route)], [481])
        self.assertEqual(self.requestsTo(A_SOURCE, start), [])
        self.assertEqual(self.recorder.names(), ["started", "ended"])
        self.assertEqual(self.h.service.proxy.calls, {})

    def test_a_late_offer_the_relay_cannot_take_is_declined_in_the_ack(self) -> None:
        self.media.refuse = True
        sent, start = self.call(body=b"")
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 500])
        ack, bye = [r for r in self.requestsTo(B_SOURCE, start) if r.method != "INVITE"]
        self.assertEqual((ack.method, bye.method), ("ACK", "BYE"))
        self.assertIn(b"m=audio 0 RTP/AVP 0", ack.body)

    def test_a_late_offer_whose_answer_in_the_ack_fails_ends_the_call(self) -> None:
        """
        The un-relayed answer goes nowhere: the ACK reaches the callee with
        every stream declined, then both get a BYE; end cause media failure.
        """
        sent, start = self.call(body=b"")
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.media.failAnswers = 1
        start = len(self.h.sent)
        self.fromA("ACK", 2, sent.getAll("record-route")[0], contentType="application/sdp", body=SDP)
        ack, bye = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, ack.cseq, bye.method), ("ACK", (2, "ACK"), "BYE"))
        self.assertIn(b"m=audio 0 RTP/AVP", ack.body)
        self.assertNotIn(b"10.0.0.7", ack.body)
        self.assertIn("media failure", bye.get("reason") or "")
        (byeToA,) = self.requestsTo(A_SOURCE, start)
        self.assertEqual(byeToA.method, "BYE")
        call = self.recorder.events[-1][1]
        self.assertEqual(self.recorder.names(), ["started", "answered", "ended"])
        self.assertEqual(call.endCause, EndCause.MEDIA_FAILURE)
        self.assertIn("answer in an ACK", call.endDetail)
        self.assertEqual(self.h.service.proxy.calls, {})

    def test_an_answer_in_a_prack_that_fails_ends_the_branch(self) -> None:
        """
        A late offer in a reliable 183, its answer in the caller's PRACK:
        the PRACK does not go on (500 with a Warning), the callee's branch
        is cancelled and the caller gets a 500; end cause media failure.
        """
        sent, start = self.call(body=b"")
        reliable = reply(sent, 183, "Session Progress", contact=B_CONTACT).replace(
            b"Content-Length: 0", b"Require: 100rel\r\nRSeq: 1\r\nContent-Length: 0"
        )
        self.h.send(withSDP(reliable, SDP_B), B_SOURCE)
        toA = self.repliesTo(A_SOURCE, start)
        self.assertEqual([r.code for r in toA], [100, 183])
        self.assertIn(b"relay-offer-callee", toA[-1].data)
        self.media.failAnswers = 1
        start = len(self.h.sent)
        route = sent.getAll("record-route")[0]
        replies = self.fromA("PRACK", 3, route, headers=["RAck: 1 2 INVITE"], contentType="application/sdp", body=SDP)
        # Both to A: the PRACK's 500, then the INVITE's.
        self.assertEqual(
            [(r.code, r.reason, r.get("cseq")) for r in replies],
            [(500, "Media Relay Failed", "3 PRACK"), (500, "Media Relay Failed", "2 INVITE")],
        )
        for refused in replies:
            self.assertIn(b"Warning: 399 aetasip", refused.data)
            self.assertIn(b"PRACK", refused.data.split(b"Warning:")[1])
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["CANCEL"])
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status), (EndCause.MEDIA_FAILURE, 500))
        self.assertIn("answer in a PRACK", call.endDetail)

    def test_an_update_whose_2xx_answer_fails_ends_the_call(self) -> None:
        """
        The callee took the session the UPDATE offered, the relay cannot
        carry its answer: the caller gets a 500 with a Warning instead of
        the 200 with the un-relayed SDP, both get a BYE; media failure.
        """
        route = self.answeredCall()
        self.media.failAnswers = 1
        start = len(self.h.sent)
        self.fromA("UPDATE", 3, route, contact=A_CONTACT, contentType="application/sdp", body=SDP)
        (update,) = self.requestsTo(B_SOURCE, start)
        self.assertIn(b"relay-offer-caller", update.body)
        self.h.send(withSDP(dialogReply(update, 200, "OK", [f"Contact: <{B_CONTACT}>"]), SDP_B), B_SOURCE)
        (refused,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((refused.code, refused.reason, refused.get("cseq")), (500, "Media Relay Failed", "3 UPDATE"))
        self.assertIn(b"Warning: 399 aetasip", refused.data)
        self.assertNotIn(b"v=0", refused.data)
        self.assertNotIn(b"10.0.0.9", refused.data)
        (byeToA,) = self.requestsTo(A_SOURCE, start)
        byes = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "BYE"]
        self.assertEqual((byeToA.method, len(byes)), ("BYE", 1))
        call = self.recorder.events[-1][1]
        self.assertEqual(call.endCause, EndCause.MEDIA_FAILURE)
        self.assertIn("answer in the 200 to its UPDATE", call.endDetail)

    def test_an_unreliable_183_whose_answer_fails_goes_on_without_sdp(self) -> None:
        """It only previewed the answer: no early media, and the 2xx's answer is tried again."""
        self.media.failAnswers = 1
        sent, start = self.call(body=SDP)
        self.h.send(withSDP(reply(sent, 183, "Session Progress", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        toA = self.repliesTo(A_SOURCE, start)
        self.assertEqual([r.code for r in toA], [100, 183, 200])
        self.assertNotIn(b"v=0", toA[1].data)
        self.assertNotIn(b"Content-Type", toA[1].data)
        self.assertIn(b"relay-answer-callee", toA[2].data)

    def test_a_reliable_183_whose_answer_fails_ends_its_branch(self) -> None:
        """Its SDP is the answer (RFC 3262): the branch is cancelled and the caller gets a 500."""
        self.media.failAnswers = 1
        sent, start = self.call(body=SDP)
        reliable = reply(sent, 183, "Session Progress", contact=B_CONTACT).replace(
            b"Content-Length: 0", b"Require: 100rel\r\nRSeq: 1\r\nContent-Length: 0"
        )
        self.h.send(withSDP(reliable, SDP_B), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 500])
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["INVITE", "CANCEL"])
        call = self.recorder.events[-1][1]
        self.assertEqual(call.endCause, EndCause.MEDIA_FAILURE)

    def test_another_branch_may_still_answer_after_one_failed(self) -> None:
        self.makeHarness(registrar__conflict="allow")
        self.assertEqual(
            self.h.register(Agent("45675002", "secret2", source=C_SOURCE, contact="sip:45675002@10.0.0.66")).code, 200
        )
        self.media.failAnswers = 1
        sent, start = self.call(body=SDP)
        (other,) = [r for r in self.requestsTo(C_SOURCE, start) if r.method == "INVITE"]
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100])
        self.h.send(withSDP(reply(other, 200, "OK", contact="sip:45675002@10.0.0.66"), SDP_B), C_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 200])
        call = self.recorder.events[-1][1]
        self.assertEqual(call.answeredBy.leg.source, C_SOURCE)
        self.assertEqual([t.status for t in call.targets], [500, 200])

    def switched(self, **rewriter: Any) -> tuple[Request, str, int]:
        """
        A calls B with an offer, B rings, and the server dies: another one
        (same key, a media handler of its own) takes over.
        @return: the INVITE as B got it, its Record-Route, the index after the switch.
        """
        sent, _ = self.call(body=SDP)
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        self.media = Rewriter(wait=rewriter.get("wait", False))
        self.media.failAnswers = rewriter.get("failAnswers", 0)
        self.makeHarness(clock=self.h.clock)
        return sent, sent.getAll("record-route")[0], len(self.h.sent)

    def test_an_answer_after_a_switch_goes_through_the_handler(self) -> None:
        """
        Like any answer: with rtpengine, the session the dead server's
        offer made goes on; retransmissions carry the same SDP.
        """
        sent, route, start = self.switched()
        ok = withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B)
        self.h.send(ok, B_SOURCE)
        (toA,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual(toA.code, 200)
        self.assertIn(b"c=IN IP4 relay-answer-callee.10.0.0.9", toA.data)
        self.assertEqual([(k, key, s) for k, key, s, _ in self.media.seen], [("answer", "1", "callee")])
        self.h.send(ok, B_SOURCE)
        again = self.repliesTo(A_SOURCE, start)[1]
        self.assertEqual(again.data, toA.data)
        self.assertEqual(len(self.media.seen), 1)
        self.fromA("ACK", 2, route)
        self.fromA("BYE", 3, route)
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.recovered), (EndCause.CALLER_BYE, True))
        self.assertEqual(self.media.ended, [call])

    def test_an_answer_after_a_switch_waits_for_the_handler(self) -> None:
        """A retransmission coming while the handler works goes after the first, with its SDP."""
        sent, _route, start = self.switched(wait=True)
        ok = withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B)
        self.h.send(ok, B_SOURCE)
        self.h.send(ok, B_SOURCE)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        self.media.release()
        first, second = self.repliesTo(A_SOURCE, start)
        self.assertIn(b"relay-answer-callee", first.data)
        self.assertEqual(first.data, second.data)

    def test_a_builtin_relay_refuses_an_answer_whose_offer_it_never_saw(self) -> None:
        """
        With the built-in relay, the dead server's ports died with it: the
        survivor's relay opens none for the answer (the callee would send
        to the dead ones: a silent call) but refuses it, and the call ends
        cleanly (500 with a Warning, end cause media failure).
        """
        from twisted.internet import reactor

        from aetasip.relay.builtin import BuiltinRelay
        from aetasip.relay.handler import RelayHandler
        from tests.routingdirectory import MemoryDirectory
        from tests.test_relay_handler import Control

        def relayed(low: int) -> tuple[RelayHandler, BuiltinRelay]:
            relay = BuiltinRelay("local", "127.0.0.1", (low, low + 9), reactor=reactor)
            self.addCleanup(relay.stopService)
            handler = RelayHandler({"local": relay}, "local", {}, "always", MemoryDirectory(), Control(), 0, Clock())
            return handler, relay

        offerSDP = SDP.replace(b"10.0.0.7", b"127.0.0.7")
        self.media, dead = relayed(47_400)
        self.makeHarness()
        sent, _ = self.call(body=offerSDP)
        self.assertIn(b"c=IN IP4 127.0.0.1", sent.body)
        self.assertEqual(dead.ports.free, 3)  # a pair for each party
        self.h.send(reply(sent, 180, "Ringing"), B_SOURCE)
        # The server dies; the survivor has a built-in relay of its own.
        self.media, survivor = relayed(47_420)
        self.makeHarness(clock=self.h.clock)
        start = len(self.h.sent)
        ok = withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B.replace(b"10.0.0.9", b"127.0.0.9"))
        self.h.send(ok, B_SOURCE)
        (toA,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((toA.code, toA.reason), (500, "Media Relay Failed"))
        self.assertIn(b"Warning: 399 aetasip", toA.data)
        self.assertIn(b"its offer went through another relay", toA.data)
        self.assertEqual(survivor.ports.free, 5)
        self.assertEqual(self.successResultOf(survivor.sessions()), [])
        ack, bye = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, bye.method), ("ACK", "BYE"))
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status), (EndCause.MEDIA_FAILURE, 500))

    def test_an_answer_after_a_switch_the_handler_cannot_take_ends_the_call(self) -> None:
        """
        No one-way audio (a built-in relay's ports died with the other
        server): ACK and BYE to the callee, 500 with a Warning to the
        caller, who dials again.
        """
        sent, route, start = self.switched(failAnswers=1)
        ok = withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B)
        self.h.send(ok, B_SOURCE)
        (toA,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((toA.code, toA.reason), (500, "Media Relay Failed"))
        self.assertIn(b"Warning: 399 aetasip", toA.data)
        self.assertNotIn(b"v=0", toA.data)
        self.assertEqual(len(toA.all("via")), 1)
        ack, bye = self.requestsTo(B_SOURCE, start)
        self.assertEqual((ack.method, ack.cseq, ack.uri), ("ACK", (2, "ACK"), B_REAL))
        self.assertEqual((bye.method, bye.cseq), ("BYE", (3, "BYE")))
        self.assertIn("media failure", bye.get("reason") or "")
        call = self.recorder.events[-1][1]
        self.assertEqual((call.endCause, call.status), (EndCause.MEDIA_FAILURE, 500))
        self.assertIn("after a switch", call.endDetail)
        self.assertEqual(self.h.service.proxy.calls, {})
        # The 2xx again, and the caller's late requests: no call comes back.
        start = len(self.h.sent)
        self.h.send(ok, B_SOURCE)
        self.assertEqual([r.code for r in self.fromA("BYE", 4, route)], [481])
        self.assertEqual(self.requestsTo(B_SOURCE, start), [])
        self.assertEqual(self.h.service.proxy.calls, {})

    def test_a_reinvite_after_a_switch_goes_through_the_handler(self) -> None:
        route = self.answeredCall()
        self.media = Rewriter()
        self.makeHarness(clock=self.h.clock)
        start = len(self.h.sent)
        self.fromA("INVITE", 3, route, contact=A_CONTACT, contentType="application/sdp", body=SDP)
        (reinvite,) = self.requestsTo(B_SOURCE, start)
        self.assertIn(b"relay-offer-caller", reinvite.body)
        self.h.send(withSDP(dialogReply(reinvite, 200, "OK", [f"Contact: <{B_CONTACT}>"]), SDP_B), B_SOURCE)
        self.assertIn(b"relay-answer-callee", self.repliesTo(A_SOURCE, start)[-1].data)
        self.assertEqual([(k, s) for k, _, s, _ in self.media.seen], [("offer", "caller"), ("answer", "callee")])

    def test_observers_hear_the_end_once_the_media_is_released(self) -> None:
        """A handler still releasing a call's media (asking its node) holds callEnded until it is done."""
        self.media.slowRelease = True
        sent, _ = self.call(body=SDP)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        self.fromA("BYE", 3, sent.getAll("record-route")[0])
        (call,) = self.media.ended
        self.assertTrue(call.ended)
        self.assertNotIn("ended", self.recorder.names())
        reported = call.endReported()
        self.assertNoResult(reported)
        self.media.releasing[0].callback(None)
        self.assertEqual(self.recorder.events[-1], ("ended", call))
        self.assertEqual(call.media["final"], "statistics")
        self.successResultOf(reported)

    def test_a_failed_release_still_reports_the_end(self) -> None:
        self.media.slowRelease = True
        sent, _ = self.call(body=SDP)
        self.h.send(reply(sent, 486, "Busy Here"), B_SOURCE)
        (call,) = self.media.ended
        self.media.releasing[0].errback(RuntimeError("node gone"))
        self.assertEqual(self.recorder.events[-1], ("ended", call))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stopping_waits_until_every_end_is_reported(self) -> None:
        self.media.slowRelease = True
        sent, _ = self.call(body=SDP)
        self.h.send(withSDP(reply(sent, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        stopped = self.h.service.proxy.stop()
        self.assertNoResult(stopped)
        self.media.releasing[0].callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.recorder.names()[-1], "ended")


def addHuntingSeries(case: CallTestCase) -> None:
    """45676000 rings C (45675003, registered from C_SOURCE), then B."""
    from aetasip.routing import Call as RoutedCall

    class Series:
        name = "series"

        def apply(self, call: RoutedCall, directory: Any) -> None:
            if call.dialled == "45676000":
                call.series = ["45675003", "45675002"]

    case.h.service.proxy.routing.policies.insert(0, Series())
    registered = case.h.register(Agent("45675003", "secret3", source=C_SOURCE, contact=C_CONTACT))
    case.assertEqual(registered.code, 200)
    case.h.auth.accounts["45676000"] = case.h.auth.accounts["45675002"]


class HuntingMediaFailureTests(CallTestCase):
    """The media of a hunting series' member fails: the series goes on to the next member."""

    def setUp(self) -> None:
        self.recorder = Recorder()
        self.media = Rewriter()
        self.makeHarness()
        addHuntingSeries(self)

    def test_an_answer_in_a_prack_that_fails_rings_the_next_member(self) -> None:
        """
        C's reliable 183 makes a late offer, the caller's PRACK answers it
        and the relay cannot take the answer: the PRACK gets a 500 with a
        Warning, C is cancelled, and the series rings B, whose answer ends
        the hunt; the caller never gets a 500 for its INVITE.
        """
        _, start = self.call("45676000", body=b"")
        (first,) = [r for r in self.requestsTo(C_SOURCE, start) if r.method == "INVITE"]
        reliable = reply(first, 183, "Session Progress", contact=C_CONTACT).replace(
            b"Content-Length: 0", b"Require: 100rel\r\nRSeq: 1\r\nContent-Length: 0"
        )
        self.h.send(withSDP(reliable, SDP_B), C_SOURCE)
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [100, 183])
        self.media.failAnswers = 1
        start = len(self.h.sent)
        prack = request(
            "PRACK",
            C_CONTACT,
            3,
            receiver="45676000",
            toTag="b",
            callID="call-ab@test",
            headers=[f"Route: {first.getAll('record-route')[0]}", "RAck: 1 2 INVITE"],
            contentType="application/sdp",
            body=SDP,
        )
        replies = self.h.send(prack, A_SOURCE)
        self.assertEqual([(r.code, r.get("cseq")) for r in replies], [(500, "3 PRACK")])
        self.assertIn(b"Warning: 399 aetasip", replies[0].data)
        self.assertEqual([r.method for r in self.requestsTo(C_SOURCE, start)], ["CANCEL"])
        (second,) = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "INVITE"]
        self.assertEqual([r.code for r in self.repliesTo(A_SOURCE, start)], [500])  # the PRACK's alone
        start = len(self.h.sent)
        self.h.send(withSDP(reply(second, 200, "OK", contact=B_CONTACT), SDP_B), B_SOURCE)
        toA = self.repliesTo(A_SOURCE, start)
        self.assertEqual([r.code for r in toA], [200])
        self.assertIn(b"relay-offer-callee", toA[0].data)
        call = self.recorder.events[-1][1]
        self.assertEqual(self.recorder.names()[-1], "answered")
        self.assertEqual(call.callee, "45675002")
        self.assertEqual([(t.number, t.status) for t in call.targets], [("45675003", 500), ("45675002", 200)])

    def test_the_last_member_whose_prack_answer_fails_ends_the_call(self) -> None:
        """
        C is busy, B's PRACK answer fails: B is cancelled, and with no member
        left the caller's INVITE gets the series' best answer, C's 486.
        """
        start = len(self.h.sent)
        self.call("45676000", body=b"")
        (first,) = [r for r in self.requestsTo(C_SOURCE, start) if r.method == "INVITE"]
        self.h.send(reply(first, 486, "Busy Here"), C_SOURCE)
        (second,) = [r for r in self.requestsTo(B_SOURCE, start) if r.method == "INVITE"]
        reliable = reply(second, 183, "Session Progress", contact=B_CONTACT).replace(
            b"Content-Length: 0", b"Require: 100rel\r\nRSeq: 1\r\nContent-Length: 0"
        )
        self.h.send(withSDP(reliable, SDP_B), B_SOURCE)
        self.media.failAnswers = 1
        start = len(self.h.sent)
        route = second.getAll("record-route")[0]
        replies = self.fromA("PRACK", 3, route, headers=["RAck: 1 2 INVITE"], contentType="application/sdp", body=SDP)
        self.assertEqual([(r.code, r.get("cseq")) for r in replies], [(500, "3 PRACK"), (486, "2 INVITE")])
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["CANCEL"])
        call = self.recorder.events[-1][1]
        self.assertEqual(self.recorder.names()[-1], "ended")
        # The caller got the best answer of the series (RFC 3261 16.7: 4xx before 5xx), its record says so.
        self.assertEqual((call.endCause, call.status), (EndCause.REJECTED, 486))
        self.assertEqual([(t.number, t.status) for t in call.targets], [("45675003", 486), ("45675002", 500)])


def withSDP(data: bytes, sdp: bytes) -> bytes:
    """A message without body, given C{sdp}."""
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"Content-Length: 0", b"Content-Type: application/sdp")
    return head + f"\r\nContent-Length: {len(sdp)}\r\n\r\n".encode() + sdp
