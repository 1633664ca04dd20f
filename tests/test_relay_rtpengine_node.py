"""
What L{aetasip.relay.rtpengine.RtpengineNode} asks rtpengine, byte for
byte, with a L{Clock} and a transport that records datagrams: the flags of
a NATed and of a well-configured leg, the tags of re-INVITEs and late
offers from either side, a delete after a failed query.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from aetasip.relay.errors import UnknownSession
from aetasip.relay.ng import NgError, NgProtocolError, decodeMessage
from aetasip.relay.ngclient import Backend, NgPool, NgTimeout, RelayUnavailable
from aetasip.relay.rtpengine import RtpengineNode
from tests.test_relay_ng import ENGINE, OTHER, answer, makeClient, pump

SDP = b"v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 4000 RTP/AVP 8\r\na=candidate:1 1 UDP 1 10.0.0.9 4000 typ host\r\n"
UNKNOWN = b"d6:result5:error12:error-reason15:Unknown call-ide"
RELAYED = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 8\r\n"


class NodeRequestTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client, self.transport = makeClient(self.clock, timeout=1.0, retries=1)
        self.pool = NgPool("fr", [Backend(ENGINE, self.client)], self.clock)
        self.addCleanup(self.pool.stop)
        self.node = RtpengineNode("fr", self.pool)

    def lastRequest(self) -> dict[str, Any]:
        return decodeMessage(self.transport.sent[-1][0])[1]

    def reply(self, body: bytes = b"d3:sdp" + b"%d:" % len(RELAYED) + RELAYED + b"6:result2:oke") -> None:
        datagram, address = self.transport.sent[-1]
        answer(self.client, datagram, address, body)

    def test_nated_caller_and_well_configured_callee(self) -> None:
        d = self.node.offer("c1", "ft", "b1", "caller", SDP, ("192.0.2.7", 5060), True)
        request = self.lastRequest()
        self.assertEqual(
            request,
            {
                "command": b"offer",
                "call-id": b"c1",
                "from-tag": b"ft",
                "via-branch": b"b1",
                "sdp": b"v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 4000 RTP/AVP 8\r\n",
                "ICE": b"remove",
                "replace": [b"origin", b"session-connection"],
                "received-from": [b"IP4", b"192.0.2.7"],
                "flags": [b"SIP-source-address", b"strict-source", b"port-latching", b"endpoint-learning-heuristic"],
            },
        )
        self.reply()
        self.assertEqual(self.successResultOf(d), RELAYED)
        d = self.node.answer("c1", "ft", "tt", "b1", "callee", SDP, ("2001:db8::5", 5060), False)
        request = self.lastRequest()
        self.assertEqual(
            (request["command"], request["from-tag"], request["to-tag"], request["received-from"], request["flags"][0]),
            (b"answer", b"ft", b"tt", [b"IP6", b"2001:db8::5"], b"trust-address"),
        )
        # A leg whose SDP is true is not learnt: a stranger is dropped from its first packet.
        self.assertEqual(request["flags"], [b"trust-address", b"asymmetric", b"strict-source", b"port-latching"])
        self.reply()
        self.successResultOf(d)

    def test_tags_of_reinvites_from_either_side(self) -> None:
        source = ("127.0.0.1", 5060)
        steps = [
            (lambda: self.node.offer("c1", "ft", "b1", "caller", SDP, source, False), b"offer", b"ft", None),
            (lambda: self.node.answer("c1", "ft", "tt", "b1", "callee", SDP, source, False), b"answer", b"ft", b"tt"),
            # re-INVITE from the callee: its tag is the offerer's.
            (lambda: self.node.offer("c1", "ft", "b1", "callee", SDP, source, False), b"offer", b"tt", b"ft"),
            (lambda: self.node.answer("c1", "ft", "tt", "b1", "caller", SDP, source, False), b"answer", b"tt", b"ft"),
            # re-INVITE from the caller.
            (lambda: self.node.offer("c1", "ft", "b1", "caller", SDP, source, False), b"offer", b"ft", b"tt"),
        ]
        for call, command, fromTag, toTag in steps:
            d = call()
            request = self.lastRequest()
            self.assertEqual(
                (request["command"], request["from-tag"], request.get("to-tag")), (command, fromTag, toTag)
            )
            self.reply()
            self.successResultOf(d)

    def test_late_offer_in_the_callees_answer(self) -> None:
        source = ("127.0.0.1", 5060)
        d = self.node.offer("c2", "ft", "b7", "callee", SDP, source, False)
        # The callee's offer of a call unknown here may be a re-INVITE of a call set up elsewhere: asked first.
        self.assertEqual(self.lastRequest(), {"command": b"query", "call-id": b"c2", "from-tag": b"ft"})
        self.reply(UNKNOWN)
        request = self.lastRequest()
        self.assertEqual((request["from-tag"], request["to-tag"]), (b"aetasip-branch-b7", b"ft"))
        self.reply()
        self.successResultOf(d)
        d = self.node.answer("c2", "ft", "real-to-tag", "b7", "caller", SDP, source, False)
        request = self.lastRequest()
        # The callee side keeps the tag it was created with.
        self.assertEqual((request["from-tag"], request["to-tag"]), (b"aetasip-branch-b7", b"ft"))
        self.reply()
        self.successResultOf(d)

    def test_delete_is_sent_after_a_failed_query(self) -> None:
        d = self.node.offer("c3", "ft", "b1", "caller", SDP, ("127.0.0.1", 5060), False)
        self.reply()
        self.successResultOf(d)
        query = self.node.query("c3", "ft")
        pump(self.clock, 2.0)
        self.failureResultOf(query, NgTimeout)
        # The daemon is marked down, but the call's delete still goes to it.
        deleted = self.node.delete("c3", "ft")
        request = self.lastRequest()
        self.assertEqual(request, {"command": b"delete", "call-id": b"c3", "from-tag": b"ft", "delete delay": 0})
        self.reply(b"d7:warning38:Call-ID not found or tags didn't match6:result2:oke")
        self.assertIsNone(self.successResultOf(deleted))

    def test_error_and_garbled_replies(self) -> None:
        d = self.node.offer("c4", "ft", "b1", "caller", SDP, ("127.0.0.1", 5060), False)
        self.reply(b"d6:result5:error12:error-reason18:Failed to parse SDe")
        self.assertEqual(self.failureResultOf(d, NgError).value.reason, "Failed to parse SD")
        d = self.node.offer("c5", "ft", "b1", "caller", SDP, ("127.0.0.1", 5060), False)
        self.reply(b"d6:result2:oke")  # no SDP
        self.failureResultOf(d, NgProtocolError)
        d = self.node.offer("c6", "ft", "b1", "caller", SDP, ("127.0.0.1", 5060), False)
        self.reply(b"d6:result10:load limite")
        self.failureResultOf(d, RelayUnavailable)
        d = self.node.offer("c7", "ft", "b1", "stranger", SDP, ("127.0.0.1", 5060), False)
        self.failureResultOf(d, ValueError)

    def test_forks_placed_at_once_go_to_the_same_daemon(self) -> None:
        second = Backend(("127.0.0.1", 2224), self.client)
        self.pool.backends.append(second)
        source = ("127.0.0.1", 5060)
        first = self.node.offer("c8", "ft", "b1", "caller", SDP, source, False)
        other = self.node.offer("c8", "ft", "b2", "caller", SDP, source, False)
        # One look for the call on each daemon (it may have been placed elsewhere), then one offer.
        for _ in range(2):
            self.assertEqual(self.lastRequest()["command"], b"query")
            self.reply(UNKNOWN)
        self.assertEqual(len(self.transport.sent), 3)
        self.reply()
        self.successResultOf(first)
        self.assertEqual(self.transport.sent[-1][1], ENGINE)
        self.reply()
        self.successResultOf(other)

    def test_an_answer_offered_elsewhere_finds_its_daemon(self) -> None:
        # Two daemons: the call was offered (by another server) on the second.
        self.pool.backends.append(Backend(OTHER, self.client))
        source = ("127.0.0.1", 5060)
        d = self.node.answer("c9", "ft", "tt", "1", "callee", SDP, source, False)
        request = self.lastRequest()
        self.assertEqual(
            (self.transport.sent[-1][1], request["command"], request["from-tag"], request["to-tag"]),
            (ENGINE, b"answer", b"ft", b"tt"),
        )
        self.reply(UNKNOWN)
        self.assertNoResult(d)
        self.assertEqual((self.transport.sent[-1][1], self.lastRequest()["command"]), (OTHER, b"answer"))
        self.reply()
        self.assertEqual(self.successResultOf(d), RELAYED)
        # From now on the call is the second daemon's: a re-INVITE, the keep-alive, the hang-up.
        sent = len(self.transport.sent)
        d = self.node.offer("c9", "ft", "1", "callee", SDP, source, False)
        self.assertEqual(len(self.transport.sent), sent + 1)
        request = self.lastRequest()
        self.assertEqual(
            (self.transport.sent[-1][1], request["command"], request["from-tag"], request["to-tag"]),
            (OTHER, b"offer", b"tt", b"ft"),
        )
        self.reply()
        self.successResultOf(d)
        d = self.node.answer("c9", "ft", "tt", "1", "caller", SDP, source, False)
        self.reply()
        self.successResultOf(d)
        deleted = self.node.delete("c9", "ft")
        self.assertEqual((self.transport.sent[-1][1], self.lastRequest()["command"]), (OTHER, b"delete"))
        self.reply(b"d6:result2:oke")
        self.successResultOf(deleted)
        self.assertEqual(self.node.placement.sessions, {})

    def test_an_answer_no_daemon_knows_is_refused(self) -> None:
        self.pool.backends.append(Backend(OTHER, self.client))
        d = self.node.answer("c10", "ft", "tt", "1", "callee", SDP, ("127.0.0.1", 5060), False)
        self.reply(UNKNOWN)
        self.reply(UNKNOWN)
        failure = self.failureResultOf(d, UnknownSession)
        self.assertIn("Unknown call-id", failure.getErrorMessage())
        self.assertEqual(self.node.placement.sessions, {})

    def test_keepalive_of_a_call_adopted_from_its_answer(self) -> None:
        node = RtpengineNode("fr", self.pool, self.clock, keepalive=30.0)
        d = node.answer("c11", "ft", "tt", "1", "callee", SDP, ("127.0.0.1", 5060), False)
        self.reply()
        self.successResultOf(d)
        self.clock.advance(31)
        sent = len(self.transport.sent)
        kept = node.keepAlive("c11", "ft", None)
        # No offer went through this node: the answer alone, as it was.
        self.assertEqual(len(self.transport.sent), sent + 1)
        request = self.lastRequest()
        self.assertEqual((request["command"], request["from-tag"], request["to-tag"]), (b"answer", b"ft", b"tt"))
        self.reply()
        self.assertTrue(self.successResultOf(kept))

    def test_an_unknown_offer_on_several_daemons_asks_them_first(self) -> None:
        self.pool.backends.append(Backend(OTHER, self.client))
        source = ("127.0.0.1", 5060)
        # A new call: neither daemon has it, the offer goes to the next in turn.
        d = self.node.offer("c12", "ft", "1", "caller", SDP, source, False)
        for address in (ENGINE, OTHER):
            self.assertEqual((self.transport.sent[-1][1], self.lastRequest()["command"]), (address, b"query"))
            self.reply(UNKNOWN)
        self.assertEqual(self.lastRequest()["command"], b"offer")
        self.reply()
        self.successResultOf(d)
        # The caller's re-INVITE of a call another server placed on the second daemon goes there.
        d = self.node.offer("c13", "ft", "1", "caller", SDP, source, False)
        self.reply(UNKNOWN)
        self.reply(b"d4:tagsd2:ftd13:subscriptionsld3:tag2:tt4:type12:offer/answeree3:tag2:ftee6:result2:oke")
        request = self.lastRequest()
        self.assertEqual(
            (self.transport.sent[-1][1], request["command"], request["from-tag"], request["to-tag"]),
            (OTHER, b"offer", b"ft", b"tt"),
        )
        self.reply()
        self.successResultOf(d)


class ServiceTests(TestCase):
    def test_nodes_provide_irelay(self) -> None:
        from zope.interface.verify import verifyObject

        from aetasip.interfaces import IRelay

        clock = Clock()
        client, _ = makeClient(clock)
        pool = NgPool("fr", [Backend(ENGINE, client)], clock)
        self.assertTrue(verifyObject(IRelay, RtpengineNode("fr", pool)))

    def test_a_socket_per_address_family_opened_at_start(self) -> None:
        from aetasip import config
        from aetasip.relay.rtpengine import makeNode

        class UDP:
            def __init__(self) -> None:
                self.listening: list[tuple[Any, str]] = []

            def listenUDP(self, port: int, protocol: Any, interface: str) -> Any:
                self.listening.append((protocol, interface))
                protocol.transport = self
                return self

            def write(self, datagram: bytes, address: Any) -> None:
                pass

            def callLater(self, *args: Any) -> Any:
                return Clock().callLater(*args)

            def stopListening(self) -> None:
                self.listening.clear()

        udp = UDP()
        options = {"kind": "rtpengine", "ng": ["127.0.0.1:2223", "127.0.0.1:2224", "[::1]:2223"], "retries": 0}
        node = makeNode("fr", options, config.build({}), udp)
        self.assertEqual(udp.listening, [])
        node.startService()
        self.assertEqual(sorted(interface for _, interface in udp.listening), ["127.0.0.1", "::1"])
        self.assertEqual(
            [b.address for b in node.pool.backends], [("127.0.0.1", 2223), ("127.0.0.1", 2224), ("::1", 2223)]
        )
        self.assertEqual(node.pool.backends[0].client.retries, 0)
        self.successResultOf(node.stopService())
        self.assertEqual(udp.listening, [])

    def test_bad_configuration(self) -> None:
        from aetasip import config

        def build(**options: Any) -> Any:
            return config.build(
                {
                    "calls.media_handler": "relay",
                    "relay.nodes": {"fr": {"kind": "rtpengine", **options}},
                    "relay.default_node": "fr",
                }
            )

        for option, value in (
            ("ng", []),
            ("ng", "127.0.0.1:2223"),
            ("ng", ["localhost:2223"]),
            ("ng", ["127.0.0.1:1", "127.0.0.1:1"]),
            ("timeout", 0),
            ("retries", 1.5),
            ("max_pending", True),
            ("recheck_interval", "10"),
            ("keepalive", -1),
            ("keepalive", 7200),
            ("ports", [1, 2]),
        ):
            options = {"ng": ["127.0.0.1:2223"], option: value}
            with self.subTest(option=option, value=value), self.assertRaises(config.ConfigError) as raised:
                build(**options)
            self.assertTrue(str(raised.exception).startswith(f"configuration key relay.nodes.fr.{option} = "))
        with self.assertRaises(config.ConfigError) as raised:
            build()
        self.assertTrue(str(raised.exception).startswith("configuration key relay.nodes.fr.ng = None"))
        self.assertEqual(
            build(ng=["[::1]:2223", "127.0.0.1:2224"])["relay.nodes"]["fr"]["ng"], ["[::1]:2223", "127.0.0.1:2224"]
        )
