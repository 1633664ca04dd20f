"""
Structured header values: L{aetasip.sip.headers}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.errors import ParseError
from aetasip.sip.headers import (
    NameAddr,
    Via,
    parseCSeq,
    parseDeltaSeconds,
    parseHeaderParams,
    parseNameAddr,
    parseVia,
    quote,
    splitCommas,
    unquote,
)
from aetasip.sip.uri import URI


class NameAddrTests(SynchronousTestCase):
    def test_name_addr_forms(self) -> None:
        for text, display in [
            ("<sip:alice@atlanta.com>", ""),
            ("Alice <sip:alice@atlanta.com>", "Alice"),
            ("Alice  Liddell\t<sip:alice@atlanta.com>", "Alice Liddell"),
            ('"Alice Liddell" <sip:alice@atlanta.com>', "Alice Liddell"),
            ('"Alice"<sip:alice@atlanta.com>', "Alice"),
            ("caller<sip:alice@atlanta.com>", "caller"),
            ("  <sip:alice@atlanta.com>  ", ""),
            ("token1~` token2'+_ token3*%!.- <sip:alice@atlanta.com>", "token1~` token2'+_ token3*%!.-"),
        ]:
            addr = parseNameAddr(text)
            self.assertEqual(addr.display, display, text)
            self.assertEqual(addr.uri.user, "alice", text)
            self.assertEqual(addr.uri.host, "atlanta.com", text)

    def test_addr_spec(self) -> None:
        addr = parseNameAddr("sip:alice@atlanta.com")
        self.assertEqual((addr.display, addr.uri.user, addr.params), ("", "alice", {}))

    def test_addr_spec_params_are_header_params(self) -> None:
        # RFC 3261 20.10: without <>, what follows the first ';' is the header's.
        addr = parseNameAddr("sip:+19725552222@gw1.example.net;unknownparam;tag=x")
        self.assertEqual(addr.params, {"unknownparam": None, "tag": "x"})
        self.assertEqual(addr.uri.params, {})

    def test_uri_params_inside_brackets(self) -> None:
        addr = parseNameAddr("<sip:+19725552222@gw1.example.net;unknownparam>;expires=60")
        self.assertEqual(addr.uri.params, {"unknownparam": None})
        self.assertEqual(addr.params, {"expires": "60"})

    def test_params_with_lws(self) -> None:
        addr = parseNameAddr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
        self.assertEqual(addr.tag, "1918181833n")
        addr = parseNameAddr(
            '"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33'
        )
        self.assertEqual(addr.params, {"newparam": "newvalue", "secondparam": None, "q": "0.33"})

    def test_quoted_display_with_escapes(self) -> None:
        self.assertEqual(parseNameAddr('"J Rosenberg \\\\\\"" <sip:j@example.com>').display, 'J Rosenberg \\"')
        self.assertEqual(parseNameAddr('"%Z%45" <sip:resource@example.com>').display, "%Z%45")
        self.assertEqual(parseNameAddr('"BEL:\\\x07 NUL:\\\x00" <sip:a@b>').display, "BEL:\x07 NUL:\x00")
        self.assertEqual(parseNameAddr('"a <b> c, d;e" <sip:a@b>').display, "a <b> c, d;e")
        self.assertEqual(parseNameAddr('"Bell, Alexander" <sip:a.g.bell@example.com>;tag=43').tag, "43")

    def test_non_ascii_display(self) -> None:
        self.assertEqual(parseNameAddr('"Jürgen" <sip:j@example.com>').display, "Jürgen")

    def test_quoted_param_value_kept_with_quotes(self) -> None:
        addr = parseNameAddr('<sip:a@b>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1')
        self.assertEqual(addr.params["+sip.instance"], '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"')
        self.assertEqual(addr.params["reg-id"], "1")

    def test_other_schemes(self) -> None:
        self.assertEqual(parseNameAddr("isbn:2983792873").uri.scheme, "isbn")
        self.assertEqual(parseNameAddr("<http://www.example.com>;tag=3234233").tag, "3234233")
        self.assertEqual(parseNameAddr("<tel:+1-201-555-0123>").uri.user, "+1-201-555-0123")

    def test_ipv6(self) -> None:
        addr = parseNameAddr('"Caller" <sip:caller@[2001:db8::1]:5060>;received=[2001:db8::2]')
        self.assertEqual((addr.uri.host, addr.uri.port), ("[2001:db8::1]", 5060))
        self.assertEqual(addr.params["received"], "[2001:db8::2]")

    def test_invalid(self) -> None:
        for text in [
            "",
            "   ",
            '"Mr. J. User <sip:j.user@example.com>',
            "Bell, Alexander <sip:a.g.bell@example.com>",
            '"Watson, Thomas" < sip:t.watson@example.org >',
            "<sip:alice@atlanta.com",
            "sip:alice@atlanta.com>",
            "<>",
            '"Alice" sip:alice@atlanta.com',
            "Alice sip:alice@atlanta.com",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "sip:a@b,sip:c@d",
            "sip:a @b",
            "<sip:a@b>;;",
            "<sip:a@b>;tag=",
            "<sip:a@b> x",
            "<sip:a@b>;tag=1 x",
            "<not a uri>",
        ]:
            self.assertRaises(ParseError, parseNameAddr, text)

    def test_str(self) -> None:
        uri = URI("sip", "alice", "atlanta.com")
        self.assertEqual(str(NameAddr(uri)), "<sip:alice@atlanta.com>")
        self.assertEqual(str(NameAddr(uri, "Alice", {"tag": "1"})), "Alice <sip:alice@atlanta.com>;tag=1")
        self.assertEqual(str(NameAddr(uri, "Alice L.", {"lr": None})), "Alice L. <sip:alice@atlanta.com>;lr")
        self.assertEqual(str(NameAddr(uri, 'Say "hi", Bob')), '"Say \\"hi\\", Bob" <sip:alice@atlanta.com>')

    def test_str_round_trips(self) -> None:
        for text in [
            '"J Rosenberg \\\\\\"" <sip:j@example.com>;tag=98asjd8',
            '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:a@b>',
            "Alice <sip:alice@atlanta.com;transport=tcp>;expires=60;q=0.5",
            '"Bell, Alexander" <sip:a.g.bell@example.com>;tag=43',
        ]:
            addr = parseNameAddr(text)
            again = parseNameAddr(str(addr))
            self.assertEqual((again.display, again.uri, again.params), (addr.display, addr.uri, addr.params), text)

    def test_tag(self) -> None:
        self.assertEqual(parseNameAddr("<sip:a@b>;TAG=x").tag, "x")
        self.assertIsNone(parseNameAddr("<sip:a@b>").tag)


class QuoteTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        for text in ["plain", 'with "quotes"', "back\\slash", "ctrl\x00\x07\x7f", "tab\tok", "ünï"]:
            self.assertEqual(unquote(quote(text)), text)

    def test_no_line_breaks(self) -> None:
        self.assertEqual(quote("a\r\nVia: evil"), '"a  Via: evil"')


class ViaTests(SynchronousTestCase):
    def test_typical(self) -> None:
        via = parseVia("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport")
        self.assertEqual((via.protocol, via.transport, via.host, via.port), ("SIP/2.0", "UDP", "127.0.0.1", 5061))
        self.assertEqual(via.params, {"branch": "z9hG4bK-1-0", "rport": None})
        self.assertEqual(via.branch, "z9hG4bK-1-0")
        self.assertEqual(via.sentBy(), "127.0.0.1:5061")

    def test_lws_around_slashes_and_colon(self) -> None:
        via = parseVia("SIP  /   2.0 /UDP    192.0.2.2 : 5060 ;  branch  =   z9hG4bK9ikj8  ")
        self.assertEqual((via.transport, via.host, via.port, via.branch), ("UDP", "192.0.2.2", 5060, "z9hG4bK9ikj8"))

    def test_rport_received_and_maddr(self) -> None:
        via = parseVia("SIP/2.0/TCP host.example.com;rport=5062;received=192.0.2.5;maddr=239.255.255.1;ttl=16")
        self.assertEqual(via.params, {"rport": "5062", "received": "192.0.2.5", "maddr": "239.255.255.1", "ttl": "16"})
        self.assertIsNone(via.branch)

    def test_rport_without_value(self) -> None:
        self.assertEqual(parseVia("SIP/2.0/UDP h;rport").params, {"rport": None})

    def test_ipv6(self) -> None:
        via = parseVia("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];branch=z9hG4bKas3-111")
        self.assertEqual((via.host, via.port), ("[2001:db8::9:1]", 6050))
        self.assertEqual(via.params["received"], "[2001:db8::9:255]")
        self.assertEqual(parseVia("SIP/2.0/UDP [::ffff:192.0.2.2]").host, "[::ffff:192.0.2.2]")

    def test_case(self) -> None:
        via = parseVia("sip/2.0/tls Host.Example.COM;Branch=AbC")
        self.assertEqual((via.protocol, via.transport, via.host), ("SIP/2.0", "TLS", "host.example.com"))
        self.assertEqual(via.branch, "AbC")

    def test_unknown_transport(self) -> None:
        self.assertEqual(parseVia("SIP/2.0/UNKNOWN t4.example.com").transport, "UNKNOWN")

    def test_str(self) -> None:
        via = Via("UDP", "127.0.0.1", 5061, {"branch": "z9hG4bKx", "rport": "5061", "received": "192.0.2.1"})
        self.assertEqual(str(via), "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKx;rport=5061;received=192.0.2.1")
        self.assertEqual(str(parseVia(str(via))), str(via))

    def test_invalid(self) -> None:
        for text in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/2.0 192.0.2.1",
            "SIP/2.0/UDP192.0.2.1",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP 192.0.2.15;",
            "SIP/2.0/UDP 192.0.2.15;branch=",
            "SIP/2.0/UDP host garbage",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP [zz::1]",
            "SIP/2.0/UDP 2001:db8::1",
            "SIP/2.0/UDP h\N{SUPERSCRIPT TWO}",
        ]:
            self.assertRaises(ParseError, parseVia, text)


class CSeqTests(SynchronousTestCase):
    def test_valid(self) -> None:
        self.assertEqual(parseCSeq("1 REGISTER"), (1, "REGISTER"))
        self.assertEqual(parseCSeq("0009  INVITE"), (9, "INVITE"))
        self.assertEqual(parseCSeq(" 2147483647\tRE%47IST%45R "), (2**31 - 1, "RE%47IST%45R"))
        self.assertEqual(parseCSeq("0000000000000001 ACK"), (1, "ACK"))

    def test_invalid(self) -> None:
        for text in [
            "",
            "1",
            "REGISTER",
            "1REGISTER",
            "-1 INVITE",
            "1 INVITE x",
            "1 IN VITE",
            "\N{SUPERSCRIPT TWO} INVITE",
        ]:
            self.assertRaises(ParseError, parseCSeq, text)

    def test_too_large(self) -> None:
        for text in ["2147483648 INVITE", "36893488147419103232 REGISTER", "9" * 5000 + " INVITE"]:
            error = self.assertRaises(ParseError, parseCSeq, text)
            self.assertEqual(error.reason, "CSeq number too large")


class DeltaSecondsTests(SynchronousTestCase):
    def test_values(self) -> None:
        self.assertEqual(parseDeltaSeconds("3600", 60), 3600)
        self.assertEqual(parseDeltaSeconds(" 0 ", 60), 0)
        self.assertEqual(parseDeltaSeconds("000120", 60), 120)

    def test_overflow_is_the_maximum(self) -> None:
        self.assertEqual(parseDeltaSeconds("4294967296", 60), 2**32 - 1)
        self.assertEqual(parseDeltaSeconds("1" + "0" * 100, 60), 2**32 - 1)
        self.assertEqual(parseDeltaSeconds("9" * 5000, 60), 2**32 - 1)

    def test_garbage_is_the_default(self) -> None:
        for text in ["", "-1", "1.5", "soon", "\N{SUPERSCRIPT TWO}", "\N{ARABIC-INDIC DIGIT ONE}"]:
            self.assertEqual(parseDeltaSeconds(text, 60), 60, text)


class HeaderParamsTests(SynchronousTestCase):
    def test_values(self) -> None:
        self.assertEqual(parseHeaderParams(""), {})
        self.assertEqual(parseHeaderParams("  "), {})
        self.assertEqual(parseHeaderParams(";tag=1"), {"tag": "1"})
        self.assertEqual(parseHeaderParams(" ; Expires = 60 ;lr; q=0.5 "), {"expires": "60", "lr": None, "q": "0.5"})
        self.assertEqual(parseHeaderParams(';a="x;y=z, \\"w\\""'), {"a": '"x;y=z, \\"w\\""'})
        self.assertEqual(parseHeaderParams(";received=2001:db8::9:255"), {"received": "2001:db8::9:255"})

    def test_invalid(self) -> None:
        for text in ["tag=1", ";", ";;", ";tag=", ";tag=a b", ';a="unterminated', ";a=<b>", ";=1", "; tag=1 x"]:
            self.assertRaises(ParseError, parseHeaderParams, text)


class SplitCommasTests(SynchronousTestCase):
    def test_plain(self) -> None:
        self.assertEqual(splitCommas("a"), ["a"])
        self.assertEqual(splitCommas(" a , b,c "), ["a", "b", "c"])

    def test_quotes_and_angles(self) -> None:
        self.assertEqual(
            splitCommas('"Bell, Alexander" <sip:a@b>;tag=1, <sip:c@d;x=1,2>, "a\\",b" <sip:e@f>'),
            ['"Bell, Alexander" <sip:a@b>;tag=1', "<sip:c@d;x=1,2>", '"a\\",b" <sip:e@f>'],
        )

    def test_empty_elements_kept(self) -> None:
        self.assertEqual(splitCommas("a,,b,"), ["a", "", "b", ""])
        self.assertEqual(splitCommas(";;,,;;,;"), [";;", "", ";;", ";"])

    def test_via_list(self) -> None:
        vias = splitCommas("SIP/2.0/UDP a;branch=1, SIP/2.0/TCP b;branch=2")
        self.assertEqual([parseVia(v).host for v in vias], ["a", "b"])


class ParseCacheTests(SynchronousTestCase):
    """
    Parsed From/To/Contact/Via values are kept by their text and shared:
    bounded in count and in value length, so hostile traffic cannot grow
    memory; and the element never changes a shared value.
    """

    def test_same_text_gives_the_same_parsed_value(self) -> None:
        value = "<sip:45675001@example.net>;tag=cache-1"
        self.assertIs(parseNameAddr(value), parseNameAddr(value))
        via = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-cache-1"
        self.assertIs(parseVia(via), parseVia(via))

    def test_cache_is_bounded(self) -> None:
        from aetasip.sip import headers

        for i in range(headers.CACHE_SIZE + 10):
            parseNameAddr(f"<sip:{i}@example.net>;tag=flood")
            parseVia(f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-flood-{i}")
        self.assertLessEqual(len(headers._nameAddrs), headers.CACHE_SIZE)
        self.assertLessEqual(len(headers._vias), headers.CACHE_SIZE)

    def test_long_values_are_not_kept(self) -> None:
        from aetasip.sip import headers

        value = f"<sip:{'9' * 300}@example.net>"
        self.assertEqual(parseNameAddr(value).uri.user, "9" * 300)
        self.assertNotIn(value, headers._nameAddrs)

    def test_malformed_values_still_raise_every_time(self) -> None:
        for _ in range(2):
            self.assertRaises(ParseError, parseNameAddr, '"unterminated <sip:a@b>')
            self.assertRaises(ParseError, parseVia, "SIP/2.0/UDP")

    def test_via_copy_leaves_the_shared_value_alone(self) -> None:
        text = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-copy;rport"
        copy = parseVia(text).copy()
        copy.params["received"] = "198.51.100.1"
        self.assertNotIn("received", parseVia(text).params)
        self.assertEqual(str(copy), "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-copy;rport;received=198.51.100.1")
