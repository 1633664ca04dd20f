"""
L{CDRService}: the call observer that records every call attempt.

Nothing here blocks a call: each event (started, answered, ended) puts
the call's record, as it is now, in a bounded in-memory queue that one
writer empties, in order, into an L{ICallRecordSink} (the store), in
batches, one at a time. A record already waiting is replaced by its new
version. When the sink fails (the store is down) the writer tries again
with a growing delay, records keep waiting (up to C{records.queue_limit};
past it new ones are dropped, counted and logged) and are written when it
returns.

A record is written when its call starts, so that a crash leaves it open
in the store: when the service starts, before writing anything, it
closes the records its previous process left open, with the end cause
C{unknown end} and the last time that process knew them alive (its
heartbeat, noted every C{records.heartbeat_interval} seconds and with
every batch).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aetasip.interfaces import ICallObserver, ICallRecordSink
from aetasip.records.record import CallRecord, newRecordID, recordOf

log = Logger()

BATCH = 1000
"""Records written in one transaction, at most."""

WRITE_DELAY = 0.5
"""
Seconds records gather before a write: the versions of a short call
(started, answered, ended) become one row, and a batch is one
transaction. A crash loses at most what gathered meanwhile.
"""

REFUSALS = 3
"""Failures of a record written alone before the store, if it answers otherwise, is said to refuse it."""

FIRST_RETRY = 0.5
LAST_RETRY = 30.0
"""Seconds between two attempts when the sink fails: doubling from the first to the last."""


@implementer(ICallObserver)
class CDRService(service.Service):
    """
    Records every call attempt.

    @ivar written: records written (each version counts).
    @ivar dropped: records dropped because the queue was full.
    @ivar failures: failed writes.
    @ivar refused: records dropped because the store, while up, refused
        each of them alone L{REFUSALS} times (a bug; logged with the record).
    @ivar closedAtStart: records of the previous process closed at start.
    """

    name = "records"

    def __init__(
        self,
        sink: ICallRecordSink,
        server: str,
        clock: IReactorTime,
        heartbeatInterval: float = 10.0,
        queueLimit: int = 100_000,
        writeDelay: float = WRITE_DELAY,
    ) -> None:
        self.sink = sink
        self.server = server
        self.clock = clock
        self.heartbeatInterval = heartbeatInterval
        self.queueLimit = queueLimit
        self.writeDelay = writeDelay
        self.pending: OrderedDict[str, CallRecord] = OrderedDict()
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.refused = 0
        self.closedAtStart: list[CallRecord] = []
        self._batchSize = BATCH
        self._singleFailures = 0
        self._recordIDs: dict[int, str] = {}
        self._ready = False
        self._busy: Deferred[Any] | None = None
        self._scheduled: IDelayedCall | None = None
        self._delay = FIRST_RETRY
        self._outage = False
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock

    def __repr__(self) -> str:
        return f"<CDRService {self.server} {len(self.pending)} waiting>"

    # -- the call events ------------------------------------------------------

    def callStarted(self, call: Any) -> None:
        recordID = self._recordIDs[call.id] = newRecordID()
        self._queue(recordOf(call, recordID, self.server))

    def callRinging(self, call: Any) -> None:
        # The numbers it rings, for another server of a cluster should this
        # one fail (its caller's CANCEL reaches it: Store.ringingElsewhere).
        # Usually the record written at the start is still waiting, and
        # this one takes its place.
        recordID = self._recordIDs.get(call.id)
        if recordID is not None:
            self._queue(recordOf(call, recordID, self.server))

    def callAnswered(self, call: Any) -> None:
        recordID = self._recordIDs.get(call.id)
        if recordID is None:
            recordID = self._recordIDs[call.id] = newRecordID()
        self._queue(recordOf(call, recordID, self.server))

    def callEnded(self, call: Any) -> None:
        recordID = self._recordIDs.pop(call.id, None) or newRecordID()
        if getattr(call, "endedElsewhere", False):
            # The server where it ended closes (amends) its record: written
            # here too, it could come first and make that a second record.
            return
        self._queue(recordOf(call, recordID, self.server))

    # -- the queue and its writer ---------------------------------------------

    def _queue(self, record: CallRecord) -> None:
        if record.id in self.pending:
            self.pending[record.id] = record
        elif len(self.pending) >= self.queueLimit:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "Call records: {queued} waiting for the store, the limit (records.queue_limit); "
                    "{dropped} dropped so far (call {callID} from {caller})",
                    queued=len(self.pending),
                    dropped=self.dropped,
                    callID=record.callID,
                    caller=record.caller,
                )
            return
        else:
            self.pending[record.id] = record
        self._soon(self.writeDelay)

    def _soon(self, delay: float) -> None:
        if self._scheduled is None and self._busy is None and self.running:
            self._scheduled = self.clock.callLater(delay, self._write)

    def _write(self) -> None:
        self._scheduled = None
        if not self._ready:
            self._start()
            return
        if self._busy is not None or not self.pending:
            return
        batch = [record for _, record in zip(range(self._batchSize), self.pending.values(), strict=False)]
        if len(batch) == 1 and self._singleFailures >= REFUSALS:
            # Refused again and again alone: is the store up?
            (record,) = batch
            self._busy = d = maybeDeferred(self.sink.heartbeat, self.server, self.clock.seconds())
            d.addCallback(lambda _: self._refused(record))
            d.addErrback(self._failed, "note the heartbeat")
            return
        self._busy = d = maybeDeferred(self.sink.write, batch, self.server, self.clock.seconds())
        d.addCallback(self._wrote, batch)
        d.addErrback(self._writeFailed, batch)

    def _writeFailed(self, failure: Failure, batch: list[CallRecord]) -> None:
        """
        A batch failed: the store is down, or refuses one of its records.
        The next attempts take half as many records each time, down to one
        (L{_refused} then tells the two apart).
        """
        self._batchSize = max(1, self._batchSize // 2)
        if len(batch) == 1:
            self._singleFailures += 1
        self._failed(failure, "write")

    def _refused(self, record: CallRecord) -> None:
        """The store answers but refuses C{record} alone, again and again: it is dropped, counted, logged."""
        self._busy = None
        self._singleFailures = 0
        if self.pending.get(record.id) is record:
            del self.pending[record.id]
        self.refused += 1
        log.error(
            "Call records: the store refuses the record {record!r} ({refused} refused so far); dropped",
            record=record,
            refused=self.refused,
        )
        self._recovered()
        if self.pending:
            self._soon(0)

    def _wrote(self, _: object, batch: list[CallRecord]) -> None:
        self._busy = None
        self._batchSize = BATCH
        self._singleFailures = 0
        for record in batch:
            if self.pending.get(record.id) is record:
                del self.pending[record.id]
        self.written += len(batch)
        self._recovered()
        if self.pending:
            self._soon(0 if len(self.pending) >= BATCH else self.writeDelay)

    def _failed(self, failure: Failure, what: str) -> None:
        self._busy = None
        self.failures += 1
        if not self._outage:
            self._outage = True
            log.failure(
                "Call records: cannot {what} in the store; {waiting} records wait, trying again",
                failure,
                what=what,
                waiting=len(self.pending),
            )
        delay, self._delay = self._delay, min(self._delay * 2, LAST_RETRY)
        self._soon(delay)

    def _recovered(self) -> None:
        self._delay = FIRST_RETRY
        if self._outage:
            self._outage = False
            log.info(
                "Call records: the store is back; {waiting} records still waiting, {dropped} dropped during the outage",
                waiting=len(self.pending),
                dropped=self.dropped,
            )

    # -- start, heartbeat, stop -----------------------------------------------

    def _start(self) -> None:
        """Close the records the previous process left open, then write."""
        self._busy = d = maybeDeferred(self.sink.recover, self.server, self.clock.seconds())
        d.addCallback(self._started)
        d.addErrback(self._failed, "close the calls left open")

    def _started(self, closed: list[CallRecord]) -> None:
        self._busy = None
        self._ready = True
        self.closedAtStart = closed
        self._recovered()
        if closed:
            log.warn(
                "Call records: {count} calls left open by the last run of {server} closed as 'unknown end'",
                count=len(closed),
                server=self.server,
            )
        if self.running and not self._heartbeat.running:
            self._heartbeat.start(self.heartbeatInterval, now=False)
        if self.pending:
            self._soon(0)

    def _beat(self) -> None:
        if self._busy is not None or self.pending:
            # The write under way or coming notes the time itself.
            return
        self._busy = d = maybeDeferred(self.sink.heartbeat, self.server, self.clock.seconds())

        def done(_: object) -> None:
            self._busy = None
            self._recovered()
            if self.pending:
                self._soon(0)

        d.addCallback(done)
        d.addErrback(self._failed, "note the heartbeat")

    def startService(self) -> None:
        super().startService()
        log.info("Call records of server {server}: written to the store", server=self.server)
        self._soon(0)

    def stopService(self) -> Deferred[None]:
        """
        Write what waits, once (the calls' ends, as the service stops
        them); records that cannot be written now stay open in the store
        and are closed at the next start.
        """
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        d = Deferred.fromCoroutine(self._drain())
        d.addCallback(lambda _: log.info("Call records stopped"))
        return d

    async def _drain(self) -> None:
        if self._busy is not None:
            try:
                await self._busy
            except Exception:
                pass
        if not self._ready or not self.pending:
            if self.pending:
                log.warn("Call records: {count} records not written at stop", count=len(self.pending))
            return
        batch = list(self.pending.values())
        try:
            await self.sink.write(batch, self.server, self.clock.seconds())
        except Exception:
            log.failure("Call records: {count} records not written at stop", count=len(batch))
            return
        self.pending.clear()
        self.written += len(batch)


def makeCDRService(config: Any, store: Any, reactor: Any = None) -> CDRService:
    """The L{CDRService} of C{config}, writing to C{store} (an L{aetasip.store.AsyncStore})."""
    from aetasip.records.settings import recordServer
    from aetasip.records.sink import StoreRecordSink

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    return CDRService(
        StoreRecordSink(store),
        recordServer(config),
        reactor,
        config["records.heartbeat_interval"],
        config["records.queue_limit"],
    )
