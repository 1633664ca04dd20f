"""
Hardening against hostile traffic (issue 9), driven with bytes and a
Clock through the SIP core: what one datagram may cost the server.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip import headers, message
from tests.sipagent import Harness

A_SOURCE = ("198.51.100.7", 5060)


def inDialogRequest(method: str, routes: list[str], extra: str = "") -> bytes:
    route = "".join(f"Route: {r}\r\n" for r in routes)
    return (
        f"{method} sip:45675002@sip.example.net SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK-r1;rport\r\nMax-Forwards: 70\r\n"
        "From: <sip:45675001@sip.example.net>;tag=a\r\nTo: <sip:45675002@sip.example.net>;tag=b\r\n"
        f"Call-ID: routes@test\r\nCSeq: 2 {method}\r\n{route}{extra}Content-Length: 0\r\n\r\n"
    ).encode()


class RouteListTests(SynchronousTestCase):
    """
    Fault 1 of the audit: a request with a To tag and ~1,000 Route entries
    naming the server froze the reactor for seconds, the Route list being
    split again for every entry popped.
    """

    def setUp(self) -> None:
        self.h = Harness()
        self.scanned = 0
        original = headers.splitCommas

        def counting(value: str) -> list[str]:
            self.scanned += len(value)
            return original(value)

        for module in (headers, message):
            self.patch(module, "splitCommas", counting)

    def test_a_long_route_list_is_refused_at_once(self) -> None:
        routes = ", ".join(["<sip:sip.example.net;lr>"] * 1000)
        for method in ("BYE", "INVITE", "OPTIONS"):
            data = inDialogRequest(method, [routes])
            reply = self.h.sendOne(data, A_SOURCE)
            self.assertEqual((reply.code, reply.reason), (400, "Too many Route values"))
            # Each Route value looked at a bounded number of times, not once per entry.
            self.assertLess(self.scanned, 4 * len(data))
            self.scanned = 0

    def test_a_stray_ack_with_a_long_route_list_is_dropped(self) -> None:
        routes = ", ".join(["<sip:sip.example.net;lr>"] * 1000)
        self.assertEqual(self.h.send(inDialogRequest("ACK", [routes]), A_SOURCE), [])

    def test_our_routes_are_popped_in_one_pass(self) -> None:
        # Under the cap: every entry names us, some in their own header field.
        routes = [", ".join(["<sip:sip.example.net;lr>"] * 35)] * 2
        data = inDialogRequest("BYE", routes)
        reply = self.h.sendOne(data, A_SOURCE)
        self.assertEqual(reply.code, 481)
        self.assertLess(self.scanned, 3 * len(data))

    def test_other_long_lists_are_capped(self) -> None:
        for name in ("Record-Route", "Path", "Contact"):
            values = ", ".join(["<sip:10.0.0.1;lr>"] * 200)
            data = inDialogRequest("INFO", [], f"{name}: {values}\r\n")
            reply = self.h.sendOne(data, A_SOURCE)
            self.assertEqual((reply.code, reply.reason), (400, f"Too many {name} values"))
        vias = "".join(f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK-v{i}\r\n" for i in range(100))
        data = inDialogRequest("INFO", [], "").replace(b"Max-Forwards", vias.encode() + b"Max-Forwards")
        reply = self.h.sendOne(data, A_SOURCE)
        self.assertEqual((reply.code, reply.reason), (400, "Too many Via values"))

    def test_too_many_header_fields_are_refused(self) -> None:
        extra = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(400))
        reply = self.h.sendOne(inDialogRequest("OPTIONS", [], extra), A_SOURCE)
        self.assertEqual((reply.code, reply.reason), (400, "Too many header fields"))
