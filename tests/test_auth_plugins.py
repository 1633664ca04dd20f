"""
A third-party authentication backend dropped on C{sys.path} is discovered
as a Twisted plugin and used.

The plugin is the example of the README, C{examples/auth_plugin/}: each
test copies its two files into a new directory, as an operator would drop
them on C{PYTHONPATH}, and puts that directory on C{sys.path}.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from zope.interface.verify import verifyObject

from aetasip import config
from aetasip.auth import credentialsFromPassword
from aetasip.auth.chain import AuthChain, backendFactories, makeAuthBackend
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend, IAuthBackendFactory
from tests.droppedplugin import DroppedPluginTestCase
from tests.sipagent import Agent, Harness

ACCOUNTS = {
    "45675001": {"kind": "premium", "password": "secret1"},
    "45675002": {"password": "secret2"},
}


def configuration(settings: dict[str, Any], pluginOptions: dict[str, Any]) -> config.Config:
    """
    C{settings} checked as usual, with C{pluginOptions} as C{auth.options},
    the settings of plugin backends by backend name.
    """
    return config.build({**settings, "auth.options": pluginOptions})


class DroppedPluginTests(DroppedPluginTestCase):
    """
    The example backend of the README, dropped on C{sys.path}.
    """

    example = "auth_plugin"
    pluginModule = "example_auth"
    implementation = "example_backend"

    def exampleConfiguration(self, **settings: Any) -> config.Config:
        return configuration(
            {"auth.backends": ["example"], **{k.replace("__", "."): v for k, v in settings.items()}},
            {"example": {"accounts": ACCOUNTS}},
        )

    def test_plugin_is_found_once_dropped(self) -> None:
        self.assertNotIn("example", backendFactories())
        self.dropPlugin()
        factory = backendFactories()["example"]
        self.assertTrue(verifyObject(IAuthBackendFactory, factory))
        self.assertEqual(factory.name, "example")
        self.assertFoundHere(factory)

    def test_plugin_on_pythonpath_is_found_by_a_new_process(self) -> None:
        """
        Without any help from the test: a new interpreter with the directory
        on C{PYTHONPATH} finds the plugin by itself.
        """
        program = "from aetasip.auth.chain import backendFactories; print(sorted(backendFactories()))"
        printed = self.runWithPlugin(program)
        self.assertIn("'example'", printed)
        self.assertIn("'sql'", printed)

    def test_scanning_does_not_import_the_backend(self) -> None:
        self.dropPlugin()
        backendFactories()
        self.assertNotIn("example_backend", sys.modules)

    def test_configured_plugin_backend_answers(self) -> None:
        self.dropPlugin()
        backend = makeAuthBackend(self.exampleConfiguration(sip__realm="studio"))
        self.assertTrue(verifyObject(IAuthBackend, backend))
        self.assertEqual(backend.name, "example")
        self.assertEqual(
            self.successResultOf(backend.credentials("45675001")),
            credentialsFromPassword("45675001", "premium", "studio", "secret1"),
        )
        self.assertEqual(
            self.successResultOf(backend.credentials("45675002")),
            credentialsFromPassword("45675002", "premium", "studio", "secret2"),
        )
        self.assertIsNone(self.successResultOf(backend.credentials("45675003")))

    def test_plugin_backend_chains_with_the_shipped_ones(self) -> None:
        self.dropPlugin()
        accountsFile = os.path.join(self.directory, "accounts")
        with open(accountsFile, "w") as f:
            f.write("15000 test plain:file-secret\n")
        backend = makeAuthBackend(
            self.exampleConfiguration(auth__backends=["file", "example"], auth__file=accountsFile)
        )
        assert isinstance(backend, AuthChain)
        self.assertEqual([b.name for b in backend.backends], ["file", "example"])
        self.assertEqual(
            self.successResultOf(backend.credentials("15000")),
            credentialsFromPassword("15000", "test", "aetasip", "file-secret"),
        )
        self.assertEqual(
            self.successResultOf(backend.credentials("45675001")),
            credentialsFromPassword("45675001", "premium", "aetasip", "secret1"),
        )

    def test_agent_registers_with_the_plugin_backend(self) -> None:
        self.dropPlugin()
        harness = Harness(auth=makeAuthBackend(self.exampleConfiguration()))
        reply = harness.register(Agent("45675001", "secret1"))
        self.assertEqual(reply.code, 200)
        self.assertEqual(len(harness.location.lookup("45675001")), 1)

    def test_wrong_password_is_refused_by_the_plugin_backend(self) -> None:
        self.dropPlugin()
        harness = Harness(auth=makeAuthBackend(self.exampleConfiguration()))
        reply = harness.register(Agent("45675001", "not-the-password"))
        self.assertEqual(reply.code, 403)
        self.assertEqual(harness.location.lookup("45675001"), [])

    def test_bad_plugin_options_are_a_configuration_error(self) -> None:
        self.dropPlugin()
        settings = configuration(
            {"auth.backends": ["example"]}, {"example": {"accounts": {"45675001": {"kind": "gold", "password": "x1"}}}}
        )
        error = self.assertRaises(ConfigError, makeAuthBackend, settings)
        self.assertEqual(error.key, "auth.options")
        self.assertIn("45675001", str(error))
        self.assertNotIn("x1", str(error))
