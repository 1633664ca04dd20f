"""
Tests for L{aetasip.store}: the SQL store on SQLite, and its async facade.

The behaviours every database must have are in test cases that take their
databases from L{SQLiteURLs}; L{tests.test_store_postgresql} runs the same
test cases on PostgreSQL by giving them another mixin.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.auth import computeHA1, credentialsFromPassword
from aetasip.location import Binding
from aetasip.store import (
    SCHEMA_VERSION,
    SECRET_LENGTH,
    AccountExists,
    AsyncStore,
    InvalidAccount,
    InvalidValue,
    NoSuchAccount,
    SchemaTooNew,
    Store,
    StoreError,
    StoreService,
    engine,
    engineURL,
    hashPortalPassword,
    inThreads,
    schema,
    sql,
    verifyPortalPassword,
)

REALM = "aetasip"


class FakeClock:
    """
    A settable time source for creation and update stamps.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sqliteURL(testCase: SynchronousTestCase) -> tuple[str, str]:
    """
    A SQLite URL in a new directory of C{testCase}, and the file's path.
    """
    directory = os.path.abspath(testCase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "store.db")
    return f"sqlite:///{path}", path


def sqlite(path: str, statement: str) -> list[tuple[object, ...]]:
    """
    Run C{statement} on the SQLite file C{path} behind the store's back.
    """
    with closing(sqlite3.connect(path)) as connection, connection:
        return connection.execute(statement).fetchall()


def execute(url: str, statement: str) -> list[tuple[object, ...]]:
    """
    Run C{statement} on the database of the store URL C{url} behind the
    store's back, in a transaction of its own.

    @return: the rows, if the statement returns any.
    """
    engine = sa.create_engine(engineURL(url), poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            result = connection.exec_driver_sql(statement)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def tableNames(url: str) -> set[str]:
    """
    The tables of the database of the store URL C{url}.
    """
    engine = sa.create_engine(engineURL(url), poolclass=sa.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def makeVersion(url: str, version: int) -> None:
    """
    Bring the empty database of C{url} to schema C{version} with the first
    migration steps, as an older aetasip left it.
    """
    engine = sa.create_engine(engineURL(url), poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            schema.schemaVersion.create(connection)
            connection.execute(schema.schemaVersion.insert().values(version=version))
            for step in schema.MIGRATIONS[:version]:
                step(connection)
    finally:
        engine.dispose()


def columnNames(url: str) -> dict[str, set[str]]:
    """
    The columns of each table of the database of C{url}.
    """
    engine = sa.create_engine(engineURL(url), poolclass=sa.NullPool)
    try:
        inspector = sa.inspect(engine)
        return {
            table: {column["name"] for column in inspector.get_columns(table)} for table in inspector.get_table_names()
        }
    finally:
        engine.dispose()


# The tables of schema version 2, as released: migration steps 1 and 2 must
# keep making exactly these.
VERSION_2_COLUMNS = {
    "schema_version": {"version"},
    "accounts": set(
        "number kind display_name email realm ha1_md5 ha1_sha256 portal_password_hash created_at updated_at "
        "group_prefix".split()
    ),
    "bindings": set(
        "aor contact expires_at call_id cseq transport source_host source_port local_host local_port instance "
        "reg_id path user_agent q registered_at".split()
    ),
    "groups": set(
        "prefix contact incoming_block outgoing_block hunting quarterly_log self_care next_member next_hunting "
        "created_at updated_at".split()
    ),
}


class StoreURLs:
    """
    Mixin for store test cases: where their databases are.
    """

    def newStoreURL(self) -> str:
        """
        The URL of a new, empty database.
        """
        raise NotImplementedError()

    def openStore(self, clock: FakeClock | None = None) -> Store:
        """
        A store on a new database, open, closed when the test ends.
        """
        store = Store(self.newStoreURL(), clock=clock or FakeClock())
        store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return store


class SQLiteURLs(StoreURLs):
    """
    Each store is a new SQLite file.
    """

    def newStoreURL(self) -> str:
        url, _path = sqliteURL(self)  # type: ignore[arg-type]
        return url


def makeBinding(aor: str = "45675001", contact: str = "sip:45675001@192.168.1.10:5060", **changes: object) -> Binding:
    values: dict[str, object] = {
        "aor": aor,
        "contact": contact,
        "expiresAt": 2000.0,
        "callID": "a84b4c76e66710",
        "cseq": 314159,
        "transport": "udp",
        "source": ("203.0.113.5", 40123),
        "local": ("198.51.100.1", 5070),
        "instance": '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
        "regID": 1,
        "path": ["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"],
        "userAgent": "AETA Scoopy+ 5.04",
        "q": 0.5,
        "registeredAt": 900.0,
    }
    values.update(changes)
    return Binding(**values)  # type: ignore[arg-type]


def fields(binding: Binding) -> dict[str, object]:
    """
    The persisted fields of C{binding}.
    """
    return {
        name: getattr(binding, name)
        for name in (
            "aor contact expiresAt callID cseq transport source local instance regID path userAgent q registeredAt"
        ).split()
    }


class MigrationTests(SQLiteURLs, SynchronousTestCase):
    """
    Opening a store creates and upgrades its schema.
    """

    def test_empty_database_is_migrated_to_current_version(self) -> None:
        store = self.openStore()
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION)
        self.assertEqual(execute(store.url, "SELECT version FROM schema_version"), [(SCHEMA_VERSION,)])

    def test_migrated_tables_match_the_current_schema(self) -> None:
        """
        The migration steps create exactly the tables and columns the queries use.
        """
        store = self.openStore()
        engine = sa.create_engine(engineURL(store.url), poolclass=sa.NullPool)
        self.addCleanup(engine.dispose)
        inspector = sa.inspect(engine)
        for table in schema.metadata.sorted_tables:
            self.assertEqual(
                {column["name"] for column in inspector.get_columns(table.name)},
                {column.name for column in table.columns},
                table.name,
            )
        self.assertEqual(inspector.get_pk_constraint("bindings")["constrained_columns"], ["aor", "contact"])

    def test_reopening_keeps_data_and_version(self) -> None:
        store = self.openStore()
        store.addAccount("45675001", "premium", "secret", REALM)
        store.close()
        store.open()
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION)
        self.assertIsNotNone(store.getAccount("45675001"))

    def test_open_twice_is_harmless(self) -> None:
        store = self.openStore()
        store.open()
        self.assertEqual(store.listAccounts(), [])

    def test_later_steps_run_once_from_the_stored_version(self) -> None:
        store = self.openStore()
        store.close()
        ran: list[int] = []

        def step2(connection: sa.Connection) -> None:
            ran.append(2)
            connection.exec_driver_sql("CREATE TABLE extra (x INTEGER)")

        self.patch(schema, "MIGRATIONS", [*schema.MIGRATIONS, step2])
        self.patch(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        store.open()
        store.close()
        store.open()
        self.assertEqual(ran, [2])
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION + 1)

    def test_failed_step_leaves_the_schema_as_it_was(self) -> None:
        store = self.openStore()
        store.close()

        def step2(connection: sa.Connection) -> None:
            connection.exec_driver_sql("CREATE TABLE extra (x INTEGER)")
            raise RuntimeError("step failed")

        self.patch(schema, "MIGRATIONS", [*schema.MIGRATIONS, step2])
        self.patch(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        self.assertRaises(RuntimeError, store.open)
        self.assertNotIn("extra", tableNames(store.url))
        self.assertEqual(execute(store.url, "SELECT version FROM schema_version"), [(SCHEMA_VERSION,)])

    def test_newer_schema_is_refused(self) -> None:
        store = self.openStore()
        store.close()
        execute(store.url, "UPDATE schema_version SET version = 99")
        error = self.assertRaises(SchemaTooNew, store.open)
        self.assertIn("schema version 99", str(error))
        self.assertIn("upgrade aetasip", str(error))
        self.assertRaises(StoreError, store.listAccounts)

    def test_released_steps_are_frozen(self) -> None:
        """
        Steps 1 and 2 were released: they still make the version 2 schema,
        column for column. Change the schema with a new step instead.
        """
        url = self.newStoreURL()
        makeVersion(url, 2)
        self.assertEqual(columnNames(url), VERSION_2_COLUMNS)

    def test_empty_database_gets_the_secrets_table(self) -> None:
        store = self.openStore()
        self.assertGreaterEqual(SCHEMA_VERSION, 3)
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION)
        self.assertEqual(columnNames(store.url)["secrets"], {"name", "value", "created_at"})

    def test_version_2_database_is_migrated_to_3(self) -> None:
        url = self.newStoreURL()
        makeVersion(url, 2)
        before = Store(url)
        before.open()
        self.addCleanup(before.close)
        self.assertEqual(before.schemaVersion(), SCHEMA_VERSION)
        # Later steps add their own columns (the relay's, below).
        columns = columnNames(url)
        for table, names in {**VERSION_2_COLUMNS, "secrets": {"name", "value", "created_at"}}.items():
            self.assertLessEqual(names, columns[table], table)
        self.assertEqual(len(before.secret("dialog-token")), 32)

    def test_an_upgrade_logs_one_line(self) -> None:
        """A new store, and an older one brought up to date: one line each, not one per step."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        url = self.newStoreURL()
        makeVersion(url, 2)
        older = Store(url)
        older.open()
        self.addCleanup(older.close)
        self.openStore()
        texts = [formatEvent(e) for e in events if "schema version" in formatEvent(e)]
        self.assertEqual(
            [t.split(" migrated ")[-1].split(" created ")[-1] for t in texts],
            [f"from schema version 2 to {SCHEMA_VERSION}", f"at schema version {SCHEMA_VERSION}"],
        )

    def migratedStore(self, version: int) -> tuple[str, Store]:
        """
        A database an older aetasip left at schema C{version}, holding
        account 45675001 (Studio 1, password 'secret'), then opened (so
        migrated) by a store closed when the test ends: its URL, the store.
        """
        url = self.newStoreURL()
        makeVersion(url, version)
        execute(
            url,
            "INSERT INTO accounts (number, kind, display_name, email, realm, ha1_md5, ha1_sha256, created_at, "
            f"updated_at) VALUES ('45675001', 'premium', 'Studio 1', '', '{REALM}', "
            f"'{computeHA1('MD5', '45675001', REALM, 'secret')}', "
            f"'{computeHA1('SHA-256', '45675001', REALM, 'secret')}', 1.0, 1.0)",
        )
        store = Store(url)
        store.open()
        self.addCleanup(store.close)
        return url, store

    def test_migration_adds_the_relay_modes(self) -> None:
        """Accounts and groups get a relay mode, NULL (inherited) for those already there."""
        url, store = self.migratedStore(2)
        self.assertEqual(columnNames(url)["accounts"] - VERSION_2_COLUMNS["accounts"], {"relay"})
        self.assertIn("relay", columnNames(url)["groups"])
        account = store.getAccount("45675001")
        assert account is not None
        self.assertIsNone(account.relay)
        store.updateAccount("45675001", relay="always")
        self.assertEqual(store.getAccount("45675001").relay, "always")  # type: ignore[union-attr]
        store.updateAccount("45675001", relay="inherit")
        self.assertIsNone(store.getAccount("45675001").relay)  # type: ignore[union-attr]
        self.assertRaises(InvalidAccount, store.updateAccount, "45675001", relay="sometimes")

    def test_version_3_database_gets_the_call_records_tables(self) -> None:
        """
        The call-record step adds call_records, record_servers, mail_outbox
        and quarterly_logs to a database of the steps before it, whose data
        stays.
        """
        url, store = self.migratedStore(schema.MIGRATIONS.index(schema._migrationCallRecords))
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION)
        columns = columnNames(url)
        for table in ("call_records", "record_servers", "mail_outbox", "quarterly_logs"):
            self.assertEqual(columns[table], {column.name for column in schema.metadata.tables[table].columns}, table)
        account = store.getAccount("45675001")
        assert account is not None
        self.assertEqual(account.displayName, "Studio 1")
        self.assertEqual(store.callRecords(), [])

    def test_version_2_data_survives_the_migration(self) -> None:
        _url, store = self.migratedStore(2)
        self.assertEqual(store.credentials("45675001"), credentialsFromPassword("45675001", "premium", REALM, "secret"))

    def test_concurrent_opens_migrate_once(self) -> None:
        """
        Two stores opening one empty database at once (a main and a backup
        server starting together): one migrates, the other waits for it and
        finds the schema current.
        """
        url = self.newStoreURL()
        ran: list[str] = []
        firstStep = schema.MIGRATIONS[0]

        def slowFirstStep(connection: sa.Connection) -> None:
            ran.append(threading.current_thread().name)
            time.sleep(0.3)  # while the other store tries to migrate too
            firstStep(connection)

        self.patch(schema, "MIGRATIONS", [slowFirstStep, *schema.MIGRATIONS[1:]])
        stores = [Store(url), Store(url)]
        for store in stores:
            self.addCleanup(store.close)
        together = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def opening(store: Store) -> None:
            together.wait(10)
            try:
                store.open()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=opening, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(ran), 1)
        self.assertEqual(execute(url, "SELECT version FROM schema_version"), [(SCHEMA_VERSION,)])
        stores[0].addAccount("45675001", "premium", "secret", REALM)
        self.assertIsNotNone(stores[1].getAccount("45675001"))


class SQLiteFileTests(SynchronousTestCase):
    """
    What is particular to SQLite files and in-memory databases.
    """

    def setUp(self) -> None:
        url, self.path = sqliteURL(self)
        self.store = Store(url, clock=FakeClock())
        self.store.open()
        self.addCleanup(self.store.close)

    def test_sqlite_file_uses_wal(self) -> None:
        self.assertEqual(sqlite(self.path, "PRAGMA journal_mode"), [("wal",)])

    def test_wal_switch_waits_for_another_connection_switching(self) -> None:
        """
        SQLite refuses at once, without its busy handler, to switch a file
        another connection is switching to WAL: the store tries again.
        """
        attempts: list[str] = []

        class Cursor:
            def execute(self, statement: str) -> None:
                attempts.append(statement)
                if len(attempts) < 3:
                    raise sqlite3.OperationalError("database is locked")

        engine.switchToWAL(Cursor(), 5.0)
        self.assertEqual(attempts, ["PRAGMA journal_mode = WAL"] * 3)

    def test_wal_switch_gives_up_after_its_patience(self) -> None:
        class Cursor:
            def execute(self, statement: str) -> None:
                raise sqlite3.OperationalError("database is locked")

        self.assertRaises(sqlite3.OperationalError, engine.switchToWAL, Cursor(), 0.05)

    def test_wal_switch_raises_other_errors_at_once(self) -> None:
        calls: list[str] = []

        class Cursor:
            def execute(self, statement: str) -> None:
                calls.append(statement)
                raise sqlite3.OperationalError("disk I/O error")

        self.assertRaises(sqlite3.OperationalError, engine.switchToWAL, Cursor(), 5.0)
        self.assertEqual(len(calls), 1)

    def test_plain_password_is_never_written_to_the_file(self) -> None:
        self.store.addAccount("45675001", "premium", "Plain-Secret-42", REALM, portalPassword="Portal-Secret-43")
        self.store.setPassword("45675001", "Plain-Secret-44", REALM)
        stored = repr([execute(self.store.url, f'SELECT * FROM "{table}"') for table in tableNames(self.store.url)])
        self.assertIn(computeHA1("MD5", "45675001", REALM, "Plain-Secret-44"), stored)
        for secret in ["Plain-Secret-42", "Portal-Secret-43", "Plain-Secret-44"]:
            self.assertNotIn(secret, stored)

    def test_in_memory_database_is_one_database(self) -> None:
        store = Store("sqlite://")
        store.open()
        self.addCleanup(store.close)
        store.addAccount("15000", "test", "secret", REALM)
        self.assertEqual([a.number for a in store.listAccounts()], ["15000"])


class StoreURLTests(SynchronousTestCase):
    """
    What the URL of a store decides, without a database.
    """

    def test_unopened_store_refuses_queries(self) -> None:
        store = Store("sqlite://")
        error = self.assertRaises(StoreError, store.getAccount, "15000")
        self.assertIn("not open", str(error))

    def test_postgresql_urls_use_psycopg(self) -> None:
        url = engineURL("postgresql://aetasip:pw@db.example.net:5432/aetasip")
        self.assertEqual(url.drivername, "postgresql+psycopg")
        self.assertEqual((url.host, url.port, url.database), ("db.example.net", 5432, "aetasip"))
        self.assertFalse(Store("postgresql://aetasip:pw@db/aetasip").isSQLite)
        self.assertTrue(Store("sqlite:///aetasip.db").isSQLite)

    def test_described_url_hides_the_password(self) -> None:
        description = Store("postgresql://aetasip:hunter2@db/aetasip").describe()
        self.assertNotIn("hunter2", description)
        self.assertIn("db/aetasip", description)

    def test_threads_by_database(self) -> None:
        sqlite = AsyncStore(Store("sqlite://"))
        postgresql = AsyncStore(Store("postgresql://aetasip@db/aetasip"))
        self.assertEqual((sqlite._pool.min, sqlite._pool.max), (1, 1))
        self.assertEqual((postgresql._pool.min, postgresql._pool.max), (4, 4))
        self.assertEqual(AsyncStore(Store("sqlite://"), threads=3)._pool.max, 3)


class AccountTests(SQLiteURLs, SynchronousTestCase):
    """
    Accounts: create, read, change, delete.
    """

    def setUp(self) -> None:
        self.clock = FakeClock(1000.0)
        self.store = self.openStore(self.clock)

    def test_added_account_is_read_back(self) -> None:
        added = self.store.addAccount("45675001", "premium", "secret", REALM, "Studio 1", "tech@example.net")
        account = self.store.getAccount("45675001")
        self.assertEqual(account, added)
        assert account is not None
        self.assertEqual(
            (account.kind, account.displayName, account.email, account.realm),
            ("premium", "Studio 1", "tech@example.net", REALM),
        )
        self.assertEqual(account.ha1MD5, computeHA1("MD5", "45675001", REALM, "secret"))
        self.assertEqual(account.ha1SHA256, computeHA1("SHA-256", "45675001", REALM, "secret"))
        self.assertEqual((account.createdAt, account.updatedAt), (1000.0, 1000.0))
        self.assertIsNone(account.portalPasswordHash)

    def test_unknown_account_is_none(self) -> None:
        self.assertIsNone(self.store.getAccount("45675001"))
        self.assertIsNone(self.store.credentials("45675001"))

    def test_taken_number_is_refused(self) -> None:
        self.store.addAccount("45675001", "premium", "secret", REALM)
        error = self.assertRaises(AccountExists, self.store.addAccount, "45675001", "test", "other", REALM)
        self.assertEqual(str(error), "account 45675001 already exists")
        account = self.store.getAccount("45675001")
        assert account is not None
        self.assertEqual(account.kind, "premium")

    def test_non_digit_number_is_refused(self) -> None:
        for number in ["4567x001", "", "1" * 33, "+33123", "٤٥٦"]:
            self.assertRaises(InvalidAccount, self.store.addAccount, number, "premium", "secret", REALM)
        self.assertEqual(self.store.listAccounts(), [])

    def test_wrong_kind_is_refused(self) -> None:
        error = self.assertRaises(InvalidAccount, self.store.addAccount, "45675001", "gold", "secret", REALM)
        self.assertIn("gold", str(error))

    def test_empty_password_is_refused(self) -> None:
        self.assertRaises(InvalidAccount, self.store.addAccount, "45675001", "premium", "", REALM)
        self.assertRaises(InvalidAccount, self.store.addAccount, "45675001", "premium", "x", REALM, portalPassword="")

    def test_plain_password_is_never_stored(self) -> None:
        self.store.addAccount("45675001", "premium", "Plain-Secret-42", REALM, portalPassword="Portal-Secret-43")
        self.store.setPassword("45675001", "Plain-Secret-44", REALM)
        stored = repr([execute(self.store.url, f'SELECT * FROM "{table}"') for table in tableNames(self.store.url)])
        self.assertIn(computeHA1("MD5", "45675001", REALM, "Plain-Secret-44"), stored)
        for secret in ["Plain-Secret-42", "Portal-Secret-43", "Plain-Secret-44"]:
            self.assertNotIn(secret, stored)

    def test_accounts_are_listed_by_number_and_filtered_by_kind(self) -> None:
        self.store.addAccount("45675002", "premium", "a", REALM)
        self.store.addAccount("15000", "test", "b", REALM)
        self.store.addAccount("45675001", "escoopfone", "c", REALM)
        self.assertEqual([a.number for a in self.store.listAccounts()], ["15000", "45675001", "45675002"])
        self.assertEqual([a.number for a in self.store.listAccounts("premium")], ["45675002"])
        self.assertEqual(self.store.listAccounts("hunting"), [])

    def test_new_password_changes_the_digests(self) -> None:
        self.store.addAccount("45675001", "premium", "old", REALM)
        self.clock.now = 2000.0
        self.store.setPassword("45675001", "new", "studio")
        credentials = self.store.credentials("45675001")
        assert credentials is not None
        self.assertEqual(credentials.realm, "studio")
        self.assertEqual(credentials.ha1["SHA-256"], computeHA1("SHA-256", "45675001", "studio", "new"))
        self.assertEqual(credentials.ha1["MD5"], computeHA1("MD5", "45675001", "studio", "new"))
        account = self.store.getAccount("45675001")
        assert account is not None
        self.assertEqual((account.createdAt, account.updatedAt), (1000.0, 2000.0))

    def test_changes_to_unknown_account_are_refused(self) -> None:
        self.assertRaises(NoSuchAccount, self.store.setPassword, "45675001", "new", REALM)
        self.assertRaises(NoSuchAccount, self.store.setPortalPassword, "45675001", "new")
        self.assertRaises(NoSuchAccount, self.store.updateAccount, "45675001", displayName="x")
        self.assertRaises(NoSuchAccount, self.store.deleteAccount, "45675001")

    def test_update_changes_only_given_fields(self) -> None:
        self.store.addAccount("45675001", "test", "secret", REALM, "Studio 1", "old@example.net")
        self.store.updateAccount("45675001", email="new@example.net")
        self.store.updateAccount("45675001", kind="premium")
        account = self.store.getAccount("45675001")
        assert account is not None
        self.assertEqual((account.kind, account.displayName, account.email), ("premium", "Studio 1", "new@example.net"))
        self.assertRaises(InvalidAccount, self.store.updateAccount, "45675001", kind="gold")

    def test_delete_removes_account_and_its_bindings(self) -> None:
        self.store.addAccount("45675001", "premium", "secret", REALM)
        self.store.saveBindings([makeBinding(), makeBinding(contact="sip:other@10.0.0.1"), makeBinding(aor="15000")])
        self.assertEqual(self.store.deleteAccount("45675001"), 2)
        self.assertIsNone(self.store.getAccount("45675001"))
        self.assertEqual([b.aor for b in self.store.allBindings()], ["15000"])

    def test_credentials_carry_kind_realm_and_both_digests(self) -> None:
        self.store.addAccount("45675001", "escoopfone", "secret", REALM)
        credentials = self.store.credentials("45675001")
        assert credentials is not None
        self.assertEqual((credentials.number, credentials.kind, credentials.realm), ("45675001", "escoopfone", REALM))
        self.assertEqual(set(credentials.ha1), {"MD5", "SHA-256"})


class PortalPasswordTests(SQLiteURLs, SynchronousTestCase):
    """
    The self-care portal password is a salted scrypt hash.
    """

    def setUp(self) -> None:
        self.store = self.openStore()
        self.store.addAccount("45675001", "premium", "sip-secret", REALM, portalPassword="portal-secret")

    def test_right_portal_password_is_accepted(self) -> None:
        self.assertTrue(self.store.checkPortalPassword("45675001", "portal-secret"))

    def test_wrong_portal_password_is_refused(self) -> None:
        self.assertFalse(self.store.checkPortalPassword("45675001", "portal-secreT"))
        self.assertFalse(self.store.checkPortalPassword("45675001", "sip-secret"))

    def test_unknown_account_or_no_portal_password_is_refused(self) -> None:
        self.assertFalse(self.store.checkPortalPassword("45675002", "portal-secret"))
        self.store.addAccount("45675002", "premium", "sip-secret", REALM)
        self.assertFalse(self.store.checkPortalPassword("45675002", ""))

    def test_portal_password_can_be_changed_and_removed(self) -> None:
        self.store.setPortalPassword("45675001", "new-portal")
        self.assertTrue(self.store.checkPortalPassword("45675001", "new-portal"))
        self.assertFalse(self.store.checkPortalPassword("45675001", "portal-secret"))
        self.store.setPortalPassword("45675001", None)
        self.assertFalse(self.store.checkPortalPassword("45675001", "new-portal"))

    def test_hash_is_salted_and_self_describing(self) -> None:
        first, second = hashPortalPassword("same"), hashPortalPassword("same")
        self.assertNotEqual(first, second)
        self.assertTrue(first.startswith("scrypt$n=16384,r=8,p=1$"))
        self.assertTrue(verifyPortalPassword(first, "same"))
        self.assertTrue(verifyPortalPassword(second, "same"))

    def test_malformed_hash_matches_nothing(self) -> None:
        for encoded in [
            "",
            "scrypt",
            "md5$n=1,r=1,p=1$AAAA$AAAA",
            "scrypt$n=x$AAAA$AAAA",
            "scrypt$n=16384,r=8,p=1$!!$AA",
        ]:
            self.assertFalse(verifyPortalPassword(encoded, "anything"), encoded)


class BindingTests(SQLiteURLs, SynchronousTestCase):
    """
    Registrations survive a restart through the bindings table.
    """

    def setUp(self) -> None:
        self.store = self.openStore()

    def test_saved_binding_is_read_back_whole(self) -> None:
        binding = makeBinding()
        self.store.saveBindings([binding])
        [loaded] = self.store.bindingsFor("45675001")
        self.assertEqual(fields(loaded), fields(binding))
        self.assertIsNone(loaded.connection)

    def test_optional_fields_may_be_empty(self) -> None:
        binding = makeBinding(instance=None, regID=None, path=[], userAgent="", q=None)
        self.store.saveBindings([binding])
        [loaded] = self.store.bindingsFor("45675001")
        self.assertEqual(fields(loaded), fields(binding))

    def test_saving_same_contact_updates_it(self) -> None:
        self.store.saveBindings([makeBinding()])
        refreshed = makeBinding(expiresAt=3000.0, cseq=314160, source=("203.0.113.6", 40200))
        self.store.saveBindings([refreshed])
        [loaded] = self.store.bindingsFor("45675001")
        self.assertEqual(fields(loaded), fields(refreshed))

    def test_bindings_are_deleted_by_number_and_contact(self) -> None:
        self.store.saveBindings([makeBinding(), makeBinding(contact="sip:b@10.0.0.2"), makeBinding(aor="15000")])
        self.store.deleteBindings([("45675001", "sip:b@10.0.0.2"), ("45675001", "sip:absent@10.0.0.3")])
        self.assertEqual(
            [(b.aor, b.contact) for b in self.store.allBindings()],
            [("15000", "sip:45675001@192.168.1.10:5060"), ("45675001", "sip:45675001@192.168.1.10:5060")],
        )

    def test_load_returns_unexpired_and_deletes_expired(self) -> None:
        self.store.saveBindings(
            [
                makeBinding(contact="sip:late@10.0.0.1", expiresAt=1600.0),
                makeBinding(contact="sip:gone@10.0.0.2", expiresAt=1400.0),
                makeBinding(contact="sip:early@10.0.0.3", expiresAt=1550.0),
                makeBinding(aor="15000", contact="sip:at-now@10.0.0.4", expiresAt=1500.0),
            ]
        )
        loaded = self.store.loadBindings(1500.0)
        self.assertEqual([b.contact for b in loaded], ["sip:early@10.0.0.3", "sip:late@10.0.0.1"])
        self.assertEqual(len(self.store.allBindings()), 2)

    def test_bindings_for_a_number_can_skip_expired(self) -> None:
        self.store.saveBindings(
            [makeBinding(expiresAt=1400.0), makeBinding(contact="sip:b@10.0.0.2", expiresAt=1600.0)]
        )
        self.assertEqual(len(self.store.bindingsFor("45675001")), 2)
        self.assertEqual([b.contact for b in self.store.bindingsFor("45675001", now=1500.0)], ["sip:b@10.0.0.2"])
        self.assertEqual([b.contact for b in self.store.allBindings(now=1500.0)], ["sip:b@10.0.0.2"])

    def test_empty_lists_do_nothing(self) -> None:
        self.store.saveBindings([])
        self.store.deleteBindings([])
        self.assertEqual(self.store.allBindings(), [])


class AsyncStoreTests(SQLiteURLs, TestCase):
    """
    L{AsyncStore} and L{StoreService} run the store in threads.
    """

    @defer.inlineCallbacks
    def test_service_opens_serves_and_stops(self):  # type: ignore[no-untyped-def]
        service = StoreService(self.newStoreURL())
        service.startService()
        self.assertTrue(service.running)
        store = service.store
        account = yield store.addAccount("45675001", "premium", "secret", REALM)
        self.assertEqual((yield store.getAccount("45675001")), account)
        credentials = yield store.credentials("45675001")
        self.assertEqual(credentials, account.credentials())
        yield store.saveBindings([makeBinding(expiresAt=10.0**10)])
        self.assertEqual(len((yield store.loadBindings(1.0))), 1)
        yield service.stopService()
        self.assertFalse(service.running)
        failure = yield self.assertFailure(store.getAccount("45675001"), StoreError)
        self.assertIn("stopped", str(failure))

    @defer.inlineCallbacks
    def test_errors_reach_the_caller(self):  # type: ignore[no-untyped-def]
        service = StoreService(self.newStoreURL())
        service.startService()
        self.addCleanup(service.stopService)
        yield service.store.addAccount("45675001", "premium", "secret", REALM)
        yield self.assertFailure(service.store.addAccount("45675001", "premium", "x", REALM), AccountExists)

    @defer.inlineCallbacks
    def test_stop_waits_for_queued_work(self):  # type: ignore[no-untyped-def]
        url = self.newStoreURL()
        service = StoreService(url)
        service.startService()
        queued = [service.store.addAccount(str(45675001 + i), "premium", "secret", REALM) for i in range(5)]
        stopped = service.stopService()
        results = yield defer.gatherResults(queued)
        yield stopped
        self.assertEqual(len(results), 5)
        check = Store(url)
        check.open()
        self.addCleanup(check.close)
        self.assertEqual(len(check.listAccounts()), 5)

    @defer.inlineCallbacks
    def test_stopping_twice_finishes_twice(self):  # type: ignore[no-untyped-def]
        """A second stop, during the first or after it, fires too (it used to hang)."""
        sync = Store(self.newStoreURL())
        sync.open()
        store = AsyncStore(sync)
        store.start()
        self.addCleanup(store.stop)
        yield store.addAccount("45675001", "premium", "secret", REALM)
        first, second = store.stop(), store.stop()
        yield defer.gatherResults([first, second])
        yield store.stop()

    def test_schema_too_new_stops_the_start(self) -> None:
        url = self.newStoreURL()
        first = Store(url)
        first.open()
        first.close()
        execute(url, "UPDATE schema_version SET version = 99")
        service = StoreService(url)
        self.assertRaises(SchemaTooNew, service.startService)
        self.assertFalse(service.running)

    @defer.inlineCallbacks
    def test_stop_before_start_closes_the_store(self):  # type: ignore[no-untyped-def]
        store = AsyncStore(Store(self.newStoreURL()))
        yield store.stop()
        yield self.assertFailure(store.credentials("15000"), StoreError)

    @defer.inlineCallbacks
    def test_four_threads_run_four_calls_at_once(self):  # type: ignore[no-untyped-def]
        """
        With four threads, four calls run at the same time, each on its own
        connection, and every answer reaches its caller.
        """
        store = self.openStore()
        threaded = AsyncStore(store, threads=4)
        threaded.start()
        self.addCleanup(threaded.stop)
        numbers = [str(45675001 + i) for i in range(8)]
        yield defer.gatherResults([threaded.addAccount(n, "premium", f"secret-{n}", REALM) for n in numbers])
        together = threading.Barrier(4)
        threads: set[int] = set()
        lookUp = store.credentials

        def credentials(number: str) -> Any:
            threads.add(threading.get_ident())
            together.wait(10)  # passes only when four calls run at once
            return lookUp(number)

        self.patch(store, "credentials", credentials)
        answers = yield defer.gatherResults([threaded.credentials(n) for n in numbers])
        self.assertEqual(answers, [credentialsFromPassword(n, "premium", REALM, f"secret-{n}") for n in numbers])
        self.assertEqual(len(threads), 4)


class SecretTests(SQLiteURLs, SynchronousTestCase):
    """
    L{Store.secret}: random keys made once and shared by every store on
    one database.
    """

    def setUp(self) -> None:
        self.store = self.openStore()

    def otherStore(self) -> Store:
        """
        Another store on the same database: another server.
        """
        other = Store(self.store.url)
        other.open()
        self.addCleanup(other.close)
        return other

    def test_secret_is_made_once_then_kept(self) -> None:
        secret = self.store.secret("dialog-token")
        self.assertIsInstance(secret, bytes)
        self.assertEqual(len(secret), SECRET_LENGTH)
        self.assertEqual(self.store.secret("dialog-token"), secret)
        self.store.close()
        self.store.open()
        self.assertEqual(self.store.secret("dialog-token"), secret)

    def test_each_name_has_its_own_secret(self) -> None:
        self.assertNotEqual(self.store.secret("dialog-token"), self.store.secret("other"))

    def test_two_stores_on_one_database_share_the_secret(self) -> None:
        other = self.otherStore()
        self.assertEqual(other.secret("dialog-token"), self.store.secret("dialog-token"))

    def test_secret_made_meanwhile_by_another_store_is_kept(self) -> None:
        """
        Another store makes the secret after this one found none and before
        it inserts its own: this one keeps and returns the other's.
        """
        other = self.otherStore()
        theirs: list[bytes] = []
        newSecret = sql._newSecret

        def meanwhile() -> bytes:
            if not theirs:  # the first candidate is this store's; the other's is made as usual
                theirs.append(b"")
                theirs[0] = other.secret("dialog-token")
            return newSecret()

        self.patch(sql, "_newSecret", meanwhile)
        mine = self.store.secret("dialog-token")
        self.assertEqual([mine], theirs)
        self.assertEqual(execute(self.store.url, "SELECT count(*) FROM secrets"), [(1,)])

    def test_stores_asking_at_once_get_one_secret(self) -> None:
        """
        Two servers starting together on a new database both ask for the
        secret at once: they get the same one.
        """
        stores = [self.store, self.otherStore()]
        together = threading.Barrier(len(stores))
        found: list[bytes] = []
        errors: list[BaseException] = []

        def asking(store: Store) -> None:
            together.wait(10)
            try:
                found.append(store.secret("dialog-token"))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=asking, args=(store,)) for store in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(found), 2)
        self.assertEqual(found[0], found[1])

    def test_bad_names_are_refused(self) -> None:
        for name in ["", "x" * 65]:
            self.assertRaises(InvalidValue, self.store.secret, name)


class FacadeTests(SQLiteURLs, TestCase):
    """
    L{AsyncStore} is one generic wrapper: L{AsyncStore.run}, and the store
    methods it names with L{inThreads}.
    """

    def setUp(self) -> None:
        self.store = self.openStore()
        self.threaded = AsyncStore(self.store)
        self.threaded.start()
        self.addCleanup(self.threaded.stop)

    def test_each_wrapped_method_is_the_store_method_of_its_name(self) -> None:
        wrapped = {name: value for name, value in vars(AsyncStore).items() if isinstance(value, inThreads)}
        self.assertIn("secret", wrapped)
        self.assertIn("credentials", wrapped)
        for name, value in wrapped.items():
            self.assertEqual(value.name, name)
            self.assertTrue(callable(getattr(Store, name)), name)

    def test_every_store_method_is_wrapped_but_closing_and_describing(self) -> None:
        """
        A new L{Store} method is also named in L{AsyncStore}, or the
        service could not use it; C{close} is L{AsyncStore.stop}'s.
        """
        public = {name for name in dir(Store) if not name.startswith("_") and callable(getattr(Store, name))}
        self.assertIn("addGroup", public)
        unwrapped = {name for name in public if not isinstance(vars(AsyncStore).get(name), inThreads)}
        self.assertEqual(unwrapped, {"close", "describe", "schemaVersion"})

    @defer.inlineCallbacks
    def test_wrapped_method_runs_in_the_store_thread(self):  # type: ignore[no-untyped-def]
        threads: list[str] = []
        getAccount = self.store.getAccount

        def spy(number: str) -> Any:
            threads.append(threading.current_thread().name)
            return getAccount(number)

        self.patch(self.store, "getAccount", spy)
        self.assertIsNone((yield self.threaded.getAccount("45675001")))
        self.assertEqual(len(threads), 1)
        self.assertIn("aetasip-store", threads[0])

    @defer.inlineCallbacks
    def test_run_calls_any_function_in_the_store_thread(self):  # type: ignore[no-untyped-def]
        def work(a: int, b: int = 0) -> tuple[str, int]:
            return threading.current_thread().name, a + b

        name, total = yield self.threaded.run(work, 2, b=3)
        self.assertIn("aetasip-store", name)
        self.assertEqual(total, 5)

    @defer.inlineCallbacks
    def test_run_reports_errors_and_refuses_after_stop(self):  # type: ignore[no-untyped-def]
        threaded = AsyncStore(Store(self.store.url))
        threaded.start()
        yield threaded.open()
        yield self.assertFailure(threaded.run(threaded.store.deleteAccount, "45675001"), NoSuchAccount)
        yield threaded.stop()
        failure = yield self.assertFailure(threaded.run(lambda: 1), StoreError)
        self.assertIn("stopped", str(failure))

    @defer.inlineCallbacks
    def test_secret_in_threads(self):  # type: ignore[no-untyped-def]
        secret = yield self.threaded.secret("dialog-token")
        self.assertEqual(secret, self.store.secret("dialog-token"))
        self.assertEqual(len(secret), SECRET_LENGTH)


class FileModeTests(SynchronousTestCase):
    """
    Fault 6 of the audit: the SQLite store, whose HA1 values are password
    equivalents, was created world-readable.
    """

    def setUp(self) -> None:
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)
        self.directory = os.path.join(self.mktemp(), "state")

    def test_a_new_store_is_owner_only(self) -> None:
        os.makedirs(self.directory)
        path = os.path.join(self.directory, "aetasip.db")
        store = Store(f"sqlite:///{path}")
        store.open()
        self.addCleanup(store.close)
        store.addAccount("45675001", "premium", "secret1", "aetasip")
        for name in (path, f"{path}-wal", f"{path}-shm"):
            if os.path.exists(name):
                self.assertEqual(os.stat(name).st_mode & 0o777, 0o600, name)

    def test_an_existing_readable_store_is_tightened(self) -> None:
        os.makedirs(self.directory)
        path = os.path.join(self.directory, "aetasip.db")
        with open(path, "w"):
            pass
        os.chmod(path, 0o644)
        store = Store(f"sqlite:///{path}")
        store.open()
        self.addCleanup(store.close)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
