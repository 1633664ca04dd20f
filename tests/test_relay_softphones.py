"""
Two real softphones through the relay: baresip (a 440 Hz tone) calls
linphonec (auto-answer, wav files instead of a sound card: it plays a
recording to the caller and records what it hears) through the running
service with C{relay.mode = "always"}, on loopback, both run by the
shared fixtures of L{tests.softphones}. The SDP each one receives points
at the relay, audio crosses the relay both ways (the relay's counters,
baresip's own receive count, and the tone in linphonec's recording), and
the call carries its statistics.
"""

from __future__ import annotations

import os
import re
import wave
from typing import Any

import numpy as np
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from aetasip.calls.call import EndCause
from tests.audio import dominantFrequency
from tests.interop import watchCalls
from tests.servers import RunningService, deferLater, freePortBlock, requireTool
from tests.softphones import Baresip, Linphonec, Softphone
from tests.test_interop_calls import within

BARESIP, BARESIP_PASSWORD = "45676001", "baresip-secret"
LINPHONE, LINPHONE_PASSWORD = "45676002", "linphone-secret"
RELAY_PORTS = list(freePortBlock(100))
HELLO = "/usr/share/sounds/linphone/hello8000.wav"


class SoftphoneTests(TestCase):
    timeout = 120

    @staticmethod
    def stopped(phone: Softphone) -> Deferred[None]:
        return phone.stop()

    async def test_baresip_calls_linphonec_through_the_relay(self) -> None:
        baresipPath = requireTool(self, "baresip", "baresip-core")
        linphonecPath = requireTool(self, "linphonec", "linphone-cli")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        server = RunningService(
            directory,
            calls__media_handler="relay",
            relay__mode="always",
            relay__nodes={"local": {"kind": "builtin", "address": "127.0.0.1", "ports": RELAY_PORTS}},
        )
        server.addAccounts((BARESIP, BARESIP_PASSWORD), (LINPHONE, LINPHONE_PASSWORD))
        await server.start()
        self.addCleanup(server.stop)
        handler = server.sip.proxy.media.handler
        # What the proxy forwards is what each agent receives: keep the SDP the handler gives back.
        forwarded: list[tuple[str, str, bytes]] = []

        def keeping(kind: str, method: Any) -> Any:
            def wrapper(call: Any, key: str, sender: str, sdp: bytes) -> Any:
                def keep(body: bytes) -> bytes:
                    forwarded.append((kind, sender, body))
                    return body

                return method(call, key, sender, sdp).addCallback(keep)

            return wrapper

        handler.offer = keeping("offer", handler.offer)
        handler.answer = keeping("answer", handler.answer)
        calls = watchCalls(server)

        address = ("127.0.0.1", server.ports[0])
        linphone = Linphonec(
            linphonecPath, os.path.join(directory, "linphone"), LINPHONE, LINPHONE_PASSWORD, address, autoAnswer=True
        )
        self.addCleanup(self.stopped, linphone)
        linphone.useSoundFiles()
        baresip = Baresip(baresipPath, os.path.join(directory, "baresip"), BARESIP, BARESIP_PASSWORD, address)
        self.addCleanup(self.stopped, baresip)
        for phone in (linphone, baresip):
            await within(
                20,
                lambda phone=phone: bool(server.sip.location.lookup(phone.number)),
                f"{phone.name} registered\n{phone.text()[-2000:]}",
            )

        answer = await baresip.command("dial", LINPHONE)
        self.assertTrue(answer["ok"], answer)
        await within(20, lambda: bool(calls) and calls[0].state == "answered", "the call answered")
        recording = os.path.join(directory, "heard.wav")
        linphone.playAndRecord(HELLO, recording)
        await deferLater(10)
        answer = await baresip.command("hangup")
        self.assertTrue(answer["ok"], answer)
        (call,) = calls
        await within(10, lambda: call.ended and "stats" in call.media["relay"], "the call's end")
        await within(10, lambda: baresip.receivedPackets() is not None, f"baresip's counters\n{baresip.text()}")
        await linphone.stop()

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
        self.assertGreater(stats.caller.received.packets, 200, stats)  # baresip's tone, ~10 s at 50/s
        self.assertGreater(stats.callee.sent.packets, 200, stats)
        self.assertGreater(stats.callee.received.packets, 50, stats)  # linphonec playing its file
        self.assertGreater(stats.caller.sent.packets, 50, stats)
        self.assertEqual((stats.caller.dropped, stats.callee.dropped), (0, 0))
        received = baresip.receivedPackets()
        assert received is not None
        self.assertGreater(received, 50, baresip.text())
        # What linphonec heard is baresip's tone (gaps from a loaded machine
        # lower its level, not its frequency).
        samples, rate = recorded(recording)
        self.assertGreater(len(samples), rate, "less than a second recorded")
        self.assertLess(abs(dominantFrequency(samples, rate) - 440), 5)


def recorded(path: str) -> tuple[np.ndarray, int]:
    """The first channel of the WAV recording in C{path}, as floats, and its rate."""
    with wave.open(path) as recording:
        rate = recording.getframerate()
        channels = recording.getnchannels()
        frames = recording.readframes(recording.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)[:, 0]
    return samples.astype(np.float64) / 32768, rate
