"""
The admin API's bearer tokens kept in the store: C{aetasip-admin token
add/list/del}, the store's table (digests only), L{StoreTokens}' reading
rules with a clock, and the running service accepting a token made with
the command and refusing it within L{MAX_AGE} seconds of its deletion,
over real HTTP, on C{web.listen} and on C{web.admin_listen}.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import treq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from aetasip import admin
from aetasip.store import Store
from aetasip.store.tokens import AdminTokenExists, NoSuchAdminToken
from aetasip.web.tokens import MAX_AGE, StoreTokens
from tests.servers import deferLater
from tests.test_admin import NOW, AdminTestCase
from tests.test_store import SQLiteURLs
from tests.test_store_postgresql import PostgreSQLURLs
from tests.test_web import AUTH, TOKEN, WebTestCase


def printedToken(testCase: SynchronousTestCase, out: str) -> str:
    """The token C{token add} printed, exactly once."""
    found = re.findall(r"^Token: (\S+)$", out, re.MULTILINE)
    testCase.assertEqual(len(found), 1, out)
    token: str = found[0]
    testCase.assertRegex(token, r"^[A-Za-z0-9_-]{43}$")
    testCase.assertEqual(out.count(token), 1)
    return token


class TokenCommandTests(AdminTestCase):
    def test_add_shows_the_token_once_and_stores_its_digest_only(self) -> None:
        out = self.succeed("token", "add", "ci-robot")
        token = printedToken(self, out)
        self.assertIn("Added admin API token ci-robot.", out)
        self.assertIn("will not be shown again", out)
        (stored,) = self.openStore().listAdminTokens()
        self.assertEqual((stored.name, stored.createdAt, stored.lastUsed), ("ci-robot", NOW, None))
        self.assertEqual(stored.digest, hashlib.sha256(token.encode()).hexdigest())
        self.assertNotStoredInPlain(token)

    def test_tokens_differ(self) -> None:
        first = printedToken(self, self.succeed("token", "add", "one"))
        second = printedToken(self, self.succeed("token", "add", "two"))
        self.assertNotEqual(first, second)

    def test_list(self) -> None:
        self.assertEqual(self.succeed("token", "list"), "NAME  CREATED  LAST USED\n")
        self.succeed("token", "add", "zeta")
        self.succeed("token", "add", "alpha")
        self.openStore().adminTokenDigests({"zeta": NOW + 60})
        self.assertEqual(
            self.succeed("token", "list"),
            "NAME   CREATED                  LAST USED\n"
            "alpha  2027-01-15 08:00:00 UTC  never\n"
            "zeta   2027-01-15 08:00:00 UTC  2027-01-15 08:01:00 UTC\n",
        )

    def test_del(self) -> None:
        self.succeed("token", "add", "ci-robot")
        self.assertEqual(self.succeed("token", "del", "ci-robot"), "Deleted admin API token ci-robot.\n")
        self.assertEqual(self.openStore().listAdminTokens(), [])

    def test_refusals(self) -> None:
        self.succeed("token", "add", "ci-robot")
        self.assertRefused(1, ["token", "add", "ci-robot"], "a token named ci-robot exists already")
        self.assertRefused(1, ["token", "del", "nobody"], "no token named nobody")
        for bad in ["bad name", ".dot", "x" * 65, "é", ""]:
            self.assertRefused(2, ["token", "add", bad], "aetasip-admin token add:", "token name")
        self.assertRefused(2, ["token", "add"], "missing NAME")
        self.assertRefused(2, ["token", "add", "a", "b"], "unexpected argument 'b'")
        self.assertRefused(2, ["token"], "missing command: add, list, del")
        self.assertEqual(len(self.openStore().listAdminTokens()), 1)


class TokenStoreTests(SQLiteURLs, SynchronousTestCase):
    def setUp(self) -> None:
        self.store = self.openStore()

    def test_digests_and_last_used(self) -> None:
        digest = hashlib.sha256(b"secret").hexdigest()
        self.store.addAdminToken("a", digest, 10.0)
        self.assertEqual(self.store.adminTokenDigests(), {bytes.fromhex(digest): "a"})
        self.store.adminTokenDigests({"a": 20.0, "gone": 30.0})
        self.store.adminTokenDigests({"a": 15.0})  # older than what is recorded: kept
        self.assertEqual(self.store.listAdminTokens()[0].lastUsed, 20.0)

    def test_duplicates_and_bad_values(self) -> None:
        digest = hashlib.sha256(b"secret").hexdigest()
        self.store.addAdminToken("a", digest)
        self.assertRaises(AdminTokenExists, self.store.addAdminToken, "a", hashlib.sha256(b"other").hexdigest())
        self.assertRaises(AdminTokenExists, self.store.addAdminToken, "b", digest)
        self.assertRaises(NoSuchAdminToken, self.store.deleteAdminToken, "b")
        from aetasip.store import InvalidValue

        self.assertRaises(InvalidValue, self.store.addAdminToken, "c", "secret")


class PostgreSQLTokenStoreTests(PostgreSQLURLs, TokenStoreTests):
    """The same on PostgreSQL."""


class FakeStore:
    """Answers L{StoreTokens}' reads with what a test sets, counting them."""

    def __init__(self) -> None:
        self.digests: dict[bytes, str] = {}
        self.reads: list[dict[str, float]] = []
        self.pending: Deferred[dict[bytes, str]] | None = None
        self.broken = False

    def adminTokenDigests(self, used: dict[str, float]) -> Deferred[dict[bytes, str]]:
        self.reads.append(dict(used))
        if self.broken:
            return fail(OSError("database unreachable"))
        if self.pending is not None:
            return self.pending
        return succeed(dict(self.digests))


class StoreTokensTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FakeStore()
        self.tokens = StoreTokens(self.store, self.clock.seconds)  # type: ignore[arg-type]
        self.digest = hashlib.sha256(b"token").digest()

    def find(self, digest: bytes) -> str | None:
        result: str | None = self.successResultOf(Deferred.fromCoroutine(self.tokens.find(digest)))
        return result

    def test_read_at_most_once_per_max_age(self) -> None:
        self.store.digests = {self.digest: "ci"}
        self.assertEqual(self.find(self.digest), "ci")
        self.assertIsNone(self.find(b"x" * 32))
        self.assertEqual(len(self.store.reads), 1)
        self.store.digests = {}  # deleted
        self.clock.advance(MAX_AGE - 0.1)
        self.assertEqual(self.find(self.digest), "ci")
        self.clock.advance(0.1)
        self.assertIsNone(self.find(self.digest))
        self.assertEqual(len(self.store.reads), 2)

    def test_concurrent_requests_share_one_read(self) -> None:
        self.store.pending = Deferred()
        first = Deferred.fromCoroutine(self.tokens.find(self.digest))
        second = Deferred.fromCoroutine(self.tokens.find(self.digest))
        self.assertNoResult(first)
        self.assertEqual(len(self.store.reads), 1)
        self.store.pending.callback({self.digest: "ci"})
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), ("ci", "ci"))

    def test_uses_are_written_with_the_next_read(self) -> None:
        self.store.digests = {self.digest: "ci"}
        self.clock.advance(100)
        self.find(self.digest)
        self.clock.advance(MAX_AGE)
        self.find(self.digest)
        self.assertEqual(self.store.reads, [{}, {"ci": 100.0}])

    def test_store_down_refuses_and_says_so_once(self) -> None:
        said: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(said.append)
        self.addCleanup(globalLogPublisher.removeObserver, said.append)
        self.store.digests = {self.digest: "ci"}
        self.assertEqual(self.find(self.digest), "ci")
        self.store.broken = True
        self.clock.advance(MAX_AGE)
        self.assertIsNone(self.find(self.digest))
        self.assertIsNone(self.find(self.digest))  # read again at once: no stale acceptance
        self.assertEqual(len(self.store.reads), 3)
        warnings = [e for e in said if "cannot read the store's tokens" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.store.broken = False
        self.assertEqual(self.find(self.digest), "ci")
        # The use recorded before the failure is not lost.
        self.assertEqual(self.store.reads[-1], {"ci": 0.0})


class RunningServiceTokenTests(WebTestCase):
    timeout = 60

    def addToken(self, name: str) -> str:
        out = io.StringIO()
        status = admin.main(["--store", self.server.storeURL, "token", "add", name], out, io.StringIO())
        self.assertEqual(status, 0)
        return printedToken(self, out.getvalue())

    def deleteToken(self, name: str) -> None:
        status = admin.main(["--store", self.server.storeURL, "token", "del", name], io.StringIO(), io.StringIO())
        self.assertEqual(status, 0)

    async def code(self, token: str, base: str | None = None) -> int:
        url = (base or self.web.url) + "/api/v1/accounts"
        response = await treq.get(url, headers={"Authorization": f"Bearer {token}"}, pool=self.pool)
        await response.content()
        return int(response.code)

    async def test_added_token_works_and_deleted_one_is_refused(self) -> None:
        self.assertEqual(await self.code("y" * 43), 401)
        token = self.addToken("ci-robot")
        await deferLater(MAX_AGE)
        self.assertEqual(await self.code(token), 200)
        self.assertEqual(await self.code(TOKEN), 200)  # the configuration's still work
        self.deleteToken("ci-robot")
        await deferLater(MAX_AGE)
        self.assertEqual(await self.code(token), 401)
        self.assertEqual(await self.code(TOKEN), 200)

    async def test_last_use_is_recorded(self) -> None:
        token = self.addToken("ci-robot")
        await deferLater(MAX_AGE)
        self.assertEqual(await self.code(token), 200)
        await deferLater(MAX_AGE)
        self.assertEqual(await self.code("y" * 43), 401)  # a read, which writes the use
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        (stored,) = store.listAdminTokens()
        self.assertIsNotNone(stored.lastUsed)


class AdminListenTokenTests(RunningServiceTokenTests):
    settings = {"web.admin_listen": "127.0.0.1:0"}

    async def code(self, token: str, base: str | None = None) -> int:
        return await super().code(token, self.server.service.getServiceNamed("admin").url)

    async def test_same_tokens_on_the_admin_address(self) -> None:
        token = self.addToken("ops")
        await deferLater(MAX_AGE)
        self.assertEqual(await self.code(token), 200)
        self.assertEqual(await self.code(AUTH["Authorization"].split()[1]), 200)
