"""
Attacks against the running service on loopback (issue 9): TCP slowloris
and connection floods, sipvicious' svmap, svwar and svcrack, and a flood
of bad REGISTERs, each while honest agents on other sources keep working.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from aetasip.store import Store
from tests.servers import RunningService, deferLater, freePort, requireTool, run
from tests.sipagent import Agent, Reply
from tests.sipp import Sipp

PASSWORD = "Sx9-fq2Lw7"


def provision(service: RunningService, numbers: list[str]) -> None:
    store = Store(service.storeURL)
    store.open()
    for number in numbers:
        store.addAccount(number, "premium", PASSWORD, "aetasip")
    store.close()


class Holder(protocol.Protocol):
    """A TCP client that sends what it is told and notes when it is closed."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


def udpExchange(data: bytes, port: int, source: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    """
    Send C{data} over UDP from C{source}; return the first answer. Blocking
    and bounded: run it in a thread (the service shares the reactor).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        return sock.recvfrom(65535)[0]


class TCPAttackTests(TestCase):
    timeout = 60

    def setUp(self):  # type: ignore[no-untyped-def]
        directory = self.mktemp()
        os.makedirs(directory)
        self.server = RunningService(
            directory,
            sip__tcp_max_per_source=20,
            sip__tcp_max_connections=200,
            sip__tcp_message_timeout=2,
            sip__tcp_unbound_timeout=30,
        )
        provision(self.server, ["45675001"])
        self.addCleanup(self.server.stop)
        return self.server.start()

    async def hold(self, count: int, payload: bytes) -> list[Holder]:
        holders = []
        for _ in range(count):
            holder = Holder()
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.ports[0])
            await connectProtocol(endpoint, holder)
            holder.transport.write(payload)  # type: ignore[union-attr]
            holders.append(holder)
            self.addCleanup(self.drop, holder)
        return holders

    @staticmethod
    def drop(holder: Holder) -> Deferred[None]:
        if holder.transport is not None and holder.transport.connected:  # type: ignore[attr-defined]
            holder.transport.abortConnection()  # type: ignore[attr-defined]
        return holder.closed

    async def registerOverTCP(self, source: str) -> int:
        """A full REGISTER over a new TCP connection from C{source}; its final status."""
        agent = Agent("45675001", PASSWORD, source=(source, 5999), transport="tcp")
        holder = Holder()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.server.ports[0], bindAddress=(source, 0))
        await connectProtocol(endpoint, holder)
        self.addCleanup(self.drop, holder)
        holder.transport.write(agent.register())  # type: ignore[union-attr]
        challenge = await self.response(holder)
        holder.received = b""
        holder.transport.write(agent.register(auth=challenge.challenge()))  # type: ignore[union-attr]
        return (await self.response(holder)).code

    async def response(self, holder: Holder) -> Reply:
        for _ in range(100):
            if b"\r\n\r\n" in holder.received:
                return Reply(holder.received)
            await deferLater(0.02)
        raise AssertionError("no response")

    async def test_slowloris_is_cut_off_and_others_register(self) -> None:
        # Half-sent headers on as many connections as one source may open.
        holders = await self.hold(20, b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;bra")
        self.assertEqual(await self.registerOverTCP("127.0.0.2"), 200)
        # Each is closed by the server once its message is overdue.
        for holder in holders:
            await holder.closed

    async def test_a_connection_flood_leaves_the_service_answering(self) -> None:
        holders = await self.hold(60, b"")
        await deferLater(0.5)
        open_ = [h for h in holders if h.transport.connected]  # type: ignore[union-attr]
        self.assertEqual(len(open_), 20)
        self.assertEqual(self.server.sip.streamSettings.limits.counters["refused"], 40)
        self.assertEqual(await self.registerOverTCP("127.0.0.3"), 200)
        options = (
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-o1;rport\r\n"
            b"From: <sip:45675001@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: flood-o1\r\n"
            b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        reply = Reply(await deferToThread(udpExchange, options, self.server.ports[0]))
        self.assertEqual(reply.code, 200)


CALLER, CALLEE = "45675001", "45675002"
# Agents on their own loopback addresses; sipvicious sends from 127.0.0.1
# (its -b option is ignored by svcrack 0.3.3).
CALLER_HOST, CALLEE_HOST, ATTACKER_HOST = "127.0.0.2", "127.0.0.3", "127.0.0.1"


FLOODER = """
import socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
end = time.monotonic() + seconds
sent = 0
while sent < count and time.monotonic() < end:
    data = (
        "REGISTER sip:127.0.0.1 SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-f%d\\r\\n"
        "From: <sip:45675001@127.0.0.1>;tag=f\\r\\nTo: <sip:45675001@127.0.0.1>\\r\\nCall-ID: flood-%d\\r\\n"
        "CSeq: 1 REGISTER\\r\\nAuthorization: Digest username=\\"45675001\\", realm=\\"aetasip\\", "
        "nonce=\\"x%d\\", uri=\\"sip:127.0.0.1\\", response=\\"00\\"\\r\\nContent-Length: 0\\r\\n\\r\\n"
    ) % (sent, sent, sent)
    try:
        sock.sendto(data.encode(), ("127.0.0.1", port))
    except OSError:
        pass
    sent += 1
print(sent)
"""


class RegisteringAgent(protocol.DatagramProtocol):
    """
    One agent on its own loopback address registering again and again
    (REGISTER, 401, REGISTER with digest, 200), retransmitting as RFC 3261
    Timer E says; counts its successes and failures.
    """

    def __init__(self, number: str, host: str, serverPort: int, rounds: int) -> None:
        self.agent = Agent(number, PASSWORD, source=(host, 0))
        self.server = ("127.0.0.1", serverPort)
        self.rounds = rounds
        self.succeeded = self.failed = 0
        self.done: Deferred[None] = Deferred()
        self._pending: bytes | None = None
        self._timer: Any = None
        self._deadline: Any = None

    def startProtocol(self) -> None:
        port = self.transport.getHost().port  # type: ignore[union-attr]
        self.agent.source = (self.agent.source[0], port)
        self.agent.contact = f"sip:{self.agent.number}@{self.agent.source[0]}:{port}"
        self._next()

    def _next(self) -> None:
        if self.succeeded + self.failed >= self.rounds:
            self.done.callback(None)
            return
        self._send(self.agent.register(expires=600))
        self._deadline = reactor.callLater(16, self._gaveUp)  # type: ignore[attr-defined]

    def _send(self, data: bytes, interval: float = 0.5) -> None:
        self._pending = data
        self.transport.write(data, self.server)  # type: ignore[union-attr]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = reactor.callLater(interval, self._send, data, min(2 * interval, 4.0))  # type: ignore[attr-defined]

    def _finish(self, ok: bool) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._pending = None
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        reactor.callLater(0.05, self._next)  # type: ignore[attr-defined]

    def _gaveUp(self) -> None:
        self._finish(False)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self._pending is None or not data.startswith(b"SIP/2.0 "):
            return
        reply = Reply(data)
        if reply.get("cseq") != f"{self.agent.cseq} REGISTER":
            return
        if reply.code == 401:
            self._send(self.agent.register(expires=600, auth=reply.challenge()))
        elif reply.code >= 200:
            self._finish(reply.code == 200)


class FloodTests(TestCase):
    timeout = 180

    def setUp(self):  # type: ignore[no-untyped-def]
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.server = RunningService(self.directory, flood__trusted=[])
        self.numbers = [f"4567{5001 + i}" for i in range(100)]
        provision(self.server, self.numbers)
        self.addCleanup(self.server.stop)
        return self.server.start()

    async def test_agents_register_while_one_source_floods_bad_registers(self) -> None:
        flooder = os.path.join(self.directory, "flooder.py")
        with open(flooder, "w") as f:
            f.write(FLOODER)
        flood = Deferred.fromCoroutine(run(sys.executable, flooder, str(self.server.ports[0]), "400000", "8"))
        await deferLater(0.5)
        agents = []
        for i, number in enumerate(self.numbers):
            agent = RegisteringAgent(number, f"127.0.1.{i + 1}", self.server.ports[0], rounds=10)
            port = reactor.listenUDP(0, agent, interface=f"127.0.1.{i + 1}")  # type: ignore[attr-defined]
            self.addCleanup(port.stopListening)
            agents.append(agent)
        for agent in agents:
            await agent.done
        out, err, code = await flood
        self.assertEqual(code, 0, err)
        succeeded = sum(a.succeeded for a in agents)
        failed = sum(a.failed for a in agents)
        self.assertEqual(succeeded + failed, 1000)
        self.assertGreaterEqual(succeeded, 999, f"{failed} of 1000 registrations failed")
        counters = self.server.sip.core.flood.counters
        self.assertEqual(counters["bans"], 1)
        self.assertGreater(counters["dropped"], 1000, out)


class SipviciousTests(TestCase):
    """
    sipvicious (Debian's C{sipvicious}) attacks the service while sipp
    agents on other sources register and call: the attacker is banned,
    learns nothing, and the agents never fail.
    """

    timeout = 180

    def setUp(self):  # type: ignore[no-untyped-def]
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), self.directory)
        # Loopback is trusted by default: here it is the Internet.
        # A new sipp for each call is a new agent for the number: it replaces the last.
        self.server = RunningService(self.directory, flood__trusted=[], registrar__conflict="replace")
        provision(self.server, [CALLER, CALLEE])
        self.addCleanup(self.server.stop)
        return self.server.start()

    def tool(self, name: str) -> str:
        return requireTool(self, name, "sipvicious")

    async def call(self) -> None:
        """CALLEE registers from its address and answers; CALLER calls it from its own."""
        port = self.server.ports[0]
        callee = await self.sipp.callee(
            CALLEE, PASSWORD, "call_uas_answer.xml", port, self.server.sip.location, host=CALLEE_HOST
        )
        caller = await self.sipp.call(CALLER, PASSWORD, CALLEE, "call_uac.xml", port, host=CALLER_HOST)
        answered = await callee.done
        self.assertEqual(caller.code, 0, caller.detail)
        self.assertEqual(answered.code, 0, answered.detail)

    async def test_svcrack_is_banned_and_the_codec_keeps_calling(self) -> None:
        dictionary = os.path.join(self.directory, "passwords.txt")
        with open(dictionary, "w") as f:
            f.writelines(f"guess{i}\n" for i in range(300))
            f.write(PASSWORD + "\n")
        attack = Deferred.fromCoroutine(
            run(
                self.tool("svcrack"),
                "-u", CALLER,
                "-d", dictionary,
                "-p", str(self.server.ports[0]),
                "-P", str(freePort(host=ATTACKER_HOST)),
                "-x", ATTACKER_HOST,
                "--maximumtime", "4",
                "127.0.0.1",
                path=self.directory,
            )
        )  # fmt: skip
        await deferLater(0.5)
        # The number under attack registers and calls from its own address meanwhile.
        registered = await self.sipp.register(
            CALLER, PASSWORD, self.server.ports[0], host=CALLER_HOST, serverHost="127.0.0.1"
        )
        self.assertEqual(registered.code, 0, registered.detail)
        await self.call()
        out, err, _ = await attack
        self.assertNotIn(PASSWORD, out + err)
        self.assertIn("found nothing", out + err)
        limits = self.server.sip.proxy.authentication.limits
        flood = self.server.sip.core.flood
        self.assertGreaterEqual(limits.counters["bans"] + flood.counters["bans"], 1)
        self.assertLessEqual(limits.counters["failures"], 40)
        # The attacker is still banned; the codec still calls.
        await self.call()

    async def test_svwar_learns_nothing(self) -> None:
        """
        Every number, provisioned or not, is challenged alike: svwar finds no
        extension (it gives up, before any ban, on a server that challenges
        unknown numbers), whatever method it scans with.
        """
        for method in ("REGISTER", "INVITE", "OPTIONS"):
            attack = Deferred.fromCoroutine(
                run(
                    self.tool("svwar"),
                    "-e", "45675000-45675099",
                    "-m", method,
                    "--force",
                    "-p", str(self.server.ports[0]),
                    "-P", str(freePort(host=ATTACKER_HOST)),
                    "-x", ATTACKER_HOST,
                    "--maximumtime", "3",
                    "127.0.0.1",
                    path=self.directory,
                )
            )  # fmt: skip
            out, err, _ = await attack
            self.assertIn("found nothing", out + err, method)
            self.assertNotIn(CALLEE, (out + err).replace(f'"{CALLEE[:-1]}', ""), method)
        await self.call()

    async def test_svmap_finds_the_service_and_the_agents_call_on(self) -> None:
        out, err, _ = await run(
            self.tool("svmap"),
            "-p", str(self.server.ports[0]),
            "-P", str(freePort(host=ATTACKER_HOST)),
            "-x", ATTACKER_HOST,
            "127.0.0.1",
            path=self.directory,
        )  # fmt: skip
        self.assertIn("aetasip", out + err)
        await self.call()
