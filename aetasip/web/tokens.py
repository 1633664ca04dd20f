"""
L{StoreTokens}: the admin API's bearer tokens kept in the store
(C{aetasip-admin token add}), as the API checks them.

The digests are read from the store when a request brings a token that
is not one of the configuration's, at most once every L{MAX_AGE} seconds
(requests that come while a read is under way wait for it): a token
deleted with C{aetasip-admin token del} is refused, and a new one accepted,
within L{MAX_AGE} seconds, on every server of the store, without a
periodic task. When the store does not answer, store tokens are refused
(the configuration's still work). The time each token was last accepted
is written with the next read.

A token is found by its SHA-256 digest in a dictionary: the time of the
look-up depends on the digest, which the caller cannot steer toward a
stored one without knowing a token, so it says nothing of the tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip.store import AsyncStore

log = Logger()

MAX_AGE = 2.0
"""Seconds the digests read from the store are used before they are read again."""


class StoreTokens:
    """
    The tokens of the store, read again when older than C{maxAge} seconds.

    @ivar store: the service's L{AsyncStore}.
    @ivar clock: the time in seconds (C{reactor.seconds}).
    """

    def __init__(self, store: AsyncStore, clock: Callable[[], float], maxAge: float = MAX_AGE) -> None:
        self.store = store
        self.clock = clock
        self.maxAge = maxAge
        self._digests: dict[bytes, str] = {}
        self._readAt: float | None = None
        self._waiters: list[Deferred[None]] | None = None
        self._used: dict[str, float] = {}
        self._failing = False

    async def find(self, digest: bytes) -> str | None:
        """
        @param digest: the SHA-256 digest of the token a request brought.
        @return: the name of the store's token of that digest, or C{None}.
        """
        now = self.clock()
        if self._readAt is None or not 0 <= now - self._readAt < self.maxAge:
            await self._read()
        name = self._digests.get(digest)
        if name is not None:
            self._used[name] = now
        return name

    def _read(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        used, self._used = self._used, {}
        started = self.clock()
        d = self.store.adminTokenDigests(used)

        def read(digests: dict[bytes, str]) -> None:
            self._digests, self._readAt = digests, started
            if self._failing:
                self._failing = False
                log.info("Admin API: the store's tokens are read again")

        def failed(failure: Failure) -> None:
            # Refused until the store answers: a deleted token must not live on.
            self._digests, self._readAt = {}, None
            self._used = {**used, **self._used}
            if not self._failing:
                self._failing = True
                log.warn(
                    "Admin API: cannot read the store's tokens ({error}); they are refused until it answers",
                    error=failure.getErrorMessage() or repr(failure.value),
                )

        def done(_: object) -> None:
            waiters, self._waiters = self._waiters or [], None
            for w in waiters:
                w.callback(None)

        d.addCallbacks(read, failed).addBoth(done)
        return waiter
