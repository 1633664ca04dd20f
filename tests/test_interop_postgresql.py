"""
Registration with sipp against the real service whose store is PostgreSQL.

The tests of L{tests.test_interop_register} (UDP and TCP on both ports, a
wrong password refused with 403, bindings surviving a restart) run again
with the accounts and bindings in a database of the test PostgreSQL server
(L{tests.postgres}), provisioned with aetasip-admin; then a backup server
on the same database restores the registrations of the main one.
"""

from __future__ import annotations

import os

from tests import test_interop_register as register
from tests.postgres import postgresqlURL
from tests.servers import RunningService, requireTool
from tests.test_store import execute


class PostgreSQLSippRegistrationTests(register.SippRegistrationTests):
    """
    sipp registers with the service; accounts and bindings are in PostgreSQL.
    """

    def setUp(self):  # type: ignore[no-untyped-def]
        self.sipp = requireTool(self, "sipp", "sip-tester")
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.server = RunningService(self.directory, store__url=postgresqlURL(self))
        self.addCleanup(self.stopServer)
        for number, password in (("45675001", "secret-one"), ("45675002", "secret-two")):
            self.assertEqual(self.admin("account", "add", number, "--kind", "premium", "--password", password), 0)
        return self.server.start()

    def test_accounts_are_in_postgresql(self) -> None:
        self.assertTrue(self.server.storeURL.startswith("postgresql://"))
        self.assertEqual(
            execute(self.server.storeURL, "SELECT number, kind FROM accounts ORDER BY number"),
            [("45675001", "premium"), ("45675002", "premium")],
        )

    async def test_backup_server_on_the_same_database_restores_the_bindings(self) -> None:
        detail, code = await self.register("45675001", "secret-one", self.server.ports[0], "u1")
        self.assertEqual(code, 0, detail)
        await self.server.stop()
        backupDirectory = self.mktemp()
        os.makedirs(backupDirectory)
        backup = RunningService(backupDirectory, store__url=self.server.storeURL)
        await backup.start()
        self.addCleanup(backup.stop)
        (binding,) = backup.sip.location.lookup("45675001")
        self.assertEqual((binding.userAgent, binding.transport), ("sipp-aetasip", "udp"))
        detail, code = await self.register("45675002", "secret-two", backup.ports[0], "u1")
        self.assertEqual(code, 0, detail)
        self.assertEqual(len(backup.sip.location.lookup("45675002")), 1)
