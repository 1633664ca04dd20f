"""
The SQL store: accounts and registrations, on SQLite or PostgreSQL.

L{Store} is synchronous: the admin CLI calls it directly, the service runs
it in threads through L{AsyncStore}, which L{StoreService} starts and
stops. Queries use SQLAlchemy Core.

The schema is versioned: the C{schema_version} table holds the number of
the last migration step applied, and L{Store.open} applies the missing
steps of L{MIGRATIONS} in one transaction, serialised between processes (a
write lock on SQLite, an advisory lock on PostgreSQL). A store whose schema
is newer than this code knows is refused with L{SchemaTooNew}.

A plain SIP password is never stored: only its digest HA1 values for the
account's realm. The self-care portal password is stored as a salted scrypt
hash (L{hashPortalPassword}).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, cast

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from aetasip.auth import ACCOUNT_KINDS, Credentials, computeHA1
from aetasip.location import Binding

log = Logger()

_P = ParamSpec("_P")
_R = TypeVar("_R")

NUMBER_PATTERN = re.compile(r"[0-9]{1,32}")


# -- errors ---------------------------------------------------------------------


class StoreError(Exception):
    """
    The store cannot do what was asked; C{str()} is a sentence to show.
    """


class AccountExists(StoreError):
    """
    An account with this number already exists.
    """


class NoSuchAccount(StoreError):
    """
    There is no account with this number.
    """


class InvalidAccount(StoreError):
    """
    An account value (number, kind, password, realm) is not acceptable.
    """


class SchemaTooNew(StoreError):
    """
    The database was migrated by a newer aetasip than this one.
    """


def checkNumber(number: str) -> str:
    """
    @return: C{number} if it is 1 to 32 ASCII digits.
    @raise InvalidAccount: otherwise.
    """
    if not isinstance(number, str) or NUMBER_PATTERN.fullmatch(number) is None:
        raise InvalidAccount(f"invalid number {number!r}: expected 1 to 32 digits")
    return number


def checkKind(kind: str) -> str:
    """
    @return: C{kind} if it is one of L{ACCOUNT_KINDS}.
    @raise InvalidAccount: otherwise.
    """
    if kind not in ACCOUNT_KINDS:
        raise InvalidAccount(f"unknown kind {kind!r}: expected one of {', '.join(ACCOUNT_KINDS)}")
    return kind


# -- portal password hashes -------------------------------------------------------

# Cost of the scrypt hash (16 MiB, some 50 ms); stored in each hash, so it can grow.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LENGTH = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hashPortalPassword(password: str) -> str:
    """
    Hash C{password} with scrypt and a random salt.

    @return: C{scrypt$n=N,r=R,p=P$SALT$HASH}, salt and hash in base64: the
        parameters travel with the hash, so they can change later.
    """
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_LENGTH
    )
    return f"scrypt$n={_SCRYPT_N},r={_SCRYPT_R},p={_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verifyPortalPassword(encoded: str, password: str) -> bool:
    """
    Whether C{password} matches C{encoded} (from L{hashPortalPassword}),
    compared in constant time. A malformed C{encoded} matches nothing.
    """
    try:
        scheme, parameters, salt64, digest64 = encoded.split("$")
        values = dict(item.split("=", 1) for item in parameters.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt = base64.b64decode(salt64, validate=True)
        expected = base64.b64decode(digest64, validate=True)
    except (ValueError, KeyError):
        return False
    if scheme != "scrypt" or not expected:
        return False
    try:
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=256 * 1024 * 1024
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


@functools.cache
def _dummyPortalHash() -> str:
    """
    A hash checked when there is no account or no portal password, so that
    a refusal takes as long as a wrong password and does not reveal which
    numbers exist. Made on first use: it costs a scrypt.
    """
    return hashPortalPassword(secrets.token_urlsafe(16))


# -- records ----------------------------------------------------------------------


@attrs.frozen
class Account:
    """
    One row of the C{accounts} table.

    @ivar number: the account number, 1 to 32 digits.
    @ivar kind: one of L{ACCOUNT_KINDS}.
    @ivar displayName: the subscriber's name for this account, or C{""}.
    @ivar email: contact e-mail address, or C{""}.
    @ivar realm: the digest realm the HA1 values were computed in.
    @ivar ha1MD5: hex HA1 for digest MD5.
    @ivar ha1SHA256: hex HA1 for digest SHA-256.
    @ivar portalPasswordHash: from L{hashPortalPassword}, or C{None} when the
        account has no portal password.
    @ivar createdAt: POSIX time of creation.
    @ivar updatedAt: POSIX time of the last change.
    """

    number: str
    kind: str
    displayName: str
    email: str
    realm: str
    ha1MD5: str
    ha1SHA256: str
    portalPasswordHash: str | None
    createdAt: float
    updatedAt: float

    def credentials(self) -> Credentials:
        """
        The digest credentials of this account.
        """
        return Credentials(self.number, self.kind, self.realm, {"MD5": self.ha1MD5, "SHA-256": self.ha1SHA256})


# -- the schema -----------------------------------------------------------------
#
# The tables below are the current schema, used by the queries. Each
# migration step creates or alters tables with its own definitions, frozen
# as they were at its version: never change a step once released, add one.

metadata = sa.MetaData()

schemaVersion = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("number", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("realm", sa.Text, nullable=False),
    sa.Column("ha1_md5", sa.String(32), nullable=False),
    sa.Column("ha1_sha256", sa.String(64), nullable=False),
    sa.Column("portal_password_hash", sa.Text, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# No foreign key to accounts: numbers of other backends (file, LDAP) register too.
bindings = sa.Table(
    "bindings",
    metadata,
    sa.Column("aor", sa.String(32), primary_key=True),
    sa.Column("contact", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.Double, nullable=False, index=True),
    sa.Column("call_id", sa.Text, nullable=False),
    sa.Column("cseq", sa.Integer, nullable=False),
    sa.Column("transport", sa.String(8), nullable=False),
    sa.Column("source_host", sa.Text, nullable=False),
    sa.Column("source_port", sa.Integer, nullable=False),
    sa.Column("local_host", sa.Text, nullable=False),
    sa.Column("local_port", sa.Integer, nullable=False),
    sa.Column("instance", sa.Text, nullable=True),
    sa.Column("reg_id", sa.Integer, nullable=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("user_agent", sa.Text, nullable=False),
    sa.Column("q", sa.Double, nullable=True),
    sa.Column("registered_at", sa.Double, nullable=False),
)


def _migration1(connection: sa.Connection) -> None:
    """
    Version 1: accounts and bindings.
    """
    v1 = sa.MetaData()
    sa.Table(
        "accounts",
        v1,
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("realm", sa.Text, nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("portal_password_hash", sa.Text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    sa.Table(
        "bindings",
        v1,
        sa.Column("aor", sa.String(32), primary_key=True),
        sa.Column("contact", sa.Text, primary_key=True),
        sa.Column("expires_at", sa.Double, nullable=False, index=True),
        sa.Column("call_id", sa.Text, nullable=False),
        sa.Column("cseq", sa.Integer, nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("source_host", sa.Text, nullable=False),
        sa.Column("source_port", sa.Integer, nullable=False),
        sa.Column("local_host", sa.Text, nullable=False),
        sa.Column("local_port", sa.Integer, nullable=False),
        sa.Column("instance", sa.Text, nullable=True),
        sa.Column("reg_id", sa.Integer, nullable=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("user_agent", sa.Text, nullable=False),
        sa.Column("q", sa.Double, nullable=True),
        sa.Column("registered_at", sa.Double, nullable=False),
    )
    v1.create_all(connection)


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_migration1]
"""
The migration steps in order: step I{i} (from 0) brings the schema to
version I{i + 1}.
"""

SCHEMA_VERSION = len(MIGRATIONS)

# Key of the PostgreSQL advisory lock that serialises migrations ("aetasip").
_MIGRATION_LOCK = 0x61657461736970


# -- the store ----------------------------------------------------------------------


def engineURL(url: str) -> sa.URL:
    """
    The SQLAlchemy URL for a C{store.url}: C{postgresql://} URLs use psycopg 3.
    """
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _bindingRow(binding: Binding) -> dict[str, Any]:
    return {
        "aor": binding.aor,
        "contact": binding.contact,
        "expires_at": binding.expiresAt,
        "call_id": binding.callID,
        "cseq": binding.cseq,
        "transport": binding.transport,
        "source_host": binding.source[0],
        "source_port": binding.source[1],
        "local_host": binding.local[0],
        "local_port": binding.local[1],
        "instance": binding.instance,
        "reg_id": binding.regID,
        "path": json.dumps(list(binding.path)),
        "user_agent": binding.userAgent,
        "q": binding.q,
        "registered_at": binding.registeredAt,
    }


def _binding(row: sa.Row[Any]) -> Binding:
    return Binding(
        aor=row.aor,
        contact=row.contact,
        expiresAt=row.expires_at,
        callID=row.call_id,
        cseq=row.cseq,
        transport=row.transport,
        source=(row.source_host, row.source_port),
        local=(row.local_host, row.local_port),
        instance=row.instance,
        regID=row.reg_id,
        path=list(json.loads(row.path)),
        userAgent=row.user_agent,
        q=row.q,
        registeredAt=row.registered_at,
    )


def _account(row: sa.Row[Any]) -> Account:
    return Account(
        number=row.number,
        kind=row.kind,
        displayName=row.display_name,
        email=row.email,
        realm=row.realm,
        ha1MD5=row.ha1_md5,
        ha1SHA256=row.ha1_sha256,
        portalPasswordHash=row.portal_password_hash,
        createdAt=row.created_at,
        updatedAt=row.updated_at,
    )


def _accountRow(account: Account) -> dict[str, Any]:
    return {
        "number": account.number,
        "kind": account.kind,
        "display_name": account.displayName,
        "email": account.email,
        "realm": account.realm,
        "ha1_md5": account.ha1MD5,
        "ha1_sha256": account.ha1SHA256,
        "portal_password_hash": account.portalPasswordHash,
        "created_at": account.createdAt,
        "updated_at": account.updatedAt,
    }


def _ha1Columns(number: str, realm: str, password: str) -> dict[str, str]:
    if not password:
        raise InvalidAccount("the SIP password must not be empty")
    if not realm:
        raise InvalidAccount("the realm must not be empty")
    return {
        "realm": realm,
        "ha1_md5": computeHA1("MD5", number, realm, password),
        "ha1_sha256": computeHA1("SHA-256", number, realm, password),
    }


class Store:
    """
    The accounts and bindings tables, synchronously.

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
        return sa.make_url(self.url).render_as_string(hide_password=True)

    # -- opening and closing

    def open(self) -> None:
        """
        Connect and bring the schema up to date. Does nothing when open.

        @raise SchemaTooNew: when the schema is newer than L{MIGRATIONS}.
        @raise sqlalchemy.exc.SQLAlchemyError: when the database cannot be used.
        """
        if self._engine is not None:
            return
        engine = self._makeEngine()
        self._engine = engine
        try:
            self._migrate()
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
            return self._readVersion(connection)

    def _makeEngine(self) -> sa.Engine:
        url = engineURL(self.url)
        if url.get_backend_name() == "sqlite":
            return self._makeSQLiteEngine(url)
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, round(self._busyTimeout))},
        )

    def _makeSQLiteEngine(self, url: sa.URL) -> sa.Engine:
        options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if url.database in (None, "", ":memory:"):
            # One shared connection, or each connection would be a new database.
            options["poolclass"] = sa.StaticPool
        engine = sa.create_engine(url, **options)
        busyMilliseconds = int(self._busyTimeout * 1000)

        @sa.event.listens_for(engine, "connect")
        def connect(dbapiConnection: Any, record: Any) -> None:
            # We emit BEGIN ourselves (below): pysqlite's own transaction
            # handling would commit before DDL and never take the write lock
            # up front.
            dbapiConnection.isolation_level = None
            cursor = dbapiConnection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busyMilliseconds}")
            # WAL: the admin CLI and the service use one file; readers do not block the writer.
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def begin(connection: sa.Connection) -> None:
            # A transaction that will write takes the write lock at once: a
            # deferred one that reads first could not wait for it later.
            write = connection.get_execution_options().get("aetasip_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sa.Connection]:
        if self._engine is None:
            raise StoreError("the store is not open")
        with self._engine.connect() as connection:
            if write:
                connection.execution_options(aetasip_write=True)
            with connection.begin():
                yield connection

    def _readVersion(self, connection: sa.Connection) -> int:
        if not sa.inspect(connection).has_table("schema_version"):
            return 0
        version = connection.execute(sa.select(schemaVersion.c.version)).scalar()
        return 0 if version is None else int(version)

    def _migrate(self) -> None:
        with self._transaction(write=True) as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            schemaVersion.create(connection, checkfirst=True)
            version = connection.execute(sa.select(schemaVersion.c.version)).scalar()
            if version is None:
                connection.execute(schemaVersion.insert().values(version=0))
                version = 0
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the store {self.describe()} has schema version {version}, but this aetasip knows "
                    f"versions up to {SCHEMA_VERSION}: upgrade aetasip"
                )
            for newVersion in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[newVersion - 1](connection)
                connection.execute(schemaVersion.update().values(version=newVersion))
                log.info(
                    "Store {store} migrated to schema version {version}", store=self.describe(), version=newVersion
                )

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
    ) -> Account:
        """
        Create an account with the SIP password C{password} in C{realm}.

        @return: the new account.
        @raise InvalidAccount: for a bad number, kind, password or realm.
        @raise AccountExists: when the number is taken.
        """
        checkNumber(number)
        checkKind(kind)
        if portalPassword == "":
            raise InvalidAccount("the portal password must not be empty")
        ha1 = _ha1Columns(number, realm, password)
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
        )
        try:
            with self._transaction(write=True) as connection:
                connection.execute(accounts.insert().values(**_accountRow(account)))
        except sa.exc.IntegrityError:
            raise AccountExists(f"account {number} already exists") from None
        return account

    def getAccount(self, number: str) -> Account | None:
        """
        @return: the account C{number}, or C{None}.
        """
        with self._transaction() as connection:
            row = connection.execute(sa.select(accounts).where(accounts.c.number == number)).first()
        return None if row is None else _account(row)

    def listAccounts(self, kind: str | None = None) -> list[Account]:
        """
        @return: every account (of C{kind}, if given), by number.
        """
        query = sa.select(accounts).order_by(sa.func.length(accounts.c.number), accounts.c.number)
        if kind is not None:
            query = query.where(accounts.c.kind == kind)
        with self._transaction() as connection:
            return [_account(row) for row in connection.execute(query)]

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
        self._update(number, _ha1Columns(number, realm, password))

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
        self, number: str, displayName: str | None = None, email: str | None = None, kind: str | None = None
    ) -> None:
        """
        Change the given fields of C{number}; C{None} leaves a field as it is.

        @raise NoSuchAccount: when there is no such account.
        @raise InvalidAccount: for an unknown kind.
        """
        values: dict[str, Any] = {}
        if displayName is not None:
            values["display_name"] = displayName
        if email is not None:
            values["email"] = email
        if kind is not None:
            values["kind"] = checkKind(kind)
        self._update(number, values)

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
            verifyPortalPassword(_dummyPortalHash(), password)
            return False
        return verifyPortalPassword(encoded, password)

    # -- bindings

    def saveBindings(self, toSave: Sequence[Binding]) -> None:
        """
        Insert C{toSave}, or update the rows with the same number and contact.
        """
        if not toSave:
            return
        with self._transaction(write=True) as connection:
            insert = (sqlite_dialect.insert if connection.dialect.name == "sqlite" else pg_dialect.insert)(bindings)
            statement = insert.on_conflict_do_update(
                index_elements=[bindings.c.aor, bindings.c.contact],
                set_={
                    column.name: insert.excluded[column.name]
                    for column in bindings.columns
                    if column.name not in ("aor", "contact")
                },
            )
            connection.execute(statement, [_bindingRow(binding) for binding in toSave])

    def deleteBindings(self, keys: Sequence[tuple[str, str]]) -> None:
        """
        Delete the bindings named by C{(aor, contact)} pairs; missing ones are ignored.
        """
        if not keys:
            return
        statement = bindings.delete().where(
            bindings.c.aor == sa.bindparam("keyAOR"), bindings.c.contact == sa.bindparam("keyContact")
        )
        with self._transaction(write=True) as connection:
            connection.execute(statement, [{"keyAOR": aor, "keyContact": contact} for aor, contact in keys])

    def loadBindings(self, now: float) -> list[Binding]:
        """
        Delete the bindings expired at C{now} and return the others, by
        number then expiry. The service calls it when it starts.
        """
        with self._transaction(write=True) as connection:
            expired = connection.execute(bindings.delete().where(bindings.c.expires_at <= now)).rowcount
            rows = connection.execute(sa.select(bindings).order_by(bindings.c.aor, bindings.c.expires_at)).all()
        if expired:
            log.info("Deleted {count} expired bindings from the store", count=expired)
        return [_binding(row) for row in rows]

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
            return [_binding(row) for row in connection.execute(query)]


# -- in threads -----------------------------------------------------------------------


class AsyncStore:
    """
    A L{Store} whose methods run in a thread pool of their own and return
    L{Deferred}s: the reactor never waits for the database.

    SQLite gets one thread (one writer at a time anyway, and calls then run
    in the order they were made); PostgreSQL several.

    @ivar store: the wrapped L{Store}.
    """

    def __init__(self, store: Store, threads: int | None = None, reactor: IReactorFromThreads | None = None) -> None:
        """
        @param threads: size of the pool; by default 1 for SQLite, 4 otherwise.
        @param reactor: delivers the results; the global reactor by default.
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = cast(IReactorFromThreads, globalReactor)
        if threads is None:
            threads = 1 if store.isSQLite else 4
        self.store = store
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name="aetasip-store")
        self._pending: set[defer.Deferred[Any]] = set()
        self._started = False
        self._stopped = False

    def start(self) -> None:
        """
        Start the threads. Calls made before are queued until then.
        """
        if not self._started:
            self._started = True
            self._pool.start()

    def stop(self) -> defer.Deferred[None]:
        """
        Refuse new calls, wait for the calls under way, close the store's
        connections and stop the threads.

        @return: a L{Deferred} that fires when all that is done.
        """
        self._stopped = True
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if not self._started:
            self.store.close()
            return
        await defer.DeferredList(list(self._pending))
        try:
            await deferToThreadPool(self._reactor, self._pool, self.store.close)
        finally:
            self._pool.stop()

    def _run(self, f: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> defer.Deferred[_R]:
        if self._stopped:
            return defer.fail(StoreError("the store is stopped"))
        d = deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)
        self._pending.add(d)

        def done(result: _R) -> _R:
            self._pending.discard(d)
            return result

        d.addBoth(done)
        return d

    def open(self) -> defer.Deferred[None]:
        """
        L{Store.open} in the pool.
        """
        return self._run(self.store.open)

    def addAccount(
        self,
        number: str,
        kind: str,
        password: str,
        realm: str,
        displayName: str = "",
        email: str = "",
        portalPassword: str | None = None,
    ) -> defer.Deferred[Account]:
        """
        L{Store.addAccount} in the pool.
        """
        return self._run(self.store.addAccount, number, kind, password, realm, displayName, email, portalPassword)

    def getAccount(self, number: str) -> defer.Deferred[Account | None]:
        """
        L{Store.getAccount} in the pool.
        """
        return self._run(self.store.getAccount, number)

    def listAccounts(self, kind: str | None = None) -> defer.Deferred[list[Account]]:
        """
        L{Store.listAccounts} in the pool.
        """
        return self._run(self.store.listAccounts, kind)

    def setPassword(self, number: str, password: str, realm: str) -> defer.Deferred[None]:
        """
        L{Store.setPassword} in the pool.
        """
        return self._run(self.store.setPassword, number, password, realm)

    def setPortalPassword(self, number: str, password: str | None) -> defer.Deferred[None]:
        """
        L{Store.setPortalPassword} in the pool.
        """
        return self._run(self.store.setPortalPassword, number, password)

    def updateAccount(
        self, number: str, displayName: str | None = None, email: str | None = None, kind: str | None = None
    ) -> defer.Deferred[None]:
        """
        L{Store.updateAccount} in the pool.
        """
        return self._run(self.store.updateAccount, number, displayName, email, kind)

    def deleteAccount(self, number: str) -> defer.Deferred[int]:
        """
        L{Store.deleteAccount} in the pool.
        """
        return self._run(self.store.deleteAccount, number)

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        """
        L{Store.credentials} in the pool.
        """
        return self._run(self.store.credentials, number)

    def checkPortalPassword(self, number: str, password: str) -> defer.Deferred[bool]:
        """
        L{Store.checkPortalPassword} in the pool.
        """
        return self._run(self.store.checkPortalPassword, number, password)

    def saveBindings(self, toSave: Sequence[Binding]) -> defer.Deferred[None]:
        """
        L{Store.saveBindings} in the pool.
        """
        return self._run(self.store.saveBindings, list(toSave))

    def deleteBindings(self, keys: Sequence[tuple[str, str]]) -> defer.Deferred[None]:
        """
        L{Store.deleteBindings} in the pool.
        """
        return self._run(self.store.deleteBindings, list(keys))

    def loadBindings(self, now: float) -> defer.Deferred[list[Binding]]:
        """
        L{Store.loadBindings} in the pool.
        """
        return self._run(self.store.loadBindings, now)

    def bindingsFor(self, number: str, now: float | None = None) -> defer.Deferred[list[Binding]]:
        """
        L{Store.bindingsFor} in the pool.
        """
        return self._run(self.store.bindingsFor, number, now)

    def allBindings(self, now: float | None = None) -> defer.Deferred[list[Binding]]:
        """
        L{Store.allBindings} in the pool.
        """
        return self._run(self.store.allBindings, now)


class StoreService(service.Service):
    """
    Opens the store when it starts and closes it when it stops.

    @ivar store: the L{AsyncStore} the other services use.
    """

    name = "store"

    def __init__(self, url: str, threads: int | None = None, reactor: IReactorFromThreads | None = None) -> None:
        """
        @param url: the C{store.url}.
        @param threads: see L{AsyncStore}.
        """
        self.store = AsyncStore(Store(url), threads=threads, reactor=reactor)

    def startService(self) -> None:
        """
        Open the store and migrate its schema, synchronously: nothing may use
        it before, and a failure (database down, schema too new) must stop
        the start. L{Store.open} does nothing when already open, so
        C{makeService} may open it first to report such a failure early.
        """
        self.store.store.open()
        self.store.start()
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        """
        Finish the queries under way, then close the store.
        """
        super().stopService()
        return self.store.stop()
