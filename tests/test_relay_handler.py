"""
The relay's media handler (L{aetasip.relay.handler.RelayHandler}): the
decision per leg and its reason kept on the call, the node chosen by the
caller's registrar domain, refusals (400 for bad SDP, 503 without ports),
the final statistics on the call, and the media timeout; with a recording
node and a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from aetasip import config
from aetasip.calls.call import Call, EndCause, Leg
from aetasip.calls.media import MediaRefused
from aetasip.interfaces import IMediaHandler, IMediaHandlerFactory, IRelay
from aetasip.relay.builtin import NoPortsLeft
from aetasip.relay.handler import RelayHandler, makeRelayHandler
from aetasip.relay.stats import LegStats, RelayStats, StreamStats
from aetasip.routing import Account, Group
from tests.routingdirectory import MemoryDirectory
from tests.servers import freePortBlock

PUBLIC_A = ("198.51.100.7", 5060)
PUBLIC_B = ("203.0.113.9", 5060)


def sdp(host: str, port: int = 4000) -> bytes:
    return f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\n".encode()


@implementer(IRelay)
class RecordingNode:
    """An L{IRelay} that records what it is asked and points SDP at 192.0.2.1."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.calls: list[tuple[Any, ...]] = []
        self.failure: Exception | None = None
        self.stats = RelayStats(name)

    def offer(self, callID: str, fromTag: str, branch: str, sender: str, sdp: bytes, source: Any, nat: bool) -> Any:
        self.calls.append(("offer", branch, sender, source, nat))
        return self._rewrite(sdp)

    def answer(
        self, callID: str, fromTag: str, toTag: Any, branch: str, sender: str, sdp: bytes, source: Any, nat: bool
    ) -> Any:
        self.calls.append(("answer", branch, sender, source, nat))
        return self._rewrite(sdp)

    def _rewrite(self, body: bytes) -> Deferred[bytes]:
        if self.failure is not None:
            return fail(self.failure)
        from aetasip.relay.sdp import parse

        return succeed(parse(body).rewrite([("192.0.2.1", 55004)]))

    def delete(self, callID: str, fromTag: str) -> Deferred[RelayStats]:
        self.calls.append(("delete",))
        return succeed(self.stats)

    def query(self, callID: str, fromTag: str) -> Deferred[RelayStats]:
        return succeed(self.stats)

    def sessions(self) -> Deferred[list[Any]]:
        return succeed([])


class Control:
    """An L{ICallControl} recording releases."""

    def __init__(self) -> None:
        self.released: list[tuple[Call, str, str]] = []

    def active(self) -> list[Call]:
        return []

    def find(self, callID: str) -> list[Call]:
        return []

    def release(self, call: Call, cause: str, detail: str) -> None:
        self.released.append((call, cause, detail))
        call.end(cause, detail=detail)


class HandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.nodes = {"local": RecordingNode("local"), "fr": RecordingNode("fr")}
        self.directory = MemoryDirectory()
        self.control = Control()
        self.handler = self.makeHandler()

    def makeHandler(self, mode: str = "auto", timeout: float = 60.0) -> RelayHandler:
        return RelayHandler(
            self.nodes, "local", {"sip.aeta-audio.fr": "fr"}, mode, self.directory, self.control, timeout, self.clock
        )

    def call(
        self,
        callerSource: tuple[str, int] = PUBLIC_A,
        calleeSource: tuple[str, int] = PUBLIC_B,
        calleeContact: str | None = None,
        domain: str = "sip.aeta-audio.com",
        caller: str = "45675001",
        callee: str = "45675002",
    ) -> Call:
        call = Call(
            self.clock.seconds, "cid", "tagA", caller, "premium", domain, Leg(callerSource, "udp", ("0", 1)), callee
        )
        contact = calleeContact or f"sip:{callee}@{calleeSource[0]}:{calleeSource[1]}"
        call.addTarget(callee, Leg(calleeSource, "udp", ("0", 1), None, contact))
        return call

    def offer(self, call: Call, body: bytes, sender: str = "caller") -> bytes:
        return self.successResultOf(self.handler.offer(call, "1", sender, body))

    def answer(self, call: Call, body: bytes, sender: str = "callee") -> bytes:
        return self.successResultOf(self.handler.answer(call, "1", sender, body))

    def startHandler(self, timeout: float) -> None:
        """A running handler (its media checks on the clock) with a media timeout of C{timeout} s."""
        self.handler = self.makeHandler(timeout=timeout)
        self.handler.startService()
        self.addCleanup(self.handler.stopService)

    def answeredCall(self, offer: bytes = sdp("10.1.1.1"), answer: bytes = sdp(PUBLIC_B[0])) -> Call:
        """A call offered (the caller behind NAT, by default) and answered by its first target."""
        call = self.call()
        self.offer(call, offer)
        self.answer(call, answer)
        call.answered(call.targets[0], "tagB")
        return call

    def test_provides_the_interfaces(self) -> None:
        verifyObject(IMediaHandler, self.handler)
        from twisted.plugins.aetasip_relay import relay

        verifyObject(IMediaHandlerFactory, relay)

    def test_two_well_configured_agents_keep_direct_media(self) -> None:
        call = self.call()
        self.assertEqual(self.offer(call, sdp(PUBLIC_A[0])), sdp(PUBLIC_A[0]))
        self.assertEqual(self.answer(call, sdp(PUBLIC_B[0])), sdp(PUBLIC_B[0]))
        self.assertEqual(self.nodes["local"].calls, [])
        record = call.media["relay"]
        self.assertEqual(record["relayed"], {"1": False})
        self.assertEqual(record["legs"]["caller"]["reason"], "direct media: its addresses are the one it signals from")
        self.handler.callEnded(call)
        self.assertEqual(self.nodes["local"].calls, [])

    def test_a_private_address_in_the_caller_sdp_is_relayed_and_latched(self) -> None:
        call = self.call()
        offered = self.offer(call, sdp("192.168.1.20"))
        self.assertIn(b"c=IN IP4 192.0.2.1\r\n", offered)
        self.answer(call, sdp(PUBLIC_B[0]))
        self.assertEqual(
            self.nodes["local"].calls,
            [("offer", "1", "caller", PUBLIC_A, True), ("answer", "1", "callee", PUBLIC_B, False)],
        )
        legs = call.media["relay"]["legs"]
        self.assertEqual(
            legs["caller"]["reason"],
            "behind NAT: its SDP advertises the private address 192.168.1.20, it signals from 198.51.100.7",
        )
        self.assertFalse(legs["1"]["relay"])
        self.assertEqual(call.media["relay"]["relayed"], {"1": True})

    def test_a_callee_registered_behind_nat_is_relayed_from_the_offer(self) -> None:
        call = self.call(calleeContact="sip:45675002@10.0.0.3:5060")
        self.assertIn(b"192.0.2.1", self.offer(call, sdp(PUBLIC_A[0])))
        self.answer(call, sdp("10.0.0.3"))
        self.assertEqual(self.nodes["local"].calls[0][-1], False)
        self.assertEqual(self.nodes["local"].calls[1], ("answer", "1", "callee", PUBLIC_B, True))
        self.assertIn("10.0.0.3", call.media["relay"]["legs"]["1"]["reason"])

    def test_a_caller_contact_that_is_not_its_source_is_relayed(self) -> None:
        call = self.call()
        call.callerLeg.contact = "<sip:45675001@198.51.100.7:40111;transport=udp>"
        self.assertIn(b"192.0.2.1", self.offer(call, sdp(PUBLIC_A[0])))
        self.assertEqual(
            call.media["relay"]["legs"]["caller"]["reason"],
            "behind NAT: its Contact names port 40111, it signals from port 5060 (symmetric NAT)",
        )

    def test_symmetric_nat_seen_in_the_contact_port(self) -> None:
        call = self.call(calleeContact=f"sip:45675002@{PUBLIC_B[0]}:5099")
        self.offer(call, sdp(PUBLIC_A[0]))
        self.assertIn("symmetric NAT", call.media["relay"]["legs"]["1"]["reason"])

    def test_mode_always_in_the_configuration(self) -> None:
        self.handler = self.makeHandler("always")
        call = self.call()
        self.assertIn(b"192.0.2.1", self.offer(call, sdp(PUBLIC_A[0])))
        self.assertEqual(self.nodes["local"].calls[0][-1], False)  # not behind NAT: no latching from any port
        self.assertEqual(call.media["relay"]["legs"]["caller"]["reason"], "relay always (configuration)")

    def test_the_group_and_the_account_settings_win(self) -> None:
        self.directory.groups["4567"] = Group("4567", relay="always")
        self.directory.accounts["45675001"] = Account("45675001", "premium", "4567")
        self.directory.accounts["45675002"] = Account("45675002", "premium", "4567", relay="never")
        call = self.call()
        self.assertIn(b"192.0.2.1", self.offer(call, sdp(PUBLIC_A[0])))
        legs = call.media["relay"]["legs"]
        self.assertEqual((legs["caller"]["mode"], legs["caller"]["mode_from"]), ("always", "group 4567"))
        self.assertEqual((legs["1"]["mode"], legs["1"]["mode_from"]), ("never", "account 45675002"))

    def test_never_on_a_natted_leg_keeps_direct_media(self) -> None:
        self.directory.accounts["45675001"] = Account("45675001", "premium", relay="never")
        call = self.call()
        self.assertEqual(self.offer(call, sdp("192.168.1.20")), sdp("192.168.1.20"))
        self.assertEqual(call.media["relay"]["legs"]["caller"]["reason"], "relay never (account 45675001)")

    def test_the_caller_domain_picks_the_node(self) -> None:
        call = self.call(domain="SIP.aeta-audio.fr")
        self.offer(call, sdp("192.168.1.20"))
        self.assertEqual(call.media["relay"]["node"], "fr")
        self.assertEqual(len(self.nodes["fr"].calls), 1)
        self.assertEqual(self.nodes["local"].calls, [])

    def test_bad_sdp_is_refused_with_400(self) -> None:
        failure = self.failureResultOf(self.handler.offer(self.call(), "1", "caller", b"v=0\r\nnonsense\r\n"))
        self.assertEqual(
            (failure.value.code, failure.value.reason),  # type: ignore[attr-defined]
            (400, "Bad SDP: SDP line 2 is not type=value"),
        )

    def test_no_ports_left_is_refused_with_503(self) -> None:
        self.nodes["local"].failure = NoPortsLeft("none")
        failure = self.failureResultOf(self.handler.offer(self.call(), "1", "caller", sdp("10.1.1.1")))
        self.assertEqual(failure.check(MediaRefused), MediaRefused)
        self.assertEqual(failure.value.code, 503)  # type: ignore[attr-defined]

    def test_a_node_that_fails_otherwise_refuses_with_503(self) -> None:
        self.nodes["local"].failure = ConnectionError("node down")
        failure = self.failureResultOf(self.handler.offer(self.call(), "1", "caller", sdp("10.1.1.1")))
        self.assertEqual((failure.value.code, failure.value.reason), (503, "Media relay unavailable"))  # type: ignore[attr-defined]
        self.flushLoggedErrors(ConnectionError)

    def test_the_end_of_the_call_deletes_the_session_and_keeps_its_statistics(self) -> None:
        call = self.call()
        self.offer(call, sdp("10.1.1.1"))
        self.nodes["local"].stats = RelayStats("local", LegStats(("198.51.100.7", 4000), StreamStats(10)))
        call.end(EndCause.CALLER_BYE)
        self.handler.callEnded(call)
        self.assertEqual(self.nodes["local"].calls[-1], ("delete",))
        self.assertEqual(call.media["relay"]["stats"].caller.received.packets, 10)

    def test_media_timeout_releases_an_answered_call(self) -> None:
        self.startHandler(timeout=20)
        call = self.answeredCall()
        node = self.nodes["local"]
        # Media flows both ways for a while: nothing happens.
        for _ in range(10):
            self.clock.advance(5)
            now = self.clock.seconds()
            node.stats = RelayStats(
                "local",
                LegStats(received=StreamStats(1, lastPacketAt=now)),
                LegStats(received=StreamStats(1, lastPacketAt=now)),
            )
        self.assertEqual(self.control.released, [])
        # Then it stops.
        self.clock.advance(20)
        self.assertEqual(self.control.released, [])
        self.clock.advance(5)
        ((released, cause, detail),) = self.control.released
        self.assertIs(released, call)
        self.assertEqual((cause, detail), (EndCause.MEDIA_TIMEOUT, "no media for 25 s"))

    def test_a_call_without_any_media_times_out_from_its_answer(self) -> None:
        self.startHandler(timeout=10)
        call = self.call()
        self.offer(call, sdp("10.1.1.1"))
        self.clock.advance(100)  # ringing for long: no timeout before the answer
        self.assertEqual(self.control.released, [])
        call.answered(call.targets[0], "tagB")
        self.clock.advance(12.5)
        self.assertEqual([cause for _, cause, _ in self.control.released], [EndCause.MEDIA_TIMEOUT])

    def test_a_call_whose_node_lost_its_session_is_released(self) -> None:
        """rtpengine deleted it (its own timeout) or restarted: the media is gone, the call ends."""
        self.startHandler(timeout=20)
        call = self.answeredCall()
        self.nodes["local"].stats = None  # type: ignore[assignment]
        self.clock.advance(5)
        self.assertEqual(
            self.control.released, [(call, EndCause.MEDIA_FAILURE, "relay node local lost the call's media session")]
        )

    def test_a_node_that_keeps_sessions_alive_hears_of_each_check(self) -> None:
        """With the newest packet of the call: the node decides when its daemon must hear of it."""
        kept: list[tuple[str, str, float | None]] = []
        node = self.nodes["local"]
        node.keepAlive = lambda callID, fromTag, last: kept.append((callID, fromTag, last))  # type: ignore[attr-defined]
        self.startHandler(timeout=20)
        self.answeredCall(directed("10.1.1.1", 4000, "inactive"), directed(PUBLIC_B[0], 5000, "inactive"))
        node.stats = RelayStats("local", LegStats(received=StreamStats(1, lastPacketAt=990.0)))
        self.clock.advance(5)
        self.clock.advance(5)
        self.assertEqual(kept, [("cid", "tagA", 990.0), ("cid", "tagA", 990.0)])
        self.assertEqual(self.control.released, [])

    def test_a_hunting_member_that_did_not_answer_gives_its_ports_back(self) -> None:
        node = self.nodes["local"]
        dropped: list[tuple[str, str, str]] = []
        node.deleteBranch = lambda *args: dropped.append(args)  # type: ignore[attr-defined]
        call = self.call()
        self.offer(call, sdp("10.1.1.1"))
        call.targets[0].status = 408  # the first member did not answer
        second = call.addTarget("45675003", Leg(PUBLIC_B, "udp", ("0", 1), None, "sip:45675003@203.0.113.9:5060"))
        self.successResultOf(self.handler.offer(call, second.key, "caller", sdp("10.1.1.1")))
        self.successResultOf(self.handler.offer(call, second.key, "caller", sdp("10.1.1.1")))
        self.assertEqual(dropped, [("cid", "tagA", "1")])
        self.assertEqual(call.media["relay"]["relayed"], {"1": True, "2": True})

    def test_forks_another_branch_answered_give_their_ports_back(self) -> None:
        """Once the call is answered, the other forks' ports go back (within the media check's period)."""
        self.startHandler(timeout=20)
        node = self.nodes["local"]
        dropped: list[tuple[str, str, str]] = []
        node.deleteBranch = lambda *args: dropped.append(args)  # type: ignore[attr-defined]
        call = self.call()
        second = call.addTarget("45675002", Leg(PUBLIC_B, "udp", ("0", 1), None, "sip:45675002@203.0.113.9:5070"))
        self.offer(call, sdp("10.1.1.1"))
        self.successResultOf(self.handler.offer(call, second.key, "caller", sdp("10.1.1.1")))
        self.successResultOf(self.handler.answer(call, second.key, "callee", sdp(PUBLIC_B[0])))
        self.assertEqual(dropped, [])
        call.answered(second, "tagB")  # the first fork is being cancelled: no final status yet
        self.clock.advance(5)
        self.assertEqual(dropped, [("cid", "tagA", "1")])
        self.clock.advance(5)
        self.assertEqual(dropped, [("cid", "tagA", "1")])

    def test_a_direct_fork_that_answered_is_not_watched(self) -> None:
        """
        A fork to a callee behind NAT was relayed, another fork (direct)
        answered: the call's media never passes the node, so neither its
        silence there nor the node's loss of the session ends the call.
        """
        self.startHandler(timeout=20)
        call = self.call(calleeContact="sip:45675002@10.0.0.3:5060")
        second = call.addTarget("45675002", Leg(PUBLIC_B, "udp", ("0", 1), None, "sip:45675002@203.0.113.9:5060"))
        self.offer(call, sdp(PUBLIC_A[0]))
        self.assertEqual(
            self.successResultOf(self.handler.offer(call, second.key, "caller", sdp(PUBLIC_A[0]))), sdp(PUBLIC_A[0])
        )
        self.successResultOf(self.handler.answer(call, second.key, "callee", sdp(PUBLIC_B[0])))
        self.assertEqual(call.media["relay"]["relayed"], {"1": True, second.key: False})
        call.answered(second, "tagB")
        self.nodes["local"].stats = None  # type: ignore[assignment]
        self.clock.advance(100)
        self.assertEqual(self.control.released, [])

    def test_made_from_the_configuration(self) -> None:
        cfg = config.build(
            {
                "calls.media_handler": "relay",
                "relay.nodes": {
                    "local": {"kind": "builtin", "address": "127.0.0.1", "ports": list(freePortBlock(100))}
                },
                "relay.media_timeout": 30,
            }
        )
        handler = makeRelayHandler(cfg, self.control, self.directory, self.clock)
        self.assertEqual((handler.defaultNode, handler.mediaTimeout), ("local", 30))
        self.assertEqual(handler.nodes["local"].advertise, "127.0.0.1")  # type: ignore[attr-defined]


class ClockReactor(Clock):
    """A L{Clock} a built-in node can run on (its sockets are never read here)."""

    def addReader(self, reader: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass


def directed(host: str, port: int, direction: str, connection: str | None = None) -> bytes:
    """An offer or answer with a direction attribute (and maybe another c= address)."""
    body = sdp(host, port) + f"a={direction}\r\n".encode()
    if connection is not None:
        body = body.replace(f"c=IN IP4 {host}".encode(), f"c=IN IP4 {connection}".encode())
    return body


class HoldTests(SynchronousTestCase):
    """
    The media timeout follows the directions each offer/answer negotiated:
    a party that is to send (C{sendrecv}, C{sendonly} towards a party
    that receives) and sends nothing, not even RTCP, for the timeout ends
    the call; a call on hold where nobody is to send (a=inactive,
    c=0.0.0.0) is not released; once resumed the timeout counts from the
    resumption. With the built-in node on a Clock.
    """

    def setUp(self) -> None:
        from aetasip.relay.builtin import BuiltinRelay

        self.clock = ClockReactor()
        self.clock.advance(1000)
        self.node = BuiltinRelay("local", "127.0.0.1", (47700, 47799), reactor=self.clock)
        self.control = Control()
        self.handler = RelayHandler(
            {"local": self.node}, "local", {}, "always", MemoryDirectory(), self.control, 20, self.clock
        )
        self.handler.startService()
        self.addCleanup(self.handler.stopService)

    def answeredCall(self, offered: str = "sendrecv", answered: str = "sendrecv") -> Call:
        """A call offered by the caller with direction C{offered}, answered with C{answered}."""
        call = Call(self.clock.seconds, "cid", "tagA", "45675001", "premium", "d", Leg(PUBLIC_A, "udp", ("0", 1)), "2")
        call.addTarget("45675002", Leg(PUBLIC_B, "udp", ("0", 1), None, "sip:45675002@203.0.113.9:5060"))
        self.exchange(call, "caller", offered, answered)
        call.answered(call.targets[0], "tagB")
        return call

    def exchange(
        self, call: Call, offerer: str, offered: str, answered: str, held: str | None = None, heldBy: str = ""
    ) -> None:
        """An offer/answer (the initial one, or a re-INVITE's) through handler and node."""
        answerer = "callee" if offerer == "caller" else "caller"
        hosts = {"caller": PUBLIC_A[0], "callee": PUBLIC_B[0]}
        offer = directed(hosts[offerer], 4000, offered, held if heldBy == offerer else None)
        answer = directed(hosts[answerer], 5000, answered, held if heldBy == answerer else None)
        self.assertIn(b"m=audio 477", self.successResultOf(self.handler.offer(call, "1", offerer, offer)))
        self.successResultOf(self.handler.answer(call, "1", answerer, answer))

    def released(self) -> list[str]:
        return [cause for _, cause, _ in self.control.released]

    def test_a_silent_call_times_out(self) -> None:
        self.answeredCall()
        self.clock.advance(25)
        self.assertEqual(self.released(), [EndCause.MEDIA_TIMEOUT])

    def sends(self, party: str) -> None:
        """C{party} sends a packet (RTCP: it counts as much as RTP) on each of its streams, now."""
        session = self.node._sessions[("cid", "tagA")]
        parties = [session.caller] if party == "caller" else list(session.callees.values())
        for each in parties:
            for stream in each.streams:
                if stream is not None:
                    stream.rtcpLast = self.clock.seconds()

    def details(self) -> list[str]:
        return [detail for _, _, detail in self.control.released]

    def test_held_calls_survive_and_time_out_once_resumed(self) -> None:
        """Nobody is to send: neither party's silence counts."""
        holds = [
            ("caller", "inactive", "inactive", None, ""),
            ("callee", "inactive", "inactive", None, ""),
            ("caller", "sendonly", "inactive", None, ""),  # the holder on hold too
            ("caller", "sendrecv", "sendrecv", "0.0.0.0", "caller"),  # RFC 2543 hold, the offerer's address
            ("callee", "sendonly", "recvonly", "0.0.0.0", "callee"),
        ]
        for offerer, offered, answered, held, heldBy in holds:
            self.control.released = []
            call = self.answeredCall()
            self.clock.advance(5)
            self.exchange(call, offerer, offered, answered, held, heldBy)
            self.clock.advance(300)
            self.assertEqual(self.released(), [], (offerer, offered, held))
            self.assertEqual(call.media["relay"]["relayed"], {"1": True})
            # Resumed (by either party): silence counts from the resumption.
            self.exchange(call, "caller" if offerer == "callee" else "callee", "sendrecv", "sendrecv")
            self.clock.advance(15)
            self.assertEqual(self.released(), [], (offerer, offered, held))
            self.clock.advance(10)
            self.assertEqual(self.released(), [EndCause.MEDIA_TIMEOUT], (offerer, offered, held))
            self.assertEqual(self.details(), ["no media for 25 s"])
            self.successResultOf(self.node.delete("cid", "tagA"))
            self.handler.callEnded(call)

    def test_a_sendonly_holder_is_timed_and_the_held_party_is_not(self) -> None:
        """
        Hold with a=sendonly (music on hold): the holder is to send, the
        held party is not; the call lasts while the holder sends, and ends
        once it stops.
        """
        holds = [
            ("caller", "sendonly", "recvonly", "caller"),
            ("callee", "sendonly", "recvonly", "callee"),
            ("callee", "recvonly", "sendonly", "caller"),
        ]
        for offerer, offered, answered, holder in holds:
            self.control.released = []
            call = self.answeredCall()
            self.clock.advance(5)
            self.exchange(call, offerer, offered, answered)
            for _ in range(60):
                self.sends(holder)
                self.clock.advance(5)
            self.assertEqual(self.released(), [], (offerer, offered))
            self.clock.advance(20)
            self.assertEqual(self.released(), [EndCause.MEDIA_TIMEOUT], (offerer, offered))
            (detail,) = self.details()
            self.assertTrue(detail.startswith(f"no media from the {holder} for 2"), detail)
            self.successResultOf(self.node.delete("cid", "tagA"))
            self.handler.callEnded(call)

    def test_a_one_way_call_ends_when_its_sender_stops(self) -> None:
        """A codec sending to a receiver (sendonly/recvonly from the start): the receiver's silence is right."""
        self.answeredCall("sendonly", "recvonly")
        for _ in range(60):
            self.sends("caller")
            self.clock.advance(5)
        self.assertEqual(self.released(), [])
        self.clock.advance(15)
        self.assertEqual(self.released(), [])
        self.clock.advance(5)
        self.assertEqual(self.released(), [EndCause.MEDIA_TIMEOUT])
        self.assertEqual(self.details(), ["no media from the caller for 25 s"])

    def test_a_two_way_call_with_one_party_silent_ends(self) -> None:
        """One-way audio where both were to send (the callee's media lost on its way): released."""
        call = self.answeredCall()
        for _ in range(10):
            self.sends("caller")
            self.clock.advance(2.5)
        self.assertEqual(self.released(), [EndCause.MEDIA_TIMEOUT])
        self.assertEqual(self.details(), ["no media from the callee for 25 s"])
        self.assertTrue(call.ended)

    def test_a_hold_offer_that_gets_no_answer_changes_nothing(self) -> None:
        """A re-INVITE to hold refused by the other party (488): the session, and its timeout, stay."""
        call = self.answeredCall()
        self.successResultOf(self.handler.offer(call, "1", "caller", directed(PUBLIC_A[0], 4000, "inactive")))
        self.clock.advance(25)
        self.assertEqual(self.released(), [EndCause.MEDIA_TIMEOUT])

    def test_one_section_both_ways_keeps_the_timeout(self) -> None:
        """Video held, audio flowing: the call is not on hold."""
        call = self.answeredCall()
        two = b"m=audio 4000 RTP/AVP 8\r\na=sendrecv\r\nm=video 4002 RTP/AVP 96\r\na=inactive\r\n"
        offer = sdp(PUBLIC_A[0]).replace(b"m=audio 4000 RTP/AVP 8\r\n", two)
        answer = sdp(PUBLIC_B[0], 5000).replace(b"m=audio 5000 RTP/AVP 8\r\n", two.replace(b"4000", b"5000"))
        self.successResultOf(self.handler.offer(call, "1", "caller", offer))
        self.successResultOf(self.handler.answer(call, "1", "callee", answer))
        self.clock.advance(25)
        self.assertEqual(self.released(), [EndCause.MEDIA_TIMEOUT])
