"""
L{LocationSyncService}: the location of this server kept current with the
other servers' changes, on a PostgreSQL store (see L{aetasip.cluster}).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from aetasip.cluster.listener import NotificationListener
from aetasip.cluster.locationsync import LocationSync
from aetasip.location import LocationService
from aetasip.store.schema import BINDINGS_CHANNEL

log = Logger()


class LocationSyncService(service.Service):
    """
    Listens to the binding changes PostgreSQL announces and applies the
    other servers' to C{location}.

    @ivar sync: the L{LocationSync}.
    @ivar listener: the L{NotificationListener}.
    """

    name = "location-sync"

    def __init__(self, location: LocationService, url: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.sync = LocationSync(location, reactor)
        self.listener = NotificationListener(
            url, [BINDINGS_CHANNEL], self._notified, self.sync.connected, self._disconnected, reactor
        )

    def _notified(self, channel: str, payload: str) -> None:
        self.sync.notified(payload)

    def _disconnected(self, reason: str) -> None:
        log.warn("Binding changes of other servers are not heard until the store answers again")

    def startService(self) -> None:
        super().startService()
        self.listener.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.sync.stop()
        return self.listener.stop()
