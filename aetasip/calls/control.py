"""
What the rest of the service may do with calls, without reaching into the
proxy: list them, find one, end one. The relay ends a call whose media
stopped, the test line and the admin API release sessions, the portal
lists them; they all get a L{CallControl}, never the L{Proxy}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import implementer

from aetasip.calls.call import Call, EndCause
from aetasip.interfaces import ICallControl

if TYPE_CHECKING:
    from aetasip.calls.proxy import Proxy, RingingLookup


@implementer(ICallControl)
class CallControl:
    """L{ICallControl} over a L{Proxy}."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def active(self) -> list[Call]:
        return self._proxy.activeCalls()

    def find(self, callID: str) -> list[Call]:
        return [call for call in self._proxy.calls.values() if call.callID == callID]

    def release(self, call: Call, cause: str = EndCause.OPERATOR_RELEASE, detail: str = "") -> None:
        self._proxy.release(call, cause, detail)

    def endedElsewhere(self, call: Call, cause: str, detail: str = "") -> None:
        self._proxy.endedElsewhere(call, cause, detail)

    def probe(self, enabled: bool) -> None:
        self._proxy.liveness.probing = enabled

    def lookForCallsRingingElsewhere(self, lookup: RingingLookup | None) -> None:
        self._proxy.ringingElsewhere = lookup
