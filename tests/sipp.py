"""
Running sipp (Debian sip-tester) in the interop tests: one run of a
scenario with bounded time (C{-timeout}, C{-timeout_error}, C{-nostdin}),
its errors (C{-trace_err}) and, on request, the messages it sent and
received (C{-trace_msg}) for assertions; injection files; and registering
an account with C{benchmarks/register.xml}.

Scenarios are looked up in C{tests/scenarios/} (the tests' own), then in
C{benchmarks/} (shared with the benchmarks, which must not change).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from tests.servers import deferLater, freePort, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "tests", "scenarios")
BENCHMARKS = os.path.join(ROOT, "benchmarks")

# Unique file names for the runs of a test (one test may run sipp many times).
_runs = itertools.count(1)

# A message in a -trace_msg file: a separator line with a timestamp, a line
# saying what happened, a blank line, then the message.
_MESSAGE = re.compile(
    r"^-{10,}[^\n]*\n(?P<what>[^\n]*(?:sent|received)[^\n]*)\n\n(?P<text>.*?)(?=\n-{10,}|\Z)",
    re.MULTILINE | re.DOTALL,
)


def scenario(name: str) -> str:
    """The path of the scenario C{name}: the tests' own first, then the benchmarks'."""
    for folder in (SCENARIOS, BENCHMARKS):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no sipp scenario {name} in {SCENARIOS} or {BENCHMARKS}")


def authentication(number: str, password: str) -> str:
    """The injection field sipp turns into digest credentials (MD5 only)."""
    return f"[authentication username={number} password={password}]"


def injectionFile(directory: str, name: str, rows: Iterable[Sequence[str]]) -> str:
    """
    Write the SEQUENTIAL injection file C{name}.csv in C{directory}, one
    line of C{;}-separated fields per row; return its path.
    """
    path = os.path.join(directory, f"{name}.csv")
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for row in rows:
            f.write(";".join(row) + "\n")
    return path


def address(host: str, port: int) -> str:
    """C{host:port}, with brackets for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class SipMessage:
    """A message from a C{-trace_msg} file: C{sent} or received, and its text."""

    sent: bool
    text: str

    @property
    def firstLine(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    def headers(self, name: str) -> list[str]:
        """The values of every header C{name} (case-insensitive, long names only)."""
        head = self.text.split("\n\n", 1)[0]
        prefix = name.lower() + ":"
        return [line.split(":", 1)[1].strip() for line in head.split("\n")[1:] if line.lower().startswith(prefix)]

    def isRequest(self, method: str) -> bool:
        return self.firstLine.startswith(method + " ")

    def isResponse(self, code: int, method: str) -> bool:
        cseq = self.headers("CSeq")
        return self.firstLine.startswith(f"SIP/2.0 {code} ") and bool(cseq) and cseq[0].endswith(" " + method)


@dataclass(frozen=True)
class SippRun:
    """
    The outcome of one sipp run.

    @ivar code: the exit code (0: every call succeeded).
    @ivar errorFile: where C{-trace_err} wrote the unexpected messages and failures.
    @ivar messageFile: where C{-trace_msg} wrote every message, or C{None}.
    """

    name: str
    code: int
    out: str
    err: str
    errorFile: str
    messageFile: str | None

    def errors(self) -> str:
        """What sipp wrote to its error file ("" when nothing went wrong)."""
        if not os.path.exists(self.errorFile):
            return ""
        with open(self.errorFile, errors="replace") as f:
            return f.read()

    @property
    def detail(self) -> str:
        """What to show when an assertion on this run fails."""
        return f"sipp {self.name} exited {self.code}\n{self.out[-600:]}{self.err[-600:]}{self.errors()}"

    def messages(self) -> list[SipMessage]:
        """The messages sipp sent and received, in order (needs C{messages=True})."""
        if self.messageFile is None or not os.path.exists(self.messageFile):
            return []
        with open(self.messageFile, errors="replace") as f:
            text = f.read().replace("\r\n", "\n")
        return [
            SipMessage(" sent" in match.group("what"), match.group("text").strip("\n") + "\n")
            for match in _MESSAGE.finditer(text)
        ]

    def received(self, method: str | None = None) -> list[SipMessage]:
        """The messages received: requests of C{method}, or all."""
        return [m for m in self.messages() if not m.sent and (method is None or m.isRequest(method))]

    def sent(self, method: str | None = None) -> list[SipMessage]:
        """The messages sent: requests of C{method}, or all."""
        return [m for m in self.messages() if m.sent and (method is None or m.isRequest(method))]

    def responses(self, method: str) -> list[str]:
        """The status lines of the responses received to C{method} requests, in order."""
        return [
            m.firstLine
            for m in self.received()
            if m.firstLine.startswith("SIP/2.0 ") and m.headers("CSeq") and m.headers("CSeq")[0].endswith(" " + method)
        ]

    def finalResponse(self, method: str = "INVITE") -> str:
        """The status line of the last final response received to C{method} ("" if none)."""
        finals = [line for line in self.responses(method) if not line.startswith("SIP/2.0 1")]
        return finals[-1] if finals else ""


@dataclass(frozen=True)
class Callee:
    """
    A registered sipp callee answering one call.

    @ivar port: its SIP port.
    @ivar done: fires with its L{SippRun} once the call is over.
    """

    number: str
    port: int
    done: Deferred[SippRun]


class _Collector(ProcessProtocol):
    """Collects a sipp's output; C{done} fires with its L{SippRun} when it exits."""

    def __init__(self, label: str, errorFile: str, messageFile: str | None) -> None:
        self.label, self.errorFile, self.messageFile = label, errorFile, messageFile
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done: Deferred[SippRun] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        value: Any = reason.value  # ProcessDone or ProcessTerminated
        # Killed by a signal: -N, as subprocess says.
        code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        out = b"".join(self.out).decode("utf-8", "replace")
        err = b"".join(self.err).decode("utf-8", "replace")
        self.done.callback(SippRun(self.label, code, out, err, self.errorFile, self.messageFile))


@dataclass(frozen=True)
class SippProcess:
    """
    A sipp started by L{Sipp.start}.

    @ivar pid: its process id (this test started it: it may kill it).
    @ivar done: fires with its L{SippRun} once it exits.
    """

    pid: int
    done: Deferred[SippRun]
    label: str
    errorFile: str
    messageFile: str | None

    def messages(self) -> list[SipMessage]:
        """The messages it sent and received so far (sipp writes its trace as it goes)."""
        return SippRun(self.label, 0, "", "", self.errorFile, self.messageFile).messages()

    def kill(self) -> None:
        """SIGKILL: the agent vanishes at once, as a codec losing power (its run's code is -9)."""
        if not self.done.called:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it has just exited


class Sipp:
    """
    Runs sipp scenarios for a test, with their files in C{directory}.

    @ivar executable: the sipp program (from L{tests.servers.requireTool}).
    """

    def __init__(self, executable: str, directory: str) -> None:
        self.executable = executable
        self.directory = os.path.abspath(directory)

    def _command(
        self,
        name: str,
        scenarioName: str,
        args: Sequence[str],
        remote: str | None,
        host: str,
        port: int | None,
        transport: str,
        inf: str | None,
        timeout: int,
        messages: bool,
    ) -> tuple[str, list[str], str, str | None]:
        """The label, arguments, error file and message file of a run (see L{run})."""
        label = f"{name}-{next(_runs)}"
        errorFile = os.path.join(self.directory, f"{label}.err")
        messageFile = os.path.join(self.directory, f"{label}.msg") if messages else None
        if port is None:
            port = freePort(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        argv = [
            "-sf", scenario(scenarioName),
            "-m", "1",
            "-t", transport,
            "-i", host,
            "-p", str(port),
            "-timeout", f"{timeout}s",
            "-timeout_error",
            "-nostdin",
            "-trace_err", "-error_file", errorFile,
        ]  # fmt: skip
        if inf is not None:
            argv += ["-inf", inf]
        if messageFile is not None:
            argv += ["-trace_msg", "-message_file", messageFile]
        argv += list(args)
        if remote is not None:
            argv.append(remote)
        return label, argv, errorFile, messageFile

    def run(
        self,
        name: str,
        scenarioName: str,
        *args: str,
        remote: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        transport: str = "u1",
        inf: str | None = None,
        timeout: int = 20,
        messages: bool = False,
    ) -> Deferred[SippRun]:
        """
        Run one call of the scenario C{scenarioName} (UAC when C{remote} is
        given, UAS otherwise) on C{host}:C{port} (free when C{None}), over
        C{transport}; sipp gives up after C{timeout} seconds, which counts
        as a failure.

        @param args: more sipp options.
        @param messages: trace the messages, for L{SippRun.messages}.
        """
        label, argv, errorFile, messageFile = self._command(
            name, scenarioName, args, remote, host, port, transport, inf, timeout, messages
        )

        async def running() -> SippRun:
            out, err, code = await run(self.executable, *argv, path=self.directory)
            return SippRun(label, code, out, err, errorFile, messageFile)

        return Deferred.fromCoroutine(running())

    def start(
        self,
        name: str,
        scenarioName: str,
        *args: str,
        remote: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        transport: str = "u1",
        inf: str | None = None,
        timeout: int = 20,
        messages: bool = False,
    ) -> SippProcess:
        """
        Like L{run}, but return the running sipp at once: its PID, so that
        a test can kill it mid-call (an agent that vanishes), and C{done}.
        """
        label, argv, errorFile, messageFile = self._command(
            name, scenarioName, args, remote, host, port, transport, inf, timeout, messages
        )
        protocol = _Collector(label, errorFile, messageFile)
        process = reactor.spawnProcess(
            protocol, self.executable, [self.executable, *argv], env=dict(os.environ), path=self.directory
        )
        return SippProcess(int(process.pid), protocol.done, label, errorFile, messageFile)

    def register(
        self,
        number: str,
        password: str,
        serverPort: int,
        transport: str = "u1",
        host: str = "127.0.0.1",
        port: int | None = None,
        serverHost: str | None = None,
    ) -> Deferred[SippRun]:
        """
        Register C{number} (digest, C{benchmarks/register.xml}, Expires 3600)
        from C{host}:C{port} with the service on C{serverHost} (default
        C{host}) port C{serverPort}.
        """
        inf = injectionFile(self.directory, f"register-{number}", [(number, authentication(number, password))])
        return self.run(
            f"register-{number}-{transport}",
            "register.xml",
            "-recv_timeout", "5000",
            remote=address(serverHost or host, serverPort),
            host=host,
            port=port,
            transport=transport,
            inf=inf,
        )  # fmt: skip

    async def callee(
        self,
        number: str,
        password: str,
        scenarioName: str,
        serverPort: int,
        location: Any,
        transport: str = "u1",
        timeout: int = 30,
        messages: bool = False,
        stay: int = 8,
        host: str = "127.0.0.1",
    ) -> Callee:
        """
        Register C{number} with the service on C{serverPort} and answer one
        call with the scenario C{scenarioName}; return once the binding is
        in C{location} (the service's L{aetasip.location.LocationService}).

        Over UDP, one sipp registers and another then answers on the same
        port. Over TCP the binding is the connection: one sipp registers
        (C{register_and_wait.xml}) and answers out of call (C{-oocsf}) on
        it, and stays up C{stay} seconds.

        @raise AssertionError: the registration failed.
        """
        port = freePort(host=host)
        remote = address("127.0.0.1", serverPort)
        if transport == "u1":
            registered = await self.register(
                number, password, serverPort, transport, host=host, port=port, serverHost="127.0.0.1"
            )
            if registered.code != 0:
                raise AssertionError(f"{number} did not register:\n{registered.detail}")
            done = self.run(f"callee-{number}", scenarioName, host=host, port=port, timeout=timeout, messages=messages)
            # Let it bind its port; an INVITE sent before is retransmitted anyway.
            await deferLater(0.5)
            return Callee(number, port, done)
        inf = injectionFile(self.directory, f"callee-{number}", [(number, authentication(number, password))])
        done = self.run(
            f"callee-{number}-{transport}",
            "register_and_wait.xml",
            "-oocsf", scenario(scenarioName),
            "-d", str(stay * 1000),
            remote=remote,
            port=port,
            transport=transport,
            inf=inf,
            timeout=max(timeout, stay + 5),
            messages=messages,
        )  # fmt: skip
        for _ in range(200):
            if location.lookup(number) or done.called:
                break
            await deferLater(0.05)
        if not location.lookup(number):
            raise AssertionError(f"{number} did not register over {transport}")
        return Callee(number, port, done)

    def call(
        self,
        caller: str,
        password: str,
        dialled: str,
        scenarioName: str,
        serverPort: int,
        transport: str = "u1",
        timeout: int = 20,
        messages: bool = False,
        host: str = "127.0.0.1",
    ) -> Deferred[SippRun]:
        """
        C{caller} calls C{dialled} through the service on C{serverPort}
        with the caller scenario C{scenarioName} (its injection file lines
        are C{CALLER;[authentication ...];DIALLED}), from C{host}.
        """
        inf = injectionFile(
            self.directory, f"caller-{caller}-{next(_runs)}", [(caller, authentication(caller, password), dialled)]
        )
        return self.run(
            f"caller-{caller}",
            scenarioName,
            remote=address("127.0.0.1", serverPort),
            host=host,
            transport=transport,
            inf=inf,
            timeout=timeout,
            messages=messages,
        )
