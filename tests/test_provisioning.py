"""
Tests for L{aetasip.store.provisioning}: the one provisioning layer of
C{aetasip-admin} and the admin API, on a SQLite store.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip.auth import computeHA1
from aetasip.store import (
    MAX_ALLOCATION,
    PASSWORD_LENGTH,
    AccountExists,
    Allocation,
    AsyncStore,
    GroupNotEmpty,
    InvalidAccount,
    InvalidGroup,
    InvalidValue,
    NewPassword,
    NoSuchAccount,
    NoSuchGroup,
    Provisioning,
    Store,
    StoreError,
)
from tests.test_store import SQLiteURLs, execute, tableNames

REALM = "studio.example.net"


class ProvisioningMixin(SQLiteURLs):
    """
    A L{Provisioning} on a new store, with realm L{REALM}.
    """

    def setUp(self) -> None:
        self.store = self.openStore()
        self.provisioning = Provisioning(self.store, REALM)

    def assertPassword(self, number: str, password: str) -> None:
        """
        C{password} is the SIP password of C{number} in L{REALM}, and is
        stored nowhere in plain.
        """
        test: SynchronousTestCase = self  # type: ignore[assignment]
        credentials = self.store.credentials(number)
        assert credentials is not None
        test.assertEqual(credentials.realm, REALM)
        test.assertEqual(credentials.ha1["SHA-256"], computeHA1("SHA-256", number, REALM, password))
        stored = repr([execute(self.store.url, f'SELECT * FROM "{table}"') for table in tableNames(self.store.url)])
        test.assertNotIn(password, stored)

    def assertGenerated(self, password: str) -> None:
        test: SynchronousTestCase = self  # type: ignore[assignment]
        test.assertRegex(password, rf"^[A-Za-z0-9]{{{PASSWORD_LENGTH}}}$")


class AccountProvisioningTests(ProvisioningMixin, SynchronousTestCase):
    """
    Adding, changing and deleting accounts.
    """

    def test_added_account_gets_a_generated_password_once(self) -> None:
        added = self.provisioning.addAccount("45675001", displayName="Studio 1", email="tech@example.net")
        self.assertGenerated(added.password)
        self.assertPassword("45675001", added.password)
        self.assertEqual(self.store.getAccount("45675001"), added.account)
        self.assertEqual(
            (added.account.kind, added.account.displayName, added.account.email, added.account.realm),
            ("premium", "Studio 1", "tech@example.net", REALM),
        )

    def test_generated_passwords_differ(self) -> None:
        first = self.provisioning.addAccount("45675001").password
        second = self.provisioning.addAccount("45675002").password
        self.assertNotEqual(first, second)

    def test_added_account_may_have_a_given_password(self) -> None:
        added = self.provisioning.addAccount("15000", "test", password="Given-Secret-1")
        self.assertEqual(added.password, "Given-Secret-1")
        self.assertPassword("15000", "Given-Secret-1")

    def test_added_account_may_have_a_portal_password_and_a_group(self) -> None:
        self.provisioning.addGroup("4567", "tech@example.net")
        added = self.provisioning.addAccount("45675003", portalPassword="portal-secret", group="4567")
        self.assertEqual(added.account.group, "4567")
        self.assertTrue(self.store.checkPortalPassword("45675003", "portal-secret"))

    def test_bad_account_values_are_refused_before_the_store(self) -> None:
        for arguments, fragment in [
            ({"number": "4567500x"}, "invalid number"),
            ({"number": "15000"}, "8 digits"),
            ({"number": "45675001", "kind": "gold"}, "unknown kind"),
            ({"number": "45675001", "displayName": "two\nlines"}, "control characters"),
            ({"number": "45675001", "email": "not an address"}, "e-mail"),
            ({"number": "45675001", "password": ""}, "must not be empty"),
            ({"number": "45675001", "portalPassword": ""}, "must not be empty"),
            ({"number": "45675001", "group": "45"}, "4 digits"),
        ]:
            error = self.assertRaises(InvalidValue, self.provisioning.addAccount, **arguments)
            self.assertIn(fragment, str(error), arguments)
        self.assertEqual(self.store.listAccounts(), [])

    def test_refused_password_is_not_repeated_in_the_message(self) -> None:
        error = self.assertRaises(InvalidAccount, self.provisioning.addAccount, "45675001", password="Sec\x00ret-42")
        self.assertIn("control characters", str(error))
        self.assertNotIn("ret-42", str(error))

    def test_account_email_follows_the_contact_rule(self) -> None:
        """
        An account's e-mail address is checked by the same rule as a
        group's contact; it may also be empty.
        """
        for address in ["tech@localhost", "tech@192.0.2.1", "a b@example.net", "tech@example..net"]:
            self.assertRaises(InvalidAccount, self.provisioning.addAccount, "45675001", email=address)
            self.assertRaises(InvalidGroup, self.provisioning.addGroup, "4567", address)
        self.provisioning.addAccount("45675001", email="first.last+sip@studio-1.example.co.uk")
        self.provisioning.addAccount("45675002", email="")

    def test_taken_number_is_refused_by_the_store(self) -> None:
        self.provisioning.addAccount("45675001")
        self.assertRaises(AccountExists, self.provisioning.addAccount, "45675001")

    def test_new_password_is_generated_or_given(self) -> None:
        self.provisioning.addAccount("45675001")
        generated = self.provisioning.setPassword("45675001")
        self.assertIsInstance(generated, NewPassword)
        self.assertEqual(generated.number, "45675001")
        self.assertGenerated(generated.password)
        self.assertPassword("45675001", generated.password)
        self.assertEqual(self.provisioning.setPassword("45675001", "New-Secret-2").password, "New-Secret-2")
        self.assertPassword("45675001", "New-Secret-2")
        self.assertRaises(InvalidAccount, self.provisioning.setPassword, "45675001", "")
        self.assertRaises(NoSuchAccount, self.provisioning.setPassword, "45675009")

    def test_portal_password_is_set_and_removed(self) -> None:
        self.provisioning.addAccount("45675001")
        self.provisioning.setPortalPassword("45675001", "portal-secret")
        self.assertTrue(self.store.checkPortalPassword("45675001", "portal-secret"))
        self.provisioning.setPortalPassword("45675001", None)
        self.assertFalse(self.store.checkPortalPassword("45675001", "portal-secret"))
        self.assertRaises(InvalidAccount, self.provisioning.setPortalPassword, "45675001", "")

    def test_update_changes_the_given_fields(self) -> None:
        self.provisioning.addAccount("45675001", displayName="Studio 1")
        self.provisioning.updateAccount("45675001", email="a@example.net", kind="escoopfone")
        account = self.store.getAccount("45675001")
        assert account is not None
        self.assertEqual(
            (account.kind, account.displayName, account.email), ("escoopfone", "Studio 1", "a@example.net")
        )
        self.provisioning.updateAccount("45675001", email="")
        account = self.store.getAccount("45675001")
        assert account is not None
        self.assertEqual(account.email, "")

    def test_update_refuses_nothing_or_bad_values(self) -> None:
        self.provisioning.addAccount("45675001")
        error = self.assertRaises(InvalidAccount, self.provisioning.updateAccount, "45675001")
        self.assertIn("nothing to change", str(error))
        self.assertRaises(InvalidAccount, self.provisioning.updateAccount, "45675001", kind="gold")
        self.assertRaises(InvalidAccount, self.provisioning.updateAccount, "45675001", email="nobody")
        self.assertRaises(InvalidAccount, self.provisioning.updateAccount, "45675001", displayName="a\tb")
        self.assertRaises(NoSuchAccount, self.provisioning.updateAccount, "45675009", displayName="x")

    def test_delete_reports_the_registrations_deleted(self) -> None:
        self.provisioning.addAccount("45675001")
        self.assertEqual(self.provisioning.deleteAccount("45675001"), 0)
        self.assertIsNone(self.store.getAccount("45675001"))
        self.assertRaises(NoSuchAccount, self.provisioning.deleteAccount, "45675001")
        self.assertRaises(InvalidAccount, self.provisioning.deleteAccount, "studio")


class GroupProvisioningTests(ProvisioningMixin, SynchronousTestCase):
    """
    Groups: options, allocation with the hunting series, attach and detach.
    """

    def test_add_group_with_options(self) -> None:
        group = self.provisioning.addGroup("4567", "tech@example.net", hunting=True, selfCare=False)
        self.assertEqual(self.store.getGroup("4567"), group)
        self.assertEqual((group.hunting, group.selfCare, group.incomingBlock), (True, False, False))

    def test_add_group_refuses_bad_values(self) -> None:
        self.assertRaises(InvalidGroup, self.provisioning.addGroup, "456", "tech@example.net")
        self.assertRaises(InvalidGroup, self.provisioning.addGroup, "4567", "tech")
        self.assertRaises(InvalidGroup, self.provisioning.addGroup, "4567", "tech@example.net", hunting="yes")
        self.assertEqual(self.store.listGroups(), [])

    def test_allocation_separates_members_and_hunting_series(self) -> None:
        self.provisioning.addGroup("4567", "tech@example.net", hunting=True)
        allocation = self.provisioning.allocate("4567", 2)
        self.assertIsInstance(allocation, Allocation)
        self.assertEqual([new.number for new in allocation.members], ["45675001", "45675002"])
        self.assertEqual([new.number for new in allocation.huntingSeries], ["45676001", "45676002"])
        self.assertEqual(allocation.created, [*allocation.members, *allocation.huntingSeries])
        for new in allocation.created:
            self.assertGenerated(new.password)
            self.assertPassword(new.number, new.password)
        allocation = self.provisioning.allocate("4567", 1, "escoopfone")
        self.assertEqual([new.number for new in allocation.created], ["45675003", "45676003"])
        member = self.store.getAccount("45675003")
        assert member is not None
        self.assertEqual((member.kind, member.group), ("escoopfone", "4567"))

    def test_allocation_without_hunting_makes_no_series(self) -> None:
        self.provisioning.addGroup("4567", "tech@example.net")
        allocation = self.provisioning.allocate("4567", 1)
        self.assertEqual(([new.number for new in allocation.members], allocation.huntingSeries), (["45675001"], []))

    def test_allocation_refuses_bad_requests(self) -> None:
        self.provisioning.addGroup("4567", "tech@example.net")
        for count in [0, -1, MAX_ALLOCATION + 1, True, "2"]:
            error = self.assertRaises(InvalidGroup, self.provisioning.allocate, "4567", count)
            self.assertIn("invalid count", str(error))
        for kind in ["test", "hunting", "gold"]:
            error = self.assertRaises(InvalidAccount, self.provisioning.allocate, "4567", 1, kind)
            self.assertIn("invalid kind", str(error))
        self.assertRaises(NoSuchGroup, self.provisioning.allocate, "4599", 1)
        self.assertEqual(self.store.listAccounts(), [])

    def test_hunting_switched_on_returns_the_new_series(self) -> None:
        self.provisioning.addGroup("4567", "tech@example.net")
        self.provisioning.allocate("4567", 2)
        created = self.provisioning.updateGroup("4567", hunting=True, contact="new@example.org")
        self.assertEqual([new.number for new in created], ["45676001", "45676002"])
        for new in created:
            self.assertPassword(new.number, new.password)
        group = self.store.getGroup("4567")
        assert group is not None
        self.assertEqual((group.hunting, group.contact), (True, "new@example.org"))
        self.assertEqual(self.provisioning.updateGroup("4567", outgoingBlock=True), [])

    def test_update_group_refuses_bad_options(self) -> None:
        self.provisioning.addGroup("4567", "tech@example.net")
        self.assertRaises(InvalidGroup, self.provisioning.updateGroup, "4567")
        self.assertRaises(InvalidGroup, self.provisioning.updateGroup, "4567", colour=True)
        self.assertRaises(InvalidGroup, self.provisioning.updateGroup, "4567", hunting=1)
        self.assertRaises(InvalidGroup, self.provisioning.updateGroup, "4567", contact="nobody")
        self.assertRaises(NoSuchGroup, self.provisioning.updateGroup, "4599", hunting=True)

    def test_attach_detach_and_delete(self) -> None:
        self.provisioning.addGroup("4567", "tech@example.net")
        self.provisioning.addAccount("45675003")
        self.provisioning.attach("45675003", "4567")
        self.assertEqual([a.number for a in self.store.groupMembers("4567")], ["45675003"])
        self.assertRaises(GroupNotEmpty, self.provisioning.deleteGroup, "4567")
        self.assertEqual(self.provisioning.detach("45675003"), "4567")
        self.assertIsNone(self.provisioning.detach("45675003"))
        self.assertRaises(NoSuchAccount, self.provisioning.detach, "45675099")
        self.assertRaises(InvalidAccount, self.provisioning.attach, "studio", "4567")
        self.provisioning.deleteGroup("4567")
        self.assertIsNone(self.store.getGroup("4567"))

    def test_errors_are_store_errors(self) -> None:
        for error in [InvalidValue, InvalidAccount, InvalidGroup]:
            self.assertTrue(issubclass(error, StoreError))
        self.assertTrue(issubclass(InvalidAccount, InvalidValue))
        self.assertTrue(issubclass(InvalidGroup, InvalidValue))


class ProvisioningInThreadsTests(SQLiteURLs, TestCase):
    """
    A web handler runs provisioning in the store's threads through the
    async facade.
    """

    @defer.inlineCallbacks
    def test_provisioning_through_the_async_facade(self):  # type: ignore[no-untyped-def]
        threaded = AsyncStore(Store(self.newStoreURL()))
        threaded.start()
        self.addCleanup(threaded.stop)
        yield threaded.open()
        provisioning = Provisioning(threaded.store, REALM)
        yield threaded.run(provisioning.addGroup, "4567", "tech@example.net", hunting=True)
        allocation = yield threaded.run(provisioning.allocate, "4567", 1)
        self.assertEqual([new.number for new in allocation.created], ["45675001", "45676001"])
        self.assertTrue(re.fullmatch(r"[A-Za-z0-9]{20}", allocation.members[0].password))
        yield self.assertFailure(threaded.run(provisioning.allocate, "4567", 0), InvalidGroup)
        self.assertEqual(len((yield threaded.groupMembers("4567"))), 1)
