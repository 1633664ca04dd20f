"""
The test line's parts, sans-IO: RTP packets, the programme, the encoders,
the offer/answer, the media session and the answering agent, driven with
bytes and a L{Clock}.
"""

from __future__ import annotations

import itertools
import os
import wave

import av
import numpy as np
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from aetasip import config
from aetasip.relay import sdp
from aetasip.sip.message import Request, Response
from aetasip.sip.parser import parse
from aetasip.testline import audiofile, offer, rtp
from aetasip.testline.agent import LineAgent
from aetasip.testline.audiofile import FileProgramme, ProgrammeFileError
from aetasip.testline.codecs import G722, L16, MPA, OPUS, OPUS_MONO, PCMA, PCMU, Encoder
from aetasip.testline.media import MediaSession
from aetasip.testline.programme import LEVEL_DBFS, TONE_SECONDS, Programme
from aetasip.testline.session import ECHO, PROGRAMME, LineSettings
from aetasip.testline.settings import lineSettings
from tests.audio import decode, dominantFrequency, levelDBFS


def assertNear(test: TestCase, value: float, expected: float, tolerance: float) -> None:
    """C{value} is within C{tolerance} of C{expected} (trial's assertAlmostEqual has no delta)."""
    test.assertTrue(abs(value - expected) <= tolerance, f"{value} is not {expected} +/- {tolerance}")


def offerSDP(formats: str, *extra: str, port: int = 4000, direction: str = "") -> bytes:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
    ]
    lines += list(extra)
    if direction:
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


class RTPTests(TestCase):
    def test_packets_numbered_from_random_start(self) -> None:
        packetiser = rtp.Packetiser(8, ssrc=0x01020304, sequence=0xFFFF, timestamp=0xFFFFFFF0)
        first = rtp.parse(packetiser.packet(b"a" * 160, 160))
        second = rtp.parse(packetiser.packet(b"b" * 160, 160))
        self.assertEqual(
            (first.payloadType, first.marker, first.sequence, first.timestamp), (8, True, 0xFFFF, 0xFFFFFFF0)
        )
        self.assertEqual((second.marker, second.sequence, second.timestamp), (False, 0, 0x90))
        self.assertEqual((second.ssrc, second.payload), (0x01020304, b"b" * 160))

    def test_malformed_packets_refused(self) -> None:
        for datagram in (b"", b"\x80\x00", b"\x40" + b"\x00" * 11, b"\x8f" + b"\x00" * 11, b"\x90" + b"\x00" * 13):
            self.assertRaises(rtp.NotRTP, rtp.parse, datagram)

    def test_rtcp_told_apart(self) -> None:
        self.assertTrue(rtp.isRTCP(b"\x80\xc8" + b"\x00" * 26))
        self.assertFalse(rtp.isRTCP(rtp.Packetiser(0).packet(b"x", 1)))


class ProgrammeTests(TestCase):
    def test_reference_tone(self) -> None:
        samples = Programme(8000).read(8000)[:, 0] / 32768
        assertNear(self, dominantFrequency(samples, 8000), 1000, 2)
        assertNear(self, levelDBFS(samples), LEVEL_DBFS, 0.1)

    def test_identification_interrupts_left_once_right_twice(self) -> None:
        programme = Programme(48000, 2)
        programme.read(int(TONE_SECONDS * 48000))
        ident = programme.read(48000)  # the first second of the sequence
        quarters = [np.abs(ident[i * 12000 : (i + 1) * 12000]).max(axis=0) for i in range(4)]
        self.assertEqual([bool(q[0]) for q in quarters], [False, True, True, True])
        self.assertEqual([bool(q[1]) for q in quarters], [False, True, False, True])

    def test_continuous_across_reads(self) -> None:
        one = Programme(8000)
        pieces = np.concatenate([one.read(160) for _ in range(100)])
        self.assertTrue(np.array_equal(pieces, Programme(8000).read(16000)))


class EncoderTests(TestCase):
    def test_g711_round_trip(self) -> None:
        for fmt in (PCMA, PCMU):
            encoder = Encoder(fmt)
            programme = Programme(8000)
            payloads = [encoder.encode(programme.read(encoder.framesPerPacket)) for _ in range(50)]
            self.assertEqual({len(p) for p in payloads}, {160})
            samples = decode(fmt.name, 8000, payloads)
            assertNear(self, dominantFrequency(samples, 8000), 1000, 10)
            assertNear(self, levelDBFS(samples), LEVEL_DBFS, 0.3)

    def test_wideband_and_high_quality_formats(self) -> None:
        for fmt in (G722, *L16, OPUS, MPA):
            encoder = Encoder(fmt)
            programme = Programme(fmt.sampleRate, fmt.channels)
            payloads = [encoder.encode(programme.read(encoder.framesPerPacket)) for _ in range(2000 // fmt.ptime)]
            if fmt.name == "L16":
                self.assertEqual({len(p) for p in payloads}, {fmt.sampleRate * fmt.channels * 2 * fmt.ptime // 1000})
                self.assertLessEqual(len(payloads[0]), 1280)  # within an Ethernet MTU with its headers
            samples = decode(fmt.name, fmt.sampleRate, payloads, fmt.channels)
            tone = samples[len(samples) // 4 :]  # past the codec's start-up
            assertNear(self, dominantFrequency(tone, fmt.sampleRate), 1000, 5)
            assertNear(self, levelDBFS(tone), LEVEL_DBFS, 0.5)


class OpusChannelTests(TestCase):
    def test_mono_and_stereo_packets(self) -> None:
        """The TOC byte's s bit (RFC 6716 3.1) says what was encoded."""
        for fmt, stereo in ((OPUS, True), (OPUS_MONO, False)):
            encoder = Encoder(fmt)
            programme = Programme(fmt.sampleRate, fmt.audioChannels)
            payloads = [encoder.encode(programme.read(encoder.framesPerPacket)) for _ in range(10)]
            tocs = {bool(p[0] & 0x04) for p in payloads if p}
            self.assertEqual(tocs, {stereo}, fmt)


class MpegChannelTests(TestCase):
    def test_mono_on_an_explicit_one_channel_offer_else_stereo(self) -> None:
        """
        MPA/90000/1 gets single-channel MPEG-1 Layer II frames, as decoded
        (and as the frame header's mode says); MPA/90000/2, MPA/90000 and
        the static type 14 without rtpmap get stereo.
        """
        cases = (
            (offerSDP("96 14", "a=rtpmap:96 MPA/90000/1"), 1, b"a=rtpmap:96 MPA/90000/1\r\n"),
            (offerSDP("96 14", "a=rtpmap:96 MPA/90000/2"), 2, b"a=rtpmap:96 MPA/90000\r\n"),
            (offerSDP("96 14", "a=rtpmap:96 MPA/90000"), 2, b"a=rtpmap:96 MPA/90000\r\n"),
            (offerSDP("14"), 2, b"a=rtpmap:14 MPA/90000\r\n"),
        )
        for body, channels, rtpmap in cases:
            choice = offer.choose(body)
            self.assertEqual(choice.format.audioChannels, channels, body)
            self.assertIn(rtpmap, offer.answer(body, choice, "127.0.0.1", 5000))
            encoder = Encoder(choice.format)
            programme = Programme(48000, choice.format.audioChannels)
            payloads = [encoder.encode(programme.read(encoder.framesPerPacket)) for _ in range(20)]
            decoder = av.CodecContext.create("mp2", "r")
            decoded = {
                len(frame.layout.channels)
                for payload in payloads
                if payload
                for frame in decoder.decode(av.Packet(payload[4:]))  # type: ignore[attr-defined]
            }
            self.assertEqual(decoded, {channels}, body)
            # The frame header's mode (ISO 11172-3 2.4.2.3): 3 is single channel.
            self.assertEqual({(p[7] >> 6) == 3 for p in payloads if p}, {channels == 1})
            samples = decode("MPA", 48000, payloads, channels)[48000 // 4 :]
            assertNear(self, dominantFrequency(samples, 48000), 1000, 5)


class OfferTests(TestCase):
    def test_caller_order_of_preference(self) -> None:
        self.assertEqual(offer.choose(offerSDP("8 0")).format, PCMA)
        self.assertEqual(offer.choose(offerSDP("0 8")).format, PCMU)
        self.assertEqual(offer.choose(offerSDP("18 8 0")).format, PCMA)
        self.assertEqual(offer.choose(offerSDP("9 8 0")).format, G722)
        choice = offer.choose(offerSDP("96 8", "a=rtpmap:96 L16/48000/2"))
        self.assertEqual((choice.format.name, choice.format.clockRate, choice.format.channels), ("L16", 48000, 2))
        self.assertEqual(offer.choose(offerSDP("111 8", "a=rtpmap:111 opus/48000/2")).format, OPUS_MONO)
        self.assertEqual(offer.choose(offerSDP("14 8")).format, MPA)
        self.assertEqual(offer.choose(offerSDP("96", "a=rtpmap:96 MPA/90000/2")).format, MPA)

    def test_dynamic_type_by_rtpmap(self) -> None:
        choice = offer.choose(offerSDP("97 101", "a=rtpmap:97 pcmu/8000", "a=rtpmap:101 telephone-event/8000"))
        self.assertEqual((choice.format, choice.payloadType), (PCMU, 97))

    def test_nothing_in_common(self) -> None:
        self.assertRaises(offer.NotAcceptable, offer.choose, offerSDP("18 97", "a=rtpmap:97 iLBC/8000"))
        self.assertRaises(offer.NotAcceptable, offer.choose, offerSDP("96", "a=rtpmap:96 L16/44100/2"))
        self.assertRaises(offer.NotAcceptable, offer.choose, offerSDP("96", "a=rtpmap:96 PCMA/16000"))
        self.assertRaises(sdp.SDPError, offer.choose, b"nonsense")

    def test_ebuacip_lines_accepted(self) -> None:
        choice = offer.choose(offerSDP("8", "a=ebuacip:jb 0", "a=ebuacip:plength 8 20"))
        self.assertEqual(choice.format, PCMA)

    def test_answer_declines_other_streams(self) -> None:
        body = offerSDP("8") + b"m=video 5000 RTP/AVP 96\r\n"
        choice = offer.choose(body, [PCMA])
        answered = sdp.parse(offer.answer(body, choice, "127.0.0.1", 6000))
        self.assertEqual(
            [(m.kind, m.port, m.formats) for m in answered.media], [("audio", 6000, "8"), ("video", 0, "96")]
        )
        self.assertEqual(answered.connection.address, "127.0.0.1")

    def test_answer_carries_ptime_and_fmtp(self) -> None:
        body = offerSDP("111", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1")
        answered = offer.answer(body, offer.choose(body), "127.0.0.1", 6000).decode()
        self.assertIn("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 sprop-stereo=0\r\na=ptime:20\r\n", answered)
        body = offerSDP("111", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1;stereo=1")
        answered = offer.answer(body, offer.choose(body), "127.0.0.1", 6000).decode()
        self.assertIn("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 sprop-stereo=1\r\na=ptime:20\r\n", answered)
        body = offerSDP("97", "a=rtpmap:97 L16/32000")
        self.assertIn(
            "a=rtpmap:97 L16/32000\r\na=ptime:5\r\n", offer.answer(body, offer.choose(body), "127.0.0.1", 6000).decode()
        )

    def test_opus_stereo_only_when_the_receiver_prefers_it(self) -> None:
        """RFC 7587 7: stereo=1 says the receiver prefers stereo; absent or 0, mono."""
        for fmtp, expected in (
            (None, OPUS_MONO),
            ("stereo=0; sprop-stereo=1", OPUS_MONO),
            ("sprop-stereo=1", OPUS_MONO),
            ("maxaveragebitrate=128000; stereo=1", OPUS),
            ("stereo = 1;useinbandfec=1", OPUS),
        ):
            extra = ["a=rtpmap:111 opus/48000/2"] + ([f"a=fmtp:111 {fmtp}"] if fmtp else [])
            with self.subTest(fmtp=fmtp):
                self.assertEqual(offer.choose(offerSDP("111", *extra)).format, expected)
        self.assertEqual((OPUS.audioChannels, OPUS_MONO.audioChannels), (2, 1))
        self.assertEqual(OPUS_MONO.rtpmap(), "opus/48000/2")

    def test_our_offer_and_its_answer(self) -> None:
        made = sdp.parse(offer.makeOffer("127.0.0.1", 6000, 77, 3, first=0))
        (media,) = made.media
        self.assertEqual((media.port, media.formats.split()[:3]), (6000, ["0", "8", "9"]))
        # The answer may leave out the rtpmap of a payload type of the offer.
        choice = offer.choose(offerSDP("98"), known=offer.OFFERED_MAPS)
        self.assertEqual((choice.format, choice.payloadType), (L16[2], 98))
        answer = offerSDP("111", "a=rtpmap:111 opus/48000/2", "a=fmtp:111 stereo=1")
        self.assertEqual(offer.choose(answer, known=offer.OFFERED_MAPS).format, OPUS)

    def test_old_style_hold_receives_nothing(self) -> None:
        held = offerSDP("8").replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")
        self.assertEqual(offer.choose(held).direction, "recvonly")

    def test_direction_mirrored(self) -> None:
        self.assertEqual(offer.choose(offerSDP("8", direction="recvonly")).direction, "sendonly")
        self.assertEqual(offer.choose(offerSDP("8", direction="sendonly")).direction, "recvonly")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def __call__(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((data, address))


class MediaSessionTests(TestCase):
    def session(self, echo: bool = False, timeout: float = 10.0) -> tuple[MediaSession, Clock, Recorder, list[str]]:
        clock, out, timeouts = Clock(), Recorder(), []
        encoder = None if echo else Encoder(PCMA)
        programme = None if echo else Programme(8000)
        session = MediaSession(
            clock, out, ("192.0.2.1", 4000), 8, encoder, programme, timeout, lambda: timeouts.append("timeout")
        )
        return session, clock, out, timeouts

    def test_one_packet_per_20ms_of_programme(self) -> None:
        session, clock, out, _ = self.session()
        session.start()
        for _ in range(100):
            clock.advance(0.02)
        packets = [rtp.parse(d) for d, _ in out.sent]
        self.assertEqual(len(packets), 101)
        self.assertEqual({a for _, a in out.sent}, {("192.0.2.1", 4000)})
        steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)}
        self.assertEqual(steps, {160})
        samples = decode("PCMA", 8000, [p.payload for p in packets])
        assertNear(self, dominantFrequency(samples, 8000), 1000, 10)

    def test_mpeg_audio_packets(self) -> None:
        clock, out = Clock(), Recorder()
        session = MediaSession(clock, out, ("192.0.2.1", 4000), 14, Encoder(MPA), Programme(48000, 2), 0, lambda: None)
        session.start()
        for _ in range(41):
            clock.advance(0.024)
        packets = [rtp.parse(d) for d, _ in out.sent]
        self.assertEqual(len(packets), 42)  # one 1152-sample frame every 24 ms
        steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)}
        self.assertEqual(steps, {2160})  # 24 ms on the 90 kHz clock
        self.assertEqual({p.payload[:4] for p in packets}, {b"\x00\x00\x00\x00"})
        self.assertEqual({p.payload[4:6] for p in packets}, {b"\xff\xfd"})  # MPEG-1 Layer II frame sync, no CRC

    def test_late_reactor_catches_up_with_a_bound(self) -> None:
        session, clock, out, _ = self.session(timeout=0)
        session.start()
        clock.advance(10)  # the loop ran once more, 10 s late: 500 packet times went by
        packets = [rtp.parse(d) for d, _ in out.sent]
        self.assertEqual(len(packets), 1 + 25)
        # Timestamps stay true to time: the last is 10 s after the first.
        self.assertEqual((packets[-1].timestamp - packets[0].timestamp) & 0xFFFFFFFF, 500 * 160)

    def test_symmetric_rtp_latches_on_source(self) -> None:
        session, clock, out, _ = self.session()
        session.start()
        caller = rtp.Packetiser(8)
        session.received(b"garbage", ("203.0.113.9", 1))
        session.received(caller.packet(b"\xd5" * 160, 160), ("198.51.100.7", 40000))
        out.sent.clear()
        clock.advance(0.02)
        self.assertEqual([a for _, a in out.sent], [("198.51.100.7", 40000)])

    def test_media_timeout(self) -> None:
        session, clock, out, timeouts = self.session(timeout=5)
        session.start()
        caller = rtp.Packetiser(8)
        for _ in range(200):  # 4 s of the caller's audio
            session.received(caller.packet(b"\xd5" * 160, 160), ("127.0.0.1", 40000))
            clock.advance(0.02)
        self.assertEqual(timeouts, [])
        for _ in range(249):
            clock.advance(0.02)
        self.assertEqual(timeouts, [])
        clock.advance(0.02)
        clock.advance(0.02)
        self.assertEqual(timeouts, ["timeout"])
        sent = len(out.sent)
        clock.advance(1)
        self.assertEqual(len(out.sent), sent)

    def test_echo_returns_callers_packets(self) -> None:
        session, clock, out, _ = self.session(echo=True)
        session.start()
        clock.advance(0.1)
        self.assertEqual(out.sent, [])
        caller = rtp.Packetiser(8, ssrc=1234)
        sent = caller.packet(b"\x01\x02" * 80, 160)
        session.received(sent, ("127.0.0.1", 40000))
        ((back, address),) = out.sent
        self.assertEqual(address, ("127.0.0.1", 40000))
        parsed, original = rtp.parse(back), rtp.parse(sent)
        self.assertEqual(
            (parsed.payload, parsed.sequence, parsed.timestamp),
            (original.payload, original.sequence, original.timestamp),
        )
        self.assertNotEqual(parsed.ssrc, 1234)


PROXY = ("127.0.0.1", 5060)


def invite(body: bytes, number: str = "15000", branch: str = "z9hG4bK-1", callID: str = "call-1") -> bytes:
    headers = [
        f"INVITE sip:{number}@127.0.0.1:7000 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport",
        "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-caller;received=127.0.0.1;rport=40000",
        "Record-Route: <sip:127.0.0.1:5060;lr;dlg=token>",
        "Max-Forwards: 69",
        "From: <sip:45675001@127.0.0.1>;tag=caller-tag",
        f"To: <sip:{number}@127.0.0.1>",
        f"Call-ID: {callID}",
        "CSeq: 1 INVITE",
        "Contact: <sip:45675001@127.0.0.1:40000>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(headers).encode() + body


def inDialog(method: str, toTag: str, cseq: int = 2, callID: str = "call-1", branch: str = "z9hG4bK-2") -> bytes:
    headers = [
        f"{method} sip:15000@127.0.0.1:7000 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport",
        "Max-Forwards: 69",
        "From: <sip:45675001@127.0.0.1>;tag=caller-tag",
        f"To: <sip:15000@127.0.0.1>;tag={toTag}",
        f"Call-ID: {callID}",
        f"CSeq: {cseq if method != 'ACK' else 1} {method}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(headers).encode()


class FakePort:
    def __init__(self, number: int, receive) -> None:  # type: ignore[no-untyped-def]
        self.port = number
        self.receive = receive
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def send(self, datagram: bytes, address: tuple[str, int]) -> None:
        self.sent.append((datagram, address))

    def close(self) -> None:
        self.closed = True


class AgentTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.out = Recorder()
        self.ports: list[FakePort] = []
        self.settings = LineSettings({"15000": PROGRAMME, "15001": ECHO}, 1.0, 600.0, 10.0, 2, "127.0.0.1")
        self.agent = LineAgent(self.clock, self.out, self.openMedia, self.settings, "127.0.0.1:7000")

    def openMedia(self, receive):  # type: ignore[no-untyped-def]
        port = FakePort(50000 + len(self.ports) * 2, receive)
        self.ports.append(port)
        return port

    def messages(self) -> list[Response | Request]:
        found = [parse(data) for data, _ in self.out.sent]
        self.assertEqual({address for _, address in self.out.sent} - {PROXY}, set())
        self.out.sent.clear()
        return found

    def answered(self, body: bytes | None = None, number: str = "15000") -> Response:
        self.agent.datagramReceived(invite(offerSDP("8 0", port=4000) if body is None else body, number), PROXY)
        (ringing,) = self.messages()
        assert isinstance(ringing, Response)
        self.assertEqual(ringing.code, 180)
        self.clock.advance(1.0)
        (ok,) = self.messages()
        assert isinstance(ok, Response)
        return ok

    def test_rings_then_answers_in_callers_codec(self) -> None:
        ok = self.answered(offerSDP("0 8"))
        self.assertEqual(ok.code, 200)
        self.assertEqual(ok.getAll("record-route"), ["<sip:127.0.0.1:5060;lr;dlg=token>"])
        self.assertEqual(ok.get("contact"), "<sip:15000@127.0.0.1:7000>")
        answer = sdp.parse(ok.body)
        self.assertEqual([(m.port, m.formats) for m in answer.media], [(50000, "0")])
        # The programme flows to the address of the offer until the caller's packets come.
        self.clock.advance(0.1)
        packets = self.ports[0].sent
        self.assertTrue(packets)
        self.assertEqual({address for _, address in packets}, {("127.0.0.1", 4000)})
        self.assertEqual({rtp.parse(d).payloadType for d, _ in packets}, {0})

    def test_nothing_to_an_sdp_address_not_the_callers_until_it_sends(self) -> None:
        """The caller (signalling from 127.0.0.1) names 192.0.2.9 in its SDP: behind NAT, or someone else."""
        body = offerSDP("8").replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 192.0.2.9")
        self.agent.datagramReceived(invite(body), PROXY)
        self.clock.advance(1.0)
        self.clock.advance(0.5)
        self.assertEqual(self.ports[0].sent, [])
        self.ports[0].receive(rtp.Packetiser(8).packet(b"\xd5" * 160, 160), ("127.0.0.1", 61000))
        self.clock.advance(0.02)
        packets = self.ports[0].sent
        self.assertEqual({a for _, a in packets}, {("127.0.0.1", 61000)})
        # In time: the programme ran on while nobody heard it.
        self.assertEqual(len(packets), 1)

    def test_unknown_codecs_488(self) -> None:
        self.agent.datagramReceived(invite(offerSDP("96", "a=rtpmap:96 iLBC/8000")), PROXY)
        (response,) = self.messages()
        assert isinstance(response, Response)
        self.assertEqual(response.code, 488)
        self.assertEqual(self.ports, [])

    def test_bad_sdp_400(self) -> None:
        self.agent.datagramReceived(invite(b"v=0\r\nnonsense\r\n"), PROXY)
        self.assertEqual([r.code for r in self.messages()], [400])  # type: ignore[union-attr]

    def ack(self, tag: str, body: bytes = b"", cseq: int = 1) -> None:
        self.agent.datagramReceived(dialogRequest("ACK", tag, cseq, body), PROXY)

    def test_late_offer_the_answer_in_the_ack(self) -> None:
        """An INVITE without SDP: the line offers in its 2xx, and sends once the ACK answered."""
        ok = self.answered(b"")
        self.assertEqual(ok.code, 200)
        offered = sdp.parse(ok.body)
        self.assertEqual(offered.media[0].formats.split(), ["8", "0", "9", "96", "97", "98", "99", "111", "14"])
        self.clock.advance(0.5)
        self.assertEqual(self.ports[0].sent, [])
        tag = ok.toAddr.tag
        assert tag is not None
        self.ack(tag, offerSDP("98", port=4010))  # L16/32000/2, its rtpmap left out
        self.clock.advance(0.1)
        packets = self.ports[0].sent
        self.assertTrue(packets)
        self.assertEqual({address for _, address in packets}, {("127.0.0.1", 4010)})
        self.assertEqual({rtp.parse(d).payloadType for d, _ in packets}, {98})
        self.assertEqual({len(rtp.parse(d).payload) for d, _ in packets}, {32000 * 2 * 2 * 5 // 1000})
        self.messages()
        self.assertEqual(self.agent.sessions[("call-1", "caller-tag")].state, "confirmed")

    def lateOfferAnsweredWith(self, body: bytes, cause: str) -> None:
        ok = self.answered(b"")
        tag = ok.toAddr.tag
        assert tag is not None
        self.ack(tag, body)
        (bye,) = self.messages()
        assert isinstance(bye, Request)
        self.assertEqual(bye.method, "BYE")
        self.assertIn(cause, bye.get("reason") or "")
        self.assertEqual(self.agent.sessions, {})

    def test_late_offer_without_an_answer_ends_with_bye(self) -> None:
        self.lateOfferAnsweredWith(b"", "no SDP answer")

    def test_late_offer_answered_with_nothing_acceptable_ends_with_bye(self) -> None:
        self.lateOfferAnsweredWith(offerSDP("18"), "answer not acceptable")

    def reinvite(self, tag: str, body: bytes, cseq: int = 2) -> Response:
        self.messages()
        self.agent.datagramReceived(dialogRequest("INVITE", tag, cseq, body), PROXY)
        (response,) = self.messages()
        assert isinstance(response, Response)
        return response

    def sentSince(self, count: int) -> list[tuple[bytes, tuple[str, int]]]:
        return self.ports[0].sent[count:]

    def test_reinvite_hold_and_resume(self) -> None:
        tag = self.confirmed()
        first = originOf(self.agent.sessions[("call-1", "caller-tag")].answerSDP)
        for direction, answered, sends in (
            ("sendonly", "recvonly", False),
            ("inactive", "inactive", False),
            ("sendrecv", "sendrecv", True),
        ):
            with self.subTest(direction=direction):
                cseq = {"sendonly": 2, "inactive": 3, "sendrecv": 4}[direction]
                ok = self.reinvite(tag, offerSDP("8 0", direction=direction), cseq)
                self.assertEqual(ok.code, 200)
                answer = sdp.parse(ok.body)
                self.assertEqual(answer.directionOf(answer.media[0]), answered)
                # The same session, a new version (RFC 3264 8).
                self.assertEqual(originOf(ok.body)[1], first[1])
                self.assertEqual(int(originOf(ok.body)[2]), cseq)
                self.ack(tag, cseq=cseq)
                self.ports[0].receive(rtp.Packetiser(8).packet(b"\xd5" * 160, 160), ("127.0.0.1", 4000))
                before = len(self.ports[0].sent)
                self.clock.advance(0.2)
                self.assertEqual(bool(self.sentSince(before)), sends)

    def test_a_held_call_is_not_a_silent_one(self) -> None:
        """Held with a=inactive the caller sends nothing: no media timeout until it resumes."""
        tag = self.confirmed()
        self.assertEqual(self.reinvite(tag, offerSDP("8", direction="inactive")).code, 200)
        self.ack(tag, cseq=2)
        self.clock.advance(30)
        self.assertEqual(self.messages(), [])
        self.assertEqual(self.reinvite(tag, offerSDP("8"), 3).code, 200)
        self.ack(tag, cseq=3)
        self.clock.advance(9.9)
        self.assertEqual(self.messages(), [])
        self.clock.advance(0.2)
        (bye,) = self.messages()
        self.assertIn("media timeout", bye.get("reason") or "")  # type: ignore[union-attr]

    def test_old_style_hold(self) -> None:
        tag = self.confirmed()
        held = offerSDP("8").replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")
        self.assertEqual(self.reinvite(tag, held).code, 200)
        self.ack(tag, cseq=2)
        before = len(self.ports[0].sent)
        self.clock.advance(0.2)
        self.assertEqual(self.sentSince(before), [])

    def test_reinvite_changes_the_codec_and_the_address(self) -> None:
        tag = self.confirmed()
        self.clock.advance(0.1)
        ssrc = rtp.parse(self.ports[0].sent[0][0]).ssrc
        before = len(self.ports[0].sent)
        ok = self.reinvite(tag, offerSDP("9 8", port=4100))
        self.assertEqual(sdp.parse(ok.body).media[0].formats, "9")
        self.ack(tag, cseq=2)
        self.clock.advance(0.1)
        packets = [(rtp.parse(d), a) for d, a in self.sentSince(before)]
        self.assertTrue(packets)
        self.assertEqual({(p.payloadType, p.ssrc, a) for p, a in packets}, {(9, ssrc, ("127.0.0.1", 4100))})
        self.assertTrue(packets[0][0].marker)

    def test_reinvite_nothing_acceptable_keeps_the_session(self) -> None:
        tag = self.confirmed()
        response = self.reinvite(tag, offerSDP("18"))
        self.assertEqual(response.code, 488)
        before = len(self.ports[0].sent)
        self.ports[0].receive(rtp.Packetiser(8).packet(b"\xd5" * 160, 160), ("127.0.0.1", 4000))
        self.clock.advance(0.1)
        self.assertEqual({rtp.parse(d).payloadType for d, _ in self.sentSince(before)}, {8})
        self.assertEqual(self.reinvite(tag, b"v=0\r\nnonsense\r\n", 3).code, 400)

    def test_reinvite_without_sdp_gets_an_offer(self) -> None:
        tag = self.confirmed()
        ok = self.reinvite(tag, b"")
        offered = sdp.parse(ok.body)
        self.assertEqual(offered.media[0].formats.split()[0], "8")  # the format in use first
        # Another re-INVITE before the ACK answered: 491 (RFC 3261 14.2).
        self.assertEqual(self.reinvite(tag, offerSDP("0"), 3).code, 491)
        self.ack(tag, offerSDP("0"), cseq=2)
        before = len(self.ports[0].sent)
        self.clock.advance(0.1)
        self.assertEqual({rtp.parse(d).payloadType for d, _ in self.sentSince(before)}, {0})

    def test_reinvite_2xx_retransmitted_until_ack(self) -> None:
        tag = self.confirmed()
        ok = self.reinvite(tag, offerSDP("8"))
        # The re-INVITE again: the same 2xx.
        self.agent.datagramReceived(dialogRequest("INVITE", tag, 2, offerSDP("8")), PROXY)
        self.clock.advance(0.5)
        again = [m for m in self.messages() if isinstance(m, Response)]
        self.assertEqual([m.toBytes() for m in again], [ok.toBytes(), ok.toBytes()])
        self.ack(tag, cseq=2)
        self.clock.advance(4)
        self.assertEqual([m for m in self.messages() if isinstance(m, Response)], [])

    def test_busy_beyond_max_sessions(self) -> None:
        for n in range(3):
            self.agent.datagramReceived(invite(offerSDP("8"), callID=f"call-{n}", branch=f"z9hG4bK-{n}"), PROXY)
        self.assertEqual([r.code for r in self.messages()], [180, 180, 486])  # type: ignore[union-attr]

    def test_calls_per_caller_per_hour(self) -> None:
        self.agent.settings = LineSettings({"15000": PROGRAMME}, 1.0, 600.0, 10.0, 20, "127.0.0.1", callsPerHour=3)
        for n in range(4):
            self.agent.datagramReceived(invite(offerSDP("8"), callID=f"c-{n}", branch=f"z9hG4bK-{n}"), PROXY)
            self.clock.advance(600)
        responses = [r for r in self.messages() if isinstance(r, Response) and r.code != 200]
        self.assertEqual([r.code for r in responses], [180, 180, 180, 486])
        self.assertEqual(responses[-1].reason, "Too Many Test Calls")
        self.assertEqual(responses[-1].get("retry-after"), str(3600 - 3 * 600))
        # An hour after the first call, the caller may call again.
        self.clock.advance(3600 - 4 * 600)
        self.messages()
        self.agent.datagramReceived(invite(offerSDP("8"), callID="c-9", branch="z9hG4bK-9"), PROXY)
        self.assertEqual([r.code for r in self.messages() if isinstance(r, Response)], [180])

    def test_invite_retransmission_gets_same_answer(self) -> None:
        self.agent.datagramReceived(invite(offerSDP("8")), PROXY)
        self.agent.datagramReceived(invite(offerSDP("8")), PROXY)
        first, second = self.messages()
        self.assertEqual(first.toBytes(), second.toBytes())
        self.assertEqual(len(self.ports), 1)

    def test_2xx_retransmitted_until_ack(self) -> None:
        ok = self.answered()
        tag = ok.toAddr.tag
        assert tag is not None
        self.clock.advance(0.5)
        self.clock.advance(1.0)
        self.assertEqual([r.code for r in self.messages()], [200, 200])  # type: ignore[union-attr]
        self.agent.datagramReceived(inDialog("ACK", tag), PROXY)
        self.clock.advance(5)  # less than the media timeout
        self.assertEqual(self.messages(), [])

    def test_no_ack_ends_with_bye(self) -> None:
        self.answered()
        self.clock.advance(32)
        byes = [m for m in self.messages() if isinstance(m, Request)]
        self.assertEqual([m.method for m in byes], ["BYE"])
        self.assertTrue(self.ports[0].closed)

    def confirmed(self) -> str:
        ok = self.answered()
        tag = ok.toAddr.tag
        assert tag is not None
        self.agent.datagramReceived(inDialog("ACK", tag), PROXY)
        return tag

    def test_maximum_duration_sends_bye(self) -> None:
        tag = self.confirmed()
        caller = rtp.Packetiser(8)
        for _ in range(600 * 5):  # the caller keeps sending (every 200 ms: enough to stay alive)
            self.ports[0].receive(caller.packet(b"\xd5" * 160, 160), ("127.0.0.1", 4000))
            self.clock.advance(0.2)
        self.assertEqual(self.messages(), [])
        self.clock.advance(0.3)
        (bye,) = self.messages()
        assert isinstance(bye, Request)
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(bye.requestURI.user, "45675001")
        self.assertEqual(bye.getAll("route"), ["<sip:127.0.0.1:5060;lr;dlg=token>"])
        self.assertEqual((bye.fromAddr.tag, bye.toAddr.tag), (tag, "caller-tag"))
        self.assertIn("duration limit", bye.get("reason") or "")
        self.assertTrue(self.ports[0].closed)
        self.assertEqual(self.agent.sessions, {})
        # Retransmitted until answered.
        self.clock.advance(0.5)
        (again,) = self.messages()
        response = Response(
            200, "OK", [[n, v] for n, v in again.headers if n in ("via", "from", "to", "call-id", "cseq")]
        )
        self.agent.datagramReceived(response.toBytes(), PROXY)
        self.clock.advance(10)
        self.assertEqual(self.messages(), [])

    def test_media_timeout_sends_bye(self) -> None:
        self.confirmed()
        self.clock.advance(9.9)
        self.assertEqual(self.messages(), [])
        self.clock.advance(0.2)
        (bye,) = self.messages()
        self.assertEqual(bye.method, "BYE")  # type: ignore[union-attr]
        self.assertIn("media timeout", bye.get("reason") or "")

    def test_caller_bye(self) -> None:
        tag = self.confirmed()
        self.agent.datagramReceived(inDialog("BYE", tag), PROXY)
        (ok,) = self.messages()
        self.assertEqual((ok.code, ok.cseq), (200, (2, "BYE")))  # type: ignore[union-attr]
        self.assertTrue(self.ports[0].closed)
        self.agent.datagramReceived(inDialog("BYE", tag, 3), PROXY)
        self.assertEqual([r.code for r in self.messages()], [481])  # type: ignore[union-attr]

    def test_in_dialog_options_probe_answered(self) -> None:
        tag = self.confirmed()
        self.agent.datagramReceived(inDialog("OPTIONS", tag), PROXY)
        self.assertEqual([r.code for r in self.messages()], [200])  # type: ignore[union-attr]

    def test_cancel_while_ringing(self) -> None:
        self.agent.datagramReceived(invite(offerSDP("8")), PROXY)
        cancel = invite(b"").replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
        self.agent.datagramReceived(cancel, PROXY)
        self.assertEqual([r.code for r in self.messages()], [180, 200, 487])  # type: ignore[union-attr]
        self.assertTrue(self.ports[0].closed)
        self.clock.advance(5)
        self.assertEqual(self.messages(), [])

    def test_echo_line(self) -> None:
        ok = self.answered(offerSDP("0"), number="15001")
        self.assertEqual(ok.code, 200)
        self.clock.advance(0.1)
        self.assertEqual(self.ports[0].sent, [])
        caller = rtp.Packetiser(0)
        self.ports[0].receive(caller.packet(b"\x11" * 160, 160), ("127.0.0.1", 4002))
        ((data, address),) = self.ports[0].sent
        self.assertEqual((rtp.parse(data).payload, address), (b"\x11" * 160, ("127.0.0.1", 4002)))

    def test_garbage_and_unknown_numbers(self) -> None:
        self.agent.datagramReceived(b"\x00\xffnot sip", PROXY)
        self.agent.datagramReceived(b"\r\n\r\n", PROXY)
        self.agent.datagramReceived(invite(offerSDP("8"), number="15009"), PROXY)
        self.assertEqual([r.code for r in self.messages()], [404])  # type: ignore[union-attr]

    def test_stop_ends_every_session(self) -> None:
        self.confirmed()
        self.agent.datagramReceived(invite(offerSDP("8"), callID="call-2", branch="z9hG4bK-9"), PROXY)
        self.messages()
        self.agent.stop()
        sent = self.messages()
        self.assertEqual(sorted(getattr(m, "method", str(getattr(m, "code", ""))) for m in sent), ["480", "BYE"])
        self.assertEqual(self.agent.sessions, {})


def originOf(body: bytes) -> list[str]:
    """The fields of the o= line: username, session id, version, …"""
    (line,) = [line for line in body.decode().splitlines() if line.startswith("o=")]
    return line[2:].split()


def dialogRequest(method: str, toTag: str, cseq: int, body: bytes = b"", branch: str | None = None) -> bytes:
    """A request of the caller in the dialog, with SDP when given."""
    headers = [
        f"{method} sip:15000@127.0.0.1:7000 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch or f'z9hG4bK-{method}-{cseq}'};rport",
        "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-caller;received=127.0.0.1;rport=40000",
        "Max-Forwards: 69",
        "From: <sip:45675001@127.0.0.1>;tag=caller-tag",
        f"To: <sip:15000@127.0.0.1>;tag={toTag}",
        "Call-ID: call-1",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:45675001@127.0.0.1:40000>",
    ]
    if body:
        headers.append("Content-Type: application/sdp")
    headers += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(headers).encode() + body


def writeTone(path: str, frequency: float, rate: int = 44100, seconds: float = 1.0) -> str:
    """A mono 16-bit WAV sine at -12 dBFS."""
    n = np.arange(int(rate * seconds))
    samples = (np.sin(2 * np.pi * frequency * n / rate) * 8231).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
    return path


class ProgrammeFileTests(TestCase):
    def test_file_resampled_and_looped(self) -> None:
        path = writeTone(self.mktemp() + ".wav", 440)
        programme = FileProgramme(path, 48000, 2)
        samples = programme.read(48000 * 3)  # three times the file
        self.assertEqual(samples.shape, (144000, 2))
        for second in range(3):
            chunk = samples[second * 48000 : (second + 1) * 48000, 1] / 32768
            assertNear(self, dominantFrequency(chunk[2000:-2000], 48000), 440, 2)
            assertNear(self, levelDBFS(chunk[2000:-2000]), -12, 0.3)
        programme.close()

    def test_bad_files_named(self) -> None:
        garbage = self.mktemp()
        with open(garbage, "wb") as f:
            f.write(b"not audio at all" * 64)
        for path in ("/nonexistent/programme.wav", garbage):
            with self.assertRaises(ProgrammeFileError) as raised:
                audiofile.check(path)
            self.assertIn(path, str(raised.exception))

    def test_the_default_configuration_has_no_clash(self) -> None:
        settings = lineSettings(config.build({}))
        self.assertEqual(settings.lines, {"15000": PROGRAMME, "15001": ECHO})

    def test_clashing_numbers_named(self) -> None:
        for values, key, words in (
            # The echo line's default against an operator's test number.
            ({"routing.test_number": "15001"}, "testline.echo_number", "routing.test_number (15001)"),
            ({"routing.short_number_digits": 5}, "routing.test_number", "short number 15000"),
            (
                {"routing.short_number_digits": 5, "routing.test_number": "150000"},
                "testline.echo_number",
                "short number 15001",
            ),
            ({"testline.echo_number": "6000", "routing.short_number_digits": 3}, "testline.echo_number", "hunting"),
        ):
            with self.subTest(values=values):
                with self.assertRaises(config.ConfigError) as raised:
                    config.build(values)
                self.assertEqual(raised.exception.key, key)
                self.assertIn(words, str(raised.exception))
        # Without the test line, routing's own numbers are routing's business.
        config.build({"routing.short_number_digits": 5, "testline.enabled": False})
        config.build({"routing.test_number": "15001", "testline.echo_number": None})

    def test_configuration_refuses_a_file_that_does_not_decode(self) -> None:
        cfg = config.load(None, {"testline.programme_file": "/nonexistent/programme.wav"})
        with self.assertRaises(config.ConfigError) as raised:
            lineSettings(cfg)
        self.assertIn("testline.programme_file", str(raised.exception))

    def test_agent_plays_the_file(self) -> None:
        path = writeTone(self.mktemp() + ".wav", 440, rate=16000)
        clock, out, ports = Clock(), Recorder(), []

        def openMedia(receive):  # type: ignore[no-untyped-def]
            ports.append(FakePort(50000, receive))
            return ports[-1]

        settings = LineSettings({"15000": PROGRAMME}, 0.5, 600.0, 0, 2, "127.0.0.1", programmeFile=path)
        agent = LineAgent(clock, out, openMedia, settings, "127.0.0.1:7000")
        agent.datagramReceived(invite(offerSDP("8")), PROXY)
        for _ in range(150):
            clock.advance(0.02)
        samples = decode("PCMA", 8000, [rtp.parse(d).payload for d, _ in ports[0].sent])
        assertNear(self, dominantFrequency(samples[800:], 8000), 440, 5)
        # The file gone: the next caller gets 503, the first one plays on.
        os.remove(path)
        out.sent.clear()
        agent.datagramReceived(invite(offerSDP("8"), callID="call-2", branch="z9hG4bK-2"), PROXY)
        (refused,) = [parse(d) for d, _ in out.sent]
        self.assertEqual(refused.code, 503)  # type: ignore[union-attr]
        agent.stop()
