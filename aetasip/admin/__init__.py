"""
C{aetasip-admin}: provision accounts, look at registrations and call
records in the store, mail quarterly call logs and service information,
and see and end calls, relay and test-line sessions and registrations in
the running service (through its control socket, C{web.control_socket}).

    aetasip-admin [--config FILE] [--store URL] account add NUMBER [--kind K] [--password P] [--name N] [--email E]
    aetasip-admin account list [--kind K] [--csv]
    aetasip-admin account show NUMBER
    aetasip-admin account update NUMBER [--kind K] [--name N] [--email E] [--relay auto|always|never|inherit]
    aetasip-admin account passwd NUMBER [--password P]
    aetasip-admin account portal-passwd NUMBER [--password P | --remove]
    aetasip-admin account del NUMBER
    aetasip-admin location show [NUMBER]                         (running service, else the store)
    aetasip-admin location remove NUMBER CONTACT                  (running service)
    aetasip-admin call list [--json] | call release CALL-ID      (running service)
    aetasip-admin relay show [CALL-ID] [--json] | relay release CALL-ID          (running service)
    aetasip-admin testline status [--json] | testline release (--all | CALL-ID)  (running service)
    aetasip-admin group add PREFIX --contact EMAIL [--incoming-block] [--outgoing-block] [--hunting]
                                   [--quarterly-log] [--no-self-care]
    aetasip-admin group list
    aetasip-admin group show PREFIX
    aetasip-admin group set PREFIX [--contact EMAIL] [--[no-]incoming-block] [--[no-]outgoing-block]
                                   [--[no-]hunting] [--[no-]quarterly-log] [--[no-]self-care]
                                   [--relay auto|always|never|inherit]
    aetasip-admin group allocate PREFIX --count N [--kind premium|escoopfone]
    aetasip-admin group attach PREFIX NUMBER
    aetasip-admin group detach NUMBER
    aetasip-admin group del PREFIX
    aetasip-admin cdr list [--number N | --group PREFIX] [--from T --to T | --quarter 2026Q3] [--answered-only]
                           [--limit N] [--offset N]
    aetasip-admin cdr export [same filters] [--output FILE]
    aetasip-admin report quarterly --group PREFIX --quarter 2026Q1 [--send]
    aetasip-admin notify --subject S --body-file FILE [--group PREFIX] [--dry-run]

It uses the store, realm and control socket of the service's configuration
file (C{--store URL}, C{--socket PATH} override them). Without
C{--password}, a strong password is generated and printed once: only its
digests are stored; C{group allocate} likewise prints the password of each
new number once. Exit status: 0 on success, 1 when the store refuses
(no such account, number taken, database unavailable), 2 for bad usage or
configuration; the reason is one line on standard error. A command on the
running service when it cannot be reached exits 1 with "the service is not
running or web.control_socket is off: ...". C{location show} shows the
running service's registrations, or when it is not running those it last
saved in the store, saying so on standard error.

One module per command group (L{account}, L{location}, L{group}, L{cdr},
L{call}, L{relay}, L{testline}, L{mail} for C{report} and C{notify},
L{node}, L{token}); L{base} and L{running} hold what they share, L{cli}
the command line and L{main}.
"""

from __future__ import annotations

import time

from aetasip.admin.cli import main
from aetasip.store import MAX_ALLOCATION, PASSWORD_LENGTH, generatePassword

__all__ = ["MAX_ALLOCATION", "PASSWORD_LENGTH", "generatePassword", "main"]


def _now() -> float:
    """The time now, for every command (L{aetasip.admin.base.currentTime})."""
    return time.time()
