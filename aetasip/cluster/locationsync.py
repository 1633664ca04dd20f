"""
L{LocationSync}: the bindings other servers of the cluster change, applied
to this server's location service.

PostgreSQL announces every change of a binding row (a trigger, see
L{aetasip.store.schema.BINDINGS_CHANNEL}) with the writer's origin and the
number. This server's own changes (its origin) are ignored; for the
others, the numbers are gathered for L{BATCH_DELAY} seconds and their
bindings read again in one query (L{LocationService.reload}). After a
(re)connection of the listener every binding is read again, since what
was announced meanwhile is lost. A read that fails is tried again every
L{RETRY_DELAY} seconds. Sans-IO: notifications come in as strings, time
from the injected clock.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from aetasip.location import LocationService

log = Logger()

BATCH_DELAY = 0.05
"""Seconds during which announced numbers are gathered into one read."""

RETRY_DELAY = 1.0
"""Seconds before a failed read is tried again."""


def newOrigin() -> str:
    """A random name for this server's writes, new at each start."""
    return os.urandom(8).hex()


class LocationSync:
    """
    Keeps a L{LocationService} current with the other servers' changes.

    @ivar reloads: reads of the store made so far (for tests and metrics).
    """

    def __init__(self, location: LocationService, clock: IReactorTime, origin: str | None = None) -> None:
        self.location = location
        self.clock = clock
        self.origin = origin or newOrigin()
        location.origin = self.origin
        self.reloads = 0
        self._numbers: set[str] = set()
        self._everything = False
        self._timer: IDelayedCall | None = None
        self._reading = False
        self._stopped = False

    def notified(self, payload: str) -> None:
        """A change was announced with C{payload} (JSON: C{origin}, C{aor})."""
        try:
            change = json.loads(payload)
            origin, aor = change["origin"], change["aor"]
            if not isinstance(origin, str) or not isinstance(aor, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            log.warn("Unreadable binding change notification {payload!r}: reading every binding", payload=payload[:200])
            self._everything = True
            self._schedule(BATCH_DELAY)
            return
        if origin == self.origin:
            return
        self._numbers.add(aor)
        self._schedule(BATCH_DELAY)

    def connected(self) -> None:
        """The listener listens (again): read everything."""
        self._everything = True
        self._schedule(0)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self, delay: float) -> None:
        if self._stopped or self._reading or self._timer is not None:
            return
        self._timer = self.clock.callLater(delay, self._read)

    def _read(self) -> None:
        self._timer = None
        if self._everything:
            numbers: set[str] | None = None
        else:
            numbers = self._numbers
        self._everything, self._numbers = False, set()
        self._reading = True
        self.reloads += 1
        d = self.location.reload(numbers)

        def failed(failure: Any) -> object:
            log.warn(
                "Cannot read the bindings other servers changed ({reason}); trying again",
                reason=failure.getErrorMessage(),
            )
            if numbers is None:
                self._everything = True
            else:
                self._numbers |= numbers
            return _FAILED

        def done(result: object) -> None:
            self._reading = False
            if self._everything or self._numbers:
                self._schedule(RETRY_DELAY if result is _FAILED else BATCH_DELAY)

        d.addErrback(failed)
        d.addCallback(done)


_FAILED = object()
