"""
C{aetasip-admin testline}: show and release test-line sessions (running service).
"""

from __future__ import annotations

from twisted.python import usage

from aetasip.admin.base import BaseOptions, Context, takeArguments, writeTable
from aetasip.admin.running import ListCommand, ServiceCommand, checkCallID, formatDuration, writeJSON
from aetasip.web.controlclient import segment


class TestLineStatus(ListCommand):
    synopsis = "[--json]"

    def run(self, context: Context) -> int:
        answer = context.running().request("GET", "testline/sessions")
        sessions = answer["sessions"]
        if self["json"]:
            writeJSON(context.out, sessions)
            return 0
        if not answer["running"]:
            context.out.write("The test line is off (testline.enabled).\n")
            return 0
        if not sessions:
            context.out.write("No test-line sessions.\n")
            return 0
        writeTable(
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
                    formatDuration(s["duration"]) if s["answeredAt"] else "",
                    str(s["packetsSent"]),
                    str(s["packetsReceived"]),
                    s["mediaTo"] + ("" if s["latched"] else " (from the SDP)"),
                ]
                for s in sessions
            ],
        )
        return 0


class TestLineRelease(ServiceCommand):
    synopsis = "--all | CALL-ID"
    optFlags = [["all", "a", "Release every session of the test lines."]]
    longdesc = "End test-line sessions: the caller gets a BYE; the records say 'operator release'."

    def parseArgs(self, *args: str) -> None:
        (callID,) = takeArguments(args, ["CALL-ID"], optional=1)
        self["call-id"] = None if callID is None else checkCallID(callID)

    def postOptions(self) -> None:
        if self["all"] == (self["call-id"] is not None):
            raise usage.UsageError("give --all or a CALL-ID (one of them)")

    def run(self, context: Context) -> int:
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


class TestLineCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["status", None, TestLineStatus, "List the test-line sessions in progress."],
        ["release", None, TestLineRelease, "End one test-line session, or all (BYE sent)."],
    ]
