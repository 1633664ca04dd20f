"""
Tests for L{aetasip.stun.service}: the running STUNService on loopback and
in network namespaces this module creates, talked to by independent
clients:

    - aioice's STUN code (a process of its own: L{probe}) over UDP and TCP,
      IPv4 and IPv6;
    - pion's C{stun-nat-behaviour} (Debian C{golang-github-pion-stun-dev},
      built here with C{golang-go}) for RFC 5780 mapping and filtering
      discovery;
    - pystun3 for the classic RFC 3489 classification;

and behind a simulated NAT: namespaces joined by veth pairs, an nftables
masquerade in the middle.

Under C{CI=true} a test whose tool is missing fails instead of skipping.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase, TestCase

from aetasip.config import ConfigError, build
from aetasip.stun import codec, service
from aetasip.stun.server import PRIMARY, STUNServer
from aetasip.stun.service import STUNService
from tests.servers import CI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PION_SOURCE = "/usr/share/gocode/src/github.com/pion/stun/cmd/stun-nat-behaviour"
TID = bytes(range(12))


def missing(what: str) -> NoReturn:
    """
    Skip the test for lack of C{what}; under C{CI=true}, fail it.
    """
    if CI:
        raise FailTest(f"{what} is required (CI=true)")
    raise SkipTest(f"{what} is not available")


def request(*attributes: codec.Attribute, transactionID: bytes = TID) -> bytes:
    return codec.encode(codec.Message(codec.BINDING, codec.REQUEST, transactionID, attributes), addFingerprint=True)


def makeService(**settings: Any) -> STUNService:
    values = {"stun.listen": ["127.0.0.1", "::1"], "stun.port": 0, "stun.rate_limit": 0}
    values.update({key.replace("__", "."): value for key, value in settings.items()})
    return STUNService(build(values), reactor)


# -- the independent client ----------------------------------------------------


def probe(argv: list[str]) -> None:
    """
    A STUN client made of aioice's STUN code, run as its own process:
    C{udp|tcp HOST PORT}. Prints its local address and what the response
    says, as JSON.
    """
    import asyncio

    from aioice import stun

    transport, host, port = argv[0], argv[1], int(argv[2])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["SOFTWARE"] = "aetasip-test-probe"
    message.add_fingerprint()

    async def overUDP() -> tuple[Any, Any]:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.connect((host, port))
        local = sock.getsockname()[:2]

        class Client(asyncio.DatagramProtocol):
            transaction: Any = None

            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                response = stun.parse_message(data)
                if response.transaction_id == message.transaction_id:
                    self.transaction.response_received(response, addr)

            def send_stun(self, outgoing: Any, addr: Any) -> None:
                self.transport.sendto(bytes(outgoing))

        done, client = await asyncio.get_running_loop().create_datagram_endpoint(Client, sock=sock)
        client.transaction = stun.Transaction(message, (host, port), client, retransmissions=4)
        try:
            response, _ = await client.transaction.run()
        finally:
            done.close()
        return local, response

    def overTCP() -> tuple[Any, Any]:
        with socket.create_connection((host, port), timeout=5) as sock:
            local = sock.getsockname()[:2]
            sock.sendall(bytes(message))
            data = b""
            while len(data) < 20 or len(data) < 20 + struct.unpack("!H", data[2:4])[0]:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed before the response")
                data += chunk
            return local, stun.parse_message(data)

    local, response = asyncio.run(overUDP()) if transport == "udp" else overTCP()
    attributes = response.attributes
    print(
        json.dumps(
            {
                "local": list(local),
                "class": response.message_class.name,
                "mapped": list(attributes["XOR-MAPPED-ADDRESS"]),
                "origin": list(attributes.get("RESPONSE-ORIGIN", ())),
                "other": list(attributes.get("OTHER-ADDRESS", ())),
                "attributes": list(attributes),
            }
        )
    )


async def run(command: list[str], namespace: str | None = None) -> tuple[str, str, int]:
    """
    Run C{command}, inside the network namespace C{namespace} if given;
    its output, error output and exit code.
    """
    if namespace is not None:
        command = ["ip", "netns", "exec", namespace, *command]
    out, err, code = await getProcessOutputAndValue(command[0], command[1:], env=dict(os.environ), path=ROOT)
    return out.decode(), err.decode(), code


async def runProbe(transport: str, host: str, port: int, namespace: str | None = None) -> dict[str, Any]:
    try:
        import aioice  # noqa: F401
    except ImportError:
        missing("aioice (pip install aioice)")
    code = "import sys; from tests.test_stun_service import probe; probe(sys.argv[1:])"
    out, err, status = await run(
        [shutil.which("timeout") or "timeout", "30", sys.executable, "-c", code, transport, host, str(port)], namespace
    )
    if status != 0:
        raise FailTest(f"the aioice probe failed ({status}): {err}")
    return json.loads(out)  # type: ignore[no-any-return]


_pion: list[str] = []


async def pionBinary() -> str:
    """
    pion's C{stun-nat-behaviour}, built once from the Debian source package.
    """
    if _pion:
        return _pion[0]
    go = shutil.which("go")
    if go is None or not os.path.isdir(PION_SOURCE):
        missing("go and pion's stun-nat-behaviour (apt-get install golang-go golang-github-pion-stun-dev)")
    directory = tempfile.mkdtemp(prefix="aetasip-pion-")
    atexit.register(shutil.rmtree, directory, True)
    binary = os.path.join(directory, "stun-nat-behaviour")
    environment = dict(
        os.environ,
        GO111MODULE="off",
        GOPATH="/usr/share/gocode",
        GOCACHE=os.path.join(directory, "cache"),
        GOFLAGS="",
        HOME=directory,
    )
    _, err, code = await getProcessOutputAndValue(
        go, ["build", "-o", binary, "github.com/pion/stun/cmd/stun-nat-behaviour"], env=environment, path=directory
    )
    if code != 0:
        raise FailTest(f"building stun-nat-behaviour failed: {err.decode()}")
    _pion.append(binary)
    return binary


async def discover(host: str, port: int, namespace: str | None = None) -> tuple[str, str]:
    """
    Run pion's RFC 5780 discovery against C{host}:C{port}; the mapping and
    filtering behaviours it reports.
    """
    binary = await pionBinary()
    out, err, _ = await run([binary, "-server", f"{host}:{port}", "-timeout", "1", "-verbose", "1"], namespace)
    found = {}
    for line in out.splitlines():
        for kind in ("mapping", "filtering"):
            marker = f"NAT {kind} behavior: "
            if marker in line:
                found[kind] = line.split(marker, 1)[1].strip()
    if set(found) != {"mapping", "filtering"}:
        raise FailTest(f"stun-nat-behaviour gave no verdict:\n{out}\n{err}")
    return found["mapping"], found["filtering"]


async def classify3489(host: str, port: int, source: str, namespace: str | None = None) -> str:
    """
    pystun3's classic RFC 3489 NAT type, from C{source} to C{host}:C{port}.
    """
    try:
        import stun  # noqa: F401
    except ImportError:
        missing("pystun3 (pip install pystun3)")
    code = (
        "import socket, sys, stun\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.settimeout(0.5)\n"
        "s.bind((sys.argv[3], 0))\n"
        "print(stun.get_nat_type(s, sys.argv[3], 0, stun_host=sys.argv[1], stun_port=int(sys.argv[2]))[0])\n"
    )
    out, err, status = await run(["timeout", "60", sys.executable, "-c", code, host, str(port), source], namespace)
    if status != 0:
        raise FailTest(f"pystun3 failed ({status}): {err}")
    return out.strip()


# -- in-process clients ----------------------------------------------------------


class DatagramClient(DatagramProtocol):
    """
    A UDP socket of the test, collecting what it receives.
    """

    def __init__(self) -> None:
        self.received: DeferredQueue[tuple[bytes, tuple[str, int]]] = DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.put((datagram, (addr[0], addr[1])))

    async def next(self, timeout: float = 5) -> tuple[codec.Message, tuple[str, int]]:
        data, source = await self.received.get().addTimeout(timeout, reactor)
        return codec.decode(data), source

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.transport.write(data, address)  # type: ignore[union-attr]


class StreamClient(Protocol):
    """
    A TCP connection of the test, collecting what it receives.
    """

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[None] = Deferred()
        self.arrived: Deferred[None] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.arrived is not None:
            arrived, self.arrived = self.arrived, None
            arrived.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)

    async def messages(self, count: int, timeout: float = 5) -> list[codec.Message]:
        """
        The first C{count} messages received, decoded.
        """
        while True:
            found = []
            offset = 0
            while offset + 20 <= len(self.data):
                size = codec.streamFrameLength(self.data[offset:])
                if offset + size > len(self.data):
                    break
                found.append(codec.decode(self.data[offset : offset + size]))
                offset += size
            if len(found) >= count:
                return found[:count]
            self.arrived = Deferred()
            await self.arrived.addTimeout(timeout, reactor)


def xorMapped(message: codec.Message) -> tuple[str, int]:
    value = message.getValue(codec.XOR_MAPPED_ADDRESS)
    assert value is not None
    return codec.decodeXorAddress(value, message.transactionID)


def address(message: codec.Message, attributeType: int) -> tuple[str, int] | None:
    value = message.getValue(attributeType)
    return None if value is None else codec.decodeAddress(value)


class ServiceTestCase(TestCase):
    timeout = 300

    def start(self, **settings: Any) -> STUNService:
        stun = makeService(**settings)
        stun.startService()
        self.addCleanup(stun.stopService)
        return stun

    def datagramClient(self, host: str = "127.0.0.1") -> DatagramClient:
        client = DatagramClient()
        port = reactor.listenUDP(0, client, interface=host)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return client

    async def streamClient(self, host: str, port: int) -> StreamClient:
        endpoint = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(reactor, host, port)
        client = await connectProtocol(endpoint, StreamClient())

        async def close() -> None:
            if client.transport is not None and client.transport.connected:  # type: ignore[attr-defined]
                client.transport.loseConnection()
                await client.lost

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        return client


# -- the tests ---------------------------------------------------------------------


class ConfigurationTests(SynchronousTestCase):
    """
    Alternate ports and addresses that cannot work stop the start with a
    L{ConfigError}.
    """

    def test_alternate_port_equal_to_port(self) -> None:
        error = self.assertRaises(ConfigError, makeService, stun__port=3478, stun__alternate_port=3478)
        self.assertEqual(error.key, "stun.alternate_port")

    def test_alternate_address_needs_a_specific_address(self) -> None:
        error = self.assertRaises(
            ConfigError,
            makeService,
            stun__listen=["0.0.0.0", "::1"],
            stun__alternate_address="192.0.2.2",
        )
        self.assertEqual(error.key, "stun.alternate_address")
        self.assertIn("IPv4", str(error))

    def test_alternate_address_not_a_listen_address(self) -> None:
        error = self.assertRaises(ConfigError, makeService, stun__alternate_address="127.0.0.1")
        self.assertEqual(error.key, "stun.alternate_address")

    def test_socket_sets(self) -> None:
        config = build(
            {
                "stun.listen": ["0.0.0.0", "192.0.2.1", "::"],
                "stun.alternate_port": 3479,
                "stun.alternate_address": "192.0.2.2",
            }
        )
        self.assertEqual(
            service.socketSets(config),
            [
                {0: "0.0.0.0", 1: "0.0.0.0"},
                {0: "192.0.2.1", 1: "192.0.2.1", 2: "192.0.2.2", 3: "192.0.2.2"},
                {0: "::", 1: "::"},
            ],
        )


class LifecycleTests(ServiceTestCase):
    """
    The service binds what the configuration says and lets it all go.
    """

    async def test_ephemeral_ports(self) -> None:
        """
        With C{stun.port} 0 the alternate port is ephemeral too, and
        OTHER-ADDRESS names the ports really bound.
        """
        stun = self.start(stun__alternate_port=3479, stun__alternate_address="127.0.0.2")
        assert stun.primaryPort and stun.alternatePort
        self.assertNotEqual(stun.primaryPort, stun.alternatePort)
        bound = sorted((a.type, a.host, a.port) for a in (p.getHost() for p in stun.ports))  # type: ignore[attr-defined]
        expected = sorted(
            (kind, host, port)
            for kind in ("UDP", "TCP")
            for host, port in (
                ("127.0.0.1", stun.primaryPort),
                ("127.0.0.1", stun.alternatePort),
                ("127.0.0.2", stun.primaryPort),
                ("127.0.0.2", stun.alternatePort),
                ("::1", stun.primaryPort),
                ("::1", stun.alternatePort),
            )
        )
        self.assertEqual(bound, expected)
        client = self.datagramClient()
        client.send(request(), ("127.0.0.2", stun.alternatePort))
        response, _ = await client.next()
        self.assertEqual(address(response, codec.OTHER_ADDRESS), ("127.0.0.1", stun.primaryPort))

    async def test_stop_and_start_again(self) -> None:
        stun = makeService()
        stun.startService()
        client = await self.streamClient("127.0.0.1", stun.primaryPort or 0)
        await stun.stopService()
        await client.lost
        self.assertEqual(stun.ports, [])
        stun.startService()
        self.addCleanup(stun.stopService)
        datagrams = self.datagramClient()
        datagrams.send(request(), ("127.0.0.1", stun.primaryPort or 0))
        response, _ = await datagrams.next()
        self.assertEqual(response.messageClass, codec.SUCCESS_RESPONSE)

    def test_port_in_use(self) -> None:
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        stun = makeService(stun__listen=["127.0.0.1"], stun__port=blocker.getsockname()[1])
        from twisted.internet.error import CannotListenError

        self.assertRaises(CannotListenError, stun.startService)
        self.assertEqual(stun.ports, [])
        self.assertFalse(stun.running)

    def test_wildcard_ipv6_skipped_without_ipv6(self) -> None:
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.patch(service, "_hasIPv6", lambda: False)
        stun = self.start(stun__listen=["127.0.0.1", "::"])
        self.assertEqual({p.getHost().host for p in stun.ports}, {"127.0.0.1"})  # type: ignore[attr-defined]
        self.assertTrue(any("no IPv6" in event.get("log_format", "") for event in events))


class IndependentClientTests(ServiceTestCase):
    """
    aioice's STUN client learns its own address over UDP and TCP, IPv4 and
    IPv6.
    """

    async def check(self, transport: str, host: str) -> None:
        stun = self.start()
        result = await runProbe(transport, host, stun.primaryPort or 0)
        self.assertEqual(result["class"], "RESPONSE")
        self.assertEqual(result["mapped"], result["local"])
        self.assertEqual(result["origin"], [host, stun.primaryPort])
        self.assertIn("FINGERPRINT", result["attributes"])

    async def test_udp_ipv4(self) -> None:
        await self.check("udp", "127.0.0.1")

    async def test_udp_ipv6(self) -> None:
        await self.check("udp", "::1")

    async def test_tcp_ipv4(self) -> None:
        await self.check("tcp", "127.0.0.1")

    async def test_tcp_ipv6(self) -> None:
        await self.check("tcp", "::1")


class DiscoveryTests(ServiceTestCase):
    """
    RFC 5780 behaviour discovery on loopback, with 127.0.0.2 as the
    alternate address: no NAT, so everything is endpoint-independent.
    """

    def startDiscovery(self) -> STUNService:
        return self.start(stun__listen=["127.0.0.1"], stun__alternate_port=0, stun__alternate_address="127.0.0.2")

    async def test_pion_discovery(self) -> None:
        stun = self.startDiscovery()
        mapping, filtering = await discover("127.0.0.1", stun.primaryPort or 0)
        self.assertEqual((mapping, filtering), ("endpoint independent", "endpoint independent"))
        self.assertGreaterEqual(stun.counters.changeRequests, 1)

    async def test_rfc3489_classification(self) -> None:
        stun = self.startDiscovery()
        self.assertEqual(await classify3489("127.0.0.1", stun.primaryPort or 0, "127.0.0.1"), "Open Internet")
        self.assertGreaterEqual(stun.counters.classicRequests, 2)

    async def test_other_address_and_change_request(self) -> None:
        stun = self.startDiscovery()
        client = self.datagramClient()
        primary = ("127.0.0.1", stun.primaryPort or 0)
        client.send(request(), primary)
        response, origin = await client.next()
        self.assertEqual(origin, primary)
        self.assertEqual(address(response, codec.OTHER_ADDRESS), ("127.0.0.2", stun.alternatePort))
        for changeIP, changePort, expected in (
            (True, False, ("127.0.0.2", stun.primaryPort)),
            (False, True, ("127.0.0.1", stun.alternatePort)),
            (True, True, ("127.0.0.2", stun.alternatePort)),
        ):
            attribute = codec.Attribute(codec.CHANGE_REQUEST, codec.encodeChangeRequest(changeIP, changePort))
            client.send(request(attribute), primary)
            response, origin = await client.next()
            self.assertEqual(origin, expected)
            self.assertEqual(address(response, codec.RESPONSE_ORIGIN), expected)

    async def test_response_port(self) -> None:
        stun = self.startDiscovery()
        client = self.datagramClient()
        other = self.datagramClient()
        otherPort = other.transport.getHost().port  # type: ignore[union-attr]
        attribute = codec.Attribute(codec.RESPONSE_PORT, codec.encodeResponsePort(otherPort))
        client.send(request(attribute), ("127.0.0.1", stun.primaryPort or 0))
        response, _ = await other.next()
        self.assertEqual(xorMapped(response), ("127.0.0.1", client.transport.getHost().port))  # type: ignore[union-attr]


class RobustnessTests(ServiceTestCase):
    """
    No input makes the service stop answering.
    """

    async def test_malformed_datagrams(self) -> None:
        stun = self.start()
        client = self.datagramClient()
        target = ("127.0.0.1", stun.primaryPort or 0)
        plain = codec.encode(codec.Message(codec.BINDING, codec.REQUEST, TID))
        software = codec.encode(
            codec.Message(codec.BINDING, codec.REQUEST, TID, (codec.Attribute(codec.SOFTWARE, b"abcdefgh"),))
        )
        silent = [
            plain[:4] + b"\x00\x00\x00\x00" + plain[8:] + b"x",  # bad cookie, and not a classic request
            plain[:2] + b"\x00\x07" + plain[4:] + b"abcdefg",  # length not a multiple of 4
            plain[:2] + b"\xff\xfc" + plain[4:],  # huge length
            os.urandom(1),
            b"\xff" * 100,
            b"GET / HTTP/1.1\r\n\r\n",
            request()[:-1] + b"\x00",  # bad fingerprint
            *(os.urandom(size) for size in range(0, 200, 7)),
        ]
        for data in silent:
            client.send(data, target)
        answered = [
            (software[:22] + b"\x00\x40" + software[24:], 400),  # truncated attribute
            (request(codec.Attribute(0x7ABC, b"?")), 420),  # unknown comprehension-required
        ]
        for data, code in answered:
            client.send(data, target)
            response, _ = await client.next()
            value = response.getValue(codec.ERROR_CODE)
            assert value is not None
            self.assertEqual(codec.decodeErrorCode(value)[0], code)
        client.send(request(transactionID=b"still here!!"), target)
        response, _ = await client.next()
        self.assertEqual((response.messageClass, response.transactionID), (codec.SUCCESS_RESPONSE, b"still here!!"))
        self.assertGreaterEqual(stun.counters.notSTUN + stun.counters.badFingerprint, 6)

    async def test_tcp_framing(self) -> None:
        """
        Messages split across segments and several in one segment are all
        answered, in order.
        """
        stun = self.start()
        client = await self.streamClient("127.0.0.1", stun.primaryPort or 0)
        first = request(transactionID=b"first-------")
        second = request(codec.Attribute(codec.SOFTWARE, b"x"), transactionID=b"second------")
        for index in range(len(first)):
            client.transport.write(first[index : index + 1])  # type: ignore[union-attr]
        client.transport.write(second + request(transactionID=b"third-------"))  # type: ignore[union-attr]
        messages = await client.messages(3)
        self.assertEqual([m.transactionID for m in messages], [b"first-------", b"second------", b"third-------"])
        local: Any = client.transport.getHost()  # type: ignore[union-attr]
        self.assertEqual(xorMapped(messages[0]), (local.host, local.port))

    async def test_tcp_garbage_closes_only_that_connection(self) -> None:
        stun = self.start()
        garbage = await self.streamClient("127.0.0.1", stun.primaryPort or 0)
        huge = await self.streamClient("127.0.0.1", stun.primaryPort or 0)
        good = await self.streamClient("127.0.0.1", stun.primaryPort or 0)
        garbage.transport.write(b"GET / HTTP/1.1\r\nHost: stun\r\n\r\n")  # type: ignore[union-attr]
        await garbage.lost
        # A length announcing 64 KiB that never comes holds only its own
        # connection.
        huge.transport.write(request()[:2] + b"\xff\xfc" + request()[4:])  # type: ignore[union-attr]
        good.transport.write(request())  # type: ignore[union-attr]
        (response,) = await good.messages(1)
        self.assertEqual(response.messageClass, codec.SUCCESS_RESPONSE)

    def test_tcp_idle_timeout(self) -> None:
        """
        A TCP connection that sends nothing for L{service.TCP_IDLE_TIMEOUT}
        seconds is closed; one that keeps sending is not.
        """
        clock = Clock()
        server = STUNServer()
        factory = service._StreamFactory(server, PRIMARY, {PRIMARY: ("192.0.2.1", 3478)}, clock)
        idle, busy = factory.buildProtocol(None), factory.buildProtocol(None)
        transports = [StringTransport(), StringTransport()]
        idle.makeConnection(transports[0])
        busy.makeConnection(transports[1])
        for _ in range(3):
            clock.advance(service.TCP_IDLE_TIMEOUT - 1)
            busy.dataReceived(request())
        self.assertTrue(transports[0].disconnecting)
        self.assertFalse(transports[1].disconnecting)
        self.assertEqual(codec.decode(transports[1].value()[: len(transports[1].value()) // 3]).transactionID, TID)

    async def test_rate_limit(self) -> None:
        stun = self.start(stun__rate_limit=5)
        client = self.datagramClient()
        for index in range(20):
            client.send(request(transactionID=b"%012d" % index), ("127.0.0.1", stun.primaryPort or 0))
        answered = 0
        try:
            while True:
                await client.next(timeout=0.5)
                answered += 1
        except Exception:
            pass
        # Twenty requests within a second span at most two windows of five.
        self.assertTrue(5 <= answered <= 10, answered)
        self.assertGreaterEqual(stun.counters.rateLimited, 10)


# -- network namespaces ----------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_names = itertools.count()


@contextmanager
def insideNamespace(name: str) -> Iterator[None]:
    """
    Run the block with this thread in the network namespace C{name}: the
    sockets it creates stay in that namespace.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(there, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if libc.setns(here, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(here)
        os.close(there)


class NamespaceTestCase(ServiceTestCase):
    """
    Tests that build their own network namespaces (root, C{ip}, C{nft}).
    """

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            missing("root and iproute2 for network namespaces")

    def namespace(self, role: str) -> str:
        """
        A new network namespace, deleted after the test (after the service
        registered later has stopped).
        """
        name = f"aetasip-stun-{os.getpid()}-{next(_names)}-{role}"
        self.ip("netns", "add", name)
        self.addCleanup(subprocess.run, ["ip", "netns", "delete", name], check=False, capture_output=True)
        self.ip("-n", name, "link", "set", "lo", "up")
        return name

    def ip(self, *arguments: str) -> None:
        subprocess.run(["ip", *arguments], check=True, capture_output=True)

    def startInside(self, name: str, **settings: Any) -> STUNService:
        with insideNamespace(name):
            return self.start(**settings)


class WildcardTests(NamespaceTestCase):
    """
    The default listen addresses, 0.0.0.0 and '::', share one port: the IPv6
    socket is IPV6_V6ONLY. Inside a namespace of its own, so that the
    wildcards reach no real interface.
    """

    async def test_default_listen_addresses(self) -> None:
        name = self.namespace("w")
        stun = self.startInside(name, stun__listen=["0.0.0.0", "::"])
        self.assertEqual(len(stun.ports), 4)
        for transport, host in (("udp", "127.0.0.1"), ("udp", "::1"), ("tcp", "127.0.0.1"), ("tcp", "::1")):
            result = await runProbe(transport, host, stun.primaryPort or 0, name)
            self.assertEqual(result["mapped"], result["local"])
            # RESPONSE-ORIGIN is known on a TCP connection, not on a
            # wildcard UDP socket.
            self.assertEqual(result["origin"], [host, stun.primaryPort] if transport == "tcp" else [])


class NATTests(NamespaceTestCase):
    """
    A codec-like client behind a simulated NAT learns its public mapping,
    and RFC 5780 discovery classifies the NAT.

    Three namespaces: the server (203.0.113.1 and .2, 2001:db8:1::1), the
    NAT (public 203.0.113.254 and 2001:db8:1::fe, masquerading) and the
    client (192.168.77.2, fd00:77::2).
    """

    PUBLIC = {4: "203.0.113.254", 6: "2001:db8:1::fe"}
    SERVER = {4: "203.0.113.1", 6: "2001:db8:1::1"}

    def setUp(self) -> None:
        super().setUp()
        if shutil.which("nft") is None:
            missing("nftables (apt-get install nftables)")

    def build(self, masquerade: str = "masquerade") -> tuple[str, str, str]:
        server, nat, client = self.namespace("s"), self.namespace("n"), self.namespace("c")
        self.ip("link", "add", "s0", "netns", server, "type", "veth", "peer", "name", "n0", "netns", nat)
        self.ip("link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "n1", "netns", nat)
        for name, device, addresses in (
            (server, "s0", ["203.0.113.1/24", "203.0.113.2/24", "2001:db8:1::1/64", "2001:db8:1::2/64"]),
            (nat, "n0", ["203.0.113.254/24", "2001:db8:1::fe/64"]),
            (nat, "n1", ["192.168.77.1/24", "fd00:77::1/64"]),
            (client, "c0", ["192.168.77.2/24", "fd00:77::2/64"]),
        ):
            for cidr in addresses:
                self.ip("-n", name, "address", "add", cidr, "dev", device, *(["nodad"] if ":" in cidr else []))
            self.ip("-n", name, "link", "set", device, "up")
        self.ip("-n", client, "route", "add", "default", "via", "192.168.77.1")
        self.ip("-n", client, "-6", "route", "add", "default", "via", "fd00:77::1")
        subprocess.run(
            ["ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
            check=True,
            capture_output=True,
        )
        # Like a home router, the NAT also drops what arrives unsolicited on
        # its public side: otherwise the conntrack entry of a filtered
        # response would take the port of a later mapping.
        ruleset = (
            "table inet aetasip_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "n0" {masquerade}\n'
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
        return server, nat, client

    def startServer(self, server: str) -> STUNService:
        return self.startInside(
            server,
            stun__listen=[self.SERVER[4], self.SERVER[6]],
            stun__alternate_port=0,
            stun__alternate_address="203.0.113.2",
        )

    async def checkMapping(self, transport: str, version: int) -> None:
        server, _, client = self.build()
        stun = self.startServer(server)
        result = await runProbe(transport, self.SERVER[version], stun.primaryPort or 0, client)
        self.assertEqual(result["local"][0], "192.168.77.2" if version == 4 else "fd00:77::2")
        self.assertEqual(result["mapped"][0], self.PUBLIC[version])

    async def test_udp_ipv4(self) -> None:
        await self.checkMapping("udp", 4)

    async def test_udp_ipv6(self) -> None:
        await self.checkMapping("udp", 6)

    async def test_tcp_ipv4(self) -> None:
        await self.checkMapping("tcp", 4)

    async def test_tcp_ipv6(self) -> None:
        await self.checkMapping("tcp", 6)

    async def test_discovery_port_preserving_nat(self) -> None:
        """
        Linux masquerading keeps one mapping per socket (endpoint-independent
        mapping) but lets in only what the client sent to (address and
        port-dependent filtering).
        """
        server, _, client = self.build()
        stun = self.startServer(server)
        self.assertEqual(
            await discover(self.SERVER[4], stun.primaryPort or 0, client),
            ("endpoint independent", "address and port dependent"),
        )
        self.assertEqual(
            await classify3489(self.SERVER[4], stun.primaryPort or 0, "0.0.0.0", client), "Restric Port NAT"
        )

    async def test_discovery_symmetric_nat(self) -> None:
        """
        With a random port per connection, the mapping is address and
        port-dependent: the "symmetric NAT" that needs the relay.
        """
        server, _, client = self.build("masquerade fully-random")
        stun = self.startServer(server)
        self.assertEqual(
            await discover(self.SERVER[4], stun.primaryPort or 0, client),
            ("address and port dependent", "address and port dependent"),
        )
        self.assertEqual(await classify3489(self.SERVER[4], stun.primaryPort or 0, "0.0.0.0", client), "Symmetric NAT")
