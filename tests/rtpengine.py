"""
A real rtpengine for the tests: Debian's C{rtpengine-daemon} run as our
own process (never the system service), in userspace forwarding mode
(C{--table=-1}: no kernel module), on 127.0.0.1 with its ng control port
and its media ports chosen free.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from tests.servers import freePort, freePortBlock, requireTool, stopProcess

PR_SET_PDEATHSIG = 1


def rtpenginePath(testCase: Any) -> str:
    """The rtpengine daemon (in /usr/bin); skipped when missing, a failure under CI=true."""
    return requireTool(testCase, "rtpengine", "rtpengine-daemon")


def _prepareChild() -> None:
    # Linux: the daemon ends with the test run, even a killed one.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Rtpengine:
    """
    One rtpengine process of ours: C{ngAddress} (its ng control socket, on
    C{ngHost}), media ports C{portMin}-C{portMax} on 127.0.0.1; C{prefix} runs before
    it (C{("taskset", "-c", "0")} pins it to a core).
    """

    def __init__(
        self,
        executable: str,
        mediaPorts: int = 200,
        threads: int = 2,
        prefix: tuple[str, ...] = (),
        ngHost: str = "127.0.0.1",
        options: tuple[str, ...] = (),
    ) -> None:
        self.executable = executable
        self.ngHost = ngHost
        self.prefix = prefix
        self.directory = tempfile.mkdtemp(prefix="aetasip-rtpengine-")
        family = socket.AF_INET6 if ":" in ngHost else socket.AF_INET
        self.portMin, self.portMax = freePortBlock(mediaPorts)
        if ngHost == "127.0.0.1":
            # Below the ephemeral range too: a test that starts (or restarts)
            # the daemon after using the address must not find the port
            # taken by some client socket the kernel placed there meanwhile.
            self.ngPort = self.portMin
            while self.portMin <= self.ngPort <= self.portMax:
                self.ngPort = freePortBlock(1)[0]
        else:
            self.ngPort = freePort(family, ngHost)
        self.threads = threads
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.logPath = os.path.join(self.directory, "rtpengine.log")

    @property
    def ngAddress(self) -> str:
        host = f"[{self.ngHost}]" if ":" in self.ngHost else self.ngHost
        return f"{host}:{self.ngPort}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start it and wait (at most 10 s) until it answers a ping."""
        with open(self.logPath, "ab") as logFile:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
                    self.executable,
                    "--config-file=none",
                    "--foreground",
                    "--log-stderr",
                    "--no-log-timestamps",
                    "--log-level=5",
                    "--table=-1",
                    "--interface=127.0.0.1",
                    f"--listen-ng={self.ngAddress}",
                    f"--port-min={self.portMin}",
                    f"--port-max={self.portMax}",
                    f"--num-threads={self.threads}",
                    "--delete-delay=0",
                    "--timeout=60",
                    *self.options,
                ],
                stdin=subprocess.DEVNULL,
                stdout=logFile,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                preexec_fn=_prepareChild,
            )
        deadline = time.monotonic() + 10
        family = socket.AF_INET6 if ":" in self.ngHost else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                if not self.running:
                    break
                try:
                    s.sendto(b"up d7:command4:pinge", (self.ngHost, self.ngPort))
                    if s.recv(100) == b"up d6:result4:ponge":
                        return
                except OSError:
                    time.sleep(0.05)
        self.stop()
        with open(self.logPath, "rb") as f:
            tail = f.read()[-2000:].decode("utf-8", "replace")
        raise RuntimeError(f"rtpengine did not start:\n{tail}")

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s)."""
        process, self.process = self.process, None
        stopProcess(process, 5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")


def startedRtpengine(testCase: Any, **options: Any) -> Rtpengine:
    """An rtpengine started for C{testCase}, stopped and removed after it."""
    engine = Rtpengine(rtpenginePath(testCase), **options)
    testCase.addCleanup(engine.cleanup)
    engine.start()
    return engine


def startedNode(testCase: Any, addresses: list[str], name: str = "fr", **options: Any) -> Any:
    """
    The relay node C{name} of kind C{rtpengine} on the daemons at
    C{addresses} (C{relay.nodes.NAME.ng}), with C{options}, made as the
    service makes it, started for C{testCase} and stopped after it.
    """
    from twisted.internet import reactor

    from aetasip import config
    from aetasip.relay.rtpengine import makeNode

    node = makeNode(name, {"kind": "rtpengine", "ng": addresses, **options}, config.build({}), reactor)
    node.startService()
    testCase.addCleanup(node.stopService)
    return node
