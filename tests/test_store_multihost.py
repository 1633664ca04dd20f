"""
A C{store.url} naming several PostgreSQL servers, libpq-style: the store
and the change listener use the first that answers (and, with
C{target_session_attrs=read-write}, accepts writes), and find a standby
promoted by the operator again without a restart. The tests make a real
streaming-replication pair: a primary of their own, and a hot standby
copied from it with C{pg_basebackup}.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import sqlalchemy as sa
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.cluster.listener import NotificationListener
from aetasip.store import Store
from aetasip.store.engine import describeURL, engineURL, splitHosts
from aetasip.store.schema import BINDINGS_CHANNEL
from tests.postgres import HOST, USER, PostgreSQLServer, binDirectory, serverAccount
from tests.servers import freePort
from tests.test_cluster_location import waitFor
from tests.test_location import binding


class URLTests(SynchronousTestCase):
    def test_several_hosts_are_split(self) -> None:
        self.assertEqual(
            splitHosts("postgresql://u:p@h1:5432,[2001:db8::2]:5433/db?target_session_attrs=read-write"),
            ("postgresql://u:p@/db", ["h1:5432", "[2001:db8::2]:5433"]),
        )
        self.assertIsNone(splitHosts("postgresql://u:p@h1:5432/db"))
        self.assertIsNone(splitHosts("sqlite:///a,b.db"))

    def test_the_engine_url_names_no_host(self) -> None:
        url = engineURL("postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write")
        self.assertEqual(
            (url.drivername, url.host, url.database, url.username), ("postgresql+psycopg", None, "db", "u")
        )

    def test_messages_show_every_host_and_no_password(self) -> None:
        self.assertEqual(
            describeURL("postgresql://u:secret@h1:5432,h2:5433/db?target_session_attrs=read-write"),
            "postgresql://u:***@h1:5432,h2:5433/db?target_session_attrs=read-write",
        )


class StandbyServer(PostgreSQLServer):
    """A hot standby of C{primary}, streaming from it (C{pg_basebackup -R})."""

    def __init__(self, primary: PostgreSQLServer) -> None:
        super().__init__(primary.binaries, primary.account)
        self.primary = primary
        self.adminPassword = primary.adminPassword
        self.userPassword = primary.userPassword

    def start(self) -> None:
        self._ownedByServer(self.directory)
        options = self._processOptions()
        options["env"]["PGPASSWORD"] = self.primary.adminPassword
        result = subprocess.run(
            [
                os.path.join(self.binaries, "pg_basebackup"),
                "-h", HOST, "-p", str(self.primary.port), "-U", "postgres",
                "-D", self.dataDirectory, "-R", "-X", "stream", "--no-sync", "--checkpoint", "fast",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **options,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {result.stdout.decode(errors='replace')}")
        os.mkdir(self.socketDirectory)
        self._ownedByServer(self.socketDirectory)
        self.port = freePort(host=HOST)
        if not self._startServer():
            raise RuntimeError(f"the standby did not start:\n{self.log()}")

    def promote(self) -> None:
        with self.connect() as connection:
            connection.execute("SELECT pg_promote(true, 30)")


class ReplicationPairTests(TestCase):
    """A primary and its hot standby, both named in the C{store.url}."""

    timeout = 120

    def setUp(self) -> None:
        binaries = binDirectory()
        if binaries is None or not os.access(os.path.join(binaries, "pg_basebackup"), os.X_OK):
            from tests.postgres import _missing

            _missing(self, "PostgreSQL with pg_basebackup is not installed (Debian package postgresql)")
        self.primary = PostgreSQLServer(binaries, serverAccount())
        self.addCleanup(self.primary.stop)
        self.primary.start()
        self.database = self.primary.createDatabase()
        self.standby = StandbyServer(self.primary)
        self.addCleanup(self.standby.stop)
        self.standby.start()

    def url(self, *servers: PostgreSQLServer, query: str = "target_session_attrs=read-write") -> str:
        hosts = ",".join(f"{HOST}:{server.port}" for server in servers)
        return f"postgresql://{USER}:{self.primary.userPassword}@{hosts}/{self.database}" + (
            f"?{query}" if query else ""
        )

    def serverPort(self, store: Store) -> int:
        assert store._engine is not None
        with store._engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT inet_server_port()")).scalar_one())

    def test_a_server_that_is_down_is_skipped(self) -> None:
        down = PostgreSQLServer.__new__(PostgreSQLServer)
        down.port = freePort(host=HOST)
        store = Store(self.url(down, self.primary, query=""))
        store.open()
        self.addCleanup(store.close)
        store.saveBindings([binding()])
        self.assertEqual(self.serverPort(store), self.primary.port)

    def test_read_write_skips_the_standby(self) -> None:
        store = Store(self.url(self.standby, self.primary))
        store.open()
        self.addCleanup(store.close)
        store.saveBindings([binding()])
        self.assertEqual(self.serverPort(store), self.primary.port)

    def test_without_read_write_the_standby_refuses_writes(self) -> None:
        store = Store(self.url(self.standby, self.primary, query=""))
        self.addCleanup(store.close)
        self.assertRaises(sa.exc.SQLAlchemyError, store.open)

    @inlineCallbacks
    def test_a_promoted_standby_is_found_again_without_a_restart(self) -> Any:
        url = self.url(self.primary, self.standby)
        store = Store(url)
        store.open()
        self.addCleanup(store.close)
        store.saveBindings([binding(contact="sip:before@192.0.2.1")])
        heard: list[str] = []
        connections: list[int] = []
        listener = NotificationListener(
            url, [BINDINGS_CHANNEL], lambda c, p: heard.append(p), lambda: connections.append(1), lambda r: None
        )
        listener.start()
        self.addCleanup(listener.stop)
        yield waitFor(lambda: len(connections) == 1, timeout=10)
        # Let the standby replay what was written, then lose the primary.
        yield waitFor(lambda: self._replayed(), timeout=10)
        self.primary._terminate()
        self.standby.promote()
        found: list[Exception] = []
        for _ in range(100):
            try:
                store.saveBindings([binding(contact="sip:after@192.0.2.2")])
                break
            except Exception as e:
                found.append(e)
                yield deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail(f"the promoted standby was not found: {found[-1]}")
        self.assertEqual(self.serverPort(store), self.standby.port)
        self.assertEqual(
            sorted(b.contact for b in store.allBindings()), ["sip:after@192.0.2.2", "sip:before@192.0.2.1"]
        )
        # The listener listens on the new primary, and hears its changes.
        yield waitFor(lambda: len(connections) == 2, timeout=30)
        heard.clear()
        store.deleteBindings([("45675001", "sip:after@192.0.2.2")], origin="elsewhere")
        yield waitFor(lambda: heard != [], timeout=5)
        self.assertIn('"origin" : "elsewhere"', heard[0])

    def _replayed(self) -> bool:
        try:
            with self.standby.connect(self.database) as connection:
                return bool(connection.execute("SELECT count(*) FROM bindings").fetchone()[0])  # type: ignore[index]
        except Exception:
            return False
