"""
A real softphone calls the test line: baresip (its sine as source, its
C{sndfile} module writing what it decodes to a WAV file) dials 15000
through the running service with each codec the line sends (PCMU, PCMA,
G.722, L16, Opus, MPEG-1 Layer II); what baresip heard must be the programme (the 1 kHz tone at -18 dBFS), and the call
ends cleanly when baresip hangs up.
"""

from __future__ import annotations

import glob
import os
import wave
from typing import Any

import numpy as np
from twisted.trial.unittest import TestCase

from aetasip.calls.call import EndCause
from aetasip.testline.programme import LEVEL_DBFS
from tests.audio import dominantFrequency, levelDBFS
from tests.interop import watchCalls
from tests.servers import RunningService, deferLater, freePort, requireTool
from tests.softphones import Softphone

BARESIP, BARESIP_PASSWORD = "45676001", "baresip-secret"


class BaresipCallsTestLineTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.baresip = requireTool(self, "baresip", "baresip-core")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.server: RunningService | None = None
        self.addCleanup(self.stopServer)

    def stopServer(self) -> Any:
        if self.server is not None and self.server.service is not None:
            return self.server.stop()
        return None

    def baresipConfig(self, serverPort: int, codec: str) -> str:
        directory = os.path.join(self.directory, f"baresip-{codec.split('/')[0]}-{len(os.listdir(self.directory))}")
        os.makedirs(directory)
        rtp = freePort() // 2 * 2
        with open(os.path.join(directory, "config"), "w") as f:
            f.write(
                "poll_method epoll\n"
                f"sip_listen 127.0.0.1:{freePort()}\n"
                "sip_transports udp\n"
                "audio_player aubridge,nil\naudio_source ausine,440\naudio_alert aubridge,nil\n"
                "ausrc_srate 48000\nausrc_channels 2\n"
                f"rtp_ports {rtp}-{rtp + 1}\nrtp_stats yes\n"
                # Relative to its directory, where it runs: baresip cuts long file names.
                "snd_path .\n"
                "module_path /usr/lib/baresip/modules\n"
                "module g711.so\nmodule g722.so\nmodule l16.so\nmodule opus.so\nmodule mpa.so\nmodule ausine.so\nmodule aubridge.so\nmodule sndfile.so\n"
                "module_app account.so\nmodule_app menu.so\n"
            )
        with open(os.path.join(directory, "accounts"), "w") as f:
            f.write(
                f"<sip:{BARESIP}@127.0.0.1:{serverPort};transport=udp>;auth_pass={BARESIP_PASSWORD};"
                f'outbound="sip:127.0.0.1:{serverPort};transport=udp";regint=600;audio_codecs={codec}\n'
            )
        return directory

    async def until(self, condition: Any, seconds: float, what: str) -> None:
        for _ in range(int(seconds / 0.1)):
            if condition():
                return
            await deferLater(0.1)
        self.fail(f"{what}: not within {seconds} s")

    async def serve(self) -> RunningService:
        self.server = server = RunningService(
            self.directory, auth__algorithms=["MD5"], testline__ring_time=0.5, testline__media_address="127.0.0.1"
        )
        server.addAccounts((BARESIP, BARESIP_PASSWORD))
        await server.start()
        return server

    async def dial(self, number: str, codec: str) -> str:
        """baresip dials C{number} with C{codec} for 6 s; its directory (and its WAV files)."""
        from twisted.internet import reactor

        assert self.server is not None
        directory = self.baresipConfig(self.server.ports[0], codec)
        program = Softphone()
        argv = [self.baresip, "-f", directory, "-n", "127.0.0.1", "-t", "6", "-e", f"/dial sip:{number}@127.0.0.1"]
        process = reactor.spawnProcess(program, argv[0], argv, env=dict(os.environ), path=directory)  # type: ignore[attr-defined]
        self.addCleanup(lambda: program.ended.called or process.signalProcess("KILL"))
        await program.ended
        self.baresipOutput = program.text()
        return directory

    def heard(self, directory: str) -> tuple[np.ndarray, int]:
        """The first channel of what baresip decoded, as floats, and its rate."""
        decoded = [p for p in glob.glob(os.path.join(directory, "*.wav")) if "dec" in os.path.basename(p)]
        self.assertEqual(
            len(decoded),
            1,
            (
                os.listdir(directory),
                "\n".join(line for line in self.baresipOutput.splitlines() if "audio=" not in line),
            ),
        )
        with wave.open(decoded[0]) as heard:
            rate = heard.getframerate()
            samples = np.frombuffer(heard.readframes(heard.getnframes()), dtype="<i2")
            channels = heard.getnchannels()
        return samples.reshape(-1, channels)[:, 0].astype(np.float64) / 32768, rate

    async def test_baresip_hears_itself_on_the_echo_line(self) -> None:
        """baresip sends its 440 Hz sine; what it hears back is that sine."""
        await self.serve()
        samples, rate = self.heard(await self.dial("15001", "PCMA"))
        sine = samples[int(2 * rate) : int(4 * rate)]
        self.assertEqual(len(sine), 2 * rate)
        self.assertLess(abs(dominantFrequency(sine, rate) - 440), 5)
        self.assertGreater(levelDBFS(sine), -30)

    async def test_baresip_hears_the_programme_in_each_codec(self) -> None:
        server = await self.serve()
        calls = watchCalls(server)

        # baresip's names (its G.722 runs at 16 kHz inside), and the rate of what it decodes.
        codecs = {
            "PCMU": 8000,
            "PCMA": 8000,
            "G722/16000/1": 16000,
            "L16/48000/2": 48000,
            "opus/48000/2": 48000,
            "MPA/48000/2": 48000,
        }
        for codec, expectedRate in codecs.items():
            directory = await self.dial("15000", codec)
            self.assertTrue(calls, self.baresipOutput[-3000:])
            call = calls[-1]
            await self.until(lambda call=call: call.ended, 10, f"the {codec} call's end")
            self.assertEqual((call.callee, call.endCause), ("15000", EndCause.CALLER_BYE), codec)
            samples, rate = self.heard(directory)
            self.assertEqual(rate, expectedRate, codec)
            # Two seconds from the middle of the tone (the programme starts with 8 s of it).
            tone = samples[int(1.5 * rate) : int(3.5 * rate)]
            self.assertEqual(len(tone), 2 * rate, f"{codec}: {len(samples) / rate:.1f} s heard")
            self.assertLess(abs(dominantFrequency(tone, rate) - 1000), 5, codec)
            self.assertLess(abs(levelDBFS(tone) - LEVEL_DBFS), 0.5, codec)
        self.assertEqual(server.service.getServiceNamed("testline").agent.sessions, {})
