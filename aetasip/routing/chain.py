"""
The routing chain: the policies named in C{routing.policies}, found as
Twisted plugins, applied to a call in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from aetasip.config import Config, ConfigError
from aetasip.interfaces import IRoutingPolicy, IRoutingPolicyFactory
from aetasip.plugins import chosen, namedPlugins
from aetasip.routing import Call, Directory, Refusal

log = Logger()


@implementer(IRoutingPolicy)
class RoutingChain:
    """
    Applies its policies to a call in order; the first refusal stops it.

    @ivar policies: providers of L{IRoutingPolicy}, in order.
    """

    name = "chain"

    def __init__(self, policies: Sequence[IRoutingPolicy]) -> None:
        self.policies = list(policies)

    @property
    def names(self) -> list[str]:
        """The names of the policies, in order."""
        return [policy.name for policy in self.policies]

    def route(self, call: Call, directory: Directory) -> Refusal | None:
        """
        Route C{call}: each policy may refine it (C{callee}, C{series}) or
        refuse it.

        @return: the first L{Refusal}, or C{None} when the call goes on to
            C{call.callee} (or, when set, to C{call.series} one after the
            other).
        """
        for policy in self.policies:
            refusal: Refusal | None = policy.apply(call, directory)
            if refusal is not None:
                return refusal
        return None

    apply = route


def policyFactories() -> dict[str, IRoutingPolicyFactory]:
    """The routing policy factories installed as Twisted plugins, by name."""
    return namedPlugins(IRoutingPolicyFactory, "routing policies")


def routingOptions(config: Config) -> dict[str, Any]:
    """
    The options given to every policy factory: the C{routing} section of
    C{config} without the C{routing.} prefix, checked.

    @raise ConfigError: for a test or hunting number that is not digits.
    """
    options = config.section("routing")
    for key in ("test_number", "hunting_number"):
        if not options[key].isdigit():
            raise ConfigError(f"routing.{key}", options[key], "a number of digits")
    return options


def makeRoutingChain(config: Config) -> RoutingChain:
    """
    The chain of the policies named in C{routing.policies}.

    @raise ConfigError: for an unknown or repeated name, or a policy's own
        configuration error.
    """
    options = routingOptions(config)
    policies = [
        IRoutingPolicy(factory.makePolicy(options))
        for factory in chosen("routing.policies", config["routing.policies"], policyFactories())
    ]
    return RoutingChain(policies)
