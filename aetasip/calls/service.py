"""
C{CallService}: the calls' place in the service tree. It starts and stops
the call observers and the media handler that are services of their own
(call records flushing to the store, a relay's ports), and when the
service stops it ends the calls in progress (end cause C{server
shutdown}) before them, so that they hear every call end.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from aetasip.calls.proxy import Proxy

log = Logger()


class CallService(service.MultiService):
    """
    @param proxy: the proxy whose calls end when the service stops.
    @param parts: the observers and media handler; those providing
        L{service.IService} become children, started and stopped with it.
    """

    name = "calls"

    def __init__(self, proxy: Proxy, parts: list[Any]) -> None:
        super().__init__()
        self.proxy = proxy
        for part in parts:
            if service.IService.providedBy(part):
                part.setServiceParent(self)

    def startService(self) -> None:
        log.info(
            "Calls: at most {dialogs} dialogs; parts: {parts}",
            dialogs=self.proxy.settings.maxDialogs,
            parts=", ".join(str(child.name) for child in self) or "none",
        )
        super().startService()

    def stopService(self) -> Deferred[None]:
        # The observers hear every call end (the media handler released
        # their media first) before any part stops.
        d = self.proxy.stop()
        d.addCallback(lambda _: super(CallService, self).stopService())
        return d.addCallback(lambda _: log.info("Calls stopped"))
