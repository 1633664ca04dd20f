"""
The stateful proxy (RFC 3261 16) for the methods other than INVITE, ACK,
CANCEL, BYE and INFO (see test_proxy): MESSAGE, OPTIONS, SUBSCRIBE/NOTIFY,
REFER, PRACK, UPDATE, PUBLISH and a method nobody knows, between two
agents registered behind NAT, through the SIP core with bytes and a Clock.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from aetasip.element.core import ALLOW
from aetasip.sip.message import Request
from aetasip.sip.parser import parse
from tests.sipagent import Agent, Harness, Reply
from tests.test_proxy import A_SOURCE, B_SOURCE, invite, proxyAuthorization, reply

# What each agent advertises (its private address) and where its packets
# really come from (A_SOURCE, B_SOURCE: its NAT).
A_CONTACT = "sip:45675001@10.0.0.7:5060"
B_CONTACT = "sip:45675002@10.0.0.9:5060"
A_REAL = "sip:45675001@198.51.100.7:5060"
B_REAL = "sip:45675002@203.0.113.9:5062"
A_VIA = "10.0.0.7:5060"
B_VIA = "10.0.0.9:5060"
OUR_ROUTE = "<sip:sip.example.net:5060;lr>"
# What our Record-Route entries start with (a signed dialog token follows).
RECORD_ROUTE = re.compile(r"<sip:sip\.example\.net:5060;lr;dlg=[A-Za-z0-9_-]+>")
B_AOR = "sip:45675002@sip.example.net"

_branches = itertools.count(1)


def request(
    method: str,
    uri: str,
    cseq: int,
    *,
    sender: str = "45675001",
    receiver: str = "45675002",
    fromTag: str = "a",
    toTag: str | None = None,
    callID: str = "call-m@test",
    via: str = A_VIA,
    branch: str | None = None,
    contact: str | None = None,
    headers: Sequence[str] = (),
    contentType: str | None = None,
    body: bytes = b"",
) -> bytes:
    """A request as an agent writes it, by hand."""
    toParams = f";tag={toTag}" if toTag is not None else ""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch={branch or f'z9hG4bK-m{next(_branches)}'};rport",
        "Max-Forwards: 70",
        f"From: <sip:{sender}@sip.example.net>;tag={fromTag}",
        f"To: <sip:{receiver}@sip.example.net>{toParams}",
        f"Call-ID: {callID}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: <{contact}>")
    lines.extend(headers)
    if contentType is not None:
        lines.append(f"Content-Type: {contentType}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def dialogReply(request: Request, code: int, reason: str, headers: Sequence[str] = ()) -> bytes:
    """
    An agent's response to an in-dialog request the proxy forwarded to it
    (its To already has a tag, unlike what L{reply} answers).
    """
    number, method = request.cseq
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in request.getAll("via")]
    lines += [f"From: {request.get('from')}", f"To: {request.get('to')}"]
    lines += [f"Call-ID: {request.callID}", f"CSeq: {number} {method}", *headers, "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def withHeaders(data: bytes, *headers: str) -> bytes:
    """C{data} (a message without body) with more header fields."""
    extra = "".join(f"{h}\r\n" for h in headers).encode()
    return data.replace(b"Content-Length: 0\r\n", extra + b"Content-Length: 0\r\n", 1)


class ProxyTestCase(SynchronousTestCase):
    """Both agents registered from behind their NATs; helpers to follow messages."""

    def setUp(self) -> None:
        self.h = Harness()
        for number, password, source, contact in (
            ("45675001", "secret1", A_SOURCE, A_CONTACT),
            ("45675002", "secret2", B_SOURCE, B_CONTACT),
        ):
            self.assertEqual(self.h.register(Agent(number, password, source=source, contact=contact)).code, 200)

    def assertRecordRouted(self, values: list[str]) -> None:
        """One Record-Route entry of ours, with its signed dialog token."""
        self.assertEqual(len(values), 1, values)
        self.assertRegex(values[0], RECORD_ROUTE)

    def sentTo(self, destination: tuple[str, int], start: int) -> list[bytes]:
        """What the service sent to C{destination} since C{start}."""
        return [data for where, data in self.h.sent[start:] if where == destination]

    def repliesTo(self, destination: tuple[str, int], start: int) -> list[Reply]:
        """The responses sent to C{destination} since C{start}."""
        return [Reply(d) for d in self.sentTo(destination, start) if d.startswith(b"SIP/2.0 ")]

    def requestsTo(self, destination: tuple[str, int], start: int) -> list[Request]:
        """The requests sent to C{destination} since C{start}."""
        requests = [parse(d) for d in self.sentTo(destination, start) if not d.startswith(b"SIP/2.0 ")]
        return [r for r in requests if isinstance(r, Request)]

    def authorized(
        self,
        method: str,
        uri: str,
        branch: str | None = None,
        headers: Sequence[str] = (),
        contact: str | None = None,
        contentType: str | None = None,
        body: bytes = b"",
    ) -> int:
        """
        A sends C{method} to C{uri} out of dialog: challenged with a 407
        (nothing goes on), then again with its credentials, CSeq 2 and
        C{branch}.

        @return: the index in C{self.h.sent} before the second request.
        """
        start = len(self.h.sent)
        challenge = self.h.sendOne(
            request(method, uri, 1, headers=headers, contact=contact, contentType=contentType, body=body), A_SOURCE
        )
        self.assertEqual(challenge.code, 407)
        self.assertEqual(challenge.get("cseq"), f"1 {method}")
        self.assertEqual(self.sentTo(B_SOURCE, start), [])
        auth = proxyAuthorization(method, uri, challenge.challenge(), "45675001", "secret1")
        start = len(self.h.sent)
        again = request(
            method, uri, 2, branch=branch, headers=[*headers, auth], contact=contact, contentType=contentType, body=body
        )
        self.h.send(again, A_SOURCE)
        self.lastSent = again
        return start

    def forwardedOnce(self, start: int, method: str) -> Request:
        """The only request sent to B since C{start}, a C{method}."""
        requests = self.requestsTo(B_SOURCE, start)
        self.assertEqual([r.method for r in requests], [method])
        return requests[0]

    def assertForwardedByUs(self, forwarded: Request, viaBranch: str | None = None) -> None:
        """Our Via on top (a fresh RFC 3261 branch), A's stamped with where it really is under it."""
        self.assertEqual((forwarded.topVia.host, forwarded.topVia.port), ("sip.example.net", 5060))
        self.assertTrue((forwarded.topVia.branch or "").startswith("z9hG4bK"))
        self.assertEqual(len(forwarded.vias), 2)
        below = forwarded.vias[1]
        self.assertEqual((below.host, below.port), ("10.0.0.7", 5060))
        self.assertEqual((below.params.get("received"), below.params.get("rport")), ("198.51.100.7", "5060"))
        if viaBranch is not None:
            self.assertEqual(below.branch, viaBranch)
        self.assertEqual(forwarded.get("max-forwards"), "69")


class OutOfDialogTests(ProxyTestCase):
    """Requests that create no dialog, or create one, sent to a number."""

    def test_message_without_credentials_gets_407_and_goes_nowhere(self) -> None:
        """A MESSAGE to a number is challenged like an INVITE, for our realm."""
        start = len(self.h.sent)
        (challenge,) = self.h.send(request("MESSAGE", B_AOR, 1, contentType="text/plain", body=b"hi"), A_SOURCE)
        self.assertEqual(challenge.code, 407)
        self.assertIn('realm="aetasip"', challenge.get("proxy-authenticate") or "")
        self.assertEqual(challenge.get("cseq"), "1 MESSAGE")
        self.assertEqual(self.sentTo(B_SOURCE, start), [])

    def test_message_is_forwarded_to_where_the_callee_registered_from(self) -> None:
        """
        With credentials, the MESSAGE goes to B's binding, sent to its NAT
        address: Max-Forwards decremented, our Via on top, our credentials
        gone, no Record-Route (RFC 3428: no dialog), body as sent; and no
        100 Trying to A (RFC 3261 16.2: not for non-INVITE requests).
        """
        start = self.authorized(
            "MESSAGE", B_AOR, branch="z9hG4bK-msg", contentType="text/plain;charset=utf-8", body=b"On air in 5"
        )
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        forwarded = self.forwardedOnce(start, "MESSAGE")
        self.assertEqual(forwarded.uri, B_CONTACT)
        self.assertForwardedByUs(forwarded, "z9hG4bK-msg")
        self.assertEqual(forwarded.getAll("proxy-authorization"), [])
        self.assertEqual(forwarded.getAll("record-route"), [])
        self.assertEqual(forwarded.get("cseq"), "2 MESSAGE")
        self.assertEqual(forwarded.callID, "call-m@test")
        self.assertEqual(forwarded.get("to"), f"<{B_AOR}>")
        self.assertEqual(forwarded.get("content-type"), "text/plain;charset=utf-8")
        self.assertEqual(forwarded.body, b"On air in 5")

    def test_answer_to_message_goes_back_without_our_via(self) -> None:
        """B's 200 reaches A's real address with only A's Via; no ACK goes to B."""
        start = self.authorized("MESSAGE", B_AOR, branch="z9hG4bK-msg", contentType="text/plain", body=b"x")
        forwarded = self.forwardedOnce(start, "MESSAGE")
        self.h.send(reply(forwarded, 200, "OK"), B_SOURCE)
        (ok,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((ok.code, ok.reason), (200, "OK"))
        self.assertEqual(len(ok.all("via")), 1)
        self.assertIn("branch=z9hG4bK-msg", ok.get("via") or "")
        self.assertIn("received=198.51.100.7", ok.get("via") or "")
        self.assertEqual(ok.get("cseq"), "2 MESSAGE")
        self.assertEqual(ok.get("to"), f"<{B_AOR}>;tag=b")
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["MESSAGE"])

    def test_unanswered_message_ends_without_a_408(self) -> None:
        """
        B never answers: the MESSAGE is retransmitted (Timer E), all
        copies alike; when Timer F ends (64*T1 = 32 s) the proxy forgets the
        request without answering A (RFC 4320 4.1: no 408 to a non-INVITE;
        A's own transaction has timed out too), and A's retransmissions are
        absorbed rather than forwarded again.
        """
        start = self.authorized("MESSAGE", B_AOR, contentType="text/plain", body=b"x")
        self.h.clock.advance(31)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        copies = self.sentTo(B_SOURCE, start)
        self.assertGreater(len(copies), 1)
        self.assertEqual(set(copies), {copies[0]})
        self.h.clock.advance(1)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        self.assertEqual(self.h.service.proxy._contexts, {})
        sent = len(self.sentTo(B_SOURCE, start))
        self.h.send(self.lastSent, A_SOURCE)  # A's last retransmission
        self.h.clock.advance(60)
        self.assertEqual(len(self.sentTo(B_SOURCE, start)), sent)
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])

    def test_options_to_a_number_is_forwarded_to_its_agent(self) -> None:
        """
        OPTIONS for another agent's number is not the server's to answer:
        challenged, then forwarded to B (not Record-Routed), and B's 200
        with its capabilities goes back to A.
        """
        start = self.authorized("OPTIONS", B_AOR, branch="z9hG4bK-opt", headers=["Accept: application/sdp"])
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        forwarded = self.forwardedOnce(start, "OPTIONS")
        self.assertEqual(forwarded.uri, B_CONTACT)
        self.assertForwardedByUs(forwarded, "z9hG4bK-opt")
        self.assertEqual(forwarded.getAll("record-route"), [])
        self.assertEqual(forwarded.get("accept"), "application/sdp")
        self.h.send(withHeaders(reply(forwarded, 200, "OK"), "Allow: INVITE, ACK, BYE, OPTIONS"), B_SOURCE)
        (ok,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((ok.code, ok.get("cseq"), ok.get("allow")), (200, "2 OPTIONS", "INVITE, ACK, BYE, OPTIONS"))
        self.assertEqual(len(ok.all("via")), 1)

    def test_options_to_the_server_is_answered_by_it(self) -> None:
        """OPTIONS for the domain itself: the server answers 200 with its Allow, no challenge, nothing forwarded."""
        start = len(self.h.sent)
        (ok,) = self.h.send(request("OPTIONS", "sip:sip.example.net", 1), A_SOURCE)
        self.assertEqual((ok.code, ok.get("allow")), (200, ALLOW))
        self.assertEqual(self.sentTo(B_SOURCE, start), [])

    def subscribe(self) -> tuple[Request, int]:
        """A subscribes to B's dialog events; the SUBSCRIBE as B got it, and the index before it."""
        start = self.authorized(
            "SUBSCRIBE",
            B_AOR,
            branch="z9hG4bK-sub",
            contact=A_CONTACT,
            headers=["Event: dialog", "Accept: application/dialog-info+xml", "Expires: 3600"],
        )
        return self.forwardedOnce(start, "SUBSCRIBE"), start

    def test_subscribe_is_record_routed_and_the_notify_reaches_the_subscriber(self) -> None:
        """
        SUBSCRIBE creates a dialog (RFC 6665): forwarded to B with our
        Record-Route and A's Contact at its real address; B's 200 comes back
        with the Record-Route; B's NOTIFY, sent in the dialog through our
        Route to that Contact, reaches A's NAT address, and A's 200 goes
        back to B.
        """
        subscribe, start = self.subscribe()
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        self.assertEqual(subscribe.uri, B_CONTACT)
        self.assertForwardedByUs(subscribe, "z9hG4bK-sub")
        self.assertRecordRouted(subscribe.getAll("record-route"))
        self.assertEqual(subscribe.getAll("proxy-authorization"), [])
        self.assertEqual(subscribe.contacts[0].uri.host, "198.51.100.7")
        self.assertEqual(subscribe.contacts[0].uri.port, 5060)
        self.assertEqual((subscribe.get("event"), subscribe.get("expires")), ("dialog", "3600"))

        self.h.send(withHeaders(reply(subscribe, 200, "OK", contact=B_CONTACT), "Expires: 3600"), B_SOURCE)
        (ok,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((ok.code, ok.get("cseq")), (200, "2 SUBSCRIBE"))
        self.assertEqual(ok.get("to"), f"<{B_AOR}>;tag=b")
        self.assertRecordRouted(ok.all("record-route"))
        self.assertEqual(len(ok.all("via")), 1)

        # B notifies, in the dialog: to A's Contact as B got it, through our Route.
        target = str(subscribe.contacts[0].uri)
        self.assertEqual(target, A_REAL)
        start = len(self.h.sent)
        notify = request(
            "NOTIFY",
            target,
            1,
            sender="45675002",
            receiver="45675001",
            fromTag="b",
            toTag="a",
            via=B_VIA,
            branch="z9hG4bK-notify",
            contact=B_CONTACT,
            headers=[f"Route: {OUR_ROUTE}", "Event: dialog", "Subscription-State: active;expires=3600"],
            contentType="application/dialog-info+xml",
            body=b"<dialog-info/>",
        )
        self.assertEqual(self.h.send(notify, B_SOURCE), [])
        requests = self.requestsTo(A_SOURCE, start)
        self.assertEqual([r.method for r in requests], ["NOTIFY"])
        forwarded = requests[0]
        self.assertEqual(forwarded.uri, A_REAL)
        self.assertEqual(forwarded.getAll("route"), [])
        self.assertEqual((forwarded.topVia.host, forwarded.topVia.port), ("sip.example.net", 5060))
        self.assertEqual([v.branch for v in forwarded.vias[1:]], ["z9hG4bK-notify"])
        self.assertEqual(forwarded.get("max-forwards"), "69")
        self.assertEqual(forwarded.get("cseq"), "1 NOTIFY")
        self.assertEqual(forwarded.get("subscription-state"), "active;expires=3600")
        self.assertEqual(forwarded.body, b"<dialog-info/>")

        self.h.send(dialogReply(forwarded, 200, "OK"), A_SOURCE)
        (notified,) = self.repliesTo(B_SOURCE, start)
        self.assertEqual((notified.code, notified.get("cseq")), (200, "1 NOTIFY"))
        self.assertEqual(len(notified.all("via")), 1)
        self.assertIn("branch=z9hG4bK-notify", notified.get("via") or "")

    def test_subscription_refresh_reaches_the_notifier(self) -> None:
        """
        B's 200 to the SUBSCRIBE sets A's remote target (RFC 3261 12.1.2):
        its Contact must say where B really is, as the proxy does for the
        2xx of an INVITE; A's refreshing SUBSCRIBE, sent there through our
        Route, then reaches B.
        """
        subscribe, start = self.subscribe()
        self.h.send(reply(subscribe, 200, "OK", contact=B_CONTACT), B_SOURCE)
        (ok,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual(ok.get("contact"), f"<{B_REAL}>")
        start = len(self.h.sent)
        refresh = request(
            "SUBSCRIBE",
            B_REAL,
            3,
            toTag="b",
            contact=A_CONTACT,
            headers=[f"Route: {OUR_ROUTE}", "Event: dialog", "Expires: 3600"],
        )
        self.assertEqual(self.h.send(refresh, A_SOURCE), [])
        self.assertEqual(self.forwardedOnce(start, "SUBSCRIBE").uri, B_REAL)

    def test_refer_out_of_dialog_is_record_routed(self) -> None:
        """
        REFER creates a dialog (RFC 3515): forwarded to B with our
        Record-Route, Refer-To intact; B's 202 comes back with it.
        """
        referTo = "Refer-To: <sip:45675003@sip.example.net>"
        start = self.authorized("REFER", B_AOR, branch="z9hG4bK-refer", contact=A_CONTACT, headers=[referTo])
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        forwarded = self.forwardedOnce(start, "REFER")
        self.assertEqual(forwarded.uri, B_CONTACT)
        self.assertForwardedByUs(forwarded, "z9hG4bK-refer")
        self.assertRecordRouted(forwarded.getAll("record-route"))
        self.assertEqual(forwarded.get("refer-to"), "<sip:45675003@sip.example.net>")
        self.assertEqual(forwarded.contacts[0].uri.host, "198.51.100.7")
        self.h.send(reply(forwarded, 202, "Accepted", contact=B_CONTACT), B_SOURCE)
        (accepted,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((accepted.code, accepted.get("cseq")), (202, "2 REFER"))
        self.assertRecordRouted(accepted.all("record-route"))
        self.assertEqual(len(accepted.all("via")), 1)

    def test_publish_is_forwarded_like_message(self) -> None:
        """
        PUBLISH (a method the server knows but serves no state for) to a
        number goes to B's agent like a MESSAGE, not Record-Routed; B's
        489 goes back to A, and nothing (no ACK) follows to B.
        """
        start = self.authorized(
            "PUBLISH",
            B_AOR,
            branch="z9hG4bK-pub",
            headers=["Event: presence", "Expires: 3600"],
            contentType="application/pidf+xml",
            body=b"<presence/>",
        )
        self.assertEqual(self.repliesTo(A_SOURCE, start), [])
        forwarded = self.forwardedOnce(start, "PUBLISH")
        self.assertEqual(forwarded.uri, B_CONTACT)
        self.assertForwardedByUs(forwarded, "z9hG4bK-pub")
        self.assertEqual(forwarded.getAll("record-route"), [])
        self.assertEqual(forwarded.body, b"<presence/>")
        self.h.send(reply(forwarded, 489, "Bad Event"), B_SOURCE)
        (refused,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((refused.code, refused.get("cseq")), (489, "2 PUBLISH"))
        self.assertEqual([r.method for r in self.requestsTo(B_SOURCE, start)], ["PUBLISH"])

    def test_invite_cancelled_before_any_provisional_gets_487_with_the_callers_via(self) -> None:
        """
        A cancels before B sent anything: the proxy answers the CANCEL 200
        and the INVITE 487 itself (no CANCEL may go to B yet, RFC 3261
        9.1); like every response, that 487 carries the INVITE's Via (RFC
        3261 8.2.6.2), by which A's transaction matches it (17.1.3).
        """
        challenge = self.h.sendOne(invite(), A_SOURCE)
        auth = proxyAuthorization("INVITE", B_AOR, challenge.challenge(), "45675001", "secret1")
        start = len(self.h.sent)
        self.h.send(invite(extra=auth + "\r\n", cseq=2, branch="z9hG4bK-a2"), A_SOURCE)
        cancel = (
            invite(branch="z9hG4bK-a2", cseq=2)
            .replace(b"INVITE sip", b"CANCEL sip")
            .replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL")
        )
        self.h.send(cancel, A_SOURCE)
        replies = self.repliesTo(A_SOURCE, start)
        self.assertEqual(
            [(r.code, r.get("cseq")) for r in replies], [(100, "2 INVITE"), (200, "2 CANCEL"), (487, "2 INVITE")]
        )
        for answer in replies:
            self.assertEqual(len(answer.all("via")), 1)
            self.assertIn("branch=z9hG4bK-a2", answer.get("via") or "")

    def test_unknown_method_to_a_number_is_proxied(self) -> None:
        """
        RFC 3261 16.3 step 1: a proxy must not refuse a request for a
        method it does not know. FOO to B is challenged like any request,
        then forwarded, and B's answer goes back.
        """
        start = self.authorized("FOO", B_AOR, branch="z9hG4bK-foo")
        forwarded = self.forwardedOnce(start, "FOO")
        self.assertEqual(forwarded.uri, B_CONTACT)
        self.h.send(reply(forwarded, 200, "OK"), B_SOURCE)
        (ok,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((ok.code, ok.get("cseq")), (200, "2 FOO"))

    def test_unknown_method_to_the_server_gets_501_with_allow(self) -> None:
        """The server itself does not know FOO: 501 (RFC 3261 8.2.1) with Allow."""
        (refused,) = self.h.send(request("FOO", "sip:sip.example.net", 1), A_SOURCE)
        self.assertEqual((refused.code, refused.get("allow")), (501, ALLOW))


class DialogTests(ProxyTestCase):
    """
    Requests inside the dialog of a call from A to B (call-ab@test, tags a
    and b), reliable provisional responses (RFC 3262) and UPDATE (RFC 3311).
    """

    def call(self) -> tuple[Request, int]:
        """A calls B, offering 100rel; the INVITE (CSeq 2) as B got it, and the index before it."""
        challenge = self.h.sendOne(invite(extra="Supported: 100rel\r\n"), A_SOURCE)
        self.assertEqual(challenge.code, 407)
        auth = proxyAuthorization("INVITE", B_AOR, challenge.challenge(), "45675001", "secret1")
        start = len(self.h.sent)
        self.h.send(invite(extra=f"Supported: 100rel\r\n{auth}\r\n", cseq=2, branch="z9hG4bK-a2"), A_SOURCE)
        return self.forwardedOnce(start, "INVITE"), start

    def ringReliably(self, sent: Request, start: int) -> Reply:
        """B answers 183 reliably (Require: 100rel, RSeq 1); what A got."""
        self.h.send(
            withHeaders(reply(sent, 183, "Session Progress", contact=B_CONTACT), "Require: 100rel", "RSeq: 1"),
            B_SOURCE,
        )
        replies = self.repliesTo(A_SOURCE, start)
        self.assertEqual([r.code for r in replies], [100, 183])
        return replies[-1]

    def inDialog(
        self,
        method: str,
        cseq: int,
        headers: Sequence[str] = (),
        contact: str | None = None,
        contentType: str | None = None,
        body: bytes = b"",
    ) -> tuple[Request, int]:
        """
        A sends C{method} in the dialog to B's real address through our
        Route; the request as B got it (nothing answered A at once), and the
        index before it.
        """
        start = len(self.h.sent)
        data = request(
            method,
            B_REAL,
            cseq,
            toTag="b",
            callID="call-ab@test",
            headers=[f"Route: {OUR_ROUTE}", *headers],
            contact=contact,
            contentType=contentType,
            body=body,
        )
        self.assertEqual(self.h.send(data, A_SOURCE), [])
        return self.forwardedOnce(start, method), start

    def assertInDialogForward(self, forwarded: Request, method: str, cseq: int) -> None:
        """To B's real address, our Route consumed, our Via on top, CSeq as A sent it."""
        self.assertEqual(forwarded.uri, B_REAL)
        self.assertEqual(forwarded.getAll("route"), [])
        self.assertForwardedByUs(forwarded)
        self.assertEqual(forwarded.get("cseq"), f"{cseq} {method}")
        self.assertEqual(forwarded.get("to"), f"<{B_AOR}>;tag=b")
        self.assertEqual(forwarded.callID, "call-ab@test")

    def test_reliable_provisional_is_relayed_with_a_reachable_contact(self) -> None:
        """
        The reliable 183 creates an early dialog (RFC 3262, RFC 3261
        12.1): it reaches A with its Require, RSeq and Record-Route, and a
        Contact saying where B really is, since A sends its PRACK there.
        """
        sent, start = self.call()
        ringing = self.ringReliably(sent, start)
        self.assertEqual((ringing.get("require"), ringing.get("rseq")), ("100rel", "1"))
        self.assertRecordRouted(ringing.all("record-route"))
        self.assertEqual(len(ringing.all("via")), 1)
        self.assertEqual(ringing.get("contact"), f"<{B_REAL}>")

    def test_prack_in_the_early_dialog_reaches_the_callee(self) -> None:
        """
        A's PRACK for the reliable 183 follows our Route to B's real
        address with its CSeq and RAck as sent; B's 200 to the PRACK comes
        back to A; the INVITE transaction goes on, and B's 200 to it too.
        """
        sent, start = self.call()
        self.ringReliably(sent, start)
        prack, prackStart = self.inDialog("PRACK", 3, ["RAck: 1 2 INVITE"])
        self.assertInDialogForward(prack, "PRACK", 3)
        self.assertEqual(prack.get("rack"), "1 2 INVITE")
        self.h.send(dialogReply(prack, 200, "OK"), B_SOURCE)
        (acknowledged,) = self.repliesTo(A_SOURCE, prackStart)
        self.assertEqual((acknowledged.code, acknowledged.get("cseq")), (200, "3 PRACK"))
        self.assertEqual(len(acknowledged.all("via")), 1)

        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        self.assertEqual(
            [(r.code, r.get("cseq")) for r in self.repliesTo(A_SOURCE, prackStart)],
            [(200, "3 PRACK"), (200, "2 INVITE")],
        )

    def answer(self) -> Reply:
        """A calls, B answers 200 (no reliable 1xx); the 200 as A got it."""
        sent, start = self.call()
        self.h.send(reply(sent, 200, "OK", contact=B_CONTACT), B_SOURCE)
        ok = self.repliesTo(A_SOURCE, start)[-1]
        self.assertEqual(ok.code, 200)
        return ok

    def test_update_in_the_dialog_reaches_the_callee(self) -> None:
        """
        After the answer, A's UPDATE (a new offer) goes to the Contact of
        B's 200, which is B's real address, through our Route, with its
        CSeq and body; B's 200 to it comes back to A.
        """
        ok = self.answer()
        self.assertEqual(ok.get("contact"), f"<{B_REAL}>")
        update, start = self.inDialog(
            "UPDATE", 3, contact=A_CONTACT, contentType="application/sdp", body=b"v=0\no=a 1 2 IN IP4 x\n"
        )
        self.assertInDialogForward(update, "UPDATE", 3)
        self.assertEqual(update.body, b"v=0\no=a 1 2 IN IP4 x\n")
        self.h.send(dialogReply(update, 200, "OK", [f"Contact: <{B_CONTACT}>"]), B_SOURCE)
        (updated,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((updated.code, updated.get("cseq")), (200, "3 UPDATE"))
        self.assertEqual(len(updated.all("via")), 1)

    def test_update_keeps_the_caller_reachable(self) -> None:
        """
        UPDATE is a target refresh request (RFC 3311 5.1, RFC 3261
        12.2.2): B takes its Contact as A's new remote target, so the
        proxy must point it at A's real address, as it did in the INVITE;
        else B's BYE would be for A's private address.
        """
        self.answer()
        update, _ = self.inDialog("UPDATE", 3, contact=A_CONTACT)
        self.assertEqual(update.get("contact"), f"<{A_REAL}>")

    def test_refer_in_the_dialog_reaches_the_callee(self) -> None:
        """A transfers B (REFER in the call's dialog): to B's real address with its Refer-To; B's 202 comes back."""
        self.answer()
        refer, start = self.inDialog("REFER", 3, ["Refer-To: <sip:45675003@sip.example.net>"], contact=A_CONTACT)
        self.assertInDialogForward(refer, "REFER", 3)
        self.assertEqual(refer.get("refer-to"), "<sip:45675003@sip.example.net>")
        self.h.send(dialogReply(refer, 202, "Accepted"), B_SOURCE)
        (accepted,) = self.repliesTo(A_SOURCE, start)
        self.assertEqual((accepted.code, accepted.get("cseq")), (202, "3 REFER"))
