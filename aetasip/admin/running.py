"""
What the commands on the running service (C{call}, C{relay}, C{testline})
share: their base classes, Call-ID checks, JSON and time output.
"""

from __future__ import annotations

import json
from typing import TextIO

from twisted.python import usage

from aetasip.admin.base import Command, takeArguments


def checkCallID(value: str) -> str:
    """A SIP Call-ID given on the command line: one word of printable characters."""
    if not value or len(value) > 1024 or not value.isprintable() or any(c.isspace() for c in value):
        raise usage.UsageError(f"invalid CALL-ID {value!r}: expected a SIP Call-ID (printable, no spaces)")
    return value


def writeJSON(out: TextIO, value: object) -> None:
    out.write(json.dumps(value, indent=1) + "\n")


def formatClock(iso: str | None) -> str:
    """C{2026-09-01T10:00:00Z} as C{2026-09-01 10:00:00}."""
    return "" if iso is None else iso.replace("T", " ").rstrip("Z")


def formatDuration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ServiceCommand(Command):
    usesService = True


class ListCommand(ServiceCommand):
    optFlags = [["json", "j", "Write the JSON the service answered instead of a table."]]


class CallIDCommand(ServiceCommand):
    synopsis = "CALL-ID"

    def parseArgs(self, *args: str) -> None:
        (callID,) = takeArguments(args, ["CALL-ID"])
        assert callID is not None
        self["call-id"] = checkCallID(callID)
