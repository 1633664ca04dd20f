"""
The relay's reason to be, in network namespaces the test builds: a caller
behind a simulated symmetric NAT (Linux masquerading with a random port
per mapping) advertising its private address, as a codec without STUN
does, calls a callee on the public side; the service (relay.mode auto)
relays the call and media flows both ways on the first try, latched to
the NAT's public address and the port it chose, and nothing is ever sent
to the private address.

Three namespaces: the server side (the service and the relay on
203.0.113.1, the callee on 203.0.113.3), the NAT (public 203.0.113.254,
private 192.168.77.1) and the caller (192.168.77.2). The test's own
thread works inside the server namespace while it runs.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from aetasip.calls.call import EndCause
from tests.interop import MediaSocket, mediaOf, watchCalls
from tests.servers import RunningService, deferLater, requireTool
from tests.sipp import Sipp, authentication, injectionFile
from tests.test_stun_service import insideNamespace, missing

CALLER, CALLER_PASSWORD = "45676001", "secret-one"
CALLEE, CALLEE_PASSWORD = "45676002", "secret-two"
SERVER, CALLEE_HOST, PUBLIC, PRIVATE = "203.0.113.1", "203.0.113.3", "203.0.113.254", "192.168.77.2"
RELAY_PORTS = [30_000, 30_099]


def rtp(seq: int, marker: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq, seq * 160, 0x7777) + marker + b"\xd5" * 159


class SymmetricNATTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
            missing("root, iproute2 and nftables for network namespaces")
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), os.path.abspath(self.mktemp()))
        os.makedirs(self.sipp.directory)
        self.names: list[str] = []

    def ip(self, *arguments: str) -> None:
        subprocess.run(["ip", *arguments], check=True, capture_output=True)

    def namespace(self, role: str) -> str:
        name = f"aetasip-relay-{os.getpid()}-{len(self.names)}-{role}"
        self.ip("netns", "add", name)
        self.addCleanup(subprocess.run, ["ip", "netns", "delete", name], check=False, capture_output=True)
        self.ip("-n", name, "link", "set", "lo", "up")
        self.names.append(name)
        return name

    def build(self) -> tuple[str, str]:
        server, nat, client = self.namespace("s"), self.namespace("n"), self.namespace("c")
        self.ip("link", "add", "s0", "netns", server, "type", "veth", "peer", "name", "n0", "netns", nat)
        self.ip("link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "n1", "netns", nat)
        for name, device, addresses in (
            (server, "s0", [f"{SERVER}/24", f"{CALLEE_HOST}/24"]),
            (nat, "n0", [f"{PUBLIC}/24"]),
            (nat, "n1", ["192.168.77.1/24"]),
            (client, "c0", [f"{PRIVATE}/24"]),
        ):
            for cidr in addresses:
                self.ip("-n", name, "address", "add", cidr, "dev", device)
            self.ip("-n", name, "link", "set", device, "up")
        self.ip("-n", client, "route", "add", "default", "via", "192.168.77.1")
        subprocess.run(
            ["ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True, capture_output=True
        )
        ruleset = (
            "table inet aetasip_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            '    oifname "n0" masquerade fully-random\n'
            "  }\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            '    iifname "n0" ct state new drop\n'
            "  }\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", nat, "nft", "-f", "-"], input=ruleset.encode(), check=True, capture_output=True
        )
        return server, client

    def enter(self, name: str) -> None:
        """This thread works in namespace C{name} until the end of the test (after every other cleanup)."""
        inside = insideNamespace(name)
        inside.__enter__()
        self.addCleanup(inside.__exit__, None, None, None)

    def socket(self, host: str) -> MediaSocket:
        protocol = MediaSocket()
        port = reactor.listenUDP(0, protocol, interface=host)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return protocol

    mediaOf = mediaOf

    async def test_caller_behind_symmetric_nat_gets_media_both_ways(self) -> None:
        serverNamespace, clientNamespace = self.build()
        self.enter(serverNamespace)
        server = RunningService(
            self.sipp.directory,
            sip__listen=[SERVER],
            calls__media_handler="relay",
            relay__nodes={"local": {"kind": "builtin", "address": SERVER, "ports": RELAY_PORTS}},
        )
        server.addAccounts((CALLER, CALLER_PASSWORD), (CALLEE, CALLEE_PASSWORD))
        await server.start()
        self.addCleanup(server.stop)
        calls = watchCalls(server)
        remote = f"{SERVER}:{server.ports[0]}"

        # The callee, on the public side, registers and waits.
        callee = self.socket(CALLEE_HOST)
        calleePort = callee.transport.getHost().port  # type: ignore[union-attr]
        sipPort = 25_070
        registered = await self.sipp.run(
            "register",
            "register.xml",
            "-recv_timeout",
            "5000",
            remote=remote,
            host=CALLEE_HOST,
            port=sipPort,
            inf=injectionFile(self.sipp.directory, "callee-auth", [(CALLEE, authentication(CALLEE, CALLEE_PASSWORD))]),
        )
        self.assertEqual(registered.code, 0, registered.detail)
        answering = self.sipp.start(
            "callee",
            "relay_uas.xml",
            host=CALLEE_HOST,
            port=sipPort,
            inf=injectionFile(self.sipp.directory, "callee-media", [(str(calleePort),)]),
            timeout=40,
            messages=True,
        )
        self.addCleanup(lambda: (answering.kill(), answering.done)[1])
        await deferLater(0.5)

        # The caller, behind the NAT, advertises its private address and real media port.
        with insideNamespace(clientNamespace):
            caller = self.socket(PRIVATE)
            callerPort = caller.transport.getHost().port  # type: ignore[union-attr]
            calling = self.sipp.start(
                "caller",
                "relay_uac.xml",
                "-d",
                "3000",
                remote=remote,
                host=PRIVATE,
                port=25_062,
                inf=injectionFile(
                    self.sipp.directory,
                    "caller",
                    [(CALLER, authentication(CALLER, CALLER_PASSWORD), CALLEE, str(callerPort), PRIVATE)],
                ),
                timeout=40,
                messages=True,
            )
        self.addCleanup(lambda: (calling.kill(), calling.done)[1])

        calleeSendsTo = await self.mediaOf("callee")
        callerSendsTo = await self.mediaOf("caller")
        self.assertEqual({calleeSendsTo[0], callerSendsTo[0]}, {SERVER})
        sentByCaller, sentByCallee = [], []
        for seq in range(1, 26):
            packet = rtp(seq, b"A")
            caller.transport.write(packet, callerSendsTo)  # type: ignore[union-attr]
            sentByCaller.append(packet)
            packet = rtp(seq, b"B")
            callee.transport.write(packet, calleeSendsTo)  # type: ignore[union-attr]
            sentByCallee.append(packet)
            await deferLater(0.02)
        await deferLater(0.3)
        self.assertEqual([d for d, _ in callee.received], sentByCaller)
        # The callee's first packets may come before the caller latched: nothing is sent until then.
        got = [d for d, _ in caller.received]
        self.assertGreaterEqual(len(got), 24)
        self.assertEqual(got, sentByCallee[-len(got) :])
        self.assertEqual({a for _, a in caller.received}, {callerSendsTo})

        finishedCaller, finishedCallee = await calling.done, await answering.done
        self.assertEqual(finishedCaller.code, 0, finishedCaller.detail)
        self.assertEqual(finishedCallee.code, 0, finishedCallee.detail)
        (call,) = calls
        self.assertEqual(call.endCause, EndCause.CALLER_BYE)
        record = call.media["relay"]
        self.assertEqual(record["relayed"], {"1": True})
        self.assertIn(f"private address {PRIVATE}, it signals from {PUBLIC}", record["legs"]["caller"]["reason"])
        self.assertIn("direct media", record["legs"]["1"]["reason"])
        stats = record["stats"]
        # Latched to the NAT's public side, on the port it picked for this mapping.
        assert stats.caller.latched is not None
        self.assertEqual(stats.caller.latched[0], PUBLIC)
        self.assertEqual(stats.caller.received.packets, 25)
        self.assertEqual(stats.callee.latched, (CALLEE_HOST, calleePort))
        self.assertEqual((stats.caller.dropped, stats.callee.dropped), (0, 0))
