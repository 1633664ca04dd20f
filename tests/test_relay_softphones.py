"""
Two real softphones through the relay: baresip (a 440 Hz sine from its
C{ausine} source) calls linphonec (auto-answer, wav files instead of a
sound card: it plays a recording to the caller and records what it hears)
through the running service with C{relay.mode = "always"}, on loopback.
The SDP each one receives points at the relay, audio crosses the relay
both ways (the relay's counters, baresip's own receive count, and the
sine in linphonec's recording), and the call carries its statistics.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import wave
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

from aetasip import admin
from aetasip.calls.call import EndCause
from tests.servers import RunningService, deferLater, freePort, requireTool

BARESIP, BARESIP_PASSWORD = "45676001", "baresip-secret"
LINPHONE, LINPHONE_PASSWORD = "45676002", "linphone-secret"
RELAY_PORTS = [48_400, 48_499]
HELLO = "/usr/share/sounds/linphone/hello8000.wav"


class Program(ProcessProtocol):
    """A program the test runs: its output kept, its end a Deferred."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


class SoftphoneTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.baresip = requireTool(self, "baresip", "baresip-core")
        self.linphonec = requireTool(self, "linphonec", "linphone-cli")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.server: RunningService | None = None
        self.addCleanup(self.stopServer)

    def stopServer(self) -> Any:
        if self.server is not None and self.server.service is not None:
            return self.server.stop()
        return None

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[Program, Any]:
        program = Program()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            program, argv[0], argv, env={**os.environ, **(env or {})}, path=self.directory
        )

        def stop() -> Deferred[None]:
            if not program.ended.called:
                try:
                    process.signalProcess("KILL")
                except Exception:
                    pass
            return program.ended

        self.addCleanup(stop)
        return program, process

    async def until(self, condition: Any, seconds: float, what: str) -> None:
        for _ in range(int(seconds / 0.1)):
            if condition():
                return
            await deferLater(0.1)
        self.fail(f"{what}: not within {seconds} s")

    def linphoneConfig(self, serverPort: int) -> tuple[str, str]:
        home = os.path.join(self.directory, "linphone-home")
        os.makedirs(os.path.join(home, ".local", "share", "linphone"))
        rc = os.path.join(self.directory, "linphonerc")
        with open(rc, "w") as f:
            f.write(
                f"[sip]\nsip_port={freePort()}\nsip_tcp_port=-1\nsip_tls_port=0\ndefault_proxy=0\n"
                f"[rtp]\naudio_rtp_port={freePort()}\n"
                f"[proxy_0]\nreg_proxy=<sip:127.0.0.1:{serverPort}>\nreg_identity=sip:{LINPHONE}@127.0.0.1\n"
                "reg_expires=600\nreg_sendregister=1\n"
                f"[auth_info_0]\nusername={LINPHONE}\npasswd={LINPHONE_PASSWORD}\nrealm=aetasip\ndomain=127.0.0.1\n"
            )
        return rc, home

    def baresipConfig(self, serverPort: int) -> str:
        directory = os.path.join(self.directory, "baresip")
        os.makedirs(directory)
        rtp = freePort()
        with open(os.path.join(directory, "config"), "w") as f:
            f.write(
                "poll_method epoll\n"
                f"sip_listen 127.0.0.1:{freePort()}\n"
                "sip_transports udp\n"
                "audio_player aubridge,nil\naudio_source ausine,440\naudio_alert aubridge,nil\n"
                "ausrc_srate 48000\nausrc_channels 2\n"
                f"rtp_ports {rtp}-{rtp + 1}\nrtp_stats yes\n"
                "module_path /usr/lib/baresip/modules\n"
                "module g711.so\nmodule ausine.so\nmodule aubridge.so\n"
                "module_app account.so\nmodule_app menu.so\n"
            )
        with open(os.path.join(directory, "accounts"), "w") as f:
            f.write(
                f"<sip:{BARESIP}@127.0.0.1:{serverPort};transport=udp>;auth_pass={BARESIP_PASSWORD};"
                f'outbound="sip:127.0.0.1:{serverPort};transport=udp";regint=600;audio_codecs=PCMA\n'
            )
        return directory

    async def test_baresip_calls_linphonec_through_the_relay(self) -> None:
        self.server = server = RunningService(
            self.directory,
            calls__media_handler="relay",
            # baresip fails a whole registration on a SHA-256 challenge (PEERS.md).
            auth__algorithms=["MD5"],
            relay__mode="always",
            relay__nodes={"local": {"kind": "builtin", "address": "127.0.0.1", "ports": RELAY_PORTS}},
        )
        for number, password in ((BARESIP, BARESIP_PASSWORD), (LINPHONE, LINPHONE_PASSWORD)):
            self.assertEqual(
                admin.main(
                    ["--store", server.storeURL, "account", "add", number, "--password", password],
                    io.StringIO(),
                    io.StringIO(),
                ),
                0,
            )
        await server.start()
        port = server.ports[0]
        handler = server.sip.proxy.media.handler
        # What the proxy forwards is what each agent receives: keep the SDP the handler gives back.
        forwarded: list[tuple[str, str, bytes]] = []

        def keeping(kind: str, method: Any) -> Any:
            def wrapper(call: Any, key: str, sender: str, sdp: bytes) -> Any:
                return method(call, key, sender, sdp).addCallback(
                    lambda body: forwarded.append((kind, sender, body)) or body
                )

            return wrapper

        handler.offer = keeping("offer", handler.offer)
        handler.answer = keeping("answer", handler.answer)
        calls: list[Any] = []
        observer = type("Observer", (), {})()
        observer.callStarted = calls.append  # type: ignore[attr-defined]
        for event in ("callRinging", "callAnswered", "callEnded"):
            setattr(observer, event, lambda call: None)
        server.sip.proxy.observers.add(observer)

        rc, home = self.linphoneConfig(port)
        _, linphoneProcess = self.start("linphonec", [self.linphonec, "-c", rc, "-a"], {"HOME": home})
        linphoneProcess.write(b"soundcard use files\n")
        await self.until(lambda: server.sip.location.lookup(LINPHONE), 20, "linphonec registration")

        config = self.baresipConfig(port)
        baresip, _ = self.start(
            "baresip",
            [self.baresip, "-f", config, "-n", "127.0.0.1", "-t", "10", "-e", f"/dial sip:{LINPHONE}@127.0.0.1"],
        )
        await self.until(lambda: calls and calls[0].state == "answered", 20, "the call answered")
        recording = os.path.join(self.directory, "heard.wav")
        linphoneProcess.write(f"play {HELLO}\nrecord {recording}\n".encode())
        await baresip.ended
        (call,) = calls
        await self.until(lambda: call.ended, 10, "the call's end")
        linphoneProcess.write(b"quit\n")

        # Each agent's SDP points at the relay.
        self.assertEqual(
            [(kind, sender) for kind, sender, _ in forwarded][:2], [("offer", "caller"), ("answer", "callee")]
        )
        for _kind, _sender, body in forwarded:
            host = re.search(rb"(?m)^c=IN IP4 (\S+)", body)
            media = re.search(rb"(?m)^m=audio (\d+) ", body)
            assert host is not None and media is not None, body
            self.assertEqual(host.group(1), b"127.0.0.1")
            self.assertTrue(RELAY_PORTS[0] <= int(media.group(1)) <= RELAY_PORTS[1], body)

        # Audio both ways through the relay.
        self.assertEqual(call.endCause, EndCause.CALLER_BYE)
        stats = call.media["relay"]["stats"]
        self.assertGreater(stats.caller.received.packets, 200, stats)  # baresip's sine, ~10 s at 50/s
        self.assertGreater(stats.callee.sent.packets, 200, stats)
        self.assertGreater(stats.callee.received.packets, 50, stats)  # linphonec playing its file
        self.assertGreater(stats.caller.sent.packets, 50, stats)
        self.assertEqual((stats.caller.dropped, stats.callee.dropped), (0, 0))
        received = re.search(r"packets:\s+(\d+)\s+(\d+)", baresip.text)
        assert received is not None, baresip.text
        self.assertGreater(int(received.group(2)), 50, baresip.text)
        self.assertGreater(sineLevel(recording, 440), 0.3)


def sineLevel(path: str, frequency: float) -> float:
    """How much of the recording in C{path} is a tone of C{frequency} Hz (0: none, 1: all of it)."""
    with wave.open(path) as recording:
        rate = recording.getframerate()
        channels = recording.getnchannels()
        frames = recording.readframes(recording.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)[::channels]
    if not samples:
        return 0.0
    # The Goertzel power of the frequency against the total power.
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    total = sum(s * s for s in samples)
    return float(2 * power / (len(samples) * total)) if total else 0.0
