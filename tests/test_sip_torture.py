"""
The torture messages of RFC 4475 section 3 and RFC 5118 section 4, and a
fuzzer built on them.

The messages are in C{tests/torture/NAME.dat}, byte for byte as the RFCs'
archives define them: CRLF line ends, the NUL, BEL and DEL bytes, the UTF-8
of C{intmeth} and C{unreason}, the binary S/MIME part of C{mpart01}. RFC
5118's archive differs from the wire in two ways these files do not copy:
it has bare LF line ends, and the Content-Length of its three SDP messages
(ipv6-in-sdp, mult-ip-in-sdp, ipv4-mapped-ipv6) matches neither the LF nor
the CRLF body; here the lines end in CRLF and Content-Length states the body
(251, 189 and 245 octets), as those sections, which are about IPv6 and not
framing, intend. The two section 4.10 messages end, as in the archive,
without the empty line.

L{EXPECTED} says what each RFC asks of the receiver. C{VALID} messages parse
and their accessors work. A status code means L{parse} raises L{BadRequest}
with that status and a request L{makeResponse} can answer. C{DROP} means a
L{ParseError} that is not a L{BadRequest}: a response, or nothing to answer.
Where the RFC's verdict belongs to the application (416, 420, 401…), the
message is C{VALID} for the parser and L{APPLICATION} names the status the
registrar or proxy must answer with; the test of that message checks that
the parser hands over what that decision needs.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.errors import ParseError
from aetasip.sip.message import Message, Request, Response
from aetasip.sip.parser import BadRequest, parse
from aetasip.sip.responses import makeResponse
from aetasip.sip.uri import parseURI, unescape

TORTURE = Path(__file__).parent / "torture"

VALID = "valid"
DROP = "drop"

EXPECTED: dict[str, str | int] = {
    # RFC 4475 3.1.1: valid messages.
    "wsinv": VALID,
    "intmeth": VALID,
    "esc01": VALID,
    "escnull": VALID,
    "esc02": VALID,
    "lwsdisp": VALID,
    "longreq": VALID,
    "dblreq": VALID,
    "semiuri": VALID,
    "transports": VALID,
    "mpart01": VALID,
    "unreason": VALID,
    "noreason": VALID,
    # RFC 4475 3.1.2: invalid messages.
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": DROP,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    # "shouldn't [reject] unless the contents of the Date header field were
    # actually important": they are not to a registrar, which ignores Date.
    "baddate": VALID,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    # 501 preferred, "a 400 Bad Request is also acceptable"; the parser
    # cannot know which methods the element implements.
    "mismatch02": 400,
    "bigcode": DROP,
    # RFC 4475 3.2: transaction layer.
    "badbranch": VALID,
    # RFC 4475 3.3: application layer.
    "insuf": 400,
    "unkscm": VALID,
    "novelsc": VALID,
    "unksm2": VALID,
    "bext01": VALID,
    "invut": VALID,
    "regaut01": VALID,
    "multi01": 400,
    "mcl01": 400,
    "bcast": VALID,
    "zeromf": VALID,
    "cparam01": VALID,
    "cparam02": VALID,
    "regescrt": VALID,
    "sdp01": VALID,
    # RFC 4475 3.4: backward compatibility.
    "inv2543": VALID,
    # RFC 5118 section 4.
    "ipv6-good": VALID,
    "ipv6-bad": 400,
    "port-ambiguous": VALID,
    "port-unambiguous": VALID,
    "via-received-param-with-delim": VALID,
    "via-received-param-no-delim": VALID,
    "ipv6-in-sdp": VALID,
    "mult-ip-in-header": VALID,
    "mult-ip-in-sdp": VALID,
    "ipv4-mapped-ipv6": VALID,
    "ipv6-bug-abnf-3-colons": VALID,
    "ipv6-correct-abnf-2-colons": VALID,
}

# Where the RFC's verdict is the application's: the status it answers with.
APPLICATION: dict[str, str] = {
    "intmeth": "UAS: 501 (unknown method) with Allow; proxy: 404 unless the URI is known",
    "esc02": "UAS: 501 for the unknown method RE%47IST%45R (not REGISTER); proxy forwards",
    "escnull": "registrar: two distinct bindings; the AOR user keeps its NUL",
    "badbranch": "transaction layer: a bare z9hG4bK is no transaction id: RFC 2543 matching or 400",
    "unkscm": "416 Unsupported URI Scheme",
    "novelsc": "416 Unsupported URI Scheme (soap.beep)",
    "unksm2": "registrar: 400, the To of a REGISTER must be a SIP or SIPS AOR; proxy: forward",
    "bext01": "420 Bad Extension with Unsupported (Require); a proxy checks Proxy-Require",
    "invut": "415 Unsupported Media Type with Accept",
    "regaut01": "registrar: 401 with a Digest challenge, the unknown scheme ignored",
    "bcast": "proxy: drop the response rather than forward it to 255.255.255.255",
    "zeromf": "proxy: 483 Too Many Hops (or answer the OPTIONS itself); registrar/UAS: process it",
    "cparam01": "registrar: binds sip:+19725552222@gw1.example.net, unknownparam a Contact parameter",
    "cparam02": "registrar: binds the URI with its unknownparam URI parameter",
    "regescrt": "registrar: binds the Contact with its escaped Route header, returned as sent",
    "sdp01": "UAS: 406 Not Acceptable (no body type it can send matches Accept)",
    "inv2543": "transaction layer: RFC 2543 matching (no branch cookie, no From tag)",
    "baddate": "ignore the Date header",
    "mismatch02": "501 preferred over the parser's 400",
}


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def exercise(message: Message) -> None:
    """
    Use every accessor of a parsed message, answer it if it is a request,
    and serialise it: none of this may raise, L{ParseError} included.
    """
    for via in message.vias:
        str(via)
    message.topVia.branch  # noqa: B018
    str(message.fromAddr)
    str(message.toAddr)
    message.callID  # noqa: B018
    message.cseq  # noqa: B018
    for address in message.contacts + message.routes + message.recordRoutes + message.addresses("path"):
        str(address)
    message.wildcardContact  # noqa: B018
    for name, _ in message.headers:
        message.getAll(name)
    if isinstance(message, Request):
        str(message.requestURI)
        makeResponse(message, 200, toTag="x").toBytes()
    message.toBytes()


class TortureCaseMixin(SynchronousTestCase):
    """Assertions for one torture message."""

    def assertValid(self, name: str) -> Request | Response:
        try:
            message = parse(load(name))
        except ParseError as e:
            self.fail(f"{name}: {e.reason} ({e.status})")
        exercise(message)
        return message

    def assertValidRequest(self, name: str) -> Request:
        message = self.assertValid(name)
        assert isinstance(message, Request)
        return message

    def assertValidResponse(self, name: str) -> Response:
        message = self.assertValid(name)
        assert isinstance(message, Response)
        return message

    def assertAnswered(self, name: str, status: int) -> BadRequest:
        """The request is refused with C{status}, and can be answered."""
        error = self.assertRaises(BadRequest, parse, load(name))
        self.assertEqual(error.status, status, error.reason)
        self.assertTrue(error.reason)
        self.assertNotIn("\r", error.reason)
        self.assertNotIn("\n", error.reason)
        request = error.request
        assert request is not None
        response = makeResponse(request, error.status, error.reason)
        self.assertEqual(response.code, status)
        self.assertEqual(response.getAll("via"), request.getAll("via"))
        self.assertTrue(response.toBytes().startswith(f"SIP/2.0 {status} {error.reason}\r\n".encode()))
        return error

    def assertDropped(self, name: str) -> ParseError:
        error = self.assertRaises(ParseError, parse, load(name))
        self.assertNotIsInstance(error, BadRequest)
        return error


class CorpusTests(TortureCaseMixin):
    """The corpus and its index as a whole."""

    def test_index_covers_the_corpus(self) -> None:
        self.assertEqual(set(EXPECTED), {path.stem for path in TORTURE.glob("*.dat")})
        self.assertLessEqual(set(APPLICATION), set(EXPECTED))

    def test_corpus_has_crlf_line_ends(self) -> None:
        for name in EXPECTED:
            data = load(name)
            head = data.split(b"\r\n\r\n", 1)[0]
            self.assertNotIn(b"\n", head.replace(b"\r\n", b""), name)

    def test_every_message_behaves_as_indexed(self) -> None:
        for name, outcome in EXPECTED.items():
            if outcome == VALID:
                self.assertValid(name)
            elif outcome == DROP:
                self.assertDropped(name)
            else:
                assert isinstance(outcome, int)
                self.assertAnswered(name, outcome)

    def test_valid_messages_survive_serialisation(self) -> None:
        for name, outcome in EXPECTED.items():
            if outcome != VALID:
                continue
            message = parse(load(name))
            again = parse(message.toBytes())
            self.assertEqual(
                [h for h in again.headers if h[0] != "content-length"],
                [h for h in message.headers if h[0] != "content-length"],
                name,
            )
            self.assertEqual(again.body, message.body, name)

    def test_responses_are_never_answered(self) -> None:
        for name in EXPECTED:
            data = load(name)
            if not data.startswith(b"SIP/"):
                continue
            broken = data.replace(b"Call-ID", b"X-Call-ID")
            error = self.assertRaises(ParseError, parse, broken)
            self.assertFalse(isinstance(error, BadRequest), name)


class ValidMessageTests(TortureCaseMixin):
    """RFC 4475 3.1.1: parsers must accept these."""

    def test_wsinv_is_valid(self) -> None:
        request = self.assertValidRequest("wsinv")
        self.assertEqual(request.method, "INVITE")
        self.assertEqual(request.requestURI.params, {"unknownparam": None})
        self.assertEqual(request.toAddr.uri.user, "vivekg")
        self.assertEqual(request.toAddr.tag, "1918181833n")
        self.assertEqual(request.fromAddr.display, 'J Rosenberg \\"')
        self.assertEqual(request.fromAddr.tag, "98asjd8")
        self.assertEqual(request.get("max-forwards"), "0068")
        self.assertEqual(request.cseq, (9, "INVITE"))
        self.assertEqual(
            [(v.transport, v.host, v.branch) for v in request.vias],
            [
                ("UDP", "192.0.2.2", "390skdjuw"),
                ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
                ("UDP", "192.168.255.111", "z9hG4bK30239"),
            ],
        )
        self.assertEqual(request.get("subject"), "")
        self.assertEqual(request.get("newfangledheader"), "newfangled value continued newfangled value")
        self.assertEqual(request.get("unknownheaderwithunusualvalue"), ";;,,;;,;")
        self.assertEqual(request.routes[0].uri.params, {"lr": None, "unknownwith": "value", "unknown-no-value": None})
        [contact] = request.contacts
        self.assertEqual(contact.display, 'Quoted string ""')
        self.assertEqual(contact.params, {"newparam": "newvalue", "secondparam": None, "q": "0.33"})
        self.assertEqual(len(request.body), 150)

    def test_intmeth_is_valid(self) -> None:
        request = self.assertValidRequest("intmeth")
        self.assertEqual(request.method, "!interesting-Method0123456789_*+`.%indeed'~")
        uri = request.requestURI
        self.assertEqual(uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        self.assertEqual(uri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        self.assertEqual(uri.host, "example.com")
        self.assertEqual(request.topVia.branch, "z9hG4bK-.!%66*_+`'~")
        self.assertEqual(request.toAddr.display, "BEL:\x07 NUL:\x00 DEL:\x7f")
        self.assertEqual(request.fromAddr.display, "token1~` token2'+_ token3*%!.-")
        self.assertEqual(request.fromAddr.params["fromparam''~+*_!.-%"], '"работающий"')
        self.assertEqual(request.fromAddr.tag, "_token~1'+`*%!-.")
        self.assertEqual(request.callID, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
        self.assertEqual(request.cseq, (139122385, request.method))
        self.assertEqual(request.get("extensionheader-!.%*+_`'~"), "\ufeff大停電")

    def test_esc01_is_valid(self) -> None:
        request = self.assertValidRequest("esc01")
        self.assertEqual(request.requestURI.user, "sips:user@example.com")
        self.assertEqual(request.toAddr.uri.user, "user")
        self.assertEqual(request.fromAddr.uri.user, "I have spaces")
        self.assertEqual(request.callID, "esc01.239409asdfakjkn23onasd0-3234")
        self.assertEqual(request.get("content-type"), "application/sdp")
        [contact] = request.contacts
        self.assertEqual(contact.uri.user, "caller")
        self.assertEqual(contact.uri.params, {"lr": None, "name": "v%61lue%25%34%31"})
        # Unescaped once, never recursively: "value%41", not "valueA".
        self.assertEqual(unescape(contact.uri.params["name"] or ""), "value%41")

    def test_escnull_is_valid(self) -> None:
        request = self.assertValidRequest("escnull")
        self.assertEqual(request.toAddr.uri.user, "null-\x00-null")
        self.assertEqual(request.fromAddr.uri.user, "null-\x00-null")
        users = [c.uri.user for c in request.contacts]
        self.assertEqual(users, ["\x00", "\x00\x00"])
        self.assertNotEqual(request.contacts[0].uri, request.contacts[1].uri)
        self.assertEqual(str(request.toAddr.uri), "sip:null-%00-null@example.com")

    def test_esc02_is_valid(self) -> None:
        request = self.assertValidRequest("esc02")
        self.assertEqual(request.method, "RE%47IST%45R")
        self.assertNotEqual(request.method, "REGISTER")
        self.assertEqual(request.toAddr.display, "%Z%45")
        self.assertEqual(request.topVia.branch, "z9hG4bK209%fzsnel234")
        self.assertEqual([c.uri.user for c in request.contacts], ["alias1", "alias3"])
        self.assertEqual(request.get("c%6fntact"), "<sip:alias2@host2.example.com>")

    def test_lwsdisp_is_valid(self) -> None:
        request = self.assertValidRequest("lwsdisp")
        self.assertEqual(request.fromAddr.display, "caller")
        self.assertEqual(request.fromAddr.uri.user, "caller")

    def test_longreq_is_valid(self) -> None:
        request = self.assertValidRequest("longreq")
        to = request.toAddr
        self.assertEqual(to.display, f"I have a user name of {'extreme' * 10} proportion")
        self.assertEqual(to.uri.port, 6000)
        self.assertEqual(to.uri.params[f"longparam{'name' * 25}"], "shortvalue")
        self.assertEqual(request.fromAddr.tag, f"12{'982' * 50}424")
        self.assertEqual(len(request.vias), 34)
        self.assertEqual(request.vias[0].host, "sip33.example.com")
        self.assertEqual(request.vias[-1].params["received"], "192.0.2.5")
        self.assertEqual(request.vias[-1].branch, f"very{'long' * 50}branchvalue")
        self.assertEqual(request.contacts[0].uri.user, "amazinglylongcallername" * 5)
        self.assertEqual(len(request.body), 150)

    def test_dblreq_is_valid(self) -> None:
        request = self.assertValidRequest("dblreq")
        # The INVITE after the empty body is noise (RFC 3261 18.3).
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(request.body, b"")
        self.assertEqual(request.callID, "dblreq.0ha0isndaksdj99sdfafnl3lk233412")
        self.assertEqual(len(request.vias), 1)
        self.assertNotIn(b"INVITE", request.toBytes())

    def test_semiuri_is_valid(self) -> None:
        request = self.assertValidRequest("semiuri")
        self.assertEqual(request.requestURI.user, "user;par=u@example.net")
        self.assertEqual(request.requestURI.host, "example.com")
        self.assertEqual(request.requestURI.params, {})
        self.assertEqual(len(request.getAll("accept")), 6)

    def test_transports_is_valid(self) -> None:
        request = self.assertValidRequest("transports")
        self.assertEqual([v.transport for v in request.vias], ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])
        self.assertEqual(request.callID, "transports.kijh4akdnaqjkwendsasfdj")

    def test_mpart01_is_valid(self) -> None:
        request = self.assertValidRequest("mpart01")
        self.assertEqual(len(request.body), 553)
        self.assertIn(b"\x00", request.body)
        self.assertTrue(request.body.endswith(b"--7a9cbec02ceef655--\r\n"))
        self.assertEqual(request.topVia.params, {"branch": "z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-", "rport": None})
        self.assertEqual(request.topVia.port, 5070)
        self.assertEqual(request.routes[0].uri.port, 5080)

    def test_unreason_is_valid(self) -> None:
        response = self.assertValidResponse("unreason")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.reason, "= 2**3 * 5**2 но сто девяносто девять - простое")
        self.assertEqual(len(response.body), 154)

    def test_noreason_is_valid(self) -> None:
        response = self.assertValidResponse("noreason")
        self.assertEqual(response.code, 100)
        self.assertEqual(response.reason, "")


class InvalidMessageTests(TortureCaseMixin):
    """RFC 4475 3.1.2: requests answered 400 (or 505), responses dropped."""

    def test_badinv01_is_answered_400(self) -> None:
        request = self.assertAnswered("badinv01", 400).request
        assert request is not None
        # The Via itself is broken: the answer goes to the packet's source.
        self.assertRaises(ParseError, lambda: request.topVia)

    def test_clerr_is_answered_400(self) -> None:
        error = self.assertAnswered("clerr", 400)
        self.assertIn("Content-Length", error.reason)

    def test_ncl_is_answered_400(self) -> None:
        error = self.assertAnswered("ncl", 400)
        self.assertIn("Content-Length", error.reason)

    def test_scalar02_is_answered_400(self) -> None:
        error = self.assertAnswered("scalar02", 400)
        self.assertIn("CSeq", error.reason)

    def test_scalarlg_is_dropped(self) -> None:
        self.assertDropped("scalarlg")

    def test_quotbal_is_answered_400(self) -> None:
        error = self.assertAnswered("quotbal", 400)
        assert error.request is not None
        # The broken To is echoed as sent, no tag appended to it.
        response = makeResponse(error.request, 400, error.reason, toTag="x")
        self.assertEqual(response.get("to"), '"Mr. J. User <sip:j.user@example.com>')

    def test_ltgtruri_is_answered_400(self) -> None:
        self.assertAnswered("ltgtruri", 400)

    def test_lwsruri_is_answered_400(self) -> None:
        self.assertAnswered("lwsruri", 400)

    def test_lwsstart_is_answered_400(self) -> None:
        self.assertAnswered("lwsstart", 400)

    def test_trws_is_answered_400(self) -> None:
        self.assertAnswered("trws", 400)

    def test_escruri_is_answered_400(self) -> None:
        error = self.assertAnswered("escruri", 400)
        self.assertIn("Request-URI", error.reason)

    def test_baddate_is_valid(self) -> None:
        request = self.assertValidRequest("baddate")
        self.assertEqual(request.get("date"), "Fri, 01 Jan 2010 16:00:00 EST")

    def test_regbadct_is_answered_400(self) -> None:
        self.assertAnswered("regbadct", 400)

    def test_badaspec_is_answered_400(self) -> None:
        self.assertAnswered("badaspec", 400)

    def test_baddn_is_answered_400(self) -> None:
        self.assertAnswered("baddn", 400)

    def test_badvers_is_answered_505(self) -> None:
        error = self.assertAnswered("badvers", 505)
        self.assertEqual(error.reason, "Version Not Supported")

    def test_mismatch01_is_answered_400(self) -> None:
        error = self.assertAnswered("mismatch01", 400)
        self.assertIn("CSeq", error.reason)

    def test_mismatch02_is_answered_400(self) -> None:
        error = self.assertAnswered("mismatch02", 400)
        assert error.request is not None
        self.assertEqual(error.request.method, "NEWMETHOD")

    def test_bigcode_is_dropped(self) -> None:
        self.assertDropped("bigcode")


class TransactionLayerTests(TortureCaseMixin):
    """RFC 4475 3.2."""

    def test_badbranch_is_valid(self) -> None:
        request = self.assertValidRequest("badbranch")
        # A cookie and no identifier: the transaction layer must not take it as unique.
        self.assertEqual(request.topVia.branch, "z9hG4bK")


class ApplicationLayerTests(TortureCaseMixin):
    """
    RFC 4475 3.3: syntactically valid (or not) messages whose answer is the
    application's; the parser hands over what the decision needs.
    """

    def test_insuf_is_answered_400(self) -> None:
        error = self.assertAnswered("insuf", 400)
        assert error.request is not None
        response = makeResponse(error.request, 400, error.reason, toTag="x")
        self.assertEqual([name for name, _ in response.headers], ["cseq", "via"])

    def test_unkscm_needs_416(self) -> None:
        request = self.assertValidRequest("unkscm")
        self.assertEqual(request.requestURI.scheme, "nobodyknowsthisscheme")
        self.assertEqual(request.requestURI.opaque, "totallyopaquecontent")

    def test_novelsc_needs_416(self) -> None:
        request = self.assertValidRequest("novelsc")
        self.assertEqual(request.requestURI.scheme, "soap.beep")
        self.assertEqual(request.requestURI.opaque, "//192.0.2.103:3002")

    def test_unksm2_is_valid(self) -> None:
        request = self.assertValidRequest("unksm2")
        self.assertEqual(request.toAddr.uri.scheme, "isbn")
        self.assertEqual(request.fromAddr.uri.scheme, "http")
        self.assertEqual(request.fromAddr.tag, "3234233")
        self.assertEqual(request.contacts[0].uri.scheme, "name")
        self.assertEqual(request.contacts[0].uri.opaque, "John_Smith")

    def test_bext01_needs_420(self) -> None:
        request = self.assertValidRequest("bext01")
        self.assertEqual(request.getAll("require"), ["nothingSupportsThis", "nothingSupportsThisEither"])
        self.assertEqual(request.getAll("proxy-require"), ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"])

    def test_invut_needs_415(self) -> None:
        request = self.assertValidRequest("invut")
        self.assertEqual(request.get("content-type"), "application/unknownformat")
        self.assertEqual(request.body, b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n')

    def test_regaut01_needs_401(self) -> None:
        request = self.assertValidRequest("regaut01")
        self.assertEqual(request.get("authorization"), "NoOneKnowsThisScheme opaque-data=here")
        self.assertEqual(request.get("content-length"), "0")

    def test_multi01_is_answered_400(self) -> None:
        error = self.assertAnswered("multi01", 400)
        assert error.request is not None
        response = makeResponse(error.request, 400, error.reason, toTag="x")
        # The first of each is echoed, once.
        self.assertEqual(response.getAll("call-id"), ["multi01.98asdh@192.0.2.1"])
        self.assertEqual(response.getAll("cseq"), ["5 INVITE"])
        self.assertEqual(response.getAll("to"), ["sip:user@example.com;tag=x"])

    def test_mcl01_is_answered_400(self) -> None:
        error = self.assertAnswered("mcl01", 400)
        self.assertIn("Content-Length", error.reason)

    def test_bcast_is_valid(self) -> None:
        response = self.assertValidResponse("bcast")
        self.assertEqual(response.vias[1].host, "255.255.255.255")

    def test_zeromf_needs_483_at_a_proxy(self) -> None:
        request = self.assertValidRequest("zeromf")
        self.assertEqual(request.get("max-forwards"), "0")

    def test_cparam01_is_valid(self) -> None:
        request = self.assertValidRequest("cparam01")
        [contact] = request.contacts
        self.assertEqual(contact.params, {"unknownparam": None})
        self.assertEqual(contact.uri.params, {})
        self.assertEqual(contact.uri.user, "+19725552222")

    def test_cparam02_is_valid(self) -> None:
        request = self.assertValidRequest("cparam02")
        [contact] = request.contacts
        self.assertEqual(contact.params, {})
        self.assertEqual(contact.uri.params, {"unknownparam": None})

    def test_regescrt_is_valid(self) -> None:
        request = self.assertValidRequest("regescrt")
        [contact] = request.contacts
        self.assertEqual(contact.uri.headers, "Route=%3Csip:sip.example.com%3E")
        self.assertEqual(str(contact.uri), "sip:user@example.com?Route=%3Csip:sip.example.com%3E")

    def test_sdp01_needs_406(self) -> None:
        request = self.assertValidRequest("sdp01")
        self.assertEqual(request.getAll("accept"), ["text/nobodyKnowsThis"])
        self.assertEqual(request.get("content-type"), "application/sdp")


class BackwardCompatibilityTests(TortureCaseMixin):
    """RFC 4475 3.4."""

    def test_inv2543_is_valid(self) -> None:
        request = self.assertValidRequest("inv2543")
        self.assertIsNone(request.topVia.branch)
        self.assertIsNone(request.fromAddr.tag)
        self.assertFalse(request.has("max-forwards"))
        self.assertEqual(request.toAddr.params, {"user": "phone"})
        self.assertEqual(request.fromAddr.uri.params, {"user": "phone"})
        self.assertTrue(request.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n"))


class IPv6TortureTests(TortureCaseMixin):
    """RFC 5118 section 4."""

    def test_ipv6_good_is_valid(self) -> None:
        request = self.assertValidRequest("ipv6-good")
        self.assertEqual((request.requestURI.host, request.requestURI.port), ("[2001:db8::10]", None))
        self.assertEqual(request.topVia.host, "[2001:db8::9:1]")
        self.assertEqual(request.contacts[0].uri.host, "[2001:db8::1]")

    def test_ipv6_bad_is_answered_400(self) -> None:
        self.assertAnswered("ipv6-bad", 400)

    def test_port_ambiguous_is_valid(self) -> None:
        # Everything inside [] is the address: no port (RFC 5118 4.3, erratum 1311).
        uri = self.assertValidRequest("port-ambiguous").requestURI
        self.assertEqual((uri.host, uri.port), ("[2001:db8::10:5070]", None))

    def test_port_unambiguous_is_valid(self) -> None:
        uri = self.assertValidRequest("port-unambiguous").requestURI
        self.assertEqual((uri.host, uri.port), ("[2001:db8::10]", 5070))

    def test_via_received_param_with_delim_is_valid(self) -> None:
        via = self.assertValidRequest("via-received-param-with-delim").topVia
        self.assertEqual(via.params["received"], "[2001:db8::9:255]")

    def test_via_received_param_no_delim_is_valid(self) -> None:
        via = self.assertValidRequest("via-received-param-no-delim").topVia
        self.assertEqual(via.params["received"], "2001:db8::9:255")
        self.assertEqual(via.branch, "z9hG4bKas3")

    def test_ipv6_in_sdp_is_valid(self) -> None:
        request = self.assertValidRequest("ipv6-in-sdp")
        self.assertIn(b"c=IN IP6 2001:db8::20\r\n", request.body)
        self.assertEqual(request.contacts[0].uri.host, "[2001:db8::20]")

    def test_mult_ip_in_header_is_valid(self) -> None:
        vias = self.assertValidRequest("mult-ip-in-header").vias
        self.assertEqual(
            [(v.transport, v.host, v.port) for v in vias],
            [("UDP", "[2001:db8::9:1]", 6050), ("UDP", "192.0.2.1", None), ("TCP", "[2001:db8::9:255]", None)],
        )
        self.assertEqual(vias[2].params["received"], "192.0.2.200")

    def test_mult_ip_in_sdp_is_valid(self) -> None:
        request = self.assertValidRequest("mult-ip-in-sdp")
        self.assertIn(b"c=IN IP6 2001:db8::1\r\n", request.body)
        self.assertEqual(len(request.body), 189)

    def test_ipv4_mapped_ipv6_is_valid(self) -> None:
        request = self.assertValidRequest("ipv4-mapped-ipv6")
        self.assertEqual(
            [(v.host, v.port) for v in request.vias], [("[::ffff:192.0.2.10]", 19823), ("[::ffff:192.0.2.2]", None)]
        )
        self.assertEqual(request.contacts[0].uri.host, "[::ffff:192.0.2.2]")
        self.assertEqual(request.contacts[0].display, "T. desk phone")

    def test_ipv6_bug_abnf_3_colons_is_valid(self) -> None:
        # "An implementation must tolerate both" (RFC 5118 4.10).
        request = self.assertValidRequest("ipv6-bug-abnf-3-colons")
        self.assertEqual(request.requestURI.host, "[2001:db8::192.0.2.1]")
        self.assertEqual(request.requestURI, parseURI("sip:user@[2001:db8::192.0.2.1]"))
        self.assertEqual(request.toAddr.uri.host, "[2001:db8::192.0.2.1]")

    def test_ipv6_correct_abnf_2_colons_is_valid(self) -> None:
        request = self.assertValidRequest("ipv6-correct-abnf-2-colons")
        self.assertEqual(request.requestURI.host, "[2001:db8::192.0.2.1]")
        self.assertEqual(request.callID, "G9559905523997077@hlau_4100")


# Bytes a mutation inserts: delimiters, line ends, escapes, non-ASCII digits
# (str.isdigit() accepts them, int() refuses '²'), invalid UTF-8, huge numbers.
_INTERESTING = [
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b"\r\n ",
    b";",
    b",",
    b":",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"%0",
    b"[",
    b"]",
    b"@",
    b"=",
    b"?",
    b"/",
    b"*",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"-1",
    b"0",
    b"65536",
    b"4294967296",
    b"9" * 5000,
    b"a" * 3000 + b"!",
    b" " * 3000,
    b"SIP/2.0/UDP ",
    b"sip:",
    b"tel:",
    b"[::1]",
    b"[2001:db8:::1]",
]


# What a number in a message becomes: non-ASCII digits, signs, overflows.
_NUMBERS = [
    "\N{SUPERSCRIPT TWO}".encode(),
    "\N{ARABIC-INDIC DIGIT ONE}\N{ARABIC-INDIC DIGIT TWO}".encode(),
    "\N{FULLWIDTH DIGIT FIVE}\N{FULLWIDTH DIGIT ZERO}".encode(),
    b"-1",
    b"+1",
    b"0" * 40 + b"1",
    b"65536",
    b"2147483648",
    b"9" * 5000,
]
_NUMBER = re.compile(rb"[0-9]+")
_DELIMITER = re.compile(rb"[:;=@<> ,/\[\]\"]")


def _pick(rng: random.Random, pattern: re.Pattern[bytes], data: bytearray) -> re.Match[bytes] | None:
    matches = list(pattern.finditer(data))
    return rng.choice(matches) if matches else None


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    """One random variant of a random seed."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        n = len(data)
        kind = rng.randrange(11)
        at = rng.randrange(n + 1)
        if kind == 9:
            # Structure-aware: where the parser reads a number…
            number = _pick(rng, _NUMBER, data)
            if number is not None:
                data[number.start() : number.end()] = rng.choice(_NUMBERS)
        elif kind == 10:
            # …or the value after a delimiter.
            delimiter = _pick(rng, _DELIMITER, data)
            if delimiter is not None:
                data[delimiter.end() : delimiter.end()] = rng.choice(_INTERESTING)
        elif kind == 0 and n:
            data[min(at, n - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at:at] = rng.choice(_INTERESTING)
        elif kind == 2:
            del data[at : at + rng.randint(1, 40)]
        elif kind == 3:
            del data[at:]
        elif kind == 4:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 5:
            lines = bytes(data).split(b"\r\n")
            rng.shuffle(lines)
            data = bytearray(b"\r\n".join(lines))
        elif kind == 6:
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif kind == 7:
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", rng.randint(1, 30)))
        else:
            other = rng.choice(seeds)
            data[at:] = other[rng.randrange(len(other) + 1) :]
    return bytes(data)


class FuzzTests(SynchronousTestCase):
    """Nothing a peer sends raises anything but ParseError out of the parser."""

    def test_mutations_only_raise_parse_errors(self) -> None:
        rng = random.Random(4475)
        seeds = [load(name) for name in sorted(EXPECTED)]
        parsed = answered = 0
        for _ in range(5000):
            data = mutate(rng, seeds)
            try:
                message = parse(data)
            except BadRequest as e:
                self.assertNotIn("\n", e.reason)
                if e.request is not None:
                    answered += 1
                    makeResponse(e.request, e.status, e.reason, toTag="x").toBytes()
                continue
            except ParseError:
                continue
            except Exception as e:
                self.fail(f"{type(e).__name__}: {e} on {data!r}")
            parsed += 1
            # A parsed message is safe to use, and serialises to one that parses.
            exercise(message)
            again = parse(message.toBytes())
            self.assertEqual(
                [h for h in again.headers if h[0] != "content-length"],
                [h for h in message.headers if h[0] != "content-length"],
            )
        # The fuzzer reaches both sides of the parser (fewer mutations parse
        # since the grammar of Call-ID, option tags, Expires... is checked).
        self.assertGreater(parsed, 400)
        self.assertGreater(answered, 500)

    def test_every_number_replaced_only_raises_parse_errors(self) -> None:
        """
        Each number in each header section becomes each of L{_NUMBERS}: a
        systematic pass over what random mutation seldom hits, like the port
        of one URI in one message.
        """
        for name in sorted(EXPECTED):
            data = load(name)
            headEnd = data.find(b"\r\n\r\n")
            for number in _NUMBER.finditer(data, 0, headEnd if headEnd >= 0 else len(data)):
                for replacement in _NUMBERS:
                    variant = data[: number.start()] + replacement + data[number.end() :]
                    try:
                        message = parse(variant)
                    except ParseError:
                        continue
                    except Exception as e:
                        self.fail(f"{type(e).__name__}: {e} on {variant!r}")
                    exercise(message)

    def test_random_bytes_only_raise_parse_errors(self) -> None:
        rng = random.Random(5118)
        for _ in range(500):
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
            try:
                parse(data)
            except ParseError:
                pass

    def test_pathological_values_parse_quickly(self) -> None:
        """Inputs that would make a backtracking pattern explode."""
        base = load("lwsdisp")
        values = [
            b"a" * 20000 + b"\x01<sip:x@y>",
            b"a " * 10000 + b"\x01<sip:x@y>",
            b'"' + b"\\a" * 10000,
            b"<sip:" + b"a" * 20000 + b"@" + b"a" * 20000 + b"!>",
            b"sip:x@y" + b";a" * 10000 + b";",
            b"sip:x@y;tag=" + b" " * 20000 + b"\x01",
        ]
        # Generous: a backtracking explosion takes minutes, not seconds.
        limit = 2.0
        for value in values:
            data = base.replace(b"From: caller<sip:caller@example.com>;tag=323", b"From: " + value)
            started = time.monotonic()
            self.assertRaises(ParseError, parse, data)
            self.assertLess(time.monotonic() - started, limit, value[:20])
        started = time.monotonic()
        folded = base.replace(b"l: 0", b"Subject: x" + b"\r\n y" * 15000 + b"\r\nl: 0")
        self.assertEqual(len(parse(folded).get("subject") or ""), 1 + 2 * 15000)
        via = b"SIP/2.0/UDP " + b"a" * 30000 + b":"
        self.assertRaises(ParseError, parse, base.replace(b"SIP/2.0/UDP funky.example.com", via))
        self.assertLess(time.monotonic() - started, limit)
