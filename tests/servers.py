"""
Fixtures for tests that need real programs and a running service tree:
free loopback ports, required external tools, and aetasip itself started
in-process on ephemeral ports.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from aetasip import config, tap

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def requireTool(testCase: Any, name: str, package: str) -> str:
    """
    The path of the program C{name}. When it is missing the test is
    skipped, except under CI=true where it fails: CI must run every
    server-backed test.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package {package}; see README.rst)"
        if CI:
            testCase.fail(message)
        raise SkipTest(message)
    return path


def freePort(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A port that is free for both UDP and TCP on C{host}."""
    for _ in range(200):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port")


def freePortBlock(size: int) -> tuple[int, int]:
    """
    C{size} consecutive UDP ports on 127.0.0.1, all free now, starting at an
    even one and below the kernel's ephemeral range (32768 and up), where
    no test's sockets or sipp's are placed by the kernel: relay and
    rtpengine media ranges, different in every test process (-j2 runs two).
    """
    for _ in range(100):
        low = random.randrange(20000, 32000 - size, 2)
        try:
            for port in range(low, low + size):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return low, low + size - 1
    raise RuntimeError("no free block of UDP ports")


def socketPath(directory: str, name: str = "aetasip.sock") -> str:
    """
    A path for a UNIX socket in C{directory}, or, when that path is longer
    than a socket's address holds (107 bytes: trial's directories are
    deep), in a short new directory removed at exit.
    """
    path = os.path.abspath(os.path.join(directory, name))
    if len(os.fsencode(path)) <= 100:
        return path
    short = tempfile.mkdtemp(prefix="aetasip-")
    import atexit

    atexit.register(shutil.rmtree, short, True)
    return os.path.join(short, name)


class RunningService:
    """
    The aetasip service tree started in this process (the trial reactor),
    on loopback ports chosen free, with a SQLite store in C{directory}, its
    web service on a free loopback port and its control socket in
    C{directory} (L{socketPath}).
    """

    def __init__(self, directory: str, **settings: Any) -> None:
        self.directory = directory
        self.ports = [freePort(), freePort()]
        base: dict[str, Any] = {
            "sip.listen": ["127.0.0.1"],
            "sip.udp_ports": self.ports,
            "sip.tcp_ports": self.ports,
            "store.url": f"sqlite:///{os.path.join(directory, 'aetasip.db')}",
            "stun.enabled": False,
            "web.listen": "127.0.0.1:0",
            "web.control_socket": socketPath(directory),
        }
        base.update({k.replace("__", "."): v for k, v in settings.items()})
        self.config = config.build(base)
        self.service: Any = None

    @property
    def storeURL(self) -> str:
        return str(self.config["store.url"])

    @property
    def controlSocket(self) -> str:
        return str(self.config["web.control_socket"])

    def addAccounts(self, *accounts: tuple[str, str]) -> None:
        """Provision C{(number, password)} accounts as an operator does, with aetasip-admin."""
        from aetasip import admin

        for number, password in accounts:
            out, err = io.StringIO(), io.StringIO()
            code = admin.main(["--store", self.storeURL, "account", "add", number, "--password", password], out, err)
            if code != 0:
                raise AssertionError(f"aetasip-admin account add {number}: {err.getvalue()}")

    def start(self) -> Deferred[None]:
        self.service = tap.makeService({"config": self.config})
        self.service.privilegedStartService()
        self.service.startService()
        return self.ready()

    def ready(self) -> Deferred[None]:
        """
        Fires once the SIP ports read (bindings restored) and routing has
        its first snapshot of the accounts and groups provisioned before.
        """
        directory = self.service.getServiceNamed("directory")
        return gatherResults([self.sip.ready, directory.ready]).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        service, self.service = self.service, None
        return service.stopService()  # type: ignore[no-any-return]

    @property
    def sip(self) -> Any:
        return self.service.getServiceNamed("sip")


def stopProcess(process: subprocess.Popen[Any] | None, grace: float) -> None:
    """Stop C{process}, a server a test started, by its PID: SIGTERM, then SIGKILL after C{grace} s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as _deferLater

    return _deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


async def run(
    executable: str, *args: str, env: dict[str, str] | None = None, path: str | None = None
) -> tuple[str, str, int]:
    """Run a program; return its decoded stdout, stderr and exit code."""
    out, err, code = await getProcessOutputAndValue(
        executable, args, env=env if env is not None else dict(os.environ), path=path
    )
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), code


TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def twistdConfig(directory: str, **sections: dict[str, Any]) -> str:
    """
    Write an aetasip configuration file of C{sections} in C{directory}
    (not named aetasip.py: in the working directory it would hide the
    package); return its path.
    """
    path = os.path.join(os.path.abspath(directory), "service-config.py")
    with open(path, "w") as f:
        for name, values in sections.items():
            f.write(f"{name} = {values!r}\n")
    return path


def twistdArguments(*argv: str) -> tuple[str, list[str], dict[str, str]]:
    """
    The executable, arguments and environment that run C{twistd *argv}
    on this checkout.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TOP, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *argv]
    return sys.executable, command, env


class TwistdProcess(ProcessProtocol):
    """
    A C{twistd} started by L{startTwistd}: its output and error so far
    (C{output}), and C{ended}, firing with its exit code (C{-N}: killed by
    signal N).
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value: Any = reason.value
        self.ended.callback(value.exitCode if value.exitCode is not None else -(value.signal or 0))


def startTwistd(directory: str, config: str) -> TwistdProcess:
    """Run C{twistd -n aetasip --config CONFIG} on this checkout in C{directory}."""
    process = TwistdProcess()
    executable, argv, env = twistdArguments("-n", "--pidfile=", "aetasip", "--config", config)
    reactor.spawnProcess(process, executable, argv, env=env, path=os.path.abspath(directory))  # type: ignore[attr-defined]
    return process
