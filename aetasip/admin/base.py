"""
What every C{aetasip-admin} command shares: the checks of its arguments, its output
(tables, dates), the options classes commands derive from, and what a command works
with (L{Context}).
"""

from __future__ import annotations

import getopt
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import ParamSpec, TextIO, TypeVar

import attrs
from twisted.python import usage

from aetasip import __version__
from aetasip.config import Config
from aetasip.store import (
    InvalidValue,
    Provisioning,
    Store,
    checkNumber,
)
from aetasip.web.controlclient import ControlClient

PROGRAM = "aetasip-admin"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def currentTime() -> float:
    """
    The time now, as C{aetasip.admin._now()} gives it: the one clock of every
    command, which a test may replace on the package.
    """
    import aetasip.admin

    return aetasip.admin._now()


# -- checks of arguments -------------------------------------------------------


def usageCheck(check: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """
    Check an argument with one of the store's rules (L{aetasip.store.models}):
    a value it refuses is bad usage (exit status 2), refused before the store
    is opened.
    """
    try:
        return check(*args, **kwargs)
    except InvalidValue as e:
        raise usage.UsageError(str(e)) from None


def takeArguments(given: Sequence[str], names: Sequence[str], optional: int = 0) -> list[str | None]:
    """
    C{given}, checked against the positional C{names}, the last C{optional}
    of which may be left out (they are C{None} then).
    """
    if len(given) < len(names) - optional:
        raise usage.UsageError(f"missing {names[len(given)]}")
    if len(given) > len(names):
        raise usage.UsageError(f"unexpected argument {given[len(names)]!r}")
    return [*given, *[None] * (len(names) - len(given))]


# -- output ---------------------------------------------------------------------


def writeTable(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def formatDate(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def formatAddress(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def showPassword(out: TextIO, password: str, what: str = "SIP password") -> None:
    out.write(f"{what}: {password}\n")
    out.write("Write it down now: it is not stored and will not be shown again.\n")


# -- commands ---------------------------------------------------------------------


class Help(Exception):
    """
    C{--help} or C{--version} was given; the argument is the text to show.
    """


@attrs.frozen
class Context:
    """
    What a command works with: commands read from C{store} and make their
    changes through C{provisioning}; those that act on the running service
    talk to it through C{service} (its control socket), and the store is
    not opened for them.
    """

    store: Store
    provisioning: Provisioning
    config: Config
    out: TextIO
    service: ControlClient | None = None
    err: TextIO = attrs.field(factory=lambda: sys.stderr)
    #: Why C{service} is C{None} for a command that prefers the running service.
    noService: str | None = None

    def running(self) -> ControlClient:
        assert self.service is not None
        return self.service


class BaseOptions(usage.Options):
    longdesc = ""
    #: Whether the command acts on the running service (through its control socket), not on the store.
    usesService = False
    #: Whether the command reads the running service, and the store only when it is not running.
    prefersService = False

    def opt_help(self) -> None:
        """
        Display this help and exit.
        """
        raise Help(str(self))

    opt_h = opt_help

    def opt_version(self) -> None:
        """
        Display the version of aetasip and exit.
        """
        raise Help(f"{PROGRAM} (aetasip) {__version__}\n")

    def getSynopsis(self) -> str:
        # An empty synopsis of a parent command would leave a double space.
        return " ".join(super().getSynopsis().split())

    def postOptions(self) -> None:
        subCommands = getattr(self, "subCommands", None)
        if subCommands and not hasattr(self, "subOptions"):
            raise usage.UsageError("missing command: " + ", ".join(command[0] for command in subCommands))

    def run(self, context: Context) -> int:
        """
        Do the command; a command with sub-commands runs the one given.

        @return: the exit status.
        """
        subOptions = getattr(self, "subOptions", None)
        if not isinstance(subOptions, BaseOptions):
            raise usage.UsageError("missing command")
        return subOptions.run(context)


class Command(BaseOptions):
    """
    A command that takes no sub-command: its options may also follow its
    arguments (C{account add 45675001 --kind test}), and C{--} ends them.
    """

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            found, arguments = getopt.gnu_getopt(list(options or []), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for option, value in found:
            if option.startswith("--"):
                ordered.append(f"{option}={value}" if option[2:] + "=" in self.longOpt else option)
            else:
                ordered.extend([option, value] if option[1] + ":" in self.shortOpt else [option])
        super().parseOptions([*ordered, "--", *arguments])


class NumberCommand(Command):
    """
    A command whose only argument is a number.
    """

    synopsis = "NUMBER"

    def parseArgs(self, *args: str) -> None:
        (number,) = takeArguments(args, ["NUMBER"])
        assert number is not None
        self["number"] = usageCheck(checkNumber, number)
