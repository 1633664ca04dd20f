"""
The L{aetasip.routing.Directory} of the running service, over the store.

Routing decides synchronously, so L{StoreDirectory} keeps an in-memory
snapshot of the accounts (number, kind, group) and groups, read with one
query each through the L{AsyncStore} and read again every
C{refreshInterval} seconds, so that what C{aetasip-admin} changes reaches
the running service. Each load replaces the whole snapshot at once: a
lookup never sees half of one.
"""

from __future__ import annotations

import attrs
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aetasip import routing, store

log = Logger()

DEFAULT_REFRESH_INTERVAL = 30.0
"""Seconds between two loads of the snapshot."""


@attrs.frozen
class Snapshot:
    """
    The accounts and groups at one moment.

    @ivar accounts: number -> account.
    @ivar groups: prefix -> group.
    @ivar series: prefix -> the numbers of its hunting series, in order.
    """

    accounts: dict[str, routing.Account] = attrs.field(factory=dict)
    groups: dict[str, routing.Group] = attrs.field(factory=dict)
    series: dict[str, list[str]] = attrs.field(factory=dict)


def routingGroup(group: store.Group) -> routing.Group:
    """
    What routing knows of the stored C{group}.
    """
    return routing.Group(
        prefix=group.prefix,
        contact=group.contact,
        incomingBlock=group.incomingBlock,
        outgoingBlock=group.outgoingBlock,
        hunting=group.hunting,
        quarterlyLog=group.quarterlyLog,
        selfCare=group.selfCare,
        relay=group.relay,
    )


def makeSnapshot(accounts: list[store.Account], groups: list[store.Group]) -> Snapshot:
    """
    The snapshot of the stored C{accounts} and C{groups}.
    """
    series: dict[str, list[str]] = {}
    for account in sorted(accounts, key=lambda a: (len(a.number), a.number)):
        if account.kind == "hunting" and account.group is not None:
            series.setdefault(account.group, []).append(account.number)
    return Snapshot(
        accounts={a.number: routing.Account(a.number, a.kind, a.group, a.relay) for a in accounts},
        groups={g.prefix: routingGroup(g) for g in groups},
        series=series,
    )


class StoreDirectory:
    """
    A L{routing.Directory} read from an L{AsyncStore}, refreshed
    periodically. Empty until the first L{load} has finished.

    @ivar refreshInterval: seconds between two loads.
    @ivar loadedAt: the clock's time of the last successful load, or C{None}.
    """

    def __init__(
        self,
        asyncStore: store.AsyncStore,
        refreshInterval: float = DEFAULT_REFRESH_INTERVAL,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param asyncStore: where the accounts and groups are.
        @param refreshInterval: seconds between two loads.
        @param clock: schedules the loads; the global reactor by default.
        """
        self._store = asyncStore
        self.refreshInterval = refreshInterval
        self._snapshot = Snapshot()
        self._loop = task.LoopingCall(self._refresh)
        if clock is not None:
            self._loop.clock = clock
        self.loadedAt: float | None = None
        self._started = False
        self._loading: defer.Deferred[None] | None = None
        self._stopping: list[defer.Deferred[None]] = []

    @property
    def clock(self) -> IReactorTime:
        """
        The clock of the periodic loads (settable, for tests).
        """
        return self._loop.clock

    @clock.setter
    def clock(self, clock: IReactorTime) -> None:
        self._loop.clock = clock

    # -- the Directory protocol

    def account(self, number: str) -> routing.Account | None:
        """
        The account C{number}, or C{None}.
        """
        return self._snapshot.accounts.get(number)

    def group(self, prefix: str) -> routing.Group | None:
        """
        The group C{prefix}, or C{None}.
        """
        return self._snapshot.groups.get(prefix)

    def huntingSeries(self, prefix: str) -> list[str]:
        """
        The hunting accounts of group C{prefix} (prefix+6001, 6002, …), in order.
        """
        return list(self._snapshot.series.get(prefix, ()))

    # -- loading

    def load(self) -> defer.Deferred[None]:
        """
        Read the accounts and the groups, and replace the snapshot with them.

        @return: a L{Deferred} that fires when the snapshot is replaced, or
            fails (the snapshot is then kept) when the store fails.
        """
        return defer.Deferred.fromCoroutine(self._load())

    async def _load(self) -> None:
        accounts = await self._store.listAccounts()
        groups = await self._store.listGroups()
        self._snapshot = makeSnapshot(accounts, groups)
        self.loadedAt = self.clock.seconds()

    def _refresh(self) -> defer.Deferred[None]:
        def failed(failure: Failure) -> None:
            log.failure("Could not load the accounts and groups; routing keeps the previous ones", failure)

        def over(result: None) -> None:
            self._loading = None
            for waiting in self._stopping:
                waiting.callback(None)
            self._stopping = []

        loading = self.load().addErrback(failed)
        self._loading = loading
        loading.addBoth(over)
        return loading

    def start(self) -> defer.Deferred[None]:
        """
        Load now, then every L{refreshInterval} seconds.

        @return: a L{Deferred} that fires when the first load is over,
            successful or not (a failure is logged, and the next load tries again).
        """
        if self._started:
            return defer.succeed(None)
        self._started = True

        def loop(ignored: None) -> None:
            if self._started and not self._loop.running:
                self._loop.start(self.refreshInterval, now=False)

        return self._refresh().addCallback(loop)

    def stop(self) -> defer.Deferred[None]:
        """
        Stop the periodic loads; the snapshot stays as it is.

        @return: a L{Deferred} that fires once the load in progress, if
            any, is over: the store must not close under it.
        """
        self._started = False
        if self._loop.running:
            self._loop.stop()
        if self._loading is None:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._stopping.append(waiting)
        return waiting

    def service(self) -> DirectoryService:
        """
        A service that starts and stops the periodic loads.
        """
        return DirectoryService(self)


class DirectoryService(service.Service):
    """
    Starts a L{StoreDirectory}'s loads with the service, stops them with it.
    Put it after the store's service in the tree.

    @ivar directory: the L{StoreDirectory}.
    @ivar ready: fires when the first load is over.
    """

    name = "directory"

    def __init__(self, directory: StoreDirectory) -> None:
        self.directory = directory
        self.ready: defer.Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        log.info(
            "Directory: accounts and groups for routing read from the store every {interval:g} s",
            interval=self.directory.refreshInterval,
        )
        self.ready = self.directory.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        d = self.directory.stop()
        d.addCallback(lambda _: log.info("Directory stopped"))
        return d
