"""
Softphones register with the default configuration (issue 9, interop):
baresip 1.0 (Debian's C{baresip-core}), which fails the whole registration
on a challenge naming SHA-256, and linphonec (C{linphone-cli}), with MD5
and with SHA-256.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from aetasip.store import Store
from tests.servers import RunningService, deferLater, freePort, requireTool

NUMBER, PASSWORD = "45675001", "Sx9-fq2Lw7"


class Collector(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


class SoftphoneTests(TestCase):
    timeout = 90

    def setUp(self):  # type: ignore[no-untyped-def]
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.server = RunningService(self.directory)
        store = Store(self.server.storeURL)
        store.open()
        store.addAccount(NUMBER, "premium", PASSWORD, "aetasip")
        store.close()
        self.addCleanup(self.server.stop)
        return self.server.start()

    def spawn(self, executable: str, args: list[str], env: dict[str, str]) -> tuple[Any, Collector]:
        collector = Collector()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            collector, executable, [executable, *args], env={**os.environ, **env}, path=self.directory, usePTY=False
        )
        self.addCleanup(self.stop, process, collector)
        return process, collector

    @staticmethod
    def stop(process: Any, collector: Collector) -> Deferred[None]:
        if collector.ended.called:
            return collector.ended
        process.signalProcess("TERM")
        return collector.ended

    async def registered(self, agent: str, collector: Collector) -> None:
        for _ in range(200):
            bindings = self.server.sip.location.lookup(NUMBER)
            if any(agent in b.userAgent.lower() for b in bindings):
                return
            await deferLater(0.05)
        self.fail(f"{agent} did not register:\n{collector.output.decode('utf-8', 'replace')[-3000:]}")

    async def test_baresip_registers(self) -> None:
        executable = requireTool(self, "baresip", "baresip-core")
        home = os.path.join(self.directory, "baresip")
        os.makedirs(home)
        with open(os.path.join(home, "config"), "w") as f:
            f.write(
                "poll_method epoll\n"
                f"sip_listen 127.0.0.1:{freePort()}\n"
                "module_path /usr/lib/baresip/modules\n"
                "module g711.so\nmodule ausine.so\nmodule aubridge.so\n"
                "module_app account.so\n"
                "audio_source ausine,440\naudio_player aubridge,x\n"
            )
        with open(os.path.join(home, "accounts"), "w") as f:
            f.write(f"<sip:{NUMBER}@127.0.0.1:{self.server.ports[0]}>;auth_pass={PASSWORD};regint=600\n")
        _, collector = self.spawn(executable, ["-f", home, "-t", "20"], {"HOME": home})
        await self.registered("baresip", collector)

    async def linphonec(self, algorithm: str | None) -> None:
        executable = requireTool(self, "linphonec", "linphone-cli")
        home = os.path.join(self.directory, f"linphone-{algorithm}")
        os.makedirs(os.path.join(home, ".local", "share", "linphone"))
        rc = os.path.join(home, "linphonerc")
        with open(rc, "w") as f:
            f.write(
                f"[sip]\nsip_port={freePort()}\nsip_tcp_port=-1\nsip_tls_port=0\ndefault_proxy=0\n"
                f"[rtp]\naudio_rtp_port={freePort()}\n"
                f"[proxy_0]\nreg_proxy=<sip:127.0.0.1:{self.server.ports[0]}>\nreg_identity=sip:{NUMBER}@127.0.0.1\n"
                "reg_expires=600\nreg_sendregister=1\n"
                f"[auth_info_0]\nusername={NUMBER}\npasswd={PASSWORD}\nrealm=aetasip\ndomain=127.0.0.1\n"
                + (f"algorithm={algorithm}\n" if algorithm else "")
            )
        # Standard input stays open (its end means quit): stopped with TERM.
        _, collector = self.spawn(executable, ["-c", rc], {"HOME": home})
        await self.registered("linphone", collector)
        return None

    async def test_linphonec_registers_with_md5(self) -> None:
        await self.linphonec(None)

    async def test_linphonec_registers_with_sha256(self) -> None:
        await self.linphonec("SHA-256")
        # Held to SHA-256 from now on.
        self.assertIn(NUMBER, self.server.sip.registrar.authentication._strong)
