"""
Tests for groups of premium numbers: the store's schema version 2, its
group methods and the C{aetasip-admin group} commands, on SQLite.

L{tests.test_groups_postgresql} runs the same test cases on PostgreSQL by
giving them another mixin (see L{tests.test_store.StoreURLs}).
"""

from __future__ import annotations

import re
import threading
from io import StringIO

import sqlalchemy as sa
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip import admin
from aetasip.auth import computeHA1
from aetasip.store import (
    SCHEMA_VERSION,
    AsyncStore,
    GroupExists,
    GroupFull,
    GroupNotEmpty,
    InvalidAccount,
    InvalidGroup,
    NoSuchAccount,
    NoSuchGroup,
    Store,
    StoreError,
    engineURL,
    schema,
)
from tests.test_store import FakeClock, SQLiteURLs, StoreURLs

REALM = "aetasip"


def numbers(created: list[tuple[str, str]]) -> list[str]:
    """
    The numbers of C{(number, password)} pairs.
    """
    return [number for number, _password in created]


class GroupStoreMixin(StoreURLs):
    """
    A store with the group C{4567}.
    """

    def setUp(self) -> None:
        self.clock = FakeClock()
        self.store = self.openStore(self.clock)

    def addGroup(self, prefix: str = "4567", **options: bool) -> None:
        self.store.addGroup(prefix, "tech@example.net", **options)

    def assertPasswords(self, created: list[tuple[str, str]]) -> None:
        """
        Each of C{created} is an account whose SIP password is the one given.
        """
        test: SynchronousTestCase = self  # type: ignore[assignment]
        for number, password in created:
            credentials = self.store.credentials(number)
            assert credentials is not None
            test.assertEqual(credentials.ha1["SHA-256"], computeHA1("SHA-256", number, REALM, password))
            test.assertRegex(password, r"^[A-Za-z0-9]{20}$")
        test.assertEqual(len({password for _number, password in created}), len(created))


class GroupTests(GroupStoreMixin, SQLiteURLs, SynchronousTestCase):
    """
    Adding, reading, changing and deleting groups.
    """

    def test_add_and_get(self) -> None:
        added = self.store.addGroup("4567", "tech@example.net", incomingBlock=True)
        self.assertEqual(self.store.getGroup("4567"), added)
        self.assertEqual(
            (added.contact, added.incomingBlock, added.outgoingBlock, added.hunting, added.quarterlyLog),
            ("tech@example.net", True, False, False, False),
        )
        self.assertTrue(added.selfCare)
        self.assertEqual((added.nextMember, added.nextHunting, added.createdAt), (5001, 6001, 1000.0))
        self.assertEqual(added.huntingNumber, "45676000")
        self.assertIsNone(self.store.getGroup("4599"))

    def test_list_by_prefix(self) -> None:
        self.addGroup("4599")
        self.addGroup("4567")
        self.assertEqual([g.prefix for g in self.store.listGroups()], ["4567", "4599"])

    def test_prefix_is_four_digits(self) -> None:
        for prefix in ["456", "45678", "45a7", "", "٤٥٦٧", "4567\n"]:
            error = self.assertRaises(InvalidGroup, self.store.addGroup, prefix, "tech@example.net")
            self.assertIn("4 digits", str(error))
        self.assertEqual(self.store.listGroups(), [])

    def test_contact_is_an_email_address(self) -> None:
        for contact in ["", "tech", "tech@", "@example.net", "tech@example", "a b@example.net", "tech@example..net"]:
            self.assertRaises(InvalidGroup, self.store.addGroup, "4567", contact)
        self.addGroup()
        self.store.updateGroup("4567", contact="first.last+sip@studio-1.example.co.uk")
        self.assertRaises(InvalidGroup, self.store.updateGroup, "4567", contact="tech@192.0.2.1")

    def test_duplicate_prefix_is_refused(self) -> None:
        self.addGroup()
        error = self.assertRaises(GroupExists, self.store.addGroup, "4567", "other@example.net")
        self.assertIn("4567", str(error))

    def test_update_changes_only_given_options(self) -> None:
        self.addGroup()
        self.clock.now = 2000.0
        self.assertEqual(
            self.store.updateGroup("4567", outgoingBlock=True, selfCare=False, contact="n@example.org"), []
        )
        group = self.store.getGroup("4567")
        assert group is not None
        self.assertEqual(
            (group.contact, group.incomingBlock, group.outgoingBlock, group.selfCare, group.updatedAt),
            ("n@example.org", False, True, False, 2000.0),
        )

    def test_update_refuses_bad_options(self) -> None:
        self.addGroup()
        self.assertRaises(InvalidGroup, self.store.updateGroup, "4567")
        self.assertRaises(InvalidGroup, self.store.updateGroup, "4567", colour=True)
        self.assertRaises(InvalidGroup, self.store.updateGroup, "4567", hunting="yes")
        self.assertRaises(InvalidGroup, self.store.updateGroup, "4567", contact="nobody")
        self.assertRaises(NoSuchGroup, self.store.updateGroup, "4599", hunting=True)

    def test_delete_only_an_empty_group(self) -> None:
        self.addGroup()
        self.store.allocate("4567", 2, realm=REALM)
        error = self.assertRaises(GroupNotEmpty, self.store.deleteGroup, "4567")
        self.assertIn("still has 2 account(s)", str(error))
        self.store.deleteAccount("45675001")
        self.store.setAccountGroup("45675002", None)
        self.store.deleteGroup("4567")
        self.assertIsNone(self.store.getGroup("4567"))
        self.assertRaises(NoSuchGroup, self.store.deleteGroup, "4567")

    def test_errors_are_store_errors(self) -> None:
        for error in [InvalidGroup, GroupExists, NoSuchGroup, GroupNotEmpty, GroupFull]:
            self.assertTrue(issubclass(error, StoreError))


class AllocationTests(GroupStoreMixin, SQLiteURLs, SynchronousTestCase):
    """
    L{Store.allocate}: the sequence from 5001, and the hunting series.
    """

    def test_sequence_from_5001(self) -> None:
        self.addGroup()
        created = self.store.allocate("4567", 2, realm=REALM)
        self.assertEqual(numbers(created), ["45675001", "45675002"])
        self.assertPasswords(created)
        created += self.store.allocate("4567", 1, "escoopfone", REALM)
        self.assertEqual(numbers(created)[2:], ["45675003"])
        members = self.store.groupMembers("4567")
        self.assertEqual(
            [(a.number, a.kind, a.group) for a in members],
            [("45675001", "premium", "4567"), ("45675002", "premium", "4567"), ("45675003", "escoopfone", "4567")],
        )
        self.assertEqual(self.store.huntingSeries("4567"), [])

    def test_continues_after_deleted_numbers(self) -> None:
        self.addGroup()
        self.store.allocate("4567", 3, realm=REALM)
        self.store.deleteAccount("45675003")
        self.store.deleteAccount("45675002")
        self.assertEqual(numbers(self.store.allocate("4567", 1, realm=REALM)), ["45675004"])

    def test_continues_after_numbers_taken_outside_the_group(self) -> None:
        """
        An account with a number of the sequence that is not a member (made
        before the group) is neither reused nor attached.
        """
        self.store.addAccount("45675007", "premium", "secret", REALM)
        self.addGroup()
        self.assertEqual(numbers(self.store.allocate("4567", 1, realm=REALM)), ["45675008"])
        account = self.store.getAccount("45675007")
        assert account is not None
        self.assertIsNone(account.group)

    def test_concurrent_allocations_get_different_numbers(self) -> None:
        """
        Two operators allocating in one group at once (each its own store)
        get different numbers: the group's row is locked while it allocates.
        """
        self.addGroup(hunting=True)
        other = Store(self.store.url)
        other.open()
        self.addCleanup(other.close)
        together = threading.Barrier(2)
        results: list[list[tuple[str, str]]] = []
        errors: list[BaseException] = []

        def allocating(store: Store) -> None:
            together.wait(10)
            try:
                results.append(store.allocate("4567", 3, realm=REALM))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=allocating, args=(s,)) for s in (self.store, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(errors, [])
        allocated = sorted(number for created in results for number in numbers(created))
        self.assertEqual(allocated, [f"4567{n}" for n in [*range(5001, 5007), *range(6001, 6007)]])

    def test_refuses_beyond_5999(self) -> None:
        self.addGroup()
        self.store.addAccount("45675998", "premium", "secret", REALM, group="4567")
        error = self.assertRaises(GroupFull, self.store.allocate, "4567", 2, realm=REALM)
        self.assertIn("room for 1 more", str(error))
        self.assertIsNone(self.store.getAccount("45675999"))
        self.assertEqual(numbers(self.store.allocate("4567", 1, realm=REALM)), ["45675999"])
        self.assertRaises(GroupFull, self.store.allocate, "4567", 1, realm=REALM)

    def test_refuses_bad_requests(self) -> None:
        self.addGroup()
        self.assertRaises(NoSuchGroup, self.store.allocate, "4599", 1, realm=REALM)
        self.assertRaises(InvalidGroup, self.store.allocate, "459", 1, realm=REALM)
        for count in [0, -1, True]:
            self.assertRaises(InvalidGroup, self.store.allocate, "4567", count, realm=REALM)
        for kind in ["test", "hunting", "factory", "gold"]:
            self.assertRaises(InvalidAccount, self.store.allocate, "4567", 1, kind, REALM)
        self.assertRaises(InvalidAccount, self.store.allocate, "4567", 1)
        self.assertEqual(self.store.listAccounts(), [])

    def test_hunting_series_grows_with_the_group(self) -> None:
        self.addGroup(hunting=True)
        created = self.store.allocate("4567", 2, realm=REALM)
        self.assertEqual(numbers(created), ["45675001", "45675002", "45676001", "45676002"])
        self.assertPasswords(created)
        self.assertEqual(numbers(self.store.allocate("4567", 1, realm=REALM)), ["45675003", "45676003"])
        series = self.store.huntingSeries("4567")
        self.assertEqual([(a.number, a.kind, a.group) for a in series][-1], ("45676003", "hunting", "4567"))
        self.assertEqual(len(self.store.groupMembers("4567")), 3)

    def test_hunting_switched_on_later_creates_the_series(self) -> None:
        self.addGroup()
        self.store.allocate("4567", 3, realm=REALM)
        created = self.store.updateGroup("4567", REALM, hunting=True)
        self.assertEqual(numbers(created), ["45676001", "45676002", "45676003"])
        self.assertPasswords(created)
        self.assertEqual(self.store.updateGroup("4567", REALM, hunting=True), [])
        self.store.updateGroup("4567", hunting=False)
        self.assertEqual(self.store.updateGroup("4567", REALM, hunting=True), [])
        self.assertEqual(len(self.store.huntingSeries("4567")), 3)

    def test_hunting_switched_on_needs_a_realm(self) -> None:
        self.addGroup()
        self.store.allocate("4567", 1, realm=REALM)
        self.assertRaises(InvalidAccount, self.store.updateGroup, "4567", hunting=True)
        group = self.store.getGroup("4567")
        assert group is not None
        self.assertFalse(group.hunting)

    def test_hunting_series_continues_after_deleted_numbers(self) -> None:
        self.addGroup(hunting=True)
        self.store.allocate("4567", 2, realm=REALM)
        self.store.deleteAccount("45676002")
        self.assertEqual(numbers(self.store.allocate("4567", 1, realm=REALM)), ["45675003", "45676003", "45676004"])


class NumberRuleTests(GroupStoreMixin, SQLiteURLs, SynchronousTestCase):
    """
    Which numbers each kind may have, and which accounts join a group.
    """

    def test_premium_numbers_have_eight_digits(self) -> None:
        for number, kind in [("15000", "premium"), ("4567500", "escoopfone"), ("456750011", "premium")]:
            error = self.assertRaises(InvalidAccount, self.store.addAccount, number, kind, "secret", REALM)
            self.assertIn("8 digits", str(error))

    def test_a_single_premium_account_needs_no_group(self) -> None:
        account = self.store.addAccount("45995005", "premium", "secret", REALM)
        self.assertIsNone(account.group)

    def test_factory_and_test_numbers_are_unaffected(self) -> None:
        self.store.addAccount("902080", "factory", "secret", REALM)
        self.store.addAccount("15000", "test", "secret", REALM)
        self.assertEqual([a.number for a in self.store.listAccounts()], ["15000", "902080"])

    def test_hunting_accounts_only_in_a_group_with_hunting(self) -> None:
        self.assertRaises(InvalidAccount, self.store.addAccount, "45676001", "hunting", "secret", REALM)
        self.addGroup()
        error = self.assertRaises(
            InvalidAccount, self.store.addAccount, "45676001", "hunting", "secret", REALM, group="4567"
        )
        self.assertIn("hunting off", str(error))
        self.store.updateGroup("4567", hunting=True)
        self.store.addAccount("45676004", "hunting", "secret", REALM, group="4567")
        self.assertRaises(InvalidAccount, self.store.addAccount, "45675001", "hunting", "secret", REALM, group="4567")
        group = self.store.getGroup("4567")
        assert group is not None
        self.assertEqual(group.nextHunting, 6005)

    def test_members_are_in_their_group_sequence(self) -> None:
        self.addGroup()
        account = self.store.addAccount("45675010", "premium", "secret", REALM, group="4567")
        self.assertEqual(account.group, "4567")
        for number, kind in [("45995001", "premium"), ("45676001", "premium"), ("45675000", "escoopfone")]:
            error = self.assertRaises(InvalidAccount, self.store.addAccount, number, kind, "x", REALM, group="4567")
            self.assertIn("not in the", str(error))
        self.assertRaises(InvalidAccount, self.store.addAccount, "902080", "factory", "x", REALM, group="4567")
        self.assertRaises(NoSuchGroup, self.store.addAccount, "45995001", "premium", "x", REALM, group="4599")
        self.assertRaises(InvalidGroup, self.store.addAccount, "45995001", "premium", "x", REALM, group="45")
        self.assertEqual(numbers(self.store.allocate("4567", 1, realm=REALM)), ["45675011"])

    def test_attach_and_detach(self) -> None:
        self.addGroup()
        self.store.addAccount("45675003", "premium", "secret", REALM)
        self.store.setAccountGroup("45675003", "4567")
        self.assertEqual([a.number for a in self.store.groupMembers("4567")], ["45675003"])
        self.assertEqual(numbers(self.store.allocate("4567", 1, realm=REALM)), ["45675004"])
        self.store.setAccountGroup("45675003", None)
        account = self.store.getAccount("45675003")
        assert account is not None
        self.assertIsNone(account.group)
        self.assertRaises(NoSuchAccount, self.store.setAccountGroup, "45675099", "4567")
        self.assertRaises(NoSuchGroup, self.store.setAccountGroup, "45675003", "4599")

    def test_hunting_accounts_cannot_leave_their_group(self) -> None:
        self.addGroup(hunting=True)
        self.store.allocate("4567", 1, realm=REALM)
        self.assertRaises(InvalidAccount, self.store.setAccountGroup, "45676001", None)

    def test_kind_changes_follow_the_rules(self) -> None:
        self.addGroup()
        self.store.allocate("4567", 1, realm=REALM)
        self.store.addAccount("15000", "test", "secret", REALM)
        self.store.updateAccount("45675001", kind="escoopfone")
        self.assertRaises(InvalidAccount, self.store.updateAccount, "45675001", kind="factory")
        self.assertRaises(InvalidAccount, self.store.updateAccount, "45675001", kind="hunting")
        self.assertRaises(InvalidAccount, self.store.updateAccount, "15000", kind="premium")
        self.assertRaises(NoSuchAccount, self.store.updateAccount, "45675099", kind="premium")
        account = self.store.getAccount("45675001")
        assert account is not None
        self.assertEqual(account.kind, "escoopfone")


class GroupMigrationTests(SQLiteURLs, SynchronousTestCase):
    """
    A version 1 store gains groups; its accounts keep working and join no group.
    """

    def makeVersion1(self) -> str:
        url = self.newStoreURL()
        engine = sa.create_engine(engineURL(url), poolclass=sa.NullPool)
        self.addCleanup(engine.dispose)
        ha1 = {
            "md5": computeHA1("MD5", "45675001", REALM, "secret"),
            "sha": computeHA1("SHA-256", "45675001", REALM, "secret"),
        }
        with engine.begin() as connection:
            schema.schemaVersion.create(connection)
            connection.execute(schema.schemaVersion.insert().values(version=1))
            schema._migration1(connection)
            for number, kind in [("45675001", "premium"), ("902080", "factory")]:
                connection.execute(
                    sa.text(
                        "INSERT INTO accounts (number, kind, display_name, email, realm, ha1_md5, ha1_sha256, "
                        "created_at, updated_at) VALUES (:number, :kind, '', '', :realm, :md5, :sha, 1.0, 1.0)"
                    ),
                    {"number": number, "kind": kind, "realm": REALM, **ha1},
                )
        return url

    def test_version_1_is_migrated(self) -> None:
        store = Store(self.makeVersion1())
        store.open()
        self.addCleanup(store.close)
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION)
        account = store.getAccount("45675001")
        assert account is not None
        self.assertEqual((account.kind, account.group), ("premium", None))
        self.assertEqual(store.credentials("45675001"), account.credentials())
        store.addGroup("4567", "tech@example.net")
        self.assertEqual(store.groupMembers("4567"), [])
        self.assertEqual(numbers(store.allocate("4567", 1, realm=REALM)), ["45675002"])
        store.setAccountGroup("45675001", "4567")
        self.assertEqual([a.number for a in store.groupMembers("4567")], ["45675001", "45675002"])


class GroupAdminTests(SQLiteURLs, SynchronousTestCase):
    """
    The C{aetasip-admin group} commands, on the store given by C{--store}
    (realm C{aetasip}, the default).
    """

    def setUp(self) -> None:
        self.url = self.newStoreURL()

    def call(self, *args: str) -> tuple[int, str, str]:
        out, err = StringIO(), StringIO()
        status = admin.main(["--store", self.url, *args], out, err)
        return status, out.getvalue(), err.getvalue()

    def succeed(self, *args: str) -> str:
        status, out, err = self.call(*args)
        self.assertEqual((status, err), (0, ""))
        return out

    def assertRefused(self, status: int, args: list[str], *fragments: str) -> None:
        code, out, err = self.call(*args)
        self.assertEqual((code, out), (status, ""), err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("aetasip-admin"), err)
        self.assertNotIn("Traceback", err)
        for fragment in fragments:
            self.assertIn(fragment, err)

    def store(self) -> Store:
        store = Store(self.url)
        store.open()
        self.addCleanup(store.close)
        return store

    def passwords(self, out: str) -> dict[str, str]:
        """
        The numbers and passwords printed in C{out}, each printed once, then the warning.
        """
        found = dict(re.findall(r"(?m)^([0-9]{8})  ([A-Za-z0-9]{20})$", out))
        for password in found.values():
            self.assertEqual(out.count(password), 1)
        self.assertTrue(
            out.endswith("Write them down now: the passwords are not stored and will not be shown again.\n")
        )
        return found

    def test_add_show_list(self) -> None:
        out = self.succeed("group", "add", "4567", "--contact", "tech@example.net", "--incoming-block", "--hunting")
        self.assertIn("Added group 4567", out)
        show = self.succeed("group", "show", "4567")
        self.assertRegex(show, r"(?m)^contact: +tech@example.net$")
        self.assertRegex(show, r"(?m)^incoming block: +on$")
        self.assertRegex(show, r"(?m)^outgoing block: +off$")
        self.assertRegex(show, r"(?m)^hunting: +on \(dial 45676000\)$")
        self.assertRegex(show, r"(?m)^self-care: +on$")
        self.assertIn("Members (0):", show)
        self.succeed("group", "add", "4599", "-c", "b@example.org", "--no-self-care")
        lines = self.succeed("group", "list").splitlines()
        self.assertEqual([line.split()[0] for line in lines], ["PREFIX", "4567", "4599"])
        self.assertIn("incoming-block, hunting", lines[1])
        self.assertTrue(lines[2].endswith("0        -"), lines[2])

    def test_no_groups(self) -> None:
        self.assertEqual(self.succeed("group", "list"), "No groups.\n")

    def test_add_refuses_bad_input(self) -> None:
        self.assertRefused(2, ["group", "add", "4567"], "missing --contact")
        self.assertRefused(2, ["group", "add", "456", "--contact", "tech@example.net"], "4 digits")
        self.assertRefused(2, ["group", "add", "4567", "--contact", "tech@localhost"], "e-mail")
        self.assertRefused(
            2, ["group", "add", "4567", "-c", "t@example.net", "--hunting", "--no-hunting"], "contradict"
        )
        self.assertRefused(2, ["group", "add"], "missing PREFIX")
        self.succeed("group", "add", "4567", "--contact", "tech@example.net")
        self.assertRefused(1, ["group", "add", "4567", "--contact", "tech@example.net"], "already exists")

    def test_set_options_on_and_off(self) -> None:
        self.succeed("group", "add", "4567", "--contact", "tech@example.net", "--incoming-block")
        out = self.succeed("group", "set", "4567", "--no-incoming-block", "--outgoing-block", "--quarterly-log")
        self.assertEqual(out, "Updated group 4567.\n")
        group = self.store().getGroup("4567")
        assert group is not None
        self.assertEqual((group.incomingBlock, group.outgoingBlock, group.quarterlyLog), (False, True, True))
        self.assertRefused(2, ["group", "set", "4567"], "nothing to change")
        self.assertRefused(1, ["group", "set", "4599", "--hunting"], "no group 4599")
        self.assertRefused(1, ["group", "show", "4599"], "no group 4599")

    def test_relay_mode_of_a_group_and_of_an_account(self) -> None:
        self.succeed("group", "add", "4567", "--contact", "tech@example.net")
        self.succeed("group", "allocate", "4567", "--count", "1")
        self.assertIn("relay:           inherit (relay.mode)\n", self.succeed("group", "show", "4567"))
        self.succeed("group", "set", "4567", "--relay", "always")
        self.assertEqual(self.store().getGroup("4567").relay, "always")  # type: ignore[union-attr]
        self.assertIn("relay:           always\n", self.succeed("group", "show", "4567"))
        self.succeed("account", "update", "45675001", "--relay", "never")
        self.assertIn("relay:           never\n", self.succeed("account", "show", "45675001"))
        self.succeed("account", "update", "45675001", "--relay", "inherit")
        self.assertIsNone(self.store().getAccount("45675001").relay)  # type: ignore[union-attr]
        self.succeed("group", "set", "4567", "--relay", "inherit")
        self.assertIsNone(self.store().getGroup("4567").relay)  # type: ignore[union-attr]
        self.assertRefused(2, ["group", "set", "4567", "--relay", "maybe"], "invalid relay mode 'maybe'")
        self.assertRefused(2, ["account", "update", "45675001", "--relay", "x"], "invalid relay mode 'x'")

    def test_allocate_prints_each_password_once(self) -> None:
        self.succeed("group", "add", "4567", "--contact", "tech@example.net")
        out = self.succeed("group", "allocate", "4567", "--count", "2")
        self.assertIn("Allocated 2 premium number(s) in group 4567, realm aetasip:", out)
        found = self.passwords(out)
        self.assertEqual(sorted(found), ["45675001", "45675002"])
        credentials = self.store().credentials("45675002")
        assert credentials is not None
        self.assertEqual(credentials.ha1["MD5"], computeHA1("MD5", "45675002", REALM, found["45675002"]))
        out = self.succeed("group", "allocate", "4567", "-n", "1", "--kind", "escoopfone")
        self.assertEqual(list(self.passwords(out)), ["45675003"])
        show = self.succeed("group", "show", "4567")
        self.assertRegex(show, r"(?m)^45675003 +escoopfone")

    def test_allocate_with_hunting(self) -> None:
        self.succeed("group", "add", "4567", "--contact", "tech@example.net", "--hunting")
        out = self.succeed("group", "allocate", "4567", "--count", "2")
        self.assertIn("and 2 hunting series account(s)", out)
        self.assertEqual(sorted(self.passwords(out)), ["45675001", "45675002", "45676001", "45676002"])
        self.assertIn("Hunting series (2): 45676001, 45676002", self.succeed("group", "show", "4567"))

    def test_hunting_switched_on_later_prints_the_series(self) -> None:
        self.succeed("group", "add", "4567", "--contact", "tech@example.net")
        self.succeed("group", "allocate", "4567", "--count", "2")
        out = self.succeed("group", "set", "4567", "--hunting")
        self.assertEqual(sorted(self.passwords(out)), ["45676001", "45676002"])

    def test_allocate_refuses_bad_input(self) -> None:
        self.assertRefused(1, ["group", "allocate", "4567", "--count", "1"], "no group 4567")
        self.succeed("group", "add", "4567", "--contact", "tech@example.net")
        self.assertRefused(2, ["group", "allocate", "4567"], "missing --count")
        for count in ["0", "-1", "x", "1000"]:
            self.assertRefused(2, ["group", "allocate", "4567", "--count", count], "invalid count")
        self.assertRefused(2, ["group", "allocate", "4567", "--count", "1", "--kind", "test"], "invalid kind")
        self.succeed("account", "add", "45675999", "-p", "x")
        self.succeed("group", "attach", "4567", "45675999")
        self.assertRefused(1, ["group", "allocate", "4567", "--count", "1"], "room for 0 more")

    def test_attach_and_detach(self) -> None:
        self.succeed("group", "add", "4567", "--contact", "tech@example.net")
        self.succeed("account", "add", "45675001", "-p", "x")
        self.assertRegex(self.succeed("account", "show", "45675001"), r"(?m)^group: +none$")
        self.assertIn("now belongs to group 4567", self.succeed("group", "attach", "4567", "45675001"))
        self.assertRegex(self.succeed("account", "show", "45675001"), r"(?m)^group: +4567$")
        self.assertRefused(1, ["group", "del", "4567"], "still has 1 account(s)")
        self.assertIn("left group 4567", self.succeed("group", "detach", "45675001"))
        self.succeed("account", "add", "45995001", "-p", "x")
        self.assertRefused(1, ["group", "attach", "4567", "45995001"], "not in the sequence of group 4567")
        self.assertEqual(self.succeed("group", "del", "4567"), "Deleted group 4567.\n")
        self.assertRefused(1, ["group", "del", "4567"], "no group 4567")

    def test_account_add_refuses_short_premium_numbers(self) -> None:
        self.assertRefused(2, ["account", "add", "15000", "-p", "x"], "8 digits")
        self.assertRefused(2, ["account", "add", "4567500", "-p", "x", "--kind", "escoopfone"], "8 digits")
        self.assertRefused(1, ["account", "add", "45676001", "-p", "x", "--kind", "hunting"], "hunting")
        self.succeed("account", "add", "15000", "-p", "x", "--kind", "test")
        self.succeed("account", "add", "902080", "-p", "x", "--kind", "factory")
        self.assertRefused(1, ["account", "update", "15000", "--kind", "premium"], "8 digits")

    def test_help(self) -> None:
        out = self.succeed("group", "--help")
        for command in ["add", "list", "show", "set", "allocate", "attach", "detach", "del"]:
            self.assertIn(command, out)
        self.assertIn("--no-self-care", self.succeed("group", "set", "--help"))
        self.assertRefused(2, ["group"], "missing command")


class AsyncGroupTests(SQLiteURLs, TestCase):
    """
    The group methods of L{AsyncStore}.
    """

    @defer.inlineCallbacks
    def test_group_methods_in_threads(self):  # type: ignore[no-untyped-def]
        threaded = AsyncStore(self.openStore())
        threaded.start()
        self.addCleanup(threaded.stop)
        yield threaded.addGroup("4567", "tech@example.net")
        created = yield threaded.allocate("4567", 2, "premium", REALM)
        self.assertEqual(numbers(created), ["45675001", "45675002"])
        created = yield threaded.updateGroup("4567", REALM, hunting=True)
        self.assertEqual(numbers(created), ["45676001", "45676002"])
        group = yield threaded.getGroup("4567")
        self.assertTrue(group.hunting)
        self.assertEqual([g.prefix for g in (yield threaded.listGroups())], ["4567"])
        self.assertEqual(len((yield threaded.groupMembers("4567"))), 2)
        self.assertEqual(len((yield threaded.huntingSeries("4567"))), 2)
        yield threaded.addAccount("45675010", "premium", "secret", REALM, group="4567")
        yield threaded.setAccountGroup("45675010", None)
        yield self.assertFailure(threaded.deleteGroup("4567"), GroupNotEmpty)
