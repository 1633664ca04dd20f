"""
An example routing policy for aetasip: numbers closed to calls, each with
the reason phrase the caller's codec shows.

With this file and C{twisted/plugins/example_routing.py} in a directory on
C{sys.path} (or installed with the package that ships them), the policy
is named C{example} in the configuration; put it after C{numberplan}, so
that it sees short numbers resolved::

    routing = {
        "policies": ["numberplan", "example", "hunting", "blocking", "exists"],
        "options": {
            "example": {
                "closed": {"45675002": "Studio on air"},
            },
        },
    }
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from aetasip.config import ConfigError
from aetasip.interfaces import IRoutingPolicy
from aetasip.routing import Call, Directory, Refusal


@implementer(IRoutingPolicy)
class ExampleRoutingPolicy:
    """
    Refuses calls to closed numbers with C{480 Temporarily Unavailable}
    and their reason phrase.

    @ivar closed: closed number to its reason phrase.
    """

    name = "example"

    def __init__(self, closed: dict[str, str]) -> None:
        self.closed = closed

    def apply(self, call: Call, directory: Directory) -> Refusal | None:
        """
        See L{IRoutingPolicy.apply}. A policy runs on every call: it
        answers at once from what it holds, never blocks and never waits.
        It may also refine the call (C{call.callee}, C{call.series}) for
        the steps after it.
        """
        reason = self.closed.get(call.callee)
        return None if reason is None else Refusal(480, reason)


def makeExamplePolicy(options: dict[str, Any]) -> ExampleRoutingPolicy:
    """
    The policy from its options.

    @param options: the C{routing} section of the configuration; this
        policy's own settings are in C{options["options"]["example"]}.
    @raise ConfigError: for a closed number that is not digits, or a reason
        that is not a one-line text.
    """
    settings = options.get("options", {}).get("example", {})
    closed = settings.get("closed", {})
    for number, reason in closed.items():
        if not (isinstance(number, str) and number.isdigit() and isinstance(reason, str) and reason.isprintable()):
            raise ConfigError("routing.options", f"example closed number {number!r}", "digits and a one-line reason")
    return ExampleRoutingPolicy(dict(closed))
