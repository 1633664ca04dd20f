"""
Incoming-call and outgoing-call blocking, options of a group (SPEC
"Calls", guide 5.4 and 5.5).

  - I{Incoming-call blocking} (the callee's group): calls from outside the
    group to the group are refused; calls from factory accounts always.
  - I{Outgoing-call blocking} (the caller's group): calls from the group to
    numbers outside it are refused, except the test number (C{15000}) and
    the service's own test lines (the echo line: accounts marked
    C{testLine}, as L{aetasip.testline.service.LinesDirectory} gives
    them); calls to factory accounts always.

A call to the group's hunting group number is a call into the group. A
number that is no account is outside every group.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from aetasip.interfaces import IRoutingPolicy
from aetasip.routing import Account, Call, Directory, Refusal
from aetasip.routing.hunting import huntingGroup

#: The refusals, with a reason phrase a codec can show.
INCOMING_BLOCKED = Refusal(403, "Incoming calls blocked for this group")
OUTGOING_BLOCKED = Refusal(403, "Outgoing calls blocked for this group")


@implementer(IRoutingPolicy)
class BlockingPolicy:
    """
    Applies the blocking options of the caller's and the callee's groups.

    @ivar testNumber: the number open to groups with outgoing blocking.
    @ivar huntingNumber: the hunting group number after the prefix.
    """

    name = "blocking"

    def __init__(self, testNumber: str = "15000", huntingNumber: str = "6000") -> None:
        self.testNumber = testNumber
        self.huntingNumber = huntingNumber

    def apply(self, call: Call, directory: Directory) -> Refusal | None:
        """
        See L{IRoutingPolicy.apply}: run after the number plan, on the
        resolved C{call.callee}.
        """
        caller = call.caller
        callee = directory.account(call.callee)
        if callee is not None:
            calleeGroup = callee.group
        else:
            calleeGroup = huntingGroup(call.callee, self.huntingNumber, directory)
        if calleeGroup is not None:
            group = directory.group(calleeGroup)
            if group is not None and group.incomingBlock and (caller.kind == "factory" or caller.group != calleeGroup):
                return INCOMING_BLOCKED
        if caller.group is not None:
            group = directory.group(caller.group)
            if group is not None and group.outgoingBlock and not self._testLine(call.callee, callee):
                if (callee is not None and callee.kind == "factory") or calleeGroup != caller.group:
                    return OUTGOING_BLOCKED
        return None

    def _testLine(self, number: str, account: Account | None) -> bool:
        """Is C{number} open to every group: the test number, or a test line of the service."""
        return number == self.testNumber or (account is not None and account.testLine)


def makeBlockingPolicy(options: dict[str, Any]) -> BlockingPolicy:
    """
    The policy from the C{routing} section (C{test_number},
    C{hunting_number}).
    """
    return BlockingPolicy(options.get("test_number", "15000"), options.get("hunting_number", "6000"))
