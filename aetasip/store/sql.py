"""
The SQL store, synchronously: accounts, groups, registrations, shared
secrets, call records and the mail outbox, on SQLite or PostgreSQL, with SQLAlchemy Core.

The admin CLI calls L{Store} directly (through
L{aetasip.store.provisioning}); the service runs it in threads through
L{aetasip.store.facade.AsyncStore}.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from twisted.logger import Logger

from aetasip.auth import Credentials
from aetasip.location import Binding
from aetasip.store import rows
from aetasip.store.callrecords import CallRecordMethods
from aetasip.store.engine import WRITE_OPTION, describeURL, engineURL, makeEngine
from aetasip.store.groups import GroupMethods, joinGroup, lockGroup
from aetasip.store.models import (
    Account,
    AccountExists,
    InvalidAccount,
    InvalidValue,
    NoSuchAccount,
    StoreError,
    checkAccountNumber,
    checkMembership,
    checkPrefix,
    checkRelay,
    dummyPortalHash,
    hashPortalPassword,
    storedRelay,
    verifyPortalPassword,
)
from aetasip.store.nodes import NodeMethods
from aetasip.store.outbox import OutboxMethods
from aetasip.store.schema import (
    ORIGIN_SETTING,
    accounts,
    bindings,
    migrate,
    readVersion,
    storedSecrets,
)
from aetasip.store.tokens import TokenMethods

log = Logger()

SECRET_LENGTH = 32
"""Bytes of a secret that L{Store.secret} creates."""

_SECRET_NAME_LENGTH = 64


def _newSecret() -> bytes:
    return secrets.token_bytes(SECRET_LENGTH)


class Store(GroupMethods, CallRecordMethods, OutboxMethods, NodeMethods, TokenMethods):
    """
    The accounts, groups, bindings and secrets tables, synchronously.

    Every method runs in its own short transaction, so one L{Store} may be
    used from several threads (one connection each).

    @ivar url: the C{store.url} it was made with.
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.time, busyTimeout: float = 10.0) -> None:
        """
        @param url: C{sqlite:///PATH} (relative to the working directory),
            C{sqlite://} (in memory, for tests) or
            C{postgresql://USER:PASSWORD@HOST:PORT/DATABASE}.
        @param clock: the time of creation and update stamps.
        @param busyTimeout: seconds a SQLite statement waits for another
            process's write lock, or a PostgreSQL connection for the server.
        """
        self.url = url
        self._clock = clock
        self._busyTimeout = busyTimeout
        self._engine: sa.Engine | None = None

    @property
    def isSQLite(self) -> bool:
        """
        Whether this store is a SQLite database (one writer at a time).
        """
        return engineURL(self.url).get_backend_name() == "sqlite"

    def describe(self) -> str:
        """
        The URL for messages, without its password.
        """
        return describeURL(self.url)

    # -- opening and closing

    def open(self) -> None:
        """
        Connect and bring the schema up to date. Does nothing when open.

        @raise SchemaTooNew: when the schema is newer than this code knows.
        @raise sqlalchemy.exc.SQLAlchemyError: when the database cannot be used.
        """
        if self._engine is not None:
            return
        engine = makeEngine(self.url, self._busyTimeout)
        self._engine = engine
        try:
            with self._transaction(write=True) as connection:
                migrate(connection, self.describe())
        except BaseException:
            self._engine = None
            engine.dispose()
            raise

    def close(self) -> None:
        """
        Close every connection. The store may be opened again.
        """
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def schemaVersion(self) -> int:
        """
        The version of the schema in the database (0: empty database).
        """
        with self._transaction() as connection:
            return readVersion(connection)

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sa.Connection]:
        if self._engine is None:
            raise StoreError("the store is not open")
        with self._engine.connect() as connection:
            if write:
                connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                yield connection

    # -- accounts

    def addAccount(
        self,
        number: str,
        kind: str,
        password: str,
        realm: str,
        displayName: str = "",
        email: str = "",
        portalPassword: str | None = None,
        group: str | None = None,
    ) -> Account:
        """
        Create an account with the SIP password C{password} in C{realm}.

        An account joins a group only when C{group} is given, even when its
        number starts with a group's prefix; a hunting account must join its
        group, which must have hunting on.

        @param group: the prefix of the group the account joins, or C{None}.
        @return: the new account.
        @raise InvalidAccount: for a bad number, kind, password or realm, or
            a number that is not in C{group}'s sequence.
        @raise NoSuchGroup: when there is no group C{group}.
        @raise AccountExists: when the number is taken.
        """
        checkAccountNumber(number, kind)
        if kind == "hunting" and group is None:
            raise InvalidAccount(
                f"hunting account {number} must belong to a group with hunting on: give its prefix, "
                "or let the group allocate its hunting series"
            )
        if group is not None:
            checkPrefix(group)
        if portalPassword == "":
            raise InvalidAccount("the portal password must not be empty")
        ha1 = rows.ha1Columns(number, realm, password)
        now = self._clock()
        account = Account(
            number=number,
            kind=kind,
            displayName=displayName,
            email=email,
            realm=realm,
            ha1MD5=ha1["ha1_md5"],
            ha1SHA256=ha1["ha1_sha256"],
            portalPasswordHash=None if portalPassword is None else hashPortalPassword(portalPassword),
            createdAt=now,
            updatedAt=now,
            group=group,
        )
        try:
            with self._transaction(write=True) as connection:
                if group is not None:
                    joinGroup(connection, number, kind, group, now)
                connection.execute(accounts.insert().values(**rows.accountRow(account)))
        except sa.exc.IntegrityError:
            raise AccountExists(f"account {number} already exists") from None
        return account

    def getAccount(self, number: str) -> Account | None:
        """
        @return: the account C{number}, or C{None}.
        """
        with self._transaction() as connection:
            row = connection.execute(sa.select(accounts).where(accounts.c.number == number)).first()
        return None if row is None else rows.account(row)

    def listAccounts(self, kind: str | None = None) -> list[Account]:
        """
        @return: every account (of C{kind}, if given), by number.
        """
        query = sa.select(accounts).order_by(sa.func.length(accounts.c.number), accounts.c.number)
        if kind is not None:
            query = query.where(accounts.c.kind == kind)
        with self._transaction() as connection:
            return [rows.account(row) for row in connection.execute(query)]

    def _update(self, number: str, values: dict[str, Any]) -> None:
        values["updated_at"] = self._clock()
        with self._transaction(write=True) as connection:
            result = connection.execute(accounts.update().where(accounts.c.number == number).values(**values))
        if result.rowcount == 0:
            raise NoSuchAccount(f"no account {number}")

    def setPassword(self, number: str, password: str, realm: str) -> None:
        """
        Change the SIP password of C{number}, hashed for C{realm}.

        @raise NoSuchAccount: when there is no such account.
        @raise InvalidAccount: for an empty password or realm.
        """
        self._update(number, rows.ha1Columns(number, realm, password))

    def setPortalPassword(self, number: str, password: str | None) -> None:
        """
        Set the self-care portal password of C{number}; C{None} removes it.

        @raise NoSuchAccount: when there is no such account.
        @raise InvalidAccount: for an empty password.
        """
        if password == "":
            raise InvalidAccount("the portal password must not be empty")
        self._update(number, {"portal_password_hash": None if password is None else hashPortalPassword(password)})

    def updateAccount(
        self,
        number: str,
        displayName: str | None = None,
        email: str | None = None,
        kind: str | None = None,
        relay: str | None = None,
    ) -> None:
        """
        Change the given fields of C{number}; C{None} leaves a field as it is.
        C{relay} is a relay mode, or C{"inherit"} (its group's).

        @raise NoSuchAccount: when there is no such account.
        @raise InvalidAccount: for an unknown kind, or one its number or
            group does not allow (a 5-digit premium account, a hunting
            account outside a group with hunting on, a premium account in
            the hunting series).
        """
        values: dict[str, Any] = {}
        if displayName is not None:
            values["display_name"] = displayName
        if email is not None:
            values["email"] = email
        if relay is not None:
            values["relay"] = storedRelay(checkRelay(relay))
        if kind is None:
            self._update(number, values)
            return
        checkAccountNumber(number, kind)
        values["kind"] = kind
        values["updated_at"] = self._clock()
        with self._transaction(write=True) as connection:
            prefix = connection.execute(sa.select(accounts.c.group_prefix).where(accounts.c.number == number)).first()
            if prefix is None:
                raise NoSuchAccount(f"no account {number}")
            if prefix.group_prefix is not None:
                checkMembership(number, kind, lockGroup(connection, prefix.group_prefix))
            elif kind == "hunting":
                raise InvalidAccount(f"hunting account {number} must belong to a group with hunting on")
            connection.execute(accounts.update().where(accounts.c.number == number).values(**values))

    def deleteAccount(self, number: str) -> int:
        """
        Delete the account C{number} and its bindings.

        @return: the number of bindings deleted with it.
        @raise NoSuchAccount: when there is no such account.
        """
        with self._transaction(write=True) as connection:
            deleted = connection.execute(accounts.delete().where(accounts.c.number == number)).rowcount
            if deleted == 0:
                raise NoSuchAccount(f"no account {number}")
            return connection.execute(bindings.delete().where(bindings.c.aor == number)).rowcount

    def credentials(self, number: str) -> Credentials | None:
        """
        @return: the digest credentials of C{number}, or C{None}.
        """
        query = sa.select(
            accounts.c.number, accounts.c.kind, accounts.c.realm, accounts.c.ha1_md5, accounts.c.ha1_sha256
        )
        with self._transaction() as connection:
            row = connection.execute(query.where(accounts.c.number == number)).first()
        if row is None:
            return None
        return Credentials(row.number, row.kind, row.realm, {"MD5": row.ha1_md5, "SHA-256": row.ha1_sha256})

    def checkPortalPassword(self, number: str, password: str) -> bool:
        """
        Whether C{password} is the portal password of C{number}. Takes as
        long when there is no such account or no portal password.
        """
        with self._transaction() as connection:
            encoded = connection.execute(
                sa.select(accounts.c.portal_password_hash).where(accounts.c.number == number)
            ).scalar()
        if encoded is None:
            verifyPortalPassword(dummyPortalHash(), password)
            return False
        return verifyPortalPassword(encoded, password)

    # -- bindings

    def saveBindings(self, toSave: Sequence[Binding], origin: str | None = None) -> None:
        """
        Insert C{toSave}, or update the rows with the same number and contact.

        @param origin: the writer's origin, carried by the PostgreSQL
            notification of the change (see L{_markOrigin}).
        """
        if not toSave:
            return
        with self._transaction(write=True) as connection:
            self._markOrigin(connection, origin)
            insert = self._insert(connection, bindings)
            statement = insert.on_conflict_do_update(
                index_elements=[bindings.c.aor, bindings.c.contact],
                set_={
                    column.name: insert.excluded[column.name]
                    for column in bindings.columns
                    if column.name not in ("aor", "contact")
                },
            )
            connection.execute(statement, [rows.bindingRow(binding, origin) for binding in toSave])

    def deleteBindings(self, keys: Sequence[tuple[str, str]], origin: str | None = None) -> None:
        """
        Delete the bindings named by C{(aor, contact)} pairs; missing ones are ignored.
        """
        if not keys:
            return
        statement = bindings.delete().where(
            bindings.c.aor == sa.bindparam("keyAOR"), bindings.c.contact == sa.bindparam("keyContact")
        )
        with self._transaction(write=True) as connection:
            self._markOrigin(connection, origin)
            connection.execute(statement, [{"keyAOR": aor, "keyContact": contact} for aor, contact in keys])

    def expireBindings(self, keys: Sequence[tuple[str, str, float]], origin: str | None = None) -> None:
        """
        Delete the bindings named by C{(aor, contact, expiresAt)} that
        expire at C{expiresAt} or before: a row another server refreshed
        meanwhile (a later expiry) stays.
        """
        if not keys:
            return
        statement = bindings.delete().where(
            bindings.c.aor == sa.bindparam("keyAOR"),
            bindings.c.contact == sa.bindparam("keyContact"),
            bindings.c.expires_at <= sa.bindparam("keyExpiry"),
        )
        with self._transaction(write=True) as connection:
            self._markOrigin(connection, origin)
            connection.execute(
                statement,
                [{"keyAOR": aor, "keyContact": contact, "keyExpiry": expiry} for aor, contact, expiry in keys],
            )

    def expireOrphanBinding(self, aor: str, contact: str, expiresAt: float, origin: str | None = None) -> bool:
        """
        Delete the binding of a dead server (see
        L{aetasip.location.LocationService.orphaned}) if it still expires
        at C{expiresAt} or before.

        @return: whether this call deleted it (so that its expiry is
            announced once, whichever server gets there first).
        """
        with self._transaction(write=True) as connection:
            self._markOrigin(connection, origin)
            result = connection.execute(
                bindings.delete().where(
                    bindings.c.aor == aor, bindings.c.contact == contact, bindings.c.expires_at <= expiresAt
                )
            )
            return bool(result.rowcount == 1)

    def expireOrphanBindings(self, live: Sequence[str], now: float, origin: str | None = None) -> list[Binding]:
        """
        Delete the bindings expired by C{now} that no live server wrote
        (their writer's origin is not in C{live}: it died, or stopped).

        @return: the bindings this call deleted (each by one caller only).
        """
        statement = (
            bindings.delete()
            .where(bindings.c.expires_at <= now, bindings.c.origin.not_in(list(live)))
            .returning(*bindings.columns)
        )
        with self._transaction(write=True) as connection:
            self._markOrigin(connection, origin)
            return [rows.binding(row) for row in connection.execute(statement)]

    @staticmethod
    def _markOrigin(connection: sa.Connection, origin: str | None) -> None:
        """
        On PostgreSQL, name C{origin} as the writer of the transaction of
        C{connection}: the notifications of its binding changes carry it.
        """
        if origin is not None and connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT set_config(:name, :origin, true)"), {"name": ORIGIN_SETTING, "origin": origin}
            )

    def bindingsOf(self, numbers: Sequence[str], now: float | None = None) -> list[Binding]:
        """
        @return: the bindings of the C{numbers} (unexpired at C{now}, if
            given), by number then expiry.
        """
        if not numbers:
            return []
        return self._selectBindings(bindings.c.aor.in_(sorted(set(numbers))), now)

    def loadBindings(self, now: float) -> list[Binding]:
        """
        Delete the bindings expired at C{now} and return the others, by
        number then expiry. The service calls it when it starts.
        """
        with self._transaction(write=True) as connection:
            expired = connection.execute(bindings.delete().where(bindings.c.expires_at <= now)).rowcount
            found = connection.execute(sa.select(bindings).order_by(bindings.c.aor, bindings.c.expires_at)).all()
        if expired:
            log.info("Deleted {count} expired bindings from the store", count=expired)
        return [rows.binding(row) for row in found]

    def bindingsFor(self, number: str, now: float | None = None) -> list[Binding]:
        """
        @return: the bindings of C{number} (unexpired at C{now}, if given), by expiry.
        """
        return self._selectBindings(bindings.c.aor == number, now)

    def allBindings(self, now: float | None = None) -> list[Binding]:
        """
        @return: every binding (unexpired at C{now}, if given), by number
            then expiry. Unlike L{loadBindings}, it deletes nothing.
        """
        return self._selectBindings(sa.true(), now)

    def _selectBindings(self, condition: sa.ColumnElement[bool], now: float | None) -> list[Binding]:
        query = sa.select(bindings).where(condition)
        if now is not None:
            query = query.where(bindings.c.expires_at > now)
        query = query.order_by(sa.func.length(bindings.c.aor), bindings.c.aor, bindings.c.expires_at)
        with self._transaction() as connection:
            return [rows.binding(row) for row in connection.execute(query)]

    # -- secrets

    def secret(self, name: str) -> bytes:
        """
        The random secret called C{name}, shared by every server on this
        store: made of L{SECRET_LENGTH} random bytes on first use, then
        always the same. Two stores asking at once for a new one get the
        same value: each inserts its candidate only if there is none, then
        reads back the one that was kept.

        @param name: 1 to 64 characters, such as C{"dialog-token"}.
        @raise InvalidValue: for a bad name.
        """
        if not isinstance(name, str) or not 1 <= len(name) <= _SECRET_NAME_LENGTH:
            raise InvalidValue(f"invalid secret name {name!r}: expected 1 to {_SECRET_NAME_LENGTH} characters")
        query = sa.select(storedSecrets.c.value).where(storedSecrets.c.name == name)
        with self._transaction() as connection:
            found = connection.execute(query).scalar()
        if found is not None:
            return bytes(found)
        candidate = _newSecret()
        with self._transaction(write=True) as connection:
            # ON CONFLICT DO NOTHING waits for a concurrent insert of the
            # same name to commit, then keeps it; the read that follows
            # sees it (each PostgreSQL statement reads what is committed).
            insert = self._insert(connection, storedSecrets).values(
                name=name, value=candidate, created_at=self._clock()
            )
            connection.execute(insert.on_conflict_do_nothing(index_elements=[storedSecrets.c.name]))
            return bytes(connection.execute(query).scalar_one())

    @staticmethod
    def _insert(connection: sa.Connection, table: sa.Table) -> Any:
        """
        An INSERT of C{table} in the dialect of C{connection}, which can
        say what to do on a conflict (C{ON CONFLICT}, in both).
        """
        return (sqlite_dialect.insert if connection.dialect.name == "sqlite" else pg_dialect.insert)(table)
