"""
The store in threads: L{AsyncStore} runs L{Store} methods, or any function
of a store, in a thread pool of its own and answers with L{Deferred}s, so
the reactor never waits for the database.

There is one wrapper, L{AsyncStore.run}; the store methods the service
uses are named once each with L{inThreads}, which keeps their signatures
for the type checker: C{asyncStore.credentials(number)} is a
C{Deferred[Credentials | None]}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from aetasip.store.latency import LatencyHistogram
from aetasip.store.models import StoreError
from aetasip.store.sql import Store

_P = ParamSpec("_P")
_R = TypeVar("_R")
_Q = ParamSpec("_Q")
_T = TypeVar("_T")


class inThreads(Generic[_P, _R]):
    """
    A method of L{AsyncStore} that runs the L{Store} method of the same
    name in the store's threads: C{credentials = inThreads(Store.credentials)}.

    The store's method is looked up at each call, so a test may replace it
    on the store.
    """

    def __init__(self, method: Callable[Concatenate[Store, _P], _R]) -> None:
        """
        @param method: the L{Store} method, unbound.
        """
        self.name = method.__name__
        self.__doc__ = f"L{{Store.{self.name}}} in the store's threads."

    @overload
    def __get__(self, instance: None, owner: type[AsyncStore] | None = None) -> inThreads[_P, _R]: ...

    @overload
    def __get__(
        self, instance: AsyncStore, owner: type[AsyncStore] | None = None
    ) -> Callable[_P, defer.Deferred[_R]]: ...

    def __get__(
        self, instance: AsyncStore | None, owner: type[AsyncStore] | None = None
    ) -> inThreads[_P, _R] | Callable[_P, defer.Deferred[_R]]:
        if instance is None:
            return self
        name = self.name

        def call(*args: _P.args, **kwargs: _P.kwargs) -> defer.Deferred[_R]:
            return instance.run(getattr(instance.store, name), *args, **kwargs)

        return call


class AsyncStore:
    """
    A L{Store} whose methods run in a thread pool of their own and return
    L{Deferred}s: the reactor never waits for the database.

    SQLite gets one thread (one writer at a time anyway, and calls then run
    in the order they were made); PostgreSQL several.

    @ivar store: the wrapped L{Store}.
    """

    def __init__(self, store: Store, threads: int | None = None, reactor: IReactorFromThreads | None = None) -> None:
        """
        @param threads: size of the pool; by default 1 for SQLite, 4 otherwise.
        @param reactor: delivers the results; the global reactor by default.
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = cast(IReactorFromThreads, globalReactor)
        if threads is None:
            threads = 1 if store.isSQLite else 4
        self.store = store
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name="aetasip-store")
        self._pending: set[defer.Deferred[Any]] = set()
        self._started = False
        self._stopped = False
        # Who waits for the stop under way; None once it is done.
        self._stopping: list[defer.Deferred[None]] | None = None
        self._closed = False
        self.latency = LatencyHistogram()

    def start(self) -> None:
        """
        Start the threads. Calls made before are queued until then.
        """
        if not self._started:
            self._started = True
            self._pool.start()

    def stop(self) -> defer.Deferred[None]:
        """
        Refuse new calls, wait for the calls under way, close the store's
        connections and stop the threads.

        @return: a L{Deferred} that fires when all that is done.
        """
        self._stopped = True
        if self._closed:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._stopping is not None:
            # A second stop waits for the first (the threads are stopped once).
            self._stopping.append(waiter)
            return waiter
        self._stopping = [waiter]
        defer.Deferred.fromCoroutine(self._stop()).addBoth(self._stoppedWith)
        return waiter

    def _stoppedWith(self, result: object) -> None:
        waiters, self._stopping = self._stopping or [], None
        self._closed = True
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    async def _stop(self) -> None:
        if not self._started:
            self.store.close()
            return
        await defer.DeferredList(list(self._pending))
        try:
            await deferToThreadPool(self._reactor, self._pool, self.store.close)
        finally:
            self._pool.stop()

    def run(self, f: Callable[_Q, _T], *args: _Q.args, **kwargs: _Q.kwargs) -> defer.Deferred[_T]:
        """
        Call C{f(*args, **kwargs)} in the store's threads: a L{Store} method
        or a function using the store, such as a method of
        L{aetasip.store.provisioning.Provisioning} on L{store}.

        @return: a L{Deferred} of its result; it fails with L{StoreError}
            once L{stop} was called.
        """
        if self._stopped:
            return defer.fail(StoreError("the store is stopped"))
        started = time.perf_counter()
        d = deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)
        self._pending.add(d)

        def done(result: _T) -> _T:
            self._pending.discard(d)
            self.latency.observe(time.perf_counter() - started, isinstance(result, Failure))
            return result

        d.addBoth(done)
        return d

    open = inThreads(Store.open)

    addAccount = inThreads(Store.addAccount)
    getAccount = inThreads(Store.getAccount)
    listAccounts = inThreads(Store.listAccounts)
    setPassword = inThreads(Store.setPassword)
    setPortalPassword = inThreads(Store.setPortalPassword)
    updateAccount = inThreads(Store.updateAccount)
    deleteAccount = inThreads(Store.deleteAccount)
    credentials = inThreads(Store.credentials)
    checkPortalPassword = inThreads(Store.checkPortalPassword)

    addGroup = inThreads(Store.addGroup)
    getGroup = inThreads(Store.getGroup)
    listGroups = inThreads(Store.listGroups)
    updateGroup = inThreads(Store.updateGroup)
    deleteGroup = inThreads(Store.deleteGroup)
    allocate = inThreads(Store.allocate)
    setAccountGroup = inThreads(Store.setAccountGroup)
    groupMembers = inThreads(Store.groupMembers)
    huntingSeries = inThreads(Store.huntingSeries)

    saveBindings = inThreads(Store.saveBindings)
    deleteBindings = inThreads(Store.deleteBindings)
    expireBindings = inThreads(Store.expireBindings)
    expireOrphanBinding = inThreads(Store.expireOrphanBinding)
    expireOrphanBindings = inThreads(Store.expireOrphanBindings)
    bindingsOf = inThreads(Store.bindingsOf)
    loadBindings = inThreads(Store.loadBindings)
    bindingsFor = inThreads(Store.bindingsFor)
    allBindings = inThreads(Store.allBindings)

    secret = inThreads(Store.secret)

    writeCallRecords = inThreads(Store.writeCallRecords)
    closeOpenCallRecords = inThreads(Store.closeOpenCallRecords)
    closeFailedOverCallRecords = inThreads(Store.closeFailedOverCallRecords)
    closedCallRecords = inThreads(Store.closedCallRecords)
    ringingElsewhere = inThreads(Store.ringingElsewhere)
    recordHeartbeat = inThreads(Store.recordHeartbeat)
    callRecords = inThreads(Store.callRecords)
    callRecordPage = inThreads(Store.callRecordPage)

    queueMail = inThreads(Store.queueMail)
    claimDueMail = inThreads(Store.claimDueMail)
    markMailSent = inThreads(Store.markMailSent)
    markMailFailed = inThreads(Store.markMailFailed)
    outbox = inThreads(Store.outbox)
    mailCounts = inThreads(Store.mailCounts)
    getMail = inThreads(Store.getMail)
    queueQuarterlyLog = inThreads(Store.queueQuarterlyLog)
    quarterlyLogMade = inThreads(Store.quarterlyLogMade)

    announceNode = inThreads(Store.announceNode)
    announceCallEnded = inThreads(Store.announceCallEnded)
    listNodes = inThreads(Store.listNodes)
    getNode = inThreads(Store.getNode)
    requestDrain = inThreads(Store.requestDrain)
    forgetNode = inThreads(Store.forgetNode)

    addAdminToken = inThreads(Store.addAdminToken)
    listAdminTokens = inThreads(Store.listAdminTokens)
    deleteAdminToken = inThreads(Store.deleteAdminToken)
    adminTokenDigests = inThreads(Store.adminTokenDigests)
