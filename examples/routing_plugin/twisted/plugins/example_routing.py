"""
The Twisted plugin that names the example routing policy C{example}.

It lives in a directory C{twisted/plugins/} without C{__init__.py}, next
to C{example_policy.py}, in a directory on C{sys.path}. Scanning the
plugins imports this module: keep it small, and import the policy only
when it is made.
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from aetasip.interfaces import IRoutingPolicy, IRoutingPolicyFactory


@implementer(IPlugin, IRoutingPolicyFactory)
class ExamplePolicyFactory:
    """
    Makes L{example_policy.ExampleRoutingPolicy}s.
    """

    name = "example"

    def makePolicy(self, options: dict[str, Any]) -> IRoutingPolicy:
        """
        See L{IRoutingPolicyFactory.makePolicy}.
        """
        from example_policy import makeExamplePolicy

        return makeExamplePolicy(options)


example = ExamplePolicyFactory()
