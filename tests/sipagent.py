"""
A minimal SIP user agent for the tests: builds requests as bytes, answers
digest challenges, and reads responses. Deliberately independent of the
server's own builders (it writes text by hand) so that tests do not check
the server against itself.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from aetasip import config
from aetasip.auth import credentialsFromPassword
from aetasip.sip.transaction import Peer

_counter = itertools.count(1)


def H(algorithm: str, text: str) -> str:
    return (hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5)(text.encode()).hexdigest()


class Reply:
    """A response as the tests read it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        text = data.decode("utf-8", "replace")
        head = text.split("\r\n\r\n", 1)[0]
        lines = head.split("\r\n")
        status = lines[0].split(" ", 2)
        self.code = int(status[1])
        self.reason = status[2] if len(status) > 2 else ""
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def challenge(self, algorithm: str = "MD5") -> dict[str, str]:
        for value in self.all("www-authenticate") + self.all("proxy-authenticate"):
            params = dict(re.findall(r'(\w+)="?([^",]*)"?', value))
            if params.get("algorithm", "MD5") == algorithm:
                return params
        raise AssertionError(f"no {algorithm} challenge in {self.data!r}")

    def __repr__(self) -> str:
        return f"<Reply {self.code} {self.reason}>"


class Agent:
    """
    One registering agent: a number, a password, a source address, a
    contact; keeps its Call-ID and CSeq like a real UA does.
    """

    def __init__(
        self,
        number: str,
        password: str,
        source: tuple[str, int] = ("127.0.0.1", 40000),
        contact: str | None = None,
        domain: str = "127.0.0.1",
        transport: str = "udp",
    ) -> None:
        self.number = number
        self.password = password
        self.source = source
        self.domain = domain
        self.transport = transport
        self.contact = contact or f"sip:{number}@{source[0]}:{source[1]}"
        self.callID = f"call-{next(_counter)}@test"
        self.cseq = 0
        self.nc = 0

    def register(
        self,
        expires: int | None = 3600,
        contacts: list[str] | None = None,
        auth: dict[str, str] | None = None,
        algorithm: str = "MD5",
        extra: list[str] = (),  # type: ignore[assignment]
        username: str | None = None,
        password: str | None = None,
        toNumber: str | None = None,
    ) -> bytes:
        self.cseq += 1
        branch = f"z9hG4bK-{next(_counter)}"
        uri = f"sip:{self.domain}"
        lines = [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.source[0]}:{self.source[1]};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.number}@{self.domain}>;tag=from{self.cseq}",
            f"To: <sip:{toNumber or self.number}@{self.domain}>",
            f"Call-ID: {self.callID}",
            f"CSeq: {self.cseq} REGISTER",
        ]
        for contact in contacts if contacts is not None else [f"<{self.contact}>"]:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth is not None:
            user = self.number if username is None else username
            self.nc += 1
            nc = f"{self.nc:08x}"
            cnonce = f"c{self.cseq}"
            ha1 = H(algorithm, f"{user}:{auth['realm']}:{password or self.password}")
            ha2 = H(algorithm, f"REGISTER:{uri}")
            response = H(algorithm, f"{ha1}:{auth['nonce']}:{nc}:{cnonce}:auth:{ha2}")
            lines.append(
                f'Authorization: Digest username="{user}", realm="{auth["realm"]}", nonce="{auth["nonce"]}", '
                f'uri="{uri}", response="{response}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, '
                f'nc={nc}, opaque="{auth.get("opaque", "")}"'
            )
        lines.extend(extra)
        lines.append("User-Agent: test-agent/1.0")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class FakeAuth:
    """An IAuthBackend with accounts in a dict; can be made unavailable."""

    def __init__(self, passwords: dict[str, str], realm: str = "aetasip") -> None:
        self.realm = realm
        self.accounts = {n: credentialsFromPassword(n, "premium", realm, p) for n, p in passwords.items()}
        self.failure: Exception | None = None
        self.lookups = 0

    def credentials(self, number: str) -> Any:
        self.lookups += 1
        if self.failure is not None:
            from twisted.internet.defer import fail

            return fail(self.failure)
        return succeed(self.accounts.get(number))


class FakeUDPSocket:
    """Stands for a listening UDP protocol and its transport."""

    def __init__(self, sent: list[tuple[tuple[str, int], bytes]]) -> None:
        self.sent = sent
        self.transport = self

    def sendTo(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(((addr[0], addr[1]), data))


class Harness:
    """
    The SIP element (SIPService's core) on a L{Clock}, fed with bytes.
    """

    def __init__(
        self,
        auth: Any = None,
        store: Any = None,
        directory: Any = None,
        observers: Any = None,
        media: Any = None,
        dialogKey: bytes | None = None,
        clock: Clock | None = None,
        **settings: Any,
    ) -> None:
        from aetasip.sipelement import makeSIPService

        base = {"sip.domains": ["sip.example.net", "sip.example.fr"]}
        base.update({k.replace("__", "."): v for k, v in settings.items()})
        self.config = config.build(base)
        if clock is None:
            clock = Clock()
            clock.advance(1_800_000_000)
        self.clock = clock
        self.auth = auth or FakeAuth({"45675001": "secret1", "45675002": "secret2"})
        self.service = makeSIPService(
            self.config,
            self.auth,
            store,
            reactor=self.clock,
            directory=directory,
            observers=observers,
            media=media,
            dialogKey=dialogKey,
        )
        self.core = self.service.core
        self.location = self.service.location
        self.location.start()
        self.events: list[Any] = []
        self.location.listeners.append(self)
        self.sent: list[tuple[tuple[str, int], bytes]] = []
        # The service's UDP socket on 127.0.0.1:5060, for what it sends on its own
        # (proxied requests, pings): recorded with their destination.
        self.service._udpByLocal[("127.0.0.1", 5060)] = FakeUDPSocket(self.sent)  # type: ignore[assignment]

    def registrationEvent(self, event: Any) -> None:
        self.events.append(event)

    def send(self, data: bytes, source: tuple[str, int] = ("127.0.0.1", 40000), transport: str = "udp") -> list[Reply]:
        """Feed C{data} as if from C{source}; return the replies it caused."""
        before = len(self.sent)
        peer = Peer(transport, source, ("127.0.0.1", 5060), lambda out: self.sent.append((source, out)))
        self.core.receive(data, peer, stream=transport != "udp")
        # Responses only: what the proxy forwards stays in self.sent.
        return [Reply(out) for _, out in self.sent[before:] if out.startswith(b"SIP/2.0 ")]

    def sendOne(self, data: bytes, source: tuple[str, int] = ("127.0.0.1", 40000), transport: str = "udp") -> Reply:
        replies = self.send(data, source, transport)
        assert len(replies) == 1, replies
        return replies[0]

    def register(self, agent: Agent, algorithm: str = "MD5", **kwargs: Any) -> Reply:
        """A full REGISTER: challenge, then credentials."""
        challenge = self.sendOne(agent.register(**kwargs), agent.source, agent.transport)
        if challenge.code != 401:
            return challenge
        return self.sendOne(
            agent.register(auth=challenge.challenge(algorithm), algorithm=algorithm, **kwargs),
            agent.source,
            agent.transport,
        )
