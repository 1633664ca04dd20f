"""
The stateful proxy (RFC 3261 16) through the SIP core, with bytes and a
Clock: two registered agents behind NAT call each other.
"""

from __future__ import annotations

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.message import Request
from aetasip.sip.parser import parse
from tests.sipagent import Agent, Harness, Reply

A_SOURCE = ("198.51.100.7", 5060)
B_SOURCE = ("203.0.113.9", 5062)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def proxyAuthorization(method: str, uri: str, challenge: dict[str, str], user: str, password: str) -> str:
    ha1 = md5(f"{user}:{challenge['realm']}:{password}")
    response = md5(f"{ha1}:{challenge['nonce']}:00000001:c1:auth:{md5(f'{method}:{uri}')}")
    return (
        f'Proxy-Authorization: Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, cnonce="c1", qop=auth, nc=00000001, '
        f'opaque="{challenge.get("opaque", "")}"'
    )


def invite(callee: str = "45675002", extra: str = "", cseq: int = 1, branch: str = "z9hG4bK-a1") -> bytes:
    uri = f"sip:{callee}@sip.example.net"
    return (
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:45675001@sip.example.net>;tag=a\r\n"
        f"To: <{uri}>\r\nCall-ID: call-ab@test\r\nCSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:45675001@10.0.0.7:5060>\r\n{extra}"
        "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    ).encode()


def reply(request: Request, code: int, reason: str, contact: str = "") -> bytes:
    """B's response to a request the proxy forwarded to it."""
    number, method = request.cseq
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in request.getAll("via")]
    lines += [f"Record-Route: {v}" for v in request.getAll("record-route")]
    lines += [f"From: {request.get('from')}", f"To: {request.get('to')};tag=b"]
    lines += [f"Call-ID: {request.callID}", f"CSeq: {number} {method}"]
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def forwardedAgain(request: Request, uri: str) -> bytes:
    """What an agent forwarding C{request} to C{uri} through us sends."""
    again = Request(request.method, uri, [list(h) for h in request.headers], request.body)
    again.addFirst("via", "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-fwd;rport")
    again.remove("record-route")
    return again.toBytes()


class CallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        for number, password, source, contact in (
            ("45675001", "secret1", A_SOURCE, "sip:45675001@10.0.0.7:5060"),
            ("45675002", "secret2", B_SOURCE, "sip:45675002@10.0.0.9:5060"),
        ):
            self.assertEqual(self.h.register(Agent(number, password, source=source, contact=contact)).code, 200)

    def sentTo(self, destination: tuple[str, int], start: int) -> list[bytes]:
        return [data for where, data in self.h.sent[start:] if where == destination]

    def call(self, callee: str = "45675002") -> tuple[Request, int]:
        """A calls; returns the INVITE as B got it and the index after it."""
        challenge = self.h.sendOne(invite(callee), A_SOURCE)
        self.assertEqual(challenge.code, 407)
        params = challenge.challenge()
        auth = proxyAuthorization("INVITE", f"sip:{callee}@sip.example.net", params, "45675001", "secret1") + "\r\n"
        start = len(self.h.sent)
        self.h.send(invite(callee, auth, cseq=2, branch="z9hG4bK-a2"), A_SOURCE)
        toA = [Reply(d) for d in self.sentTo(A_SOURCE, start)]
        if toA and toA[-1].code != 100:
            return Request("NONE", "sip:x"), len(self.h.sent)
        self.assertEqual([r.code for r in toA], [100])
        (forwarded,) = self.sentTo(B_SOURCE, start)
        request = parse(forwarded)
        assert isinstance(request, Request)
        return request, len(self.h.sent)

    def test_invite_without_credentials_gets_407(self) -> None:
        reply = self.h.sendOne(invite(), A_SOURCE)
        self.assertEqual(reply.code, 407)
        self.assertIn('realm="aetasip"', reply.get("proxy-authenticate") or "")

    def test_call_is_forwarded_to_where_the_callee_registered_from(self) -> None:
        request, _ = self.call()
        self.assertEqual(request.method, "INVITE")
        self.assertEqual(request.uri, "sip:45675002@10.0.0.9:5060")
        self.assertEqual(request.get("max-forwards"), "69")
        self.assertTrue(request.topVia.branch and request.topVia.branch.startswith("z9hG4bK"))
        self.assertEqual(request.topVia.host, "sip.example.net")
        (recordRoute,) = request.getAll("record-route")
        self.assertRegex(recordRoute, r"^<sip:sip\.example\.net:5060;lr;dlg=[A-Za-z0-9_-]+>$")
        self.assertIsNone(request.get("proxy-authorization"))
        # The caller is behind NAT: its Contact now says where it really is.
        self.assertEqual(request.contacts[0].uri.host, "198.51.100.7")
        self.assertEqual(request.body, b"v=0\n")

    def test_only_our_realms_credentials_stop_here(self) -> None:
        """RFC 3261 22.3: credentials for another realm go on downstream."""
        theirs = (
            'Proxy-Authorization: Digest username="a", realm="upstream.example", nonce="n", uri="sip:x", response="0"'
        )
        challenge = self.h.sendOne(invite(), A_SOURCE)
        ours = proxyAuthorization(
            "INVITE", "sip:45675002@sip.example.net", challenge.challenge(), "45675001", "secret1"
        )
        start = len(self.h.sent)
        self.h.send(invite(extra=f"{theirs}\r\n{ours}\r\n", cseq=2, branch="z9hG4bK-a2"), A_SOURCE)
        (forwarded,) = self.sentTo(B_SOURCE, start)
        request = parse(forwarded)
        self.assertEqual(request.getAll("proxy-authorization"), [theirs.split(": ", 1)[1]])

    def test_the_ack_of_the_challenge_confirms_it(self) -> None:
        """
        The ACK of the 407 ends its transaction: a copy of the INVITE is
        absorbed in silence rather than challenged again. Nothing but its
        top Via is read: a From the parser would refuse does not matter.
        """
        challenge = self.h.sendOne(invite(), A_SOURCE)
        self.assertEqual(challenge.code, 407)
        toTag = challenge.get("to")
        ackOf407 = (
            "ACK sip:45675002@sip.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-a1;rport\r\n"
            f'Max-Forwards: 70\r\nFrom: "broken <sip:45675001@sip.example.net>;tag=a\r\nTo: {toTag}\r\n'
            "Call-ID: call-ab@test\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        start = len(self.h.sent)
        self.h.send(invite(), A_SOURCE)
        self.assertEqual([Reply(d).code for d in self.sentTo(A_SOURCE, start)], [407])
        self.h.send(ackOf407, A_SOURCE)
        start = len(self.h.sent)
        self.h.send(invite(), A_SOURCE)
        self.assertEqual(self.h.sent[start:], [])

    def test_a_100_stops_retransmissions_and_goes_no_further(self) -> None:
        """
        The callee's 100 ends Timer A; no more is read of it than its Via
        and CSeq: a From the parser would refuse does not matter.
        """
        request, start = self.call()
        trying = reply(request, 100, "Trying").replace(b"From: <", b'From: "broken <')
        self.h.send(trying, B_SOURCE)
        self.h.clock.advance(4)
        self.assertEqual(self.sentTo(B_SOURCE, start), [])
        self.assertEqual(self.sentTo(A_SOURCE, start), [])

    def test_without_its_100_the_invite_is_sent_again(self) -> None:
        """What the test above shows is Timer A's work: without a 100 (or one
        for another transaction) the INVITE goes again."""
        request, start = self.call()
        stranger = reply(request, 100, "Trying").replace(request.topVia.branch.encode(), b"z9hG4bK-unknown")
        self.h.send(stranger, B_SOURCE)
        self.h.clock.advance(0.6)
        (again,) = self.sentTo(B_SOURCE, start)
        self.assertEqual(parse(again).topVia.branch, request.topVia.branch)
        self.assertEqual(self.sentTo(A_SOURCE, start), [])

    def test_answer_is_relayed_and_the_dialog_goes_through_the_proxy(self) -> None:
        request, start = self.call()
        self.h.send(reply(request, 180, "Ringing"), B_SOURCE)
        self.h.send(reply(request, 200, "OK", contact="sip:45675002@10.0.0.9:5060"), B_SOURCE)
        toA = [Reply(d) for d in self.sentTo(A_SOURCE, start)]
        self.assertEqual([r.code for r in toA], [180, 200])
        ok = toA[-1]
        self.assertEqual(len(ok.all("via")), 1)
        self.assertIn("branch=z9hG4bK-a2", ok.get("via") or "")
        self.assertEqual(ok.get("contact"), "<sip:45675002@203.0.113.9:5062>")
        self.assertEqual(ok.all("record-route"), request.getAll("record-route"))

        # ACK and BYE from A follow the Record-Route to B's real address.
        start = len(self.h.sent)
        dialog = (
            "Via: SIP/2.0/UDP 10.0.0.7:5060;branch={branch};rport\r\nMax-Forwards: 70\r\n"
            "Route: <sip:sip.example.net:5060;lr>\r\nFrom: <sip:45675001@sip.example.net>;tag=a\r\n"
            "To: <sip:45675002@sip.example.net>;tag=b\r\nCall-ID: call-ab@test\r\n"
        )
        ack = f"ACK sip:45675002@203.0.113.9:5062 SIP/2.0\r\n{dialog.format(branch='z9hG4bK-ack')}CSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n"
        self.h.send(ack.encode(), A_SOURCE)
        bye = f"BYE sip:45675002@203.0.113.9:5062 SIP/2.0\r\n{dialog.format(branch='z9hG4bK-bye')}CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
        self.h.send(bye.encode(), A_SOURCE)
        toB = [parse(d) for d in self.sentTo(B_SOURCE, start)]
        self.assertEqual([m.method for m in toB], ["ACK", "BYE"])  # type: ignore[union-attr]
        forwardedBye = toB[1]
        assert isinstance(forwardedBye, Request)
        self.assertEqual(forwardedBye.getAll("route"), [])
        self.h.send(reply(forwardedBye, 200, "OK"), B_SOURCE)
        self.assertEqual([Reply(d).code for d in self.sentTo(A_SOURCE, start)], [200])

    def inDialog(self, method: str, target: str, source: tuple[str, int] = A_SOURCE) -> list[Reply]:
        """A request of the dialog of call-ab@test, through our Route, to C{target}."""
        data = (
            f"{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-{method}-x;rport\r\n"
            "Max-Forwards: 70\r\nRoute: <sip:sip.example.net:5060;lr>\r\n"
            "From: <sip:45675001@sip.example.net>;tag=a\r\nTo: <sip:45675002@sip.example.net>;tag=b\r\n"
            f"Call-ID: call-ab@test\r\nCSeq: 9 {method}\r\nContent-Length: 0\r\n\r\n"
        )
        return self.h.send(data.encode(), source)

    def test_in_dialog_requests_only_reach_parties_of_our_calls(self) -> None:
        """
        No relay: an in-dialog request (a To tag, our Route) outside any
        dialog the proxy set up gets 481, and nothing is sent anywhere; a
        stray 2xx is not reflected either.
        """
        start = len(self.h.sent)
        (refused,) = self.inDialog("BYE", "sip:victim@192.0.2.99:5060")
        self.assertEqual(refused.code, 481)
        self.assertEqual(self.inDialog("ACK", "sip:victim@192.0.2.99:5060"), [])
        stray = (
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP sip.example.net:5060;branch=z9hG4bK-unknown\r\n"
            "Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bK-victim\r\nFrom: <sip:a@x>;tag=1\r\n"
            "To: <sip:b@x>;tag=2\r\nCall-ID: stray@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        self.h.send(stray.encode(), B_SOURCE)
        self.assertEqual([where for where, _ in self.h.sent[start:] if not where == A_SOURCE], [])

    def test_registered_agents_are_not_reached_outside_a_dialog(self) -> None:
        """Being registered is not enough: an in-dialog request needs a dialog of ours."""
        start = len(self.h.sent)
        self.assertEqual([r.code for r in self.inDialog("INFO", "sip:45675002@203.0.113.9:5062")], [481])
        self.assertEqual(self.sentTo(B_SOURCE, start), [])

    def test_a_caller_that_never_registered_is_reached_during_its_call(self) -> None:
        caller = ("192.0.2.50", 7000)
        challenge = self.h.sendOne(invite(), caller)
        auth = proxyAuthorization(
            "INVITE", "sip:45675002@sip.example.net", challenge.challenge(), "45675001", "secret1"
        )
        self.h.send(invite(extra=auth + "\r\n", cseq=2, branch="z9hG4bK-c2"), caller)
        (forwarded,) = [parse(d) for where, d in self.h.sent if where == B_SOURCE and d.startswith(b"INVITE")]
        assert isinstance(forwarded, Request)
        self.h.send(reply(forwarded, 200, "OK", contact="sip:45675002@10.0.0.9:5060"), B_SOURCE)
        start = len(self.h.sent)
        bye = (
            "BYE sip:45675001@192.0.2.50:7000 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-byeb;rport\r\n"
            f"Max-Forwards: 70\r\nRoute: {forwarded.getAll('record-route')[0]}\r\n"
            "From: <sip:45675002@sip.example.net>;tag=b\r\nTo: <sip:45675001@sip.example.net>;tag=a\r\n"
            "Call-ID: call-ab@test\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.h.send(bye.encode(), B_SOURCE), [])
        self.assertEqual([d[:4] for where, d in self.h.sent[start:] if where == caller], [b"BYE "])

    def test_a_request_coming_back_unchanged_is_a_loop(self) -> None:
        """
        RFC 3261 16.3 step 4: B's agent sends the INVITE back to us as it
        got it, but for the Request-URI it was sent to us with: 482.
        """
        request, _ = self.call()
        looped = forwardedAgain(request, "sip:45675002@sip.example.net")
        (answer,) = self.h.send(looped, B_SOURCE)
        self.assertEqual((answer.code, answer.reason), (482, "Loop Detected"))

    def test_a_request_coming_back_for_another_number_is_a_spiral(self) -> None:
        """B forwards the call to 45675001: routed again (here: challenged)."""
        request, _ = self.call()
        (answer,) = self.h.send(forwardedAgain(request, "sip:45675001@sip.example.net"), B_SOURCE)
        self.assertEqual(answer.code, 407)

    def test_busy_callee_gives_486_and_the_proxy_acks_it(self) -> None:
        request, start = self.call()
        self.h.send(reply(request, 486, "Busy Here"), B_SOURCE)
        self.assertEqual([Reply(d).code for d in self.sentTo(A_SOURCE, start)], [486])
        (ack,) = self.sentTo(B_SOURCE, start)
        self.assertTrue(ack.startswith(b"ACK sip:45675002@10.0.0.9:5060 "))

    def test_cancel_before_answer(self) -> None:
        request, start = self.call()
        self.h.send(reply(request, 180, "Ringing"), B_SOURCE)
        cancel = (
            invite(branch="z9hG4bK-a2", cseq=2)
            .replace(b"INVITE sip", b"CANCEL sip")
            .replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL")
        )
        self.h.send(cancel, A_SOURCE)
        toB = [parse(d) for d in self.sentTo(B_SOURCE, start)]
        self.assertEqual([m.method for m in toB], ["CANCEL"])  # type: ignore[union-attr]
        self.h.send(reply(toB[0], 200, "OK"), B_SOURCE)  # type: ignore[arg-type]
        self.h.send(reply(request, 487, "Request Terminated"), B_SOURCE)
        self.assertEqual([Reply(d).code for d in self.sentTo(A_SOURCE, start)], [180, 200, 487])

    def cancelCall(self) -> list[int]:
        """A cancels its call; the codes of the responses it gets at once."""
        cancel = (
            invite(branch="z9hG4bK-a2", cseq=2)
            .replace(b"INVITE sip", b"CANCEL sip")
            .replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL")
        )
        return [r.code for r in self.h.send(cancel, A_SOURCE)]

    def test_callee_gone_after_ringing_the_cancelled_call_ends_with_408(self) -> None:
        """
        RFC 3261 9.1: nothing answers the CANCEL nor the INVITE; 64*T1
        after the CANCEL the branch is over and the caller gets a final
        response, not silence until Timer C.
        """
        request, start = self.call()
        self.h.send(reply(request, 180, "Ringing"), B_SOURCE)
        self.assertEqual(self.cancelCall(), [200])
        # (The 407 of the first INVITE, never ACKed here, is retransmitted meanwhile.)
        self.h.clock.advance(31)
        self.assertEqual([Reply(d).code for d in self.sentTo(A_SOURCE, start) if b" 407 " not in d[:12]], [180, 200])
        self.h.clock.advance(2)
        self.assertEqual(
            [Reply(d).code for d in self.sentTo(A_SOURCE, start) if b" 407 " not in d[:12]], [180, 200, 408]
        )
        self.assertEqual(self.h.service.proxy._contexts, {})

    def test_cancel_waits_for_the_first_provisional(self) -> None:
        """RFC 3261 9.1: no CANCEL before a 1xx; it goes when the 1xx comes."""
        request, start = self.call()
        self.assertEqual(self.cancelCall(), [200, 487])
        self.assertEqual(self.sentTo(B_SOURCE, start), [])
        self.h.send(reply(request, 180, "Ringing"), B_SOURCE)
        self.h.send(reply(request, 183, "Session Progress"), B_SOURCE)
        toB = [parse(d) for d in self.sentTo(B_SOURCE, start)]
        self.assertEqual([m.method for m in toB], ["CANCEL"])  # type: ignore[union-attr]
        # Nothing more goes up: the caller has its 487.
        self.assertEqual([Reply(d).code for d in self.sentTo(A_SOURCE, start)], [200, 487])

    def test_stopping_the_proxy_drops_every_timer(self) -> None:
        self.call()
        self.assertNotEqual(self.h.service.proxy._contexts, {})
        self.h.service.proxy.stop()
        self.h.service.clients.stop()
        self.h.service.transactions.stop()
        self.h.service.pinger.stop()
        self.h.location.stop()
        self.assertEqual(self.h.service.proxy._contexts, {})
        self.assertEqual([c for c in self.h.clock.getDelayedCalls() if c.active()], [])

    def test_unknown_number_gets_404_and_unregistered_gets_480(self) -> None:
        self.h.auth.accounts["45675003"] = self.h.auth.accounts["45675002"]
        for callee, code in (("45679999", 404), ("45675003", 480)):
            challenge = self.h.sendOne(invite(callee, branch=f"z9hG4bK-{callee}"), A_SOURCE)
            auth = proxyAuthorization(
                "INVITE", f"sip:{callee}@sip.example.net", challenge.challenge(), "45675001", "secret1"
            )
            final = self.h.send(invite(callee, auth + "\r\n", cseq=2, branch=f"z9hG4bK-{callee}2"), A_SOURCE)
            self.assertEqual([r.code for r in final], [code])

    def test_no_open_relay(self) -> None:
        data = invite().replace(b"sip:45675002@sip.example.net SIP/2.0", b"sip:someone@elsewhere.example.org SIP/2.0")
        self.assertEqual(self.h.sendOne(data, A_SOURCE).code, 403)

    def test_max_forwards_zero_gets_483(self) -> None:
        self.assertEqual(self.h.sendOne(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), A_SOURCE).code, 483)

    def test_credentials_of_another_account_cannot_call(self) -> None:
        challenge = self.h.sendOne(invite(), A_SOURCE)
        auth = proxyAuthorization(
            "INVITE", "sip:45675002@sip.example.net", challenge.challenge(), "45675002", "secret2"
        )
        self.assertEqual(self.h.sendOne(invite(extra=auth + "\r\n", cseq=2, branch="z9hG4bK-x"), A_SOURCE).code, 403)


class RoutedCallTests(SynchronousTestCase):
    """
    Calls through the routing policies (the guide's examples), with the
    group data of a directory and agents registered behind NAT.
    """

    PASSWORD = "pw"

    def setUp(self) -> None:
        from tests.routingdirectory import MemoryDirectory
        from tests.sipagent import FakeAuth

        self.directory = MemoryDirectory()
        self.directory.addGroup("4567", hunting=True, outgoingBlock=True)
        numbers = ["45675001", "45675002", "45995033", "45676001", "45676002", "45676003"]
        for number in numbers[:2]:
            self.directory.add(number, group="4567")
        self.directory.add("45995033")
        for number in numbers[3:]:
            self.directory.add(number, kind="hunting", group="4567")
        self.h = Harness(auth=FakeAuth(dict.fromkeys(numbers, self.PASSWORD)), directory=self.directory)
        self.sources: dict[str, tuple[str, int]] = {}
        for i, number in enumerate(numbers):
            if number == "45676001":
                continue  # a hunting member with no codec registered
            source = ("203.0.113.9", 6000 + i)
            self.sources[number] = source
            agent = Agent(number, self.PASSWORD, source=source, contact=f"sip:{number}@10.0.0.{i + 10}:5060")
            self.assertEqual(self.h.register(agent).code, 200)

    def dial(self, dialled: str, branch: str) -> tuple[list[Reply], int]:
        challenge = self.h.sendOne(invite(dialled, branch=branch + "a"), A_SOURCE)
        auth = proxyAuthorization(
            "INVITE", f"sip:{dialled}@sip.example.net", challenge.challenge(), "45675001", self.PASSWORD
        )
        start = len(self.h.sent)
        return self.h.send(invite(dialled, auth + "\r\n", cseq=2, branch=branch + "b"), A_SOURCE), start

    def forwardedTo(self, number: str, start: int) -> list[Request]:
        requests = [parse(d) for where, d in self.h.sent[start:] if where == self.sources[number]]
        return [r for r in requests if isinstance(r, Request)]

    def test_short_number_reaches_the_same_group(self) -> None:
        replies, start = self.dial("5002", "z9hG4bK-short")
        self.assertEqual([r.code for r in replies], [100])
        (request,) = self.forwardedTo("45675002", start)
        self.assertEqual(request.uri, "sip:45675002@10.0.0.11:5060")

    def test_outgoing_blocking_refuses_numbers_outside_the_group(self) -> None:
        replies, _ = self.dial("45995033", "z9hG4bK-out")
        self.assertEqual([(r.code, r.reason) for r in replies], [(403, "Outgoing calls blocked for this group")])

    def test_hunting_skips_the_absent_member_and_moves_past_the_busy_one(self) -> None:
        replies, start = self.dial("6000", "z9hG4bK-hunt")
        self.assertEqual([r.code for r in replies], [100])
        # 45676001 has no binding: the first INVITE, and the only one so far, goes to 45676002.
        invites = [d for _, d in self.h.sent[start:] if d.startswith(b"INVITE ")]
        self.assertEqual(len(invites), 1)
        (first,) = self.forwardedTo("45676002", start)
        self.h.send(reply(first, 180, "Ringing"), self.sources["45676002"])
        self.h.send(reply(first, 486, "Busy Here"), self.sources["45676002"])
        (second,) = [r for r in self.forwardedTo("45676003", start) if r.method == "INVITE"]
        self.h.send(reply(second, 180, "Ringing"), self.sources["45676003"])
        self.h.send(reply(second, 200, "OK", contact="sip:45676003@10.0.0.15:5060"), self.sources["45676003"])
        toA = [Reply(d).code for where, d in self.h.sent[start:] if where == A_SOURCE]
        # The caller hears ringing once, then the answer of the second member.
        self.assertEqual(toA, [100, 180, 200])

    def test_hunting_member_not_answering_in_time_is_skipped(self) -> None:
        _, start = self.dial("6000", "z9hG4bK-ring")
        (first,) = self.forwardedTo("45676002", start)
        self.h.send(reply(first, 180, "Ringing"), self.sources["45676002"])
        self.h.clock.advance(self.h.config["routing.hunting_ring_time"] + 0.1)
        toFirst = [r.method for r in self.forwardedTo("45676002", start)]
        self.assertEqual(toFirst, ["INVITE", "CANCEL"])
        self.h.send(reply(first, 487, "Request Terminated"), self.sources["45676002"])
        self.assertEqual(len([r for r in self.forwardedTo("45676003", start) if r.method == "INVITE"]), 1)

    def test_answer_ends_the_hunt_and_its_ring_timer(self) -> None:
        _, start = self.dial("6000", "z9hG4bK-answer")
        (first,) = self.forwardedTo("45676002", start)
        self.h.send(reply(first, 180, "Ringing"), self.sources["45676002"])
        ringTime = self.h.config["routing.hunting_ring_time"]
        self.assertEqual(
            len([c for c in self.h.clock.getDelayedCalls() if c.getTime() == self.h.clock.seconds() + ringTime]), 1
        )
        self.h.send(reply(first, 200, "OK", contact="sip:45676002@10.0.0.14:5060"), self.sources["45676002"])
        self.assertEqual(
            [c for c in self.h.clock.getDelayedCalls() if c.getTime() == self.h.clock.seconds() + ringTime], []
        )
        self.h.clock.advance(ringTime + 1)
        # No CANCEL for the answered member, no INVITE to the next one.
        self.assertEqual([r.method for r in self.forwardedTo("45676002", start)], ["INVITE"])
        self.assertEqual(self.forwardedTo("45676003", start), [])

    def test_stopping_the_proxy_during_a_hunt_drops_the_ring_timer(self) -> None:
        _, start = self.dial("6000", "z9hG4bK-stop")
        (first,) = self.forwardedTo("45676002", start)
        self.h.send(reply(first, 180, "Ringing"), self.sources["45676002"])
        self.h.service.proxy.stop()
        ringTime = self.h.config["routing.hunting_ring_time"]
        self.assertEqual(
            [c for c in self.h.clock.getDelayedCalls() if c.getTime() == self.h.clock.seconds() + ringTime], []
        )

    def test_hunting_stops_on_a_6xx(self) -> None:
        """A member declining everywhere (603) ends the hunt: the caller gets it, nobody else rings."""
        _, start = self.dial("6000", "z9hG4bK-decline")
        (first,) = self.forwardedTo("45676002", start)
        self.h.send(reply(first, 603, "Decline"), self.sources["45676002"])
        toA = [Reply(d) for where, d in self.h.sent[start:] if where == A_SOURCE]
        self.assertEqual([r.code for r in toA], [100, 603])
        self.assertEqual(len(toA[-1].all("via")), 1)
        self.assertEqual(self.forwardedTo("45676003", start), [])
        self.assertEqual(self.h.service.proxy._contexts, {})

    def test_hunting_moves_past_an_unavailable_member(self) -> None:
        _, start = self.dial("6000", "z9hG4bK-unavail")
        (first,) = self.forwardedTo("45676002", start)
        self.h.send(reply(first, 480, "Temporarily Unavailable"), self.sources["45676002"])
        self.assertEqual([r.method for r in self.forwardedTo("45676003", start)], ["INVITE"])

    def test_caller_giving_up_ends_the_hunt(self) -> None:
        _, start = self.dial("6000", "z9hG4bK-giveup")
        (first,) = self.forwardedTo("45676002", start)
        self.h.send(reply(first, 180, "Ringing"), self.sources["45676002"])
        cancel = (
            invite("6000", branch="z9hG4bK-giveupb", cseq=2)
            .replace(b"INVITE sip", b"CANCEL sip")
            .replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL")
        )
        self.assertEqual([r.code for r in self.h.send(cancel, A_SOURCE)], [200])
        self.assertEqual(len([r for r in self.forwardedTo("45676002", start) if r.method == "CANCEL"]), 1)
        self.h.send(reply(first, 487, "Request Terminated"), self.sources["45676002"])
        toA = [Reply(d).code for where, d in self.h.sent[start:] if where == A_SOURCE]
        self.assertEqual(toA, [100, 180, 200, 487])
        self.h.clock.advance(self.h.config["routing.hunting_ring_time"] + 1)
        self.assertEqual(self.forwardedTo("45676003", start), [])

    def test_everyone_busy_gives_486(self) -> None:
        _, start = self.dial("45676000", "z9hG4bK-busy")
        for number in ("45676002", "45676003"):
            (invite_,) = [r for r in self.forwardedTo(number, start) if r.method == "INVITE"]
            self.h.send(reply(invite_, 486, "Busy Here"), self.sources[number])
        toA = [Reply(d).code for where, d in self.h.sent[start:] if where == A_SOURCE]
        self.assertEqual(toA, [100, 486])
