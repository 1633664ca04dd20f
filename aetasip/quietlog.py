"""
twistd's log without Twisted's line per socket.

Twisted's ports log "SIPDatagramProtocol starting on 5060" when they
listen and "(UDP Port 5060 Closed)" when they close, and factories that
are C{noisy} log "Starting factory ..." and "Stopping factory ...": with
a port per address and transport, per STUN socket and per relay or
test-line session, that is a log that says little. aetasip's services
each log one line when they start (what they listen on) and one when
they stop, so these lines are dropped.

The filter goes in front of the observer twistd would have used
(stdout, C{--logfile} with its rotation on SIGUSR1, or C{--syslog}), made
here from twistd's options with public API as twistd makes its own,
given to twistd as the application's L{ILogObserver} component (what a
C{.tac} file does with C{application.setComponent}): see
L{aetasip.tap.AetasipService.setServiceParent}. A C{--logger} on
twistd's command line still wins.
"""

from __future__ import annotations

import re
import signal
import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogEvent,
    PredicateResult,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile
from zope.interface import provider

# The legacy twisted.python.log lines of twisted.internet.{tcp,udp,unix}'s
# ports, and of a noisy datagram protocol.
_LEGACY_CHATTER = re.compile(
    r"^(?:"
    r".+ starting on .+"  # "SIPDatagramProtocol starting on 5060", "Site starting on '/run/x.sock'"
    r"|\((?:(?:UDP|TCP|UNIX|SSL|TLS) )?Port .+ Closed\)"  # "(UDP Port 5060 Closed)", "(Port '/x' Closed)"
    r"|(?:Starting|Stopping) protocol .+"  # "Starting protocol <...>"
    r")$",
    re.DOTALL,
)

# The twisted.logger lines of a noisy factory (twisted.internet.protocol).
_FACTORY_CHATTER = ("Starting factory {factory!r}", "Stopping factory {factory!r}")


@provider(ILogFilterPredicate)
def socketChatter(event: LogEvent) -> PredicateResult:
    """
    A predicate for L{FilteringLogObserver}: C{no} for Twisted's own line
    about a port that starts or closes or a factory or protocol that
    starts or stops, C{maybe} for every other event.
    """
    namespace = event.get("log_namespace", "")
    if namespace.startswith("twisted.") and event.get("log_format") in _FACTORY_CHATTER:
        return PredicateResult.no
    if namespace != "log_legacy" or event.get("isError"):
        return PredicateResult.maybe
    text = event.get("log_text")
    if text is None:
        message = event.get("message")
        if not message:
            return PredicateResult.maybe
        text = " ".join(str(part) for part in message)
    return PredicateResult.no if _LEGACY_CHATTER.match(text) else PredicateResult.maybe


def quiet(observer: Any) -> ILogObserver:
    """
    C{observer} (a L{twisted.logger} observer or a legacy
    L{twisted.python.log} one) without Twisted's per-socket lines.
    """
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)
    return FilteringLogObserver(observer, [socketChatter])


def twistdObserver(serverOptions: Any) -> ILogObserver:
    """
    The observer twistd makes from its own options, made L{quiet}: to
    syslog with C{--syslog} (and C{--prefix}); else to standard output
    with C{-n} and no C{--logfile} or C{--logfile=-}; else to the file of
    C{--logfile} (C{twistd.log} by default), which SIGUSR1 rotates.

    Built from public API (L{LogFile}, L{textFileLogObserver},
    L{SyslogObserver}) as twistd builds its own.

    @param serverOptions: twistd's parsed options (its C{ServerOptions}).
    @raise SystemExit: for a daemon asked to log to standard output, as
        twistd does.
    """
    if serverOptions.get("syslog"):
        from twisted.python.syslog import SyslogObserver

        return quiet(SyslogObserver(serverOptions.get("prefix", "")).emit)
    path = serverOptions.get("logfile") or ""
    nodaemon = serverOptions.get("nodaemon", False)
    if path == "-" and not nodaemon:
        raise SystemExit("Daemons cannot log to stdout, exiting!")
    if path == "-" or (nodaemon and not path):
        return quiet(textFileLogObserver(sys.stdout))
    logFile = LogFile.fromFullPath(path or "twistd.log")
    rotateOnSIGUSR1(logFile)
    return quiet(textFileLogObserver(logFile))


def rotateOnSIGUSR1(logFile: LogFile) -> None:
    """
    Rotate C{logFile} on SIGUSR1 (logrotate's C{postrotate}), as twistd
    does, unless something else already handles that signal.
    """
    if signal.getsignal(signal.SIGUSR1):
        return

    def rotate(number: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(logFile.rotate)  # type: ignore[attr-defined]

    signal.signal(signal.SIGUSR1, rotate)
