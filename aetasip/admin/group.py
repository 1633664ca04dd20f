"""
C{aetasip-admin group}: groups of premium numbers, their options, members and
allocated numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.python import usage

from aetasip.admin.base import (
    BaseOptions,
    Command,
    Context,
    NumberCommand,
    formatDate,
    takeArguments,
    usageCheck,
    writeTable,
)
from aetasip.store import (
    MEMBER_KINDS,
    Group,
    NewPassword,
    NoSuchGroup,
    checkCount,
    checkEmail,
    checkMemberKind,
    checkNumber,
    checkPrefix,
    checkRelay,
)

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
    writeTable(out, ["NUMBER", "SIP PASSWORD"], [[new.number, new.password] for new in created])
    out.write("Write them down now: the passwords are not stored and will not be shown again.\n")


def _onOff(value: bool) -> str:
    return "on" if value else "off"


class _PrefixCommand(Command):
    """
    A command whose only argument is a group prefix.
    """

    synopsis = "PREFIX"

    def parseArgs(self, *args: str) -> None:
        (prefix,) = takeArguments(args, ["PREFIX"])
        assert prefix is not None
        self["prefix"] = usageCheck(checkPrefix, prefix)


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
            options["contact"] = usageCheck(checkEmail, self["contact"])
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

    def run(self, context: Context) -> int:
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
            self["options"]["relay"] = usageCheck(checkRelay, self["relay"])
        if not self["options"]:
            raise usage.UsageError("nothing to change: give --contact or an option such as --hunting")

    def run(self, context: Context) -> int:
        created = context.provisioning.updateGroup(self["prefix"], **self["options"])
        context.out.write(f"Updated group {self['prefix']}.\n")
        if created:
            context.out.write(f"New hunting series accounts in realm {context.provisioning.realm}:\n")
            _showCreated(context.out, created)
        return 0


class GroupList(Command):
    synopsis = ""

    def run(self, context: Context) -> int:
        found = context.store.listGroups()
        if not found:
            context.out.write("No groups.\n")
            return 0
        rows = []
        for group in found:
            options = [option for option, keyword, _help in _GROUP_FLAGS if getattr(group, keyword)]
            members = len(context.store.groupMembers(group.prefix))
            rows.append([group.prefix, group.contact, str(members), ", ".join(options) or "-"])
        writeTable(context.out, ["PREFIX", "CONTACT", "MEMBERS", "OPTIONS"], rows)
        return 0


class GroupShow(_PrefixCommand):
    def run(self, context: Context) -> int:
        group = context.store.getGroup(self["prefix"])
        if group is None:
            raise NoSuchGroup(f"no group {self['prefix']}")
        for label, value in _groupFields(group):
            context.out.write(f"{label + ':':<17}{value}\n")
        members = context.store.groupMembers(group.prefix)
        series = context.store.huntingSeries(group.prefix)
        context.out.write(f"\nMembers ({len(members)}):\n")
        if members:
            writeTable(context.out, ["NUMBER", "KIND", "NAME"], [[a.number, a.kind, a.displayName] for a in members])
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
        ("created", formatDate(group.createdAt)),
        ("updated", formatDate(group.updatedAt)),
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
        self["count"] = usageCheck(checkCount, int(count) if re.fullmatch(r"[0-9]{1,9}", count) else count)
        usageCheck(checkMemberKind, self["kind"])

    def run(self, context: Context) -> int:
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


class GroupAttach(Command):
    synopsis = "PREFIX NUMBER"

    def parseArgs(self, *args: str) -> None:
        prefix, number = takeArguments(args, ["PREFIX", "NUMBER"])
        assert prefix is not None and number is not None
        self["prefix"] = usageCheck(checkPrefix, prefix)
        self["number"] = usageCheck(checkNumber, number)

    def run(self, context: Context) -> int:
        context.provisioning.attach(self["number"], self["prefix"])
        context.out.write(f"Account {self['number']} now belongs to group {self['prefix']}.\n")
        return 0


class GroupDetach(NumberCommand):
    def run(self, context: Context) -> int:
        left = context.provisioning.detach(self["number"])
        context.out.write(
            f"Account {self['number']} left group {left}.\n"
            if left is not None
            else f"Account {self['number']} belongs to no group.\n"
        )
        return 0


class GroupDel(_PrefixCommand):
    def run(self, context: Context) -> int:
        context.provisioning.deleteGroup(self["prefix"])
        context.out.write(f"Deleted group {self['prefix']}.\n")
        return 0


class GroupCommands(BaseOptions):
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
