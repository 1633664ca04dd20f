"""
The C{calls} section of the configuration: call liveness, session
timers, the dialog table and its tokens, and the plugins that observe
calls or handle their media.
"""

from __future__ import annotations

import attrs

from aetasip.config import Config, Key, declare, integer, listOf, number, optional, text

declare(
    Key(
        "calls.probe_interval",
        30,
        number(0, 3600),
        "Seconds between the in-dialog OPTIONS sent to both parties of an answered call (0: none). A party that "
        "answers 408 or 481, or not before the next probe, is gone: the call is released (BYE to both, end cause "
        "'dead dialog'). With 30 s, a call whose codec lost power ends within 90 s.",
    ),
    Key(
        "calls.max_duration",
        0,
        number(0, 31_536_000),
        "Seconds after which an answered call is released (BYE to both, end cause 'duration limit'); 0: no "
        "limit (broadcast links may run for days).",
    ),
    Key(
        "calls.min_session_expires",
        90,
        integer(90, 86400),
        "Smallest RFC 4028 session interval accepted: an INVITE asking for less gets 422 with this Min-SE (or "
        "has it raised when its sender does not know session timers). A session not refreshed within its "
        "interval is released as a dead dialog.",
    ),
    Key(
        "calls.max_dialogs",
        100_000,
        integer(100, 10_000_000),
        "Dialogs kept in memory; past this the oldest are forgotten (their calls go on: in-dialog requests are "
        "still routed by the signed token in their Route).",
    ),
    Key(
        "calls.dialog_key",
        None,
        optional(text),
        "Secret key signing the dialog tokens of Record-Route. None: a random key kept in the store, shared by "
        "every server on the same store, so calls survive a restart or a switch to a backup server.",
    ),
    Key(
        "calls.observers",
        ["records"],
        listOf(text, "call observer names"),
        "Call observers (plugins providing ICallObserverFactory), told when calls start, ring, are answered and end. "
        "'records' (on by default) keeps a record of every call attempt in the store; 'log' logs calls.",
    ),
    Key(
        "calls.media_handler",
        None,
        optional(text),
        "The media handler (a plugin providing IMediaHandlerFactory) that sees every SDP offer and answer; None: "
        "SDP passes untouched and media flows directly between the agents.",
    ),
)


@attrs.frozen
class CallSettings:
    """
    The C{calls} section of the configuration (L{aetasip.calls.settings}).

    @ivar probeInterval: seconds between in-dialog OPTIONS to both legs of
        an answered call (0: no probes).
    @ivar maxDuration: seconds after which an answered call is released
        (0: no limit).
    @ivar minSessionExpires: the smallest RFC 4028 session interval accepted.
    @ivar maxDialogs: how many dialogs the table keeps.
    """

    probeInterval: float = 30.0
    maxDuration: float = 0.0
    minSessionExpires: int = 90
    maxDialogs: int = 100_000


def callSettings(config: Config) -> CallSettings:
    """The L{CallSettings} of C{config}."""
    return CallSettings(
        probeInterval=config["calls.probe_interval"],
        maxDuration=config["calls.max_duration"],
        minSessionExpires=config["calls.min_session_expires"],
        maxDialogs=config["calls.max_dialogs"],
    )
