"""
C{aetasip-admin node}: the servers of a cluster (status, drain, resume, forget).
"""

from __future__ import annotations

import time

from twisted.python import usage

from aetasip.admin.base import BaseOptions, Command, Context, currentTime, takeArguments, writeTable
from aetasip.store.nodes import NoSuchNode


class NodeStatus(Command):
    synopsis = ""

    def run(self, context: Context) -> int:
        nodes = context.store.listNodes()
        if not nodes:
            context.out.write("No server has announced itself in this store.\n")
            return 0
        now = currentTime()
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
        writeTable(
            context.out,
            ["SERVER", "ROLE", "ADDRESS", "CALLS", "SHARED WORK", "STATE", "LAST ANNOUNCED", "VERSION"],
            rows,
        )
        return 0


class _NodeCommand(Command):
    synopsis = "[SERVER]"

    def parseArgs(self, *args: str) -> None:
        (name,) = takeArguments(args, ["SERVER"], optional=1)
        self["server"] = name

    def server(self, context: Context) -> str:
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

    def run(self, context: Context) -> int:
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

    def run(self, context: Context) -> int:
        name = self.server(context)
        context.store.requestDrain(name, False)
        context.out.write(f"Asked {name} to serve again.\n")
        return 0


class NodeForget(_NodeCommand):
    longdesc = "Remove SERVER's announcements (a server taken out of the cluster for good)."

    def run(self, context: Context) -> int:
        name = self.server(context)
        context.store.forgetNode(name)
        context.out.write(f"Forgot server {name}.\n")
        return 0


class NodeCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["status", None, NodeStatus, "Show each server of the cluster: role, calls, last announcement."],
        ["drain", None, NodeDrain, "Move the service address away from a server, and wait until it is idle."],
        ["resume", None, NodeResume, "Let a drained server serve again."],
        ["forget", None, NodeForget, "Remove a server's announcements."],
    ]
