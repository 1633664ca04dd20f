"""
Real softphones for interop tests: baresip and linphonec, headless, on
loopback ports of their own (see ../shared/PEERS.md for what they need to
run without a sound card). Each is a child process of the test's reactor,
registered with one account of the service, stopped when the test ends.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import wave
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.protocols.basic import NetstringReceiver
from twisted.python.failure import Failure

from tests.servers import freePort


def toneFile(path: str, seconds: int = 30, rate: int = 8000, frequency: float = 440.0) -> str:
    """A mono 16-bit WAV sine tone: what baresip sends (its ausine source only runs at 48 kHz)."""
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * i / rate)))
                for i in range(rate * seconds)
            )
        )
    return path


class Softphone(ProcessProtocol):
    """A softphone process: its output kept, its standard input held open."""

    name = "softphone"

    def __init__(self) -> None:
        self.output: list[bytes] = []
        self.ended: Deferred[None] = Deferred()
        self.running = False

    def connectionMade(self) -> None:
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        self.ended.callback(None)

    def text(self) -> str:
        return b"".join(self.output).decode("utf-8", "replace")

    def spawn(self, executable: str, args: list[str], env: dict[str, str], path: str) -> None:
        reactor.spawnProcess(self, executable, [executable, *args], env=env, path=path)  # type: ignore[attr-defined]

    def stop(self) -> Deferred[None]:
        """TERM, then KILL if it is still there 5 s later; fires once it has ended."""
        if self.running and self.transport is not None:
            try:
                self.transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass

            def kill() -> None:
                if self.running and self.transport is not None:
                    try:
                        self.transport.signalProcess("KILL")
                    except ProcessExitedAlready:
                        pass

            later = reactor.callLater(5, kill)  # type: ignore[attr-defined]
            self.ended.addBoth(lambda result: later.cancel() if later.active() else None)
        return self.ended

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Baresip(Softphone):
    """
    baresip registered as C{number}, answering every call at once
    (C{answermode=auto}) and sending a 440 Hz tone; driven over its
    C{ctrl_tcp} port (netstring JSON commands). It prints its RTP counters
    when a call ends (L{receivedPackets}).
    """

    name = "baresip"

    def __init__(self, executable: str, directory: str, number: str, password: str, server: tuple[str, int]) -> None:
        super().__init__()
        self.number = number
        self.sipPort = freePort()
        self.controlPort = freePort()
        rtp = freePort() // 2 * 2
        os.makedirs(directory, exist_ok=True)
        # Relative to its directory, where it runs: baresip cuts long device names.
        toneFile(os.path.join(directory, "tone.wav"))
        modules = ["g711", "aufile", "aubridge", "account", "menu", "ctrl_tcp"]
        lines = [
            f"sip_listen 127.0.0.1:{self.sipPort}",
            "audio_source aufile,tone.wav",
            "audio_player aubridge,nil",
            "audio_alert aubridge,nil",
            f"rtp_ports {rtp}-{rtp + 20}",
            "rtp_stats yes",
            f"ctrl_tcp_listen 127.0.0.1:{self.controlPort}",
            "module_path /usr/lib/baresip/modules",
            *(f"module {module}.so" for module in modules),
        ]
        with open(os.path.join(directory, "config"), "w") as f:
            f.write("\n".join(lines) + "\n")
        host, port = server
        with open(os.path.join(directory, "accounts"), "w") as f:
            f.write(f"<sip:{number}@{host}:{port}>;auth_pass={password};answermode=auto;regint=600\n")
        self.spawn(executable, ["-f", directory], dict(os.environ), directory)

    def command(self, command: str, params: str = "") -> Deferred[dict[str, Any]]:
        """
        Send one ctrl_tcp command (C{dial}, C{hangup}, …); fires with
        baresip's answer (C{ok}, C{data}).
        """
        message = json.dumps({"command": command, "params": params, "token": command}).encode()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.controlPort, timeout=5)
        answered: Deferred[dict[str, Any]] = Deferred()

        class Control(NetstringReceiver):
            def connectionMade(self) -> None:
                self.sendString(message)

            def stringReceived(self, string: bytes) -> None:
                answer = json.loads(string)
                if answer.get("response") and not answered.called:
                    answered.callback(answer)
                    if self.transport is not None:
                        self.transport.loseConnection()

        return connectProtocol(endpoint, Control()).addCallback(lambda _: answered)

    def receivedPackets(self) -> int | None:
        """The RTP packets its last ended call received (C{rtp_stats}), or C{None} before one ended."""
        found = re.findall(r"packets:\s+(\d+)\s+(\d+)", self.text())
        return int(found[-1][1]) if found else None


class Linphonec(Softphone):
    """
    linphonec registered as C{number} over UDP, driven by commands on its
    standard input; C{autoAnswer} answers every call. With
    L{useSoundFiles} it plays and records WAV files instead of a sound card.
    """

    name = "linphonec"

    def __init__(
        self,
        executable: str,
        directory: str,
        number: str,
        password: str,
        server: tuple[str, int],
        realm: str = "aetasip",
        autoAnswer: bool = False,
    ) -> None:
        super().__init__()
        self.number = number
        self.sipPort = freePort()
        os.makedirs(os.path.join(directory, ".local", "share", "linphone"), exist_ok=True)
        host, port = server
        rc = os.path.join(directory, "linphonerc")
        with open(rc, "w") as f:
            f.write(
                "[sip]\n"
                f"sip_port={self.sipPort}\n"
                "sip_tcp_port=-1\nsip_tls_port=0\ndefault_proxy=0\n"
                f"[rtp]\naudio_rtp_port={freePort() // 2 * 2}\n"
                "[proxy_0]\n"
                f"reg_proxy=<sip:{host}:{port}>\n"
                f"reg_identity=sip:{number}@{host}\n"
                "reg_expires=600\nreg_sendregister=1\n"
                "[auth_info_0]\n"
                f"username={number}\npasswd={password}\nrealm={realm}\ndomain={host}\n"
            )
        env = {**os.environ, "HOME": directory}
        args = ["-c", rc] + (["-a"] if autoAnswer else [])
        self.spawn(executable, args, env, directory)

    def command(self, line: str) -> None:
        assert self.transport is not None
        self.transport.write(line.encode() + b"\n")

    def useSoundFiles(self) -> None:
        """No sound card: calls play a WAV file and record to one (L{playAndRecord})."""
        self.command("soundcard use files")

    def playAndRecord(self, play: str, record: str) -> None:
        """
        In the call in progress, send the WAV file C{play} and record what
        is heard into the WAV file C{record} (after L{useSoundFiles}).
        """
        self.command(f"play {play}")
        self.command(f"record {record}")

    def stop(self) -> Deferred[None]:
        """C{quit} (it unregisters and leaves), then as any softphone 3 s later."""
        if self.running and self.transport is not None:
            self.command("quit")
            self.transport.closeStdin()
            later = reactor.callLater(3, Softphone.stop, self)  # type: ignore[attr-defined]
            self.ended.addBoth(lambda result: later.cancel() if later.active() else None)
        return self.ended
