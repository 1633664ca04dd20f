"""
The C{file} authentication backend: accounts in a text file.

The file is UTF-8 text, one account per line::

    # number  kind     secret
    45675001  premium  plain:correct horse
    45675002  premium  md5:5f2c…(32 hex digits),sha-256:9a0b…(64 hex digits)
    15000     test     sha-256:9a0b…(64 hex digits)

  - Blank lines and lines whose first non-blank character is C{#} are
    ignored. There are no end-of-line comments: C{#} may be part of a password.
  - A line is three fields: the I{number} (1 to 32 digits), the I{kind}
    (one of C{factory}, C{premium}, C{escoopfone}, C{test}, C{hunting}),
    separated by blanks, then the I{secret}, which is the rest of the line
    without its leading and trailing blanks.
  - The secret is either C{plain:PASSWORD}, the SIP password itself (it may
    contain blanks inside, not at its ends), hashed into HA1 values for the
    configured realm when the file is read; or a comma-separated list of
    C{ALGORITHM:HA1}, where I{ALGORITHM} is C{md5} or C{sha-256} (any case)
    and I{HA1} the hex digest of C{NUMBER:REALM:PASSWORD} with that
    algorithm, computed for the configured realm (C{sip.realm}), e.g. with
    C{printf '%s' 45675001:aetasip:secret | sha256sum}. An agent can then
    only use the algorithms whose HA1 the line gives.
  - A number appears once; a later line with the same number is an error.

A line that does not follow these rules is logged as a warning, naming the
file and the line number (never the line, which may hold a password), and
skipped; the other accounts keep working.

The file is read again when its modification time, size or inode changes,
checked at most once per second on lookup; when it cannot be read then, the
accounts read before are kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from aetasip.auth import ACCOUNT_KINDS, Credentials, credentialsFromPassword
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend

log = Logger()

_NUMBER = re.compile(r"[0-9]{1,32}")
_HA1_LENGTHS = {"MD5": 32, "SHA-256": 64}
_HEX = re.compile(r"[0-9a-fA-F]+")


class BadLine(ValueError):
    """
    A line of an accounts file does not follow the format; C{str()} says why.
    """


def parseLine(line: str, realm: str) -> Credentials | None:
    """
    Parse one line of an accounts file.

    @return: the credentials it gives, or C{None} for a blank or comment line.
    @raise BadLine: when the line does not follow the format.
    """
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = stripped.split(None, 2)
    if len(fields) < 3:
        raise BadLine("expected three fields: number, kind, secret")
    number, kind, secret = fields
    if _NUMBER.fullmatch(number) is None:
        raise BadLine("the number must be 1 to 32 digits")
    if kind not in ACCOUNT_KINDS:
        raise BadLine(f"unknown kind {kind!r}, expected one of {', '.join(ACCOUNT_KINDS)}")
    if secret.startswith("plain:"):
        password = secret[len("plain:") :]
        if not password:
            raise BadLine("empty password after 'plain:'")
        return credentialsFromPassword(number, kind, realm, password)
    return Credentials(number, kind, realm, _parseHA1s(secret))


def _parseHA1s(secret: str) -> dict[str, str]:
    ha1: dict[str, str] = {}
    for item in secret.split(","):
        algorithm, colon, digest = item.strip().partition(":")
        algorithm = algorithm.upper()
        if not colon or algorithm not in _HA1_LENGTHS:
            raise BadLine("the secret must be plain:PASSWORD or a list of md5:HA1 and sha-256:HA1")
        if algorithm in ha1:
            raise BadLine(f"{algorithm} given twice")
        if len(digest) != _HA1_LENGTHS[algorithm] or _HEX.fullmatch(digest) is None:
            raise BadLine(f"the {algorithm} HA1 must be {_HA1_LENGTHS[algorithm]} hex digits")
        ha1[algorithm] = digest.lower()
    return ha1


def parseAccounts(lines: Iterable[bytes], realm: str) -> tuple[dict[str, Credentials], list[tuple[int, str]]]:
    """
    Parse the lines of an accounts file.

    @param lines: the raw lines, UTF-8.
    @return: the accounts by number, and the C{(line number, problem)} of
        each line skipped.
    """
    found: dict[str, Credentials] = {}
    firstLine: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    for lineNumber, raw in enumerate(lines, start=1):
        try:
            credentials = parseLine(raw.decode("utf-8"), realm)
        except UnicodeDecodeError:
            problems.append((lineNumber, "not UTF-8 text"))
            continue
        except BadLine as e:
            problems.append((lineNumber, str(e)))
            continue
        if credentials is None:
            continue
        if credentials.number in found:
            problems.append(
                (lineNumber, f"number {credentials.number} already given on line {firstLine[credentials.number]}")
            )
            continue
        found[credentials.number] = credentials
        firstLine[credentials.number] = lineNumber
    return found, problems


@implementer(IAuthBackend)
class FileAuthBackend:
    """
    Credentials from an accounts file (see the module documentation),
    read again when it changes.
    """

    name = "file"

    checkInterval = 1.0
    """Seconds between two looks at the file's modification time."""

    def __init__(self, path: str, realm: str, clock: IReactorTime | None = None) -> None:
        """
        Read the file C{path}; when it cannot be read, start with no
        accounts and try again on later lookups.

        @param realm: the digest realm plain passwords are hashed for.
        @param clock: the time source of the change checks; the reactor by default.
        """
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.path = path
        self.realm = realm
        self._clock = clock
        self._accounts: dict[str, Credentials] = {}
        self._signature: tuple[int, int, int] | None = None
        self._nextCheck = 0.0
        self._problem: str | None = None
        self._check()

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        """
        See L{IAuthBackend.credentials}; the answer is always immediate.
        """
        if self._clock.seconds() >= self._nextCheck:
            self._check()
        return defer.succeed(self._accounts.get(number))

    def _check(self) -> None:
        self._nextCheck = self._clock.seconds() + self.checkInterval
        try:
            status = os.stat(self.path)
        except OSError as e:
            self._unreadable(e)
            return
        signature = (status.st_mtime_ns, status.st_size, status.st_ino)
        if signature == self._signature:
            return
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as e:
            self._unreadable(e)
            return
        self._signature = signature
        self._problem = None
        self._accounts, problems = parseAccounts(lines, self.realm)
        for lineNumber, problem in problems:
            log.warn(
                "Accounts file {path}, line {lineNumber}: {problem}; line skipped",
                path=self.path,
                lineNumber=lineNumber,
                problem=problem,
            )
        log.info("Read {count} accounts from {path}", count=len(self._accounts), path=self.path)

    def _unreadable(self, error: OSError) -> None:
        # Read it again as soon as it is back, whatever its signature.
        self._signature = None
        if error.strerror != self._problem:
            self._problem = error.strerror
            log.error(
                "Cannot read accounts file {path}: {error}; keeping the {count} accounts read before",
                path=self.path,
                error=error.strerror,
                count=len(self._accounts),
            )


def makeFileBackend(options: dict[str, Any], store: object = None) -> FileAuthBackend:
    """
    The C{file} backend for L{aetasip.auth.chain.makeAuthBackend}.

    @param options: the backend options: C{file} (C{auth.file}), the
        accounts file, and C{realm} (C{sip.realm}).
    @raise ConfigError: when C{auth.file} is not the path of a readable file.
    """
    path = options.get("file")
    if not isinstance(path, str) or not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ConfigError("auth.file", path, "the path of a readable accounts file (the 'file' backend is enabled)")
    return FileAuthBackend(path, options["realm"])
