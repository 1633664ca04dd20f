"""
The number plan: what a dialled number reaches (SPEC "Calls", guide 5.3).

A caller dials a number of digits, possibly written with the visual
separators of RFC 3966 (C{45-67-50-02}). A member of a group may dial the
last digits only (a I{short number}): C{45675412} dialling C{5002} reaches
C{45675002}. Whether the number exists is decided at the end of the chain,
by L{ExistsPolicy}: other steps (hunting) may give it a meaning first.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from aetasip.interfaces import IRoutingPolicy
from aetasip.routing import Call, Directory, Refusal

# RFC 3966 visual separators, and the space some agents let through.
_SEPARATORS = str.maketrans("", "", "-.() ")


def normalise(dialled: str) -> str:
    """
    C{dialled} without visual separators when what is left is digits;
    otherwise C{dialled} unchanged (it reaches no account, and is refused
    404 by L{ExistsPolicy}).
    """
    digits = dialled.translate(_SEPARATORS)
    return digits if digits.isdigit() else dialled


@implementer(IRoutingPolicy)
class NumberPlanPolicy:
    """
    Normalises the dialled number and resolves short numbers.

    @ivar shortDigits: the length of a short number.
    """

    name = "numberplan"

    def __init__(self, shortDigits: int = 4) -> None:
        self.shortDigits = shortDigits

    def apply(self, call: Call, directory: Directory) -> Refusal | None:
        """
        Set C{call.callee} to the normalised dialled number, prefixed with
        the caller's group prefix when it is a short number dialled by a
        member of a group. A short number dialled by a caller without a
        group is left as dialled. Never refuses.
        """
        number = normalise(call.dialled)
        group = call.caller.group
        if group is not None and len(number) == self.shortDigits and number.isdigit():
            number = group + number
        call.callee = number
        return None


@implementer(IRoutingPolicy)
class ExistsPolicy:
    """
    The last step of the shipped chain: a call must reach an account, or a
    hunting series; anything else is refused C{404 Not Found}.
    """

    name = "exists"

    def apply(self, call: Call, directory: Directory) -> Refusal | None:
        """
        See L{IRoutingPolicy.apply}.
        """
        if call.series or directory.account(call.callee) is not None:
            return None
        return Refusal(404, "Not Found")


def makeNumberPlanPolicy(options: dict[str, Any]) -> NumberPlanPolicy:
    """
    The policy from the C{routing} section (C{short_number_digits}).
    """
    return NumberPlanPolicy(options.get("short_number_digits", 4))
