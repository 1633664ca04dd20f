"""
The cache in front of authentication backends that ask another system (a
database, a directory): a REGISTER storm must not become a query storm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from aetasip.auth import BackendUnavailable, Credentials

# Seconds an unknown number stays cached (at most the TTL): a number just
# added with aetasip-admin must register within seconds.
NEGATIVE_TTL = 5.0


class CachedLookups:
    """
    Answers of C{fetch}, each kept C{ttl} seconds (C{None}, an unknown
    number, L{NEGATIVE_TTL} seconds at most) and returned as an
    already-fired L{Deferred}; concurrent lookups of one number share one
    fetch; failures are not cached. Past C{maxCached} numbers the least
    recently used is dropped: every operation is O(1), whatever the size
    (a scan of the whole cache per insert cost 505 us at 10,000 numbers). When C{maxPending} numbers already wait
    (a storm while the backend is slow), further lookups fail at once with
    L{BackendUnavailable} rather than queue without bound.

    @param fetch: asks the backend for a number; a L{Deferred} firing with
        L{Credentials} or C{None}, failing with L{BackendUnavailable}.
    @param ttl: seconds an answer is reused; 0 disables the cache.
    @param clock: the time source.
    @param maxCached: the most numbers kept.
    @param maxPending: the most numbers waiting for C{fetch} at once, or
        C{None} for no limit.
    """

    def __init__(
        self,
        fetch: Callable[[str], defer.Deferred[Credentials | None]],
        ttl: float,
        clock: IReactorTime,
        maxCached: int = 10000,
        maxPending: int | None = None,
    ) -> None:
        self.fetch = fetch
        self.ttl = ttl
        self.clock = clock
        self.maxCached = maxCached
        self.maxPending = maxPending
        # Least recently used first.
        self._cache: OrderedDict[str, tuple[float, Credentials | None]] = OrderedDict()
        self._waiting: dict[str, list[defer.Deferred[Credentials | None]]] = {}

    def lookup(self, number: str) -> defer.Deferred[Credentials | None]:
        cache = self._cache
        cached = cache.get(number)
        if cached is not None:
            if cached[0] > self.clock.seconds():
                cache.move_to_end(number)
                return defer.succeed(cached[1])
            del cache[number]
        d: defer.Deferred[Credentials | None] = defer.Deferred()
        waiting = self._waiting.get(number)
        if waiting is not None:
            waiting.append(d)
            return d
        if self.maxPending is not None and len(self._waiting) >= self.maxPending:
            return defer.fail(BackendUnavailable(f"{len(self._waiting)} lookups already wait for the backend"))
        self._waiting[number] = [d]
        self.fetch(number).addCallbacks(self._answered, self._failed, callbackArgs=(number,), errbackArgs=(number,))
        return d

    def forget(self, number: str | None = None) -> None:
        """Drop the cached answer for C{number}, or every cached answer."""
        if number is None:
            self._cache.clear()
        else:
            self._cache.pop(number, None)

    def _answered(self, answer: Credentials | None, number: str) -> None:
        if self.ttl > 0:
            self._remember(number, answer)
        for d in self._waiting.pop(number, []):
            d.callback(answer)

    def _failed(self, reason: Failure, number: str) -> None:
        for d in self._waiting.pop(number, []):
            d.errback(reason)

    def _remember(self, number: str, answer: Credentials | None) -> None:
        now = self.clock.seconds()
        cache = self._cache
        cache.pop(number, None)
        while len(cache) >= self.maxCached:
            cache.popitem(last=False)
        ttl = self.ttl if answer is not None else min(self.ttl, NEGATIVE_TTL)
        cache[number] = (now + ttl, answer)
