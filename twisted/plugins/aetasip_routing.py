"""
The routing policies shipped with aetasip, as Twisted plugins:
C{numberplan} (short numbers), C{hunting} (hunting groups), C{blocking}
(incoming/outgoing call blocking) and C{exists} (unknown numbers: 404).

The policy modules are imported only when a policy is made, so that
scanning the plugins stays cheap.
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from aetasip.interfaces import IRoutingPolicy, IRoutingPolicyFactory


@implementer(IPlugin, IRoutingPolicyFactory)
class NumberPlanPolicyFactory:
    """
    Makes L{aetasip.routing.numberplan.NumberPlanPolicy}s.
    """

    name = "numberplan"

    def makePolicy(self, options: dict[str, Any]) -> IRoutingPolicy:
        from aetasip.routing.numberplan import makeNumberPlanPolicy

        return makeNumberPlanPolicy(options)


@implementer(IPlugin, IRoutingPolicyFactory)
class HuntingPolicyFactory:
    """
    Makes L{aetasip.routing.hunting.HuntingPolicy}s.
    """

    name = "hunting"

    def makePolicy(self, options: dict[str, Any]) -> IRoutingPolicy:
        from aetasip.routing.hunting import makeHuntingPolicy

        return makeHuntingPolicy(options)


@implementer(IPlugin, IRoutingPolicyFactory)
class BlockingPolicyFactory:
    """
    Makes L{aetasip.routing.blocking.BlockingPolicy}s.
    """

    name = "blocking"

    def makePolicy(self, options: dict[str, Any]) -> IRoutingPolicy:
        from aetasip.routing.blocking import makeBlockingPolicy

        return makeBlockingPolicy(options)


@implementer(IPlugin, IRoutingPolicyFactory)
class ExistsPolicyFactory:
    """
    Makes L{aetasip.routing.numberplan.ExistsPolicy}s.
    """

    name = "exists"

    def makePolicy(self, options: dict[str, Any]) -> IRoutingPolicy:
        from aetasip.routing.numberplan import ExistsPolicy

        return ExistsPolicy()


numberplan = NumberPlanPolicyFactory()
hunting = HuntingPolicyFactory()
blocking = BlockingPolicyFactory()
exists = ExistsPolicyFactory()
