"""
SIP messages: L{aetasip.sip.message}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from aetasip.calls.surgery import decrementMaxForwards
from aetasip.sip.errors import ParseError
from aetasip.sip.fieldnames import LIST_HEADERS, canonicalName
from aetasip.sip.message import REASONS, Request, Response
from aetasip.sip.parser import BadRequest, ackTopVia, parse, parseTrying
from aetasip.sip.responses import makeResponse

REGISTER = (
    b"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n"
    b"From: <sip:45675001@127.0.0.1>;tag=1\r\n"
    b"To: <sip:45675001@127.0.0.1>\r\n"
    b"Call-ID: 1-123@127.0.0.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:45675001@127.0.0.1:5061>;expires=60\r\n"
    b"Max-Forwards: 70\r\n"
    b"Expires: 3600\r\n"
    b"User-Agent: sipp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport=5061;received=127.0.0.1\r\n"
    b"From: <sip:45675001@127.0.0.1>;tag=1\r\n"
    b"To: <sip:45675001@127.0.0.1>;tag=abc\r\n"
    b"Call-ID: 1-123@127.0.0.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"hello"
)


def request(data: bytes = REGISTER) -> Request:
    message = parse(data)
    assert isinstance(message, Request)
    return message


def replace(old: bytes, new: bytes, data: bytes = REGISTER) -> bytes:
    assert old in data, old
    return data.replace(old, new)


class ParseRequestTests(SynchronousTestCase):
    def test_register(self) -> None:
        r = request()
        self.assertEqual((r.method, r.uri, r.version), ("REGISTER", "sip:127.0.0.1:5060", "SIP/2.0"))
        self.assertEqual((r.requestURI.host, r.requestURI.port), ("127.0.0.1", 5060))
        self.assertEqual((r.topVia.transport, r.topVia.host, r.topVia.port), ("UDP", "127.0.0.1", 5061))
        self.assertEqual(r.topVia.params, {"branch": "z9hG4bK-1-0", "rport": None})
        self.assertEqual(r.fromAddr.tag, "1")
        self.assertIsNone(r.toAddr.tag)
        self.assertEqual(r.toAddr.uri.user, "45675001")
        self.assertEqual(r.callID, "1-123@127.0.0.1")
        self.assertEqual(r.cseq, (1, "REGISTER"))
        [contact] = r.contacts
        self.assertEqual((contact.uri.port, contact.params), (5061, {"expires": "60"}))
        self.assertEqual(r.get("user-agent"), "sipp")
        self.assertEqual(r.body, b"")

    def test_header_names_case_insensitive(self) -> None:
        r = request(replace(b"Call-ID:", b"cALL-iD  :", replace(b"Max-Forwards", b"MAX-FORWARDS")))
        self.assertEqual(r.callID, "1-123@127.0.0.1")
        self.assertEqual(r.get("max-forwards"), "70")

    def test_compact_names(self) -> None:
        data = REGISTER
        for long, short in [
            (b"Via:", b"v:"),
            (b"From:", b"F:"),
            (b"To:", b"t:"),
            (b"Call-ID:", b"i:"),
            (b"Contact:", b"M:"),
            (b"Content-Length:", b"l:"),
        ]:
            data = replace(long, short, data)
        r = request(data + b"")
        self.assertEqual([name for name, _ in r.headers][:6], ["via", "from", "to", "call-id", "cseq", "contact"])
        self.assertEqual(r.callID, "1-123@127.0.0.1")
        self.assertEqual(r.get("content-length"), "0")
        self.assertEqual(request(replace(b"User-Agent: sipp", b"k: path, gruu")).getAll("supported"), ["path", "gruu"])

    def test_folding(self) -> None:
        r = request(
            replace(
                b"To: <sip:45675001@127.0.0.1>\r\n",
                b"To:\r\n <sip:45675001@127.0.0.1>\r\n\t;tag=x\r\nSubject: one\r\n   two  \r\n\tthree\r\n",
            )
        )
        self.assertEqual(r.toAddr.tag, "x")
        self.assertEqual(r.get("to"), "<sip:45675001@127.0.0.1> ;tag=x")
        self.assertEqual(r.get("subject"), "one two three")

    def test_lws_around_colon_and_trailing(self) -> None:
        r = request(replace(b"User-Agent: sipp", b"User-Agent \t:   sipp  1.0 \t"))
        self.assertEqual(r.get("user-agent"), "sipp  1.0")

    def test_empty_value(self) -> None:
        self.assertEqual(request(replace(b"User-Agent: sipp", b"Subject:")).get("subject"), "")

    def test_bare_lf_tolerated(self) -> None:
        r = request(REGISTER.replace(b"\r\n", b"\n"))
        self.assertEqual(r.callID, "1-123@127.0.0.1")
        self.assertEqual(r.body, b"")

    def test_mixed_line_ends(self) -> None:
        data = replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 4\n\r\nbody\r\n\r\nmore")
        self.assertEqual(request(data).body, b"body")
        data = replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 4\n\nbody\r\n\r\nmore")
        self.assertEqual(request(data).body, b"body")

    def test_missing_empty_line_tolerated(self) -> None:
        self.assertEqual(request(REGISTER[:-2]).callID, "1-123@127.0.0.1")

    def test_leading_crlf_ignored(self) -> None:
        self.assertEqual(request(b"\r\n\r\n" + REGISTER).method, "REGISTER")

    def test_body_delimited_by_content_length(self) -> None:
        r = request(replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 4\r\n\r\nbodyINVITE sip:x SIP/2.0"))
        self.assertEqual(r.body, b"body")

    def test_body_without_content_length_is_the_rest(self) -> None:
        r = request(replace(b"Content-Length: 0\r\n\r\n", b"\r\nhello\r\n"))
        self.assertEqual(r.body, b"hello\r\n")

    def test_multi_valued(self) -> None:
        r = request(
            replace(
                b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n",
                b"Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP c\r\n",
            )
        )
        self.assertEqual([v.host for v in r.vias], ["a", "b", "c"])
        self.assertEqual(r.topVia.host, "a")
        self.assertEqual(len(r.getAll("via")), 3)

    def test_commas_only_split_in_list_headers(self) -> None:
        r = request(replace(b"User-Agent: sipp", b"User-Agent: a, b\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT"))
        self.assertEqual(r.getAll("user-agent"), ["a, b"])
        self.assertEqual(r.getAll("date"), ["Sat, 13 Nov 2010 23:29:00 GMT"])
        self.assertIn("contact", LIST_HEADERS)
        self.assertNotIn("www-authenticate", LIST_HEADERS)

    def test_contact_list(self) -> None:
        r = request(
            replace(b"Contact: <sip:45675001@127.0.0.1:5061>;expires=60", b'Contact: "A, B" <sip:a@h>, <sip:b@h>;q=0.5')
        )
        self.assertEqual([c.uri.user for c in r.contacts], ["a", "b"])
        self.assertEqual(r.contacts[0].display, "A, B")

    def test_wildcard_contact(self) -> None:
        r = request(replace(b"<sip:45675001@127.0.0.1:5061>;expires=60", b"*"))
        self.assertTrue(r.wildcardContact)
        self.assertEqual(r.contacts, [])
        self.assertEqual(r.getAll("contact"), ["*"])
        self.assertFalse(request().wildcardContact)

    def test_routes(self) -> None:
        r = request(replace(b"User-Agent: sipp", b"Route: <sip:p1;lr>, <sip:p2;lr>\r\nRecord-Route: <sip:p3;lr>"))
        self.assertEqual([a.uri.host for a in r.routes], ["p1", "p2"])
        self.assertEqual([a.uri.host for a in r.recordRoutes], ["p3"])
        self.assertEqual(request().routes, [])

    def test_version_is_case_insensitive(self) -> None:
        self.assertEqual(request(replace(b"SIP/2.0\r\n", b"sip/2.0\r\n")).version, "SIP/2.0")

    def test_max_forwards_leading_zeros(self) -> None:
        self.assertEqual(request(replace(b"Max-Forwards: 70", b"Max-Forwards: 0068")).get("max-forwards"), "0068")

    def test_thousands_of_leading_zeros(self) -> None:
        # More digits than int() converts (4,300): the values they stand for, no ValueError.
        zeros = b"0" * 5000
        r = request(replace(b"Max-Forwards: 70", b"Max-Forwards: " + zeros + b"70"))
        self.assertEqual(r.get("max-forwards"), (zeros + b"70").decode())
        decrementMaxForwards(r)
        self.assertEqual(r.get("max-forwards"), "69")
        self.assertEqual(request(replace(b"CSeq: 1 ", b"CSeq: " + zeros + b"1 ")).cseq[0], 1)
        data = replace(b"Content-Length: 0", b"Content-Length: " + zeros + b"2") + b"ab"
        self.assertEqual(request(data).body, b"ab")

    def test_missing_max_forwards_tolerated(self) -> None:
        # RFC 2543 peers (RFC 4475 inv2543) send none.
        self.assertFalse(request(replace(b"Max-Forwards: 70\r\n", b"")).has("max-forwards"))

    def test_non_utf8_kept(self) -> None:
        r = request(replace(b"User-Agent: sipp", b"User-Agent: caf\xe9"))
        self.assertIn(b"User-Agent: caf\xe9\r\n", r.toBytes())

    def test_extension_method(self) -> None:
        r = request(replace(b"REGISTER", b"RE%47IST%45R"))
        self.assertEqual(r.method, "RE%47IST%45R")
        self.assertEqual(r.cseq, (1, "RE%47IST%45R"))


class BadRequestTests(SynchronousTestCase):
    def assertBad(self, data: bytes, status: int = 400) -> BadRequest:
        error = self.assertRaises(BadRequest, parse, data)
        self.assertEqual(error.status, status, error.reason)
        self.assertIsNotNone(error.request)
        return error

    def test_invalid_requests(self) -> None:
        for old, new in [
            (b"REGISTER sip:127.0.0.1:5060 SIP/2.0", b"REGISTER  sip:127.0.0.1:5060 SIP/2.0"),
            (b"REGISTER sip:127.0.0.1:5060 SIP/2.0", b"REGISTER sip:127.0.0.1:5060 SIP/2.0 "),
            (b"REGISTER sip:127.0.0.1:5060 SIP/2.0", b"REGISTER <sip:127.0.0.1:5060> SIP/2.0"),
            (b"REGISTER sip:127.0.0.1:5060 SIP/2.0", b"REGISTER sip:127.0.0.1:5060?Route=x SIP/2.0"),
            (b"REGISTER sip:127.0.0.1:5060 SIP/2.0", b"REGISTER sip:127.0.0.1:5060 HTTP/1.1"),
            (b"REGISTER sip:127.0.0.1:5060 SIP/2.0", b"REGISTER sip:127.0.0.1:5060"),
            (b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE"),
            (b"CSeq: 1 REGISTER", b"CSeq: 4294967296 REGISTER"),
            (b"CSeq: 1 REGISTER", b"CSeq: REGISTER"),
            (b"Max-Forwards: 70", b"Max-Forwards: 256"),
            (b"Max-Forwards: 70", b"Max-Forwards: -1"),
            (b"Max-Forwards: 70", b"Max-Forwards: \xc2\xb2"),
            (b"Content-Length: 0", b"Content-Length: 1"),
            (b"Content-Length: 0", b"Content-Length: -1"),
            (b"Content-Length: 0", b"Content-Length: \xc2\xb2"),
            (b"Content-Length: 0", b"Content-Length: " + b"9" * 5000),
            (b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"),
            (b"Call-ID: 1-123@127.0.0.1", b"Call-ID:"),
            (b"Call-ID: 1-123@127.0.0.1", b"Call-ID: a\r\ni: b"),
            (b"To: <sip:45675001@127.0.0.1>", b"To: <sip:45675001@127.0.0.1"),
            (b"To: <sip:45675001@127.0.0.1>\r\n", b""),
            (b"From: <sip:45675001@127.0.0.1>;tag=1", b"From: Bell, A <sip:a@b>;tag=1"),
            (b"Contact: <sip:45675001@127.0.0.1:5061>;expires=60", b"Contact: <sip:a@b>,,<sip:c@d>"),
            (b"Contact: <sip:45675001@127.0.0.1:5061>;expires=60", b"Contact: sip:a@b?x=y"),
            (b"User-Agent: sipp", b"Route: <sip:p1;lr"),
            (b"User-Agent: sipp", b"no colon here"),
            (b"User-Agent: sipp", b"Bad Name: x"),
            (b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport", b"Via: SIP/2.0/UDP 127.0.0.1:5061;;"),
        ]:
            self.assertBad(replace(old, new))

    def test_reason_phrase_describes_the_error(self) -> None:
        error = self.assertBad(replace(b"Content-Length: 0", b"Content-Length: 7"))
        self.assertEqual(error.reason, "Content-Length larger than the body")
        self.assertEqual(error.request.method if error.request else None, "REGISTER")

    def test_unsupported_version_is_505(self) -> None:
        error = self.assertBad(replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n"), 505)
        self.assertEqual(error.reason, "Version Not Supported")

    def test_missing_fields_answered_with_what_there_is(self) -> None:
        error = self.assertBad(replace(b"From: <sip:45675001@127.0.0.1>;tag=1\r\n", b""))
        self.assertEqual(error.reason, "Missing From")
        assert error.request is not None
        response = makeResponse(error.request, 400, error.reason, toTag="x")
        self.assertEqual([n for n, _ in response.headers], ["via", "to", "call-id", "cseq"])

    def test_unanswerable_requests_are_dropped(self) -> None:
        for data in [
            b"",
            b"\r\n\r\n",
            b"garbage",
            b"\x00\x01\x02\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            replace(b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n", b""),
            replace(b"REGISTER sip", b"REG<ISTER sip"),
        ]:
            error = self.assertRaises(ParseError, parse, data)
            self.assertFalse(isinstance(error, BadRequest), data)


class ParseResponseTests(SynchronousTestCase):
    def test_response(self) -> None:
        response = parse(RESPONSE)
        assert isinstance(response, Response)
        self.assertEqual((response.code, response.reason, response.version), (200, "OK", "SIP/2.0"))
        self.assertEqual(response.toAddr.tag, "abc")
        self.assertEqual(response.topVia.params["received"], "127.0.0.1")
        self.assertEqual(response.body, b"hello")

    def test_reason_kept_as_sent(self) -> None:
        for line, reason in [
            (b"SIP/2.0 200 Okey Dokey", "Okey Dokey"),
            (b"SIP/2.0 100 ", ""),
            (b"SIP/2.0 100", ""),
            ("SIP/2.0 200 Très bien".encode(), "Très bien"),
        ]:
            response = parse(RESPONSE.replace(b"SIP/2.0 200 OK", line))
            assert isinstance(response, Response)
            self.assertEqual(response.reason, reason)

    def test_invalid_responses_are_dropped(self) -> None:
        for old, new in [
            (b"SIP/2.0 200 OK", b"SIP/2.0 4294967301 better not break the receiver"),
            (b"SIP/2.0 200 OK", b"SIP/2.0 099 Low"),
            (b"SIP/2.0 200 OK", b"SIP/2.0 700 High"),
            (b"SIP/2.0 200 OK", b"SIP/2.0 2OO OK"),
            (b"SIP/2.0 200 OK", b"SIP/3.0 200 OK"),
            (b"CSeq: 1 REGISTER", b"CSeq: 9292394834772304023312 OPTIONS"),
            (b"Content-Length: 5", b"Content-Length: 6"),
            (b"Call-ID: 1-123@127.0.0.1\r\n", b""),
            (b"To: <sip:45675001@127.0.0.1>;tag=abc", b'To: "x <sip:a@b>'),
            (b"Content-Length: 5", b"Content-Length: 5\r\nbroken line"),
        ]:
            error = self.assertRaises(ParseError, parse, RESPONSE.replace(old, new))
            self.assertFalse(isinstance(error, BadRequest), new)


TRYING = (
    b"SIP/2.0 100 Trying\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours.1\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport=5061;received=127.0.0.1\r\n"
    b"From: <sip:45675001@127.0.0.1>;tag=1\r\n"
    b"To: <sip:30000000@127.0.0.1>\r\n"
    b"Call-ID: 1-123@127.0.0.1\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


class ParseTryingTests(SynchronousTestCase):
    """
    L{parseTrying}: a 100 to an INVITE read only as far as its client
    transaction reads it; anything else is left to L{parse}.
    """

    def test_trying(self) -> None:
        response = parseTrying(TRYING)
        assert response is not None
        self.assertEqual((response.code, response.reason), (100, "Trying"))
        self.assertEqual(response.topVia.branch, "z9hG4bK-ours.1")
        self.assertEqual(response.cseq, (2, "INVITE"))
        # The same message as parse makes of it, field for field.
        full = parse(TRYING)
        self.assertEqual(response.headers, full.headers)
        self.assertEqual(response.toBytes(), full.toBytes())

    def test_other_fields_are_not_read(self) -> None:
        """A From that parse refuses does not matter: a 100 goes no further."""
        broken = TRYING.replace(b"From: <sip:45675001@127.0.0.1>;tag=1", b'From: "x <sip:a@b>')
        self.assertRaises(ParseError, parse, broken)
        response = parseTrying(broken)
        assert response is not None
        self.assertEqual(response.topVia.branch, "z9hG4bK-ours.1")

    def test_anything_else_is_left_to_parse(self) -> None:
        for old, new in [
            (b"SIP/2.0 100 Trying", b"SIP/2.0 180 Ringing"),
            (b"SIP/2.0 100 Trying", b"SIP/2.0 100"),
            (b"SIP/2.0 100 Trying", b"SIP/3.0 100 Trying"),
            (b"CSeq: 2 INVITE", b"CSeq: 2 BYE"),
            (b"CSeq: 2 INVITE", b"CSeq: two INVITE"),
            (b"CSeq: 2 INVITE\r\n", b""),
            (b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours.1", b"Via: nonsense"),
            (TRYING[TRYING.index(b"Via") : TRYING.index(b"From")], b""),
            (b"Content-Length: 0", b"Content-Length: 0\r\nbroken line"),
            (b"To: <sip:30000000@127.0.0.1>", "To: <sip:\udcff@127.0.0.1>".encode("utf-8", "surrogateescape")),
        ]:
            self.assertIsNone(parseTrying(TRYING.replace(old, new)), new)

    def test_too_many_fields(self) -> None:
        self.assertIsNone(parseTrying(TRYING.replace(b"\r\n\r\n", b"\r\n" + b"X-A: 1\r\n" * 300 + b"\r\n")))


ACK = (
    b"ACK sip:30000000@127.0.0.1 SIP/2.0\r\n"
    b"Max-Forwards: 70\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-x\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-y\r\n"
    b"From: <sip:45675001@127.0.0.1>;tag=1\r\n"
    b"To: <sip:30000000@127.0.0.1>;tag=2\r\n"
    b"Call-ID: 1-123@127.0.0.1\r\n"
    b"CSeq: 1 ACK\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


class AckTopViaTests(SynchronousTestCase):
    """L{ackTopVia}: the top Via of an ACK, from its bytes alone, as parse reads it."""

    def test_top_via(self) -> None:
        via = ackTopVia(ACK)
        assert via is not None
        self.assertEqual(via, parse(ACK).topVia)
        self.assertEqual((via.host, via.port, via.branch), ("127.0.0.1", 5061, "z9hG4bK-1-0"))

    def test_names_and_spaces(self) -> None:
        top = b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport,"
        for written in [
            b"v: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport,",
            b"VIA  :  SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport ,",
            b"via:SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport,",
        ]:
            via = ackTopVia(ACK.replace(top, written))
            assert via is not None, written
            self.assertEqual((via.host, via.port, via.branch), ("127.0.0.1", 5061, "z9hG4bK-1-0"))

    def test_none_when_nothing_parses(self) -> None:
        vias = ACK[ACK.index(b"Via") : ACK.index(b"From")]
        for data in [
            ACK.replace(vias, b""),
            ACK.replace(vias, b"") + b"Via: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK-in-the-body\r\n",
            ACK.replace(b"SIP/2.0/UDP 127.0.0.1:5061;", b"nonsense;"),
            ACK.replace(b"127.0.0.1:5061", b"127.0.0.1:99999"),
            ACK.replace(b"127.0.0.1:5061", "h\udcff:5061".encode("utf-8", "surrogateescape")),
        ]:
            self.assertIsNone(ackTopVia(data), data)


class SerialisationTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        r = request()
        data = r.toBytes()
        self.assertEqual(data, REGISTER)
        again = request(data)
        self.assertEqual(again.headers, r.headers)
        self.assertEqual(bytes(r), data)

    def test_canonical_names_and_expanded_compact_forms(self) -> None:
        r = request(replace(b"Call-ID:", b"i:", replace(b"CSeq:", b"cseq:")))
        self.assertIn(b"\r\nCall-ID: 1-123@127.0.0.1\r\nCSeq: 1 REGISTER\r\n", r.toBytes())
        self.assertEqual(canonicalName("www-authenticate"), "WWW-Authenticate")
        self.assertEqual(canonicalName("x-custom-header"), "X-Custom-Header")

    def test_content_length_states_the_body(self) -> None:
        r = request()
        r.body = b"hello"
        data = r.toBytes()
        self.assertTrue(data.endswith(b"Content-Length: 5\r\n\r\nhello"))
        self.assertEqual(data.count(b"Content-Length"), 1)
        self.assertEqual(request(data).body, b"hello")

    def test_folded_message_round_trips(self) -> None:
        r = request(replace(b"User-Agent: sipp", b"Subject: a\r\n b"))
        self.assertIn(b"\r\nSubject: a b\r\n", r.toBytes())

    def test_response(self) -> None:
        response = parse(RESPONSE)
        self.assertEqual(response.toBytes(), RESPONSE)
        self.assertEqual(Response(404).toBytes(), b"SIP/2.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def test_built_request(self) -> None:
        r = Request("OPTIONS", "sip:alice@example.com")
        r.add("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")
        r.add("v", "SIP/2.0/TCP i")
        self.assertEqual(r.getAll("via"), ["SIP/2.0/UDP h;branch=z9hG4bKx", "SIP/2.0/TCP i"])
        self.assertTrue(r.toBytes().startswith(b"OPTIONS sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h"))

    def test_request_uri_follows_uri(self) -> None:
        r = request()
        self.assertEqual(r.requestURI.port, 5060)
        r.uri = "sip:alice@example.com"
        self.assertEqual(r.requestURI.user, "alice")


class MakeResponseTests(SynchronousTestCase):
    def test_copies_and_adds_to_tag(self) -> None:
        r = request(
            replace(
                b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n",
                b"Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b\r\nVia: SIP/2.0/UDP c\r\n",
            )
        )
        response = makeResponse(r, 200, toTag="abc")
        self.assertEqual((response.code, response.reason), (200, "OK"))
        self.assertEqual(response.getAll("via"), ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b", "SIP/2.0/UDP c"])
        self.assertEqual(response.get("from"), r.get("from"))
        self.assertEqual(response.get("to"), "<sip:45675001@127.0.0.1>;tag=abc")
        self.assertEqual(response.callID, r.callID)
        self.assertEqual(response.get("cseq"), "1 REGISTER")
        self.assertEqual([n for n, _ in response.headers], ["via", "via", "from", "to", "call-id", "cseq"])
        self.assertEqual(response.toAddr.tag, "abc")

    def test_keeps_an_existing_to_tag(self) -> None:
        r = request(replace(b"To: <sip:45675001@127.0.0.1>", b"To: <sip:45675001@127.0.0.1> ; TAG = old"))
        self.assertEqual(makeResponse(r, 200, toTag="new").toAddr.tag, "old")

    def test_no_tag_asked(self) -> None:
        self.assertEqual(makeResponse(request(), 100).get("to"), "<sip:45675001@127.0.0.1>")

    def test_reason(self) -> None:
        self.assertEqual(makeResponse(request(), 423).reason, REASONS[423])
        self.assertEqual(makeResponse(request(), 400, "Missing Contact").reason, "Missing Contact")
        self.assertEqual(makeResponse(request(), 299).reason, "")

    def test_response_parses(self) -> None:
        response = parse(makeResponse(request(), 200, toTag="abc").toBytes())
        assert isinstance(response, Response)
        self.assertEqual(response.code, 200)


class ChangeTests(SynchronousTestCase):
    def test_add_and_add_first(self) -> None:
        r = request()
        r.add("X-Extra", "1")
        r.addFirst("Via", "SIP/2.0/UDP proxy;branch=z9hG4bKp")
        self.assertEqual(r.get("x-extra"), "1")
        self.assertEqual(r.headers[0], ["via", "SIP/2.0/UDP proxy;branch=z9hG4bKp"])
        self.assertEqual(r.topVia.host, "proxy")
        self.assertEqual(len(r.vias), 2)

    def test_set_replaces_every_field_in_place(self) -> None:
        r = request(replace(b"Expires: 3600\r\n", b"Expires: 1\r\nExpires: 2\r\n"))
        position = [n for n, _ in r.headers].index("expires")
        r.set("Expires", "60")
        self.assertEqual(r.getAll("expires"), ["60"])
        self.assertEqual([n for n, _ in r.headers].index("expires"), position)
        r.set("Subject", "new")
        self.assertEqual(r.headers[-1], ["subject", "new"])

    def test_set_drops_parsed_values(self) -> None:
        r = request()
        self.assertIsNone(r.toAddr.tag)
        r.set("to", "<sip:45675001@127.0.0.1>;tag=z")
        self.assertEqual(r.toAddr.tag, "z")
        r.set("CSeq", "2 REGISTER")
        self.assertEqual(r.cseq, (2, "REGISTER"))

    def test_remove(self) -> None:
        r = request()
        r.remove("Contact")
        self.assertFalse(r.has("contact"))
        self.assertEqual(r.contacts, [])
        r.remove("not-there")

    def test_remove_field_with_a_value(self) -> None:
        r = request()
        r.add("Proxy-Authorization", "Digest realm=a")
        r.add("Proxy-Authorization", "Digest realm=b")
        r.removeField("proxy-authorization", "Digest realm=a")
        self.assertEqual(r.getAll("proxy-authorization"), ["Digest realm=b"])
        r.removeField("Proxy-Authorization", "not there")
        self.assertEqual(r.getAll("proxy-authorization"), ["Digest realm=b"])

    def test_remove_first_value(self) -> None:
        r = request(
            replace(
                b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport\r\n",
                b'Via: SIP/2.0/UDP a;x="1,2", SIP/2.0/UDP b\r\nVia: SIP/2.0/UDP c\r\n',
            )
        )
        self.assertEqual(r.topVia.host, "a")
        self.assertEqual(r.removeFirstValue("via"), 'SIP/2.0/UDP a;x="1,2"')
        self.assertEqual(r.topVia.host, "b")
        self.assertEqual(r.removeFirstValue("Via"), "SIP/2.0/UDP b")
        self.assertEqual(r.getAll("via"), ["SIP/2.0/UDP c"])
        self.assertEqual(r.removeFirstValue("via"), "SIP/2.0/UDP c")
        self.assertIsNone(r.removeFirstValue("via"))
        self.assertRaises(ParseError, lambda: r.topVia)

    def assertIndexed(self, r: Request) -> None:
        """What the accessors say is what a fresh parse of the fields says."""
        fresh = Request(r.method, r.uri, [list(h) for h in r.headers])
        for name in {n for n, _ in r.headers} | {"via", "contact", "x-gone"}:
            self.assertEqual(r.getAll(name), fresh.getAll(name), name)
            self.assertEqual(r.get(name), fresh.get(name), name)

    def test_every_change_keeps_the_index_true(self) -> None:
        r = request()
        r.get("via")  # the index exists: each change must keep it true
        changes = [
            lambda: r.add("Route", "<sip:a;lr>"),
            lambda: r.addFirst("Route", "<sip:b;lr>"),
            lambda: r.add("Via", "SIP/2.0/UDP last"),
            lambda: r.addFirst("Via", "SIP/2.0/UDP first, SIP/2.0/UDP second"),
            lambda: r.set("Max-Forwards", "69"),
            lambda: r.set("Subject", "new"),
            lambda: r.removeFirstValue("via"),
            lambda: r.removeFirstValue("route"),
            lambda: r.add("Route", "<sip:c;lr>, <sip:d;lr>"),
            lambda: r.add("Route", "<sip:e;lr>"),
            lambda: r.removeFirstValues("route", 2),  # a whole field and the first of the next
            lambda: r.removeFirstValues("route", 1),
            lambda: r.removeFirstValues("via", 0),
            lambda: r.removeField("route", "<sip:a;lr>"),
            lambda: r.remove("user-agent"),
            lambda: r.remove("route"),
            lambda: r.remove("x-gone"),
        ]
        for change in changes:
            change()
            self.assertIndexed(r)
        self.assertEqual(r.topVia.host, "second")
        self.assertFalse(r.has("route"))

    def test_a_copy_changes_alone(self) -> None:
        r = request()
        self.assertEqual(r.fromAddr.tag, "1")  # parsed values exist, shared by the copy
        copy = r.copy()
        copy.addFirst("Via", "SIP/2.0/UDP proxy;branch=z9hG4bKp")
        copy.set("From", "<sip:1@b>;tag=2")
        copy.set("Max-Forwards", "69")
        self.assertEqual((copy.topVia.host, copy.fromAddr.tag, copy.get("max-forwards")), ("proxy", "2", "69"))
        self.assertEqual((r.topVia.host, r.fromAddr.tag, r.get("max-forwards")), ("127.0.0.1", "1", "70"))
        self.assertEqual(len(r.vias), 1)
        self.assertEqual((copy.method, copy.uri, copy.requestURI.host), (r.method, r.uri, "127.0.0.1"))
        self.assertIndexed(copy)
        self.assertIndexed(r)
        answer = parse(RESPONSE)
        assert isinstance(answer, Response)
        answerCopy = answer.copy()
        answerCopy.removeFirstValue("via")
        self.assertEqual((answerCopy.code, answerCopy.body, answerCopy.getAll("via")), (200, b"hello", []))
        self.assertEqual(len(answer.getAll("via")), 1)

    def test_accessors_of_missing_fields(self) -> None:
        r = Request("OPTIONS", "sip:a@b")
        self.assertRaises(ParseError, lambda: r.topVia)
        self.assertRaises(ParseError, lambda: r.fromAddr)
        self.assertRaises(ParseError, lambda: r.callID)
        self.assertRaises(ParseError, lambda: r.cseq)
        self.assertEqual(r.contacts, [])
