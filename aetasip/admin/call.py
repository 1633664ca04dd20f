"""
C{aetasip-admin call}: list and release the calls in progress (running service).
"""

from __future__ import annotations

from aetasip.admin.base import BaseOptions, Context, writeTable
from aetasip.admin.running import CallIDCommand, ListCommand, formatClock, formatDuration, writeJSON
from aetasip.web.controlclient import segment


class CallList(ListCommand):
    synopsis = "[--json]"

    def run(self, context: Context) -> int:
        calls = context.running().request("GET", "calls")["calls"]
        if self["json"]:
            writeJSON(context.out, calls)
            return 0
        if not calls:
            context.out.write("No calls in progress.\n")
            return 0
        writeTable(
            context.out,
            ["CALL-ID", "CALLER", "DIALLED", "CALLEE", "STATE", "STARTED (UTC)", "DURATION", "RELAY"],
            [
                [
                    c["callId"],
                    c["caller"],
                    c["dialled"],
                    c["callee"] or "",
                    c["state"],
                    formatClock(c["startedAt"]),
                    formatDuration(c["duration"]) if c["answeredAt"] else "",
                    c["relayNode"] or "",
                ]
                for c in calls
            ],
        )
        return 0


class CallRelease(CallIDCommand):
    longdesc = (
        "End a call in progress from the server: an answered call gets a BYE on both legs, one being set up is "
        "cancelled (the caller gets 487). Its record says 'operator release'."
    )

    def run(self, context: Context) -> int:
        released = context.running().request("DELETE", f"calls/{segment(self['call-id'])}")["released"]
        for call in released:
            how = "BYE sent to both parties" if call["answeredAt"] else "cancelled"
            context.out.write(f"Released call {call['callId']} ({call['caller']} -> {call['dialled']}): {how}.\n")
        return 0


class CallCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["list", None, CallList, "List the calls in progress."],
        ["release", None, CallRelease, "End a call in progress (BYE to both parties)."],
    ]
