"""aetasip.sip.base64url: the stdlib's urlsafe base64, without its layers."""

from __future__ import annotations

import base64
import binascii
import random

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip import base64url


class Base64URLTests(SynchronousTestCase):
    def test_encodes_as_the_standard_library(self) -> None:
        rng = random.Random(4648)
        for size in range(0, 70):
            data = rng.randbytes(size)
            self.assertEqual(base64url.encode(data), base64.urlsafe_b64encode(data).decode("ascii"))

    def test_uses_the_url_safe_alphabet(self) -> None:
        self.assertEqual(base64url.encode(b"\xfb\xff\xbf"), "-_-_")
        self.assertEqual(base64url.decode("-_-_"), b"\xfb\xff\xbf")

    def test_round_trip(self) -> None:
        for data in (b"", b"a", b"ab", b"abc", bytes(range(256))):
            self.assertEqual(base64url.decode(base64url.encode(data)), data)

    def test_decodes_as_the_standard_library(self) -> None:
        # Characters outside the alphabet are left out, as the stdlib does.
        for text in ("aGVsbG8=", "aGVs bG8=", "aGVs\nbG8=", "aGVs!bG8=", "+/+/", ""):
            self.assertEqual(base64url.decode(text), base64.urlsafe_b64decode(text))

    def test_bad_padding_raises_binascii_error(self) -> None:
        self.assertRaises(binascii.Error, base64url.decode, "aGVsbG8")

    def test_non_ascii_raises_value_error(self) -> None:
        self.assertRaises(ValueError, base64url.decode, "aGVsbG8é")
