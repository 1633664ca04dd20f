"""
The C{aetasip-admin} command line: its options and sub-commands, and L{main}.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from sqlalchemy.exc import SQLAlchemyError
from twisted.python import usage

from aetasip.admin.account import AccountCommands
from aetasip.admin.base import PROGRAM, BaseOptions, Context, Help
from aetasip.admin.call import CallCommands
from aetasip.admin.cdr import CDRCommands
from aetasip.admin.group import GroupCommands
from aetasip.admin.location import LocationCommands
from aetasip.admin.mail import Notify, ReportCommands
from aetasip.admin.node import NodeCommands
from aetasip.admin.relay import RelayCommands
from aetasip.admin.testline import TestLineCommands
from aetasip.admin.token import TokenCommands
from aetasip.config import ConfigError, load
from aetasip.store import (
    Provisioning,
    Store,
    StoreError,
)
from aetasip.web.controlclient import (
    NOT_RUNNING,
    ControlClient,
    ServiceRefused,
    ServiceUnreachable,
)


class AdminOptions(BaseOptions):
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
    except Help as e:
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
    noService = None
    if command.usesService or command.prefersService:
        path = options["socket"] if options["socket"] is not None else config["web.control_socket"]
        if path:
            service = ControlClient(path)
        else:
            noService = f"{NOT_RUNNING}: web.control_socket is None in the configuration; give --socket PATH"
            if command.usesService:
                err.write(f"{PROGRAM}: {noService}\n")
                return 1
    store = Store(config["store.url"])
    try:
        if not (command.usesService or command.prefersService):
            store.open()
        context = Context(store, Provisioning(store, config["sip.realm"]), config, out, service, err, noService)
        return options.run(context)
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
