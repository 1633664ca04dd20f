"""
Tests for L{aetasip.auth.sql}: the store-backed authentication backend.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from sqlalchemy.exc import OperationalError
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from aetasip.auth import BackendUnavailable, Credentials, credentialsFromPassword
from aetasip.auth.sql import SQLAuthBackend, makeSQLBackend
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend
from aetasip.store import AsyncStore, Store, StoreError, StoreService

REALM = "aetasip"
STUDIO = credentialsFromPassword("45675001", "premium", REALM, "secret")


class FakeStore:
    """
    Answers L{credentials} with L{Deferred}s the test fires.
    """

    def __init__(self) -> None:
        self.lookups: list[tuple[str, defer.Deferred[Credentials | None]]] = []

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        d: defer.Deferred[Credentials | None] = defer.Deferred()
        self.lookups.append((number, d))
        return d


class CacheTests(SynchronousTestCase):
    """
    Answers are reused for a few seconds, so a REGISTER storm costs one query per number.
    """

    def setUp(self) -> None:
        self.store = FakeStore()
        self.clock = Clock()
        self.backend = SQLAuthBackend(self.store, cacheTTL=5.0, clock=self.clock)  # type: ignore[arg-type]

    def test_provides_auth_backend(self) -> None:
        self.assertTrue(verifyObject(IAuthBackend, self.backend))
        self.assertEqual(self.backend.name, "sql")

    def test_answer_comes_from_the_store(self) -> None:
        d = self.backend.credentials("45675001")
        self.assertNoResult(d)
        self.assertEqual([number for number, _ in self.store.lookups], ["45675001"])
        self.store.lookups[0][1].callback(STUDIO)
        self.assertEqual(self.successResultOf(d), STUDIO)

    def test_cached_answer_is_immediate_and_costs_no_query(self) -> None:
        self.backend.credentials("45675001")
        self.store.lookups[0][1].callback(STUDIO)
        self.clock.advance(4.9)
        self.assertEqual(self.successResultOf(self.backend.credentials("45675001")), STUDIO)
        self.assertEqual(len(self.store.lookups), 1)

    def test_cached_answer_expires(self) -> None:
        self.backend.credentials("45675001")
        self.store.lookups[0][1].callback(STUDIO)
        self.clock.advance(5)
        d = self.backend.credentials("45675001")
        self.assertNoResult(d)
        self.assertEqual(len(self.store.lookups), 2)

    def test_unknown_number_is_cached_too(self) -> None:
        self.backend.credentials("45675009")
        self.store.lookups[0][1].callback(None)
        self.assertIsNone(self.successResultOf(self.backend.credentials("45675009")))
        self.assertEqual(len(self.store.lookups), 1)

    def test_unknown_number_is_forgotten_sooner_than_an_account(self) -> None:
        backend = SQLAuthBackend(self.store, cacheTTL=60.0, clock=self.clock)  # type: ignore[arg-type]
        backend.credentials("45675009")
        self.store.lookups[0][1].callback(None)
        backend.credentials("45675001")
        self.store.lookups[1][1].callback(STUDIO)
        self.clock.advance(5)
        # The number was just provisioned: asked again. The account stays cached.
        self.assertNoResult(backend.credentials("45675009"))
        self.assertEqual(self.successResultOf(backend.credentials("45675001")), STUDIO)
        self.assertEqual(len(self.store.lookups), 3)

    def test_concurrent_lookups_share_one_query(self) -> None:
        first = self.backend.credentials("45675001")
        second = self.backend.credentials("45675001")
        other = self.backend.credentials("45675002")
        self.assertEqual([number for number, _ in self.store.lookups], ["45675001", "45675002"])
        self.store.lookups[0][1].callback(STUDIO)
        self.assertEqual(self.successResultOf(first), STUDIO)
        self.assertEqual(self.successResultOf(second), STUDIO)
        self.assertNoResult(other)

    def test_database_error_is_backend_unavailable_and_not_cached(self) -> None:
        first = self.backend.credentials("45675001")
        second = self.backend.credentials("45675001")
        error = OperationalError("SELECT", {}, Exception("connection refused"))
        self.store.lookups[0][1].errback(error)
        for d in [first, second]:
            failure = self.failureResultOf(d, BackendUnavailable)
            self.assertIn("connection refused", failure.getErrorMessage())
        self.assertEqual(len(self.flushLoggedErrors(OperationalError)), 1)
        self.assertNoResult(self.backend.credentials("45675001"))
        self.assertEqual(len(self.store.lookups), 2)

    def test_forget_drops_cached_answers(self) -> None:
        for number in ["45675001", "45675002"]:
            self.backend.credentials(number)
        for _, d in self.store.lookups:
            d.callback(None)
        self.backend.forget("45675001")
        self.assertNoResult(self.backend.credentials("45675001"))
        self.successResultOf(self.backend.credentials("45675002"))
        self.backend.forget()
        self.assertNoResult(self.backend.credentials("45675002"))

    def test_zero_ttl_disables_the_cache(self) -> None:
        backend = SQLAuthBackend(self.store, cacheTTL=0, clock=self.clock)  # type: ignore[arg-type]
        backend.credentials("45675001")
        self.store.lookups[0][1].callback(STUDIO)
        self.assertNoResult(backend.credentials("45675001"))

    def test_cache_is_bounded(self) -> None:
        backend = SQLAuthBackend(self.store, clock=self.clock, maxCached=3)  # type: ignore[arg-type]
        for number in ["1", "2", "3", "4"]:
            backend.credentials(number)
            self.store.lookups[-1][1].callback(None)
        self.assertNoResult(backend.credentials("1"))
        for number in ["2", "3", "4"]:
            self.successResultOf(backend.credentials(number))


class StoreBackedTests(TestCase):
    """
    L{SQLAuthBackend} on a real store.
    """

    @defer.inlineCallbacks
    def test_accounts_of_the_store_are_known(self):  # type: ignore[no-untyped-def]
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        service = StoreService(f"sqlite:///{directory}/store.db")
        service.startService()
        self.addCleanup(service.stopService)
        yield service.store.addAccount("45675001", "premium", "secret", REALM)
        backend = SQLAuthBackend(service.store)
        self.assertEqual((yield backend.credentials("45675001")), STUDIO)
        self.assertIsNone((yield backend.credentials("45675002")))

    @defer.inlineCallbacks
    def test_unusable_store_is_backend_unavailable(self):  # type: ignore[no-untyped-def]
        store = AsyncStore(Store("sqlite://"))
        store.start()
        self.addCleanup(store.stop)
        backend = SQLAuthBackend(store)
        yield self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)


class MakeSQLBackendTests(SynchronousTestCase):
    """
    L{makeSQLBackend} builds the backend from the configuration.
    """

    def test_backend_reads_the_service_store(self) -> None:
        store = AsyncStore(Store("sqlite://"))
        backend = makeSQLBackend({"realm": REALM}, store)
        self.assertIs(backend._store, store)

    def test_no_store_is_a_configuration_error(self) -> None:
        error = self.assertRaises(ConfigError, makeSQLBackend, {"realm": REALM}, None)
        self.assertEqual(error.key, "auth.backends")


class _CountingScans(OrderedDict):  # type: ignore[type-arg]
    """An OrderedDict that counts the passes over its entries."""

    scans = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _CountingScans.scans += 1
        return super().__iter__()

    def items(self):  # type: ignore[no-untyped-def]
        _CountingScans.scans += 1
        return super().items()


class CacheCostTests(SynchronousTestCase):
    """
    Fault 4 of the audit: past 10,000 cached numbers every insert scanned
    the whole cache (505 us a lookup); pending lookups were unbounded.
    """

    def setUp(self) -> None:
        self.store = FakeStore()
        self.clock = Clock()

    def test_a_full_cache_inserts_without_scanning(self) -> None:
        backend = SQLAuthBackend(self.store, clock=self.clock, maxCached=100)  # type: ignore[arg-type]
        backend.cache._cache = _CountingScans()
        _CountingScans.scans = 0
        for i in range(1000):
            backend.credentials(str(i))
            self.store.lookups[-1][1].callback(None)
        self.assertEqual(_CountingScans.scans, 0)
        self.assertEqual(len(backend.cache._cache), 100)

    def test_least_recently_used_goes_first(self) -> None:
        backend = SQLAuthBackend(self.store, clock=self.clock, maxCached=3)  # type: ignore[arg-type]
        for number in ["1", "2", "3"]:
            backend.credentials(number)
            self.store.lookups[-1][1].callback(STUDIO)
        self.successResultOf(backend.credentials("1"))
        backend.credentials("4")
        self.store.lookups[-1][1].callback(STUDIO)
        self.successResultOf(backend.credentials("1"))
        self.assertNoResult(backend.credentials("2"))

    def test_pending_lookups_are_bounded(self) -> None:
        backend = SQLAuthBackend(self.store, clock=self.clock, maxPending=2)  # type: ignore[arg-type]
        backend.credentials("1")
        backend.credentials("2")
        self.failureResultOf(backend.credentials("3"), BackendUnavailable)
        self.assertEqual(len(self.store.lookups), 2)

    def test_the_options_reach_the_backend(self) -> None:
        backend = makeSQLBackend({"cache_ttl": 5, "cache_size": 200, "max_pending": 7}, self.store)  # type: ignore[arg-type]
        self.assertEqual((backend.cache.maxCached, backend.cache.maxPending), (200, 7))
