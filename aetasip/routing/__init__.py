"""
Call routing: who may call whom, and which number(s) a dialled number
reaches. Sans-IO: policies decide on a L{Call} with a L{Directory} of
accounts and groups, and never touch a socket or the store.

A call is routed by a chain of L{IRoutingPolicy} steps, in the order the
configuration gives (C{routing.policies}); each step may refine the call
(the callee, a hunting series) or refuse it with a L{Refusal}.
"""

from __future__ import annotations

from typing import Protocol

import attrs


@attrs.frozen
class Group:
    """
    A subscriber's group of premium numbers (SPEC "Groups").

    @ivar prefix: the 4-digit prefix; members are prefix + 5001, 5002, …
    @ivar contact: the technical contact e-mail.
    """

    prefix: str
    contact: str = ""
    incomingBlock: bool = False
    outgoingBlock: bool = False
    hunting: bool = False
    quarterlyLog: bool = False
    selfCare: bool = True
    relay: str | None = None


@attrs.frozen
class Account:
    """
    What routing knows of an account.

    @ivar group: the prefix of its group, or C{None}.
    @ivar relay: its own relay mode, or C{None} (its group's).
    @ivar testLine: the number is one of the service's own test lines (the
        programme and the echo line): open to groups with outgoing-call
        blocking, as the test number is.
    """

    number: str
    kind: str
    group: str | None = None
    relay: str | None = None
    testLine: bool = False


class Directory(Protocol):
    """
    The accounts and groups routing decides on (synchronous: an in-memory
    view of the store, kept current by its owner).
    """

    def account(self, number: str) -> Account | None:
        """The account C{number}, or C{None}."""

    def group(self, prefix: str) -> Group | None:
        """The group C{prefix}, or C{None}."""

    def huntingSeries(self, prefix: str) -> list[str]:
        """The hunting accounts of group C{prefix} (prefix+6001, 6002, …), in order."""


@attrs.frozen
class Refusal:
    """The call is refused: C{code} and a reason phrase a codec can show."""

    code: int
    reason: str


@attrs.define
class Call:
    """
    A call being routed.

    @ivar caller: the authenticated caller.
    @ivar dialled: the user part of the Request-URI, as dialled.
    @ivar callee: the number the call reaches, once resolved (starts as
        C{dialled}).
    @ivar series: for a hunting call, the numbers to ring one after the
        other; C{None} otherwise.
    """

    caller: Account
    dialled: str
    callee: str
    series: list[str] | None = None


class OverlayDirectory:
    """
    A L{Directory} that knows some accounts better than the one below it:
    the caller and the dialled number as the authentication backends know
    them (file or LDAP accounts are not in the store's directory).
    """

    def __init__(self, below: Directory, accounts: dict[str, Account]) -> None:
        self.below = below
        self.accounts = accounts

    def account(self, number: str) -> Account | None:
        known = self.below.account(number)
        return known if known is not None else self.accounts.get(number)

    def group(self, prefix: str) -> Group | None:
        return self.below.group(prefix)

    def huntingSeries(self, prefix: str) -> list[str]:
        return self.below.huntingSeries(prefix)


class EmptyDirectory:
    """A L{Directory} that knows nothing (no store)."""

    def account(self, number: str) -> Account | None:
        return None

    def group(self, prefix: str) -> Group | None:
        return None

    def huntingSeries(self, prefix: str) -> list[str]:
        return []
