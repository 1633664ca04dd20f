"""
The admin API's bearer tokens kept in the store: C{aetasip-admin token
add/list/del}, the store's table (digests only).
"""

from __future__ import annotations

import hashlib
import re

from twisted.trial.unittest import SynchronousTestCase

from aetasip.store import Store
from aetasip.store.tokens import AdminTokenExists, NoSuchAdminToken
from tests.test_admin import NOW, AdminTestCase


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


class TokenStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = Store(f"sqlite:///{self.mktemp()}")
        self.store.open()
        self.addCleanup(self.store.close)

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
