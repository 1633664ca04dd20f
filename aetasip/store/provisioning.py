"""
Provisioning: the changes an operator makes to accounts and groups, in one
place for C{aetasip-admin} and the admin API.

L{Provisioning} checks what it is given with the rules of
L{aetasip.store.models}, makes the passwords (a generated SIP password is
returned once, never stored), and calls the L{Store}. It is synchronous: the
CLI calls it directly, a web handler in the store's threads, e.g.
C{asyncStore.run(Provisioning(asyncStore.store, realm).allocate, "4567", 2)}.
Reads (lists, one account, registrations) go to the store itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from aetasip.store.models import (
    FIRST_HUNTING,
    PREFIX_LENGTH,
    Account,
    Group,
    InvalidAccount,
    NoSuchAccount,
    checkAccountEmail,
    checkAccountNumber,
    checkCount,
    checkEmail,
    checkFlag,
    checkGroupOptions,
    checkKind,
    checkMemberKind,
    checkNumber,
    checkPassword,
    checkPrefix,
    checkRelay,
    checkText,
    generatePassword,
)
from aetasip.store.sql import Store


@attrs.frozen
class NewPassword:
    """
    The SIP password an account was just given: the only time it is known,
    to show once (only its digests are stored).

    @ivar number: the account number.
    @ivar password: the SIP password.
    """

    number: str
    password: str


@attrs.frozen
class NewAccount:
    """
    An account just created, with its SIP password.

    @ivar account: the new account.
    @ivar password: its SIP password, generated or given: show it once.
    """

    account: Account
    password: str


@attrs.frozen
class Allocation:
    """
    The accounts one allocation created in a group.

    @ivar members: the new members, by number.
    @ivar huntingSeries: the hunting accounts made to keep the series as
        long as the group, by number; empty when the group has hunting off.
    """

    members: list[NewPassword]
    huntingSeries: list[NewPassword]

    @property
    def created(self) -> list[NewPassword]:
        """
        Every new account: the members, then the hunting series.
        """
        return [*self.members, *self.huntingSeries]


def _newPasswords(created: Sequence[tuple[str, str]]) -> list[NewPassword]:
    return [NewPassword(number, password) for number, password in created]


class Provisioning:
    """
    The provisioning operations on a L{Store}: create, change and delete
    accounts and groups, allocate a group's numbers, attach and detach.

    Each operation checks its input and raises an
    L{aetasip.store.InvalidValue} for a bad one, or another
    L{aetasip.store.StoreError} when the store refuses it (no such
    account, number taken, group full).

    @ivar store: the store it changes.
    @ivar realm: the digest realm of the SIP passwords it sets
        (C{sip.realm}).
    """

    def __init__(self, store: Store, realm: str) -> None:
        self.store = store
        self.realm = realm

    # -- accounts

    def addAccount(
        self,
        number: str,
        kind: str = "premium",
        password: str | None = None,
        displayName: str = "",
        email: str = "",
        portalPassword: str | None = None,
        group: str | None = None,
    ) -> NewAccount:
        """
        Create an account.

        @param password: its SIP password; C{None} generates one.
        @param portalPassword: its self-care portal password, or C{None}.
        @param group: the prefix of the group it joins, or C{None}.
        @return: the account and its SIP password.
        """
        checkAccountNumber(number, kind)
        checkText("name", displayName)
        checkAccountEmail(email)
        if portalPassword is not None:
            checkPassword(portalPassword, "portal password")
        if group is not None:
            checkPrefix(group)
        password = generatePassword() if password is None else checkPassword(password)
        account = self.store.addAccount(
            number, kind, password, self.realm, displayName, email, portalPassword=portalPassword, group=group
        )
        return NewAccount(account, password)

    def setPassword(self, number: str, password: str | None = None) -> NewPassword:
        """
        Give the account C{number} a new SIP password.

        @param password: the password; C{None} generates one.
        @return: the password set.
        """
        checkNumber(number)
        password = generatePassword() if password is None else checkPassword(password)
        self.store.setPassword(number, password, self.realm)
        return NewPassword(number, password)

    def setPortalPassword(self, number: str, password: str | None) -> None:
        """
        Set the self-care portal password of C{number}; C{None} removes it.
        """
        checkNumber(number)
        if password is not None:
            checkPassword(password, "portal password")
        self.store.setPortalPassword(number, password)

    def newPortalPassword(self, number: str, password: str | None = None) -> NewPassword:
        """
        Give the account C{number} a self-care portal password.

        @param password: the password; C{None} generates one.
        @return: the password set, to show once (only its scrypt hash is stored).
        """
        checkNumber(number)
        password = generatePassword() if password is None else checkPassword(password, "portal password")
        self.store.setPortalPassword(number, password)
        return NewPassword(number, password)

    def updateAccount(
        self,
        number: str,
        displayName: str | None = None,
        email: str | None = None,
        kind: str | None = None,
        relay: str | None = None,
    ) -> None:
        """
        Change the given fields of C{number}; C{None} leaves a field as it
        is. C{relay}: a relay mode, or C{"inherit"} (its group's).

        @raise InvalidAccount: when there is nothing to change, or for a bad value.
        """
        checkNumber(number)
        if displayName is None and email is None and kind is None and relay is None:
            raise InvalidAccount("nothing to change: give a name, an e-mail address, a kind or a relay mode")
        if relay is not None:
            checkRelay(relay)
        if displayName is not None:
            checkText("name", displayName)
        if email is not None:
            checkAccountEmail(email)
        if kind is not None:
            checkKind(kind)
        self.store.updateAccount(number, displayName=displayName, email=email, kind=kind, relay=relay)

    def deleteAccount(self, number: str) -> int:
        """
        Delete the account C{number} and its registrations.

        @return: how many registrations were deleted with it.
        """
        return self.store.deleteAccount(checkNumber(number))

    # -- groups

    def addGroup(
        self,
        prefix: str,
        contact: str,
        incomingBlock: bool = False,
        outgoingBlock: bool = False,
        hunting: bool = False,
        quarterlyLog: bool = False,
        selfCare: bool = True,
    ) -> Group:
        """
        Create the group C{prefix}, with no member yet.

        @param contact: the technical contact's e-mail address.
        @return: the new group.
        """
        checkPrefix(prefix)
        checkEmail(contact)
        flags = {
            "incomingBlock": incomingBlock,
            "outgoingBlock": outgoingBlock,
            "hunting": hunting,
            "quarterlyLog": quarterlyLog,
            "selfCare": selfCare,
        }
        for name, value in flags.items():
            checkFlag(name, value)
        return self.store.addGroup(prefix, contact, **flags)

    def updateGroup(self, prefix: str, **options: object) -> list[NewPassword]:
        """
        Change the given options of the group C{prefix}: C{contact},
        C{incomingBlock}, C{outgoingBlock}, C{hunting}, C{quarterlyLog},
        C{selfCare}, C{relay} (a relay mode, or C{"inherit"}: the
        configuration's). Switching hunting on creates the hunting series.

        @return: the new hunting accounts and their passwords, to show once.
        """
        checkPrefix(prefix)
        checked = checkGroupOptions(options)
        return _newPasswords(self.store.updateGroup(prefix, self.realm, **checked))

    def deleteGroup(self, prefix: str) -> None:
        """
        Delete the group C{prefix}, which must have no account left.
        """
        self.store.deleteGroup(checkPrefix(prefix))

    def allocate(self, prefix: str, count: int, kind: str = "premium") -> Allocation:
        """
        Create the next C{count} members of the group C{prefix}, each with a
        generated SIP password; when the group has hunting on, its hunting
        series grows with it.

        @param kind: C{premium} or C{escoopfone}.
        @return: the new accounts and their passwords, to show once.
        """
        checkPrefix(prefix)
        checkCount(count)
        checkMemberKind(kind)
        created = _newPasswords(self.store.allocate(prefix, count, kind, self.realm))
        # The hunting series is numbered from prefix + 6001, after every member.
        members = [new for new in created if int(new.number[PREFIX_LENGTH:]) < FIRST_HUNTING]
        return Allocation(members, created[len(members) :])

    def attach(self, number: str, prefix: str) -> None:
        """
        Make the account C{number} a member of the group C{prefix}.
        """
        self.store.setAccountGroup(checkNumber(number), checkPrefix(prefix))

    def detach(self, number: str) -> str | None:
        """
        Take the account C{number} out of its group.

        @return: the prefix of the group it left, or C{None} when it
            belonged to none.
        """
        account = self.store.getAccount(checkNumber(number))
        if account is None:
            raise NoSuchAccount(f"no account {number}")
        if account.group is not None:
            self.store.setAccountGroup(number, None)
        return account.group
