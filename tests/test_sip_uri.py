"""
SIP, SIPS and TEL URIs: L{aetasip.sip.uri}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.errors import ParseError
from aetasip.sip.uri import URI, parseHost, parseURI, unescape


class ParseSIPURITests(SynchronousTestCase):
    def test_full(self) -> None:
        uri = parseURI("sips:alice:secret@Atlanta.Example.COM:5061;transport=tcp;lr?subject=project&priority=urgent")
        self.assertEqual(uri.scheme, "sips")
        self.assertEqual(uri.user, "alice")
        self.assertEqual(uri.password, "secret")
        self.assertEqual(uri.host, "atlanta.example.com")
        self.assertEqual(uri.port, 5061)
        self.assertEqual(uri.params, {"transport": "tcp", "lr": None})
        self.assertEqual(uri.headers, "subject=project&priority=urgent")

    def test_host_only(self) -> None:
        uri = parseURI("sip:127.0.0.1:5060")
        self.assertEqual((uri.user, uri.password, uri.host, uri.port), (None, None, "127.0.0.1", 5060))

    def test_scheme_is_case_insensitive(self) -> None:
        self.assertEqual(parseURI("SIP:bob@biloxi.com").scheme, "sip")
        self.assertEqual(parseURI("SiPs:bob@biloxi.com").scheme, "sips")

    def test_user_is_unescaped(self) -> None:
        self.assertEqual(parseURI("sip:%75se%72@example.com").user, "user")
        self.assertEqual(parseURI("sip:I%20have%20spaces@example.net").user, "I have spaces")
        self.assertEqual(parseURI("sip:null-%00-null@example.com").user, "null-\x00-null")

    def test_user_with_semicolon_and_escaped_at(self) -> None:
        # RFC 4475 semiuri: the '@' decides where the user part ends.
        uri = parseURI("sip:user;par=u%40example.net@example.com")
        self.assertEqual(uri.user, "user;par=u@example.net")
        self.assertEqual(uri.host, "example.com")
        self.assertEqual(uri.params, {})

    def test_telephone_user(self) -> None:
        uri = parseURI("sip:+1-212-555-1212:1234@gateway.com;user=phone")
        self.assertEqual(uri.user, "+1-212-555-1212")
        self.assertEqual(uri.password, "1234")
        self.assertEqual(uri.params, {"user": "phone"})

    def test_empty_password(self) -> None:
        self.assertEqual(parseURI("sip:alice:@example.com").password, "")

    def test_param_names_unescaped_values_kept(self) -> None:
        uri = parseURI("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
        self.assertEqual(uri.params, {"lr": None, "name": "v%61lue%25%34%31"})
        # Never recursively: value%41, not valueA.
        self.assertEqual(unescape(uri.params["name"] or ""), "value%41")

    def test_param_names_lower_cased_values_not(self) -> None:
        self.assertEqual(parseURI("sip:a@b;Transport=TCP").params, {"transport": "TCP"})

    def test_ipv6_reference(self) -> None:
        uri = parseURI("sip:[2001:db8::1]:5060")
        self.assertEqual((uri.host, uri.port), ("[2001:db8::1]", 5060))
        uri = parseURI("sip:alice@[2001:DB8::A]")
        self.assertEqual((uri.user, uri.host, uri.port), ("alice", "[2001:db8::a]", None))

    def test_ipv6_port_inside_brackets_is_address(self) -> None:
        # RFC 5118 4.3: the port must follow the ']'.
        uri = parseURI("sip:[2001:db8::10:5070]")
        self.assertEqual((uri.host, uri.port), ("[2001:db8::10:5070]", None))

    def test_ipv6_three_colons_tolerated(self) -> None:
        # RFC 5118 4.10: RFC 3261's ABNF let '::' before IPv4 be ':::'.
        self.assertEqual(parseURI("sip:user@[2001:db8:::192.0.2.1]").host, "[2001:db8::192.0.2.1]")

    def test_ipv4_mapped_ipv6_kept_as_written(self) -> None:
        self.assertEqual(parseURI("sip:ted@[::ffff:192.0.2.2]").host, "[::ffff:192.0.2.2]")

    def test_ipv6_with_params(self) -> None:
        uri = parseURI("sip:[::1]:5070;transport=udp")
        self.assertEqual((uri.host, uri.port, uri.params), ("[::1]", 5070, {"transport": "udp"}))

    def test_invalid(self) -> None:
        for text in [
            "",
            "sip",
            "sip:",
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:user@",
            "sip:@example.com",
            "sip:user@exa mple.com",
            "sip:user@example.com:",
            "sip:user@example.com:65536",
            "sip:user@example.com:5x",
            "sip:user@example.com:\N{SUPERSCRIPT TWO}",
            "sip:user@example.com;",
            "sip:user@example.com;;lr",
            "sip:user@example.com;a=",
            "sip:user@example.com?",
            "sip:2001:db8::10",
            "sip:[2001:db8::10",
            "sip:[2001:db8::10]x",
            "sip:[not:an:address]",
            "sip:[2001:db8:::1]",
            "sip:us\x00er@example.com",
            "sip:user@example.com\x7f",
            '"sip:user@example.com"',
            "1sip:user@example.com",
        ]:
            self.assertRaises(ParseError, parseURI, text)


class OtherSchemeTests(SynchronousTestCase):
    def test_tel(self) -> None:
        uri = parseURI("tel:+1-201-555-0123;phone-context=example.com")
        self.assertEqual((uri.scheme, uri.user), ("tel", "+1-201-555-0123"))
        self.assertEqual(uri.params, {"phone-context": "example.com"})
        self.assertEqual(uri.host, "")

    def test_tel_unescaped(self) -> None:
        self.assertEqual(parseURI("tel:%2B1234").user, "+1234")

    def test_tel_invalid(self) -> None:
        for text in ["tel:", "tel:;a=b", "tel:+1 234", "tel:+1234;"]:
            self.assertRaises(ParseError, parseURI, text)

    def test_unknown_scheme_is_opaque(self) -> None:
        uri = parseURI("nobodyKnowsThisScheme:totallyopaquecontent")
        self.assertEqual((uri.scheme, uri.opaque), ("nobodyknowsthisscheme", "totallyopaquecontent"))
        self.assertEqual(str(uri), "nobodyknowsthisscheme:totallyopaquecontent")

    def test_atypical_scheme(self) -> None:
        uri = parseURI("soap.beep://192.0.2.103:3002")
        self.assertEqual((uri.scheme, uri.opaque), ("soap.beep", "//192.0.2.103:3002"))


class ParseHostTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parseHost("Example.COM"), ("example.com", None))
        self.assertEqual(parseHost("192.0.2.1:5060"), ("192.0.2.1", 5060))
        self.assertEqual(parseHost("[2001:db8::1]:5061"), ("[2001:db8::1]", 5061))
        self.assertEqual(parseHost("[fe80::1%25eth0]"), ("[fe80::1%25eth0]", None))

    def test_invalid(self) -> None:
        for text in ["", ":5060", "host:", "host:99999", "ho st", "[::1", "[::1]5060", "[zz::1]"]:
            self.assertRaises(ParseError, parseHost, text)


class RoundTripTests(SynchronousTestCase):
    def test_str_round_trips(self) -> None:
        for text in [
            "sip:alice@atlanta.com",
            "sips:alice:secret@atlanta.com:5061;transport=tcp;lr?subject=project",
            "sip:[2001:db8::1]:5060;maddr=[2001:db8::2]",
            "sip:user;par=u%40example.net@example.com",
            "sip:null-%00-null@example.com",
            "sip:I%20have%20spaces@example.net",
            "sip:+1-212-555-1212:1234@gateway.com;user=phone",
            "tel:+1-201-555-0123;phone-context=example.com",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        ]:
            uri = parseURI(text)
            self.assertEqual(parseURI(str(uri)), uri, text)
            self.assertEqual(str(parseURI(str(uri))), str(uri), text)

    def test_escapes_what_needs_it(self) -> None:
        self.assertEqual(str(URI("sip", "a b@c", "example.com")), "sip:a%20b%40c@example.com")
        self.assertEqual(str(URI("sip", "\x00", "example.com")), "sip:%00@example.com")
        self.assertEqual(str(URI("sip", "ü", "example.com")), "sip:%C3%BC@example.com")
        self.assertEqual(str(URI("sip", None, "example.com", params={"a;b": None})), "sip:example.com;a%3Bb")

    def test_unescaped_form_is_canonical(self) -> None:
        self.assertEqual(str(parseURI("sip:%75se%72@example.com")), "sip:user@example.com")

    def test_copy_is_independent(self) -> None:
        uri = parseURI("sip:alice@example.com;lr")
        copy = uri.copy()
        copy.params["transport"] = "tcp"
        self.assertEqual(uri.params, {"lr": None})
        self.assertEqual(copy.host, "example.com")


class EquivalenceTests(SynchronousTestCase):
    """RFC 3261 19.1.4, with its own examples."""

    def assertEquivalent(self, a: str, b: str) -> None:
        self.assertEqual(parseURI(a), parseURI(b), (a, b))
        self.assertEqual(hash(parseURI(a)), hash(parseURI(b)), (a, b))

    def assertDifferent(self, a: str, b: str) -> None:
        self.assertNotEqual(parseURI(a), parseURI(b), (a, b))

    def test_rfc3261_equivalent(self) -> None:
        self.assertEquivalent("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp")
        self.assertEquivalent("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5")
        self.assertEquivalent("sip:carol@chicago.com", "sip:carol@chicago.com;security=on")
        self.assertEquivalent(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        )
        self.assertEquivalent(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        )

    def test_rfc3261_different(self) -> None:
        self.assertDifferent("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP")
        self.assertDifferent("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060")
        self.assertDifferent("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp")
        self.assertDifferent("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp")
        self.assertDifferent("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting")
        self.assertDifferent("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4")

    def test_params_in_both_must_match(self) -> None:
        self.assertDifferent("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;newparam=6")
        self.assertDifferent("sip:carol@chicago.com;maddr=a", "sip:carol@chicago.com")

    def test_scheme_and_password(self) -> None:
        self.assertDifferent("sip:alice@atlanta.com", "sips:alice@atlanta.com")
        self.assertDifferent("sip:alice:a@atlanta.com", "sip:alice:b@atlanta.com")

    def test_ipv6_by_address(self) -> None:
        self.assertEquivalent("sip:[2001:DB8::1]", "sip:[2001:db8:0:0::1]")
        self.assertEquivalent("sip:[2001:db8:::192.0.2.1]", "sip:[2001:db8::c000:201]")

    def test_tel_ignores_visual_separators(self) -> None:
        self.assertEquivalent("tel:+1-201-555-0123", "tel:+12015550123")
        self.assertDifferent("tel:+12015550123", "tel:+12015550124")
        self.assertDifferent("tel:7042;phone-context=example.com", "tel:7042;phone-context=example.org")

    def test_other_schemes_by_text(self) -> None:
        self.assertEquivalent("urn:service:sos", "URN:service:sos")
        self.assertDifferent("urn:service:sos", "urn:service:sos.fire")

    def test_not_a_uri(self) -> None:
        self.assertFalse(parseURI("sip:a@b") == "sip:a@b")
