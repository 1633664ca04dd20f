"""
C{aetasip-admin cdr}: list and export call records.
"""

from __future__ import annotations

import attrs
from twisted.python import usage

from aetasip.admin.base import BaseOptions, Command, Context, writeTable
from aetasip.records.csvfiles import seconds, writeExport
from aetasip.records.periods import isoSeconds
from aetasip.records.query import InvalidQuery, recordQuery
from aetasip.store import StoreError


class _RecordsCommand(Command):
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
    synopsis = _RecordsCommand.synopsis + " [--limit N] [--offset N]"
    optParameters = [
        *_RecordsCommand.optParameters,
        ["limit", "l", None, "At most this many calls, the oldest first."],
        ["offset", None, None, "Skip this many calls first (with --limit: a page)."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["limit"] is not None:
            self.query = attrs.evolve(self.query, limit=_wholeNumber("--limit", self["limit"], 1))
        if self["offset"] is not None:
            self.query = attrs.evolve(self.query, offset=_wholeNumber("--offset", self["offset"], 0))

    def run(self, context: Context) -> int:
        found = context.store.callRecords(self.query)
        if not found:
            context.out.write("No call records.\n")
            return 0
        writeTable(
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


def _wholeNumber(option: str, value: str, lowest: int) -> int:
    """
    C{value} of C{option} as a whole number from C{lowest}.

    @raise usage.UsageError: for anything else.
    """
    if not value.isdigit() or not value.isascii() or len(value) > 18 or int(value) < lowest:
        raise usage.UsageError(f"invalid {option} {value!r}: expected a whole number from {lowest}")
    return int(value)


class CDRExport(_RecordsCommand):
    synopsis = _RecordsCommand.synopsis + " [--output FILE]"
    optParameters = [
        *_RecordsCommand.optParameters,
        ["output", "o", None, "Write the CSV to FILE, not standard output."],
    ]

    def run(self, context: Context) -> int:
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


class CDRCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["list", None, CDRList, "List call records."],
        ["export", None, CDRExport, "Write call records as CSV (header row, UTC ISO 8601 times, seconds)."],
    ]
