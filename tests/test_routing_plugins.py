"""
A third-party routing policy dropped on C{sys.path} is discovered as a
Twisted plugin and used in the routing chain.

The plugin is the example of the README, C{examples/routing_plugin/}: each
test copies its two files into a new directory, as an operator would drop
them on C{PYTHONPATH}, and puts that directory on C{sys.path}.
"""

from __future__ import annotations

import sys
from typing import Any

from zope.interface.verify import verifyObject

from aetasip import config
from aetasip.config import ConfigError
from aetasip.interfaces import IRoutingPolicy, IRoutingPolicyFactory
from aetasip.routing import Call, Refusal
from aetasip.routing.blocking import OUTGOING_BLOCKED
from aetasip.routing.chain import RoutingChain, makeRoutingChain, policyFactories
from tests.droppedplugin import DroppedPluginTestCase
from tests.routingdirectory import guideDirectory

CHAIN = ["numberplan", "example", "hunting", "blocking", "exists"]
CLOSED = {"45675002": "Studio on air"}


def configuration(policies: list[str], pluginOptions: dict[str, Any], **settings: Any) -> config.Config:
    """
    The configuration naming C{policies}, with C{pluginOptions} as
    C{routing.options}.
    """
    return config.build({"routing.policies": policies, "routing.options": pluginOptions, **settings})


class DroppedPluginTests(DroppedPluginTestCase):
    """
    The example policy of the README, dropped on C{sys.path}.
    """

    example = "routing_plugin"
    pluginModule = "example_routing"
    implementation = "example_policy"

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
        self.assertFoundHere(factory)

    def test_plugin_on_pythonpath_is_found_by_a_new_process(self) -> None:
        """
        Without any help from the test: a new interpreter with the directory
        on C{PYTHONPATH} finds the plugin by itself.
        """
        program = "from aetasip.routing.chain import policyFactories; print(sorted(policyFactories()))"
        printed = self.runWithPlugin(program)
        self.assertIn("'example'", printed)
        self.assertIn("'numberplan'", printed)

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
