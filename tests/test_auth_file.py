"""
Tests for L{aetasip.auth.file}: the accounts file backend.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from aetasip.auth import Credentials, computeHA1
from aetasip.auth import file as fileModule
from aetasip.auth.file import BadLine, FileAuthBackend, makeFileBackend, parseAccounts, parseLine
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend

REALM = "aetasip"
MD5 = computeHA1("MD5", "45675002", REALM, "secret")
SHA256 = computeHA1("SHA-256", "45675002", REALM, "secret")


class ParseLineTests(SynchronousTestCase):
    """
    One line: C{number kind secret}.
    """

    def test_plain_password_is_hashed_for_the_realm(self) -> None:
        credentials = parseLine("45675001 premium plain:secret\n", REALM)
        self.assertEqual(
            credentials,
            Credentials(
                "45675001",
                "premium",
                REALM,
                {
                    "MD5": computeHA1("MD5", "45675001", REALM, "secret"),
                    "SHA-256": computeHA1("SHA-256", "45675001", REALM, "secret"),
                },
            ),
        )

    def test_plain_password_may_hold_blanks_and_hashes(self) -> None:
        credentials = parseLine("  15000\ttest   plain:correct horse #1  \n", REALM)
        assert credentials is not None
        self.assertEqual(credentials.ha1["MD5"], computeHA1("MD5", "15000", REALM, "correct horse #1"))

    def test_ha1_values_are_taken_as_given(self) -> None:
        credentials = parseLine(f"45675002 premium md5:{MD5},sha-256:{SHA256}", REALM)
        self.assertEqual(credentials, Credentials("45675002", "premium", REALM, {"MD5": MD5, "SHA-256": SHA256}))

    def test_one_algorithm_is_enough_and_case_does_not_matter(self) -> None:
        credentials = parseLine(f"45675002 hunting SHA-256:{SHA256.upper()}", REALM)
        self.assertEqual(credentials, Credentials("45675002", "hunting", REALM, {"SHA-256": SHA256}))

    def test_blank_and_comment_lines_give_nothing(self) -> None:
        for line in ["", "   \n", "# 45675001 premium plain:secret", "   # indented comment"]:
            self.assertIsNone(parseLine(line, REALM), line)

    def test_bad_lines_are_refused_with_a_reason(self) -> None:
        cases = {
            "45675001 premium": "three fields",
            "4567500x premium plain:secret": "1 to 32 digits",
            "45675001 gold plain:secret": "unknown kind 'gold'",
            "45675001 premium plain:": "empty password",
            "45675001 premium secret": "plain:PASSWORD",
            "45675001 premium sha1:abcdef": "plain:PASSWORD",
            f"45675001 premium md5:{MD5[:-1]}": "32 hex digits",
            f"45675001 premium sha-256:{'g' * 64}": "64 hex digits",
            f"45675001 premium md5:{MD5},MD5:{MD5}": "given twice",
        }
        for line, reason in cases.items():
            error = self.assertRaises(BadLine, parseLine, line, REALM)
            self.assertIn(reason, str(error), line)


class ParseAccountsTests(SynchronousTestCase):
    """
    A whole file: good lines kept, bad ones reported by line number.
    """

    def test_bad_lines_are_skipped_and_numbered(self) -> None:
        accounts, problems = parseAccounts(
            [
                b"# accounts",
                b"45675001 premium plain:one",
                b"45675003 gold plain:two",
                b"",
                b"45675001 test plain:three",
                b"45675004 premium plain:\xff\xfe",
                b"15000 test plain:four",
            ],
            REALM,
        )
        self.assertEqual(sorted(accounts), ["15000", "45675001"])
        self.assertEqual(accounts["45675001"].kind, "premium")
        self.assertEqual(
            [(line, problem.split(" ")[0]) for line, problem in problems], [(3, "unknown"), (5, "number"), (6, "not")]
        )
        self.assertIn("already given on line 2", problems[1][1])


class FileAuthBackendTests(SynchronousTestCase):
    """
    L{FileAuthBackend} answers from the file and follows its changes.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(1000)
        self.events: list[dict[str, Any]] = []
        self.patch(fileModule.log, "observer", self.events.append)
        self.mtime = 1_700_000_000

    def write(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)
        # Each version gets a new modification time, however fast the test runs.
        self.mtime += 10
        os.utime(self.path, (self.mtime, self.mtime))

    def lookup(self, backend: FileAuthBackend, number: str) -> Credentials | None:
        result: Credentials | None = self.successResultOf(backend.credentials(number))
        return result

    def messages(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def test_provides_auth_backend(self) -> None:
        self.write("")
        self.assertTrue(verifyObject(IAuthBackend, FileAuthBackend(self.path, REALM, self.clock)))

    def test_known_and_unknown_numbers(self) -> None:
        self.write("45675001 premium plain:secret\n")
        backend = FileAuthBackend(self.path, REALM, self.clock)
        credentials = self.lookup(backend, "45675001")
        assert credentials is not None
        self.assertEqual(credentials.ha1["SHA-256"], computeHA1("SHA-256", "45675001", REALM, "secret"))
        self.assertIsNone(self.lookup(backend, "45675002"))

    def test_changed_file_is_read_again_after_a_second(self) -> None:
        self.write("45675001 premium plain:secret\n")
        backend = FileAuthBackend(self.path, REALM, self.clock)
        self.write("45675001 premium plain:secret\n45675002 test plain:other\n")
        self.clock.advance(0.5)
        self.assertIsNone(self.lookup(backend, "45675002"))
        self.clock.advance(0.5)
        credentials = self.lookup(backend, "45675002")
        assert credentials is not None
        self.assertEqual(credentials.kind, "test")

    def test_same_size_change_is_seen(self) -> None:
        self.write("45675001 premium plain:secret1\n")
        backend = FileAuthBackend(self.path, REALM, self.clock)
        self.write("45675001 premium plain:secret2\n")
        self.clock.advance(1)
        credentials = self.lookup(backend, "45675001")
        assert credentials is not None
        self.assertEqual(credentials.ha1["MD5"], computeHA1("MD5", "45675001", REALM, "secret2"))

    def test_unchanged_file_is_not_read_again(self) -> None:
        self.write("45675001 premium plain:secret\n")
        backend = FileAuthBackend(self.path, REALM, self.clock)
        reads: list[object] = []
        self.patch(fileModule, "parseAccounts", lambda *a: reads.append(a) or ({}, []))
        for _ in range(5):
            self.clock.advance(1)
            self.assertIsNotNone(self.lookup(backend, "45675001"))
        self.assertEqual(reads, [])

    def test_replaced_file_is_read_again(self) -> None:
        """
        A file replaced by renaming (as editors and deployment tools do) is seen.
        """
        self.write("45675001 premium plain:secret\n")
        backend = FileAuthBackend(self.path, REALM, self.clock)
        other = self.path + ".new"
        with open(other, "w") as f:
            f.write("45675009 premium plain:secret\n")
        os.utime(other, (self.mtime, self.mtime))
        os.replace(other, self.path)
        self.clock.advance(1)
        self.assertIsNotNone(self.lookup(backend, "45675009"))

    def test_bad_lines_are_logged_with_file_and_line_number(self) -> None:
        self.write("# accounts\n45675001 premium plain:secret\n45675002 gold plain:Hidden-Password\n15000 test\n")
        backend = FileAuthBackend(self.path, REALM, self.clock)
        self.assertIsNotNone(self.lookup(backend, "45675001"))
        self.assertIsNone(self.lookup(backend, "45675002"))
        warnings = [m for m in self.messages() if "skipped" in m]
        self.assertEqual(len(warnings), 2)
        self.assertIn(f"{self.path}, line 3: unknown kind 'gold'", warnings[0])
        self.assertIn(f"{self.path}, line 4: expected three fields", warnings[1])
        self.assertNotIn("Hidden-Password", " ".join(self.messages()))

    def test_missing_file_keeps_accounts_read_before(self) -> None:
        self.write("45675001 premium plain:secret\n")
        backend = FileAuthBackend(self.path, REALM, self.clock)
        os.remove(self.path)
        for _ in range(3):
            self.clock.advance(1)
            self.assertIsNotNone(self.lookup(backend, "45675001"))
        errors = [m for m in self.messages() if "Cannot read" in m]
        self.assertEqual(len(errors), 1)
        self.assertIn(self.path, errors[0])
        self.write("45675002 premium plain:secret\n")
        self.clock.advance(1)
        self.assertIsNone(self.lookup(backend, "45675001"))
        self.assertIsNotNone(self.lookup(backend, "45675002"))

    def test_file_missing_at_start_is_read_when_it_appears(self) -> None:
        backend = FileAuthBackend(self.path, REALM, self.clock)
        self.assertIsNone(self.lookup(backend, "45675001"))
        self.write("45675001 premium plain:secret\n")
        self.clock.advance(1)
        self.assertIsNotNone(self.lookup(backend, "45675001"))


class MakeFileBackendTests(SynchronousTestCase):
    """
    L{makeFileBackend} builds the backend from the configuration.
    """

    def test_accounts_file_and_realm_from_options(self) -> None:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("45675001 premium plain:secret\n")
        backend = makeFileBackend({"file": path, "realm": "studio"}, None)
        self.assertEqual((backend.path, backend.realm), (path, "studio"))

    def test_missing_accounts_file_is_a_configuration_error(self) -> None:
        for path in [None, os.path.abspath(self.mktemp())]:
            error = self.assertRaises(ConfigError, makeFileBackend, {"file": path, "realm": REALM}, None)
            self.assertEqual(error.key, "auth.file")
