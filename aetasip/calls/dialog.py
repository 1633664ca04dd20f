"""
Dialogs the proxy set up (RFC 3261 section 12), and the table that finds
them by Call-ID and tags.

Only a dialog of this table (or one rebuilt from a signed token, see
L{aetasip.calls.token}) lets an in-dialog request, an ACK for a 2xx or a
stray 2xx through: each goes to the *other* leg of its dialog, at the
address that leg's signalling comes from, never where the message itself
says.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

from aetasip.calls.call import Call, Leg

EARLY = "early"
CONFIRMED = "confirmed"
TERMINATED = "terminated"

CALLER = "caller"
CALLEE = "callee"


class Dialog:
    """
    One dialog between a caller and a callee through this proxy.

    @ivar method: what created it: C{INVITE}, C{SUBSCRIBE} or C{REFER}.
    @ivar call: the L{Call} of an INVITE dialog (C{None} for subscriptions).
    @ivar key: the branch (L{aetasip.calls.call.Target} key) it came from.
    @ivar legs: the caller's and the callee's L{Leg}, by side.
    @ivar cseq: the highest CSeq number each side sent, by side (0: none yet).
    @ivar routes: the Route set towards each side beyond this proxy (Record-Route
        entries other proxies added), by side, in sending order, once worked out.
    @ivar expires: for a subscription dialog, the clock time it lapses.
    @ivar answer: for a dialog rebuilt here from the 2xx that answered its
        call (another server forwarded the INVITE), the body that 2xx had
        when it went to the caller (its retransmissions get the same), or
        C{b""} while the media handler works on it; else C{None}.
    """

    __slots__ = (
        "answer",
        "call",
        "callID",
        "calleeTag",
        "callerTag",
        "cseq",
        "expires",
        "key",
        "legs",
        "method",
        "recordRoute",
        "routes",
        "state",
        "uris",
    )

    def __init__(
        self,
        method: str,
        callID: str,
        callerTag: str,
        calleeTag: str,
        callerLeg: Leg,
        calleeLeg: Leg,
        key: str,
        call: Call | None = None,
        state: str = EARLY,
    ) -> None:
        self.method = method
        self.callID = callID
        self.callerTag = callerTag
        self.calleeTag = calleeTag
        self.legs = {CALLER: callerLeg, CALLEE: calleeLeg}
        self.key = key
        self.call = call
        self.state = state
        self.cseq = {CALLER: 0, CALLEE: 0}
        # The Record-Route values of the answer, and the Route sets towards
        # each side they give (worked out when first needed).
        self.recordRoute: list[str] = []
        self.routes: dict[str, list[str]] | None = None
        self.expires: float | None = None
        self.answer: bytes | None = None
        # The numbers at each end (From and To users), for the requests
        # the proxy makes in the dialog's name (probes, BYE).
        self.uris: dict[str, object] = {CALLER: "", CALLEE: ""}

    def __repr__(self) -> str:
        return f"<Dialog {self.method} {self.callID} {self.callerTag}/{self.calleeTag} {self.state}>"

    def sideOf(self, fromTag: str | None) -> str | None:
        """Which side sent a request whose From tag is C{fromTag}."""
        if fromTag == self.callerTag:
            return CALLER
        if fromTag == self.calleeTag:
            return CALLEE
        return None

    @staticmethod
    def other(side: str) -> str:
        return CALLEE if side == CALLER else CALLER

    def sent(self, side: str, cseq: int) -> None:
        """C{side} sent a request with CSeq number C{cseq}."""
        if cseq > self.cseq[side]:
            self.cseq[side] = cseq


ENDED_MEMORY = 900.0
"""
Seconds a dialog that ended is remembered (L{DialogTable.ended}): its
late requests get 481 instead of rebuilding it from the signed token of
their Route. Long enough for every retransmission of its last
transactions (64*T1, 32 s) and for a session refresh from an agent that
missed the BYE (half of RFC 4028's default interval of 1800 s).
"""


# The callee tag under which a call cancelled here is remembered: no real tag has a NUL.
_EVERY_CALLEE = "\0"


class DialogTable:
    """
    The dialogs in progress, by C{(Call-ID, caller tag, callee tag)}, and
    those that ended in this process lately.

    Bounded: past C{limit} dialogs the oldest is forgotten (its calls keep
    working through the signed tokens in their Route headers). The ended
    dialogs are kept for C{endedFor} seconds, at most C{limit} of them:
    a dialog that ended here must not come back as a call "recovered"
    from its token (the recovery is for a restart or a backup server, whose
    table starts empty).
    """

    def __init__(
        self, limit: int = 100_000, clock: Callable[[], float] | None = None, endedFor: float = ENDED_MEMORY
    ) -> None:
        self.limit = limit
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}
        self._clock = clock
        self.endedFor = endedFor
        # When each ended dialog is forgotten, oldest first.
        self._ended: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def add(self, dialog: Dialog) -> Dialog:
        """Keep C{dialog}; one with the same identifiers already kept wins."""
        key = (dialog.callID, dialog.callerTag, dialog.calleeTag)
        existing = self._dialogs.get(key)
        if existing is not None:
            return existing
        if len(self._dialogs) >= self.limit:
            del self._dialogs[next(iter(self._dialogs))]
        self._dialogs[key] = dialog
        return dialog

    def find(self, callID: str, fromTag: str | None, toTag: str | None) -> Dialog | None:
        """The dialog of a message with these identifiers, whichever side sent it."""
        if fromTag is None or toTag is None:
            return None
        dialogs = self._dialogs
        return dialogs.get((callID, fromTag, toTag)) or dialogs.get((callID, toTag, fromTag))

    def remove(self, dialog: Dialog) -> None:
        """C{dialog} ended: it goes, and is remembered as ended (L{ended})."""
        dialog.state = TERMINATED
        key = (dialog.callID, dialog.callerTag, dialog.calleeTag)
        if self._dialogs.get(key) is dialog:
            del self._dialogs[key]
        self.endedHere(dialog.callID, dialog.callerTag, dialog.calleeTag)

    def endedHere(self, callID: str, callerTag: str, calleeTag: str) -> None:
        """The dialog of these identifiers ended in this process (kept or not in the table)."""
        if self._clock is None:
            return
        now = self._clock()
        key = (callID, callerTag, calleeTag)
        self._ended.pop(key, None)
        self._ended[key] = now + self.endedFor
        self._forget(now)

    def _forget(self, now: float) -> None:
        """Forget the oldest ended dialogs: those past their time, and any beyond the bound."""
        ended = self._ended
        while ended:
            oldest, until = next(iter(ended.items()))
            if until > now and len(ended) <= self.limit:
                break
            del ended[oldest]

    def ended(self, callID: str, fromTag: str | None, toTag: str | None) -> bool:
        """Did the dialog of a message with these identifiers end here lately (either side sending)?"""
        if fromTag is None or toTag is None or self._clock is None or not self._ended:
            return False
        self._forget(self._clock())
        ended = self._ended
        return (callID, fromTag, toTag) in ended or (callID, toTag, fromTag) in ended

    def cancelledHere(self, callID: str, callerTag: str) -> None:
        """
        The caller of a call another server set up cancelled it here: its
        dialogs are not rebuilt from their tokens (L{cancelled}).
        """
        self.endedHere(callID, callerTag, _EVERY_CALLEE)

    def cancelled(self, callID: str, callerTag: str) -> bool:
        """Did the caller of this call cancel it here lately (L{cancelledHere})?"""
        return self.ended(callID, callerTag, _EVERY_CALLEE)

    def clear(self) -> None:
        """Every dialog goes, and the memory of ended ones with them (the service stops: as after a restart)."""
        for dialog in list(self._dialogs.values()):
            dialog.state = TERMINATED
        self._dialogs.clear()
        self._ended.clear()
