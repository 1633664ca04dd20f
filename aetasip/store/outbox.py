"""
The mail methods of L{aetasip.store.sql.Store}: the persistent outbox
(messages waiting, claimed by one sender at a time, sent or given up) and
the ledger of quarterly call logs (one per group and quarter, queued in
the same transaction as its message, so never twice).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import attrs
import sqlalchemy as sa

from aetasip.store.schema import mailOutbox, quarterlyLogs

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"


@attrs.frozen
class OutboxMail:
    """
    One message of the outbox.

    @ivar message: the whole RFC 5322 message, as sent.
    @ivar purpose: what it is, for logs and the admin (C{quarterly 4567 2026Q1}).
    @ivar state: L{QUEUED}, L{SENT} or L{FAILED} (given up).
    @ivar attempts: attempts so far (the one under way included).
    """

    id: int
    recipient: str
    subject: str
    message: bytes
    purpose: str
    state: str
    attempts: int
    nextAttemptAt: float
    lastError: str
    createdAt: float
    sentAt: float | None


def _mail(row: sa.Row[Any]) -> OutboxMail:
    return OutboxMail(
        id=row.id,
        recipient=row.recipient,
        subject=row.subject,
        message=bytes(row.message),
        purpose=row.purpose,
        state=row.state,
        attempts=row.attempts,
        nextAttemptAt=row.next_attempt_at,
        lastError=row.last_error,
        createdAt=row.created_at,
        sentAt=row.sent_at,
    )


def _queue(connection: sa.Connection, recipient: str, subject: str, message: bytes, purpose: str, now: float) -> int:
    result = connection.execute(
        mailOutbox.insert()
        .values(
            recipient=recipient,
            subject=subject,
            message=message,
            purpose=purpose,
            state=QUEUED,
            attempts=0,
            next_attempt_at=now,
            last_error="",
            created_at=now,
            sent_at=None,
        )
        .returning(mailOutbox.c.id)
    )
    return int(result.scalar_one())


class OutboxMethods:
    """The outbox and quarterly-log methods of L{aetasip.store.sql.Store}."""

    # Provided by the Store this is mixed into.
    _clock: Callable[[], float]
    _transaction: Callable[..., AbstractContextManager[sa.Connection]]

    def queueMail(self, recipient: str, subject: str, message: bytes, purpose: str, now: float) -> int:
        """
        Put C{message} for C{recipient} in the outbox, due at once.

        @return: its id.
        """
        with self._transaction(write=True) as connection:
            return _queue(connection, recipient, subject, message, purpose, now)

    def claimDueMail(self, now: float, lease: float, limit: int = 20) -> list[OutboxMail]:
        """
        The queued messages due at C{now} (oldest first), each claimed for
        this sender: its next attempt moves to C{now + lease} and its
        attempts count one more, so that another sender (the service, the
        CLI) does not send it meanwhile; a sender that dies lets it come
        due again after the lease.
        """
        claimed = []
        with self._transaction(write=True) as connection:
            due = connection.execute(
                sa.select(mailOutbox.c.id)
                .where(mailOutbox.c.state == QUEUED, mailOutbox.c.next_attempt_at <= now)
                .order_by(mailOutbox.c.next_attempt_at, mailOutbox.c.id)
                .limit(limit)
            ).all()
            for (mailID,) in due:
                result = connection.execute(
                    mailOutbox.update()
                    .where(mailOutbox.c.id == mailID, mailOutbox.c.state == QUEUED, mailOutbox.c.next_attempt_at <= now)
                    .values(next_attempt_at=now + lease, attempts=mailOutbox.c.attempts + 1)
                )
                if result.rowcount == 1:
                    row = connection.execute(sa.select(mailOutbox).where(mailOutbox.c.id == mailID)).one()
                    claimed.append(_mail(row))
        return claimed

    def markMailSent(self, mailID: int, now: float) -> None:
        with self._transaction(write=True) as connection:
            connection.execute(
                mailOutbox.update().where(mailOutbox.c.id == mailID).values(state=SENT, sent_at=now, last_error="")
            )

    def markMailFailed(self, mailID: int, error: str, retryAt: float | None) -> None:
        """
        An attempt failed with C{error}: try again at C{retryAt}, or give
        up (L{FAILED}) when it is C{None}.
        """
        values: dict[str, Any] = {"last_error": error[:2000]}
        if retryAt is None:
            values["state"] = FAILED
        else:
            values["next_attempt_at"] = retryAt
        with self._transaction(write=True) as connection:
            connection.execute(mailOutbox.update().where(mailOutbox.c.id == mailID).values(**values))

    def outbox(self, state: str | None = None) -> list[OutboxMail]:
        """The messages of the outbox (in C{state}, if given), oldest first."""
        query = sa.select(mailOutbox).order_by(mailOutbox.c.id)
        if state is not None:
            query = query.where(mailOutbox.c.state == state)
        with self._transaction() as connection:
            return [_mail(row) for row in connection.execute(query)]

    def mailCounts(self) -> dict[str, int]:
        """The messages of the outbox by state (C{queued}, C{sent}, C{failed})."""
        query = sa.select(mailOutbox.c.state, sa.func.count()).group_by(mailOutbox.c.state)
        with self._transaction() as connection:
            return {state: count for state, count in connection.execute(query)}

    def getMail(self, mailID: int) -> OutboxMail | None:
        with self._transaction() as connection:
            row = connection.execute(sa.select(mailOutbox).where(mailOutbox.c.id == mailID)).first()
        return None if row is None else _mail(row)

    # -- quarterly call logs

    def queueQuarterlyLog(
        self, prefix: str, quarter: str, recipient: str, subject: str, message: bytes, calls: int, now: float
    ) -> int | None:
        """
        Note that the call log of group C{prefix} for C{quarter} is made,
        and queue its message, in one transaction: unless it was made
        before (by this or another server).

        @return: the id of the message queued, or C{None} if the log had
            been made already.
        """
        with self._transaction(write=True) as connection:
            found = connection.execute(
                sa.select(quarterlyLogs.c.group_prefix).where(
                    quarterlyLogs.c.group_prefix == prefix, quarterlyLogs.c.quarter == quarter
                )
            ).first()
            if found is not None:
                return None
            mailID = _queue(connection, recipient, subject, message, f"quarterly {prefix} {quarter}", now)
            try:
                with connection.begin_nested():
                    connection.execute(
                        quarterlyLogs.insert().values(
                            group_prefix=prefix, quarter=quarter, mail_id=mailID, calls=calls, created_at=now
                        )
                    )
            except sa.exc.IntegrityError:
                connection.execute(mailOutbox.delete().where(mailOutbox.c.id == mailID))
                return None
            return mailID

    def quarterlyLogMade(self, prefix: str, quarter: str) -> int | None:
        """
        @return: the id of the message of the call log of C{prefix} for
            C{quarter}, C{0} if it was made without one, C{None} if not made.
        """
        with self._transaction() as connection:
            row = connection.execute(
                sa.select(quarterlyLogs.c.mail_id).where(
                    quarterlyLogs.c.group_prefix == prefix, quarterlyLogs.c.quarter == quarter
                )
            ).first()
        if row is None:
            return None
        return int(row.mail_id or 0)
