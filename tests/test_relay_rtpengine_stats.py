"""
rtpengine's C{query}/C{delete} replies as L{aetasip.relay.stats.RelayStats}
(L{aetasip.relay.rtpenginestats.relayStats}), from reply bytes, and the ICE
lines taken out of SDP before rtpengine sees it.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from aetasip.relay.bencode import decode, encode
from aetasip.relay.rtpengine import withoutICE
from aetasip.relay.rtpenginestats import relayStats, rFactorFromMOS


def stream(port: int, packets: int, flag: bytes = b"RTP", ssrc: int | None = None, errors: int = 0) -> dict:
    item = {
        "local port": port,
        "endpoint": {"family": b"IPv4", "address": b"192.0.2.1" if port % 2 else b"127.0.0.1", "port": port + 1000},
        "advertised endpoint": {"family": b"IPv4", "address": b"127.0.0.9", "port": 4000},
        "last packet": 1796278718 if packets else 1796278700,
        "flags": [flag, b"filled"],
        "stats": {"packets": packets, "bytes": packets * 172, "errors": errors},
    }
    if ssrc is not None:
        item["SSRC"] = ssrc
    return item


def monologue(tag: bytes, rtp: dict, rtcp: dict, **extra: object) -> dict:
    return {
        "tag": tag,
        "created": 1796278700,
        "medias": [{"index": 1, "type": b"audio", "streams": [rtp, rtcp], "flags": [b"initialized"]}],
        **extra,
    }


# A reply as rtpengine writes it: "result" last, keys unsorted.
REPLY = (
    b"d4:SSRCd4:4369d15:cumulative lossi7e11:average MOSd3:MOSi41e6:jitteri3e11:packet lossi1e7:samplesi3eeee"
    b"4:tagsd"
    + b"2:ft"
    + encode(
        monologue(
            b"ft",
            stream(40046, 250, ssrc=4369, errors=2),
            stream(40047, 5, b"RTCP"),
            subscriptions=[{"tag": b"tt", "type": b"offer/answer"}],
        )
    )
    + b"2:tt"
    + encode(monologue(b"tt", stream(40028, 240, ssrc=8738), stream(40029, 0, b"RTCP"), **{"via-branch": b"b1"}))
    + b"2:zz"
    + encode(monologue(b"zz", stream(40030, 3), stream(40031, 0, b"RTCP"), **{"via-branch": b"b2"}))
    + b"e6:result2:oke"
)


class RelayStatsTests(TestCase):
    def test_query_reply(self) -> None:
        stats = relayStats("fr", decode(REPLY), "ft", "tt")
        self.assertEqual(stats.node, "fr")
        caller, callee = stats.caller, stats.callee
        self.assertEqual((caller.received.packets, caller.received.bytes), (250, 250 * 172))
        self.assertEqual(caller.latched, ("127.0.0.1", 41046))
        self.assertEqual(caller.dropped, 2)
        self.assertEqual(caller.received.lastPacketAt, 1796278718.0)
        self.assertEqual((caller.received.lost, caller.received.jitter, caller.received.mos), (7, 3.0, 4.1))
        self.assertAlmostEqual(caller.received.rFactor, 82.1, delta=0.1)  # type: ignore[arg-type]
        self.assertEqual((callee.received.packets, callee.received.mos, callee.received.rFactor), (240, None, None))
        # No RTCP report named the callee's stream: rtpengine did not measure its loss and jitter.
        self.assertEqual((callee.received.lost, callee.received.jitter), (None, None))
        # What the relay sent to a leg is what it received from the other.
        self.assertEqual((caller.sent.packets, caller.sent.bytes), (240, 240 * 172))
        self.assertEqual(callee.sent.packets, 250)

    def test_callee_unknown_is_the_callers_partner(self) -> None:
        stats = relayStats("fr", decode(REPLY), "ft", None)
        self.assertEqual(stats.callee.received.packets, 240)

    def test_no_packets_no_latch(self) -> None:
        body = decode(REPLY)
        body["tags"]["tt"]["medias"][0]["streams"][0]["stats"]["packets"] = 0
        stats = relayStats("fr", body, "ft", "tt")
        self.assertEqual((stats.callee.latched, stats.callee.received.lastPacketAt), (None, None))

    def test_rtcp_alone_is_a_sign_of_life(self) -> None:
        """A held party sending RTCP only: its last packet counts for the media timeout, as on the built-in node."""
        body = decode(REPLY)
        streams = body["tags"]["ft"]["medias"][0]["streams"]
        streams[0]["stats"]["packets"] = 0
        streams[0]["last packet"] = 1796278700
        streams[1]["last packet"] = 1796278790
        stats = relayStats("fr", body, "ft", "tt")
        self.assertEqual((stats.caller.received.packets, stats.caller.received.lastPacketAt), (0, 1796278790.0))
        # An RTCP stream that never got a packet says nothing.
        streams[1]["stats"]["packets"] = 0
        self.assertIsNone(relayStats("fr", body, "ft", "tt").caller.received.lastPacketAt)

    def test_unknown_tags_give_empty_legs(self) -> None:
        stats = relayStats("fr", decode(REPLY), "nobody", None)
        self.assertEqual((stats.caller.received.packets, stats.callee.received.packets), (0, 0))

    def test_odd_shapes_do_not_break(self) -> None:
        for body in (
            {},
            {"tags": b"x"},
            {"tags": {"a": b"x", "b": {"tag": 5, "medias": b"no"}}},
            {"tags": {"ft": {"tag": b"ft", "medias": [{"streams": [{"flags": b"RTP", "stats": []}, 7]}]}}},
            {"SSRC": [], "tags": {"ft": {"tag": b"ft", "medias": [{"streams": [{"flags": [b"RTP"], "SSRC": b"1"}]}]}}},
        ):
            with self.subTest(body=body):
                stats = relayStats("fr", body, "ft", "tt")
                self.assertEqual(stats.caller.received.packets, 0)


class RFactorTests(TestCase):
    def test_inverse_of_the_e_model(self) -> None:
        for r in (50.0, 70.0, 80.0, 93.2):
            mos = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
            self.assertAlmostEqual(rFactorFromMOS(mos), r, delta=0.1)
        self.assertEqual(rFactorFromMOS(1.0), 0.0)
        self.assertLessEqual(rFactorFromMOS(5.0), 100.0)


class WithoutICETests(TestCase):
    def test_ice_lines_go_the_rest_stays(self) -> None:
        sdp = (
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\na=ice-lite\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 8\r\na=ICE-UFRAG:x\r\na=ice-pwd:y\r\n"
            b"a=candidate:1 1 UDP 1 10.0.0.9 4000 typ host\r\na=remote-candidates:1 10.0.0.9 4000\r\n"
            b"a=end-of-candidates\r\na=ebuacip:jb 0\r\na=sendrecv\r\n"
        )
        self.assertEqual(
            withoutICE(sdp),
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 8\r\na=ebuacip:jb 0\r\na=sendrecv\r\n",
        )
        plain = b"v=0\na=sendrecv\n"
        self.assertIs(withoutICE(plain), plain)
