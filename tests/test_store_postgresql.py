"""
The store and the C{sql} authentication backend on a real PostgreSQL.

The test cases of L{tests.test_store} (migrations, concurrent migration,
accounts, portal passwords, bindings, shared secrets, L{AsyncStore}
threads, L{StoreService}) run again here, each test with a new database on the
server that L{tests.postgres} starts. Then what only a database server
has: the C{sql} backend when the server goes away and comes back, and a
server that is not there when the service or the admin CLI starts.
"""

from __future__ import annotations

import io
from typing import cast

import sqlalchemy as sa
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort, IReactorTCP, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.protocols import portforward
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from aetasip import admin, config, tap
from aetasip.auth import BackendUnavailable, credentialsFromPassword
from aetasip.auth.chain import makeAuthBackend
from aetasip.auth.sql import SQLAuthBackend
from aetasip.store import AsyncStore, Store, StoreError, StoreService
from tests import test_store
from tests.postgres import HOST, postgresqlURL, unreachableURL
from tests.servers import freePort

REALM = "aetasip"
STUDIO = credentialsFromPassword("45675001", "premium", REALM, "secret")


class PostgreSQLURLs(test_store.StoreURLs):
    """
    Each store is a new database on the test PostgreSQL server.
    """

    def newStoreURL(self) -> str:
        return postgresqlURL(self)


class PostgreSQLMigrationTests(PostgreSQLURLs, test_store.MigrationTests):
    """
    Migrations on PostgreSQL: from an empty database, step by step, in one
    transaction, and serialised between two stores by an advisory lock.
    """


class PostgreSQLAccountTests(PostgreSQLURLs, test_store.AccountTests):
    """
    Accounts on PostgreSQL.
    """


class PostgreSQLPortalPasswordTests(PostgreSQLURLs, test_store.PortalPasswordTests):
    """
    Portal passwords on PostgreSQL.
    """


class PostgreSQLBindingTests(PostgreSQLURLs, test_store.BindingTests):
    """
    Bindings on PostgreSQL: saved, updated, loaded, expired.
    """


class PostgreSQLAsyncStoreTests(PostgreSQLURLs, test_store.AsyncStoreTests):
    """
    L{AsyncStore} and L{StoreService} on PostgreSQL.
    """


class PostgreSQLSecretTests(PostgreSQLURLs, test_store.SecretTests):
    """
    Shared secrets on PostgreSQL: two servers on one database, asking at
    once or one after the other, get the same secret.
    """


class PostgreSQLFacadeTests(PostgreSQLURLs, test_store.FacadeTests):
    """
    The generic async facade on PostgreSQL (four threads).
    """


def adminCommand(url: str, *argv: str) -> tuple[int, str]:
    """
    Run C{aetasip-admin --store URL ARGV}; return its exit code and output.
    """
    out, err = io.StringIO(), io.StringIO()
    code = admin.main(["--store", url, *argv], out, err)
    return code, out.getvalue() + err.getvalue()


class SQLBackendTests(TestCase):
    """
    The C{sql} backend reads the accounts of a PostgreSQL store.
    """

    def setUp(self) -> None:
        self.url = postgresqlURL(self)
        self.service = StoreService(self.url)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    @defer.inlineCallbacks
    def test_accounts_of_the_store_are_known(self):  # type: ignore[no-untyped-def]
        yield self.service.store.addAccount("45675001", "premium", "secret", REALM)
        backend = SQLAuthBackend(self.service.store)
        self.assertEqual((yield backend.credentials("45675001")), STUDIO)
        self.assertIsNone((yield backend.credentials("45675002")))

    @defer.inlineCallbacks
    def test_backend_named_sql_in_the_configuration_reads_the_store(self):  # type: ignore[no-untyped-def]
        yield self.service.store.addAccount("45675001", "premium", "secret", REALM)
        backend = makeAuthBackend(config.build({"auth.backends": ["sql"], "store.url": self.url}), self.service.store)
        self.assertIsInstance(backend, SQLAuthBackend)
        self.assertEqual((yield backend.credentials("45675001")), STUDIO)

    @defer.inlineCallbacks
    def test_accounts_added_by_the_admin_cli_meanwhile_are_known(self):  # type: ignore[no-untyped-def]
        """
        The admin CLI and the running service share the database.
        """
        backend = SQLAuthBackend(self.service.store, cacheTTL=0)
        self.assertIsNone((yield backend.credentials("45675001")))
        code, output = adminCommand(self.url, "account", "add", "45675001", "--kind", "premium", "--password", "secret")
        self.assertEqual(code, 0, output)
        self.assertEqual((yield backend.credentials("45675001")), STUDIO)
        code, output = adminCommand(self.url, "account", "del", "45675001")
        self.assertEqual(code, 0, output)
        self.assertIsNone((yield backend.credentials("45675001")))


class _TrackedProxyServer(portforward.ProxyServer):
    factory: _ProxyFactory

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.connections.discard(self)
        super().connectionLost(reason)


class _ProxyFactory(portforward.ProxyFactory):
    protocol = _TrackedProxyServer

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.connections: set[_TrackedProxyServer] = set()


class DatabaseProxy:
    """
    A TCP forwarder on loopback to the PostgreSQL server: stopping it is
    the database going away (connections cut, nothing listening on its
    port), starting it again on the same port is the database coming back.
    """

    def __init__(self, url: str) -> None:
        """
        @param url: the store URL of the database behind the proxy.
        """
        target = sa.make_url(url)
        assert target.port is not None
        self.port = freePort(host=HOST)
        self.url = target.set(port=self.port).render_as_string(hide_password=False)
        self._factory = _ProxyFactory(HOST, target.port)
        self._listening: IListeningPort | None = None

    def start(self) -> None:
        tcp = cast(IReactorTCP, reactor)
        self._listening = tcp.listenTCP(self.port, self._factory, interface=HOST)  # type: ignore[arg-type]

    def stop(self) -> defer.Deferred[None]:
        listening, self._listening = self._listening, None
        for connection in list(self._factory.connections):
            cast(ITCPTransport, connection.transport).abortConnection()
        stopped = None if listening is None else listening.stopListening()
        return defer.succeed(None) if stopped is None else stopped


class ServerGoneTests(TestCase):
    """
    The database server goes away while the service runs, then comes back.
    """

    def setUp(self):  # type: ignore[no-untyped-def]
        self.proxy = DatabaseProxy(postgresqlURL(self))
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        # Opened in the store's thread: the proxy needs the reactor meanwhile.
        self.store = AsyncStore(Store(self.proxy.url))
        self.store.start()
        self.addCleanup(self.store.stop)
        self.backend = SQLAuthBackend(self.store, cacheTTL=0)
        return self.store.open()

    @defer.inlineCallbacks
    def test_lookup_while_the_server_is_gone_is_backend_unavailable(self):  # type: ignore[no-untyped-def]
        yield self.store.addAccount("45675001", "premium", "secret", REALM)
        self.assertEqual((yield self.backend.credentials("45675001")), STUDIO)
        yield self.proxy.stop()
        failure = yield self.assertFailure(self.backend.credentials("45675001"), BackendUnavailable)
        self.assertIn("store: ", str(failure))
        self.assertNotIn(str(sa.make_url(self.proxy.url).password), str(failure))
        self.assertEqual(len(self.flushLoggedErrors(sa.exc.OperationalError)), 1)

    @defer.inlineCallbacks
    def test_lookups_work_again_when_the_server_is_back(self):  # type: ignore[no-untyped-def]
        yield self.store.addAccount("45675001", "premium", "secret", REALM)
        yield self.proxy.stop()
        yield self.assertFailure(self.backend.credentials("45675001"), BackendUnavailable)
        self.flushLoggedErrors(sa.exc.OperationalError)
        self.proxy.start()
        self.assertEqual((yield self.backend.credentials("45675001")), STUDIO)


class UnreachableServerTests(TestCase):
    """
    Nothing listens where the store URL points.
    """

    def setUp(self) -> None:
        self.url = unreachableURL()

    def test_open_fails_naming_the_server(self) -> None:
        store = Store(self.url, busyTimeout=2)
        error = self.assertRaises(sa.exc.OperationalError, store.open)
        self.assertIn(HOST, str(error))
        self.assertIn("refused", str(error).lower())
        self.assertNotIn("secret-password", str(error))
        self.assertRaises(StoreError, store.getAccount, "45675001")

    def test_service_start_stops_with_one_line(self) -> None:
        settings = config.build({"store.url": self.url, "sip.listen": ["127.0.0.1"], "stun.enabled": False})
        error = self.assertRaises(SystemExit, tap.makeService, {"config": settings})
        message = str(error.code)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("aetasip: cannot open the store postgresql://aetasip:***@127.0.0.1:"))
        self.assertIn("refused", message.lower())
        self.assertNotIn("secret-password", message)

    def test_admin_cli_reports_the_store_unavailable(self) -> None:
        code, output = adminCommand(self.url, "account", "list")
        self.assertEqual(code, 1)
        self.assertEqual(len(output.splitlines()), 1, output)
        self.assertIn("unavailable", output)
        self.assertIn("refused", output.lower())
        self.assertNotIn("secret-password", output)

    @defer.inlineCallbacks
    def test_sql_backend_of_an_unopened_store_is_unavailable(self):  # type: ignore[no-untyped-def]
        """
        A lookup when the store could not be opened is refused as
        unavailable (503 for the agent), never answered "no such account".
        """
        service = StoreService(self.url)
        self.assertRaises(sa.exc.OperationalError, service.startService)
        self.assertFalse(service.running)
        store = service.store
        store.start()
        self.addCleanup(store.stop)
        backend = SQLAuthBackend(store)
        yield self.assertFailure(backend.credentials("45675001"), BackendUnavailable)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
