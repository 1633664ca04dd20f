"""
L{StoreService}: the store in the service tree.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from aetasip.config import Key, declare, storeURL
from aetasip.store.facade import AsyncStore
from aetasip.store.sql import Store

declare(
    Key(
        "store.url",
        "sqlite:///aetasip.db",
        storeURL,
        "The store: a SQLite file (relative to the working directory) or a PostgreSQL URL; a PostgreSQL "
        "URL may name several servers, libpq-style (postgresql://USER:PASSWORD@HOST1:5432,HOST2:5432/"
        "DATABASE?target_session_attrs=read-write): each new connection goes to the first that accepts writes.",
    ),
)

log = Logger()


class StoreService(service.Service):
    """
    Opens the store when it starts and closes it when it stops.

    @ivar store: the L{AsyncStore} the other services use.
    """

    name = "store"

    def __init__(self, url: str, threads: int | None = None, reactor: IReactorFromThreads | None = None) -> None:
        """
        @param url: the C{store.url}.
        @param threads: see L{AsyncStore}.
        """
        self.store = AsyncStore(Store(url), threads=threads, reactor=reactor)

    def startService(self) -> None:
        """
        Open the store and migrate its schema, synchronously: nothing may use
        it before, and a failure (database down, schema too new) must stop
        the start. L{Store.open} does nothing when already open, so
        C{makeService} may open it first to report such a failure early.
        """
        self.store.store.open()
        self.store.start()
        super().startService()
        log.info("Store open: {store}", store=self.store.store.describe())

    def stopService(self) -> defer.Deferred[None]:
        """
        Finish the queries under way, then close the store.
        """
        super().stopService()
        d = self.store.stop()
        d.addCallback(lambda _: log.info("Store closed: {store}", store=self.store.store.describe()))
        return d
