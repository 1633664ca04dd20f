"""
C{aetasip-admin relay}: show and release relay sessions (running service).
"""

from __future__ import annotations

from typing import Any

from aetasip.admin.base import BaseOptions, Context, takeArguments, writeTable
from aetasip.admin.running import CallIDCommand, ListCommand, checkCallID, writeJSON
from aetasip.web.controlclient import segment


def _latched(leg: dict[str, Any]) -> str:
    return str(leg["latched"] or "(not yet)")


def _mos(stream: dict[str, Any]) -> str:
    return "" if stream["mos"] is None else f"{stream['mos']:.2f}"


class RelayShow(ListCommand):
    synopsis = "[CALL-ID] [--json]"

    def parseArgs(self, *args: str) -> None:
        (callID,) = takeArguments(args, ["CALL-ID"], optional=1)
        self["call-id"] = None if callID is None else checkCallID(callID)

    def run(self, context: Context) -> int:
        answer = context.running().request("GET", "relay/sessions")
        sessions = [s for s in answer["sessions"] if self["call-id"] in (None, s["callId"])]
        if self["json"]:
            writeJSON(context.out, sessions)
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
        writeTable(
            context.out,
            ["CALL-ID", "NODE", "LEG", "NUMBER", "LATCHED", "PKTS IN", "LOST", "JITTER MS", "MOS", "PKTS OUT",
             "DROPPED"],
            rows,
        )  # fmt: skip
        return 0


def _measured(value: Any, form: str) -> str:
    """A relay figure, or '-' when the node did not measure it (rtpengine's loss and jitter for plain RTP)."""
    return "-" if value is None else form.format(value)


class RelayRelease(CallIDCommand):
    longdesc = "Release a relayed call: BYE to both parties; its relay ports go back to the node."

    def run(self, context: Context) -> int:
        released = context.running().request("DELETE", f"relay/sessions/{segment(self['call-id'])}")["released"]
        for session in released:
            how = "its call released (BYE to both parties)" if session["call"] else "deleted on its node"
            context.out.write(f"Released relay session {session['callId']} on {session['node']}: {how}.\n")
        return 0


class RelayCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["show", None, RelayShow, "List the relay sessions (of CALL-ID): legs, latched addresses, counters."],
        ["release", None, RelayRelease, "Release a relayed call."],
    ]
