"""
Authentication data shared by every backend.
"""

from __future__ import annotations

import hashlib

import attrs

ACCOUNT_KINDS = ("factory", "premium", "escoopfone", "test", "hunting")

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class BackendUnavailable(Exception):
    """
    A backend cannot answer now (directory or database down). The request
    is answered 503 with Retry-After; it is never accepted.
    """


@attrs.frozen
class Credentials:
    """
    What the registrar and proxy need to check a digest response.

    @ivar number: the account number (digits).
    @ivar kind: one of L{ACCOUNT_KINDS}.
    @ivar realm: the realm the HA1 values were computed in.
    @ivar ha1: digest algorithm name (C{"MD5"}, C{"SHA-256"}) to the hex HA1,
        C{H(number ":" realm ":" password)}.
    """

    number: str
    kind: str
    realm: str
    ha1: dict[str, str]


def computeHA1(algorithm: str, username: str, realm: str, password: str) -> str:
    """
    The digest HA1 of C{username}, C{realm} and C{password} (RFC 7616 3.4.2).
    """
    return ALGORITHMS[algorithm](f"{username}:{realm}:{password}".encode()).hexdigest()


def credentialsFromPassword(number: str, kind: str, realm: str, password: str) -> Credentials:
    """
    Credentials with the HA1 of every supported algorithm for C{password}.
    """
    return Credentials(number, kind, realm, {a: computeHA1(a, number, realm, password) for a in ALGORITHMS})
