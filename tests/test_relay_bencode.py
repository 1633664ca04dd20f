"""
The bencode codec of the ng protocol (L{aetasip.relay.bencode}): what
rtpengine sends (unsorted keys included) decodes, and anything malformed
is refused with L{BencodeError}, never another exception.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from aetasip.relay.bencode import MAX_DEPTH, BencodeError, decode, encode


class EncodeTests(TestCase):
    def test_values(self) -> None:
        self.assertEqual(encode(b"spam"), b"4:spam")
        self.assertEqual(encode("é"), b"2:\xc3\xa9")
        self.assertEqual(encode(-42), b"i-42e")
        self.assertEqual(encode(0), b"i0e")
        self.assertEqual(encode(["a", 1, []]), b"l1:ai1elee")

    def test_dictionary_keys_are_sorted(self) -> None:
        self.assertEqual(
            encode({"sdp": b"v=0", "command": "offer", "call-id": "c"}),
            b"d7:call-id1:c7:command5:offer3:sdp3:v=0e",
        )

    def test_unencodable_values_are_refused(self) -> None:
        for value in (True, 1.5, None, {1: "x"}, {"a": 1, b"a": 2}, object()):
            self.assertRaises(BencodeError, encode, value)

    def test_too_deep_is_refused(self) -> None:
        value: list[object] = []
        for _ in range(MAX_DEPTH + 2):
            value = [value]
        self.assertRaises(BencodeError, encode, value)


class DecodeTests(TestCase):
    def test_round_trip(self) -> None:
        value = {"a": [b"x", 3, {"b": b""}], "sdp": b"v=0\r\n\xff"}
        self.assertEqual(decode(encode(value)), value)

    def test_unsorted_keys_of_rtpengine(self) -> None:
        # rtpengine appends "result" after the other keys.
        self.assertEqual(decode(b"d3:sdp3:v=06:result2:oke"), {"sdp": b"v=0", "result": b"ok"})

    def test_keys_keep_undecodable_bytes(self) -> None:
        (key,) = decode(b"d2:\xff\xfei1ee")
        self.assertEqual(key.encode("utf-8", "surrogateescape"), b"\xff\xfe")

    def test_malformed_is_refused(self) -> None:
        for data in (
            b"",
            b"x",
            b"i01e",
            b"i-0e",
            b"i-e",
            b"ie",
            b"i1",
            b"i" + b"9" * 30 + b"e",
            b"3:ab",
            b"-1:a",
            b"01:a",
            b"99999999999999999999999:a",
            b"l",
            b"li1e",
            b"d",
            b"d1:a",
            b"d1:ai1e",
            b"di1ei2ee",
            b"d1:ai1e1:ai2ee",
            b"i1ei2e",
            b"le junk",
            b"l" * 100_000,
            b"d" + b"1:al" * 50 + b"e" * 100,
        ):
            with self.subTest(data=data[:30]):
                self.assertRaises(BencodeError, decode, data)

    def test_not_bytes_is_refused(self) -> None:
        self.assertRaises(BencodeError, decode, "d1:a0:e")

    def test_depth_limit(self) -> None:
        self.assertEqual(decode(b"l" * MAX_DEPTH + b"e" * MAX_DEPTH), _nested(MAX_DEPTH - 1))
        self.assertRaises(BencodeError, decode, b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1))


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value
