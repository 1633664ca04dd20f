"""
The C{log} call observer (C{calls.observers = ["log"]}): one line in the
service's log when a call is answered and one when it ends, with its
parties, where the caller came from, its duration and its end cause.
"""

from __future__ import annotations

from twisted.logger import Logger
from zope.interface import implementer

from aetasip.calls.call import Call
from aetasip.interfaces import ICallObserver

log = Logger()


@implementer(ICallObserver)
class CallLog:
    """Logs answered and ended calls."""

    def callStarted(self, call: Call) -> None:
        pass

    def callRinging(self, call: Call) -> None:
        pass

    def callAnswered(self, call: Call) -> None:
        log.info(
            "Call {id} {caller} -> {callee} answered ({source[0]}:{source[1]} over {transport})",
            id=call.id,
            caller=call.caller,
            callee=call.callee,
            source=call.callerLeg.source,
            transport=call.callerLeg.transport,
        )

    def callEnded(self, call: Call) -> None:
        log.info(
            "Call {id} {caller} -> {dialled} ended: {cause}{detail} (status {status}, {duration:.0f} s answered)",
            id=call.id,
            caller=call.caller,
            dialled=call.dialled,
            cause=call.endCause,
            detail=f", {call.endDetail}" if call.endDetail else "",
            status=call.status,
            duration=call.duration,
        )
