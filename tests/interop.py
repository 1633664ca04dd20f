"""
What the interop tests share: the service started in this process on
loopback (L{tests.servers.RunningService}), sipp agents calling through
it, the test's own UDP sockets for media, and what a failure shows.

A failing test that uses L{ExplainsFailures} carries, after its own
message, the service's log lines written while it ran and a diagnosis
of every C{403 Bad credentials} a sipp agent received: whether the store
knows the number, whether its HA1 is that of the password the test gave
sipp, and whether sipp's digest response is right for that password (a
right response refused points at the service, a wrong one at the test).
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import ILogObserver, formatEventAsClassicLogText, globalLogPublisher
from twisted.trial.itrial import IReporter
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from aetasip.sip.digest import computeResponse, parseDigest
from aetasip.store import Store
from tests.servers import RunningService, deferLater, freePort, requireTool
from tests.sipp import Sipp, SippProcess, SippRun, address, authentication, injectionFile

# The log lines a failure shows at the most (the last ones).
LOG_LINES = 200


async def within(seconds: float, condition: Any, what: str) -> None:
    """Wait (polling) until C{condition()} is true; fail after C{seconds}."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await deferLater(0.05)


class MediaSocket(DatagramProtocol):
    """A media socket of the test's own: keeps every datagram with the address it came from."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, addr))


class Recorder:
    """An L{aetasip.interfaces.ICallObserver} keeping the events it hears, with their time."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, float]] = []

    def _event(self, name: str, call: Any) -> None:
        self.events.append((name, call, time.monotonic()))

    def callStarted(self, call: Any) -> None:
        self._event("started", call)

    def callRinging(self, call: Any) -> None:
        self._event("ringing", call)

    def callAnswered(self, call: Any) -> None:
        self._event("answered", call)

    def callEnded(self, call: Any) -> None:
        self._event("ended", call)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.events]

    def first(self, name: str) -> tuple[Any, float] | None:
        for event, call, when in self.events:
            if event == name:
                return call, when
        return None

    async def wait(self, name: str, seconds: float) -> tuple[Any, float]:
        """The call of the first event C{name}, and when it came."""
        await within(seconds, lambda: self.first(name) is not None, f"no call {name}")
        found = self.first(name)
        assert found is not None
        return found


def watchCalls(service: RunningService, event: str = "started") -> list[Any]:
    """The calls of C{event} (see L{CallEvents}) in C{service} from now on: a list that grows."""
    observer = CallEvents(event)
    service.sip.proxy.observers.add(observer)
    return observer.calls


async def awaitCalls(calls: list[Any], seconds: float = 10.0) -> list[Any]:
    """
    C{calls} (from L{watchCalls}) once it holds a call, or as it is after
    C{seconds}: an event may come a little after what the agents saw (a
    call ends once the relay has released its media).
    """
    for _ in range(int(seconds / 0.05)):
        if calls:
            break
        await deferLater(0.05)
    return calls


class CallEvents(Recorder):
    """
    A L{Recorder} that also keeps, in C{calls}, every call of one C{event}:
    C{"started"}, C{"ringing"}, C{"answered"} or C{"ended"}.
    """

    def __init__(self, event: str) -> None:
        super().__init__()
        self.event = event
        self.calls: list[Any] = []

    def _event(self, name: str, call: Any) -> None:
        super()._event(name, call)
        if name == self.event:
            self.calls.append(call)


@implementer(ILogObserver)
class ServiceLog:
    """The lines logged (C{twisted.logger}) in this process while it is installed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        text = formatEventAsClassicLogText(event)
        if text is not None:
            self.lines.append(text.rstrip("\n"))

    def install(self, testCase: TestCase) -> None:
        observer = cast(ILogObserver, self)
        globalLogPublisher.addObserver(observer)
        testCase.addCleanup(globalLogPublisher.removeObserver, observer)


def credentialsDiagnosis(directory: str, storeURL: str | None, passwords: Mapping[str, str]) -> list[str]:
    """
    For each C{403 Bad credentials} in the sipp message traces of
    C{directory}, what the request before it (with credentials) had
    against the store at C{storeURL} and the passwords the test gave
    sipp (C{passwords}, by number).
    """
    lines: list[str] = []
    for path in sorted(glob.glob(os.path.join(directory, "*.msg"))):
        trace = SippRun(os.path.basename(path), 0, "", "", "", path)
        lastCredentials: tuple[str, str] | None = None
        judged: list[tuple[str, str] | None] = []
        for message in trace.messages():
            if message.sent:
                for header in ("Authorization", "Proxy-Authorization"):
                    for value in message.headers(header):
                        lastCredentials = (message.firstLine.split(" ", 1)[0], value)
            elif message.firstLine.startswith("SIP/2.0 403 Bad credentials") and lastCredentials not in judged:
                judged.append(lastCredentials)
                lines.append(f"{trace.name}: {message.firstLine}")
                lines.extend("  " + line for line in _judge(lastCredentials, storeURL, passwords))
    return lines


def _judge(sent: tuple[str, str] | None, storeURL: str | None, passwords: Mapping[str, str]) -> list[str]:
    if sent is None:
        return ["no request with credentials was sent before it"]
    method, header = sent
    params = parseDigest(header)
    if params is None:
        return [f"unparsable credentials: {header}"]
    number = params.get("username", "")
    found: list[str] = [f"{method} credentials: {header}"]
    password = passwords.get(number)
    if password is None:
        found.append(f"the test gave sipp no password for {number}")
    else:
        ha1 = hashlib.md5(f"{number}:{params.get('realm')}:{password}".encode()).hexdigest()
        expected = computeResponse(
            "MD5", ha1, params["nonce"], params.get("nc"), params.get("cnonce"), params.get("qop"), method,
            params["uri"],
        )  # fmt: skip
        right = expected == params.get("response", "").lower()
        found.append(f"sipp's response {'is' if right else 'is NOT'} the one for the test's password {password!r}")
        if storeURL is not None:
            store = Store(storeURL)
            store.open()
            try:
                credentials = store.credentials(number)
            finally:
                store.close()
            if credentials is None:
                found.append(f"the store has no account {number}")
            else:
                same = credentials.ha1.get("MD5") == ha1 and credentials.realm == params.get("realm")
                found.append(
                    f"the store's HA1 (realm {credentials.realm!r}) {'is' if same else 'is NOT'} that of the password"
                )
                if right and same:
                    found.append("a right answer was refused: look at the service (nonce already used? lookup?)")
    return found


class ExplainsFailures(TestCase):
    """
    A test of a service (C{self.server}, a L{RunningService} or C{None})
    with sipp agents (C{self.sipp}): a failure shows the service's log and
    a diagnosis of the credentials refused (see the module's docstring).
    C{passwords} are the SIP passwords the test gave its agents.
    """

    def captureServiceLog(self) -> None:
        """Keep the lines logged from now until the end of the test."""
        self.serviceLog = ServiceLog()
        self.serviceLog.install(self)

    def explanation(self) -> str:
        """What a failure shows after its own message."""
        parts = []
        log = getattr(self, "serviceLog", None)
        if log is not None:
            shown = log.lines[-LOG_LINES:]
            parts.append(f"---- the service's log while the test ran ({len(shown)} of {len(log.lines)} lines) ----")
            parts.extend(shown)
        sipp = getattr(self, "sipp", None)
        if sipp is not None:
            server = getattr(self, "server", None)
            storeURL = server.storeURL if server is not None else None
            try:
                diagnosis = credentialsDiagnosis(sipp.directory, storeURL, getattr(self, "passwords", {}))
            except Exception as e:  # a diagnosis must not hide the failure
                diagnosis = [f"(no diagnosis: {e!r})"]
            if diagnosis:
                parts.append("---- credentials refused ----")
                parts.extend(diagnosis)
        return "\n".join(parts)

    def run(self, result: Any = None) -> Any:
        return super().run(_Explaining(result, self))


@implementer(IReporter)
class _Explaining:
    """A test result that adds its test's L{ExplainsFailures.explanation} to failures and errors."""

    def __init__(self, result: Any, test: ExplainsFailures) -> None:
        self._result = result
        self._test = test

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    def _explained(self, failure: Any) -> Any:
        try:
            text = self._test.explanation()
        except Exception as e:
            text = f"(no explanation: {e!r})"
        value = getattr(failure, "value", None)
        if text and isinstance(value, AssertionError) and value.args:
            value.args = (f"{value.args[0]}\n{text}", *value.args[1:])
        elif text:
            print(f"\n---- {self._test.id()} ----\n{text}")
        return failure

    def addFailure(self, test: Any, failure: Any) -> None:
        self._result.addFailure(test, self._explained(failure))

    def addError(self, test: Any, error: Any) -> None:
        self._result.addError(test, self._explained(error))


class InteropTestCase(ExplainsFailures):
    """
    A service the test starts with L{serve} (stopped when it ends), sipp
    agents with their files in C{directory}, and the test's own sockets.
    """

    timeout = 90

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), self.directory)
        self.server: RunningService | None = None
        self.passwords: dict[str, str] = {}
        self.addCleanup(self.stopServer)
        self.captureServiceLog()

    async def serve(self, accounts: Sequence[tuple[str, str]] = (), **settings: Any) -> RunningService:
        """Provision C{accounts} (number, password) and start the service with C{settings}."""
        self.server = server = RunningService(self.directory, **settings)
        server.addAccounts(*accounts)
        self.passwords.update(accounts)
        await server.start()
        return server

    def stopServer(self) -> Any:
        if self.server is not None and self.server.service is not None:
            return self.server.stop()
        return None

    @property
    def running(self) -> RunningService:
        """The service, once L{serve} started it."""
        assert self.server is not None, "the service is not started"
        return self.server

    def watchCalls(self, event: str = "started") -> list[Any]:
        """The calls of C{event} (see L{CallEvents}) from now on: a list that grows."""
        return watchCalls(self.running, event)

    def socket(self, protocol: DatagramProtocol, host: str = "127.0.0.1") -> int:
        """Listen with C{protocol} on a free UDP port of C{host} until the test ends; return the port."""
        port = reactor.listenUDP(0, protocol, interface=host)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def caller(
        self,
        name: str,
        scenario: str,
        row: Sequence[str],
        *args: str,
        timeout: int = 40,
        messages: bool = True,
        transport: str = "u1",
    ) -> SippProcess:
        """
        A sipp calling through the service's first port with C{scenario},
        its injection file C{name}.csv one C{row} (the caller's number,
        then the dialled number and the scenario's other fields: the
        credentials are put in second); killed, if still running, when the
        test ends.
        """
        number, *rest = row
        fields = [number, authentication(number, self.passwords[number]), *rest]
        inf = injectionFile(self.sipp.directory, name, [fields])
        process = self.sipp.start(
            name,
            scenario,
            *args,
            remote=address("127.0.0.1", self.running.ports[0]),
            inf=inf,
            timeout=timeout,
            messages=messages,
            transport=transport,
        )
        self.addCleanup(self.killed, process)
        return process

    async def callee(
        self,
        number: str,
        scenario: str,
        *args: str,
        inf: Sequence[Sequence[str]] | None = None,
        name: str = "callee",
        timeout: int = 40,
    ) -> SippProcess:
        """
        C{number} registers from a free port, then a sipp answers there
        with C{scenario} (its injection file C{name}-media.csv the rows
        C{inf}, when given); killed, if still running, when the test ends.
        """
        port = freePort()
        registered = await self.sipp.register(number, self.passwords[number], self.running.ports[0], port=port)
        self.assertEqual(registered.code, 0, registered.detail)
        path = None if inf is None else injectionFile(self.sipp.directory, f"{name}-media", inf)
        process = self.sipp.start(name, scenario, *args, port=port, inf=path, timeout=timeout, messages=True)
        self.addCleanup(self.killed, process)
        # Let it bind its port; an INVITE sent before is retransmitted anyway.
        await deferLater(0.5)
        return process

    @staticmethod
    def killed(process: SippProcess) -> Any:
        process.kill()
        return process.done

    async def mediaOf(self, name: str) -> tuple[str, int]:
        """The address and port the sipp agent C{name} found in the SDP it received."""
        return await mediaOf(self, name)


async def mediaOf(testCase: Any, name: str) -> tuple[str, int]:
    """
    The address and port the sipp agent C{name} of C{testCase.sipp} wrote
    (C{NAME-media.txt}) from the SDP it received; the test fails after 15 s
    without it.
    """
    path = os.path.join(testCase.sipp.directory, f"{name}-media.txt")
    for _ in range(300):
        if os.path.exists(path):
            with open(path) as f:
                host, port = f.read().split()
            return host, int(port)
        await deferLater(0.05)
    testCase.fail(f"{name} got no SDP")
    raise AssertionError  # not reached
