"""
The call-record methods of L{aetasip.store.sql.Store}: writing records
(again and again as a call moves on, by their id), closing the calls a
dead server left open, its heartbeat, and the queries that C{aetasip-admin
cdr}, the quarterly call logs, the portal and the admin API share
(L{RecordQuery}).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs
import sqlalchemy as sa

from aetasip.records.record import FAILOVER, UNKNOWN_END, CallRecord, mediaJSON
from aetasip.store.schema import accounts, callRecords, recordServers

# The end causes of a call that may have gone on in another process (a
# restart, a switch of server): the record is amended when it really ends.
_RESUMABLE = ("server shutdown", UNKNOWN_END, FAILOVER)


@attrs.frozen
class RecordQuery:
    """
    Which call records to read.

    @ivar number: records whose caller, dialled number or callee is this number.
    @ivar caller: records of the calls this number made (what the portal
        shows a subscriber).
    @ivar group: records whose caller, dialled number or callee is a
        member of the group with this prefix (its members now).
    @ivar start, end: records initiated or terminated in C{[start, end)}
        (POSIX seconds): a call spanning a boundary is in both periods.
        A call is initiated when it starts, or for C{answeredOnly} when it
        is answered (its conversation begins).
    @ivar answeredOnly: only answered calls.
    @ivar madeOrMissed: records of the calls this number made, and of
        the calls to it (dialled or routed to it) that nobody answered
        (the portal's call records).
    @ivar newestFirst: the newest first (by start), instead of the oldest.
    @ivar offset: skip this many first (paging).
    @ivar limit: at most this many (in the order above), or all.
    """

    number: str | None = None
    caller: str | None = None
    madeOrMissed: str | None = None
    group: str | None = None
    start: float | None = None
    end: float | None = None
    answeredOnly: bool = False
    newestFirst: bool = False
    offset: int = 0
    limit: int | None = None


def recordRow(record: CallRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "server": record.server,
        "call_id": record.callID,
        "caller_tag": record.callerTag,
        "callee_tag": record.calleeTag,
        "caller": record.caller,
        "caller_kind": record.callerKind,
        "domain": record.domain,
        "source_host": record.source[0],
        "source_port": record.source[1],
        "transport": record.transport,
        "dialled": record.dialled,
        "resolved": ",".join(record.resolved),
        "callee": record.callee,
        "callee_host": None if record.calleeSource is None else record.calleeSource[0],
        "callee_port": None if record.calleeSource is None else record.calleeSource[1],
        "callee_transport": record.calleeTransport,
        "started_at": record.startedAt,
        "ringing_at": record.ringingAt,
        "answered_at": record.answeredAt,
        "ended_at": record.endedAt,
        "duration": record.duration,
        "status": record.status,
        "end_cause": record.endCause,
        "end_detail": record.endDetail,
        "recovered": record.recovered,
        "relay_node": record.relayNode,
        "media": mediaJSON(record.media),
    }


def record(row: sa.Row[Any]) -> CallRecord:
    return CallRecord(
        id=row.id,
        server=row.server,
        callID=row.call_id,
        callerTag=row.caller_tag,
        calleeTag=row.callee_tag,
        caller=row.caller,
        callerKind=row.caller_kind,
        domain=row.domain,
        source=(row.source_host, row.source_port),
        transport=row.transport,
        dialled=row.dialled,
        resolved=tuple(row.resolved.split(",")) if row.resolved else (),
        callee=row.callee,
        calleeSource=None if row.callee_host is None else (row.callee_host, row.callee_port),
        calleeTransport=row.callee_transport,
        startedAt=row.started_at,
        ringingAt=row.ringing_at,
        answeredAt=row.answered_at,
        endedAt=row.ended_at,
        duration=row.duration,
        status=row.status,
        endCause=row.end_cause,
        endDetail=row.end_detail,
        recovered=bool(row.recovered),
        relayNode=row.relay_node,
        media=None if row.media is None else json.loads(row.media),
    )


def _touch(connection: sa.Connection, insert: Any, server: str, now: float, started: bool) -> None:
    """Set the heartbeat of C{server} to C{now} (and its start, if C{started})."""
    statement = insert(recordServers).values(server=server, started_at=now, last_seen=now)
    update: dict[str, Any] = {"last_seen": statement.excluded.last_seen}
    if started:
        update["started_at"] = statement.excluded.started_at
    connection.execute(statement.on_conflict_do_update(index_elements=[recordServers.c.server], set_=update))


class CallRecordMethods:
    """
    The call-record methods of L{aetasip.store.sql.Store}.
    """

    # Provided by the Store this is mixed into.
    _clock: Callable[[], float]
    _transaction: Callable[..., AbstractContextManager[sa.Connection]]
    _insert: Callable[[sa.Connection, sa.Table], Any]

    def writeCallRecords(self, records: Sequence[CallRecord], server: str, now: float) -> None:
        """
        Insert C{records}, or update those already written (by id), in one
        transaction, and note that C{server} was alive at C{now}.

        A record of a call rebuilt after a restart (C{recovered}) that has
        ended amends the record of the same call (Call-ID and caller tag)
        that a shutdown or a crash closed, or that another server left
        open (a backup server took the call over), if there is one: the
        call went on, and ended now, for this reason. When another server
        has already closed the call's record for good (it ended there
        first: its Timer C during a drain, a BYE that reached it), the
        call is recorded: the rebuilt one adds no second record.
        """
        plain = []
        with self._transaction(write=True) as connection:
            insert = self._insertOf(connection)
            for one in records:
                if not one.recovered:
                    plain.append(recordRow(one))
                elif not one.open and not self._amend(connection, one) and not self._endedElsewhere(connection, one):
                    plain.append(recordRow(one))
                # A rebuilt call still open is written when it ends (it may amend an earlier record).
            if plain:
                # One statement for the batch (executemany): compiled once.
                statement = insert(callRecords)
                statement = statement.on_conflict_do_update(
                    index_elements=[callRecords.c.id],
                    set_={name: statement.excluded[name] for name in plain[0] if name != "id"},
                    # A record once closed stays as it was closed: by its server, or by
                    # another that took its call over (its BYE went there, or a failover).
                    where=callRecords.c.end_cause.is_(None),
                )
                connection.execute(statement, plain)
            _touch(connection, insert, server, now, started=False)

    @staticmethod
    def _amend(connection: sa.Connection, one: CallRecord) -> bool:
        earlier = connection.execute(
            sa.select(callRecords.c.id, callRecords.c.answered_at, callRecords.c.end_cause, callRecords.c.server)
            .where(
                callRecords.c.call_id == one.callID,
                callRecords.c.caller_tag == one.callerTag,
                sa.or_(
                    callRecords.c.end_cause.in_(_RESUMABLE),
                    # Left open by another server (it died; a backup took the call over).
                    sa.and_(callRecords.c.end_cause.is_(None), callRecords.c.server != one.server),
                ),
                callRecords.c.id != one.id,
            )
            .order_by(callRecords.c.started_at.desc())
            .limit(1)
        ).first()
        if earlier is None:
            return False
        assert one.endedAt is not None
        answeredAt = earlier.answered_at if earlier.answered_at is not None else one.answeredAt
        if earlier.end_cause == FAILOVER or (earlier.end_cause is None and earlier.server != one.server):
            how = f"went on at {one.server} after {earlier.server} failed"
        else:
            how = "went on after a restart of the service"
        connection.execute(
            callRecords.update()
            .where(callRecords.c.id == earlier.id)
            .values(
                ended_at=one.endedAt,
                duration=0.0 if answeredAt is None else round(max(0.0, one.endedAt - answeredAt), 3),
                end_cause=one.endCause,
                end_detail=(one.endDetail + "; " if one.endDetail else "") + how,
                callee_tag=one.calleeTag,
                # How a call that rang elsewhere ended here (487, 486…); the ringing status otherwise.
                **({"status": one.status} if one.status >= 200 else {}),
            )
        )
        return True

    @staticmethod
    def _endedElsewhere(connection: sa.Connection, one: CallRecord) -> bool:
        """Has another server closed the record of C{one}'s call (not to be amended: see L{_amend})?"""
        return (
            connection.execute(
                sa.select(callRecords.c.id)
                .where(
                    callRecords.c.call_id == one.callID,
                    callRecords.c.caller_tag == one.callerTag,
                    callRecords.c.server != one.server,
                    callRecords.c.end_cause.is_not(None),
                    callRecords.c.id != one.id,
                )
                .limit(1)
            ).first()
            is not None
        )

    def closeOpenCallRecords(self, server: str, now: float) -> list[CallRecord]:
        """
        Close the records C{server} left open (it died: C{kill -9}, power),
        with the end cause L{UNKNOWN_END} at the last time it knew them
        alive (its heartbeat, never before a call's own start or answer),
        and start its new heartbeat at C{now}. Call it when C{server}
        starts, before it writes any record.

        @return: the records it closed, as they are now.
        """
        with self._transaction(write=True) as connection:
            lastSeen = connection.execute(
                sa.select(recordServers.c.last_seen).where(recordServers.c.server == server)
            ).scalar()
            found = connection.execute(
                sa.select(callRecords).where(callRecords.c.server == server, callRecords.c.end_cause.is_(None))
            ).all()
            closed = []
            for row in found:
                one = record(row)
                known = [t for t in (lastSeen, one.startedAt, one.ringingAt, one.answeredAt) if t is not None]
                endedAt = min(max(known), now)
                one = attrs.evolve(
                    one,
                    endedAt=endedAt,
                    endCause=UNKNOWN_END,
                    endDetail="the service stopped without ending the call (crash); ended at its last sign of life",
                    duration=0.0 if one.answeredAt is None else round(max(0.0, endedAt - one.answeredAt), 3),
                )
                connection.execute(
                    callRecords.update()
                    .where(callRecords.c.id == one.id)
                    .values(
                        ended_at=one.endedAt,
                        end_cause=one.endCause,
                        end_detail=one.endDetail,
                        duration=one.duration,
                    )
                )
                closed.append(one)
            _touch(connection, self._insertOf(connection), server, now, started=True)
        return closed

    def closeFailedOverCallRecords(self, server: str, lastSeen: float, by: str) -> list[CallRecord]:
        """
        Close the records C{server} (a dead server of a cluster) left open,
        with the end cause L{FAILOVER} at its last announcement
        C{lastSeen} (never before a call's own start or answer): the
        server C{by} took over. Each record is closed once, whoever else
        tries at the same time; a BYE that later reaches C{by} amends it.

        @return: the records closed, as they are now.
        """
        with self._transaction(write=True) as connection:
            found = connection.execute(
                sa.select(callRecords).where(callRecords.c.server == server, callRecords.c.end_cause.is_(None))
            ).all()
            closed = []
            for row in found:
                one = record(row)
                known = [t for t in (lastSeen, one.startedAt, one.ringingAt, one.answeredAt) if t is not None]
                endedAt = max(known)
                one = attrs.evolve(
                    one,
                    endedAt=endedAt,
                    endCause=FAILOVER,
                    endDetail=f"{server} stopped answering and {by} took over; ended at its last announcement",
                    duration=0.0 if one.answeredAt is None else round(max(0.0, endedAt - one.answeredAt), 3),
                )
                result = connection.execute(
                    callRecords.update()
                    .where(callRecords.c.id == one.id, callRecords.c.end_cause.is_(None))
                    .values(
                        ended_at=one.endedAt,
                        end_cause=one.endCause,
                        end_detail=one.endDetail,
                        duration=one.duration,
                    )
                )
                if result.rowcount == 1:
                    closed.append(one)
        return closed

    def closedCallRecords(self, server: str, calls: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """
        Which of C{calls} (Call-ID, caller tag) have a record of C{server}
        that is closed: their call ended, perhaps on another server (its
        BYE went there after a switch).
        """
        if not calls:
            return set()
        wanted = set(calls)
        found: set[tuple[str, str]] = set()
        callIDs = sorted({callID for callID, _ in wanted})
        with self._transaction() as connection:
            for start in range(0, len(callIDs), 500):
                rows = connection.execute(
                    sa.select(callRecords.c.call_id, callRecords.c.caller_tag).where(
                        callRecords.c.server == server,
                        callRecords.c.call_id.in_(callIDs[start : start + 500]),
                        callRecords.c.end_cause.is_not(None),
                    )
                )
                found.update((row.call_id, row.caller_tag) for row in rows if (row.call_id, row.caller_tag) in wanted)
        return found

    def ringingElsewhere(
        self, callID: str, callerTag: str, source: tuple[str, int], server: str
    ) -> tuple[str, ...] | None:
        """
        Was the call C{callID} of C{callerTag}, from the caller's address
        C{source}, set up by another server than C{server} and never
        answered, its record still open or closed by a failover? (Its
        server died, or gave the address away, while the call rang: the
        caller's CANCEL reaches C{server}.)

        @return: the numbers it rang (those it was resolved to, else the
            one dialled), or C{None}.
        """
        with self._transaction() as connection:
            row = connection.execute(
                sa.select(callRecords.c.resolved, callRecords.c.dialled)
                .where(
                    callRecords.c.call_id == callID,
                    callRecords.c.caller_tag == callerTag,
                    callRecords.c.source_host == source[0],
                    callRecords.c.source_port == source[1],
                    callRecords.c.server != server,
                    callRecords.c.answered_at.is_(None),
                    sa.or_(callRecords.c.end_cause.is_(None), callRecords.c.end_cause == FAILOVER),
                )
                .limit(1)
            ).first()
        if row is None:
            return None
        return tuple(row.resolved.split(",")) if row.resolved else (row.dialled,)

    def recordHeartbeat(self, server: str, now: float) -> None:
        """Note that C{server} (and the calls it has open) was alive at C{now}."""
        with self._transaction(write=True) as connection:
            _touch(connection, self._insertOf(connection), server, now, started=False)

    def callRecords(self, query: RecordQuery | None = None) -> list[CallRecord]:
        """
        @return: the records C{query} selects (all by default), oldest
            first (by start, then id), or newest first.
        """
        query = query or RecordQuery()
        with self._transaction() as connection:
            return [record(row) for row in connection.execute(self._recordsSelected(query))]

    def callRecordPage(self, query: RecordQuery) -> tuple[list[CallRecord], int]:
        """
        A page of records (L{callRecords}: C{query}'s offset and limit)
        and how many records C{query}'s filters select in all, read in one
        transaction.
        """
        selected = self._recordsSelected(attrs.evolve(query, offset=0, limit=None)).order_by(None)
        count = sa.select(sa.func.count()).select_from(selected.subquery())
        with self._transaction() as connection:
            page = [record(row) for row in connection.execute(self._recordsSelected(query))]
            return page, int(connection.execute(count).scalar_one())

    def _recordsSelected(self, query: RecordQuery) -> sa.Select[Any]:
        statement = sa.select(callRecords)
        if query.number is not None:
            statement = statement.where(
                sa.or_(
                    callRecords.c.caller == query.number,
                    callRecords.c.dialled == query.number,
                    callRecords.c.callee == query.number,
                )
            )
        if query.caller is not None:
            statement = statement.where(callRecords.c.caller == query.caller)
        if query.madeOrMissed is not None:
            number = query.madeOrMissed
            statement = statement.where(
                sa.or_(
                    callRecords.c.caller == number,
                    sa.and_(
                        sa.or_(callRecords.c.dialled == number, callRecords.c.callee == number),
                        callRecords.c.answered_at.is_(None),
                    ),
                )
            )
        if query.group is not None:
            members = sa.select(accounts.c.number).where(accounts.c.group_prefix == query.group)
            statement = statement.where(
                sa.or_(
                    callRecords.c.caller.in_(members),
                    callRecords.c.dialled.in_(members),
                    callRecords.c.callee.in_(members),
                )
            )
        if query.answeredOnly:
            statement = statement.where(callRecords.c.answered_at.is_not(None))
        begin = callRecords.c.answered_at if query.answeredOnly else callRecords.c.started_at
        if query.start is not None or query.end is not None:
            low = float("-inf") if query.start is None else query.start
            high = float("inf") if query.end is None else query.end
            conditions = []
            for column in (begin, callRecords.c.ended_at):
                condition: sa.ColumnElement[bool] = column.is_not(None)
                if query.start is not None:
                    condition = sa.and_(condition, column >= low)
                if query.end is not None:
                    condition = sa.and_(condition, column < high)
                conditions.append(condition)
            statement = statement.where(sa.or_(*conditions))
        if query.newestFirst:
            statement = statement.order_by(callRecords.c.started_at.desc(), callRecords.c.id.desc())
        else:
            statement = statement.order_by(callRecords.c.started_at, callRecords.c.id)
        if query.offset:
            statement = statement.offset(query.offset)
        if query.limit is not None:
            statement = statement.limit(query.limit)
        return statement

    def _insertOf(self, connection: sa.Connection) -> Callable[[sa.Table], Any]:
        return lambda table: self._insert(connection, table)
