"""
Call records on a real PostgreSQL (L{tests.postgres}): the cases of
L{tests.test_records_store}, each test with a new database; and the
database going away while calls go on.
"""

from __future__ import annotations

import sqlalchemy as sa
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from aetasip.calls.call import Call, CallObservers, EndCause
from aetasip.records.cdr import CDRService
from aetasip.records.sink import StoreRecordSink
from aetasip.store import AsyncStore, Store
from tests import test_records_store
from tests.postgres import postgresqlURL
from tests.servers import deferLater
from tests.test_interop_calls import within
from tests.test_records_cdr import aCall
from tests.test_store_postgresql import DatabaseProxy, PostgreSQLURLs


class PostgreSQLCallRecordStoreTests(PostgreSQLURLs, test_records_store.CallRecordStoreTests):
    """Writing, recovering and reading call records on PostgreSQL."""


class PostgreSQLRecordQueryTests(PostgreSQLURLs, test_records_store.RecordQueryTests):
    """The queries on call records on PostgreSQL."""


class StoreOutageTests(TestCase):
    """
    The database goes away while calls go on (a TCP forwarder to the test
    PostgreSQL is stopped), then comes back: the records wait, counted,
    and are all written, in order, once it is back.
    """

    timeout = 60

    def setUp(self):  # type: ignore[no-untyped-def]
        self.proxy = DatabaseProxy(postgresqlURL(self))
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.store = AsyncStore(Store(self.proxy.url))
        self.store.start()
        self.addCleanup(self.store.stop)
        self.cdr = CDRService(StoreRecordSink(self.store), "main", reactor, heartbeatInterval=1)  # type: ignore[arg-type]
        self.observers = CallObservers([self.cdr])
        d = self.store.open()
        d.addCallback(lambda _: self.cdr.startService())
        self.addCleanup(self.cdr.stopService)
        return d

    def call(self, n: int) -> Call:
        call = aCall(reactor, self.observers, n)  # type: ignore[arg-type]
        call.start()
        return call

    async def test_records_wait_for_the_store_and_are_written_when_it_returns(self) -> None:
        first = self.call(1)
        await within(5, lambda: self.cdr.written >= 1 and not self.cdr.pending, "the first record was not written")
        await self.proxy.stop()
        first.end(EndCause.CALLER_BYE)
        calls = [self.call(n) for n in range(2, 5)]
        for call in calls:
            call.end(EndCause.CANCELLED, 487)
        await within(5, lambda: self.cdr.failures >= 1, "no write failed")
        self.assertEqual(len(self.cdr.pending), 4)
        await deferLater(1.5)
        self.assertEqual(len(self.cdr.pending), 4)
        self.proxy.start()
        await within(40, lambda: not self.cdr.pending, "the records were not written after the outage")
        records = await self.store.callRecords()
        self.assertEqual([r.callID for r in records], [f"call-{n}@codec" for n in range(1, 5)])
        self.assertEqual([r.endCause for r in records], ["caller BYE"] + ["cancelled"] * 3)
        self.assertEqual(self.cdr.dropped, 0)
        self.flushLoggedErrors(sa.exc.OperationalError)
