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
from aetasip.auth.cache import CachedLookups
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend
from aetasip.store import AsyncStore, StoreError

log = Logger()


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
        maxPending: int = 1000,
    ) -> None:
        """
        @param store: the service's store.
        @param cacheTTL: seconds an answer is reused; 0 disables the cache.
        @param clock: the time source of the cache; the reactor by default.
        @param maxCached: the most numbers kept in the cache.
        @param maxPending: the most numbers waiting for the store at once;
            beyond, lookups fail at once with L{BackendUnavailable} (503
            with Retry-After) instead of queueing without bound.
        """
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self._store = store
        self.cache = CachedLookups(self._fetch, cacheTTL, clock, maxCached, maxPending)

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        """
        See L{IAuthBackend.credentials}.
        """
        return self.cache.lookup(number)

    def forget(self, number: str | None = None) -> None:
        """
        Drop the cached answer for C{number}, or every cached answer.
        """
        self.cache.forget(number)

    def _fetch(self, number: str) -> defer.Deferred[Credentials | None]:
        return self._store.credentials(number).addErrback(self._failed, number)

    def _failed(self, reason: Failure, number: str) -> Failure:
        if reason.check(SQLAlchemyError, StoreError):
            log.failure("Cannot read the credentials of {number} from the store", reason, number=number)
            problem = (reason.getErrorMessage().splitlines() or [type(reason.value).__name__])[0]
            return Failure(BackendUnavailable(f"store: {problem}"))
        return reason


def makeSQLBackend(options: dict[str, Any], store: AsyncStore | None) -> SQLAuthBackend:
    """
    The C{sql} backend for L{aetasip.auth.chain.makeAuthBackend}.

    @param options: the backend options; C{cache_ttl} (seconds),
        C{cache_size} (numbers) and C{max_pending} (lookups waiting for the
        store), when present.
    @raise ConfigError: without a store.
    """
    if store is None:
        raise ConfigError("auth.backends", "sql", "a list naming 'sql' only when the service has a store")
    return SQLAuthBackend(
        store,
        cacheTTL=float(options.get("cache_ttl", 60.0)),
        maxCached=int(options.get("cache_size", 10000)),
        maxPending=int(options.get("max_pending", 1000)),
    )
