"""
Tests for L{aetasip.sip.framing}.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.framing import PING, PONG, Frame, FramingError, Message, StreamFramer, isKeepAlive

REGISTER = (
    b"REGISTER sip:aetasip.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.10:49152;branch=z9hG4bK776asdhds;alias\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:45675001@aetasip.example.net>\r\n"
    b"From: <sip:45675001@aetasip.example.net>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 REGISTER\r\n"
    b"Contact: <sip:45675001@192.0.2.10:49152;transport=tcp>\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

INVITE = (
    b"INVITE sip:45675002@aetasip.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.10:49152;branch=z9hG4bK74bf9\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 32\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n"
)


def message(headers: bytes, body: bytes = b"") -> bytes:
    return b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n" + headers + b"\r\n" + body


class StreamFramerTests(SynchronousTestCase):
    def test_one_message(self) -> None:
        self.assertEqual(StreamFramer().feed(REGISTER), [Message(REGISTER)])
        self.assertEqual(len(INVITE.split(b"\r\n\r\n", 1)[1]), 32)
        self.assertEqual(StreamFramer().feed(INVITE), [Message(INVITE)])

    def test_byte_by_byte(self) -> None:
        """
        Fed one byte at a time, a stream gives the same frames, each as
        soon as its last byte arrives.
        """
        framer = StreamFramer()
        stream = INVITE + REGISTER
        frames: list[Frame] = []
        for i in range(len(stream)):
            new = framer.feed(stream[i : i + 1])
            if i + 1 in (len(INVITE), len(stream)):
                self.assertEqual(len(new), 1, i)
            else:
                self.assertEqual(new, [], i)
            frames += new
        self.assertEqual(frames, [Message(INVITE), Message(REGISTER)])

    def test_several_messages_in_one_chunk(self) -> None:
        frames = StreamFramer().feed(REGISTER + INVITE + b"\r\n\r\n" + REGISTER)
        self.assertEqual(frames, [Message(REGISTER), Message(INVITE), PING, Message(REGISTER)])

    def test_body_split_across_chunks(self) -> None:
        framer = StreamFramer()
        cut = INVITE.index(b"\r\n\r\n") + 10
        self.assertEqual(framer.feed(INVITE[:cut]), [])
        self.assertEqual(framer.feed(INVITE[cut:-1]), [])
        self.assertEqual(framer.feed(INVITE[-1:] + REGISTER[:5]), [Message(INVITE)])
        self.assertEqual(framer.feed(REGISTER[5:]), [Message(REGISTER)])

    def test_any_chunking(self) -> None:
        """
        However a stream of messages and keep-alives is cut, the frames are
        the same.
        """
        stream = REGISTER + b"\r\n\r\n" + INVITE + b"\r\n" + REGISTER + INVITE
        expected = [Message(REGISTER), PING, Message(INVITE), PONG, Message(REGISTER), Message(INVITE)]
        rng = random.Random(5626)
        for _ in range(300):
            cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(1, 12)))
            framer = StreamFramer()
            frames: list[Frame] = []
            for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                frames += framer.feed(stream[start:end])
            self.assertEqual(frames, expected, cuts)

    def test_ping_and_pong(self) -> None:
        """
        Between messages, CRLFCRLF is a ping and a lone CRLF a pong; a
        ping split across chunks is still one ping.
        """
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n\r\n"), [PING])
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(b"\r\n"), [PING])
        self.assertEqual(framer.feed(b"\r\n\r"), [])
        self.assertEqual(framer.feed(b"\n"), [PING])
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(REGISTER), [PONG, Message(REGISTER)])
        self.assertEqual(framer.feed(b"\r\n\r\n\r\n\r\n"), [PING, PING])

    def test_leading_crlfs(self) -> None:
        """
        CRLFs before a start-line are skipped (as keep-alives).
        """
        frames = StreamFramer().feed(b"\r\n\r\n\r\n" + REGISTER)
        self.assertEqual(frames, [PING, PONG, Message(REGISTER)])

    def test_header_end_split_anywhere(self) -> None:
        framer = StreamFramer()
        end = REGISTER.index(b"\r\n\r\n")
        for cut in range(end - 2, end + 4):
            framer = StreamFramer()
            self.assertEqual(framer.feed(REGISTER[:cut]), [])
            self.assertEqual(framer.feed(REGISTER[cut:]), [Message(REGISTER)], cut)

    def test_content_length_spellings(self) -> None:
        """
        The header is found whatever its case, in compact form C{l}, with
        spaces around the colon, or folded.
        """
        for header in (
            b"content-length: 4\r\n",
            b"CONTENT-LENGTH:4\r\n",
            b"l: 4\r\n",
            b"L:4\r\n",
            b"Content-Length  :  4  \r\n",
            b"Content-Length:\r\n 4\r\n",
            b"X-Bare-LF: y\nContent-Length: 4\r\n",
        ):
            data = message(header, b"body")
            self.assertEqual(StreamFramer().feed(data + REGISTER), [Message(data), Message(REGISTER)], header)

    def test_content_length_only_in_headers(self) -> None:
        """
        Look-alikes are not Content-Length: other headers starting with l,
        and the header inside a body.
        """
        body = b"\r\nContent-Length: 99\r\n"
        data = message(b"Lang: 5\r\nX-L: 7\r\nl : " + str(len(body)).encode() + b"\r\n", body)
        self.assertEqual(StreamFramer().feed(data), [Message(data)])

    def test_duplicate_content_length(self) -> None:
        data = message(b"Content-Length: 2\r\nl: 2\r\n", b"ab")
        self.assertEqual(StreamFramer().feed(data), [Message(data)])
        frames = StreamFramer().feed(message(b"Content-Length: 2\r\nContent-Length: 3\r\n", b"abc"))
        self.assertEqual(frames, [FramingError("conflicting Content-Length headers")])

    def test_bad_content_length(self) -> None:
        for value in (b"abc", b"-1", b"+5", b"1e3", b"0x10", b"", b"5 5", b"1" * 40, "٣".encode()):
            frames = StreamFramer().feed(message(b"Content-Length: " + value + b"\r\n"))
            self.assertEqual(frames, [FramingError("bad Content-Length")], value)

    def test_missing_content_length(self) -> None:
        self.assertEqual(StreamFramer().feed(message(b"")), [FramingError("missing Content-Length")])

    def test_too_large(self) -> None:
        """
        A message may be exactly C{maxMessageSize} bytes long, not one more.
        """
        header = message(b"Content-Length: 0000\r\n")
        size = len(header) + 100
        ok = message(b"Content-Length: 0100\r\n", b"x" * 100)
        self.assertEqual(StreamFramer(maxMessageSize=size).feed(ok), [Message(ok)])
        tooLarge = message(b"Content-Length: 0101\r\n")
        self.assertEqual(StreamFramer(maxMessageSize=size).feed(tooLarge), [FramingError("message too large")])

    def test_oversized_header_section(self) -> None:
        """
        A header section growing past the limit without an end is an
        error, and the stream is then dead.
        """
        framer = StreamFramer(maxMessageSize=2000)
        self.assertEqual(framer.feed(b"REGISTER sip:x SIP/2.0\r\n"), [])
        frames: list[Frame] = []
        for _ in range(200):
            frames += framer.feed(b"X-Padding: 0123456789\r\n")
        self.assertEqual(frames, [FramingError("header section too large")])
        self.assertEqual(framer.error, FramingError("header section too large"))
        self.assertEqual(framer.feed(REGISTER), [])

    def test_frames_before_error_kept(self) -> None:
        frames = StreamFramer().feed(REGISTER + b"\r\n\r\n" + message(b"Content-Length: x\r\n"))
        self.assertEqual(frames, [Message(REGISTER), PING, FramingError("bad Content-Length")])

    def test_search_resumes(self) -> None:
        """
        Bytes already searched for the end of the header section are not
        searched again: small pieces cost linear time.
        """
        framer = StreamFramer()
        pieces = [b"REGISTER sip:x SIP/2.0\r\n", *[b"X-A: b\r\n"] * 50]
        fed = 0
        for piece in pieces:
            framer.feed(piece)
            fed += len(piece)
            self.assertEqual(framer._searchFrom, fed - 3)
        end = b"l: 0\r\n\r\n"
        self.assertEqual(framer.feed(end), [Message(b"".join(pieces) + end)])
        self.assertEqual(framer._searchFrom, 0)


class IsKeepAliveTests(SynchronousTestCase):
    def test_keepalives(self) -> None:
        for datagram in (b"\r\n\r\n", b"\r\n", b"", b"\x00\x00\x00\x00", b" \r\n\t", b"jack", b"jack\x00\x00\x00\x00"):
            self.assertTrue(isKeepAlive(datagram), datagram)

    def test_not_keepalives(self) -> None:
        stun = bytes.fromhex("000100002112a442") + b"\x01" * 12
        for datagram in (REGISTER, b"\r\n" + REGISTER, stun, b"jackal", b"x"):
            self.assertFalse(isKeepAlive(datagram), datagram)
