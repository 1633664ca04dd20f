"""
The routing chain: the policies named in C{routing.policies}, found as
Twisted plugins, applied to a call in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from aetasip.config import Config, ConfigError, Key, declare, dictOfDicts, integer, listOf, text
from aetasip.interfaces import IRoutingPolicy, IRoutingPolicyFactory
from aetasip.plugins import chosen, namedPlugins
from aetasip.routing import Call, Directory, Refusal

log = Logger()

# The routing.* configuration keys (documented in tap-config.py too), checked further
# by makeRoutingChain.
declare(
    Key(
        "routing.policies",
        ["numberplan", "hunting", "blocking", "exists"],
        listOf(text, "routing policy names", allowEmpty=False),
        "Routing policies a call goes through, in order; the first refusal answers the call. 'numberplan' "
        "resolves short numbers, 'hunting' expands hunting group numbers, 'blocking' applies the groups' "
        "incoming/outgoing call blocking, 'exists' refuses unknown numbers (404); third-party plugins add more.",
    ),
    Key(
        "routing.test_number",
        "15000",
        text,
        "The test number: open to groups with outgoing-call blocking.",
    ),
    Key(
        "routing.short_number_digits",
        4,
        integer(1, 15),
        "Length of a short number: dialled by a member of a group, it reaches the group's prefix + these digits.",
    ),
    Key(
        "routing.hunting_number",
        "6000",
        text,
        "Hunting group number, after the group's prefix (45676000 for group 4567, or 6000 dialled inside it).",
    ),
    Key(
        "routing.hunting_ring_time",
        20,
        integer(1, 600),
        "Seconds each member of a hunting series rings before the call moves on to the next one.",
    ),
    Key(
        "routing.options",
        {},
        dictOfDicts,
        "Settings of third-party routing policies, by policy name, e.g. {'example': {...}}; each policy reads "
        "its own entry.",
    ),
)


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
