"""The signed dialog tokens of Record-Route (L{aetasip.calls.token})."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from aetasip.calls.call import Leg
from aetasip.calls.token import DialogSigner

CALLER = Leg(("198.51.100.7", 5060), "udp", ("0.0.0.0", 5060))
CALLEE = Leg(("2001:db8::9", 40001), "tls", ("::", 5061))


class TokenTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.signer = DialogSigner(b"k" * 32)
        self.token = self.signer.sign("SUBSCRIBE", "cid@x", "a1", "45675001", "45675002", "3", CALLER, CALLEE)

    def test_round_trip_from_either_side(self) -> None:
        for tags in (("a1", "b2"), ("b2", "a1")):
            verified = self.signer.verify(self.token, "cid@x", tags)
            assert verified is not None
            self.assertEqual(
                (verified.method, verified.caller, verified.callee, verified.key, verified.callerTag),
                ("SUBSCRIBE", "45675001", "45675002", "3", "a1"),
            )
            self.assertEqual(
                (verified.callerLeg.transport, verified.callerLeg.source, verified.callerLeg.local),
                ("udp", ("198.51.100.7", 5060), ("0.0.0.0", 5060)),
            )
            self.assertEqual(
                (verified.calleeLeg.transport, verified.calleeLeg.source, verified.calleeLeg.local),
                ("tls", ("2001:db8::9", 40001), ("::", 5061)),
            )

    def test_uri_safe_and_short(self) -> None:
        self.assertRegex(self.token, r"^[A-Za-z0-9_-]+$")
        self.assertLess(len(self.token), 120)

    def test_another_dialog_key_or_edit_does_not_verify(self) -> None:
        self.assertIsNone(self.signer.verify(self.token, "other@x", ("a1", "b2")))
        self.assertIsNone(self.signer.verify(self.token, "cid@x", ("zz", "b2")))
        self.assertIsNone(DialogSigner(b"other key").verify(self.token, "cid@x", ("a1", "b2")))
        data = bytearray(base64.urlsafe_b64decode(self.token + "=" * (-len(self.token) % 4)))
        for i in range(len(data)):
            edited = bytearray(data)
            edited[i] ^= 1
            text = base64.urlsafe_b64encode(bytes(edited)).rstrip(b"=").decode()
            self.assertIsNone(self.signer.verify(text, "cid@x", ("a1", "b2")), i)

    def test_garbage_never_raises(self) -> None:
        for garbage in ("", "=", "!!!", "A" * 2000, "AAAA", self.token[:-3], self.token + "AA"):
            self.assertIsNone(self.signer.verify(garbage, "cid@x", ("a1", "b2")))
