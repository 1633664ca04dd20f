"""
SDP for the relay (L{aetasip.relay.sdp}): descriptions of RFC 4317
(offer/answer examples) and of broadcast codecs read and written back
byte for byte, rewritten to point at the relay with nothing else touched,
and hostile bodies refused with a reason.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from aetasip.relay.sdp import SDPError, parse


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


# RFC 4317 2.1: audio and video 1, the offer and its answer.
OFFER_AV = crlf("""
v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 97
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
""")

ANSWER_AV = crlf("""
v=0
o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
s=
c=IN IP4 host.biloxi.example.com
t=0 0
m=audio 49174 RTP/AVP 0
a=rtpmap:0 PCMU/8000
m=video 0 RTP/AVP 32
a=rtpmap:32 MPV/90000
""")

# RFC 4317 5.1 (hold and resume): the held stream's offer, sendonly.
HOLD = crlf("""
v=0
o=alice 2890844526 2890844527 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 97
a=rtpmap:97 iLBC/8000
a=sendonly
""")

# An IPv6 offer with its RTCP address (RFC 3605) and ICE (RFC 8839).
IPV6_ICE = crlf("""
v=0
o=- 20518 0 IN IP6 2001:db8::1
s=-
t=0 0
a=ice-options:trickle
m=audio 5004 RTP/AVP 96 101
c=IN IP6 2001:db8::1
a=rtcp:5005 IN IP6 2001:db8::1
a=ice-ufrag:8hhY
a=ice-pwd:asd88fgpdd777uzjYhagZg
a=candidate:1 1 UDP 2130706431 2001:db8::1 5004 typ host
a=candidate:2 1 UDP 1694498815 2001:db8::9 45664 typ srflx raddr 2001:db8::1 rport 5004
a=end-of-candidates
a=rtpmap:96 opus/48000/2
a=fmtp:96 minptime=10;useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=sendrecv
""")

# A broadcast codec (EBU Tech 3368 attributes, LF line ends, odd lines kept).
CODEC = (
    b"v=0\n"
    b"o=ScoopTeam 3934 3935 IN IP4 10.1.2.3\n"
    b"s=AETA\n"
    b"c=IN IP4 10.1.2.3\n"
    b"t=0 0\n"
    b"m=audio 5004 RTP/AVP 96 97\n"
    b"a=rtpmap:96 L24/48000/2\n"
    b"a=rtpmap:97 MPA/48000/2\n"
    b"a=fmtp:97 bitrate=256000\n"
    b"a=ebuacip:jb 0\n"
    b"a=ebuacip:jbdef 0 fixed 200\n"
    b"a=ebuacip:plength 96 4\n"
    b"a=ebuacip:qosrec 46\n"
    b"a=x-vendor:anything at all = here\n"
    b"a=recvonly\n"
)


class RoundTripTests(SynchronousTestCase):
    def test_examples_come_back_byte_for_byte(self) -> None:
        for body in (OFFER_AV, ANSWER_AV, HOLD, IPV6_ICE, CODEC, CODEC.replace(b"\n", b"\r\n") + b"\r\n"):
            self.assertEqual(parse(body).toBytes(), body)

    def test_what_is_read(self) -> None:
        offer = parse(OFFER_AV)
        self.assertEqual(
            offer.rtpAddresses(), [("host.atlanta.example.com", 49170), ("host.atlanta.example.com", 51372)]
        )
        answer = parse(ANSWER_AV)
        self.assertEqual(answer.rtpAddresses(), [("host.biloxi.example.com", 49174), None])
        self.assertEqual(parse(HOLD).directionOf(parse(HOLD).media[0]), "sendonly")
        ipv6 = parse(IPV6_ICE)
        self.assertTrue(ipv6.ice)
        (media,) = ipv6.media
        self.assertEqual((media.rtcp, media.rtcpConnection and media.rtcpConnection.address), (5005, "2001:db8::1"))
        self.assertEqual(ipv6.rtpAddresses(), [("2001:db8::1", 5004)])


class RewriteTests(SynchronousTestCase):
    def test_offer_points_at_the_relay_and_nothing_else_changes(self) -> None:
        rewritten = parse(OFFER_AV).rewrite([("192.0.2.7", 55004), ("192.0.2.7", 55006)])
        self.assertEqual(
            rewritten,
            OFFER_AV.replace(b"c=IN IP4 host.atlanta.example.com", b"c=IN IP4 192.0.2.7")
            .replace(b"m=audio 49170", b"m=audio 55004")
            .replace(b"m=video 51372", b"m=video 55006"),
        )

    def test_a_rejected_stream_keeps_port_zero(self) -> None:
        answer = parse(ANSWER_AV)
        endpoints = [("192.0.2.7", 55010) if a is not None else None for a in answer.rtpAddresses()]
        rewritten = answer.rewrite(endpoints)
        self.assertIn(b"m=video 0 RTP/AVP 32\r\n", rewritten)
        self.assertIn(b"m=audio 55010 RTP/AVP 0\r\n", rewritten)
        self.assertIn(b"\r\nc=IN IP4 192.0.2.7\r\n", rewritten)
        self.assertEqual(parse(rewritten).toBytes(), rewritten)

    def test_ice_and_rtcp_in_ipv6(self) -> None:
        rewritten = parse(IPV6_ICE).rewrite([("2001:db8::99", 55020)])
        self.assertEqual(
            rewritten,
            crlf("""
v=0
o=- 20518 0 IN IP6 2001:db8::1
s=-
t=0 0
m=audio 55020 RTP/AVP 96 101
c=IN IP6 2001:db8::99
a=rtcp:55021 IN IP6 2001:db8::99
a=rtpmap:96 opus/48000/2
a=fmtp:96 minptime=10;useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=sendrecv
"""),
        )

    def test_ice_kept_when_asked(self) -> None:
        rewritten = parse(IPV6_ICE).rewrite([("2001:db8::99", 55020)], removeICE=False)
        self.assertEqual(rewritten.count(b"a=candidate:"), 2)

    def test_ipv6_leg_relayed_on_ipv4(self) -> None:
        rewritten = parse(IPV6_ICE).rewrite([("127.0.0.1", 55020)])
        self.assertIn(b"c=IN IP4 127.0.0.1\r\na=rtcp:55021 IN IP4 127.0.0.1\r\n", rewritten)

    def test_broadcast_codec_lines_untouched(self) -> None:
        rewritten = parse(CODEC).rewrite([("127.0.0.1", 55100)])
        self.assertEqual(
            rewritten, CODEC.replace(b"c=IN IP4 10.1.2.3", b"c=IN IP4 127.0.0.1").replace(b"5004", b"55100")
        )

    def test_hold_with_unspecified_address_stays_on_hold(self) -> None:
        held = HOLD.replace(b"c=IN IP4 host.atlanta.example.com", b"c=IN IP4 0.0.0.0")
        rewritten = parse(held).rewrite([("127.0.0.1", 55004)])
        self.assertIn(b"c=IN IP4 0.0.0.0\r\n", rewritten)
        self.assertIn(b"m=audio 55004 ", rewritten)
        self.assertIn(b"a=sendonly\r\n", rewritten)

    def test_one_stream_relayed_the_other_not(self) -> None:
        rewritten = parse(OFFER_AV).rewrite([("127.0.0.1", 55004), None])
        self.assertEqual(
            rewritten,
            OFFER_AV.replace(
                b"m=audio 49170 RTP/AVP 0 8 97\r\n", b"m=audio 55004 RTP/AVP 0 8 97\r\nc=IN IP4 127.0.0.1\r\n"
            ),
        )

    def test_port_count_kept(self) -> None:
        body = OFFER_AV.replace(b"m=audio 49170 ", b"m=audio 49170/2 ")
        self.assertIn(b"m=audio 55004/2 ", parse(body).rewrite([("127.0.0.1", 55004), None]))


class HostileTests(SynchronousTestCase):
    def refused(self, body: bytes, reason: str) -> None:
        with self.assertRaises(SDPError) as raised:
            parse(body)
        self.assertIn(reason, str(raised.exception))

    def test_hostile_bodies_get_a_reason(self) -> None:
        self.refused(b"", "empty")
        self.refused(b"hello world\r\n", "line 1 is not type=value")
        self.refused(b"o=x 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", "does not start with v=")
        self.refused(b"v=1\r\no=x 1 1 IN IP4 1.2.3.4\r\n", "version")
        self.refused(b"v=0\r\ns=-\r\n", "o=")
        self.refused(OFFER_AV.replace(b"c=IN IP4 host.atlanta.example.com\r\n", b""), "no c= line for the audio")
        self.refused(OFFER_AV.replace(b"m=audio 49170 ", b"m=audio 99999 "), "port out of range")
        self.refused(OFFER_AV.replace(b"m=audio 49170 RTP/AVP 0 8 97", b"m=audio"), "malformed m=")
        self.refused(OFFER_AV.replace(b"m=audio 49170 ", b"m=audio -5 "), "malformed m=")
        self.refused(OFFER_AV.replace(b"IN IP4 host.atlanta.example.com\r\nt", b"IN IP4 ../../etc\r\nt"), "bad address")
        self.refused(OFFER_AV.replace(b"c=IN IP4 host.atlanta.example.com", b"c=IN IP6 192.0.2.1"), "not IP6")
        self.refused(OFFER_AV.replace(b"c=IN IP4 host.atlanta.example.com", b"c=IN IP4 192.0.2.1/127"), "unicast")
        self.refused(OFFER_AV.replace(b"c=IN IP4 host.atlanta.example.com", b"c=IN ATM 1"), "malformed c=")
        self.refused(OFFER_AV + b"a=rtcp:abc\r\n", "malformed a=rtcp")
        self.refused(OFFER_AV + b"a=rtcp:70000\r\n", "malformed a=rtcp")
        self.refused(OFFER_AV + b"a=rtcp:5 IN IP4\r\n", "malformed a=rtcp")
        self.refused(OFFER_AV.replace(b"s=", b"s=\x00"), "NUL")
        self.refused(OFFER_AV.replace(b"m=audio 49170", "m=audío 49170".encode()), "non-ASCII")
        self.refused(OFFER_AV + b"x" * 70_000, "longer than")
        self.refused(OFFER_AV + b"m=audio 1 RTP/AVP 0\r\n" * 70, "more than 64 media")

    def test_odd_but_valid_bodies_are_read(self) -> None:
        # Non-ASCII in a session name or an attribute value is fine (RFC 8866 uses UTF-8).
        body = OFFER_AV.replace(b"s=\r\n", "s=Studio Genève\r\n".encode())
        self.assertEqual(parse(body).toBytes(), body)
        # A bare LF body with a trailing blank line, and a multicast address.
        body = OFFER_AV.replace(b"\r\n", b"\n").replace(b"host.atlanta.example.com\nt", b"233.252.0.1/127\nt") + b"\n"
        self.assertEqual(parse(body).toBytes(), body)
