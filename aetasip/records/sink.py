"""
L{StoreRecordSink}: the call records in the SQL store (the
C{call_records} table, L{aetasip.store.callrecords}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from aetasip.interfaces import ICallRecordSink
from aetasip.records.record import CallRecord


@implementer(ICallRecordSink)
class StoreRecordSink:
    """
    @param store: the service's L{aetasip.store.AsyncStore}.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def recover(self, server: str, now: float) -> Deferred[list[CallRecord]]:
        return self.store.closeOpenCallRecords(server, now)  # type: ignore[no-any-return]

    def write(self, records: Sequence[CallRecord], server: str, now: float) -> Deferred[None]:
        return self.store.writeCallRecords(list(records), server, now)  # type: ignore[no-any-return]

    def heartbeat(self, server: str, now: float) -> Deferred[None]:
        return self.store.recordHeartbeat(server, now)  # type: ignore[no-any-return]
