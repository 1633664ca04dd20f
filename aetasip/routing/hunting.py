"""
Hunting groups (SPEC "Calls", guide 5.8).

A group with the hunting option has a hunting group number, its prefix
followed by C{6000} (also reached by dialling C{6000} inside the group,
through L{aetasip.routing.numberplan}), and a series of accounts of kind
C{hunting}, prefix + C{6001}, C{6002}, … A call to the hunting group
number rings them one after the other: this policy gives the call its
C{series}; the proxy rings it (C{routing.hunting_ring_time} per member).
The series accounts only receive calls.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from aetasip.interfaces import IRoutingPolicy
from aetasip.routing import Call, Directory, Refusal

#: The refusal of a call placed by a hunting-series account.
HUNTING_CALLER = Refusal(403, "Hunting accounts cannot place calls")


def huntingGroup(number: str, huntingNumber: str, directory: Directory) -> str | None:
    """
    The prefix of the group whose hunting group number is C{number}, when
    that group exists and has the hunting option; otherwise C{None}.
    """
    if len(number) <= len(huntingNumber) or not number.endswith(huntingNumber):
        return None
    prefix = number[: -len(huntingNumber)]
    group = directory.group(prefix)
    return prefix if group is not None and group.hunting else None


@implementer(IRoutingPolicy)
class HuntingPolicy:
    """
    Refuses calls placed by hunting accounts, and expands calls to a
    hunting group number into their series.

    @ivar huntingNumber: the hunting group number after the prefix.
    @ivar ringTime: seconds each member rings (read by the proxy).
    """

    name = "hunting"

    def __init__(self, huntingNumber: str = "6000", ringTime: int = 20) -> None:
        self.huntingNumber = huntingNumber
        self.ringTime = ringTime

    def apply(self, call: Call, directory: Directory) -> Refusal | None:
        """
        See L{IRoutingPolicy.apply}. A hunting group number whose group has
        no hunting option, or an empty series, is left alone: unknown, it
        is refused 404 by the C{exists} step.
        """
        if call.caller.kind == "hunting":
            return HUNTING_CALLER
        prefix = huntingGroup(call.callee, self.huntingNumber, directory)
        if prefix is not None:
            series = directory.huntingSeries(prefix)
            if series:
                call.series = list(series)
        return None


def makeHuntingPolicy(options: dict[str, Any]) -> HuntingPolicy:
    """
    The policy from the C{routing} section (C{hunting_number},
    C{hunting_ring_time}).
    """
    return HuntingPolicy(options.get("hunting_number", "6000"), options.get("hunting_ring_time", 20))
