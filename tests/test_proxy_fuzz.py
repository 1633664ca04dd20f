"""
Hostile and broken messages in the middle of real calls: the proxy
answers or drops them, never fails (a failure is logged, which trial
reports), keeps no state for them, and goes on routing calls.

Every message of a call (the caller's INVITE with credentials, the
callee's 180 and 200, ACK, BYE, CANCEL, responses to forwarded requests)
is mutated at random (seeded, so a failure can be replayed): lines
dropped, doubled or swapped, values replaced with hostile ones, methods,
Vias, CSeqs and Routes changed.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.message import Request
from aetasip.sip.parser import parse
from tests.sipagent import Agent, Harness, Reply
from tests.test_proxy import A_SOURCE, B_SOURCE, invite, proxyAuthorization, reply

B_CONTACT = "sip:45675002@10.0.0.9:5060"
SEED = 20261121
ROUNDS = 3000

HOSTILE_VALUES = [
    "",
    ";",
    ";;;",
    "<>",
    "<sip:>",
    "<sip:@>",
    "sip:45675002@[::1",
    "<sip:45675002@192.0.2.99:99999>",
    "<tel:+331234;phone-context=x>",
    "<sips:45675002@sip.example.net;transport=tls>",
    "<sip:45675002@sip.example.net;lr>, <sip:198.51.100.200;lr>",
    "SIP/2.0/UDP",
    "SIP/2.0/TCP 192.0.2.99:5060;branch=z9hG4bK-evil;rport=x;received=::::",
    "SIP/2.0/UDP sip.example.net:5060;branch=z9hG4bK" + "0" * 16 + ".deadbeefcafe",
    "0 INVITE",
    "4294967296 BYE",
    "1 CANCEL",
    '"unterminated <sip:a@b>',
    "a" * 5000,
    "\u00e9\u00e8\udcff",  # an invalid UTF-8 byte, as surrogateescape carries it
    "Digest username=, realm=",
    "*",
]
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK", "REFER", "NOTIFY", "FOO", "REGISTER"]


class ProxyFuzzTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Thousands of messages from two sources in no time: no flood control.
        self.h = Harness(flood__limit=0)
        for number, password, source, contact in (
            ("45675001", "secret1", A_SOURCE, "sip:45675001@10.0.0.7:5060"),
            ("45675002", "secret2", B_SOURCE, B_CONTACT),
        ):
            self.assertEqual(self.h.register(Agent(number, password, source=source, contact=contact)).code, 200)
        self.random = random.Random(SEED)

    def callMessages(self, n: int) -> list[tuple[bytes, tuple[str, int]]]:
        """The messages of one call, as they would arrive (from A or B), sent for real up to the answer."""
        branch = f"z9hG4bK-fuzz{n}"
        challenge = self.h.sendOne(invite(branch=branch + "a"), A_SOURCE)
        auth = proxyAuthorization(
            "INVITE", "sip:45675002@sip.example.net", challenge.challenge(), "45675001", "secret1"
        )
        authorized = invite(extra=auth + "\r\n", cseq=2, branch=branch + "b")
        start = len(self.h.sent)
        self.h.send(authorized, A_SOURCE)
        forwarded = [d for where, d in self.h.sent[start:] if where == B_SOURCE and d.startswith(b"INVITE")]
        messages: list[tuple[bytes, tuple[str, int]]] = [(authorized, A_SOURCE)]
        if not forwarded:
            return messages
        request = parse(forwarded[0])
        assert isinstance(request, Request)
        ringing = reply(request, 180, "Ringing", contact="sip:45675002@10.0.0.9:5060")
        ok = reply(request, 200, "OK", contact="sip:45675002@10.0.0.9:5060")
        dialog = (
            "Via: SIP/2.0/UDP 10.0.0.7:5060;branch={branch};rport\r\nMax-Forwards: 70\r\n"
            "Route: <sip:sip.example.net:5060;lr>\r\nFrom: <sip:45675001@sip.example.net>;tag=a\r\n"
            "To: <sip:45675002@sip.example.net>;tag=b\r\nCall-ID: call-ab@test\r\n"
        )
        ack = f"ACK sip:45675002@203.0.113.9:5062 SIP/2.0\r\n{dialog.format(branch=branch + 'ack')}CSeq: 2 ACK\r\n\r\n"
        bye = f"BYE sip:45675002@203.0.113.9:5062 SIP/2.0\r\n{dialog.format(branch=branch + 'bye')}CSeq: 3 BYE\r\n\r\n"
        cancel = authorized.replace(b"INVITE sip", b"CANCEL sip").replace(b"CSeq: 2 INVITE", b"CSeq: 2 CANCEL")
        return [
            *messages,
            (ringing, B_SOURCE),
            (ok, B_SOURCE),
            (ack.encode(), A_SOURCE),
            (bye.encode(), A_SOURCE),
            (cancel, A_SOURCE),
        ]

    def mutate(self, data: bytes) -> bytes:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        r = self.random
        for _ in range(r.randint(1, 3)):
            i = r.randrange(len(lines))
            choice = r.randrange(7)
            if choice == 0 and len(lines) > 1:
                del lines[i]
            elif choice == 1:
                lines.insert(i, lines[i])
            elif choice == 2 and ":" in lines[i]:
                name = lines[i].split(":", 1)[0]
                lines[i] = f"{name}: {r.choice(HOSTILE_VALUES)}"
            elif choice == 3:
                j = r.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            elif choice == 4:
                parts = lines[0].split(" ", 1)
                if not lines[0].startswith("SIP/") and len(parts) == 2:
                    lines[0] = f"{r.choice(METHODS)} {parts[1]}"
            elif choice == 5:
                lines.insert(r.randrange(1, len(lines) + 1), f"Route: {r.choice(HOSTILE_VALUES)}")
            else:
                lines.insert(r.randrange(1, len(lines) + 1), f"Via: {r.choice(HOSTILE_VALUES)}")
        out = "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body
        if r.random() < 0.05:
            out = out[: r.randrange(len(out))]
        return out

    def test_mutated_call_messages_never_break_the_proxy(self) -> None:
        for n in range(ROUNDS // 6):
            for data, source in self.callMessages(n):
                self.h.send(self.mutate(data), source)
                self.h.send(self.mutate(data), self.random.choice([A_SOURCE, B_SOURCE, ("192.0.2.98", 5060)]))
            if n % 10 == 0:
                for _ in range(self.random.choice([1, 5, 40, 200])):
                    self.h.clock.advance(1)
        # In 1 s steps: timers started by timers (a CANCEL's 64*T1) count from when they fire.
        for _ in range(400):
            self.h.clock.advance(1)
        # Nothing lingers: every call ended (answered, refused or timed out).
        self.assertEqual(self.h.service.proxy._contexts, {})
        self.assertEqual(self.h.service.clients.transactions, {})
        # Never sent anything to 192.0.2.99, which hostile values name but no
        # party of a call is (192.0.2.98 sends some of the mutated messages).
        self.assertEqual([where for where, _ in self.h.sent if where[0] == "192.0.2.99"], [])
        # And calls still go through (B refreshing its registration, which
        # may have expired while the clock ran).
        self.assertEqual(self.h.register(Agent("45675002", "secret2", source=B_SOURCE, contact=B_CONTACT)).code, 200)
        challenge = self.h.sendOne(invite(branch="z9hG4bK-after-a"), A_SOURCE)
        auth = proxyAuthorization(
            "INVITE", "sip:45675002@sip.example.net", challenge.challenge(), "45675001", "secret1"
        )
        start = len(self.h.sent)
        replies = self.h.send(invite(extra=auth + "\r\n", cseq=2, branch="z9hG4bK-after-b"), A_SOURCE)
        self.assertEqual([r.code for r in replies], [100])
        self.assertEqual(len([d for where, d in self.h.sent[start:] if where == B_SOURCE]), 1)
        self.assertIsInstance(Reply(replies[0].data), Reply)
