"""
Configuration: defaults, checks with one clear message, the file format,
and tap-config.py documenting every key with its default.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from aetasip import config

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults_are_valid(self) -> None:
        cfg = config.load()
        self.assertEqual(cfg["sip.udp_ports"], [5060, 5070])
        self.assertEqual(cfg["sip.tcp_ports"], [5060, 5070])
        self.assertEqual(cfg["stun.port"], 3478)
        self.assertEqual(cfg["store.url"], "sqlite:///aetasip.db")

    def test_file_sections_override_defaults(self) -> None:
        path = self.write("sip = {'domains': ['SIP.Example.NET.', '85.214.119.212'], 'udp_ports': [5070]}\n")
        cfg = config.load(path)
        self.assertEqual(cfg["sip.domains"], ["sip.example.net", "85.214.119.212"])
        self.assertEqual(cfg["sip.udp_ports"], [5070])
        self.assertEqual(cfg["sip.tcp_ports"], [5060, 5070])

    def test_command_line_overrides_the_file(self) -> None:
        path = self.write("store = {'url': 'sqlite:///a.db'}\n")
        self.assertEqual(config.load(path, {"store.url": "sqlite:///b.db"})["store.url"], "sqlite:///b.db")

    def assertRejected(self, settings: dict[str, object], message: str) -> None:
        with self.assertRaises(config.ConfigError) as raised:
            config.build(settings)
        self.assertEqual(str(raised.exception), message)
        self.assertNotIn("\n", str(raised.exception))

    def test_bad_values_name_key_value_and_expectation(self) -> None:
        self.assertRejected(
            {"sip.udp_ports": [70000]}, "configuration key sip.udp_ports = [70000]: expected a list of port numbers"
        )
        self.assertRejected(
            {"sip.listen": "0.0.0.0"},
            "configuration key sip.listen = '0.0.0.0': expected a non-empty list of IP addresses",
        )
        self.assertRejected(
            {"registrar.conflict": "last"},
            "configuration key registrar.conflict = 'last': expected one of 'reject', 'replace', 'allow'",
        )
        self.assertRejected(
            {"registrar.min_expires": True},
            "configuration key registrar.min_expires = True: expected a whole number from 1 to 86400",
        )
        self.assertRejected(
            {"sip.domains": ["bad domain"]},
            "configuration key sip.domains = ['bad domain']: expected a list of host names or IP addresses",
        )
        self.assertRejected(
            {"store.url": "mysql://x"},
            "configuration key store.url = 'mysql://x': expected "
            "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
        self.assertRejected(
            {"sip.tls_certificate": "/nonexistent.pem"},
            "configuration key sip.tls_certificate = '/nonexistent.pem': expected None or the path of a readable file",
        )

    def test_inconsistent_expiry_bounds_are_rejected(self) -> None:
        self.assertRejected(
            {"registrar.min_expires": 600, "registrar.max_expires": 300},
            "configuration key registrar.min_expires = 600: expected at most registrar.max_expires (300)",
        )

    def test_unknown_key_or_section_is_an_error(self) -> None:
        self.assertRejected(
            {"sip.udp_port": [5060]},
            "configuration key sip.udp_port = [5060]: expected a known key (see tap-config.py)",
        )
        with self.assertRaises(config.ConfigError) as raised:
            config.load(self.write("sipp = {}\n"))
        self.assertIn("expected a known section", str(raised.exception))

    def test_section_must_be_a_dict(self) -> None:
        with self.assertRaises(config.ConfigError) as raised:
            config.load(self.write("sip = ['x']\n"))
        self.assertEqual(
            str(raised.exception), "configuration key sip = ['x']: expected a dict of keys for this section"
        )

    def test_broken_files_are_reported_in_one_line(self) -> None:
        for text, expected in [
            ("sip = {\n", "expected valid Python (line 1"),
            ("raise RuntimeError('boom')\n", "expected a file that runs (RuntimeError: boom)"),
        ]:
            path = self.write(text)
            with self.assertRaises(config.ConfigError) as raised:
                config.load(path)
            self.assertTrue(str(raised.exception).startswith(f"--config {path!r}: "), str(raised.exception))
            self.assertIn(expected, str(raised.exception))
        with self.assertRaises(config.ConfigError) as raised:
            config.load("/nonexistent/aetasip.conf.py")
        self.assertEqual(
            str(raised.exception),
            "--config '/nonexistent/aetasip.conf.py': expected the path of a readable configuration file",
        )

    def test_reference_configuration_documents_every_key_with_its_default(self) -> None:
        path = os.path.join(TOP, "tap-config.py")
        settings = config.readFile(path)
        with open(path) as f:
            text = f.read()
        for name, key in config.KEYS.items():
            if name in settings:
                self.assertEqual(settings[name], key.default, name)
            else:
                # Machine-dependent defaults stand commented out, documented.
                self.assertIn(f"# {name.split('.', 1)[1]!r}:", text.replace('"', "'"), name)
        self.assertEqual(set(settings) | {"server.name"}, set(config.KEYS))
