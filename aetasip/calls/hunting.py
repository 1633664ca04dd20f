"""
Hunting (SPEC "Groups"): a call to a hunting series rings one member at a
time, each for the ring time; the caller hears ringing once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall

from aetasip.calls.call import Call, EndCause
from aetasip.calls.context import Branch, ResponseContext
from aetasip.location import Binding
from aetasip.sip.message import Request, Response
from aetasip.sip.transaction import Peer, ServerTransaction

if TYPE_CHECKING:
    from aetasip.calls.proxy import Proxy


class HuntingContext:
    """
    A call to a hunting series: members without a binding are skipped;
    the next one rings after a busy, unavailable or unanswered member; a
    6xx or an answer ends it.

    @param members: each member's number and its bindings, in order.
    """

    def __init__(
        self,
        proxy: Proxy,
        request: Request,
        peer: Peer,
        server: ServerTransaction,
        members: list[tuple[str, list[Binding]]],
        call: Call,
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.peer = peer
        self.server = server
        self.members = members
        self.call = call
        self.index = -1
        self.rang = False
        self.busy = 0
        self.current: ResponseContext | None = None
        self.ringTimer: IDelayedCall | None = None

    def next(self) -> None:
        self.index += 1
        if self.index == len(self.members):
            # Everyone tried: busy if anyone was, else nobody answered.
            code = 486 if self.busy else 480
            self.server.respond(self.proxy._reply(self.request, code))
            self.proxy._contexts.pop(self.server.key, None)
            self.call.end(EndCause.REJECTED if self.busy else EndCause.NO_ANSWER, code)
            return
        number, bindings = self.members[self.index]
        self.call.resolve(number)
        context = HuntingMember(self, self.proxy, self.request, self.peer, self.server, self.call)
        self.current = context
        self.proxy._contexts[self.server.key] = context
        branches = [
            self.proxy._branch(self.request, self.peer, b, number, self.call.caller, self.call) for b in bindings
        ]
        self.proxy._startBranches(context, self.request, branches)
        self.ringTimer = self.proxy.clock.callLater(self.proxy.ringTime, self.ringTimeout)

    def ringTimeout(self) -> None:
        self.ringTimer = None
        if self.current is not None:
            self.current.cancel("ring")

    def stopRinging(self) -> None:
        """Cancel the ring timer of the current member."""
        if self.ringTimer is not None and self.ringTimer.active():
            self.ringTimer.cancel()
        self.ringTimer = None

    def memberDone(self, response: Response | None) -> None:
        self.stopRinging()
        if response is not None and response.code >= 600:
            self.server.respond(response)
            self.proxy._contexts.pop(self.server.key, None)
            self.call.end(EndCause.REJECTED, response.code)
            return
        if response is not None and response.code == 486:
            self.busy += 1
        self.next()

    def cancel(self) -> None:
        """The caller gave up."""
        self.index = len(self.members)
        self.stopRinging()
        if self.current is not None:
            self.current.cancel("caller")


class HuntingMember(ResponseContext):
    """The response context of one member of a hunting series."""

    __slots__ = ("hunt",)

    def __init__(
        self, hunt: HuntingContext, proxy: Proxy, request: Request, peer: Peer, server: ServerTransaction, call: Call
    ) -> None:
        super().__init__(proxy, request, peer, server, call)
        self.hunt = hunt

    def response(self, branch: Branch, response: Response) -> None:
        if 200 <= response.code < 300:
            # Answered: the hunt is over.
            self.hunt.stopRinging()
        if response.code < 200:
            if response.code == 180 and self.hunt.rang:
                branch.code = max(branch.code, response.code)
                return
            if response.code == 180:
                self.hunt.rang = True
        super().response(branch, response)

    def callerCancelled(self) -> None:
        self.hunt.cancel()

    def stop(self) -> None:
        super().stop()
        self.hunt.stopRinging()

    def _sendBest(self) -> None:
        if self.answered:
            return
        if self.hunt.index >= len(self.hunt.members):
            # The caller cancelled: the 487 goes up.
            super()._sendBest()
            return
        self.answered = True
        self._finish()
        self.hunt.memberDone(self.best)
