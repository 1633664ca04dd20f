"""
C{aetasip-admin token}: the admin API's bearer tokens, kept in the store as digests.
"""

from __future__ import annotations

from aetasip.admin.base import (
    BaseOptions,
    Command,
    Context,
    currentTime,
    formatDate,
    takeArguments,
    usageCheck,
    writeTable,
)
from aetasip.store.tokens import checkTokenName
from aetasip.web.settings import generateToken, tokenDigest


class _TokenNameCommand(Command):
    synopsis = "NAME"

    def parseArgs(self, *args: str) -> None:
        (name,) = takeArguments(args, ["NAME"])
        assert name is not None
        self["name"] = usageCheck(checkTokenName, name)


class TokenAdd(_TokenNameCommand):
    longdesc = (
        "Make a bearer token of the admin API named NAME (who or what uses it) and show it once: the store keeps "
        "only its SHA-256 digest. The running service accepts it within a few seconds."
    )

    def run(self, context: Context) -> int:
        token = generateToken()
        context.store.addAdminToken(self["name"], tokenDigest(token).hex(), currentTime())
        context.out.write(f"Added admin API token {self['name']}.\n")
        context.out.write(f"Token: {token}\n")
        context.out.write("Write it down now: it is not stored and will not be shown again.\n")
        context.out.write("Send it in the admin API's requests as: Authorization: Bearer TOKEN\n")
        return 0


class TokenList(Command):
    def run(self, context: Context) -> int:
        tokens = context.store.listAdminTokens()
        rows = [
            [t.name, formatDate(t.createdAt), "never" if t.lastUsed is None else formatDate(t.lastUsed)] for t in tokens
        ]
        writeTable(context.out, ["NAME", "CREATED", "LAST USED"], rows)
        return 0


class TokenDel(_TokenNameCommand):
    longdesc = "Delete the admin API token NAME: the running service refuses it within a few seconds."

    def run(self, context: Context) -> int:
        context.store.deleteAdminToken(self["name"])
        context.out.write(f"Deleted admin API token {self['name']}.\n")
        return 0


class TokenCommands(BaseOptions):
    synopsis = ""
    subCommands = [
        ["add", None, TokenAdd, "Make an admin API token, shown once; the store keeps its digest."],
        ["list", None, TokenList, "List the admin API tokens of the store (not those of web.admin_tokens)."],
        ["del", None, TokenDel, "Delete an admin API token."],
    ]
