"""
Quarterly call logs (group option C{quarterly_log}): for a calendar
quarter, the answered calls from or to a group's numbers that began or
ended in it (a call spanning the boundary is in both quarters' logs), as
CSV, mailed to the group's technical contact once the quarter is over.

The ledger in the store (L{aetasip.store.outbox.OutboxMethods.queueQuarterlyLog})
remembers which log was made for which group and quarter, in the same
transaction that queues its message: a server that was down at the
boundary makes it when it starts, a retry after a mail failure is the
outbox's (the same message), and no log is made twice, whatever the
number of servers. L{QuarterlyLogService} looks when the service starts,
a minute after each quarter ends, and every hour.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from aetasip.records.csvfiles import quarterlyCSV
from aetasip.records.mailmessages import compose, quarterlyBody, quarterlySubject
from aetasip.records.periods import Quarter
from aetasip.records.record import CallRecord
from aetasip.store.callrecords import RecordQuery
from aetasip.store.models import Group

log = Logger()

CHECK_INTERVAL = 3600.0
"""Seconds between two looks for logs to make."""

AFTER_BOUNDARY = 60.0
"""Seconds after the end of a quarter when its logs are made (late calls' records written by then)."""


@attrs.frozen
class QuarterlyLog:
    """The call log of a group for a quarter."""

    prefix: str
    quarter: Quarter
    records: list[CallRecord]

    @property
    def csv(self) -> str:
        return quarterlyCSV(self.records)

    @property
    def fileName(self) -> str:
        return f"calls-{self.prefix}-{self.quarter}.csv"

    def message(self, fromAddress: str, recipient: str, serviceName: str, now: float) -> bytes:
        return compose(
            fromAddress,
            recipient,
            quarterlySubject(self.prefix, self.quarter),
            quarterlyBody(self.prefix, self.quarter, len(self.records), serviceName),
            now,
            [(self.fileName, "text/csv", self.csv.encode("utf-8"))],
        )


def quarterlyLog(store: Any, prefix: str, quarter: Quarter) -> QuarterlyLog:
    """The log of group C{prefix} for C{quarter}, from the (synchronous) store."""
    query = RecordQuery(group=prefix, start=quarter.start, end=quarter.end, answeredOnly=True)
    return QuarterlyLog(prefix, quarter, store.callRecords(query))


def queueLog(
    store: Any, group: Group, quarter: Quarter, fromAddress: str, serviceName: str, now: float, again: bool = False
) -> int | None:
    """
    Make the log of C{group} for C{quarter} and queue its message to the
    group's contact, noting it in the ledger, unless it was made before.

    @param again: queue it even if it was made before (an operator's re-send).
    @return: the id of the message queued, or C{None}.
    """
    made = quarterlyLog(store, group.prefix, quarter)
    message = made.message(fromAddress, group.contact, serviceName, now)
    subject = quarterlySubject(group.prefix, quarter)
    queued = store.queueQuarterlyLog(
        group.prefix, str(quarter), group.contact, subject, message, len(made.records), now
    )
    if queued is None and again:
        queued = store.queueMail(group.contact, subject, message, f"quarterly {group.prefix} {quarter} (again)", now)
    return queued  # type: ignore[no-any-return]


def queueDueLogs(store: Any, now: float, fromAddress: str, serviceName: str) -> list[tuple[str, str, int]]:
    """
    Queue the logs of the last quarter over, for every group with the
    option that existed before its end, that were not made yet.

    @return: C{(prefix, quarter, message id)} of each log queued.
    """
    quarter = Quarter.containing(now).previous()
    queued = []
    for group in store.listGroups():
        if not group.quarterlyLog or group.createdAt >= quarter.end:
            continue
        if store.quarterlyLogMade(group.prefix, str(quarter)) is not None:
            continue
        mailID = queueLog(store, group, quarter, fromAddress, serviceName, now)
        if mailID is not None:
            queued.append((group.prefix, str(quarter), mailID))
    return queued


class QuarterlyLogService(service.Service):
    """
    Makes the quarterly call logs due when the service starts and every
    hour, then has the outbox send them.

    @param store: the L{aetasip.store.AsyncStore}.
    @param outbox: the L{aetasip.records.outbox.Outbox}.
    """

    name = "quarterly-logs"

    def __init__(self, store: Any, outbox: Any, serviceName: str, clock: IReactorTime) -> None:
        self.store = store
        self.outbox = outbox
        self.serviceName = serviceName
        self.clock = clock
        # Whether this server makes them now: in a cluster, the one holding
        # the work lock (see aetasip.cluster); set by aetasip.tap.
        self.mayRun: Any = lambda: True
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._boundary: Any = None

    def startService(self) -> None:
        super().startService()
        log.info(
            "Quarterly call logs: made for the groups that ask for them, looked for every {interval:g} s",
            interval=CHECK_INTERVAL,
        )
        self._loop.start(CHECK_INTERVAL, now=True)
        self._atNextBoundary()

    def stopService(self) -> Any:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._boundary is not None and self._boundary.active():
            self._boundary.cancel()
        self._boundary = None
        log.info("Quarterly call logs stopped")

    def _atNextBoundary(self) -> None:
        """Look again just after the current quarter ends."""
        now = self.clock.seconds()
        when = Quarter.containing(now).end + AFTER_BOUNDARY
        self._boundary = self.clock.callLater(when - now, self._boundaryReached)

    def _boundaryReached(self) -> None:
        self._boundary = None
        self.check()
        if self.running:
            self._atNextBoundary()

    async def _check(self) -> list[tuple[str, str, int]]:
        fromAddress = self.outbox.settings.fromAddress
        if fromAddress is None:
            # Nothing can be addressed yet; the logs are made once mail is configured.
            return []
        try:
            queued: list[tuple[str, str, int]] = await self.store.run(
                queueDueLogs, self.store.store, self.clock.seconds(), fromAddress, self.serviceName
            )
        except Exception:
            log.failure("Quarterly call logs: cannot make them now; trying again within the hour")
            return []
        for prefix, quarter, mailID in queued:
            log.info(
                "Quarterly call log of group {prefix} for {quarter} queued (message {id})",
                prefix=prefix,
                quarter=quarter,
                id=mailID,
            )
        if queued:
            await self.outbox.sendDue()
        return queued

    def check(self) -> Any:
        from twisted.internet.defer import Deferred, succeed

        if not self.mayRun():
            return succeed([])
        return Deferred.fromCoroutine(self._check())
