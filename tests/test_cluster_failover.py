"""
Failover end to end: two aetasip servers (twistd processes) in network
namespaces the test creates, on a bridge with documentation addresses
(203.0.113.0/24, nothing routed anywhere), a PostgreSQL in a third
namespace, keepalived on each server moving the floating address on
/health. An agent registered through the address stays reachable after
C{kill -9} of the active server: a request to its number from another
agent is delivered by the survivor, with no re-registration.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from aetasip import admin
from tests.postgres import PostgreSQLServer, binDirectory, serverAccount
from tests.servers import deferLater, requireTool, stopProcess
from tests.sipp import Sipp, SippRun, authentication, injectionFile
from tests.test_cluster_location import waitFor
from tests.test_stun_service import insideNamespace, missing

NETWORK = "203.0.113"
FLOATING = f"{NETWORK}.10"
SERVERS = {"a": f"{NETWORK}.11", "b": f"{NETWORK}.12"}
DATABASE = f"{NETWORK}.20"
AGENTS = {"callee": f"{NETWORK}.31", "caller": f"{NETWORK}.32"}
SECOND = f"{NETWORK}.33"
BUSY, BUSY_PASSWORD = "45675003", "Busy-secret-3"
NUMBER, PASSWORD = "45675001", "Callee-secret-1"
CALLER, CALLER_PASSWORD = "45675002", "Caller-secret-2"
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UserAgent(DatagramProtocol):
    """A small SIP agent on UDP: sends requests (answering digest challenges), answers requests 200."""

    def __init__(self, number: str, password: str, host: str) -> None:
        self.number, self.password, self.host = number, password, host
        self.port = 0
        self.received: list[tuple[str, Any]] = []
        self.waiting: dict[str, Deferred[str]] = {}
        self.cseq = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        text = data.decode("utf-8", "replace")
        if text.startswith("SIP/2.0"):
            callID = header(text, "call-id")
            waiting = self.waiting.get(callID)
            code = int(text.split(" ", 2)[1])
            if waiting is not None and code >= 200:
                del self.waiting[callID]
                waiting.callback(text)
            return
        self.received.append((text, addr))
        method = text.split(" ", 1)[0]
        if method == "ACK":
            return
        vias = "".join(f"Via: {v}\r\n" for v in headers(text, "via"))
        if method == "INVITE":
            # A UAS copies the Record-Route of the request into its 2xx.
            vias += "".join(f"Record-Route: {r}\r\n" for r in headers(text, "record-route"))
        to = header(text, "to")
        if ";tag=" not in to:
            to += ";tag=ua"
        response = (
            f"SIP/2.0 200 OK\r\n{vias}From: {header(text, 'from')}\r\nTo: {to}\r\n"
            f"Call-ID: {header(text, 'call-id')}\r\nCSeq: {header(text, 'cseq')}\r\n"
            f"Contact: <sip:{self.number}@{self.host}:{self.port}>\r\nContent-Length: 0\r\n\r\n"
        )
        self.transport.write(response.encode(), addr)  # type: ignore[union-attr]

    async def request(self, method: str, uri: str, extra: str = "", timeout: float = 5.0) -> str:
        callID = f"{method.lower()}-{os.urandom(4).hex()}@{self.host}"
        authorization = ""
        for _ in range(2):
            self.cseq += 1
            message = (
                f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{self.number}@{FLOATING}>;tag={os.urandom(3).hex()}\r\n"
                f"To: <{uri if method != 'REGISTER' else f'sip:{self.number}@{FLOATING}'}>\r\n"
                f"Call-ID: {callID}\r\nCSeq: {self.cseq} {method}\r\n"
                f"Contact: <sip:{self.number}@{self.host}:{self.port}>\r\n{extra}{authorization}Content-Length: 0\r\n\r\n"
            )
            answer: Deferred[str] = Deferred()
            answer.addTimeout(timeout, reactor)
            self.waiting[callID] = answer
            # Sent again after 0.5, 1 and 2 s without an answer (RFC 3261 timer E).
            resend = [
                reactor.callLater(at, self.transport.write, message.encode(), (FLOATING, 5060))  # type: ignore[attr-defined,union-attr]
                for at in (0.0, 0.5, 1.5, 3.5)
            ]
            try:
                text = await answer
            finally:
                for call in resend:
                    if call.active():
                        call.cancel()
            code = int(text.split(" ", 2)[1])
            if code not in (401, 407):
                return text
            authorization = self.authorization(method, uri, text)
        return text

    async def call(self, uri: str) -> dict[str, Any]:
        """INVITE C{uri} (answering the challenge), ACK the 2xx; the dialog as a dict."""
        dialog: dict[str, Any] = {"callID": f"call-{os.urandom(4).hex()}@{self.host}", "tag": os.urandom(3).hex()}
        dialog["to"] = f"<{uri}>"
        authorization = ""
        for cseq in (1, 2):
            text = await self.send("INVITE", uri, dialog, cseq, authorization)
            code = int(text.split(" ", 2)[1])
            if code in (401, 407):
                self.send("ACK", uri, dialog, cseq, "", branch=self.lastBranch)
                authorization = self.authorization("INVITE", uri, text)
                continue
            if code != 200:
                raise AssertionError(text)
            dialog["to"] = header(text, "to")
            dialog["route"] = list(reversed(headers(text, "record-route")))
            dialog["target"] = header(text, "contact").strip("<>").split(">")[0]
            dialog["cseq"] = cseq
            self.send("ACK", dialog["target"], dialog, cseq, "")
            return dialog
        raise AssertionError("challenged twice")

    async def bye(self, dialog: dict[str, Any]) -> str:
        dialog["cseq"] += 1
        return await self.send("BYE", dialog["target"], dialog, dialog["cseq"], "")

    lastBranch = ""

    def send(
        self, method: str, uri: str, dialog: dict[str, Any], cseq: int, authorization: str, branch: str = ""
    ) -> Any:
        branch = branch or f"z9hG4bK{os.urandom(6).hex()}"
        self.lastBranch = branch
        routes = "".join(f"Route: {r}\r\n" for r in dialog.get("route", []))
        message = (
            f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{self.number}@{FLOATING}>;tag={dialog['tag']}\r\nTo: {dialog['to']}\r\n"
            f"Call-ID: {dialog['callID']}\r\nCSeq: {cseq} {method}\r\n{routes}"
            f"Contact: <sip:{self.number}@{self.host}:{self.port}>\r\n{authorization}Content-Length: 0\r\n\r\n"
        )
        self.transport.write(message.encode(), (FLOATING, 5060))  # type: ignore[union-attr]
        if method == "ACK":
            return None
        answer: Deferred[str] = Deferred()
        answer.addTimeout(5.0, reactor)
        self.waiting[dialog["callID"]] = answer
        return answer

    def authorization(self, method: str, uri: str, text: str) -> str:
        """The (Proxy-)Authorization line answering the MD5 challenge of the 401 or 407 C{text}."""
        code = int(text.split(" ", 2)[1])
        name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        challenge = next(c for c in headers(text, name.lower()) if "MD5" in c or "algorithm" not in c)
        realm = re.search(r'realm="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
        nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
        ha1 = hashlib.md5(f"{self.number}:{realm}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
        reply = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return (
            f'{"Authorization" if code == 401 else "Proxy-Authorization"}: Digest username="{self.number}", '
            f'realm="{realm}", nonce="{nonce}", uri="{uri}", response="{reply}", algorithm=MD5\r\n'
        )


class RingingAgent(UserAgent):
    """
    A L{UserAgent} whose INVITEs may ring (180) until the test answers
    them (L{answer}), and whose calls' responses are told apart by method
    (an INVITE, its CANCEL).
    """

    def __init__(self, number: str, password: str, host: str) -> None:
        super().__init__(number, password, host)
        self.hold = False
        self.ringing: list[tuple[str, Any]] = []
        self.finals: dict[tuple[str, str], Deferred[str]] = {}
        self.responses: list[str] = []
        # The Call-IDs of the INVITEs a matching CANCEL ended.
        self.terminated: list[str] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        text = data.decode("utf-8", "replace")
        if text.startswith("SIP/2.0"):
            self.responses.append(text)
            if int(text.split(" ", 2)[1]) >= 200:
                waiting = self.finals.pop((header(text, "call-id"), header(text, "cseq").split()[-1]), None)
                if waiting is not None:
                    waiting.callback(text)
                    return
        elif self.hold and text.startswith("INVITE "):
            self.received.append((text, addr))
            self.ringing.append((text, addr))
            self.transport.write(self.response(text, 180, "Ringing"), addr)  # type: ignore[union-attr]
            return
        elif self.hold and text.startswith("CANCEL "):
            self.received.append((text, addr))
            self.transport.write(self.cancelled(text), addr)  # type: ignore[union-attr]
            return
        super().datagramReceived(data, addr)

    def cancelled(self, text: str) -> bytes:
        """
        The answer to a CANCEL, as RFC 3261 9.2 and 17.2.3 say: 200 and a
        487 for the INVITE whose transaction it matches (the same top Via:
        branch and sent-by; Call-ID and CSeq number), else 481.
        """
        via, callID, number = header(text, "via"), header(text, "call-id"), header(text, "cseq").split()[0]
        for invite, addr in self.ringing:
            if (header(invite, "via"), header(invite, "call-id"), header(invite, "cseq").split()[0]) == (
                via,
                callID,
                number,
            ):
                self.terminated.append(callID)
                self.transport.write(self.response(invite, 487, "Request Terminated"), addr)  # type: ignore[union-attr]
                return self.response(text, 200, "OK")
        return self.response(text, 481, "Call/Transaction Does Not Exist")

    def response(self, text: str, code: int, reason: str) -> bytes:
        vias = "".join(f"Via: {v}\r\n" for v in headers(text, "via"))
        routes = "".join(f"Record-Route: {r}\r\n" for r in headers(text, "record-route"))
        return (
            f"SIP/2.0 {code} {reason}\r\n{vias}{routes}From: {header(text, 'from')}\r\n"
            f"To: {header(text, 'to')};tag=ua\r\nCall-ID: {header(text, 'call-id')}\r\n"
            f"CSeq: {header(text, 'cseq')}\r\nContact: <sip:{self.number}@{self.host}:{self.port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    async def answer(self, index: int) -> None:
        """Answer the ringing INVITE C{index} with 200, sent again until its ACK comes (RFC 3261 13.3.1.4)."""
        text, addr = self.ringing[index]
        callID = header(text, "call-id")
        for _ in range(10):
            self.transport.write(self.response(text, 200, "OK"), addr)  # type: ignore[union-attr]
            await deferLater(0.5)
            if any(t.startswith("ACK ") and header(t, "call-id") == callID for t, _ in self.received):
                return
        raise AssertionError(f"no ACK for the 200 of {callID}")

    async def refuse(self, index: int, code: int, reason: str) -> None:
        """Refuse the ringing INVITE C{index} with C{code}, sent again until its ACK comes (RFC 3261 17.2.1)."""
        text, addr = self.ringing[index]
        callID = header(text, "call-id")
        for _ in range(10):
            self.transport.write(self.response(text, code, reason), addr)  # type: ignore[union-attr]
            await deferLater(0.5)
            if any(t.startswith("ACK ") and header(t, "call-id") == callID for t, _ in self.received):
                return
        raise AssertionError(f"no ACK for the {code} of {callID}")

    async def ring(self, uri: str) -> dict[str, Any]:
        """
        INVITE C{uri} (answering the challenge) and leave it ringing: the
        dialog as a dict, with C{final} the Deferred of its final response.
        """
        dialog: dict[str, Any] = {"callID": f"call-{os.urandom(4).hex()}@{self.host}", "tag": os.urandom(3).hex()}
        dialog["to"] = f"<{uri}>"
        challenge = await self.send("INVITE", uri, dialog, 1, "")
        self.send("ACK", uri, dialog, 1, "", branch=self.lastBranch)
        dialog["authorization"] = self.authorization("INVITE", uri, challenge)
        dialog["branch"] = f"z9hG4bK{os.urandom(6).hex()}"
        dialog["uri"] = uri
        final: Deferred[str] = Deferred()
        self.finals[(dialog["callID"], "INVITE")] = final
        dialog["final"] = final
        self.write("INVITE", uri, dialog, 2, dialog["branch"], dialog["authorization"])
        return dialog

    async def cancel(self, dialog: dict[str, Any]) -> str:
        """CANCEL the ringing INVITE of C{dialog} (sent again until answered); the CANCEL's final response."""
        answer: Deferred[str] = Deferred()
        self.finals[(dialog["callID"], "CANCEL")] = answer
        for _ in range(8):
            self.write("CANCEL", dialog["uri"], dialog, 2, dialog["branch"], "")
            await deferLater(0.5)
            if answer.called:
                return await answer
        raise AssertionError("no answer to the CANCEL")

    def write(self, method: str, uri: str, dialog: dict[str, Any], cseq: int, branch: str, extra: str) -> None:
        message = (
            f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{self.number}@{FLOATING}>;tag={dialog['tag']}\r\nTo: {dialog['to']}\r\n"
            f"Call-ID: {dialog['callID']}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{self.number}@{self.host}:{self.port}>\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        self.transport.write(message.encode(), (FLOATING, 5060))  # type: ignore[union-attr]


def headers(text: str, name: str) -> list[str]:
    found = []
    for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            found.append(value.strip())
    return found


def header(text: str, name: str) -> str:
    return headers(text, name)[0]


class FailoverTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            missing("root and iproute2 for network namespaces")
        self.keepalived = shutil.which("keepalived") or "/usr/sbin/keepalived"
        if not os.access(self.keepalived, os.X_OK):
            missing("keepalived (Debian package keepalived)")
        if binDirectory() is None:
            missing("PostgreSQL (Debian package postgresql)")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.tag = f"{os.getpid() % 10000}"
        self.names: dict[str, str] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def ip(self, *arguments: str) -> None:
        subprocess.run(["ip", *arguments], check=True, capture_output=True)

    def network(self) -> None:
        switch = self.namespace("sw")
        self.ip("-n", switch, "link", "add", "br0", "type", "bridge")
        self.ip("-n", switch, "link", "set", "br0", "up")
        hosts = {**{f"srv{k}": v for k, v in SERVERS.items()}, "db": DATABASE, **AGENTS}
        for n, (role, address) in enumerate(hosts.items()):
            name = self.namespace(role)
            self.ip("link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", f"p{n}", "netns", switch)
            self.ip("-n", switch, "link", "set", f"p{n}", "master", "br0", "up")
            self.ip("-n", name, "address", "add", f"{address}/24", "dev", "eth0")
            self.ip("-n", name, "link", "set", "eth0", "up")

    def namespace(self, role: str) -> str:
        name = f"aetasip-ha-{self.tag}-{role}"
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        self.ip("netns", "add", name)
        self.addCleanup(subprocess.run, ["ip", "netns", "delete", name], check=False, capture_output=True)
        self.ip("-n", name, "link", "set", "lo", "up")
        self.names[role] = name
        return name

    def database(self) -> str:
        server = PostgreSQLServer(binDirectory(), serverAccount())  # type: ignore[arg-type]
        server.host = DATABASE
        server.clients = f"{NETWORK}.0/24"
        self.addCleanup(server.stop)
        with insideNamespace(self.names["db"]):
            server.start()
            name = server.createDatabase()
        return server.url(name)

    def spawn(self, key: str, namespace: str, *command: str) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.directory, f"{key}.log"), "wb")
        self.addCleanup(log.close)
        environment = {**os.environ, "PYTHONPATH": TOP}
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            cwd=self.directory,
        )
        self.processes[key] = process
        self.addCleanup(stopProcess, process, 15)
        return process

    def server(self, key: str, url: str, pingInterval: int = 2) -> None:
        conf = os.path.join(self.directory, f"{key}.conf.py")
        with open(conf, "w") as f:
            f.write(
                f"server = {{'name': 'sip-{key}'}}\n"
                f"sip = {{'listen': [{FLOATING!r}, {SERVERS[key]!r}], 'udp_ports': [5060], 'tcp_ports': [5060], "
                f"'domains': [{FLOATING!r}]}}\n"
                f"store = {{'url': {url!r}}}\n"
                f"cluster = {{'address': {FLOATING!r}, 'check_interval': 0.2, 'announce_interval': 1}}\n"
                "stun = {'enabled': False}\ntestline = {'enabled': False}\n"
                # Both servers run in this directory: a control socket each.
                f"web = {{'listen': '127.0.0.1:8080', 'control_socket': '{key}.sock'}}\n"
                f"registrar = {{'conflict': 'replace', 'options_ping_interval': {pingInterval}}}\n"
            )
        self.spawn(
            f"aetasip-{key}",
            self.names[f"srv{key}"],
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "-l", "-", "aetasip", "--config", conf,
        )  # fmt: skip
        keepalived = os.path.join(self.directory, f"keepalived-{key}.conf")
        peer = SERVERS["b" if key == "a" else "a"]
        with open(keepalived, "w") as f:
            f.write(
                "global_defs {\n  script_user root\n}\n"
                "vrrp_script health {\n"
                '  script "/usr/bin/curl --silent --fail --output /dev/null --max-time 1 http://127.0.0.1:8080/health"\n'
                "  interval 1\n  timeout 2\n  fall 2\n  rise 1\n}\n"
                "vrrp_instance aetasip {\n  state BACKUP\n  nopreempt\n  interface eth0\n  virtual_router_id 51\n"
                f"  priority {100 if key == 'a' else 90}\n  advert_int 1\n"
                f"  unicast_src_ip {SERVERS[key]}\n  unicast_peer {{\n    {peer}\n  }}\n"
                f"  virtual_ipaddress {{\n    {FLOATING}/24 dev eth0\n  }}\n"
                "  track_script {\n    health\n  }\n}\n"
            )
        pids = {name: os.path.join(self.directory, f"{name}-{key}.pid") for name in ("keepalived", "vrrp", "checkers")}
        self.spawn(
            f"keepalived-{key}",
            self.names[f"srv{key}"],
            self.keepalived, "--dont-fork", "--log-console", "--vrrp", "--use-file", keepalived,
            "--pid", pids["keepalived"], "--vrrp_pid", pids["vrrp"], "--checkers_pid", pids["checkers"],
        )  # fmt: skip

    def holder(self) -> str | None:
        for key in SERVERS:
            found = subprocess.run(
                ["ip", "-n", self.names[f"srv{key}"], "-o", "address", "show", "dev", "eth0"],
                capture_output=True,
                text=True,
            ).stdout
            if f" {FLOATING}/" in found:
                return key
        return None

    def recordOf(self, url: str, callID: str, field: str = "") -> Any:
        """The end cause and server of the call record of C{callID} (or its C{field})."""
        from aetasip.store import Store
        from aetasip.store.callrecords import RecordQuery

        with insideNamespace(self.names["db"]):
            store = Store(url)
            store.open()
            try:
                found = [r for r in store.callRecords(RecordQuery(number=NUMBER)) if r.callID == callID]
            finally:
                store.close()
        if len(found) != 1:
            return None
        return getattr(found[0], field) if field else (found[0].endCause, found[0].server)

    def registeredUsers(self, key: str) -> int:
        """C{aetasip_registered_users} of server C{key}, from its /metrics."""
        metrics = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.names[f"srv{key}"],
                "curl",
                "--silent",
                "--max-time",
                "1",
                "http://127.0.0.1:8080/metrics",
            ],
            capture_output=True,
            text=True,
        ).stdout
        found = re.search(r"^aetasip_registered_users (\S+)$", metrics, re.M)
        return -1 if found is None else int(float(found.group(1)))

    def agent(self, role: str, number: str, password: str) -> RingingAgent:
        agent = RingingAgent(number, password, AGENTS[role])
        with insideNamespace(self.names[role]):
            port = reactor.listenUDP(0, agent, interface=AGENTS[role])  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        agent.port = port.getHost().port
        return agent

    async def cluster(self) -> tuple[str, str, str]:
        """
        Both servers on one PostgreSQL store holding the callee's and the
        caller's accounts, once one of them holds the floating address:
        the store's URL, the active server's key and the other's.
        """
        self.network()
        url = self.database()
        with insideNamespace(self.names["db"]):
            for number, password in ((NUMBER, PASSWORD), (CALLER, CALLER_PASSWORD)):
                code = admin.main(["--store", url, "account", "add", number, "--password", password], *_quiet())
                self.assertEqual(code, 0)
        self.server("a", url)
        await deferLater(2.0)
        self.server("b", url)
        await waitFor(lambda: self.holder() is not None, timeout=30)
        first = self.holder()
        assert first is not None
        return url, first, "b" if first == "a" else "a"

    async def agents(self) -> tuple[RingingAgent, RingingAgent]:
        """The callee, registered through the floating address, and the caller."""
        callee = self.agent("callee", NUMBER, PASSWORD)
        caller = self.agent("caller", CALLER, CALLER_PASSWORD)
        registered = await callee.request("REGISTER", f"sip:{FLOATING}", "Expires: 600\r\n")
        self.assertTrue(registered.startswith("SIP/2.0 200"), registered)
        return callee, caller

    async def test_an_agent_stays_reachable_after_kill_9_of_the_active_server(self) -> None:
        url, first, survivor = await self.cluster()
        callee, caller = await self.agents()
        answered = await caller.request("MESSAGE", f"sip:{NUMBER}@{FLOATING}")
        self.assertTrue(answered.startswith("SIP/2.0 200"), answered)
        self.assertEqual(callee.received[-1][1], (FLOATING, 5060))
        # The caller registers too, then unregisters: the standby has both
        # registrations, then only the callee's, within a second each.
        registered = await caller.request("REGISTER", f"sip:{FLOATING}", "Expires: 600\r\n")
        self.assertTrue(registered.startswith("SIP/2.0 200"), registered)
        await waitFor(lambda: self.registeredUsers(survivor) == 2, timeout=3)
        removed = await caller.request("REGISTER", f"sip:{FLOATING}", "Expires: 0\r\n")
        self.assertTrue(removed.startswith("SIP/2.0 200"), removed)
        took = await waitFor(lambda: self.registeredUsers(survivor) == 1, timeout=3)
        self.assertLess(took, 2.0)
        # Only the active server pings: one OPTIONS every 2 s, not two.
        pings = len([text for text, _ in callee.received if text.startswith("OPTIONS ")])
        await deferLater(6.5)
        pings = len([text for text, _ in callee.received if text.startswith("OPTIONS ")]) - pings
        self.assertIn(pings, (3, 4))
        # Two calls set up through the active server: one to be hung up
        # after it dies, one whose BYE never comes.
        dialog = await caller.call(f"sip:{NUMBER}@{FLOATING}")
        forgotten = await caller.call(f"sip:{NUMBER}@{FLOATING}")
        await deferLater(1.5)
        # The caller registers again, and the active server dies at once
        # (well within the second bindings used to take to reach the store).
        registered = await caller.request("REGISTER", f"sip:{FLOATING}", "Expires: 600\r\n")
        self.assertTrue(registered.startswith("SIP/2.0 200"), registered)
        self.processes[f"aetasip-{first}"].kill()
        killedAt = reactor.seconds()  # type: ignore[attr-defined]
        await waitFor(lambda: self.holder() == survivor, timeout=20)
        # The registration answered just before is known to the survivor.
        answered = await callee.request("MESSAGE", f"sip:{CALLER}@{FLOATING}", timeout=5)
        self.assertTrue(answered.startswith("SIP/2.0 200"), answered)
        self.assertEqual([a for t, a in caller.received if t.startswith("MESSAGE ")], [(FLOATING, 5060)])
        answered = await caller.request("MESSAGE", f"sip:{NUMBER}@{FLOATING}", timeout=5)
        self.assertTrue(answered.startswith("SIP/2.0 200"), answered)
        (delivered,) = [
            (t, a) for t, a in callee.received if t.startswith("MESSAGE ") and answered.count(header(t, "call-id"))
        ]
        # From the address the agent registered to: its NAT mapping would hold.
        self.assertEqual(delivered[1], (FLOATING, 5060))
        # The call set up before is hung up through the survivor (signed Route).
        byes = len([t for t, _ in callee.received if t.startswith("BYE ")])
        hungUp = await caller.bye(dialog)
        self.assertTrue(hungUp.startswith("SIP/2.0 200"), hungUp)
        self.assertEqual(len([t for t, _ in callee.received if t.startswith("BYE ")]), byes + 1)
        # Its record, opened by the dead server, is closed by the survivor.
        await waitFor(lambda: self.recordOf(url, dialog["callID"]) == ("caller BYE", f"sip-{first}"), timeout=5)
        # The other call's record ends with 'failover' at the dead server's last announcement.
        await waitFor(lambda: self.recordOf(url, forgotten["callID"]) == ("failover", f"sip-{first}"), timeout=10)
        endedAt = self.recordOf(url, forgotten["callID"], "endedAt")
        self.assertLess(killedAt - 1.5, endedAt)
        self.assertLessEqual(endedAt, killedAt)
        # The survivor pings it now, and alone.
        pings = len([text for text, _ in callee.received if text.startswith("OPTIONS ")])
        await deferLater(4.5)
        pings = len([text for text, _ in callee.received if text.startswith("OPTIONS ")]) - pings
        self.assertIn(pings, (2, 3))

    async def test_node_drain_moves_the_address_with_no_failed_request(self) -> None:
        url, first, other = await self.cluster()
        _callee, caller = await self.agents()
        # A call in progress on the drained server, hung up once the address moved.
        dialog = await caller.call(f"sip:{NUMBER}@{FLOATING}")
        await deferLater(1.5)

        def drain() -> tuple[int, str]:
            out = io.StringIO()
            with insideNamespace(self.names["db"]):
                code = admin.main(
                    ["--store", url, "node", "drain", f"sip-{first}", "--timeout", "30"], out, io.StringIO()
                )
            return code, out.getvalue()

        draining = deferToThread(drain)
        answers = []
        hungUp = ""
        while not draining.called:
            answers.append((await caller.request("MESSAGE", f"sip:{NUMBER}@{FLOATING}")).split("\r\n", 1)[0])
            if not hungUp and self.holder() == other:
                # Its BYE reaches the other server, which ends the call and
                # says so (NOTIFY): the drained server ends its copy.
                hungUp = await caller.bye(dialog)
            await deferLater(0.2)
        code, out = await draining
        self.assertTrue(hungUp.startswith("SIP/2.0 200"), hungUp)
        self.assertEqual(code, 0, out)
        # The other server amends the record (written behind): one record, its real end.
        await waitFor(lambda: self.recordOf(url, dialog["callID"]) == ("caller BYE", f"sip-{first}"), timeout=10)
        self.assertIn(f"after sip-{first} failed", self.recordOf(url, dialog["callID"], "endDetail"))
        self.assertEqual(out.splitlines()[-1], f"sip-{first} is idle: standby, no call in progress.")
        self.assertEqual(self.holder(), other)
        self.assertGreater(len(answers), 5)
        self.assertEqual(set(answers), {"SIP/2.0 200 OK"})

    async def test_calls_ringing_at_kill_9(self) -> None:
        """
        Three calls ring on the active server when it is killed: the
        callee answers one, whose 200 the survivor passes to the caller
        (then ACK and BYE go through it); the caller cancels another, and
        the survivor, finding the call in the dead server's records,
        answers 200 and 487 and sends the callee a CANCEL that its INVITE
        transaction matches (the branch is derived, not random), whose
        487 it ACKs; the callee refuses the third (486), which the
        survivor passes to the caller and ACKs.
        """
        url, first, survivor = await self.cluster()
        callee, caller = await self.agents()
        callee.hold = True
        answeredLater = await caller.ring(f"sip:{NUMBER}@{FLOATING}")
        cancelled = await caller.ring(f"sip:{NUMBER}@{FLOATING}")
        busy = await caller.ring(f"sip:{NUMBER}@{FLOATING}")
        await waitFor(lambda: len(callee.ringing) == 3, timeout=5)
        # Their records reach the store (written behind), then the server dies.
        await deferLater(1.5)
        self.processes[f"aetasip-{first}"].kill()
        await waitFor(lambda: self.holder() == survivor, timeout=20)
        answering = Deferred.fromCoroutine(callee.answer(0))
        ok = await answeredLater["final"]
        self.assertTrue(ok.startswith("SIP/2.0 200"), ok)
        answeredLater["to"] = header(ok, "to")
        answeredLater["route"] = list(reversed(headers(ok, "record-route")))
        answeredLater["target"] = header(ok, "contact").strip("<>").split(">")[0]
        answeredLater["cseq"] = 2
        caller.send("ACK", answeredLater["target"], answeredLater, 2, "")
        await answering
        hungUp = await caller.bye(answeredLater)
        self.assertTrue(hungUp.startswith("SIP/2.0 200"), hungUp)
        calleeGot = [t.split(" ", 1)[0] for t, _ in callee.received if header(t, "call-id") == answeredLater["callID"]]
        self.assertEqual(calleeGot, ["INVITE", "ACK", "BYE"])
        # Another: cancelled by its caller through the survivor; the
        # callee's phone stops ringing, and its 487 is ACKed there.
        cancelling = await caller.cancel(cancelled)
        self.assertTrue(cancelling.startswith("SIP/2.0 200"), cancelling)
        terminated = await cancelled["final"]
        self.assertTrue(terminated.startswith("SIP/2.0 487"), terminated)
        await waitFor(lambda: callee.terminated == [cancelled["callID"]], timeout=5)
        await waitFor(
            lambda: (
                [t.split(" ", 1)[0] for t, _ in callee.received if header(t, "call-id") == cancelled["callID"]][-1:]
                == ["ACK"]
            ),
            timeout=5,
        )
        invite = callee.ringing[1][0]
        for text, _ in callee.received:
            if header(text, "call-id") == cancelled["callID"] and not text.startswith("INVITE "):
                # The CANCEL and the ACK of the 487 have the INVITE's own top Via.
                self.assertEqual(headers(text, "via"), [header(invite, "via")], text)
        self.assertEqual(
            [r.split("\r\n", 1)[0] for r in caller.responses if header(r, "call-id") == cancelled["callID"]][-2:],
            ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"],
        )
        # The third: the callee is busy; its 486 reaches the caller through the survivor.
        refusing = Deferred.fromCoroutine(callee.refuse(2, 486, "Busy Here"))
        refused = await busy["final"].addTimeout(15, reactor)
        self.assertTrue(refused.startswith("SIP/2.0 486"), refused)
        self.assertEqual(len(headers(refused, "via")), 1)
        busy["to"] = header(refused, "to")
        caller.write("ACK", busy["uri"], busy, 2, busy["branch"], "")
        await refusing
        await deferLater(1.0)
        got = [t for t, _ in callee.received if header(t, "call-id") == busy["callID"]]
        self.assertEqual(got[0].split(" ", 1)[0], "INVITE")
        self.assertGreater(len(got), 1)
        for text in got[1:]:
            # ACKs from the survivor, hop by hop: the caller's own ACK stops there.
            self.assertTrue(text.startswith("ACK "), text)
            self.assertEqual(headers(text, "via"), [header(got[0], "via")], text)
        # The records the dead server opened end as the calls did.
        await waitFor(lambda: self.recordOf(url, answeredLater["callID"]) == ("caller BYE", f"sip-{first}"), timeout=10)
        await waitFor(lambda: self.recordOf(url, cancelled["callID"]) == ("cancelled", f"sip-{first}"), timeout=10)
        await waitFor(lambda: self.recordOf(url, busy["callID"]) == ("rejected", f"sip-{first}"), timeout=10)
        self.assertEqual(self.recordOf(url, busy["callID"], "status"), 486)

    def sippAt(self, role: str, label: str, scenarioName: str, port: int, *args: str, inf: str | None = None) -> Any:
        """A sipp run in the namespace of agent C{role}, on its address and C{port}: (process, its L{SippRun} reader)."""
        sipp = Sipp(self.sipp, self.directory)
        host = SECOND if role == "callee2" else AGENTS[role]
        name, argv, errorFile, messageFile = sipp._command(
            label, scenarioName, args, None, host, port, "u1", inf, 40, True
        )
        process = self.spawn(name, self.names[role], self.sipp, *argv)
        return process, lambda: SippRun(name, process.returncode or 0, "", "", errorFile, messageFile)

    async def sippCallee(self, role: str, number: str, password: str, scenarioName: str) -> Any:
        """C{number} registered by sipp from agent C{role}, then a sipp UAS of C{scenarioName} on that port."""
        port = 5070
        inf = injectionFile(self.directory, f"register-{number}", [(number, authentication(number, password))])
        registering, _ = self.sippAt(
            role, f"register-{number}", "register.xml", port, "-recv_timeout", "5000",
            f"{FLOATING}:5060", inf=inf,
        )  # fmt: skip
        await waitFor(lambda: registering.poll() is not None, timeout=10)
        self.assertEqual(registering.returncode, 0)
        callee = self.sippAt(role, f"callee-{number}", scenarioName, port)
        await deferLater(0.5)
        return callee

    async def test_sipp_callees_ringing_at_kill_9(self) -> None:
        """
        Two sipp callees ring through the active server when it is killed:
        the caller's CANCEL of one reaches it through the survivor (sipp
        answers 200 and 487, gets the ACK, and ends well), with the
        INVITE's own top Via; the other's 486 after the switch reaches the
        caller, and its ACK the callee.
        """
        self.sipp = requireTool(self, "sipp", "sip-tester")
        self.network()
        self.namespace("callee2")
        self.ip("link", "add", "eth0", "netns", self.names["callee2"], "type", "veth", "peer", "name", "p9",
                "netns", self.names["sw"])  # fmt: skip
        self.ip("-n", self.names["sw"], "link", "set", "p9", "master", "br0", "up")
        self.ip("-n", self.names["callee2"], "address", "add", f"{SECOND}/24", "dev", "eth0")
        self.ip("-n", self.names["callee2"], "link", "set", "eth0", "up")
        url = self.database()
        with insideNamespace(self.names["db"]):
            for number, password in ((NUMBER, PASSWORD), (CALLER, CALLER_PASSWORD), (BUSY, BUSY_PASSWORD)):
                self.assertEqual(
                    admin.main(["--store", url, "account", "add", number, "--password", password], *_quiet()), 0
                )
        # No keep-alive OPTIONS: a sipp UAS takes one for its one call.
        self.server("a", url, pingInterval=600)
        await deferLater(2.0)
        self.server("b", url, pingInterval=600)
        await waitFor(lambda: self.holder() is not None, timeout=30)
        first = self.holder()
        survivor = "b" if first == "a" else "a"
        ringing, ringingRun = await self.sippCallee("callee", NUMBER, PASSWORD, "call_uas_ring_cancelled.xml")
        busy, busyRun = await self.sippCallee("callee2", BUSY, BUSY_PASSWORD, "call_uas_ring_then_busy.xml")
        caller = self.agent("caller", CALLER, CALLER_PASSWORD)
        cancelled = await caller.ring(f"sip:{NUMBER}@{FLOATING}")
        refused = await caller.ring(f"sip:{BUSY}@{FLOATING}")
        await waitFor(lambda: [r.split("\r\n", 1)[0] for r in caller.responses].count("SIP/2.0 180 Ringing") >= 2,
                      timeout=5)  # fmt: skip
        # Their records reach the store (written behind), then the server dies.
        await deferLater(1.5)
        self.processes[f"aetasip-{first}"].kill()
        await waitFor(lambda: self.holder() == survivor, timeout=20)
        cancelling = await caller.cancel(cancelled)
        self.assertTrue(cancelling.startswith("SIP/2.0 200"), cancelling)
        terminated = await cancelled["final"].addTimeout(10, reactor)
        self.assertTrue(terminated.startswith("SIP/2.0 487"), terminated)
        # The sipp callee got the CANCEL, answered it and the INVITE 487, and its ACK.
        await waitFor(lambda: ringing.poll() is not None, timeout=10)
        run = ringingRun()
        self.assertEqual(ringing.returncode, 0, run.detail)
        (invite,) = run.received("INVITE")
        (cancel,) = run.received("CANCEL")[:1]
        self.assertEqual(cancel.headers("Via"), invite.headers("Via")[:1])
        self.assertEqual(cancel.firstLine.split()[1], invite.firstLine.split()[1])
        # The other callee is busy after the switch: the caller hears it.
        busyAnswer = await refused["final"].addTimeout(20, reactor)
        self.assertTrue(busyAnswer.startswith("SIP/2.0 486"), busyAnswer)
        refused["to"] = header(busyAnswer, "to")
        caller.write("ACK", refused["uri"], refused, 2, refused["branch"], "")
        await waitFor(lambda: busy.poll() is not None, timeout=10)
        run = busyRun()
        self.assertEqual(busy.returncode, 0, run.detail)
        (invite,) = run.received("INVITE")
        for ack in run.received("ACK"):
            self.assertEqual(ack.headers("Via"), invite.headers("Via")[:1])
        await waitFor(lambda: self.recordOf(url, cancelled["callID"]) == ("cancelled", f"sip-{first}"), timeout=10)


def _quiet() -> tuple[Any, Any]:
    return io.StringIO(), io.StringIO()
