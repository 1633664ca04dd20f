"""
Calls as objects: one L{Call} per call attempt (an INVITE outside a
dialog), with its state machine, its timestamps from the injected clock,
and the events L{ICallObserver}s hear.

Sans-IO: nothing here sends anything. The proxy moves a call on
(L{Call.ringing}, L{Call.answered}, L{Call.end}); each move that changes
the state is told to the observers, in order, exactly once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

log = Logger()

# States, in the only order a call goes through them (a call may skip
# ringing and answered).
ATTEMPTING = "attempting"
RINGING = "ringing"
ANSWERED = "answered"
ENDED = "ended"


class EndCause:
    """Why a call ended: the values of L{Call.endCause}."""

    CALLER_BYE = "caller BYE"
    CALLEE_BYE = "callee BYE"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # with the final status in Call.status
    NO_ANSWER = "no answer"
    DEAD_DIALOG = "dead dialog"
    MEDIA_TIMEOUT = "media timeout"
    SERVER_SHUTDOWN = "server shutdown"
    OPERATOR_RELEASE = "operator release"
    DURATION_LIMIT = "duration limit"
    MEDIA_FAILURE = "media failure"


@attrs.define(eq=False)
class Leg:
    """
    One end of a call as the network sees it: where its signalling comes
    from (or, for a callee, where its binding says it is reached).

    @ivar source: C{(host, port)} of its packets (the NAT's public side).
    @ivar transport: C{udp}, C{tcp} or C{tls}.
    @ivar local: our socket C{(host, port)} it talks to.
    @ivar connection: the stream connection it opened, or C{None}.
    @ivar contact: its Contact (a header value or a URI, as last seen);
        requests to it go to that URI pointed at C{source}.
    """

    source: tuple[str, int]
    transport: str
    local: tuple[str, int]
    connection: Any = None
    contact: str | None = None


@attrs.define(eq=False)
class Target:
    """
    One branch of a call: a binding of a resolved number the INVITE was
    forked to.

    @ivar key: identifies the branch within its call (C{"1"}, C{"2"}, …):
        what the media handler and dialog tokens name it by.
    @ivar number: the account it reaches (a hunting member, the number a
        short number resolved to, …).
    @ivar status: the best response code it gave so far (0: none).
    @ivar tag: the callee's To tag on this branch, from its first 1xx or
        2xx with one (C{None} until then): a media handler's answer from
        a branch not yet answered names the callee by it.
    """

    key: str
    number: str
    leg: Leg
    status: int = 0
    tag: str | None = None


_callIDs = itertools.count(1)


class Call:
    """
    One call attempt: from the caller's INVITE to its end.

    @ivar id: a number unique in this process, for logs and pages.
    @ivar callID: the SIP Call-ID.
    @ivar callerTag: the From tag of the caller.
    @ivar calleeTag: the To tag of the answering callee, once answered.
    @ivar caller: the caller's number; C{callerKind} its account kind.
    @ivar domain: the registrar domain the caller uses (the host of its
        Request-URI: what it has configured as its SIP server).
    @ivar callerLeg: where the caller's INVITE came from.
    @ivar dialled: the number as dialled; C{resolved} every number it was
        resolved to (the callee, each hunting member), in order.
    @ivar targets: the branches, in the order they were tried.
    @ivar answeredBy: the L{Target} that answered, once answered.
    @ivar state: C{attempting}, C{ringing}, C{answered}, C{ended}.
    @ivar started, ringingAt, answeredAt, endedAt: clock times (C{None}
        until they happen).
    @ivar status: the final status code the caller got (0 until then).
    @ivar endCause: one of L{EndCause}, once ended; C{endDetail} says more.
    @ivar media: what the media handler keeps on the call (relay
        decisions, statistics), by name.
    @ivar recovered: the call was rebuilt from a signed Route after a
        restart or a switch of server: its start is unknown.
    @ivar endedElsewhere: the call ended on another server of a cluster
        (its BYE went there after a switch), which closes its record.
    """

    __slots__ = (
        "_clock",
        "_observers",
        "_onEnd",
        "_reported",
        "answeredAt",
        "answeredBy",
        "callID",
        "calleeTag",
        "caller",
        "callerKind",
        "callerLeg",
        "callerTag",
        "control",
        "dialled",
        "dialogs",
        "domain",
        "endCause",
        "endDetail",
        "endedAt",
        "endedElsewhere",
        "id",
        "media",
        "recovered",
        "resolved",
        "ringingAt",
        "started",
        "state",
        "status",
        "targets",
    )

    def __init__(
        self,
        clock: Callable[[], float],
        callID: str,
        callerTag: str,
        caller: str,
        callerKind: str,
        domain: str,
        callerLeg: Leg,
        dialled: str,
        observers: CallObservers | None = None,
    ) -> None:
        self.id = next(_callIDs)
        self._clock = clock
        self.callID = callID
        self.callerTag = callerTag
        self.calleeTag: str | None = None
        self.caller = caller
        self.callerKind = callerKind
        self.domain = domain
        self.callerLeg = callerLeg
        self.dialled = dialled
        self.resolved: list[str] = []
        self.targets: list[Target] = []
        self.answeredBy: Target | None = None
        self.state = ATTEMPTING
        self.started = clock()
        self.ringingAt: float | None = None
        self.answeredAt: float | None = None
        self.endedAt: float | None = None
        self.status = 0
        self.endCause: str | None = None
        self.endDetail = ""
        self.media: dict[str, Any] = {}
        self.recovered = False
        self.endedElsewhere = False
        # The proxy's handle on the call being set up (its response or
        # hunting context), and the dialogs it made: what release() uses.
        self.control: Any = None
        self.dialogs: list[Any] = []
        self._observers = observers if observers is not None else CallObservers()
        # What runs when the call ends (its dialogs and timers let go, its
        # media released), and, once ended, when the observers heard it.
        self._onEnd: list[Callable[[Call], Deferred[Any] | None]] = []
        self._reported: Deferred[None] | None = None

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.caller}->{self.dialled} {self.state}>"

    @property
    def callee(self) -> str | None:
        """The number that answered, else the last one resolved."""
        if self.answeredBy is not None:
            return self.answeredBy.number
        return self.resolved[-1] if self.resolved else None

    @property
    def duration(self) -> float:
        """Seconds from answer to end (or to now), 0 when never answered."""
        if self.answeredAt is None:
            return 0.0
        end = self.endedAt if self.endedAt is not None else self._clock()
        return max(0.0, end - self.answeredAt)

    def resolve(self, number: str) -> None:
        """The call now reaches C{number} (the routing decided, or a hunt moved on)."""
        if not self.resolved or self.resolved[-1] != number:
            self.resolved.append(number)

    def addTarget(self, number: str, leg: Leg) -> Target:
        target = Target(str(len(self.targets) + 1), number, leg)
        self.targets.append(target)
        return target

    def target(self, key: str) -> Target | None:
        for target in self.targets:
            if target.key == key:
                return target
        return None

    # -- state moves ------------------------------------------------------

    def start(self) -> None:
        """The call is routed and its first branches go out: callStarted."""
        if self._observers.observers:
            self._observers.tell("callStarted", self)

    def ringing(self) -> None:
        """A callee rings (a 180 or 183): callRinging, once."""
        if self.state != ATTEMPTING:
            return
        self.state = RINGING
        self.ringingAt = self._clock()
        if self._observers.observers:
            self._observers.tell("callRinging", self)

    def answered(self, target: Target | None, calleeTag: str | None) -> None:
        """A 2xx went up to the caller: callAnswered, once."""
        if self.state in (ANSWERED, ENDED):
            return
        self.state = ANSWERED
        self.answeredBy = target
        self.calleeTag = calleeTag
        self.answeredAt = self._clock()
        self.status = 200
        if self._observers.observers:
            self._observers.tell("callAnswered", self)

    def end(self, cause: str, status: int = 0, detail: str = "") -> bool:
        """
        The call is over: callEnded, once. The observers hear it once what
        runs at the end (L{whenEnded}) is done: once the media handler
        released the call's media and put its final statistics on it
        (at once, unless a relay node has to be asked).

        @param status: the final status the caller got, for a call that
            was never answered.
        @return: whether this ended it (C{False} if it had ended already).
        """
        if self.state == ENDED:
            return False
        self.state = ENDED
        self.endedAt = self._clock()
        if status:
            self.status = status
        self.endCause = cause
        self.endDetail = detail
        onEnd, self._onEnd = self._onEnd, []
        releasing = []
        for f in onEnd:
            try:
                result = f(self)
            except Exception:
                log.failure("Ending {call} failed", call=self)
            else:
                if isinstance(result, Deferred):
                    releasing.append(result)
        if releasing:
            self._reported = DeferredList(releasing, consumeErrors=True).addCallback(lambda _: self._tellEnded())
        else:
            # Reported at once: endReported needs no Deferred of its own.
            self._tellEnded()
        return True

    def _tellEnded(self) -> None:
        if self._observers.observers:
            self._observers.tell("callEnded", self)

    def whenEnded(self, f: Callable[[Call], Deferred[Any] | None]) -> None:
        """
        Run C{f(call)} when the call ends (at once if it has). If it
        returns a L{Deferred}, the observers hear callEnded once it fired
        (or failed).
        """
        if self.state == ENDED:
            f(self)
        else:
            self._onEnd.append(f)

    def endReported(self) -> Deferred[None]:
        """Fires once the observers heard that the call ended (it must have ended)."""
        assert self.state == ENDED, "the call has not ended"
        if self._reported is None:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def fired(result: None) -> None:
            done.callback(None)
            return result

        self._reported.addCallback(fired)
        return done

    @property
    def ended(self) -> bool:
        return self.state == ENDED

    def describe(self) -> dict[str, Any]:
        """The call as plain data (for logs, records and pages)."""
        return {
            "id": self.id,
            "call_id": self.callID,
            "caller": self.caller,
            "caller_kind": self.callerKind,
            "domain": self.domain,
            "caller_source": list(self.callerLeg.source),
            "caller_transport": self.callerLeg.transport,
            "dialled": self.dialled,
            "resolved": list(self.resolved),
            "callee": self.callee,
            "state": self.state,
            "started": self.started,
            "ringing": self.ringingAt,
            "answered": self.answeredAt,
            "ended": self.endedAt,
            "status": self.status,
            "end_cause": self.endCause,
            "end_detail": self.endDetail,
            "recovered": self.recovered,
        }


class CallObservers:
    """
    The L{ICallObserver}s of the service, told of each call event in
    order. An observer that raises is logged and never stops the call
    nor the other observers.
    """

    def __init__(self, observers: Iterable[Any] = ()) -> None:
        self.observers = list(observers)

    def add(self, observer: Any) -> None:
        self.observers.append(observer)

    def tell(self, event: str, call: Call) -> None:
        for observer in self.observers:
            try:
                getattr(observer, event)(call)
            except Exception:
                log.failure("Call observer {observer} failed on {event}", observer=observer, event=event)
