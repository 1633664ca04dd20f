"""
C{aetasip-admin location}: the registrations, live from the running service
(the store's copy when it is not running), and removing one from it.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.python import usage

from aetasip.admin.base import (
    PROGRAM,
    BaseOptions,
    Command,
    Context,
    currentTime,
    formatAddress,
    takeArguments,
    usageCheck,
    writeTable,
)
from aetasip.location import Binding
from aetasip.store import checkNumber
from aetasip.web.controlclient import ServiceNotRunning


class LocationShow(Command):
    synopsis = "[NUMBER]"
    prefersService = True
    longdesc = (
        "Show the current registrations, live from the running service (through its control socket). When the "
        "service is not running, show those it last saved in the store, and say so on standard error."
    )

    def parseArgs(self, *args: str) -> None:
        (number,) = takeArguments(args, ["NUMBER"], optional=1)
        self["number"] = None if number is None else usageCheck(checkNumber, number)

    def run(self, context: Context) -> int:
        number = self["number"]
        rows = self._live(context, number)
        if rows is None:
            rows = self._stored(context, number)
        if not rows:
            context.out.write("No registrations.\n" if number is None else f"No registrations for {number}.\n")
            return 0
        writeTable(context.out, ["NUMBER", "CONTACT", "SOURCE", "USER AGENT", "EXPIRES"], rows)
        return 0

    def _live(self, context: Context, number: str | None) -> list[list[str]] | None:
        """The running service's registrations; C{None} when it is not running."""
        if context.service is not None:
            try:
                answer = context.service.request("GET", "locations", None if number is None else {"number": number})
            except ServiceNotRunning as e:
                context = attrs.evolve(context, noService=str(e))
            else:
                return [_liveRow(binding) for binding in answer["locations"]]
        context.err.write(
            f"{PROGRAM}: {context.noService}; showing the registrations the service last saved in the store "
            f"{context.store.describe()}\n"
        )
        return None

    def _stored(self, context: Context, number: str | None) -> list[list[str]]:
        context.store.open()
        now = currentTime()
        found = context.store.allBindings(now) if number is None else context.store.bindingsFor(number, now)
        return [_row(b, now) for b in found]


def _row(binding: Binding, now: float) -> list[str]:
    return [
        binding.aor,
        binding.contact,
        f"{formatAddress(*binding.source)}/{binding.transport}",
        binding.userAgent,
        f"in {max(0, round(binding.expiresAt - now))} s",
    ]


def _liveRow(binding: dict[str, Any]) -> list[str]:
    """A registration as the admin API shows it (L{aetasip.operations.bindingJSON}), as L{_row} does."""
    return [
        binding["number"],
        binding["contact"],
        f"{binding['source']}/{binding['transport']}",
        binding["userAgent"] or "",
        f"in {binding['expiresIn']} s",
    ]


class LocationRemove(Command):
    synopsis = "NUMBER CONTACT"
    usesService = True
    longdesc = (
        "Remove a registration from the running service: calls no longer reach that contact at once, and the "
        "binding is deleted from the store within a second. CONTACT is the contact URI as 'location show' lists it."
    )

    def parseArgs(self, *args: str) -> None:
        number, contact = takeArguments(args, ["NUMBER", "CONTACT"])
        assert number is not None and contact is not None
        self["number"] = usageCheck(checkNumber, number)
        if not contact.strip() or not contact.isprintable():
            raise usage.UsageError(f"invalid CONTACT {contact!r}: expected the contact URI 'location show' lists")
        self["contact"] = contact

    def run(self, context: Context) -> int:
        answer = context.running().request("DELETE", f"locations/{self['number']}", {"contact": self["contact"]})
        removed = answer["removed"]
        context.out.write(f"Removed the registration of {removed['number']} at {removed['contact']}.\n")
        return 0


class LocationCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["show", None, LocationShow, "Show the current registrations (of NUMBER)."],
        ["remove", None, LocationRemove, "Remove a registration from the running service."],
    ]
