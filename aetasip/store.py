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
import sqlite3
import string
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

NUMBER_LENGTH = 8
"""Digits of a premium, escoopfone or hunting number."""

PREFIX_LENGTH = 4
"""Digits of a group prefix."""

PREFIX_PATTERN = re.compile(r"[0-9]{4}")

EIGHT_DIGIT_KINDS = frozenset({"premium", "escoopfone", "hunting"})
"""The kinds whose numbers have L{NUMBER_LENGTH} digits."""

MEMBER_KINDS = ("premium", "escoopfone")
"""The kinds of the regular members of a group."""

FIRST_MEMBER = 5001
LAST_MEMBER = 5999
"""The range of the 4 last digits of a group's regular members."""

HUNTING_NUMBER = 6000
"""The last 4 digits of a group's hunting group number."""

FIRST_HUNTING = 6001
LAST_HUNTING = 6999
"""The range of the 4 last digits of a group's hunting series."""

EMAIL_PATTERN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)

PASSWORD_LENGTH = 20
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


# -- errors ---------------------------------------------------------------------


def _switchToWAL(cursor: Any, patience: float) -> None:
    """
    Put a SQLite database in WAL mode, waiting up to C{patience} seconds.

    SQLite answers "database is locked" at once, without calling the busy
    handler, when another connection is switching the same new file to WAL
    (two processes opening it together): try again until it is done.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


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


class InvalidGroup(StoreError):
    """
    A group value (prefix, contact, option) or a membership is not acceptable.
    """


class GroupExists(StoreError):
    """
    A group with this prefix already exists.
    """


class NoSuchGroup(StoreError):
    """
    There is no group with this prefix.
    """


class GroupNotEmpty(StoreError):
    """
    The group still has accounts, so it cannot be deleted.
    """


class GroupFull(StoreError):
    """
    The group's sequence has no room for the numbers asked for.
    """


def checkNumber(number: str) -> str:
    """
    @return: C{number} if it is 1 to 32 ASCII digits.
    @raise InvalidAccount: otherwise.
    """
    if not isinstance(number, str) or NUMBER_PATTERN.fullmatch(number) is None:
        raise InvalidAccount(f"invalid number {number!r}: expected 1 to 32 digits")
    return number


def checkAccountNumber(number: str, kind: str) -> str:
    """
    Check C{number} for an account of C{kind}: premium, escoopfone and
    hunting numbers have 8 digits (SPEC "Accounts and numbers"); factory and
    test numbers (C{902080}, C{15000}) only need to be digits.

    @return: C{number}.
    @raise InvalidAccount: otherwise.
    """
    checkNumber(number)
    checkKind(kind)
    if kind in EIGHT_DIGIT_KINDS and len(number) != NUMBER_LENGTH:
        raise InvalidAccount(
            f"invalid {kind} number {number!r}: premium, escoopfone and hunting numbers have {NUMBER_LENGTH} digits"
        )
    return number


def checkPrefix(prefix: str) -> str:
    """
    @return: C{prefix} if it is exactly 4 ASCII digits.
    @raise InvalidGroup: otherwise.
    """
    if not isinstance(prefix, str) or PREFIX_PATTERN.fullmatch(prefix) is None:
        raise InvalidGroup(f"invalid group prefix {prefix!r}: expected {PREFIX_LENGTH} digits")
    return prefix


def checkEmail(address: str) -> str:
    """
    A simple but real check of an e-mail address: a dot-atom local part, and
    a domain of at least two labels of letters, digits and inner hyphens,
    the last one not all digits; at most 254 characters.

    @return: C{address}.
    @raise InvalidGroup: otherwise.
    """
    if not isinstance(address, str) or len(address) > 254 or EMAIL_PATTERN.fullmatch(address) is None:
        raise InvalidGroup(f"invalid e-mail address {address!r}")
    return address


def generatePassword() -> str:
    """
    A random SIP password of L{PASSWORD_LENGTH} letters and digits (some 119
    bits), easy to type on a codec's front panel.
    """
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


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
    @ivar group: the prefix of the group it belongs to, or C{None}.
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
    group: str | None = None

    def credentials(self) -> Credentials:
        """
        The digest credentials of this account.
        """
        return Credentials(self.number, self.kind, self.realm, {"MD5": self.ha1MD5, "SHA-256": self.ha1SHA256})


@attrs.frozen
class Group:
    """
    One row of the C{groups} table: a subscriber's group of premium numbers
    (guide section 5).

    @ivar prefix: the 4-digit prefix; members are prefix + 5001, 5002, …
    @ivar contact: the technical contact's e-mail address.
    @ivar incomingBlock: calls from outside the group to it are refused.
    @ivar outgoingBlock: calls from the group to outside it are refused.
    @ivar hunting: prefix + 6000 hunts the series prefix + 6001, 6002, …
    @ivar quarterlyLog: a call log is sent to the contact every quarter.
    @ivar selfCare: the members may use the self-care portal.
    @ivar nextMember: the last 4 digits of the next member to allocate,
        after every number ever assigned in the group.
    @ivar nextHunting: the same for the hunting series.
    @ivar createdAt: POSIX time of creation.
    @ivar updatedAt: POSIX time of the last change.
    """

    prefix: str
    contact: str
    incomingBlock: bool
    outgoingBlock: bool
    hunting: bool
    quarterlyLog: bool
    selfCare: bool
    nextMember: int
    nextHunting: int
    createdAt: float
    updatedAt: float

    @property
    def huntingNumber(self) -> str:
        """
        The hunting group number, prefix + 6000.
        """
        return f"{self.prefix}{HUNTING_NUMBER}"


GROUP_OPTIONS = {
    "contact": "contact",
    "incomingBlock": "incoming_block",
    "outgoingBlock": "outgoing_block",
    "hunting": "hunting",
    "quarterlyLog": "quarterly_log",
    "selfCare": "self_care",
}
"""The options of L{Store.updateGroup}, and their columns."""


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
    sa.Column("group_prefix", sa.String(4), nullable=True, index=True),
)

# No foreign key from accounts: the store checks membership in its write
# transactions, and the row of a group is locked while its members change.
groups = sa.Table(
    "groups",
    metadata,
    sa.Column("prefix", sa.String(4), primary_key=True),
    sa.Column("contact", sa.Text, nullable=False),
    sa.Column("incoming_block", sa.Boolean, nullable=False),
    sa.Column("outgoing_block", sa.Boolean, nullable=False),
    sa.Column("hunting", sa.Boolean, nullable=False),
    sa.Column("quarterly_log", sa.Boolean, nullable=False),
    sa.Column("self_care", sa.Boolean, nullable=False),
    sa.Column("next_member", sa.Integer, nullable=False),
    sa.Column("next_hunting", sa.Integer, nullable=False),
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


def _migration2(connection: sa.Connection) -> None:
    """
    Version 2: groups, and the group of each account. Existing accounts
    join no group: only an allocation or an explicit attachment does.
    """
    v2 = sa.MetaData()
    sa.Table(
        "groups",
        v2,
        sa.Column("prefix", sa.String(4), primary_key=True),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("incoming_block", sa.Boolean, nullable=False),
        sa.Column("outgoing_block", sa.Boolean, nullable=False),
        sa.Column("hunting", sa.Boolean, nullable=False),
        sa.Column("quarterly_log", sa.Boolean, nullable=False),
        sa.Column("self_care", sa.Boolean, nullable=False),
        sa.Column("next_member", sa.Integer, nullable=False),
        sa.Column("next_hunting", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    v2.create_all(connection)
    connection.exec_driver_sql("ALTER TABLE accounts ADD COLUMN group_prefix VARCHAR(4)")
    connection.exec_driver_sql("CREATE INDEX ix_accounts_group_prefix ON accounts (group_prefix)")


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_migration1, _migration2]
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
        group=row.group_prefix,
    )


def _group(row: sa.Row[Any]) -> Group:
    return Group(
        prefix=row.prefix,
        contact=row.contact,
        incomingBlock=bool(row.incoming_block),
        outgoingBlock=bool(row.outgoing_block),
        hunting=bool(row.hunting),
        quarterlyLog=bool(row.quarterly_log),
        selfCare=bool(row.self_care),
        nextMember=row.next_member,
        nextHunting=row.next_hunting,
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
        "group_prefix": account.group,
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


def _groupRow(group: Group) -> dict[str, Any]:
    return {
        "prefix": group.prefix,
        "contact": group.contact,
        "incoming_block": group.incomingBlock,
        "outgoing_block": group.outgoingBlock,
        "hunting": group.hunting,
        "quarterly_log": group.quarterlyLog,
        "self_care": group.selfCare,
        "next_member": group.nextMember,
        "next_hunting": group.nextHunting,
        "created_at": group.createdAt,
        "updated_at": group.updatedAt,
    }


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidGroup(f"invalid value {value!r} for {name}: expected True or False")
    return value


def _groupValues(options: dict[str, Any]) -> dict[str, Any]:
    """
    The column values of the L{Store.updateGroup} C{options}, checked.
    """
    if not options:
        raise InvalidGroup("nothing to change")
    values: dict[str, Any] = {}
    for name, value in options.items():
        if name not in GROUP_OPTIONS:
            raise InvalidGroup(f"unknown group option {name!r}: expected one of {', '.join(GROUP_OPTIONS)}")
        values[GROUP_OPTIONS[name]] = checkEmail(value) if name == "contact" else _flag(name, value)
    return values


def _checkMembership(number: str, kind: str, group: Group) -> None:
    """
    Check that the account C{number} of C{kind} may belong to C{group}:
    premium and escoopfone accounts from prefix + 5001 to 5999, hunting
    accounts from prefix + 6001 to 6999 in a group with hunting on.

    @raise InvalidAccount: otherwise.
    """
    prefix = group.prefix
    if kind not in (*MEMBER_KINDS, "hunting"):
        raise InvalidAccount(
            f"a {kind} account cannot belong to a group: only premium, escoopfone and hunting accounts do"
        )
    hunting = kind == "hunting"
    low, high = (FIRST_HUNTING, LAST_HUNTING) if hunting else (FIRST_MEMBER, LAST_MEMBER)
    inside = len(number) == NUMBER_LENGTH and number.startswith(prefix) and low <= int(number[PREFIX_LENGTH:]) <= high
    if not inside:
        series = "hunting series" if hunting else "sequence"
        raise InvalidAccount(f"{number} is not in the {series} of group {prefix}: {prefix}{low} to {prefix}{high}")
    if hunting and not group.hunting:
        raise InvalidAccount(f"group {prefix} has hunting off: hunting account {number} cannot belong to it")


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
            _switchToWAL(cursor, self._busyTimeout)
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
            group=group,
        )
        try:
            with self._transaction(write=True) as connection:
                if group is not None:
                    self._joinGroup(connection, number, kind, group, now)
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
                _checkMembership(number, kind, self._lockGroup(connection, prefix.group_prefix))
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
            verifyPortalPassword(_dummyPortalHash(), password)
            return False
        return verifyPortalPassword(encoded, password)

    # -- groups

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
        checkPrefix(prefix)
        checkEmail(contact)
        now = self._clock()
        group = Group(
            prefix=prefix,
            contact=contact,
            incomingBlock=_flag("incomingBlock", incomingBlock),
            outgoingBlock=_flag("outgoingBlock", outgoingBlock),
            hunting=_flag("hunting", hunting),
            quarterlyLog=_flag("quarterlyLog", quarterlyLog),
            selfCare=_flag("selfCare", selfCare),
            nextMember=FIRST_MEMBER,
            nextHunting=FIRST_HUNTING,
            createdAt=now,
            updatedAt=now,
        )
        try:
            with self._transaction(write=True) as connection:
                connection.execute(groups.insert().values(**_groupRow(group)))
        except sa.exc.IntegrityError:
            raise GroupExists(f"group {prefix} already exists") from None
        return group

    def getGroup(self, prefix: str) -> Group | None:
        """
        @return: the group C{prefix}, or C{None}.
        """
        with self._transaction() as connection:
            row = connection.execute(sa.select(groups).where(groups.c.prefix == prefix)).first()
        return None if row is None else _group(row)

    def listGroups(self) -> list[Group]:
        """
        @return: every group, by prefix.
        """
        with self._transaction() as connection:
            return [_group(row) for row in connection.execute(sa.select(groups).order_by(groups.c.prefix))]

    def updateGroup(self, prefix: str, realm: str = "", **options: Any) -> list[tuple[str, str]]:
        """
        Change the given options of the group C{prefix}: C{contact},
        C{incomingBlock}, C{outgoingBlock}, C{hunting}, C{quarterlyLog},
        C{selfCare}.

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
        values = _groupValues(options)
        now = self._clock()
        with self._transaction(write=True) as connection:
            self._lockGroup(connection, prefix)
            connection.execute(groups.update().where(groups.c.prefix == prefix).values(updated_at=now, **values))
            group = self._lockGroup(connection, prefix)
            return self._growHunting(connection, group, realm, now) if group.hunting else []

    def deleteGroup(self, prefix: str) -> None:
        """
        Delete the group C{prefix}, which must have no account left.

        @raise NoSuchGroup: when there is no such group.
        @raise GroupNotEmpty: when accounts still belong to it.
        """
        checkPrefix(prefix)
        with self._transaction(write=True) as connection:
            self._lockGroup(connection, prefix)
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
        @raise InvalidGroup: for a count below 1.
        @raise GroupFull: when the sequence would pass prefix + 5999.
        """
        checkPrefix(prefix)
        if kind not in MEMBER_KINDS:
            raise InvalidAccount(f"cannot allocate {kind!r} accounts: expected one of {', '.join(MEMBER_KINDS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidGroup(f"invalid count {count!r}: expected at least 1")
        if not realm:
            raise InvalidAccount("the realm must not be empty")
        now = self._clock()
        with self._transaction(write=True) as connection:
            group = self._lockGroup(connection, prefix)
            first = max(group.nextMember, self._highest(connection, prefix, FIRST_MEMBER, LAST_MEMBER) + 1)
            last = first + count - 1
            if last > LAST_MEMBER:
                room = max(0, LAST_MEMBER - first + 1)
                raise GroupFull(
                    f"group {prefix} has room for {room} more number(s) (up to {prefix}{LAST_MEMBER}), not {count}"
                )
            created = self._insertAccounts(connection, prefix, kind, range(first, last + 1), realm, now)
            connection.execute(
                groups.update().where(groups.c.prefix == prefix).values(next_member=last + 1, updated_at=now)
            )
            if group.hunting:
                created += self._growHunting(connection, group, realm, now)
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
                self._joinGroup(connection, number, row.kind, prefix, now)
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
            return [_account(row) for row in connection.execute(query)]

    def _lockGroup(self, connection: sa.Connection, prefix: str) -> Group:
        """
        Read the group C{prefix}, locked until the transaction ends (SQLite
        write transactions are serialised anyway).

        @raise NoSuchGroup: when there is no such group.
        """
        row = connection.execute(sa.select(groups).where(groups.c.prefix == prefix).with_for_update()).first()
        if row is None:
            raise NoSuchGroup(f"no group {prefix}")
        return _group(row)

    def _joinGroup(self, connection: sa.Connection, number: str, kind: str, prefix: str, now: float) -> None:
        """
        Check that C{number} of C{kind} may join the group C{prefix}, and
        move the group's high-water mark past it.
        """
        group = self._lockGroup(connection, prefix)
        _checkMembership(number, kind, group)
        following = int(number[PREFIX_LENGTH:]) + 1
        column = "next_hunting" if kind == "hunting" else "next_member"
        current = group.nextHunting if kind == "hunting" else group.nextMember
        connection.execute(
            groups.update().where(groups.c.prefix == prefix).values(**{column: max(current, following)}, updated_at=now)
        )

    def _highest(self, connection: sa.Connection, prefix: str, low: int, high: int) -> int:
        """
        The highest last 4 digits of the accounts from prefix + C{low} to
        prefix + C{high}, in the group or not; C{low - 1} when there is none.
        """
        highest = connection.execute(
            sa.select(sa.func.max(accounts.c.number)).where(
                sa.func.length(accounts.c.number) == NUMBER_LENGTH,
                accounts.c.number.between(f"{prefix}{low}", f"{prefix}{high}"),
            )
        ).scalar()
        return low - 1 if highest is None else int(highest[PREFIX_LENGTH:])

    def _insertAccounts(
        self, connection: sa.Connection, prefix: str, kind: str, suffixes: range, realm: str, now: float
    ) -> list[tuple[str, str]]:
        created = [(f"{prefix}{suffix:04d}", generatePassword()) for suffix in suffixes]
        rows = [
            {
                "number": number,
                "kind": kind,
                "display_name": "",
                "email": "",
                "portal_password_hash": None,
                "created_at": now,
                "updated_at": now,
                "group_prefix": prefix,
                **_ha1Columns(number, realm, password),
            }
            for number, password in created
        ]
        if rows:
            connection.execute(accounts.insert(), rows)
        return created

    def _growHunting(self, connection: sa.Connection, group: Group, realm: str, now: float) -> list[tuple[str, str]]:
        """
        Create hunting accounts until the series is as long as the group has
        members, after every hunting number ever assigned.
        """
        isHunting = accounts.c.kind == "hunting"
        query = sa.select(isHunting, sa.func.count()).where(
            accounts.c.group_prefix == group.prefix, accounts.c.kind.in_([*MEMBER_KINDS, "hunting"])
        )
        sizes = {bool(hunting): count for hunting, count in connection.execute(query.group_by(isHunting))}
        missing = sizes.get(False, 0) - sizes.get(True, 0)
        if missing <= 0:
            return []
        if not realm:
            raise InvalidAccount("the realm must not be empty: the hunting series needs new accounts")
        first = max(group.nextHunting, self._highest(connection, group.prefix, FIRST_HUNTING, LAST_HUNTING) + 1)
        last = first + missing - 1
        if last > LAST_HUNTING:
            raise GroupFull(f"the hunting series of group {group.prefix} would pass {group.prefix}{LAST_HUNTING}")
        created = self._insertAccounts(connection, group.prefix, "hunting", range(first, last + 1), realm, now)
        connection.execute(
            groups.update().where(groups.c.prefix == group.prefix).values(next_hunting=last + 1, updated_at=now)
        )
        return created

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
        group: str | None = None,
    ) -> defer.Deferred[Account]:
        """
        L{Store.addAccount} in the pool.
        """
        return self._run(
            self.store.addAccount, number, kind, password, realm, displayName, email, portalPassword, group
        )

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

    def addGroup(
        self,
        prefix: str,
        contact: str,
        incomingBlock: bool = False,
        outgoingBlock: bool = False,
        hunting: bool = False,
        quarterlyLog: bool = False,
        selfCare: bool = True,
    ) -> defer.Deferred[Group]:
        """
        L{Store.addGroup} in the pool.
        """
        return self._run(
            self.store.addGroup, prefix, contact, incomingBlock, outgoingBlock, hunting, quarterlyLog, selfCare
        )

    def getGroup(self, prefix: str) -> defer.Deferred[Group | None]:
        """
        L{Store.getGroup} in the pool.
        """
        return self._run(self.store.getGroup, prefix)

    def listGroups(self) -> defer.Deferred[list[Group]]:
        """
        L{Store.listGroups} in the pool.
        """
        return self._run(self.store.listGroups)

    def updateGroup(self, prefix: str, realm: str = "", **options: Any) -> defer.Deferred[list[tuple[str, str]]]:
        """
        L{Store.updateGroup} in the pool.
        """
        return self._run(self.store.updateGroup, prefix, realm, **options)

    def deleteGroup(self, prefix: str) -> defer.Deferred[None]:
        """
        L{Store.deleteGroup} in the pool.
        """
        return self._run(self.store.deleteGroup, prefix)

    def allocate(
        self, prefix: str, count: int, kind: str = "premium", realm: str = ""
    ) -> defer.Deferred[list[tuple[str, str]]]:
        """
        L{Store.allocate} in the pool.
        """
        return self._run(self.store.allocate, prefix, count, kind, realm)

    def setAccountGroup(self, number: str, prefix: str | None) -> defer.Deferred[None]:
        """
        L{Store.setAccountGroup} in the pool.
        """
        return self._run(self.store.setAccountGroup, number, prefix)

    def groupMembers(self, prefix: str) -> defer.Deferred[list[Account]]:
        """
        L{Store.groupMembers} in the pool.
        """
        return self._run(self.store.groupMembers, prefix)

    def huntingSeries(self, prefix: str) -> defer.Deferred[list[Account]]:
        """
        L{Store.huntingSeries} in the pool.
        """
        return self._run(self.store.huntingSeries, prefix)

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
