"""
C{aetasip-admin account}: add, list, show, update, change the passwords of, and
delete accounts.
"""

from __future__ import annotations

import csv

from twisted.python import usage

from aetasip.admin.base import (
    BaseOptions,
    Command,
    Context,
    NumberCommand,
    currentTime,
    formatDate,
    showPassword,
    usageCheck,
    writeTable,
)
from aetasip.auth import ACCOUNT_KINDS
from aetasip.store import (
    Account,
    NoSuchAccount,
    checkAccountEmail,
    checkAccountNumber,
    checkKind,
    checkPassword,
    checkRelay,
    checkText,
)


class AccountAdd(NumberCommand):
    synopsis = "NUMBER [options]"
    optParameters = [
        ["kind", "k", "premium", f"Kind of account: {', '.join(ACCOUNT_KINDS)}."],
        ["password", "p", None, "SIP password (visible in the process list); without it, one is generated."],
        ["name", "n", "", "Display name."],
        ["email", "e", "", "Contact e-mail address."],
    ]

    def postOptions(self) -> None:
        usageCheck(checkAccountNumber, self["number"], self["kind"])
        usageCheck(checkText, "name", self["name"])
        usageCheck(checkAccountEmail, self["email"])
        if self["password"] is not None:
            usageCheck(checkPassword, self["password"])

    def run(self, context: Context) -> int:
        added = context.provisioning.addAccount(
            self["number"], self["kind"], self["password"], displayName=self["name"], email=self["email"]
        )
        account = added.account
        context.out.write(f"Added account {account.number} ({account.kind}) in realm {account.realm}.\n")
        if self["password"] is None:
            showPassword(context.out, added.password)
        return 0


class AccountList(Command):
    synopsis = "[options]"
    optParameters = [["kind", "k", None, "List only the accounts of this kind."]]
    optFlags = [["csv", None, "Write CSV (with a header line) instead of a table."]]

    def postOptions(self) -> None:
        if self["kind"] is not None:
            usageCheck(checkKind, self["kind"])

    def run(self, context: Context) -> int:
        found = context.store.listAccounts(self["kind"])
        if self["csv"]:
            writer = csv.writer(context.out, lineterminator="\n")
            writer.writerow(["number", "kind", "name", "email", "realm", "created", "updated"])
            for a in found:
                writer.writerow(
                    [
                        a.number,
                        a.kind,
                        a.displayName,
                        a.email,
                        a.realm,
                        formatDate(a.createdAt),
                        formatDate(a.updatedAt),
                    ]
                )
            return 0
        if not found:
            context.out.write("No accounts.\n")
            return 0
        writeTable(
            context.out,
            ["NUMBER", "KIND", "NAME", "E-MAIL", "CREATED"],
            [[a.number, a.kind, a.displayName, a.email, formatDate(a.createdAt)] for a in found],
        )
        return 0


class AccountShow(NumberCommand):
    def run(self, context: Context) -> int:
        account = context.store.getAccount(self["number"])
        if account is None:
            raise NoSuchAccount(f"no account {self['number']}")
        registrations = len(context.store.bindingsFor(account.number, currentTime()))
        for label, value in self._fields(account, context.config["sip.realm"], registrations):
            context.out.write(f"{label + ':':<17}{value}\n")
        return 0

    def _fields(self, account: Account, realm: str, registrations: int) -> list[tuple[str, str]]:
        realmNote = "" if account.realm == realm else f" (not sip.realm {realm!r}: set a new password)"
        return [
            ("number", account.number),
            ("kind", account.kind),
            ("name", account.displayName),
            ("e-mail", account.email),
            ("realm", account.realm + realmNote),
            ("digests", "MD5, SHA-256"),
            ("portal password", "set" if account.portalPasswordHash else "not set"),
            ("group", account.group or "none"),
            ("relay", account.relay or "inherit (the group's, else relay.mode)"),
            ("created", formatDate(account.createdAt)),
            ("updated", formatDate(account.updatedAt)),
            ("registrations", str(registrations)),
        ]


class AccountUpdate(NumberCommand):
    synopsis = "NUMBER [options]"
    optParameters = [
        ["kind", "k", None, f"New kind: {', '.join(ACCOUNT_KINDS)}."],
        ["name", "n", None, "New display name."],
        ["email", "e", None, "New contact e-mail address ('' to remove it)."],
        ["relay", "r", None, "RTP relay mode: auto, always, never, or inherit (the group's)."],
    ]

    def postOptions(self) -> None:
        if self["kind"] is None and self["name"] is None and self["email"] is None and self["relay"] is None:
            raise usage.UsageError("nothing to change: give --kind, --name, --email or --relay")
        if self["relay"] is not None:
            usageCheck(checkRelay, self["relay"])
        if self["kind"] is not None:
            usageCheck(checkKind, self["kind"])
        if self["name"] is not None:
            usageCheck(checkText, "name", self["name"])
        if self["email"] is not None:
            usageCheck(checkAccountEmail, self["email"])

    def run(self, context: Context) -> int:
        context.provisioning.updateAccount(
            self["number"], displayName=self["name"], email=self["email"], kind=self["kind"], relay=self["relay"]
        )
        context.out.write(f"Updated account {self['number']}.\n")
        return 0


class AccountPasswd(NumberCommand):
    synopsis = "NUMBER [options]"
    optParameters = [
        ["password", "p", None, "New SIP password (visible in the process list); without it, one is generated."]
    ]

    def postOptions(self) -> None:
        if self["password"] is not None:
            usageCheck(checkPassword, self["password"])

    def run(self, context: Context) -> int:
        changed = context.provisioning.setPassword(self["number"], self["password"])
        context.out.write(f"Changed the SIP password of {self['number']}.\n")
        if self["password"] is None:
            showPassword(context.out, changed.password)
        return 0


class AccountPortalPasswd(NumberCommand):
    synopsis = "NUMBER [options]"
    optParameters = [
        ["password", "p", None, "New portal password (visible in the process list); without it, one is generated."]
    ]
    optFlags = [["remove", None, "Remove the portal password: the account can no longer log in to the portal."]]

    def postOptions(self) -> None:
        if self["password"] is not None and self["remove"]:
            raise usage.UsageError("give --password or --remove, not both")
        if self["password"] is not None:
            usageCheck(checkPassword, self["password"], "portal password")

    def run(self, context: Context) -> int:
        if self["remove"]:
            context.provisioning.setPortalPassword(self["number"], None)
            context.out.write(f"Removed the portal password of {self['number']}.\n")
            return 0
        changed = context.provisioning.newPortalPassword(self["number"], self["password"])
        context.out.write(f"Changed the portal password of {self['number']}.\n")
        if self["password"] is None:
            showPassword(context.out, changed.password, "Portal password")
        return 0


class AccountDel(NumberCommand):
    def run(self, context: Context) -> int:
        removed = context.provisioning.deleteAccount(self["number"])
        context.out.write(f"Deleted account {self['number']} and its {removed} stored registration(s).\n")
        return 0


class AccountCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["add", None, AccountAdd, "Create an account."],
        ["list", None, AccountList, "List the accounts."],
        ["show", None, AccountShow, "Show one account."],
        ["update", None, AccountUpdate, "Change the kind, name or e-mail of an account."],
        ["passwd", None, AccountPasswd, "Change the SIP password of an account."],
        ["portal-passwd", None, AccountPortalPasswd, "Set or remove the self-care portal password of an account."],
        ["del", None, AccountDel, "Delete an account and its registrations."],
    ]
