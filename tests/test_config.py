"""
Configuration: defaults, checks with one clear message, the file format,
tap-config.py documenting every key with its default, and keys declared by
the modules that own them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

from twisted.plugin import pluginPackagePaths
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins
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


class DeclareTests(SynchronousTestCase):
    """
    Keys and cross-key checks declared by the modules that own them, with
    L{config.declare} and L{config.declareCheck}.
    """

    def setUp(self) -> None:
        # Every test declares into a copy of the filled registry, forgotten
        # afterwards; the modules it writes are forgotten too.
        config.keys()
        self.registry = config._registry.copy()
        self.patch(config, "_registry", self.registry)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "twisted", "plugins"))
        self.patch(sys, "path", [*sys.path, self.directory])
        self.addCleanup(self.forgetModules)

    def forgetModules(self) -> None:
        for name in ("aetasip_test_settings", "twisted.plugins.aetasip_test_config"):
            sys.modules.pop(name, None)
        if hasattr(twisted.plugins, "aetasip_test_config"):
            delattr(twisted.plugins, "aetasip_test_config")

    def writeModule(self, path: str, source: str) -> None:
        with open(os.path.join(self.directory, path), "w") as f:
            f.write(textwrap.dedent(source))

    def writeSettingsModule(self) -> None:
        """A module declaring an C{example} section, as another service would."""
        self.writeModule(
            "aetasip_test_settings.py",
            """
            from aetasip.config import ConfigError, Key, declare, declareCheck, integer, text

            declare(
                Key("example.timeout", 5, integer(1, 60), "Seconds an example may take."),
                Key("example.greeting", "hello", text, "What the example says."),
            )


            def _short(values):
                if values["example.timeout"] > values["registrar.min_expires"]:
                    raise ConfigError("example.timeout", values["example.timeout"], "at most registrar.min_expires")


            declareCheck(_short)
            """,
        )

    def writeFile(self, text: str) -> str:
        path = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertKnowsExample(self) -> None:
        """build, readFile, load and sections know the example's keys."""
        self.assertIn("example", config.sections())
        self.assertEqual(config.build({})["example.timeout"], 5)
        self.assertEqual(config.load().section("example"), {"timeout": 5, "greeting": "hello"})
        path = self.writeFile("example = {'timeout': 7}\n")
        self.assertEqual(config.readFile(path), {"example.timeout": 7})
        self.assertEqual(config.load(path)["example.timeout"], 7)
        self.assertIn("example.greeting", config.KEYS)
        with self.assertRaises(config.ConfigError) as raised:
            config.build({"example.timeout": 0})
        self.assertEqual(
            str(raised.exception), "configuration key example.timeout = 0: expected a whole number from 1 to 60"
        )

    def test_a_name_declared_twice_is_an_error(self) -> None:
        with self.assertRaises(ValueError) as raised:
            config.declare(config.Key("sip.realm", "other", config.text, "Declared again."))
        self.assertEqual(str(raised.exception), "configuration key sip.realm is declared twice")
        with self.assertRaises(ValueError):
            config.declare(
                config.Key("example.name", "a", config.text, "Once."),
                config.Key("example.name", "b", config.text, "Twice in the same call."),
            )
        self.assertEqual(config.keys()["sip.realm"].default, "aetasip")
        self.assertNotIn("example.name", config.keys())

    def test_a_bad_name_or_default_is_an_error(self) -> None:
        for name in ["example", "example.a.b", "_example.name", "example.not-a-name", "1example.name"]:
            with self.assertRaises(ValueError, msg=name):
                config.declare(config.Key(name, "a", config.text, "Badly named."))
        with self.assertRaises(ValueError) as raised:
            config.declare(config.Key("example.port", 70000, config.port, "Out of range."))
        self.assertEqual(
            str(raised.exception),
            "configuration key example.port: default 70000: expected a whole number from 0 to 65535",
        )
        self.assertNotIn("example", config.sections())

    def test_a_declared_key_is_known_to_build_read_file_and_sections(self) -> None:
        self.assertNotIn("example", config.sections())
        with self.assertRaises(config.ConfigError) as raised:
            config.load(self.writeFile("example = {'timeout': 7}\n"))
        self.assertIn("expected a known section", str(raised.exception))
        config.declare(
            config.Key("example.timeout", 5, config.integer(1, 60), "Seconds an example may take."),
            config.Key("example.greeting", "hello", config.text, "What the example says."),
        )
        self.assertKnowsExample()

    def test_a_declared_cross_check_runs(self) -> None:
        seen: list[Mapping[str, Any]] = []

        def check(values: Mapping[str, Any]) -> None:
            seen.append(values)
            if values["sip.tcp_idle_timeout"] < values["registrar.max_expires"]:
                raise config.ConfigError(
                    "sip.tcp_idle_timeout", values["sip.tcp_idle_timeout"], "at least registrar.max_expires"
                )

        config.declareCheck(check)
        self.assertEqual(config.build({"sip.tcp_idle_timeout": 3600})["sip.tcp_idle_timeout"], 3600)
        self.assertEqual(seen[-1]["sip.tcp_idle_timeout"], 3600)
        with self.assertRaises(config.ConfigError) as raised:
            config.build({}).replace(sip__tcp_idle_timeout=60)
        self.assertEqual(
            str(raised.exception),
            "configuration key sip.tcp_idle_timeout = 60: expected at least registrar.max_expires",
        )

    def test_a_module_in_the_list_is_imported_on_first_use(self) -> None:
        self.writeSettingsModule()
        self.registry.loaded = False
        self.patch(config, "MODULES", (*config.MODULES, "aetasip_test_settings"))
        self.assertNotIn("aetasip_test_settings", sys.modules)
        self.assertKnowsExample()
        self.assertIn("aetasip_test_settings", sys.modules)
        with self.assertRaises(config.ConfigError) as raised:
            config.build({"example.timeout": 60, "registrar.min_expires": 30})
        self.assertEqual(
            str(raised.exception), "configuration key example.timeout = 60: expected at most registrar.min_expires"
        )

    def test_a_third_party_plugin_declares_keys(self) -> None:
        """
        The way of the module docstring: a Twisted plugin providing
        L{config.IConfigModule} names the module that declares the keys.
        """
        self.writeSettingsModule()
        self.writeModule(
            os.path.join("twisted", "plugins", "aetasip_test_config.py"),
            """
            from aetasip.config import ConfigModule

            exampleSettings = ConfigModule("aetasip_test_settings")
            """,
        )
        known = list(twisted.plugins.__path__)
        self.patch(
            twisted.plugins,
            "__path__",
            known + [path for path in pluginPackagePaths(twisted.plugins.__name__) if path not in known],
        )
        self.registry.loaded = False
        self.assertKnowsExample()

    def test_every_key_is_known_whatever_was_imported_first(self) -> None:
        """
        A new interpreter, which has imported only some modules (or none),
        checks against every key of the service.
        """
        expected = sorted({name.split(".", 1)[0] for name in config.keys()})
        self.assertEqual(expected, config.sections())
        for first in ["", "import aetasip.notify; ", "import aetasip.auth.ldap; import aetasip.stun.service; "]:
            program = first + "from aetasip.config import sections, KEYS; print(sections(), len(KEYS))"
            result = subprocess.run(
                [sys.executable, "-c", program],
                env={**os.environ, "PYTHONPATH": TOP},
                cwd=self.directory,
                capture_output=True,
                text=True,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, f"{expected} {len(config.keys())}\n", first)


class SecretsTests(SynchronousTestCase):
    """
    Fault 6 of the audit: ConfigError printed rejected values in full, a
    PostgreSQL URL with its password among them.
    """

    def test_a_rejected_store_url_keeps_its_password(self) -> None:
        url = "postgresql+psycopg://aetasip:hunter2@db.example.net/aetasip?sslmode=bogus"
        with self.assertRaises(config.ConfigError) as raised:
            config.build({"store.url": url.replace("postgresql+psycopg", "mysql")})
        message = str(raised.exception)
        self.assertNotIn("hunter2", message)
        self.assertIn("mysql://aetasip:***@db.example.net/aetasip", message)

    def test_secret_settings_are_hidden_whole(self) -> None:
        for name, value, secret in (
            ("notify.secret", 123456789, "123456789"),
            ("ldap.bind_password", ["hunter2"], "hunter2"),
            ("auth.options", {"radius": {"shared_secret": "hunter2"}, "other": 5}, "hunter2"),
            ("notify.urls", ["https://hook:hunter2@example.net/", 5], "hunter2"),
        ):
            with self.assertRaises(config.ConfigError) as raised:
                config.build({name: value})
            self.assertNotIn(secret, str(raised.exception), name)
            self.assertIn(name, str(raised.exception))
