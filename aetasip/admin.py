"""
C{aetasip-admin}: provision accounts, look at registrations and call
records in the store, mail quarterly call logs and service information,
and see and end calls, relay and test-line sessions and registrations in
the running service (through its control socket, C{web.control_socket}).

    aetasip-admin [--config FILE] [--store URL] account add NUMBER [--kind K] [--password P] [--name N] [--email E]
    aetasip-admin account list [--kind K] [--csv]
    aetasip-admin account show NUMBER
    aetasip-admin account update NUMBER [--kind K] [--name N] [--email E] [--relay auto|always|never|inherit]
    aetasip-admin account passwd NUMBER [--password P]
    aetasip-admin account portal-passwd NUMBER [--password P | --remove]
    aetasip-admin account del NUMBER
    aetasip-admin location show [NUMBER]
    aetasip-admin location remove NUMBER CONTACT                  (running service)
    aetasip-admin call list [--json] | call release CALL-ID      (running service)
    aetasip-admin relay show [CALL-ID] [--json] | relay release CALL-ID          (running service)
    aetasip-admin testline status [--json] | testline release (--all | CALL-ID)  (running service)
    aetasip-admin group add PREFIX --contact EMAIL [--incoming-block] [--outgoing-block] [--hunting]
                                   [--quarterly-log] [--no-self-care]
    aetasip-admin group list
    aetasip-admin group show PREFIX
    aetasip-admin group set PREFIX [--contact EMAIL] [--[no-]incoming-block] [--[no-]outgoing-block]
                                   [--[no-]hunting] [--[no-]quarterly-log] [--[no-]self-care]
                                   [--relay auto|always|never|inherit]
    aetasip-admin group allocate PREFIX --count N [--kind premium|escoopfone]
    aetasip-admin group attach PREFIX NUMBER
    aetasip-admin group detach NUMBER
    aetasip-admin group del PREFIX
    aetasip-admin cdr list [--number N | --group PREFIX] [--from T --to T | --quarter 2026Q3] [--answered-only]
                           [--limit N]
    aetasip-admin cdr export [same filters] [--output FILE]
    aetasip-admin report quarterly --group PREFIX --quarter 2026Q1 [--send]
    aetasip-admin notify --subject S --body-file FILE [--group PREFIX] [--dry-run]

It uses the store, realm and control socket of the service's configuration
file (C{--store URL}, C{--socket PATH} override them). Without
C{--password}, a strong password is generated and printed once: only its
digests are stored; C{group allocate} likewise prints the password of each
new number once. Exit status: 0 on success, 1 when the store refuses
(no such account, number taken, database unavailable), 2 for bad usage or
configuration; the reason is one line on standard error. A command on the
running service when it cannot be reached exits 1 with "the service is not
running or web.control_socket is off: ...".
"""

from __future__ import annotations

import csv
import getopt
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TextIO, TypeVar

import attrs
from sqlalchemy.exc import SQLAlchemyError
from twisted.python import usage
from twisted.python.failure import Failure

from aetasip import __version__
from aetasip.auth import ACCOUNT_KINDS
from aetasip.config import Config, ConfigError, load
from aetasip.location import Binding
from aetasip.records.csvfiles import seconds, writeExport
from aetasip.records.mailmessages import compose, noticeBody, quarterlySubject
from aetasip.records.mailsettings import MailSettings
from aetasip.records.outbox import SendResult, makeOutbox
from aetasip.records.periods import InvalidPeriod, Quarter, isoSeconds
from aetasip.records.quarterly import quarterlyLog, queueLog
from aetasip.records.query import InvalidQuery, recordQuery
from aetasip.store import (
    MAX_ALLOCATION,
    MEMBER_KINDS,
    PASSWORD_LENGTH,
    Account,
    AsyncStore,
    Group,
    InvalidValue,
    NewPassword,
    NoSuchAccount,
    NoSuchGroup,
    Provisioning,
    Store,
    StoreError,
    checkAccountEmail,
    checkAccountNumber,
    checkCount,
    checkEmail,
    checkKind,
    checkMemberKind,
    checkNumber,
    checkPassword,
    checkPrefix,
    checkRelay,
    checkText,
    generatePassword,
)
from aetasip.store.nodes import NoSuchNode
from aetasip.store.tokens import checkTokenName
from aetasip.web.controlclient import NOT_RUNNING, ControlClient, ServiceRefused, ServiceUnreachable, segment
from aetasip.web.settings import generateToken, tokenDigest

PROGRAM = "aetasip-admin"

__all__ = ["MAX_ALLOCATION", "PASSWORD_LENGTH", "generatePassword", "main"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _now() -> float:
    return time.time()


# -- checks of arguments -------------------------------------------------------


def _usage(check: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """
    Check an argument with one of the store's rules (L{aetasip.store.models}):
    a value it refuses is bad usage (exit status 2), refused before the store
    is opened.
    """
    try:
        return check(*args, **kwargs)
    except InvalidValue as e:
        raise usage.UsageError(str(e)) from None


def _arguments(given: Sequence[str], names: Sequence[str], optional: int = 0) -> list[str | None]:
    """
    C{given}, checked against the positional C{names}, the last C{optional}
    of which may be left out (they are C{None} then).
    """
    if len(given) < len(names) - optional:
        raise usage.UsageError(f"missing {names[len(given)]}")
    if len(given) > len(names):
        raise usage.UsageError(f"unexpected argument {given[len(names)]!r}")
    return [*given, *[None] * (len(names) - len(given))]


# -- output ---------------------------------------------------------------------


def _table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _showPassword(out: TextIO, password: str, what: str = "SIP password") -> None:
    out.write(f"{what}: {password}\n")
    out.write("Write it down now: it is not stored and will not be shown again.\n")


# -- commands ---------------------------------------------------------------------


class _Help(Exception):
    """
    C{--help} or C{--version} was given; the argument is the text to show.
    """


@attrs.frozen
class _Context:
    """
    What a command works with: commands read from C{store} and make their
    changes through C{provisioning}; those that act on the running service
    talk to it through C{service} (its control socket), and the store is
    not opened for them.
    """

    store: Store
    provisioning: Provisioning
    config: Config
    out: TextIO
    service: ControlClient | None = None

    def running(self) -> ControlClient:
        assert self.service is not None
        return self.service


class _Options(usage.Options):
    longdesc = ""
    #: Whether the command acts on the running service (through its control socket), not on the store.
    usesService = False

    def opt_help(self) -> None:
        """
        Display this help and exit.
        """
        raise _Help(str(self))

    opt_h = opt_help

    def opt_version(self) -> None:
        """
        Display the version of aetasip and exit.
        """
        raise _Help(f"{PROGRAM} (aetasip) {__version__}\n")

    def getSynopsis(self) -> str:
        # An empty synopsis of a parent command would leave a double space.
        return " ".join(super().getSynopsis().split())

    def postOptions(self) -> None:
        subCommands = getattr(self, "subCommands", None)
        if subCommands and not hasattr(self, "subOptions"):
            raise usage.UsageError("missing command: " + ", ".join(command[0] for command in subCommands))

    def run(self, context: _Context) -> int:
        """
        Do the command; a command with sub-commands runs the one given.

        @return: the exit status.
        """
        subOptions = getattr(self, "subOptions", None)
        if not isinstance(subOptions, _Options):
            raise usage.UsageError("missing command")
        return subOptions.run(context)


class _Command(_Options):
    """
    A command that takes no sub-command: its options may also follow its
    arguments (C{account add 45675001 --kind test}), and C{--} ends them.
    """

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            found, arguments = getopt.gnu_getopt(list(options or []), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for option, value in found:
            if option.startswith("--"):
                ordered.append(f"{option}={value}" if option[2:] + "=" in self.longOpt else option)
            else:
                ordered.extend([option, value] if option[1] + ":" in self.shortOpt else [option])
        super().parseOptions([*ordered, "--", *arguments])


class _NumberCommand(_Command):
    """
    A command whose only argument is a number.
    """

    synopsis = "NUMBER"

    def parseArgs(self, *args: str) -> None:
        (number,) = _arguments(args, ["NUMBER"])
        assert number is not None
        self["number"] = _usage(checkNumber, number)


class AccountAdd(_NumberCommand):
    synopsis = "NUMBER [options]"
    optParameters = [
        ["kind", "k", "premium", f"Kind of account: {', '.join(ACCOUNT_KINDS)}."],
        ["password", "p", None, "SIP password (visible in the process list); without it, one is generated."],
        ["name", "n", "", "Display name."],
        ["email", "e", "", "Contact e-mail address."],
    ]

    def postOptions(self) -> None:
        _usage(checkAccountNumber, self["number"], self["kind"])
        _usage(checkText, "name", self["name"])
        _usage(checkAccountEmail, self["email"])
        if self["password"] is not None:
            _usage(checkPassword, self["password"])

    def run(self, context: _Context) -> int:
        added = context.provisioning.addAccount(
            self["number"], self["kind"], self["password"], displayName=self["name"], email=self["email"]
        )
        account = added.account
        context.out.write(f"Added account {account.number} ({account.kind}) in realm {account.realm}.\n")
        if self["password"] is None:
            _showPassword(context.out, added.password)
        return 0


class AccountList(_Command):
    synopsis = "[options]"
    optParameters = [["kind", "k", None, "List only the accounts of this kind."]]
    optFlags = [["csv", None, "Write CSV (with a header line) instead of a table."]]

    def postOptions(self) -> None:
        if self["kind"] is not None:
            _usage(checkKind, self["kind"])

    def run(self, context: _Context) -> int:
        found = context.store.listAccounts(self["kind"])
        if self["csv"]:
            writer = csv.writer(context.out, lineterminator="\n")
            writer.writerow(["number", "kind", "name", "email", "realm", "created", "updated"])
            for a in found:
                writer.writerow(
                    [a.number, a.kind, a.displayName, a.email, a.realm, _date(a.createdAt), _date(a.updatedAt)]
                )
            return 0
        if not found:
            context.out.write("No accounts.\n")
            return 0
        _table(
            context.out,
            ["NUMBER", "KIND", "NAME", "E-MAIL", "CREATED"],
            [[a.number, a.kind, a.displayName, a.email, _date(a.createdAt)] for a in found],
        )
        return 0


class AccountShow(_NumberCommand):
    def run(self, context: _Context) -> int:
        account = context.store.getAccount(self["number"])
        if account is None:
            raise NoSuchAccount(f"no account {self['number']}")
        registrations = len(context.store.bindingsFor(account.number, _now()))
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
            ("created", _date(account.createdAt)),
            ("updated", _date(account.updatedAt)),
            ("registrations", str(registrations)),
        ]


class AccountUpdate(_NumberCommand):
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
            _usage(checkRelay, self["relay"])
        if self["kind"] is not None:
            _usage(checkKind, self["kind"])
        if self["name"] is not None:
            _usage(checkText, "name", self["name"])
        if self["email"] is not None:
            _usage(checkAccountEmail, self["email"])

    def run(self, context: _Context) -> int:
        context.provisioning.updateAccount(
            self["number"], displayName=self["name"], email=self["email"], kind=self["kind"], relay=self["relay"]
        )
        context.out.write(f"Updated account {self['number']}.\n")
        return 0


class AccountPasswd(_NumberCommand):
    synopsis = "NUMBER [options]"
    optParameters = [
        ["password", "p", None, "New SIP password (visible in the process list); without it, one is generated."]
    ]

    def postOptions(self) -> None:
        if self["password"] is not None:
            _usage(checkPassword, self["password"])

    def run(self, context: _Context) -> int:
        changed = context.provisioning.setPassword(self["number"], self["password"])
        context.out.write(f"Changed the SIP password of {self['number']}.\n")
        if self["password"] is None:
            _showPassword(context.out, changed.password)
        return 0


class AccountPortalPasswd(_NumberCommand):
    synopsis = "NUMBER [options]"
    optParameters = [
        ["password", "p", None, "New portal password (visible in the process list); without it, one is generated."]
    ]
    optFlags = [["remove", None, "Remove the portal password: the account can no longer log in to the portal."]]

    def postOptions(self) -> None:
        if self["password"] is not None and self["remove"]:
            raise usage.UsageError("give --password or --remove, not both")
        if self["password"] is not None:
            _usage(checkPassword, self["password"], "portal password")

    def run(self, context: _Context) -> int:
        if self["remove"]:
            context.provisioning.setPortalPassword(self["number"], None)
            context.out.write(f"Removed the portal password of {self['number']}.\n")
            return 0
        changed = context.provisioning.newPortalPassword(self["number"], self["password"])
        context.out.write(f"Changed the portal password of {self['number']}.\n")
        if self["password"] is None:
            _showPassword(context.out, changed.password, "Portal password")
        return 0


class AccountDel(_NumberCommand):
    def run(self, context: _Context) -> int:
        removed = context.provisioning.deleteAccount(self["number"])
        context.out.write(f"Deleted account {self['number']} and its {removed} stored registration(s).\n")
        return 0


class AccountCommands(_Options):
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


class LocationShow(_Command):
    synopsis = "[NUMBER]"

    def parseArgs(self, *args: str) -> None:
        (number,) = _arguments(args, ["NUMBER"], optional=1)
        self["number"] = None if number is None else _usage(checkNumber, number)

    def run(self, context: _Context) -> int:
        now = _now()
        number = self["number"]
        found = context.store.allBindings(now) if number is None else context.store.bindingsFor(number, now)
        if not found:
            context.out.write("No registrations.\n" if number is None else f"No registrations for {number}.\n")
            return 0
        _table(context.out, ["NUMBER", "CONTACT", "SOURCE", "USER AGENT", "EXPIRES"], [_row(b, now) for b in found])
        return 0


def _row(binding: Binding, now: float) -> list[str]:
    return [
        binding.aor,
        binding.contact,
        f"{_address(*binding.source)}/{binding.transport}",
        binding.userAgent,
        f"in {max(0, round(binding.expiresAt - now))} s",
    ]


class LocationRemove(_Command):
    synopsis = "NUMBER CONTACT"
    usesService = True
    longdesc = (
        "Remove a registration from the running service: calls no longer reach that contact at once, and the "
        "binding is deleted from the store within a second. CONTACT is the contact URI as 'location show' lists it."
    )

    def parseArgs(self, *args: str) -> None:
        number, contact = _arguments(args, ["NUMBER", "CONTACT"])
        assert number is not None and contact is not None
        self["number"] = _usage(checkNumber, number)
        if not contact.strip() or not contact.isprintable():
            raise usage.UsageError(f"invalid CONTACT {contact!r}: expected the contact URI 'location show' lists")
        self["contact"] = contact

    def run(self, context: _Context) -> int:
        answer = context.running().request("DELETE", f"locations/{self['number']}", {"contact": self["contact"]})
        removed = answer["removed"]
        context.out.write(f"Removed the registration of {removed['number']} at {removed['contact']}.\n")
        return 0


class LocationCommands(_Options):
    synopsis = ""
    subCommands = [
        ["show", None, LocationShow, "Show the current registrations (of NUMBER)."],
        ["remove", None, LocationRemove, "Remove a registration from the running service."],
    ]


# -- groups ---------------------------------------------------------------------

# (option, store keyword, help) of the on/off options of a group.
_GROUP_FLAGS = [
    ("incoming-block", "incomingBlock", "Refuse calls from outside the group to it."),
    ("outgoing-block", "outgoingBlock", "Refuse calls from the group to outside it (except 15000)."),
    ("hunting", "hunting", "Hunting group: prefix+6000 rings prefix+6001, 6002, … in turn."),
    ("quarterly-log", "quarterlyLog", "Send a call log to the contact every quarter."),
    ("self-care", "selfCare", "Let the members change their SIP password on the portal."),
]


def _onOffFlags() -> list[list[str | None]]:
    flags: list[list[str | None]] = []
    for option, _keyword, help in _GROUP_FLAGS:
        flags.append([option, None, help])
        flags.append([f"no-{option}", None, f"The opposite of --{option}."])
    return flags


def _showCreated(out: TextIO, created: Sequence[NewPassword]) -> None:
    _table(out, ["NUMBER", "SIP PASSWORD"], [[new.number, new.password] for new in created])
    out.write("Write them down now: the passwords are not stored and will not be shown again.\n")


def _onOff(value: bool) -> str:
    return "on" if value else "off"


class _PrefixCommand(_Command):
    """
    A command whose only argument is a group prefix.
    """

    synopsis = "PREFIX"

    def parseArgs(self, *args: str) -> None:
        (prefix,) = _arguments(args, ["PREFIX"])
        assert prefix is not None
        self["prefix"] = _usage(checkPrefix, prefix)


class _GroupOptionsCommand(_PrefixCommand):
    """
    A command that sets the options of a group: C{--contact} and each
    C{--OPTION}/C{--no-OPTION} pair.
    """

    synopsis = "PREFIX [options]"
    optParameters = [["contact", "c", None, "The technical contact's e-mail address."]]
    optFlags = _onOffFlags()

    def groupOptions(self) -> dict[str, Any]:
        """
        The options given, as keywords of L{Provisioning.updateGroup}.
        """
        options: dict[str, Any] = {}
        if self["contact"] is not None:
            options["contact"] = _usage(checkEmail, self["contact"])
        for option, keyword, _help in _GROUP_FLAGS:
            if self[option] and self[f"no-{option}"]:
                raise usage.UsageError(f"--{option} and --no-{option} contradict each other")
            if self[option] or self[f"no-{option}"]:
                options[keyword] = bool(self[option])
        return options


class GroupAdd(_GroupOptionsCommand):
    def postOptions(self) -> None:
        if self["contact"] is None:
            raise usage.UsageError("missing --contact EMAIL: every group has a technical contact")
        self["options"] = self.groupOptions()

    def run(self, context: _Context) -> int:
        group = context.provisioning.addGroup(self["prefix"], **self["options"])
        context.out.write(
            f"Added group {group.prefix} (contact {group.contact}); "
            f"its numbers start at {group.prefix}{group.nextMember}.\n"
        )
        return 0


class GroupSet(_GroupOptionsCommand):
    optParameters = [
        *_GroupOptionsCommand.optParameters,
        ["relay", "r", None, "RTP relay mode of its members: auto, always, never, or inherit (relay.mode)."],
    ]

    def postOptions(self) -> None:
        self["options"] = self.groupOptions()
        if self["relay"] is not None:
            self["options"]["relay"] = _usage(checkRelay, self["relay"])
        if not self["options"]:
            raise usage.UsageError("nothing to change: give --contact or an option such as --hunting")

    def run(self, context: _Context) -> int:
        created = context.provisioning.updateGroup(self["prefix"], **self["options"])
        context.out.write(f"Updated group {self['prefix']}.\n")
        if created:
            context.out.write(f"New hunting series accounts in realm {context.provisioning.realm}:\n")
            _showCreated(context.out, created)
        return 0


class GroupList(_Command):
    synopsis = ""

    def run(self, context: _Context) -> int:
        found = context.store.listGroups()
        if not found:
            context.out.write("No groups.\n")
            return 0
        rows = []
        for group in found:
            options = [option for option, keyword, _help in _GROUP_FLAGS if getattr(group, keyword)]
            members = len(context.store.groupMembers(group.prefix))
            rows.append([group.prefix, group.contact, str(members), ", ".join(options) or "-"])
        _table(context.out, ["PREFIX", "CONTACT", "MEMBERS", "OPTIONS"], rows)
        return 0


class GroupShow(_PrefixCommand):
    def run(self, context: _Context) -> int:
        group = context.store.getGroup(self["prefix"])
        if group is None:
            raise NoSuchGroup(f"no group {self['prefix']}")
        for label, value in _groupFields(group):
            context.out.write(f"{label + ':':<17}{value}\n")
        members = context.store.groupMembers(group.prefix)
        series = context.store.huntingSeries(group.prefix)
        context.out.write(f"\nMembers ({len(members)}):\n")
        if members:
            _table(context.out, ["NUMBER", "KIND", "NAME"], [[a.number, a.kind, a.displayName] for a in members])
        context.out.write(f"\nHunting series ({len(series)}): {', '.join(a.number for a in series) or '-'}\n")
        return 0


def _groupFields(group: Group) -> list[tuple[str, str]]:
    hunting = _onOff(group.hunting) + (f" (dial {group.huntingNumber})" if group.hunting else "")
    return [
        ("prefix", group.prefix),
        ("contact", group.contact),
        ("incoming block", _onOff(group.incomingBlock)),
        ("outgoing block", _onOff(group.outgoingBlock)),
        ("hunting", hunting),
        ("quarterly log", _onOff(group.quarterlyLog)),
        ("self-care", _onOff(group.selfCare)),
        ("relay", group.relay or "inherit (relay.mode)"),
        ("next number", f"{group.prefix}{group.nextMember} (or after the highest number taken)"),
        ("created", _date(group.createdAt)),
        ("updated", _date(group.updatedAt)),
    ]


class GroupAllocate(_PrefixCommand):
    synopsis = "PREFIX --count N [options]"
    optParameters = [
        ["count", "n", None, "How many numbers to allocate."],
        ["kind", "k", "premium", f"Kind of the new accounts: {', '.join(MEMBER_KINDS)}."],
    ]

    def postOptions(self) -> None:
        if self["count"] is None:
            raise usage.UsageError("missing --count N")
        # Digits become a number for the rule to judge; anything else it refuses as it is.
        count = self["count"]
        self["count"] = _usage(checkCount, int(count) if re.fullmatch(r"[0-9]{1,9}", count) else count)
        _usage(checkMemberKind, self["kind"])

    def run(self, context: _Context) -> int:
        allocation = context.provisioning.allocate(self["prefix"], self["count"], self["kind"])
        series = allocation.huntingSeries
        context.out.write(
            f"Allocated {len(allocation.members)} {self['kind']} number(s) in group {self['prefix']}, "
            f"realm {context.provisioning.realm}"
            + (f", and {len(series)} hunting series account(s)" if series else "")
            + ":\n"
        )
        _showCreated(context.out, allocation.created)
        return 0


class GroupAttach(_Command):
    synopsis = "PREFIX NUMBER"

    def parseArgs(self, *args: str) -> None:
        prefix, number = _arguments(args, ["PREFIX", "NUMBER"])
        assert prefix is not None and number is not None
        self["prefix"] = _usage(checkPrefix, prefix)
        self["number"] = _usage(checkNumber, number)

    def run(self, context: _Context) -> int:
        context.provisioning.attach(self["number"], self["prefix"])
        context.out.write(f"Account {self['number']} now belongs to group {self['prefix']}.\n")
        return 0


class GroupDetach(_NumberCommand):
    def run(self, context: _Context) -> int:
        left = context.provisioning.detach(self["number"])
        context.out.write(
            f"Account {self['number']} left group {left}.\n"
            if left is not None
            else f"Account {self['number']} belongs to no group.\n"
        )
        return 0


class GroupDel(_PrefixCommand):
    def run(self, context: _Context) -> int:
        context.provisioning.deleteGroup(self["prefix"])
        context.out.write(f"Deleted group {self['prefix']}.\n")
        return 0


class GroupCommands(_Options):
    synopsis = ""
    subCommands = [
        ["add", None, GroupAdd, "Create a group of premium numbers."],
        ["list", None, GroupList, "List the groups."],
        ["show", None, GroupShow, "Show a group's options, members and hunting series."],
        ["set", None, GroupSet, "Change a group's contact or options."],
        ["allocate", None, GroupAllocate, "Create the group's next numbers, with new passwords."],
        ["attach", None, GroupAttach, "Make an existing account a member of a group."],
        ["detach", None, GroupDetach, "Take an account out of its group."],
        ["del", None, GroupDel, "Delete a group that has no accounts left."],
    ]


# -- call records -----------------------------------------------------------------


class _RecordsCommand(_Command):
    """
    A command reading call records, with the filters of a L{RecordQuery}.
    """

    synopsis = "[--number N | --group PREFIX] [--from TIME --to TIME | --quarter YEARQN] [--answered-only]"
    optParameters = [
        ["number", "n", None, "Only the calls from, to or answered by this number."],
        ["group", "g", None, "Only the calls from or to the numbers of this group (by its prefix)."],
        ["from", None, None, "Only the calls begun or ended at or after this time (ISO 8601, UTC by default)."],
        ["to", None, None, "Only the calls begun or ended before this time (ISO 8601, UTC by default)."],
        ["quarter", "q", None, "Only the calls begun or ended in this calendar quarter (UTC), e.g. 2026Q3."],
    ]
    optFlags = [["answered-only", "a", "Only answered calls (begun means answered then)."]]

    def postOptions(self) -> None:
        # The contradictions named by their options; the rest as the admin API reads it.
        if self["number"] is not None and self["group"] is not None:
            raise usage.UsageError("give --number or --group, not both")
        if self["quarter"] is not None and (self["from"] is not None or self["to"] is not None):
            raise usage.UsageError("give --quarter or --from/--to, not both")
        try:
            self.query = recordQuery(
                self["number"], self["group"], self["from"], self["to"], self["quarter"], self["answered-only"]
            )
        except InvalidQuery as e:
            message = str(e)
            if message.startswith("the start of the period"):
                message = "--from must be before --to"
            raise usage.UsageError(message) from None


class CDRList(_RecordsCommand):
    synopsis = _RecordsCommand.synopsis + " [--limit N]"
    optParameters = [*_RecordsCommand.optParameters, ["limit", "l", None, "At most this many calls, the oldest first."]]

    def postOptions(self) -> None:
        super().postOptions()
        if self["limit"] is not None:
            limit = self["limit"]
            if not limit.isdigit() or not limit.isascii() or int(limit) < 1:
                raise usage.UsageError(f"invalid --limit {limit!r}: expected a whole number from 1")
            self.query = attrs.evolve(self.query, limit=int(limit))

    def run(self, context: _Context) -> int:
        found = context.store.callRecords(self.query)
        if not found:
            context.out.write("No call records.\n")
            return 0
        _table(
            context.out,
            ["START (UTC)", "CALLER", "DIALLED", "CALLEE", "ANSWER", "DURATION", "STATUS", "END"],
            [
                [
                    isoSeconds(r.startedAt),
                    r.caller,
                    r.dialled,
                    r.callee or "",
                    isoSeconds(r.answeredAt)[11:],
                    f"{seconds(r.duration)} s" if r.answered else "",
                    str(r.status),
                    r.endCause or "(in progress)",
                ]
                for r in found
            ],
        )
        return 0


class CDRExport(_RecordsCommand):
    synopsis = _RecordsCommand.synopsis + " [--output FILE]"
    optParameters = [
        *_RecordsCommand.optParameters,
        ["output", "o", None, "Write the CSV to FILE, not standard output."],
    ]

    def run(self, context: _Context) -> int:
        found = context.store.callRecords(self.query)
        if self["output"] is None:
            writeExport(context.out, found)
            return 0
        try:
            with open(self["output"], "w", encoding="utf-8", newline="") as f:
                count = writeExport(f, found)
        except OSError as e:
            raise StoreError(f"cannot write {self['output']}: {e.strerror or e}") from None
        context.out.write(f"Wrote {count} call records to {self['output']}.\n")
        return 0


class CDRCommands(_Options):
    synopsis = ""
    subCommands = [
        ["list", None, CDRList, "List call records."],
        ["export", None, CDRExport, "Write call records as CSV (header row, UTC ISO 8601 times, seconds)."],
    ]


# -- the running service: calls, relay and test-line sessions ------------------------


def _callID(value: str) -> str:
    """A SIP Call-ID given on the command line: one word of printable characters."""
    if not value or len(value) > 1024 or not value.isprintable() or any(c.isspace() for c in value):
        raise usage.UsageError(f"invalid CALL-ID {value!r}: expected a SIP Call-ID (printable, no spaces)")
    return value


def _writeJSON(out: TextIO, value: object) -> None:
    out.write(json.dumps(value, indent=1) + "\n")


def _clock(iso: str | None) -> str:
    """C{2026-09-01T10:00:00Z} as C{2026-09-01 10:00:00}."""
    return "" if iso is None else iso.replace("T", " ").rstrip("Z")


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class _ServiceCommand(_Command):
    usesService = True


class _ListCommand(_ServiceCommand):
    optFlags = [["json", "j", "Write the JSON the service answered instead of a table."]]


class CallList(_ListCommand):
    synopsis = "[--json]"

    def run(self, context: _Context) -> int:
        calls = context.running().request("GET", "calls")["calls"]
        if self["json"]:
            _writeJSON(context.out, calls)
            return 0
        if not calls:
            context.out.write("No calls in progress.\n")
            return 0
        _table(
            context.out,
            ["CALL-ID", "CALLER", "DIALLED", "CALLEE", "STATE", "STARTED (UTC)", "DURATION", "RELAY"],
            [
                [
                    c["callId"],
                    c["caller"],
                    c["dialled"],
                    c["callee"] or "",
                    c["state"],
                    _clock(c["startedAt"]),
                    _duration(c["duration"]) if c["answeredAt"] else "",
                    c["relayNode"] or "",
                ]
                for c in calls
            ],
        )
        return 0


class _CallIDCommand(_ServiceCommand):
    synopsis = "CALL-ID"

    def parseArgs(self, *args: str) -> None:
        (callID,) = _arguments(args, ["CALL-ID"])
        assert callID is not None
        self["call-id"] = _callID(callID)


class CallRelease(_CallIDCommand):
    longdesc = (
        "End a call in progress from the server: an answered call gets a BYE on both legs, one being set up is "
        "cancelled (the caller gets 487). Its record says 'operator release'."
    )

    def run(self, context: _Context) -> int:
        released = context.running().request("DELETE", f"calls/{segment(self['call-id'])}")["released"]
        for call in released:
            how = "BYE sent to both parties" if call["answeredAt"] else "cancelled"
            context.out.write(f"Released call {call['callId']} ({call['caller']} -> {call['dialled']}): {how}.\n")
        return 0


class CallCommands(_Options):
    synopsis = ""
    subCommands = [
        ["list", None, CallList, "List the calls in progress."],
        ["release", None, CallRelease, "End a call in progress (BYE to both parties)."],
    ]


def _latched(leg: dict[str, Any]) -> str:
    return str(leg["latched"] or "(not yet)")


def _mos(stream: dict[str, Any]) -> str:
    return "" if stream["mos"] is None else f"{stream['mos']:.2f}"


class RelayShow(_ListCommand):
    synopsis = "[CALL-ID] [--json]"

    def parseArgs(self, *args: str) -> None:
        (callID,) = _arguments(args, ["CALL-ID"], optional=1)
        self["call-id"] = None if callID is None else _callID(callID)

    def run(self, context: _Context) -> int:
        answer = context.running().request("GET", "relay/sessions")
        sessions = [s for s in answer["sessions"] if self["call-id"] in (None, s["callId"])]
        if self["json"]:
            _writeJSON(context.out, sessions)
            return 0
        if not answer["relay"]:
            context.out.write("The relay is off: calls.media_handler is not 'relay'.\n")
            return 0
        if not sessions:
            context.out.write(
                "No relay sessions.\n" if self["call-id"] is None else f"No relay session for {self['call-id']}.\n"
            )
            return 0
        rows = []
        for session in sessions:
            call = session["call"]
            for leg in ("caller", "callee"):
                figures = session[leg]
                received = figures["received"]
                rows.append(
                    [
                        session["callId"] if leg == "caller" else "",
                        session["node"] if leg == "caller" else "",
                        leg,
                        "" if call is None else (call["caller"] if leg == "caller" else call["callee"] or ""),
                        _latched(figures),
                        str(received["packets"]),
                        _measured(received["lost"], "{}"),
                        _measured(received["jitter"], "{:.1f}"),
                        _mos(received),
                        str(figures["sent"]["packets"]),
                        str(figures["dropped"]),
                    ]
                )
        _table(
            context.out,
            ["CALL-ID", "NODE", "LEG", "NUMBER", "LATCHED", "PKTS IN", "LOST", "JITTER MS", "MOS", "PKTS OUT",
             "DROPPED"],
            rows,
        )  # fmt: skip
        return 0


def _measured(value: Any, form: str) -> str:
    """A relay figure, or '-' when the node did not measure it (rtpengine's loss and jitter for plain RTP)."""
    return "-" if value is None else form.format(value)


class RelayRelease(_CallIDCommand):
    longdesc = "Release a relayed call: BYE to both parties; its relay ports go back to the node."

    def run(self, context: _Context) -> int:
        released = context.running().request("DELETE", f"relay/sessions/{segment(self['call-id'])}")["released"]
        for session in released:
            how = "its call released (BYE to both parties)" if session["call"] else "deleted on its node"
            context.out.write(f"Released relay session {session['callId']} on {session['node']}: {how}.\n")
        return 0


class RelayCommands(_Options):
    synopsis = ""
    subCommands = [
        ["show", None, RelayShow, "List the relay sessions (of CALL-ID): legs, latched addresses, counters."],
        ["release", None, RelayRelease, "Release a relayed call."],
    ]


class TestLineStatus(_ListCommand):
    synopsis = "[--json]"

    def run(self, context: _Context) -> int:
        answer = context.running().request("GET", "testline/sessions")
        sessions = answer["sessions"]
        if self["json"]:
            _writeJSON(context.out, sessions)
            return 0
        if not answer["running"]:
            context.out.write("The test line is off (testline.enabled).\n")
            return 0
        if not sessions:
            context.out.write("No test-line sessions.\n")
            return 0
        _table(
            context.out,
            ["CALL-ID", "LINE", "KIND", "CALLER", "STATE", "CODEC", "DURATION", "PKTS OUT", "PKTS IN", "MEDIA TO"],
            [
                [
                    s["callId"],
                    s["number"],
                    s["kind"],
                    s["caller"],
                    s["state"],
                    s["codec"] or "",
                    _duration(s["duration"]) if s["answeredAt"] else "",
                    str(s["packetsSent"]),
                    str(s["packetsReceived"]),
                    s["mediaTo"] + ("" if s["latched"] else " (from the SDP)"),
                ]
                for s in sessions
            ],
        )
        return 0


class TestLineRelease(_ServiceCommand):
    synopsis = "--all | CALL-ID"
    optFlags = [["all", "a", "Release every session of the test lines."]]
    longdesc = "End test-line sessions: the caller gets a BYE; the records say 'operator release'."

    def parseArgs(self, *args: str) -> None:
        (callID,) = _arguments(args, ["CALL-ID"], optional=1)
        self["call-id"] = None if callID is None else _callID(callID)

    def postOptions(self) -> None:
        if self["all"] == (self["call-id"] is not None):
            raise usage.UsageError("give --all or a CALL-ID (one of them)")

    def run(self, context: _Context) -> int:
        path = "testline/sessions" if self["all"] else f"testline/sessions/{segment(self['call-id'])}"
        released = context.running().request("DELETE", path)["released"]
        if not released:
            context.out.write("No test-line sessions.\n")
        for session in released:
            context.out.write(
                f"Released test-line session {session['callId']} ({session['caller']} on {session['number']}): "
                "BYE sent.\n"
            )
        return 0


class TestLineCommands(_Options):
    synopsis = ""
    subCommands = [
        ["status", None, TestLineStatus, "List the test-line sessions in progress."],
        ["release", None, TestLineRelease, "End one test-line session, or all (BYE sent)."],
    ]


# -- mail: quarterly call logs and service information ------------------------------


def _fromAddress(context: _Context) -> str:
    address = context.config["mail.from_address"]
    if address is None:
        raise StoreError("mail.from_address is not set in the configuration: no message can be queued")
    return str(address)


def _sendNow(context: _Context, queued: Sequence[int]) -> None:
    """
    Send the outbox now (what was just C{queued} and anything else due),
    and say what happened to C{queued}; what fails is tried again by the
    service.
    """
    settings = MailSettings.fromConfig(context.config)
    missing = settings.missing()
    if missing is not None:
        context.out.write(f"Not sent now: {missing}; the service sends them once it is configured.\n")
        return
    result = _runReactor(lambda reactor: _sendOutbox(context, reactor))
    sent = len(set(queued) & set(result.sent))
    failed = [mailID for mailID in queued if mailID in result.failed or mailID in result.givenUp]
    context.out.write(f"Sent {sent} of {len(queued)}.\n")
    if failed:
        reasons = {m.id: m.lastError for m in context.store.outbox() if m.id in failed}
        for mailID in failed:
            context.out.write(f"Not sent (message {mailID}): {reasons.get(mailID, '')}\n")
        context.out.write("The service tries them again later (see its log).\n")


async def _sendOutbox(context: _Context, reactor: Any) -> SendResult:
    # A store of its own: stopping it closes it, not the command's.
    own = Store(context.store.url)
    own.open()
    store = AsyncStore(own, threads=1, reactor=reactor)
    store.start()
    try:
        return await makeOutbox(context.config, store, reactor).sendDue()
    finally:
        await store.stop()


def _runReactor(f: Callable[[Any], Any]) -> Any:
    """Run the reactor until the coroutine C{f(reactor)} is done; its result (or exception)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    outcome: list[Any] = []

    def start() -> None:
        d = Deferred.fromCoroutine(f(reactor))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined, call-arg]
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return result


class ReportQuarterly(_Command):
    synopsis = "--group PREFIX --quarter YEARQN [--send]"
    optParameters = [
        ["group", "g", None, "The group (its prefix)."],
        ["quarter", "q", None, "The calendar quarter, e.g. 2026Q1."],
    ]
    optFlags = [["send", None, "Mail it to the group's technical contact now (again, if it was sent)."]]
    longdesc = (
        "Write the quarterly call log of a group (CSV: begin, duration, calling and called number of the answered "
        "calls that began or ended in the quarter), or mail it with --send."
    )

    def postOptions(self) -> None:
        if self["group"] is None or self["quarter"] is None:
            raise usage.UsageError("--group and --quarter are required")
        self["group"] = _usage(checkPrefix, self["group"])
        try:
            self.quarter = Quarter.parse(self["quarter"])
        except InvalidPeriod as e:
            raise usage.UsageError(str(e)) from None

    def run(self, context: _Context) -> int:
        group = context.store.getGroup(self["group"])
        if group is None:
            raise NoSuchGroup(f"no group {self['group']}")
        if not self["send"]:
            context.out.write(quarterlyLog(context.store, group.prefix, self.quarter).csv)
            return 0
        fromAddress = _fromAddress(context)
        now = _now()
        serviceName = context.config["server.name"]
        if self.quarter.end > now:
            # Not over: a partial log, which does not count as the quarter's.
            made = quarterlyLog(context.store, group.prefix, self.quarter)
            mailID = context.store.queueMail(
                group.contact,
                quarterlySubject(group.prefix, self.quarter),
                made.message(fromAddress, group.contact, serviceName, now),
                f"quarterly {group.prefix} {self.quarter} (partial)",
                now,
            )
            context.out.write(f"The quarter {self.quarter} is not over: this log is partial.\n")
        else:
            queued = queueLog(context.store, group, self.quarter, fromAddress, serviceName, now, again=True)
            assert queued is not None
            mailID = queued
        context.out.write(f"Queued the call log of group {group.prefix} for {self.quarter} to {group.contact}.\n")
        _sendNow(context, [mailID])
        return 0


class ReportCommands(_Options):
    synopsis = ""
    subCommands = [["quarterly", None, ReportQuarterly, "Write or mail a group's quarterly call log."]]


class Notify(_Command):
    synopsis = "--subject SUBJECT --body-file FILE [--group PREFIX] [--dry-run]"
    optParameters = [
        ["subject", "s", None, "The subject of the message."],
        ["body-file", "b", None, "A UTF-8 text file: the message (write it in English and French)."],
        ["group", "g", None, "Only this group's technical contact."],
    ]
    optFlags = [["dry-run", "n", "Say who would get it, queue nothing."]]
    longdesc = (
        "Mail service information (announcements, maintenance windows) to every group's technical contact, or one "
        "group's, through the outbox: one message per address, sent at once; what fails is retried by the service."
    )

    def postOptions(self) -> None:
        subject = self["subject"]
        if subject is None or self["body-file"] is None:
            raise usage.UsageError("--subject and --body-file are required")
        if not subject.strip() or len(subject) > 200 or any(c in subject for c in "\r\n"):
            raise usage.UsageError("--subject: expected one line of 1 to 200 characters")
        if self["group"] is not None:
            self["group"] = _usage(checkPrefix, self["group"])
        try:
            with open(self["body-file"], encoding="utf-8") as f:
                self.body = f.read()
        except OSError as e:
            raise usage.UsageError(f"--body-file {self['body-file']!r}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise usage.UsageError(f"--body-file {self['body-file']!r}: not UTF-8 text") from None
        if not self.body.strip():
            raise usage.UsageError(f"--body-file {self['body-file']!r} is empty")

    def run(self, context: _Context) -> int:
        if self["group"] is not None:
            group = context.store.getGroup(self["group"])
            if group is None:
                raise NoSuchGroup(f"no group {self['group']}")
            groups = [group]
        else:
            groups = context.store.listGroups()
        contacts: dict[str, list[str]] = {}
        for group in groups:
            contacts.setdefault(group.contact.lower(), []).append(group.prefix)
        if self["dry-run"]:
            context.out.write(f"Would queue {len(contacts)} messages:\n")
            _table(context.out, ["CONTACT", "GROUPS"], [[c, ", ".join(p)] for c, p in contacts.items()])
            return 0
        if not contacts:
            context.out.write("No technical contact: nothing queued.\n")
            return 0
        fromAddress = _fromAddress(context)
        now = _now()
        queued = []
        for contact, prefixes in contacts.items():
            body = noticeBody(self.body, prefixes, context.config["server.name"])
            message = compose(fromAddress, contact, self["subject"], body, now)
            queued.append(context.store.queueMail(contact, self["subject"], message, f"notice: {self['subject']}", now))
        context.out.write(f"Queued {len(queued)} messages.\n")
        _sendNow(context, queued)
        return 0


# -- the servers of a cluster ------------------------------------------------------


class NodeStatus(_Command):
    synopsis = ""

    def run(self, context: _Context) -> int:
        nodes = context.store.listNodes()
        if not nodes:
            context.out.write("No server has announced itself in this store.\n")
            return 0
        now = _now()
        rows = []
        for node in nodes:
            age = max(0, round(now - node.lastSeen))
            role = node.role
            if role != "stopped" and age > node.silentAfter(3, context.config["cluster.announce_interval"]):
                role = f"{role}? (silent)"
            state = "draining" if node.draining else ("drain asked" if node.drainRequested else "serving")
            if node.role == "stopped":
                state = "-"
            rows.append(
                [
                    node.name,
                    role,
                    node.address or "-",
                    str(node.calls),
                    "yes" if node.holdsWork else "no",
                    state,
                    f"{age} s ago",
                    node.version,
                ]
            )
        _table(
            context.out,
            ["SERVER", "ROLE", "ADDRESS", "CALLS", "SHARED WORK", "STATE", "LAST ANNOUNCED", "VERSION"],
            rows,
        )
        return 0


class _NodeCommand(_Command):
    synopsis = "[SERVER]"

    def parseArgs(self, *args: str) -> None:
        (name,) = _arguments(args, ["SERVER"], optional=1)
        self["server"] = name

    def server(self, context: _Context) -> str:
        return str(self["server"] or context.config["server.name"])


class NodeDrain(_NodeCommand):
    synopsis = "[SERVER] [--timeout SECONDS | --no-wait]"
    longdesc = (
        "Ask SERVER (default: this configuration's server.name) to drain: it reports not-ready on /health, "
        "so that keepalived moves the service address to another server; its calls in progress go on. "
        "Then wait until it no longer holds the address and has no call in progress (idle)."
    )
    optFlags = [["no-wait", None, "Ask, and do not wait."]]
    optParameters = [["timeout", "t", "3600", "Seconds to wait for the server to be idle."]]

    def postOptions(self) -> None:
        try:
            self["timeout"] = float(self["timeout"])
            if not 0 < self["timeout"] <= 86400:
                raise ValueError
        except ValueError:
            raise usage.UsageError(f"--timeout {self['timeout']!r}: expected seconds, up to 86400") from None

    def run(self, context: _Context) -> int:
        name = self.server(context)
        context.store.requestDrain(name, True)
        context.out.write(f"Asked {name} to drain.\n")
        if self["no-wait"]:
            return 0
        deadline = time.monotonic() + self["timeout"]
        said = None
        while True:
            node = context.store.getNode(name)
            if node is None:
                raise NoSuchNode(f"server {name} is no longer in this store")
            # Idle: no longer holding the address (when there is one to move) and no call.
            holding = node.role == "active" and node.address != ""
            if node.role == "stopped" or (node.draining and not holding and node.calls == 0):
                context.out.write(f"{name} is idle: {node.role}, no call in progress.\n")
                return 0
            now = f"{name}: {'draining' if node.draining else 'not draining yet'}, {node.role}, {node.calls} calls in progress"
            if now != said:
                context.out.write(now + "\n")
                context.out.flush()
                said = now
            if time.monotonic() >= deadline:
                context.out.write(f"{name} is not idle after {self['timeout']:g} s; it keeps draining.\n")
                return 1
            time.sleep(0.5)


class NodeResume(_NodeCommand):
    longdesc = "Ask SERVER (default: this configuration's server.name) to serve again (its /health reports ready)."

    def run(self, context: _Context) -> int:
        name = self.server(context)
        context.store.requestDrain(name, False)
        context.out.write(f"Asked {name} to serve again.\n")
        return 0


class NodeForget(_NodeCommand):
    longdesc = "Remove SERVER's announcements (a server taken out of the cluster for good)."

    def run(self, context: _Context) -> int:
        name = self.server(context)
        context.store.forgetNode(name)
        context.out.write(f"Forgot server {name}.\n")
        return 0


class NodeCommands(_Options):
    synopsis = ""
    subCommands = [
        ["status", None, NodeStatus, "Show each server of the cluster: role, calls, last announcement."],
        ["drain", None, NodeDrain, "Move the service address away from a server, and wait until it is idle."],
        ["resume", None, NodeResume, "Let a drained server serve again."],
        ["forget", None, NodeForget, "Remove a server's announcements."],
    ]


class _TokenNameCommand(_Command):
    synopsis = "NAME"

    def parseArgs(self, *args: str) -> None:
        (name,) = _arguments(args, ["NAME"])
        assert name is not None
        self["name"] = _usage(checkTokenName, name)


class TokenAdd(_TokenNameCommand):
    longdesc = (
        "Make a bearer token of the admin API named NAME (who or what uses it) and show it once: the store keeps "
        "only its SHA-256 digest. The running service accepts it within a few seconds."
    )

    def run(self, context: _Context) -> int:
        token = generateToken()
        context.store.addAdminToken(self["name"], tokenDigest(token).hex(), _now())
        context.out.write(f"Added admin API token {self['name']}.\n")
        context.out.write(f"Token: {token}\n")
        context.out.write("Write it down now: it is not stored and will not be shown again.\n")
        context.out.write("Send it in the admin API's requests as: Authorization: Bearer TOKEN\n")
        return 0


class TokenList(_Command):
    def run(self, context: _Context) -> int:
        tokens = context.store.listAdminTokens()
        rows = [[t.name, _date(t.createdAt), "never" if t.lastUsed is None else _date(t.lastUsed)] for t in tokens]
        _table(context.out, ["NAME", "CREATED", "LAST USED"], rows)
        return 0


class TokenDel(_TokenNameCommand):
    longdesc = "Delete the admin API token NAME: the running service refuses it within a few seconds."

    def run(self, context: _Context) -> int:
        context.store.deleteAdminToken(self["name"])
        context.out.write(f"Deleted admin API token {self['name']}.\n")
        return 0


class TokenCommands(_Options):
    synopsis = ""
    subCommands = [
        ["add", None, TokenAdd, "Make an admin API token, shown once; the store keeps its digest."],
        ["list", None, TokenList, "List the admin API tokens of the store (not those of web.admin_tokens)."],
        ["del", None, TokenDel, "Delete an admin API token."],
    ]


class AdminOptions(_Options):
    """
    The command line of C{aetasip-admin}.
    """

    synopsis = f"Usage: {PROGRAM} [--config FILE] [--store URL] [--socket PATH]"
    longdesc = (
        "Provision accounts and groups, and look at registrations in the store of the configuration file (--config). "
        "Exit status: 0 on success, 1 when the store refuses (no such account, number taken, database "
        "unavailable), 2 for bad usage or configuration."
    )
    optParameters = [
        ["config", "c", None, "The service's configuration file (default: the embedded defaults)."],
        ["store", "s", None, "The store URL, instead of the configuration's store.url."],
        ["socket", None, None, "The running service's control socket, instead of web.control_socket."],
    ]
    subCommands = [
        ["account", None, AccountCommands, "Add, list, show, change and delete accounts."],
        ["location", None, LocationCommands, "Show and remove registrations."],
        ["call", None, CallCommands, "List and release the calls in progress (running service)."],
        ["relay", None, RelayCommands, "Show and release relay sessions (running service)."],
        ["testline", None, TestLineCommands, "Show and release test-line sessions (running service)."],
        ["group", None, GroupCommands, "Provision groups of premium numbers and allocate their numbers."],
        ["cdr", None, CDRCommands, "List and export call records."],
        ["report", None, ReportCommands, "Quarterly call logs."],
        ["notify", None, Notify, "Mail service information to the groups' technical contacts."],
        ["node", None, NodeCommands, "The servers of a cluster: status, drain, resume."],
        ["token", None, TokenCommands, "Bearer tokens of the admin API, kept in the store as digests."],
    ]


def _commandName(options: usage.Options) -> str:
    words = [PROGRAM]
    while True:
        subCommand = getattr(options, "subCommand", None)
        subOptions = getattr(options, "subOptions", None)
        if not isinstance(subCommand, str) or not isinstance(subOptions, usage.Options):
            return " ".join(words)
        words.append(subCommand)
        options = subOptions


def _leaf(options: usage.Options) -> Any:
    """The command given: the innermost sub-command's options."""
    while isinstance(getattr(options, "subOptions", None), usage.Options):
        options = options.subOptions
    return options


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """
    Run C{aetasip-admin}.

    @param argv: the arguments, without the program name; C{sys.argv[1:]} by default.
    @param stdout: where results go; C{sys.stdout} by default.
    @param stderr: where errors go, one line each; C{sys.stderr} by default.
    @return: the exit status: 0 success, 1 refused by the store or the running service (or it is not
        running), 2 bad usage or configuration.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    options = AdminOptions()
    try:
        options.parseOptions(args)
    except _Help as e:
        text = str(e.args[0])
        out.write(text if text.endswith("\n") else text + "\n")
        return 0
    except usage.UsageError as e:
        name = _commandName(options)
        err.write(f"{name}: {e} (see: {name} --help)\n")
        return 2
    try:
        overrides: dict[str, Any] = {} if options["store"] is None else {"store.url": options["store"]}
        config = load(options["config"], overrides)
    except ConfigError as e:
        err.write(f"{PROGRAM}: {e}\n")
        return 2
    command = _leaf(options)
    service = None
    if command.usesService:
        path = options["socket"] if options["socket"] is not None else config["web.control_socket"]
        if not path:
            err.write(
                f"{PROGRAM}: {NOT_RUNNING}: web.control_socket is None in the configuration; give --socket PATH\n"
            )
            return 1
        service = ControlClient(path)
    store = Store(config["store.url"])
    try:
        if service is None:
            store.open()
        return options.run(_Context(store, Provisioning(store, config["sip.realm"]), config, out, service))
    except (ServiceUnreachable, ServiceRefused) as e:
        err.write(f"{PROGRAM}: {e}\n")
        return 1
    except StoreError as e:
        err.write(f"{PROGRAM}: {e}\n")
        return 1
    except SQLAlchemyError as e:
        problem = str(getattr(e, "orig", None) or e).splitlines()[0]
        err.write(f"{PROGRAM}: store {store.describe()} unavailable: {problem}\n")
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
