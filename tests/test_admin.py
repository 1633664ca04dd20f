"""
Tests for L{aetasip.admin}: the C{aetasip-admin} command line.
"""

from __future__ import annotations

import os
import re
from io import StringIO

from twisted.trial.unittest import SynchronousTestCase

from aetasip import admin
from aetasip.auth import computeHA1
from aetasip.location import Binding
from aetasip.store import Store
from tests.servers import socketPath

NOW = 1_800_000_000.0
REALM = "studio.example.net"


class AdminTestCase(SynchronousTestCase):
    """
    Runs C{aetasip-admin} in-process on a SQLite store, with a configuration
    file that sets the realm.
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "store.db")
        self.url = f"sqlite:///{self.path}"
        self.config = os.path.join(directory, "aetasip.py")
        with open(self.config, "w") as f:
            f.write(f"sip = {{'realm': {REALM!r}}}\nstore = {{'url': {self.url!r}}}\n")
        self.patch(admin, "_now", lambda: NOW)

    def call(self, *args: str) -> tuple[int, str, str]:
        """
        Run C{aetasip-admin --config FILE ARGS}.

        @return: the exit status, standard output and standard error.
        """
        out, err = StringIO(), StringIO()
        status = admin.main(["--config", self.config, *args], out, err)
        return status, out.getvalue(), err.getvalue()

    def succeed(self, *args: str) -> str:
        """
        Run C{args}, which must succeed silently on standard error.

        @return: the standard output.
        """
        status, out, err = self.call(*args)
        self.assertEqual((status, err), (0, ""))
        return out

    def openStore(self) -> Store:
        store = Store(self.url)
        store.open()
        self.addCleanup(store.close)
        return store

    def assertRefused(self, status: int, args: list[str], *fragments: str) -> None:
        """
        C{args} exit with C{status}, print nothing and say why in one line,
        without a traceback.
        """
        code, out, err = self.call(*args)
        self.assertEqual((code, out), (status, ""), err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("aetasip-admin"), err)
        self.assertNotIn("Traceback", err)
        for fragment in fragments:
            self.assertIn(fragment, err)

    def assertNotStoredInPlain(self, *secrets: str) -> None:
        for suffix in ["", "-wal"]:
            if os.path.exists(self.path + suffix):
                with open(self.path + suffix, "rb") as f:
                    content = f.read()
                for secret in secrets:
                    self.assertNotIn(secret.encode(), content)

    def generatedPassword(self, out: str) -> str:
        """
        The password printed in C{out}, which must be printed exactly once.
        """
        found = re.findall(r"SIP password: (\S+)", out)
        self.assertEqual(len(found), 1, out)
        password: str = found[0]
        self.assertRegex(password, r"^[A-Za-z0-9]{20}$")
        self.assertEqual(out.count(password), 1)
        return password


class AccountAddTests(AdminTestCase):
    """
    C{account add}.
    """

    def test_add_with_password_stores_only_digests_for_configured_realm(self) -> None:
        out = self.succeed("account", "add", "45675001", "--password", "Given-Secret-1", "--kind", "test")
        self.assertIn("Added account 45675001 (test) in realm studio.example.net.", out)
        self.assertNotIn("Given-Secret-1", out)
        credentials = self.openStore().credentials("45675001")
        assert credentials is not None
        self.assertEqual((credentials.kind, credentials.realm), ("test", REALM))
        self.assertEqual(credentials.ha1["SHA-256"], computeHA1("SHA-256", "45675001", REALM, "Given-Secret-1"))
        self.assertNotStoredInPlain("Given-Secret-1")

    def test_add_without_password_prints_a_generated_one_once(self) -> None:
        out = self.succeed("account", "add", "45675001")
        password = self.generatedPassword(out)
        credentials = self.openStore().credentials("45675001")
        assert credentials is not None
        self.assertEqual(credentials.kind, "premium")
        self.assertEqual(credentials.ha1["MD5"], computeHA1("MD5", "45675001", REALM, password))
        self.assertNotStoredInPlain(password)

    def test_generated_passwords_differ(self) -> None:
        first = self.generatedPassword(self.succeed("account", "add", "45675001"))
        second = self.generatedPassword(self.succeed("account", "add", "45675002"))
        self.assertNotEqual(first, second)

    def test_options_may_come_before_or_after_the_number(self) -> None:
        self.succeed(
            "account", "add", "-k", "escoopfone", "45675001", "--name", "Studio 1", "--email", "tech@example.net"
        )
        account = self.openStore().getAccount("45675001")
        assert account is not None
        self.assertEqual(
            (account.kind, account.displayName, account.email), ("escoopfone", "Studio 1", "tech@example.net")
        )

    def test_duplicate_number_is_refused(self) -> None:
        self.succeed("account", "add", "45675001", "--password", "first")
        self.assertRefused(1, ["account", "add", "45675001", "--password", "second"], "account 45675001 already exists")
        credentials = self.openStore().credentials("45675001")
        assert credentials is not None
        self.assertEqual(credentials.ha1["MD5"], computeHA1("MD5", "45675001", REALM, "first"))

    def test_non_digit_number_is_refused(self) -> None:
        for number in ["4567500x", "+4567", "1" * 33, "-1"]:
            self.assertRefused(2, ["account", "add", "--", number], "invalid number")
        self.assertEqual(self.openStore().listAccounts(), [])

    def test_wrong_kind_is_refused(self) -> None:
        self.assertRefused(2, ["account", "add", "45675001", "--kind", "gold"], "unknown kind 'gold'", "premium")

    def test_missing_number_is_refused(self) -> None:
        self.assertRefused(2, ["account", "add"], "missing NUMBER", "aetasip-admin account add --help")

    def test_extra_argument_is_refused(self) -> None:
        self.assertRefused(2, ["account", "add", "45675001", "45675002"], "unexpected argument '45675002'")

    def test_unknown_option_is_refused(self) -> None:
        self.assertRefused(2, ["account", "add", "45675001", "--colour", "red"], "--colour")

    def test_option_without_value_is_refused(self) -> None:
        self.assertRefused(2, ["account", "add", "45675001", "--password"], "password")

    def test_bad_values_are_refused(self) -> None:
        self.assertRefused(2, ["account", "add", "45675001", "--password", ""], "must not be empty")
        self.assertRefused(2, ["account", "add", "45675001", "--email", "not an address"], "e-mail")
        self.assertRefused(2, ["account", "add", "45675001", "--name", "two\nlines"], "control characters")

    def test_email_follows_the_group_contact_rule(self) -> None:
        """
        An account's e-mail address is checked by the store's one e-mail
        rule, the one of a group's contact.
        """
        for address in ["tech@localhost", "tech@192.0.2.1", "a@b@example.net"]:
            self.assertRefused(2, ["account", "add", "45675001", "--email", address], "invalid e-mail address")
            self.assertRefused(2, ["group", "add", "4567", "--contact", address], "invalid e-mail address")
        self.succeed("account", "add", "45675001", "--email", "first.last+sip@studio-1.example.co.uk")

    def test_refused_password_is_not_shown(self) -> None:
        code, out, err = self.call("account", "add", "45675001", "--password", "Sec\x7fret-42")
        self.assertEqual((code, out), (2, ""))
        self.assertIn("control characters", err)
        self.assertNotIn("ret-42", err)


class AccountReadTests(AdminTestCase):
    """
    C{account list} and C{account show}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.succeed("account", "add", "45675002", "-p", "x", "-n", "Studio 2", "-e", "two@example.net")
        self.succeed("account", "add", "15000", "-p", "x", "-k", "test", "-n", "Test number")

    def test_list_shows_a_table_by_number(self) -> None:
        lines = self.succeed("account", "list").splitlines()
        self.assertEqual(lines[0].split(), ["NUMBER", "KIND", "NAME", "E-MAIL", "CREATED"])
        self.assertTrue(lines[1].startswith("15000 "))
        self.assertIn("Test number", lines[1])
        self.assertTrue(lines[2].startswith("45675002 "))
        self.assertIn("two@example.net", lines[2])
        self.assertEqual(len(lines), 3)

    def test_list_filters_by_kind(self) -> None:
        lines = self.succeed("account", "list", "--kind", "test").splitlines()
        self.assertEqual([line.split()[0] for line in lines[1:]], ["15000"])
        self.assertEqual(self.succeed("account", "list", "--kind", "hunting"), "No accounts.\n")
        self.assertRefused(2, ["account", "list", "--kind", "gold"], "unknown kind")

    def test_list_as_csv(self) -> None:
        lines = self.succeed("account", "list", "--csv").splitlines()
        self.assertEqual(lines[0], "number,kind,name,email,realm,created,updated")
        self.assertTrue(lines[2].startswith(f"45675002,premium,Studio 2,two@example.net,{REALM},"))

    def test_show_gives_every_field_but_no_digest(self) -> None:
        out = self.succeed("account", "show", "45675002")
        self.assertRegex(out, r"(?m)^number: +45675002$")
        self.assertRegex(out, r"(?m)^kind: +premium$")
        self.assertRegex(out, r"(?m)^name: +Studio 2$")
        self.assertRegex(out, r"(?m)^e-mail: +two@example.net$")
        self.assertRegex(out, rf"(?m)^realm: +{re.escape(REALM)}$")
        self.assertRegex(out, r"(?m)^portal password: +not set$")
        self.assertRegex(out, r"(?m)^registrations: +0$")
        self.assertNotIn(computeHA1("MD5", "45675002", REALM, "x"), out)

    def test_show_warns_of_another_realm(self) -> None:
        self.openStore().setPassword("45675002", "x", "old-realm")
        out = self.succeed("account", "show", "45675002")
        self.assertIn("old-realm (not sip.realm", out)

    def test_show_unknown_account_is_refused(self) -> None:
        self.assertRefused(1, ["account", "show", "45675009"], "no account 45675009")

    def test_show_bad_number_is_refused(self) -> None:
        self.assertRefused(2, ["account", "show", "studio"], "invalid number")


class AccountChangeTests(AdminTestCase):
    """
    C{account passwd}, C{account update} and C{account del}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.succeed("account", "add", "45675001", "-p", "Old-Secret-1", "-n", "Studio 1")

    def test_passwd_sets_the_given_password(self) -> None:
        out = self.succeed("account", "passwd", "45675001", "--password", "New-Secret-2")
        self.assertEqual(out, "Changed the SIP password of 45675001.\n")
        credentials = self.openStore().credentials("45675001")
        assert credentials is not None
        self.assertEqual(credentials.ha1["SHA-256"], computeHA1("SHA-256", "45675001", REALM, "New-Secret-2"))
        self.assertNotStoredInPlain("Old-Secret-1", "New-Secret-2")

    def test_passwd_without_password_prints_a_generated_one_once(self) -> None:
        password = self.generatedPassword(self.succeed("account", "passwd", "45675001"))
        credentials = self.openStore().credentials("45675001")
        assert credentials is not None
        self.assertEqual(credentials.ha1["MD5"], computeHA1("MD5", "45675001", REALM, password))
        self.assertNotStoredInPlain(password)

    def test_passwd_unknown_account_is_refused(self) -> None:
        self.assertRefused(1, ["account", "passwd", "45675009", "-p", "x"], "no account 45675009")

    def test_portal_passwd_sets_generates_and_removes(self) -> None:
        out = self.succeed("account", "portal-passwd", "45675001", "--password", "Portal-Secret-1")
        self.assertEqual(out, "Changed the portal password of 45675001.\n")
        self.assertTrue(self.openStore().checkPortalPassword("45675001", "Portal-Secret-1"))
        self.assertNotStoredInPlain("Portal-Secret-1")
        out = self.succeed("account", "portal-passwd", "45675001")
        (password,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Portal password: ")]
        self.assertTrue(self.openStore().checkPortalPassword("45675001", password))
        self.assertFalse(self.openStore().checkPortalPassword("45675001", "Portal-Secret-1"))
        self.assertEqual(
            self.succeed("account", "portal-passwd", "45675001", "--remove"),
            "Removed the portal password of 45675001.\n",
        )
        self.assertFalse(self.openStore().checkPortalPassword("45675001", password))
        self.assertRefused(2, ["account", "portal-passwd", "45675001", "--remove", "-p", "x"], "not both")
        self.assertRefused(1, ["account", "portal-passwd", "45675009", "-p", "x"], "no account 45675009")

    def test_update_changes_the_given_fields(self) -> None:
        self.assertEqual(
            self.succeed("account", "update", "45675001", "--email", "a@example.net", "--kind", "test"),
            "Updated account 45675001.\n",
        )
        account = self.openStore().getAccount("45675001")
        assert account is not None
        self.assertEqual((account.kind, account.displayName, account.email), ("test", "Studio 1", "a@example.net"))

    def test_update_needs_something_to_change(self) -> None:
        self.assertRefused(2, ["account", "update", "45675001"], "nothing to change")

    def test_update_unknown_account_is_refused(self) -> None:
        self.assertRefused(1, ["account", "update", "45675009", "--name", "x"], "no account 45675009")

    def test_del_removes_the_account_and_its_registrations(self) -> None:
        store = self.openStore()
        store.saveBindings([binding("45675001", "sip:a@10.0.0.1", NOW + 60)])
        self.assertEqual(
            self.succeed("account", "del", "45675001"), "Deleted account 45675001 and its 1 stored registration(s).\n"
        )
        self.assertIsNone(store.getAccount("45675001"))
        self.assertEqual(store.allBindings(), [])

    def test_del_unknown_account_is_refused(self) -> None:
        self.assertRefused(1, ["account", "del", "45675009"], "no account 45675009")


def binding(aor: str, contact: str, expiresAt: float, **changes: object) -> Binding:
    values: dict[str, object] = {
        "aor": aor,
        "contact": contact,
        "expiresAt": expiresAt,
        "callID": "call-1",
        "cseq": 1,
        "transport": "udp",
        "source": ("203.0.113.5", 40123),
        "local": ("198.51.100.1", 5060),
        "userAgent": "AETA Scoopy+ 5.04",
    }
    values.update(changes)
    return Binding(**values)  # type: ignore[arg-type]


class LocationShowTests(AdminTestCase):
    """
    C{location show} when the service is not running: the registrations
    it last saved in the store, and a notice that says so. (With the
    service running: tests.test_admin_control.)
    """

    def setUp(self) -> None:
        super().setUp()
        self.socket = socketPath(os.path.dirname(self.path), "none.sock")
        self.openStore().saveBindings(
            [
                binding("45675001", "sip:45675001@192.168.1.10:5060", NOW + 120),
                binding(
                    "45675002",
                    "sip:45675002@[fd00::2]:5060;transport=tcp",
                    NOW + 3600,
                    transport="tcp",
                    source=("2001:db8::2", 50000),
                    userAgent="Linphone/5.2",
                ),
                binding("45675003", "sip:45675003@10.0.0.3", NOW - 1),
            ]
        )

    def show(self, *args: str) -> str:
        """Run C{location show ARGS}: it succeeds, says on standard error that the store is read, and prints this."""
        status, out, err = self.call("--socket", self.socket, "location", "show", *args)
        self.assertEqual(
            (status, err),
            (
                0,
                "aetasip-admin: the service is not running or web.control_socket is off: cannot connect to "
                f"{self.socket}: No such file or directory; showing the registrations the service last saved in "
                f"the store {self.url}\n",
            ),
        )
        return out

    def test_all_current_registrations(self) -> None:
        lines = self.show().splitlines()
        self.assertEqual(lines[0].split(), ["NUMBER", "CONTACT", "SOURCE", "USER", "AGENT", "EXPIRES"])
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            lines[1].split(),
            [
                "45675001",
                "sip:45675001@192.168.1.10:5060",
                "203.0.113.5:40123/udp",
                "AETA",
                "Scoopy+",
                "5.04",
                "in",
                "120",
                "s",
            ],
        )
        self.assertEqual(
            lines[2].split(),
            [
                "45675002",
                "sip:45675002@[fd00::2]:5060;transport=tcp",
                "[2001:db8::2]:50000/tcp",
                "Linphone/5.2",
                "in",
                "3600",
                "s",
            ],
        )

    def test_registrations_of_one_number(self) -> None:
        lines = self.show("45675002").splitlines()
        self.assertEqual([line.split()[0] for line in lines[1:]], ["45675002"])

    def test_number_without_registrations(self) -> None:
        self.assertEqual(self.show("45675003"), "No registrations for 45675003.\n")

    def test_no_control_socket_configured(self) -> None:
        with open(self.config, "a") as f:
            f.write("web = {'control_socket': None}\n")
        status, out, err = self.call("location", "show", "45675003")
        self.assertEqual((status, out), (0, "No registrations for 45675003.\n"))
        self.assertEqual(
            err,
            "aetasip-admin: the service is not running or web.control_socket is off: web.control_socket is None in "
            f"the configuration; give --socket PATH; showing the registrations the service last saved in the store "
            f"{self.url}\n",
        )

    def test_bad_number_is_refused(self) -> None:
        self.assertRefused(2, ["location", "show", "studio"], "invalid number")
        self.assertRefused(2, ["location", "show", "1", "2"], "unexpected argument")


class CommandLineTests(AdminTestCase):
    """
    Usage, help and configuration errors.
    """

    def test_missing_command_is_refused(self) -> None:
        self.assertRefused(2, [], "missing command: account, location")
        self.assertRefused(2, ["account"], "missing command: add, list, show, update, passwd, portal-passwd, del")
        self.assertRefused(2, ["location"], "missing command: show")

    def test_unknown_command_is_refused(self) -> None:
        self.assertRefused(2, ["acount", "list"], "Unknown command: acount")
        self.assertRefused(2, ["account", "remove", "1"], "Unknown command: remove")

    def test_help_goes_to_standard_output(self) -> None:
        for args in [["--help"], ["account", "--help"], ["account", "add", "-h"], ["location", "show", "--help"]]:
            out = self.succeed(*args)
            self.assertTrue(out.startswith("Usage: aetasip-admin"), out)
        self.assertIn("account add NUMBER", self.succeed("account", "add", "--help"))

    def test_version(self) -> None:
        self.assertIn("0.1.0", self.succeed("--version"))

    def test_store_option_overrides_the_configuration(self) -> None:
        other = os.path.abspath(self.mktemp())
        out, err = StringIO(), StringIO()
        status = admin.main(
            ["--store", f"sqlite:///{other}", "account", "add", "15000", "-p", "x", "-k", "test"], out, err
        )
        self.assertEqual((status, err.getvalue()), (0, ""))
        self.assertIn("in realm aetasip.", out.getvalue())
        self.assertTrue(os.path.exists(other))
        self.assertFalse(os.path.exists(self.path))

    def test_bad_store_url_is_refused(self) -> None:
        self.assertRefused(2, ["--store", "mysql://db/aetasip", "account", "list"], "store.url")

    def test_bad_configuration_file_is_refused(self) -> None:
        with open(self.config, "w") as f:
            f.write("sip = {'realm': 42}\n")
        self.assertRefused(2, ["account", "list"], "sip.realm")
        os.remove(self.config)
        self.assertRefused(2, ["account", "list"], "--config")

    def test_unusable_store_is_reported_in_one_line(self) -> None:
        missing = os.path.join(os.path.abspath(self.mktemp()), "no", "store.db")
        self.assertRefused(1, ["--store", f"sqlite:///{missing}", "account", "list"], "unavailable")
