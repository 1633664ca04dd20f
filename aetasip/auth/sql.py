"""
The C{sql} authentication backend: accounts in the service's store.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aetasip.auth import BackendUnavailable, Credentials
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend
from aetasip.store import AsyncStore, StoreError

log = Logger()

# Seconds an unknown number stays cached (at most cacheTTL).
NEGATIVE_TTL = 5.0


@implementer(IAuthBackend)
class SQLAuthBackend:
    """
    Credentials from the C{accounts} table, through a short-lived cache.

    A registration storm (every codec of a region re-registering after an
    outage, or a scanner) would otherwise query the database for each
    REGISTER and each challenge answer: an answer, C{None} included, is
    kept for C{cacheTTL} seconds, concurrent lookups of one number share
    one query, and a cached answer is an already-fired L{Deferred}. A
    password changed by the admin CLI is therefore seen within C{cacheTTL}.
    Errors are not cached.
    """

    name = "sql"

    def __init__(
        self,
        store: AsyncStore,
        cacheTTL: float = 60.0,
        clock: IReactorTime | None = None,
        maxCached: int = 10000,
    ) -> None:
        """
        @param store: the service's store.
        @param cacheTTL: seconds an answer is reused; 0 disables the cache.
        @param clock: the time source of the cache; the reactor by default.
        @param maxCached: the most numbers kept in the cache.
        """
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self._store = store
        self._ttl = cacheTTL
        self._clock = clock
        self._maxCached = maxCached
        self._cache: dict[str, tuple[float, Credentials | None]] = {}
        self._waiting: dict[str, list[defer.Deferred[Credentials | None]]] = {}

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        """
        See L{IAuthBackend.credentials}.
        """
        cached = self._cache.get(number)
        if cached is not None:
            if cached[0] > self._clock.seconds():
                return defer.succeed(cached[1])
            del self._cache[number]
        d: defer.Deferred[Credentials | None] = defer.Deferred()
        waiting = self._waiting.get(number)
        if waiting is not None:
            waiting.append(d)
            return d
        self._waiting[number] = [d]
        self._store.credentials(number).addCallbacks(
            self._answered, self._failed, callbackArgs=(number,), errbackArgs=(number,)
        )
        return d

    def forget(self, number: str | None = None) -> None:
        """
        Drop the cached answer for C{number}, or every cached answer.
        """
        if number is None:
            self._cache.clear()
        else:
            self._cache.pop(number, None)

    def _answered(self, answer: Credentials | None, number: str) -> None:
        if self._ttl > 0:
            self._remember(number, answer)
        for d in self._waiting.pop(number, []):
            d.callback(answer)

    def _failed(self, reason: Failure, number: str) -> None:
        if reason.check(SQLAlchemyError, StoreError):
            log.failure("Cannot read the credentials of {number} from the store", reason, number=number)
            problem = (reason.getErrorMessage().splitlines() or [type(reason.value).__name__])[0]
            reason = Failure(BackendUnavailable(f"store: {problem}"))
        for d in self._waiting.pop(number, []):
            d.errback(reason)

    def _remember(self, number: str, answer: Credentials | None) -> None:
        now = self._clock.seconds()
        if len(self._cache) >= self._maxCached:
            for key in [key for key, (until, _) in self._cache.items() if until <= now]:
                del self._cache[key]
            while len(self._cache) >= self._maxCached:
                del self._cache[next(iter(self._cache))]
        # An unknown number is remembered briefly only: a number just added
        # with aetasip-admin must register within seconds.
        ttl = self._ttl if answer is not None else min(self._ttl, NEGATIVE_TTL)
        self._cache[number] = (now + ttl, answer)


def makeSQLBackend(options: dict[str, Any], store: AsyncStore | None) -> SQLAuthBackend:
    """
    The C{sql} backend for L{aetasip.auth.chain.makeAuthBackend}.

    @param options: the backend options; C{cache_ttl} (seconds), if present,
        sets the cache lifetime.
    @raise ConfigError: without a store.
    """
    if store is None:
        raise ConfigError("auth.backends", "sql", "a list naming 'sql' only when the service has a store")
    return SQLAuthBackend(store, cacheTTL=float(options.get("cache_ttl", 60.0)))
