"""
The database engines of the store: the SQLAlchemy URL of a C{store.url}
(psycopg 3 for PostgreSQL, several servers listed libpq-style), how a
URL is described without its password, and the engines themselves
(SQLite in WAL mode with a busy timeout, its files readable by their
owner only; PostgreSQL with a connect timeout).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from typing import Any

import sqlalchemy as sa
from twisted.logger import Logger

log = Logger()

WRITE_OPTION = "aetasip_write"
"""
The execution option of a connection whose transaction will write: on
SQLite it begins with C{BEGIN IMMEDIATE} (see L{makeEngine}).
"""


def engineURL(url: str) -> sa.URL:
    """
    The SQLAlchemy URL for a C{store.url}: C{postgresql://} URLs use psycopg 3.

    A PostgreSQL URL may name several servers as libpq does (see
    L{splitHosts}); its SQLAlchemy URL then names none, and L{makeEngine}
    gives libpq the whole URL.
    """
    hosts = splitHosts(url)
    parsed = sa.make_url(url if hosts is None else hosts[0])
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def splitHosts(url: str) -> tuple[str, list[str]] | None:
    """
    A libpq URL with several servers,
    C{postgresql://USER:PASSWORD@HOST1:PORT1,HOST2:PORT2/DATABASE?target_session_attrs=read-write}
    (libpq tries them in order at each new connection; an IPv6 address is
    written in brackets), as C{(the URL without its servers and parameters,
    [HOST1:PORT1, HOST2:PORT2])}; C{None} for any other URL.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("postgresql", "postgres"):
        return None
    end = len(rest)
    for mark in "/?":
        index = rest.find(mark)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return None
    path = tail.partition("?")[0]
    return f"{scheme}://{userinfo}{at}{path}", [host for host in hosts.split(",") if host]


def describeURL(url: str) -> str:
    """A C{store.url} for messages, without its password."""
    hosts = splitHosts(url)
    if hosts is None:
        return sa.make_url(url).render_as_string(hide_password=True)
    bare = sa.make_url(hosts[0]).render_as_string(hide_password=True)
    scheme, _, rest = bare.partition("://")
    credentials, at, path = rest.partition("@") if "@" in rest else ("", "", rest)
    query = url.partition("?")[2]
    return f"{scheme}://{credentials}{at}{','.join(hosts[1])}{path}{'?' + query if query else ''}"


def switchToWAL(cursor: Any, patience: float) -> None:
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


def ownerOnly(path: str) -> None:
    """
    Make the SQLite file C{path} readable by its owner only, creating it
    so when absent: it holds HA1 values, which are password equivalents.
    SQLite gives its -wal and -shm files the database file's mode. A file
    already readable by others is tightened, with a warning. (A missing
    directory is not created: a typing error in a path is reported; the
    systemd unit makes /var/lib/aetasip owner-only.)
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except (FileExistsError, FileNotFoundError):
        # Existing; or no such directory, which SQLite reports when it opens.
        pass
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            info = os.stat(name)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and info.st_uid == os.geteuid():
            os.chmod(name, mode & 0o700)
            log.warn(
                "The store file {name} was readable by others (mode {mode:o}): now owner-only", name=name, mode=mode
            )


def makeEngine(url: str, busyTimeout: float) -> sa.Engine:
    """
    The engine of a C{store.url}.

    @param busyTimeout: seconds a SQLite statement waits for another
        process's write lock, or a PostgreSQL connection for the server.
    """
    parsed = engineURL(url)
    if parsed.get_backend_name() == "sqlite":
        return _makeSQLiteEngine(parsed, busyTimeout)
    connectArguments: dict[str, Any] = {"connect_timeout": max(1, round(busyTimeout))}
    if splitHosts(url) is not None:
        # libpq reads the servers, their order and target_session_attrs itself.
        connectArguments["conninfo"] = url
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connectArguments)


def _makeSQLiteEngine(url: sa.URL, busyTimeout: float) -> sa.Engine:
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if url.database in (None, "", ":memory:"):
        # One shared connection, or each connection would be a new database.
        options["poolclass"] = sa.StaticPool
    elif not url.database.startswith("file:"):
        ownerOnly(url.database)
    engine = sa.create_engine(url, **options)
    busyMilliseconds = int(busyTimeout * 1000)

    @sa.event.listens_for(engine, "connect")
    def connect(dbapiConnection: Any, record: Any) -> None:
        # We emit BEGIN ourselves (below): pysqlite's own transaction
        # handling would commit before DDL and never take the write lock
        # up front.
        dbapiConnection.isolation_level = None
        cursor = dbapiConnection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busyMilliseconds}")
        # WAL: the admin CLI and the service use one file; readers do not block the writer.
        switchToWAL(cursor, busyTimeout)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        # A transaction that will write takes the write lock at once: a
        # deferred one that reads first could not wait for it later.
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
