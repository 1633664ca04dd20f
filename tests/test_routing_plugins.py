"""
A third-party routing policy dropped on C{sys.path} is discovered as a
Twisted plugin and used in the routing chain.

The plugin is the example of the README, C{examples/routing_plugin/}: each
test copies its two files into a new directory, as an operator would drop
them on C{PYTHONPATH}, and puts that directory on C{sys.path}.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

from twisted.plugin import pluginPackagePaths
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from aetasip import config
from aetasip.config import ConfigError
from aetasip.interfaces import IRoutingPolicy, IRoutingPolicyFactory
from aetasip.routing import Call, Refusal
from aetasip.routing.blocking import OUTGOING_BLOCKED
from aetasip.routing.chain import RoutingChain, makeRoutingChain, policyFactories
from tests.routingdirectory import guideDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "routing_plugin")
EXAMPLE_FILES = ["example_policy.py", os.path.join("twisted", "plugins", "example_routing.py")]

# The checkout's plugins, whether or not aetasip is installed.
CHECKOUT_PLUGINS = os.path.join(ROOT, "twisted", "plugins")

# The modules the plugin brings, forgotten after each test.
PLUGIN_MODULES = ["example_policy", "twisted.plugins.example_routing"]

CHAIN = ["numberplan", "example", "hunting", "blocking", "exists"]
CLOSED = {"45675002": "Studio on air"}


def configuration(policies: list[str], pluginOptions: dict[str, Any], **settings: Any) -> config.Config:
    """
    The configuration naming C{policies}, with C{pluginOptions} as
    C{routing.options}.
    """
    return config.build({"routing.policies": policies, "routing.options": pluginOptions, **settings})


class DroppedPluginTests(SynchronousTestCase):
    """
    The example policy of the README, dropped on C{sys.path}.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        for name in EXAMPLE_FILES:
            os.makedirs(os.path.join(self.directory, os.path.dirname(name)), exist_ok=True)
            shutil.copyfile(os.path.join(EXAMPLE, name), os.path.join(self.directory, name))
        self.assertFalse(os.path.exists(os.path.join(self.directory, "twisted", "__init__.py")))
        self.addCleanup(self.forgetPluginModules)
        self.forgetPluginModules()

    def forgetPluginModules(self) -> None:
        for name in PLUGIN_MODULES:
            sys.modules.pop(name, None)
        if hasattr(twisted.plugins, "example_routing"):
            delattr(twisted.plugins, "example_routing")

    def dropPlugin(self) -> None:
        """
        Put the directory on C{sys.path}, and its C{twisted/plugins} on the
        plugin path as C{twisted/plugins/__init__.py} does for the
        directories on C{sys.path} when it is first imported.
        """
        self.patch(sys, "path", [*sys.path, self.directory])
        known = list(twisted.plugins.__path__)
        added = [
            path for path in [CHECKOUT_PLUGINS, *pluginPackagePaths(twisted.plugins.__name__)] if path not in known
        ]
        self.patch(twisted.plugins, "__path__", known + added)

    def route(self, chain: RoutingChain, caller: str, dialled: str, **options4567: bool) -> tuple[Refusal | None, Call]:
        directory = guideDirectory(**options4567)
        account = directory.account(caller)
        assert account is not None
        call = Call(account, dialled, dialled)
        return chain.route(call, directory), call

    def test_plugin_is_found_once_dropped(self) -> None:
        self.assertNotIn("example", policyFactories())
        self.dropPlugin()
        factory = policyFactories()["example"]
        self.assertTrue(verifyObject(IRoutingPolicyFactory, factory))
        self.assertEqual(factory.name, "example")
        module = sys.modules[type(factory).__module__]
        self.assertEqual(module.__name__, "twisted.plugins.example_routing")
        self.assertTrue(str(module.__file__).startswith(self.directory + os.sep))

    def test_plugin_on_pythonpath_is_found_by_a_new_process(self) -> None:
        """
        Without any help from the test: a new interpreter with the directory
        on C{PYTHONPATH} finds the plugin by itself.
        """
        program = "from aetasip.routing.chain import policyFactories; print(sorted(policyFactories()))"
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([self.directory, ROOT])}
        result = subprocess.run(
            [sys.executable, "-c", program], env=environment, cwd=self.directory, capture_output=True, text=True
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("'example'", result.stdout)
        self.assertIn("'numberplan'", result.stdout)

    def test_scanning_does_not_import_the_policy(self) -> None:
        self.dropPlugin()
        policyFactories()
        self.assertNotIn("example_policy", sys.modules)

    def test_unknown_until_dropped(self) -> None:
        error = self.assertRaises(ConfigError, makeRoutingChain, configuration(CHAIN, {}))
        self.assertEqual((error.key, error.value), ("routing.policies", "example"))

    def test_configured_plugin_policy_is_used(self) -> None:
        self.dropPlugin()
        chain = makeRoutingChain(configuration(CHAIN, {"example": {"closed": CLOSED}}))
        self.assertEqual(chain.names, CHAIN)
        policy = chain.policies[1]
        self.assertTrue(verifyObject(IRoutingPolicy, policy))
        self.assertEqual(policy.name, "example")
        # After the number plan: the short number is resolved first.
        self.assertEqual(self.route(chain, "45675412", "5002")[0], Refusal(480, "Studio on air"))
        self.assertEqual(self.route(chain, "45995005", "45675002")[0], Refusal(480, "Studio on air"))
        refusal, call = self.route(chain, "45675412", "5001")
        self.assertIsNone(refusal)
        self.assertEqual(call.callee, "45675001")
        # The shipped policies go on working around it.
        self.assertEqual(self.route(chain, "45675412", "45995033", outgoingBlock=True)[0], OUTGOING_BLOCKED)
        self.assertEqual(self.route(chain, "45675412", "5999")[0], Refusal(404, "Not Found"))

    def test_order_matters(self) -> None:
        """Before the number plan, the policy sees the short number as dialled."""
        self.dropPlugin()
        chain = makeRoutingChain(configuration(["example", "numberplan", "exists"], {"example": {"closed": CLOSED}}))
        self.assertIsNone(self.route(chain, "45675412", "5002")[0])
        self.assertEqual(self.route(chain, "45675412", "45675002")[0], Refusal(480, "Studio on air"))

    def test_bad_plugin_options_are_a_configuration_error(self) -> None:
        self.dropPlugin()
        error = self.assertRaises(
            ConfigError, makeRoutingChain, configuration(CHAIN, {"example": {"closed": {"4567-5002": "On air"}}})
        )
        self.assertEqual(error.key, "routing.options")
        self.assertIn("4567-5002", str(error))
