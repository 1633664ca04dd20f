"""
twistd aetasip: the plugin, the options, and start-up errors that must
stop the start with one line (never a usage dump or a traceback).
"""

from __future__ import annotations

import os
import socket
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip import config, tap
from tests.servers import freePort, run

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PluginTests(SynchronousTestCase):
    def test_twistd_finds_the_aetasip_plugin(self) -> None:
        import twisted.plugins

        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIn("aetasip", makers)
        self.assertIsInstance(makers["aetasip"].options(), tap.Options)


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> config.Config:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options.loadConfig()

    def test_no_option_means_embedded_defaults(self) -> None:
        self.assertEqual(self.parse().values, config.load().values)

    def test_command_line_options_set_their_keys(self) -> None:
        cfg = self.parse(
            "--listen", "127.0.0.1", "--listen", "::1", "--domain", "sip.example.net",
            "--sip-port", "5080", "--store", "sqlite:///x.db", "--realm", "example",
        )  # fmt: skip
        self.assertEqual(cfg["sip.listen"], ["127.0.0.1", "::1"])
        self.assertEqual(cfg["sip.domains"], ["sip.example.net"])
        self.assertEqual(cfg["sip.udp_ports"], [5080])
        self.assertEqual(cfg["sip.tcp_ports"], [5080])
        self.assertEqual(cfg["store.url"], "sqlite:///x.db")
        self.assertEqual(cfg["sip.realm"], "example")

    def test_bad_config_stops_the_start_with_one_line(self) -> None:
        options = tap.Options()
        options.parseOptions(["--listen", "300.1.1.1"])
        with self.assertRaises(SystemExit) as raised:
            tap.makeService(options)
        self.assertEqual(
            str(raised.exception.code),
            "aetasip: configuration key sip.listen = ['300.1.1.1']: expected a non-empty list of IP addresses",
        )


class StartErrorTests(TestCase):
    timeout = 60

    async def twistd(self, *argv: str) -> tuple[str, int]:
        directory = self.mktemp()
        os.makedirs(directory)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TOP, os.environ.get("PYTHONPATH", "")]))
        out, err, code = await run(
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "aetasip", *argv,
            env=env, path=directory,
        )  # fmt: skip
        return out + err, code

    async def test_bad_value_in_a_real_start_is_one_line(self) -> None:
        output, code = await self.twistd("--sip-port", "70000")
        self.assertEqual(code, 1)
        self.assertEqual(
            output.strip(),
            "aetasip: configuration key sip.udp_ports = [70000]: expected a list of port numbers",
        )

    async def test_port_in_use_is_one_line(self) -> None:
        port = freePort()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.1", port))
            output, code = await self.twistd("--listen", "127.0.0.1", "--sip-port", str(port), "--store", "sqlite://")
        self.assertEqual(code, 1)
        self.assertIn(f"aetasip: cannot listen on 127.0.0.1:{port}:", output)
        self.assertNotIn("Traceback", output)

    async def test_unreachable_store_is_one_line(self) -> None:
        output, code = await self.twistd("--store", "sqlite:////nonexistent/dir/aetasip.db")
        self.assertEqual(code, 1)
        self.assertEqual(
            output.strip(),
            "aetasip: cannot open the store sqlite:////nonexistent/dir/aetasip.db: "
            "(sqlite3.OperationalError) unable to open database file",
        )
