"""
Hardening against hostile traffic (issue 9), driven with bytes and a
Clock through the SIP core: what one datagram may cost the server.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip import headers, message, parser, responses
from aetasip.stun import codec
from aetasip.stun.server import ALTERNATE_ADDRESS, ALTERNATE_BOTH, ALTERNATE_PORT, PRIMARY, STUNServer
from tests.sipagent import Agent, Harness

A_SOURCE = ("198.51.100.7", 5060)


def inDialogRequest(method: str, routes: list[str], extra: str = "") -> bytes:
    route = "".join(f"Route: {r}\r\n" for r in routes)
    return (
        f"{method} sip:45675002@sip.example.net SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-r1;rport\r\nMax-Forwards: 70\r\n"
        "From: <sip:45675001@sip.example.net>;tag=a\r\nTo: <sip:45675002@sip.example.net>;tag=b\r\n"
        f"Call-ID: routes@test\r\nCSeq: 2 {method}\r\n{route}{extra}Content-Length: 0\r\n\r\n"
    ).encode()


class RouteListTests(SynchronousTestCase):
    """
    Fault 1 of the audit: a request with a To tag and ~1,000 Route entries
    naming the server froze the reactor for seconds, the Route list being
    split again for every entry popped.
    """

    def setUp(self) -> None:
        self.h = Harness()
        self.scanned = 0
        original = headers.splitCommas

        def counting(value: str) -> list[str]:
            self.scanned += len(value)
            return original(value)

        for module in (headers, message):
            self.patch(module, "splitCommas", counting)

    def test_a_long_route_list_is_refused_at_once(self) -> None:
        routes = ", ".join(["<sip:sip.example.net;lr>"] * 1000)
        for method in ("BYE", "INVITE", "OPTIONS"):
            data = inDialogRequest(method, [routes])
            reply = self.h.sendOne(data, A_SOURCE)
            self.assertEqual((reply.code, reply.reason), (400, "Too many Route values"))
            # Each Route value looked at a bounded number of times, not once per entry.
            self.assertLess(self.scanned, 4 * len(data))
            self.scanned = 0

    def test_a_stray_ack_with_a_long_route_list_is_dropped(self) -> None:
        routes = ", ".join(["<sip:sip.example.net;lr>"] * 1000)
        self.assertEqual(self.h.send(inDialogRequest("ACK", [routes]), A_SOURCE), [])

    def test_our_routes_are_popped_in_one_pass(self) -> None:
        # Under the cap: every entry names us, some in their own header field.
        routes = [", ".join(["<sip:sip.example.net;lr>"] * 35)] * 2
        data = inDialogRequest("BYE", routes)
        reply = self.h.sendOne(data, A_SOURCE)
        self.assertEqual(reply.code, 481)
        self.assertLess(self.scanned, 3 * len(data))

    def test_other_long_lists_are_capped(self) -> None:
        for name in ("Record-Route", "Path", "Contact"):
            values = ", ".join(["<sip:10.0.0.1;lr>"] * 200)
            data = inDialogRequest("INFO", [], f"{name}: {values}\r\n")
            reply = self.h.sendOne(data, A_SOURCE)
            self.assertEqual((reply.code, reply.reason), (400, f"Too many {name} values"))
        vias = "".join(f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK-v{i}\r\n" for i in range(100))
        data = inDialogRequest("INFO", [], "").replace(b"Max-Forwards", vias.encode() + b"Max-Forwards")
        reply = self.h.sendOne(data, A_SOURCE)
        self.assertEqual((reply.code, reply.reason), (400, "Too many Via values"))

    def test_too_many_header_fields_are_refused(self) -> None:
        extra = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(400))
        reply = self.h.sendOne(inDialogRequest("OPTIONS", [], extra), A_SOURCE)
        self.assertEqual((reply.code, reply.reason), (400, "Too many header fields"))


# What scanners and spoofers send: small requests, compact forms included.
MINIMAL = {
    "INVITE": "INVITE sip:45675002@sip.example.net SIP/2.0\r\nv:SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n"
    "f:<sip:1@x>;tag=1\r\nt:<sip:45675002@x>\r\ni:a\r\nCSeq:1 INVITE\r\n\r\n",
    "REGISTER": "REGISTER sip:sip.example.net SIP/2.0\r\nv:SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK2;rport\r\n"
    "f:<sip:45675001@sip.example.net>;tag=1\r\nt:<sip:45675001@sip.example.net>\r\ni:b\r\nCSeq:1 REGISTER\r\n\r\n",
    "tiny INVITE": "INVITE sip:45675002@sip.example.net SIP/2.0\r\nv:SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
    "f:<sip:1@x>;tag=1\r\nt:<sip:2@x>\r\ni:a\r\nCSeq:1 INVITE\r\n\r\n",
    "OPTIONS": "OPTIONS sip:sip.example.net SIP/2.0\r\nv:SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK3\r\n"
    "f:<sip:1@x>;tag=1\r\nt:<sip:x>\r\ni:c\r\nCSeq:1 OPTIONS\r\n\r\n",
    "SUBSCRIBE": "SUBSCRIBE sip:45675002@sip.example.net SIP/2.0\r\nv:SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK4\r\n"
    "f:<sip:1@x>;tag=1\r\nt:<sip:45675002@x>\r\ni:d\r\nCSeq:1 SUBSCRIBE\r\no:presence\r\n\r\n",
    # A foreign domain (403), an unknown method (501), a bad request (400).
    "foreign": "INVITE sip:1@elsewhere.example SIP/2.0\r\nv:SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK5\r\n"
    "f:<sip:1@x>;tag=1\r\nt:<sip:1@x>\r\ni:e\r\nCSeq:1 INVITE\r\n\r\n",
    "unknown": "FOO sip:sip.example.net SIP/2.0\r\nv:SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK6\r\n"
    "f:<sip:1@x>;tag=1\r\nt:<sip:x>\r\ni:f\r\nCSeq:1 FOO\r\n\r\n",
    "bad": "OPTIONS sip:sip.example.net SIP/2.0\r\nv:SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK7\r\n"
    'f:"x <sip:1@x>;tag=1\r\nt:<sip:x>\r\ni:g\r\nCSeq:1 OPTIONS\r\n\r\n',
}

# The audit's 142-byte INVITE: 10 datagrams, 5,370 bytes back.
AUDIT_INVITE = (
    "INVITE sip:45675002@sip.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
    "From: <sip:a@b>;tag=1\r\nTo: <sip:45675002@b>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n\r\n"
)


class AmplificationTests(SynchronousTestCase):
    """
    Fault 3 of the audit: a spoofed 142-byte INVITE made the server send 10
    datagrams, 5,370 bytes (a 407 with two challenges retransmitted by
    Timer G); 403s to foreign domains were retransmitted too. For any
    single unauthenticated datagram the server must send less than 4x the
    bytes it received.
    """

    def setUp(self) -> None:
        self.h = Harness(auth__algorithms=["MD5", "SHA-256"])

    def bytesSentFor(self, data: bytes) -> tuple[int, int]:
        """Datagrams and bytes sent for C{data}, retransmissions included."""
        start = len(self.h.sent)
        self.h.send(data, ("192.0.2.1", 5060))
        self.h.clock.pump([1.0] * 70)
        sent = self.h.sent[start:]
        return len(sent), sum(len(out) for _, out in sent)

    def test_a_challenge_is_sent_once(self) -> None:
        data = AUDIT_INVITE.encode()
        datagrams, size = self.bytesSentFor(data)
        self.assertEqual(datagrams, 1)
        self.assertLess(size, 4 * len(data))

    def test_no_unauthenticated_datagram_is_amplified_4_times(self) -> None:
        for name, text in MINIMAL.items():
            data = text.encode()
            datagrams, size = self.bytesSentFor(data)
            self.assertLessEqual(datagrams, 1, name)
            self.assertLess(size, 4 * len(data), name)

    def test_a_small_request_still_gets_a_challenge_it_can_answer(self) -> None:
        (reply,) = self.h.send(MINIMAL["tiny INVITE"].encode(), ("192.0.2.1", 5060))
        self.assertEqual(reply.code, 407)
        self.assertGreaterEqual(len(reply.all("proxy-authenticate")), 1)

    def test_what_goes_first_when_over_budget(self) -> None:
        """Optional fields, then all challenges but the first; else nothing."""
        data = MINIMAL["tiny INVITE"].encode()
        request = parser.parse(data)
        assert isinstance(request, message.Request)
        self.assertEqual(request.size, len(data))
        response = responses.localResponse(request, 407, server="aetasip/test")
        response.add("proxy-authenticate", 'Digest realm="a", nonce="' + "n" * 60 + '", algorithm=SHA-256')
        response.add("proxy-authenticate", 'Digest realm="a", nonce="' + "n" * 60 + '", algorithm=MD5')
        self.assertEqual(response.budget, 4 * len(data) - 1)
        full = len(response.toBytes())
        response.budget = full - 1
        trimmed = responses.withinBudget(response)
        assert trimmed is not None
        self.assertNotIn(b"Server:", trimmed)
        self.assertEqual(trimmed.count(b"Proxy-Authenticate:"), 2)
        response.budget = len(trimmed) - 1
        trimmed = responses.withinBudget(response)
        assert trimmed is not None
        self.assertEqual(trimmed.count(b"Proxy-Authenticate:"), 1)
        self.assertIn(b"algorithm=SHA-256", trimmed)
        response.budget = 100
        self.assertIsNone(responses.withinBudget(response))
        # Over TCP (no spoofing) or once authenticated: no budget.
        self.assertEqual(parser.parse(data, stream=True).size, 0)  # type: ignore[union-attr]

    def test_a_final_response_without_provisional_is_not_retransmitted(self) -> None:
        """
        Without a provisional response the caller retransmits its INVITE
        itself (Timer A), each answered from the transaction: Timer G is
        only for callers that stopped (they had a 100).
        """
        agent = Agent("45675001", "secret1", source=A_SOURCE)
        self.assertEqual(self.h.register(agent).code, 200)
        invite = (
            "INVITE sip:45675002@sip.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-c1\r\n"
            "From: <sip:45675001@sip.example.net>;tag=a\r\nTo: <sip:45675002@sip.example.net>\r\n"
            "Call-ID: retrans@test\r\nCSeq: 1 INVITE\r\nContact: <sip:45675001@198.51.100.7>\r\n\r\n"
        )
        (challenge,) = self.h.send(invite.encode(), A_SOURCE)
        params = challenge.challenge()
        from tests.test_proxy import proxyAuthorization

        auth = proxyAuthorization("INVITE", "sip:45675002@sip.example.net", params, "45675001", "secret1")
        second = (
            invite.replace("z9hG4bK-c1", "z9hG4bK-c2")
            .replace("CSeq: 1", "CSeq: 2")
            .replace("\r\n\r\n", f"\r\n{auth}\r\n\r\n")
        )
        replies = self.h.send(second.encode(), A_SOURCE)
        # 45675002 is not registered: 480 at once, without a 100 first, so not retransmitted.
        self.assertEqual([r.code for r in replies], [480])
        start = len(self.h.sent)
        self.h.clock.pump([1.0] * 40)
        self.assertEqual(self.h.sent[start:], [])


FULL4 = {
    PRIMARY: ("192.0.2.1", 3478),
    ALTERNATE_PORT: ("192.0.2.1", 3479),
    ALTERNATE_ADDRESS: ("192.0.2.2", 3478),
    ALTERNATE_BOTH: ("192.0.2.2", 3479),
}
FULL6 = {
    PRIMARY: ("2001:db8::1", 3478),
    ALTERNATE_PORT: ("2001:db8::1", 3479),
    ALTERNATE_ADDRESS: ("2001:db8::2", 3478),
    ALTERNATE_BOTH: ("2001:db8::2", 3479),
}


class STUNAmplificationTests(SynchronousTestCase):
    """
    STUN answers spoofable UDP too: a bare 20-byte Binding request over
    IPv6 got 96 bytes back (XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN,
    OTHER-ADDRESS, SOFTWARE, FINGERPRINT).
    """

    def setUp(self) -> None:
        self.server = STUNServer(software="aetasip/0.1.0 (test build)")

    def test_every_answer_within_4_times_the_request(self) -> None:
        tid = bytes(range(12))
        requests = [
            codec.encode(codec.Message(codec.BINDING, codec.REQUEST, tid, ())),
            codec.encode(codec.Message(codec.BINDING, codec.REQUEST, tid, ()), addFingerprint=True),
            codec.encode(codec.Message(codec.BINDING, codec.REQUEST, tid, (), cookie=0x0BADC0DE)),
            codec.encode(codec.Message(0x002, codec.REQUEST, tid, ())),  # not a Binding: 400
        ]
        for addresses, source in ((FULL4, ("198.51.100.7", 4000)), (FULL6, ("2001:db8:77::7", 4000))):
            for role in addresses:
                endpoint = self.server.endpoint(role, addresses)
                for data in requests:
                    reply = self.server.datagram(data, source, endpoint)
                    assert reply is not None
                    self.assertLess(len(reply[0]), 4 * len(data), (source, role, data))

    def test_a_bare_request_still_learns_what_nat_discovery_needs(self) -> None:
        data = codec.encode(codec.Message(codec.BINDING, codec.REQUEST, bytes(12), ()))
        for addresses, source in ((FULL4, ("198.51.100.7", 4000)), (FULL6, ("2001:db8:77::7", 4000))):
            reply = self.server.datagram(data, source, self.server.endpoint(PRIMARY, addresses))
            assert reply is not None
            response = codec.decode(reply[0])
            self.assertIsNotNone(response.getValue(codec.XOR_MAPPED_ADDRESS))
            self.assertIsNotNone(response.getValue(codec.OTHER_ADDRESS))
            self.assertTrue(codec.checkFingerprint(reply[0], len(reply[0]) - 4))
        # A request with attributes (what most clients send) gets them all.
        data = codec.encode(
            codec.Message(codec.BINDING, codec.REQUEST, bytes(12), (codec.Attribute(codec.SOFTWARE, b"client/1.0"),)),
            addFingerprint=True,
        )
        reply = self.server.datagram(data, ("2001:db8:77::7", 4000), self.server.endpoint(PRIMARY, FULL6))
        assert reply is not None
        response = codec.decode(reply[0])
        for attribute in (codec.RESPONSE_ORIGIN, codec.OTHER_ADDRESS, codec.SOFTWARE):
            self.assertIsNotNone(response.getValue(attribute))


def options(**fields: str) -> bytes:
    """An OPTIONS for the server itself, with C{fields} replacing or adding header fields."""
    values = {
        "Via": "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-g1",
        "From": "<sip:1@sip.example.net>;tag=1",
        "To": "<sip:sip.example.net>",
        "Call-ID": "grammar@test",
        "CSeq": "1 OPTIONS",
        "Max-Forwards": "70",
    }
    values.update({name.replace("_", "-"): value for name, value in fields.items()})
    lines = "".join(f"{name}: {value}\r\n" for name, value in values.items())
    return f"OPTIONS sip:sip.example.net SIP/2.0\r\n{lines}Content-Length: 0\r\n\r\n".encode()


class GrammarTests(SynchronousTestCase):
    """
    Fault 7 of the audit: a request the server answers itself (OPTIONS) was
    answered 200 although a header it relies on broke the RFC 3261 section
    25 grammar. Each gets a 400 naming what is wrong.
    """

    def setUp(self) -> None:
        self.h = Harness()

    def assertRefused(self, data: bytes, reason: str) -> None:
        reply = self.h.sendOne(data, ("192.0.2.1", 5060))
        self.assertEqual((reply.code, reply.reason), (400, reason), data)

    def test_an_honest_options_gets_200(self) -> None:
        self.assertEqual(self.h.sendOne(options(), ("192.0.2.1", 5060)).code, 200)
        odd = options(
            From='"Bob \\"the codec\\"" <sip:1@sip.example.net>;tag=1', Call_ID="a-b.c!%*_+`'~()<>:\\/[]?{}@host"
        )
        self.assertEqual(self.h.sendOne(odd, ("192.0.2.1", 5060)).code, 200)

    def test_unterminated_quoted_strings(self) -> None:
        for field, value in (
            ("From", '"Bob <sip:1@sip.example.net>;tag=1'),
            ("From", '"Bob\\" <sip:1@sip.example.net>;tag=1'),
            ("To", '"x <sip:sip.example.net>'),
            ("From", '<sip:1@sip.example.net>;tag=1;x="y'),
        ):
            reply = self.h.sendOne(options(**{field: value}), ("192.0.2.1", 5060))
            self.assertEqual(reply.code, 400, value)

    def test_control_characters(self) -> None:
        self.assertRefused(options(From='"Bo\x01b" <sip:1@sip.example.net>;tag=1'), "Control character in a header")
        self.assertRefused(options(User_Agent="codec\x00"), "Control character in a header")

    def test_call_id(self) -> None:
        for value in ("a b", "a@b@c", "a@", "@b", "é"):
            self.assertRefused(options(Call_ID=value), "Invalid Call-ID")
        # Outside RFC 3261's word, but what real agents send (base64 padding).
        for value in ("YWJjZA==@192.0.2.1", "a=b;c,d&e$f#g^h|i"):
            reply = self.h.sendOne(options(Call_ID=value), ("192.0.2.1", 5060))
            self.assertNotEqual(reply.code, 400, value)

    def test_headers_in_from_to_and_route_uris(self) -> None:
        self.assertRefused(options(From="<sip:1@sip.example.net?Subject=x>;tag=1"), "Headers in a From URI")
        self.assertRefused(options(To="<sip:sip.example.net?Route=%3Csip:evil%3E>"), "Headers in a To URI")
        self.assertRefused(options(Route="<sip:sip.example.net;lr?x=y>"), "Headers in a Route URI")

    def test_option_tag_lists(self) -> None:
        self.assertRefused(options(Require='"x'), "Invalid Require")
        self.assertRefused(options(Proxy_Require="a b"), "Invalid Proxy-Require")
        self.assertRefused(options(Supported="100rel, timer,"), "Invalid Supported")

    def test_expires_content_type_and_session_expires(self) -> None:
        self.assertRefused(options(Expires="soon"), "Invalid Expires")
        self.assertRefused(options(Content_Type="application"), "Invalid Content-Type")
        self.assertRefused(options(Session_Expires="x;refresher=uac"), "Invalid Session-Expires")
        self.assertRefused(options(Min_SE="-5"), "Invalid Min-SE")
        ok = options(
            Expires="3600",
            Content_Type="application/sdp; charset=utf-8",
            Session_Expires="1800;refresher=uac",
            # Empty: no option tag, which RFC 3261 20.37 allows.
            Supported="",
        )
        self.assertEqual(self.h.sendOne(ok, ("192.0.2.1", 5060)).code, 200)
