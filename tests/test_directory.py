"""
Tests for L{aetasip.directory}: the routing directory over a real SQLite
store, refreshed on a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from aetasip import routing
from aetasip.directory import DEFAULT_REFRESH_INTERVAL, DirectoryService, StoreDirectory
from aetasip.store import AsyncStore, StoreError
from tests.test_store import SQLiteURLs

REALM = "aetasip"


def isDirectory(directory: routing.Directory) -> routing.Directory:
    """
    Type-checks that C{directory} implements the L{routing.Directory} protocol.
    """
    return directory


class StoreDirectoryTests(SQLiteURLs, TestCase):
    """
    L{StoreDirectory} over a SQLite store with the group 4567 (hunting on,
    two members) and a few accounts outside any group.
    """

    def setUp(self) -> None:
        self.store = self.openStore()
        self.store.addGroup("4567", "tech@example.net", outgoingBlock=True, hunting=True)
        self.store.allocate("4567", 2, realm=REALM)
        self.store.addAccount("45995005", "premium", "secret", REALM)
        self.store.addAccount("902080", "factory", "secret", REALM)
        self.store.addAccount("15000", "test", "secret", REALM)
        self.threaded = AsyncStore(self.store)
        self.threaded.start()
        self.addCleanup(self.threaded.stop)
        self.clock = task.Clock()
        self.directory = StoreDirectory(self.threaded, refreshInterval=10.0, clock=self.clock)
        self.addCleanup(self.directory.stop)

    @defer.inlineCallbacks
    def test_lookups_after_load(self):  # type: ignore[no-untyped-def]
        directory = isDirectory(self.directory)
        self.assertIsNone(directory.account("45675001"))
        yield self.directory.load()
        self.assertEqual(directory.account("45675001"), routing.Account("45675001", "premium", "4567"))
        self.assertEqual(directory.account("45676002"), routing.Account("45676002", "hunting", "4567"))
        self.assertEqual(directory.account("45995005"), routing.Account("45995005", "premium", None))
        self.assertEqual(directory.account("902080"), routing.Account("902080", "factory", None))
        self.assertIsNone(directory.account("45675003"))
        self.assertEqual(
            directory.group("4567"),
            routing.Group("4567", "tech@example.net", outgoingBlock=True, hunting=True, selfCare=True),
        )
        self.assertIsNone(directory.group("4599"))
        self.assertEqual(directory.huntingSeries("4567"), ["45676001", "45676002"])
        self.assertEqual(directory.huntingSeries("4599"), [])
        self.assertEqual(self.directory.loadedAt, 0.0)

    @defer.inlineCallbacks
    def test_series_is_a_copy(self):  # type: ignore[no-untyped-def]
        yield self.directory.load()
        self.directory.huntingSeries("4567").clear()
        self.assertEqual(self.directory.huntingSeries("4567"), ["45676001", "45676002"])

    @defer.inlineCallbacks
    def test_changes_arrive_with_the_next_refresh(self):  # type: ignore[no-untyped-def]
        yield self.directory.start()
        self.assertIsNotNone(self.directory.account("45675002"))
        self.store.updateGroup("4567", incomingBlock=True)
        self.store.allocate("4567", 1, realm=REALM)
        self.store.deleteAccount("45995005")
        self.clock.advance(9.9)
        yield self.waitForLoad()
        self.assertIsNone(self.directory.account("45675003"))
        self.clock.advance(0.1)
        yield self.waitForLoad()
        self.assertEqual(self.directory.account("45675003"), routing.Account("45675003", "premium", "4567"))
        self.assertEqual(self.directory.huntingSeries("4567"), ["45676001", "45676002", "45676003"])
        group = self.directory.group("4567")
        assert group is not None
        self.assertTrue(group.incomingBlock)
        self.assertIsNone(self.directory.account("45995005"))
        self.assertEqual(self.directory.loadedAt, 10.0)

    @defer.inlineCallbacks
    def test_failed_refresh_keeps_the_snapshot(self):  # type: ignore[no-untyped-def]
        yield self.directory.start()

        def broken(*args: Any) -> defer.Deferred[Any]:
            return defer.fail(StoreError("database down"))

        self.patch(self.threaded, "listAccounts", broken)
        self.clock.advance(10.0)
        yield self.waitForLoad()
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        self.assertIsNotNone(self.directory.account("45675001"))
        self.assertEqual(self.directory.loadedAt, 0.0)
        self.patch(self.threaded, "listAccounts", AsyncStore.listAccounts.__get__(self.threaded))
        self.store.allocate("4567", 1, realm=REALM)
        self.clock.advance(10.0)
        yield self.waitForLoad()
        self.assertIsNotNone(self.directory.account("45675003"))

    @defer.inlineCallbacks
    def test_failed_first_load_is_logged_and_retried(self):  # type: ignore[no-untyped-def]
        self.patch(self.threaded, "listGroups", lambda: defer.fail(StoreError("database down")))
        yield self.directory.start()
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        self.assertIsNone(self.directory.account("45675001"))
        self.patch(self.threaded, "listGroups", AsyncStore.listGroups.__get__(self.threaded))
        self.clock.advance(10.0)
        yield self.waitForLoad()
        self.assertIsNotNone(self.directory.account("45675001"))

    @defer.inlineCallbacks
    def test_stop_ends_the_refreshes(self):  # type: ignore[no-untyped-def]
        yield self.directory.start()
        self.directory.stop()
        self.store.allocate("4567", 1, realm=REALM)
        self.clock.advance(100.0)
        yield self.waitForLoad()
        self.assertIsNone(self.directory.account("45675003"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_stop_waits_for_the_load_in_progress(self):  # type: ignore[no-untyped-def]
        """
        A service stopping right after it started: the store must not close
        under the first load, so stopping waits for it.
        """
        held: defer.Deferred[list[Any]] = defer.Deferred()
        self.patch(self.threaded, "listGroups", lambda: held)
        started = self.directory.start()
        stopped = self.directory.stop()
        self.assertNoResult(stopped)
        held.callback([])
        yield stopped
        yield started
        self.assertIsNotNone(self.directory.account("45675001"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.successResultOf(self.directory.stop()), None)

    @defer.inlineCallbacks
    def test_service(self):  # type: ignore[no-untyped-def]
        parent = service.MultiService()
        directoryService = self.directory.service()
        self.assertIsInstance(directoryService, DirectoryService)
        directoryService.setServiceParent(parent)
        parent.startService()
        assert directoryService.ready is not None
        yield directoryService.ready
        self.assertIsNotNone(self.directory.account("45675001"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        yield parent.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_defaults(self) -> None:
        from twisted.internet import reactor

        directory = StoreDirectory(self.threaded)
        self.assertEqual(directory.refreshInterval, DEFAULT_REFRESH_INTERVAL)
        self.assertIs(directory.clock, reactor)
        directory.clock = self.clock
        self.assertIs(directory.clock, self.clock)

    @defer.inlineCallbacks
    def waitForLoad(self):  # type: ignore[no-untyped-def]
        """
        Let a load the clock started finish: its two queries run one after
        the other in the store's only thread (SQLite), so wait for calls
        queued behind each.
        """
        for _ in range(3):
            yield self.threaded.listGroups()
