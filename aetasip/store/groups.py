"""
The group methods of L{aetasip.store.sql.Store}, and the queries they run
inside its write transactions: locking a group, continuing its sequence,
growing its hunting series.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa

from aetasip.store import rows
from aetasip.store.models import (
    FIRST_HUNTING,
    FIRST_MEMBER,
    LAST_HUNTING,
    LAST_MEMBER,
    MEMBER_KINDS,
    NUMBER_LENGTH,
    PREFIX_LENGTH,
    Account,
    Group,
    GroupExists,
    GroupFull,
    GroupNotEmpty,
    InvalidAccount,
    NoSuchAccount,
    NoSuchGroup,
    checkCount,
    checkEmail,
    checkFlag,
    checkMemberKind,
    checkMembership,
    checkPrefix,
    generatePassword,
)
from aetasip.store.schema import accounts, groups

# -- inside a write transaction ------------------------------------------------------


def lockGroup(connection: sa.Connection, prefix: str) -> Group:
    """
    Read the group C{prefix}, locked until the transaction ends (SQLite
    write transactions are serialised anyway).

    @raise NoSuchGroup: when there is no such group.
    """
    row = connection.execute(sa.select(groups).where(groups.c.prefix == prefix).with_for_update()).first()
    if row is None:
        raise NoSuchGroup(f"no group {prefix}")
    return rows.group(row)


def joinGroup(connection: sa.Connection, number: str, kind: str, prefix: str, now: float) -> None:
    """
    Check that C{number} of C{kind} may join the group C{prefix}, and
    move the group's high-water mark past it.
    """
    locked = lockGroup(connection, prefix)
    checkMembership(number, kind, locked)
    following = int(number[PREFIX_LENGTH:]) + 1
    column = "next_hunting" if kind == "hunting" else "next_member"
    current = locked.nextHunting if kind == "hunting" else locked.nextMember
    connection.execute(
        groups.update().where(groups.c.prefix == prefix).values(**{column: max(current, following)}, updated_at=now)
    )


def highest(connection: sa.Connection, prefix: str, low: int, high: int) -> int:
    """
    The highest last 4 digits of the accounts from prefix + C{low} to
    prefix + C{high}, in the group or not; C{low - 1} when there is none.
    """
    found = connection.execute(
        sa.select(sa.func.max(accounts.c.number)).where(
            sa.func.length(accounts.c.number) == NUMBER_LENGTH,
            accounts.c.number.between(f"{prefix}{low}", f"{prefix}{high}"),
        )
    ).scalar()
    return low - 1 if found is None else int(found[PREFIX_LENGTH:])


def insertAccounts(
    connection: sa.Connection, prefix: str, kind: str, suffixes: range, realm: str, now: float
) -> list[tuple[str, str]]:
    """
    Create the accounts prefix + C{suffixes} of C{kind} in the group
    C{prefix}, each with a new random SIP password.

    @return: C{(number, password)} of each.
    """
    created = [(f"{prefix}{suffix:04d}", generatePassword()) for suffix in suffixes]
    values = [
        {
            "number": number,
            "kind": kind,
            "display_name": "",
            "email": "",
            "portal_password_hash": None,
            "created_at": now,
            "updated_at": now,
            "group_prefix": prefix,
            **rows.ha1Columns(number, realm, password),
        }
        for number, password in created
    ]
    if values:
        connection.execute(accounts.insert(), values)
    return created


def growHunting(connection: sa.Connection, locked: Group, realm: str, now: float) -> list[tuple[str, str]]:
    """
    Create hunting accounts until the series of the group C{locked} is as
    long as the group has members, after every hunting number ever assigned.

    @return: C{(number, password)} of each new hunting account.
    """
    isHunting = accounts.c.kind == "hunting"
    query = sa.select(isHunting, sa.func.count()).where(
        accounts.c.group_prefix == locked.prefix, accounts.c.kind.in_([*MEMBER_KINDS, "hunting"])
    )
    sizes = {bool(hunting): count for hunting, count in connection.execute(query.group_by(isHunting))}
    missing = sizes.get(False, 0) - sizes.get(True, 0)
    if missing <= 0:
        return []
    if not realm:
        raise InvalidAccount("the realm must not be empty: the hunting series needs new accounts")
    prefix = locked.prefix
    first = max(locked.nextHunting, highest(connection, prefix, FIRST_HUNTING, LAST_HUNTING) + 1)
    last = first + missing - 1
    if last > LAST_HUNTING:
        raise GroupFull(f"the hunting series of group {prefix} would pass {prefix}{LAST_HUNTING}")
    created = insertAccounts(connection, prefix, "hunting", range(first, last + 1), realm, now)
    connection.execute(groups.update().where(groups.c.prefix == prefix).values(next_hunting=last + 1, updated_at=now))
    return created


# -- the methods ------------------------------------------------------------------------


class GroupMethods:
    """
    The group methods of L{aetasip.store.sql.Store}, which provides the
    clock and the transactions.
    """

    # Provided by the Store this is mixed into.
    _clock: Callable[[], float]
    _transaction: Callable[..., AbstractContextManager[sa.Connection]]

    def addGroup(
        self,
        prefix: str,
        contact: str,
        incomingBlock: bool = False,
        outgoingBlock: bool = False,
        hunting: bool = False,
        quarterlyLog: bool = False,
        selfCare: bool = True,
    ) -> Group:
        """
        Create the group C{prefix}, with no member yet.

        @param contact: the technical contact's e-mail address.
        @return: the new group.
        @raise InvalidGroup: for a bad prefix or contact.
        @raise GroupExists: when the prefix is taken.
        """
        now = self._clock()
        group = Group(
            prefix=checkPrefix(prefix),
            contact=checkEmail(contact),
            incomingBlock=checkFlag("incomingBlock", incomingBlock),
            outgoingBlock=checkFlag("outgoingBlock", outgoingBlock),
            hunting=checkFlag("hunting", hunting),
            quarterlyLog=checkFlag("quarterlyLog", quarterlyLog),
            selfCare=checkFlag("selfCare", selfCare),
            nextMember=FIRST_MEMBER,
            nextHunting=FIRST_HUNTING,
            createdAt=now,
            updatedAt=now,
        )
        try:
            with self._transaction(write=True) as connection:
                connection.execute(groups.insert().values(**rows.groupRow(group)))
        except sa.exc.IntegrityError:
            raise GroupExists(f"group {prefix} already exists") from None
        return group

    def getGroup(self, prefix: str) -> Group | None:
        """
        @return: the group C{prefix}, or C{None}.
        """
        with self._transaction() as connection:
            row = connection.execute(sa.select(groups).where(groups.c.prefix == prefix)).first()
        return None if row is None else rows.group(row)

    def listGroups(self) -> list[Group]:
        """
        @return: every group, by prefix.
        """
        with self._transaction() as connection:
            return [rows.group(row) for row in connection.execute(sa.select(groups).order_by(groups.c.prefix))]

    def updateGroup(self, prefix: str, realm: str = "", **options: Any) -> list[tuple[str, str]]:
        """
        Change the given options of the group C{prefix}: C{contact},
        C{incomingBlock}, C{outgoingBlock}, C{hunting}, C{quarterlyLog},
        C{selfCare}, C{relay}.

        Switching C{hunting} on creates the hunting series up to the size of
        the group, with new passwords in C{realm}. Switching it off keeps
        the series, unused, for when it is switched on again.

        @return: the new hunting accounts, C{(number, password)} each, to show once.
        @raise NoSuchGroup: when there is no such group.
        @raise InvalidGroup: for an unknown option or a bad value.
        @raise InvalidAccount: when the series must grow and C{realm} is empty.
        @raise GroupFull: when the series would pass prefix + 6999.
        """
        checkPrefix(prefix)
        values = rows.groupValues(options)
        now = self._clock()
        with self._transaction(write=True) as connection:
            lockGroup(connection, prefix)
            connection.execute(groups.update().where(groups.c.prefix == prefix).values(updated_at=now, **values))
            group = lockGroup(connection, prefix)
            return growHunting(connection, group, realm, now) if group.hunting else []

    def deleteGroup(self, prefix: str) -> None:
        """
        Delete the group C{prefix}, which must have no account left.

        @raise NoSuchGroup: when there is no such group.
        @raise GroupNotEmpty: when accounts still belong to it.
        """
        checkPrefix(prefix)
        with self._transaction(write=True) as connection:
            lockGroup(connection, prefix)
            left = connection.execute(
                sa.select(sa.func.count()).select_from(accounts).where(accounts.c.group_prefix == prefix)
            ).scalar_one()
            if left:
                raise GroupNotEmpty(f"group {prefix} still has {left} account(s): delete them (or detach them) first")
            connection.execute(groups.delete().where(groups.c.prefix == prefix))

    def allocate(self, prefix: str, count: int, kind: str = "premium", realm: str = "") -> list[tuple[str, str]]:
        """
        Create the next C{count} members of the group C{prefix}, continuing
        its sequence (prefix + 5001, 5002, …) after every number ever
        assigned in it, deleted ones included, each with a new random SIP
        password in C{realm}. When the group has hunting on, its hunting
        series grows to the same size in the same transaction.

        @param kind: C{premium} or C{escoopfone}.
        @return: the new accounts, members then hunting series, as
            C{(number, password)}: the passwords are not stored, show them once.
        @raise NoSuchGroup: when there is no such group.
        @raise InvalidAccount: for another kind or an empty realm.
        @raise InvalidGroup: for a count below 1 or above a whole sequence.
        @raise GroupFull: when the sequence would pass prefix + 5999.
        """
        checkPrefix(prefix)
        checkMemberKind(kind)
        checkCount(count)
        if not realm:
            raise InvalidAccount("the realm must not be empty")
        now = self._clock()
        with self._transaction(write=True) as connection:
            group = lockGroup(connection, prefix)
            first = max(group.nextMember, highest(connection, prefix, FIRST_MEMBER, LAST_MEMBER) + 1)
            last = first + count - 1
            if last > LAST_MEMBER:
                room = max(0, LAST_MEMBER - first + 1)
                raise GroupFull(
                    f"group {prefix} has room for {room} more number(s) (up to {prefix}{LAST_MEMBER}), not {count}"
                )
            created = insertAccounts(connection, prefix, kind, range(first, last + 1), realm, now)
            connection.execute(
                groups.update().where(groups.c.prefix == prefix).values(next_member=last + 1, updated_at=now)
            )
            if group.hunting:
                created += growHunting(connection, group, realm, now)
        return created

    def setAccountGroup(self, number: str, prefix: str | None) -> None:
        """
        Attach the account C{number} to the group C{prefix}, or detach it
        from its group with C{None}. The group's sequence then continues
        after it.

        @raise NoSuchAccount: when there is no such account.
        @raise NoSuchGroup: when there is no such group.
        @raise InvalidAccount: when the number or kind does not fit the
            group, or to detach a hunting account (delete it instead).
        """
        if prefix is not None:
            checkPrefix(prefix)
        now = self._clock()
        with self._transaction(write=True) as connection:
            row = connection.execute(
                sa.select(accounts.c.kind, accounts.c.group_prefix).where(accounts.c.number == number)
            ).first()
            if row is None:
                raise NoSuchAccount(f"no account {number}")
            if prefix is None:
                if row.kind == "hunting" and row.group_prefix is not None:
                    raise InvalidAccount(f"hunting account {number} cannot leave its group: delete it instead")
            else:
                joinGroup(connection, number, row.kind, prefix, now)
            connection.execute(
                accounts.update().where(accounts.c.number == number).values(group_prefix=prefix, updated_at=now)
            )

    def groupMembers(self, prefix: str) -> list[Account]:
        """
        @return: the premium and escoopfone accounts of the group C{prefix}, by number.
        """
        return self._groupAccounts(prefix, accounts.c.kind.in_(MEMBER_KINDS))

    def huntingSeries(self, prefix: str) -> list[Account]:
        """
        @return: the hunting accounts of the group C{prefix}, by number.
        """
        return self._groupAccounts(prefix, accounts.c.kind == "hunting")

    def _groupAccounts(self, prefix: str, condition: sa.ColumnElement[bool]) -> list[Account]:
        query = sa.select(accounts).where(accounts.c.group_prefix == prefix, condition).order_by(accounts.c.number)
        with self._transaction() as connection:
            return [rows.account(row) for row in connection.execute(query)]
