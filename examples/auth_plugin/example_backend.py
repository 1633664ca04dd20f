"""
An example authentication backend for aetasip: the accounts listed in the
configuration file.

With this file and C{twisted/plugins/example_auth.py} in a directory on
C{sys.path} (or installed with the package that ships them), the backend
is named C{example} in the configuration::

    auth = {
        "backends": ["example", "sql"],
        "options": {
            "example": {
                "accounts": {
                    "45675001": {"kind": "premium", "password": "s3cret"},
                    "45675002": {"password": "an0ther"},
                },
            },
        },
    }
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from aetasip.auth import ACCOUNT_KINDS, Credentials, credentialsFromPassword
from aetasip.config import ConfigError
from aetasip.interfaces import IAuthBackend


@implementer(IAuthBackend)
class ExampleAuthBackend:
    """
    Credentials of a fixed set of accounts.

    @ivar accounts: account number to its credentials.
    """

    name = "example"

    def __init__(self, accounts: dict[str, Credentials]) -> None:
        self.accounts = accounts

    def credentials(self, number: str) -> defer.Deferred[Credentials | None]:
        """
        See L{IAuthBackend.credentials}: the account, or C{None} when this
        backend does not know the number (the next backend is asked).

        The answer is at hand, so the L{Deferred} has already fired. A
        backend that asks a server returns one that fires later (with
        C{treq}, or C{twisted.internet.threads.deferToThread} around a
        blocking client), never blocks the reactor, and fails with
        L{aetasip.auth.BackendUnavailable} when the server cannot answer:
        the agent then gets 503, never a wrong 403.
        """
        return defer.succeed(self.accounts.get(number))


def makeExampleBackend(options: dict[str, Any]) -> ExampleAuthBackend:
    """
    The backend from its options.

    @param options: the C{auth} section of the configuration plus
        C{realm}; this backend's own settings are in
        C{options["options"]["example"]}.
    @raise ConfigError: for an account without digits, kind or password.
    """
    settings = options.get("options", {}).get("example", {})
    accounts: dict[str, Credentials] = {}
    for number, account in settings.get("accounts", {}).items():
        kind = account.get("kind", "premium")
        password = account.get("password")
        if not number.isdigit() or kind not in ACCOUNT_KINDS or not password:
            raise ConfigError(
                "auth.options",
                f"example account {number}",
                f"a number of digits, a kind among {', '.join(ACCOUNT_KINDS)}, and a password",
            )
        # Only the digest HA1 values are kept, never the password itself.
        accounts[number] = credentialsFromPassword(number, kind, options["realm"], password)
    return ExampleAuthBackend(accounts)
